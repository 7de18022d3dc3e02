"""L1 portfolio: balances move only by fills; equity and exposure at marks from real candles."""

from __future__ import annotations

import pytest

from l1_operational.portfolio import FillRecord, Portfolio, base_asset
from tests.l1_support import BTC_1H, ETH_1H, bar_at


def fill(n: int, symbol: str, qty: float, price: float, *, fee: float = 0.0, stop: float | None = None,
         tp: float | None = None, when=None) -> FillRecord:
    bar = bar_at(BTC_1H, "2021-01-04T10:00:00Z")
    return FillRecord(fill_id=f"f{n}", order_id=f"o{n}", symbol=symbol, qty=qty, price=price, fee=fee,
                      kind="market", bar_time=when or bar.open_time, stop_loss=stop, take_profit=tp)


def test_portfolio_buy_then_sell_moves_balances_and_fees():
    btc = bar_at(BTC_1H, "2021-01-04T10:00:00Z")
    p = Portfolio({"USDT": 10_000.0})
    p.apply_fill(fill(1, "BTCUSDT", 0.02, btc.open, fee=0.6, stop=btc.low))
    assert p.balance("BTC") == 0.02 and p.balance("USDT") == pytest.approx(10_000 - 0.02 * btc.open - 0.6)
    p.apply_fill(fill(2, "BTCUSDT", -0.02, btc.close, fee=0.6))
    assert p.balance("BTC") == 0.0 and p.position("BTCUSDT") is None
    assert p.balance("USDT") == pytest.approx(10_000 + 0.02 * (btc.close - btc.open) - 1.2)
    assert p.fees_paid == pytest.approx(1.2) and p.fill_count == 2


def test_portfolio_position_averages_price_and_takes_the_latest_levels():
    p = Portfolio({"USDT": 10_000.0})
    p.apply_fill(fill(1, "ETHUSDT", 0.5, 900.0, stop=850.0, tp=1000.0))
    p.apply_fill(fill(2, "ETHUSDT", 0.5, 1000.0, stop=950.0, tp=1100.0))
    pos = p.position("ETHUSDT")
    assert pos.qty == 1.0 and pos.avg_price == pytest.approx(950.0)
    assert (pos.stop_loss, pos.take_profit, pos.order_id) == (950.0, 1100.0, "o2")
    p.apply_fill(fill(3, "ETHUSDT", -0.4, 1000.0))
    assert p.position("ETHUSDT").qty == pytest.approx(0.6) and p.position("ETHUSDT").stop_loss == 950.0


def test_portfolio_equity_and_exposure_at_real_marks():
    btc, eth = bar_at(BTC_1H, "2021-01-04T10:00:00Z"), bar_at(ETH_1H, "2021-01-04T10:00:00Z")
    p = Portfolio({"USDT": 10_000.0})
    p.apply_fill(fill(1, "BTCUSDT", 0.05, btc.open))
    p.apply_fill(fill(2, "ETHUSDT", 1.0, eth.open))
    p.update_mark("BTCUSDT", btc.close)
    p.update_mark("ETHUSDT", eth.close)
    cash = 10_000 - 0.05 * btc.open - eth.open
    equity = cash + 0.05 * btc.close + eth.close
    assert p.equity() == pytest.approx(equity)
    assert p.exposure("BTCUSDT") == pytest.approx(0.05 * btc.close / equity)
    assert p.equity({"ETHUSDT": eth.low}) == pytest.approx(equity - (eth.close - eth.low))


def test_portfolio_rejects_bad_inputs_by_name():
    with pytest.raises(ValueError, match="initial_balances"):
        Portfolio({"USDT": -1.0})
    with pytest.raises(ValueError, match="kind"):
        FillRecord(fill_id="x", order_id="x", symbol="BTCUSDT", qty=1.0, price=1.0, fee=0.0, kind="limit",
                   bar_time=bar_at(BTC_1H, "2021-01-04T10:00:00Z").open_time)
    with pytest.raises(ValueError, match="quote asset"):
        base_asset("BTCEUR", "USDT")
