"""The event-driven backtest on real candles: next-open fills through the one simulator, an equity curve
that is the L1 portfolio marked at each close, warm-up without orders, several symbols, what it records."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from l2_tactical.backtest.engine import Backtester, config_for_symbols, config_with_models, plan_events
from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles
from l2_tactical.errors import DataError
from l2_tactical.execution import Costs, market_fill
from l2_tactical.messages import ExecutionStatus, Side
from tests.l1_support import BTC_1H, ETH_1H

DATA = BTC_1H.parent
START, END = "2024-09-01", "2024-10-06"  # 840 bars per symbol
LOOSE = {"ensemble.confidence_threshold": 0.2, "signals.min_signal_strength": 0.2}


def loose_config(models: str | None = None) -> L2Config:
    """The bundled config with looser quality filters (so a month of bars makes orders); no models
    unless given (the generator then runs on its technical and pattern sources)."""
    cfg = L2Config.default().with_overrides(LOOSE)
    return config_with_models(cfg, models) if models else cfg.with_overrides(
        {f"ensemble.models.{n}.path": f"/nonexistent/{n}.zip" for n in cfg.ensemble.models})


@pytest.fixture(scope="module")
def candles():
    return [load_candles(BTC_1H), load_candles(ETH_1H)]


@pytest.fixture(scope="module")
def two_symbols(candles):
    return Backtester(loose_config()).run(candles, start=START, end=END)


def _bars(c, start=START, end=END):
    return c.slice(start, end).frame


def test_the_run_made_orders_and_fills_on_both_symbols(two_symbols):
    assert len(two_symbols.orders) > 0
    assert all(two_symbols.traces[s].fills for s in ("BTCUSDT", "ETHUSDT"))


def test_every_order_fills_at_the_open_of_the_bar_after_its_decision_through_the_simulator(two_symbols, candles):
    costs = Costs.from_config(L2Config.default().execution)
    frames = {c.symbol: c.frame for c in candles}
    orders = {o.order_id: o for o in two_symbols.orders}
    checked = 0
    for report in two_symbols.reports:
        order = orders.get(report.order_id)
        if order is None or report.status is not ExecutionStatus.FILLED:
            continue
        frame = frames[report.symbol]
        decided_on = frame.index[frame.index < order.timestamp][-1]  # the bar whose close made the decision
        fill_bar = frame.loc[frame.index > decided_on].iloc[0]
        assert report.timestamp == frame.index[frame.index > decided_on][0]
        sign = 1.0 if order.side is Side.BUY else -1.0
        expected = market_fill(sign * report.executed_qty, fill_bar.open, fill_bar.high, fill_bar.low, costs)
        assert report.avg_price == pytest.approx(expected.price, rel=1e-12)
        assert report.fees == pytest.approx(expected.fee, rel=1e-12)
        checked += 1
    assert checked > 0


def test_equity_is_cash_plus_positions_marked_at_each_close(two_symbols, candles):
    initial = L2Config.default().execution.initial_cash
    closes = {c.symbol: _bars(c)["close"].to_numpy() for c in candles}
    cash = np.full(two_symbols.equity.size, initial)
    held = {s: np.zeros(two_symbols.equity.size) for s in closes}
    for symbol, trace in two_symbols.traces.items():
        for f in trace.fills:
            cash[f.bar:] -= f.qty * f.price + f.fee
            held[symbol][f.bar:] += f.qty
    expected = cash + sum(held[s] * closes[s] for s in closes)
    np.testing.assert_allclose(two_symbols.equity, expected, rtol=1e-9)
    gross = sum(np.abs(held[s] * closes[s]) for s in closes) / expected
    np.testing.assert_allclose(two_symbols.exposure, gross, rtol=1e-9, atol=1e-12)


def test_warm_up_bars_make_no_order_and_the_timeline_starts_at_start(two_symbols):
    first = datetime.fromisoformat(START).replace(tzinfo=timezone.utc)
    assert str(two_symbols.timestamps[0]).startswith(START)
    assert all(o.timestamp > first for o in two_symbols.orders)
    assert two_symbols.bars_processed == 2 * 840


def test_round_trips_are_counted_per_symbol_never_across_two_assets(two_symbols):
    from l2_tactical.backtest.metrics import round_trips

    per_symbol = sum(len(round_trips(t.fills, float(t.close[-1]))) for t in two_symbols.traces.values())
    assert two_symbols.metrics.n_trades == per_symbol
    assert two_symbols.metrics.fees_paid == pytest.approx(sum(r.fees for r in two_symbols.reports))


def test_hit_rate_is_recorded_for_the_sources_that_called(two_symbols):
    hit = two_symbols.metrics.hit_rate_per_source
    assert "composite" in hit and 0.0 <= hit["composite"] <= 1.0


def test_events_run_in_time_order_with_ties_in_file_order(candles):
    plan = plan_events(candles, "2024-09-01", "2024-09-02")
    ts = np.array([plan.arrays[k][0][row] for k, row in plan.order])
    assert np.all(np.diff(ts) >= 0)
    assert list(plan.order[:2, 0]) == [0, 1]
    assert plan.timeline.size == 24


def test_a_symbol_without_configured_limits_gets_derived_ones():
    cfg, notes = config_for_symbols(L2Config.default(), {"SOLUSDT": 150.0, "BTCUSDT": 60000.0})
    assert cfg.symbols["SOLUSDT"].lot_step == pytest.approx(0.001)
    assert cfg.symbols["BTCUSDT"] == L2Config.default().symbols["BTCUSDT"]
    assert len(notes) == 1 and "SOLUSDT" in notes[0]


def test_a_never_seen_symbol_backtests_with_derived_limits():
    sol = load_candles(DATA / "SOLUSDT-1h.csv.gz")
    result = Backtester(loose_config()).run([sol], start="2025-03-01", end="2025-03-15")
    assert result.symbols == ("SOLUSDT",) and result.bars_processed == 14 * 24
    assert any("SOLUSDT" in n for n in result.notes)
    assert not any(r.reason_code.value == "unknown_symbol" for r in result.reports)


def test_start_is_moved_forward_to_leave_room_for_the_warm_up(candles):
    result = Backtester(loose_config()).run(candles[:1], start="2018-01-02", end="2018-03-01", warmup_bars=500)
    assert str(result.timestamps[0]) == str(candles[0].frame.index[500].tz_localize(None).to_datetime64())
    assert any("moved" in n for n in result.notes)


def test_a_period_without_bars_is_a_data_error(candles):
    with pytest.raises(DataError, match="no bar"):
        Backtester(loose_config()).run(candles[:1], start="2030-01-01")


def test_files_of_different_timeframes_are_refused(candles):
    one_minute = load_candles(DATA / "BTCUSDT-1m.csv.gz")
    with pytest.raises(DataError, match="one timeframe"):
        Backtester(loose_config()).run([candles[1], one_minute])
