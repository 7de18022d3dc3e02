"""Metrics checked on real BTC/ETH candles against independent computations."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2_tactical.backtest import metrics as m
from l2_tactical.backtest.baselines import buy_and_hold, sma_cross
from l2_tactical.execution import Costs

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return pd.read_csv(DATA / "BTCUSDT-1h.csv.gz", parse_dates=["timestamp"], index_col="timestamp")


@pytest.fixture(scope="module")
def btc_equity(btc: pd.DataFrame) -> np.ndarray:
    """A real equity curve: 10,000 USDT fully in BTC at each close (2018-2025)."""
    return 10_000.0 * btc["close"].to_numpy() / btc["close"].iloc[0]


def _ohlc(df: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return tuple(df[k].to_numpy() for k in ("open", "high", "low", "close"))


def test_periods_per_year_counts_24_7_bars() -> None:
    assert m.periods_per_year("1h") == 365 * 24
    assert m.periods_per_year("1m") == 365 * 24 * 60
    assert m.periods_per_year("1d") == 365
    with pytest.raises(ValueError, match="timeframe='2x'"):
        m.periods_per_year("2x")


def test_total_return_of_zero_cost_buy_and_hold_equals_price_return(btc: pd.DataFrame) -> None:
    o, h, lo, c = _ohlc(btc)
    result = buy_and_hold(o, h, lo, c, Costs.zero())
    got = m.summarise(result.equity, timeframe="1h")["total_return"]
    assert got == pytest.approx(c[-1] / o[1] - 1.0, rel=1e-12)


def test_annualised_return_compounds_over_bars_per_year(btc_equity: np.ndarray) -> None:
    years = (len(btc_equity) - 1) / 8760
    expected = math.exp(math.log(btc_equity[-1] / btc_equity[0]) / years) - 1.0
    assert m.annualised_return(btc_equity, 8760) == pytest.approx(expected, rel=1e-10)


def test_sharpe_matches_a_direct_formula_on_real_returns(btc_equity: np.ndarray) -> None:
    r = np.diff(btc_equity) / btc_equity[:-1]
    n = r.size
    mean = math.fsum(r) / n
    var = math.fsum((x - mean) ** 2 for x in r) / (n - 1)
    expected = mean / math.sqrt(var) * math.sqrt(8760)
    assert m.sharpe_ratio(m.bar_returns(btc_equity), 8760) == pytest.approx(expected, rel=1e-9)
    assert m.summarise(btc_equity, timeframe="1h")["sharpe"] == pytest.approx(expected, rel=1e-9)


def test_sortino_divides_by_downside_deviation_over_all_bars(btc_equity: np.ndarray) -> None:
    r = pd.Series(btc_equity).pct_change().dropna().to_numpy()
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / len(r))
    expected = r.mean() / downside * math.sqrt(8760)
    assert m.sortino_ratio(r, 8760) == pytest.approx(expected, rel=1e-9)
    assert m.sortino_ratio(r, 8760) > m.sharpe_ratio(r, 8760)  # half the variance is upside


def _brute_force_drawdown(e: np.ndarray) -> tuple[float, int]:
    depth = max(1.0 - e[j] / e[i] for i in range(len(e)) for j in range(i, len(e)))
    longest = run = 0
    for t in range(len(e)):
        run = run + 1 if e[t] < max(e[: t + 1]) else 0
        longest = max(longest, run)
    return depth, longest


@pytest.mark.parametrize("start", [0, 19_000, 38_000])  # early 2018 crash, 2020, 2022
def test_max_drawdown_matches_brute_force_on_real_windows(btc_equity: np.ndarray, start: int) -> None:
    window = btc_equity[start : start + 400]
    depth, bars = m.max_drawdown(window)
    ref_depth, ref_bars = _brute_force_drawdown(window)
    assert depth == pytest.approx(ref_depth, rel=1e-12)
    assert bars == ref_bars
    assert m.drawdown_series(window).max() == pytest.approx(depth)


def test_calmar_is_annual_return_over_max_drawdown(btc_equity: np.ndarray) -> None:
    depth, _ = _brute_force_drawdown(btc_equity[:600])
    expected = m.annualised_return(btc_equity[:600], 8760) / depth
    assert m.calmar_ratio(btc_equity[:600], 8760) == pytest.approx(expected)


def test_flat_equity_has_zero_ratios_not_division_errors() -> None:
    flat = np.full(50, 1000.0)
    s = m.summarise(flat, timeframe="1h")
    assert (s["sharpe"], s["sortino"], s["calmar"], s["max_drawdown"]) == (0.0, 0.0, 0.0, 0.0)


def test_equity_with_a_non_positive_value_is_rejected_with_its_index() -> None:
    with pytest.raises(ValueError, match=r"equity\[2\]=0.0"):
        m.max_drawdown([100.0, 90.0, 0.0, 80.0])
    with pytest.raises(ValueError, match=r"equity\[1\]=nan"):
        m.total_return([100.0, float("nan")])


def test_round_trips_sum_cash_flows_and_fees() -> None:
    fills = [
        m.TradeFill(bar=1, qty=2.0, price=100.0, fee=0.2, source="technical"),
        m.TradeFill(bar=3, qty=1.0, price=110.0, fee=0.11),
        m.TradeFill(bar=5, qty=-3.0, price=120.0, fee=0.36, reason="signal"),
        m.TradeFill(bar=6, qty=1.0, price=130.0, fee=0.13, source="ai_model"),
        m.TradeFill(bar=8, qty=-1.0, price=117.0, fee=0.117, reason="stop_loss_hit"),
    ]
    first, second = m.round_trips(fills)
    assert first.pnl == pytest.approx(3 * 120 - (2 * 100 + 110) - (0.2 + 0.11 + 0.36))
    assert first.entry_price == pytest.approx(310 / 3)
    assert (first.entry_bar, first.exit_bar, first.source, first.side) == (1, 5, "technical", 1)
    assert second.pnl == pytest.approx(-13 - 0.247)
    assert second.exit_reason == "stop_loss_hit"
    assert m.win_rate([first.pnl, second.pnl]) == 0.5
    assert m.profit_factor([first.pnl, second.pnl]) == pytest.approx(first.pnl / -second.pnl)


def test_round_trips_split_a_flip_and_mark_an_open_position() -> None:
    fills = [
        m.TradeFill(bar=1, qty=1.0, price=100.0, fee=1.0),
        m.TradeFill(bar=2, qty=-2.0, price=110.0, fee=2.0),  # closes the long, opens a short
    ]
    long_, short = m.round_trips(fills, mark_price=105.0)
    assert long_.pnl == pytest.approx(10.0 - 1.0 - 1.0)
    assert short.side == -1 and short.exit_bar is None
    assert short.pnl == pytest.approx(110.0 - 105.0 - 1.0)
    assert len(m.round_trips(fills)) == 1  # unmarked open trade is left out


def test_trade_statistics_of_a_real_sma_cross_run_agree_with_its_fills(btc: pd.DataFrame) -> None:
    o, h, lo, c = _ohlc(btc.iloc[:20_000])
    costs = Costs(fee_bps=10, half_spread_bps=1, slippage_bps=2, volatility_slippage=0.05)
    run = sma_cross(o, h, lo, c, costs, fast=24, slow=168)
    s = m.summarise(run.equity, timeframe="1h", fills=run.fills, exposure=run.exposure, mark_price=c[-1])
    # all round trips' pnl add up to the change in equity (every cash flow is in some trade)
    pnl = sum(t.pnl for t in run.trades(mark_price=c[-1]))
    assert pnl == pytest.approx(run.equity[-1] - run.equity[0], rel=1e-9)
    assert s["fees_paid"] == pytest.approx(sum(f.fee for f in run.fills))
    assert s["fees_paid"] > 0
    assert s["turnover"] == pytest.approx(sum(abs(f.qty) * f.price for f in run.fills) / run.equity.mean())
    assert s["time_in_market"] == pytest.approx(np.count_nonzero(run.exposure) / len(run.exposure))
    assert 0 < s["win_rate"] < 1 and s["avg_win"] > 0 > s["avg_loss"]


def test_hit_rate_per_source_counts_sign_agreement_with_the_next_bar(btc: pd.DataFrame) -> None:
    c = btc["close"].to_numpy()[:5000]
    fwd = np.append(c[1:] / c[:-1] - 1.0, np.nan)  # return over the bar after each close
    up_share = np.sum(fwd[:-1] > 0) / np.sum(fwd[:-1] != 0)
    rates = m.hit_rate_per_source(
        {
            "always_long": np.ones(c.size),
            "oracle": np.nan_to_num(np.sign(fwd)),
            "contrarian": -np.nan_to_num(np.sign(fwd)),
            "silent": np.zeros(c.size),
        },
        fwd,
    )
    assert rates["always_long"] == pytest.approx(up_share)
    assert rates["oracle"] == 1.0 and rates["contrarian"] == 0.0
    assert math.isnan(rates["silent"])


def test_attribution_per_specialist_adds_up_to_the_exposure_weighted_return(btc: pd.DataFrame) -> None:
    c = btc["close"].to_numpy()[:3000]
    r = c[1:] / c[:-1] - 1.0
    trend = np.where(np.arange(r.size) % 50 < 25, 0.4, 0.0)
    meanrev = np.full(r.size, 0.2)
    att = m.attribution_per_specialist({"trend": trend, "mean_reversion": meanrev}, r)
    assert att["mean_reversion"] == pytest.approx(0.2 * r.sum())
    assert att["trend"] + att["mean_reversion"] == pytest.approx(float(np.dot(trend + meanrev, r)))
    with pytest.raises(ValueError, match="contributions\\['trend'\\]"):
        m.attribution_per_specialist({"trend": trend[:-1]}, r)


def test_metrics_are_frozen_and_their_maps_read_only(btc_equity: np.ndarray) -> None:
    res = m.compute_metrics(
        btc_equity[:100],
        timeframe="1h",
        contributions={"trend": np.ones(99)},
        asset_returns=m.bar_returns(btc_equity[:100]),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.sharpe = 9.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        res.attribution["trend"] = 1.0  # type: ignore[index]
    simple_sum = float(np.sum(np.diff(btc_equity[:100]) / btc_equity[:99]))
    assert res.to_dict()["attribution"]["trend"] == pytest.approx(simple_sum)


def test_json_safe_summary_replaces_infinite_profit_factor_with_null(btc: pd.DataFrame) -> None:
    o, h, lo, c = _ohlc(btc.iloc[:500])
    run = buy_and_hold(o, h, lo, c, Costs.zero())
    winner = [m.TradeFill(bar=1, qty=1.0, price=c[0], fee=0.0), m.TradeFill(bar=2, qty=-1.0, price=2 * c[0], fee=0.0)]
    assert m.summarise(run.equity, fills=winner)["profit_factor"] == math.inf
    safe = m.summarise(run.equity, fills=winner, signals={"silent": np.zeros(3)}, forward_returns=np.ones(3),
                       json_safe=True)  # fmt: skip
    assert safe["profit_factor"] is None and safe["hit_rate_per_source"] == {"silent": None}
    json.dumps(safe, allow_nan=False)
