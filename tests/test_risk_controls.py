"""RiskControls: stops, trailing/breakeven, the position monitor, risk state and every pre-trade check."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from l2_tactical.config import L2Config
from l2_tactical.messages import AlertSeverity, ReasonCode, Side, TradingState
from l2_tactical.position_monitor import Position, monitor_position, open_position, track_excursions
from l2_tactical.risk_controls import (
    ProposedOrder,
    RiskState,
    apply_fill,
    check_correlation,
    check_order,
    check_stop,
    check_volatility_spike,
    mark_to_market,
    new_risk_state,
    record_order,
    reset_kill_switch,
    risk_metrics,
)
from l2_tactical.stops import (
    Bar,
    atr_stop,
    fixed_stop,
    initial_stop,
    support_resistance_stop,
    take_profit,
    update_stop,
    volatility_stop,
)

DATA = Path(__file__).resolve().parent.parent / "data"
CFG = L2Config.default()
RISK, SIZING = CFG.risk, CFG.position_sizing
T0 = datetime(2023, 5, 1, 12, tzinfo=timezone.utc)


@cache
def candles(symbol: str) -> pd.DataFrame:
    return pd.read_csv(DATA / f"{symbol}-1h.csv.gz", parse_dates=["timestamp"], index_col="timestamp")


def bars(start: str, end: str, symbol: str = "BTCUSDT") -> pd.DataFrame:
    return candles(symbol).loc[start:end]


def as_bar(row: pd.Series) -> Bar:
    return Bar(open=row.open, high=row.high, low=row.low, close=row.close)


# ------------------------------------------------------------------- stops


def test_fixed_stop_sits_default_stop_pct_beyond_the_entry():
    assert fixed_stop(100.0, 1, 0.02) == pytest.approx(98.0)
    assert fixed_stop(100.0, -1, 0.02) == pytest.approx(102.0)


def test_atr_stop_is_atr_multiplier_atrs_from_the_entry_on_real_bars():
    w = bars("2023-01-01", "2023-01-10")
    atr = talib.ATR(w.high.to_numpy(), w.low.to_numpy(), w.close.to_numpy(), timeperiod=14)[-1]
    entry = w.close.iloc[-1]
    stop = atr_stop(entry, 1, atr=atr, multiplier=RISK.atr_multiplier)
    assert entry - stop == pytest.approx(RISK.atr_multiplier * atr)
    assert initial_stop("atr", entry, 1, RISK, atr=atr) == stop


def test_volatility_stop_is_multiplier_sigmas_of_log_return_away():
    stop = volatility_stop(100.0, 1, sigma=0.01, multiplier=2.0)
    assert math.log(100.0 / stop) == pytest.approx(0.02)
    assert volatility_stop(100.0, -1, sigma=0.01, multiplier=2.0) > 100.0


def test_support_resistance_stop_uses_the_nearest_level_beyond_the_entry():
    levels = [90.0, 97.0, 103.0, 110.0]
    assert support_resistance_stop(100.0, 1, levels, buffer_pct=0.0) == 97.0
    assert support_resistance_stop(100.0, -1, levels, buffer_pct=0.0) == 103.0
    assert support_resistance_stop(100.0, 1, [103.0], buffer_pct=0.0) is None


@pytest.mark.parametrize(
    "method, kw",
    [("atr", {"atr": math.nan}), ("atr", {"atr": 0.0}), ("volatility", {"sigma": None}), ("support_resistance", {})],
)
def test_initial_stop_is_none_rather_than_a_made_up_level(method: str, kw: dict[str, float]):
    assert initial_stop(method, 100.0, 1, RISK, **kw) is None  # type: ignore[arg-type]


def test_initial_stop_rejects_an_unknown_method_by_name():
    with pytest.raises(ValueError, match="'chandelier'"):
        initial_stop("chandelier", 100.0, 1, RISK)


def test_take_profit_is_take_profit_r_times_the_initial_risk():
    assert take_profit(100.0, 98.0, 2.0) == pytest.approx(104.0)
    assert take_profit(100.0, 102.0, 2.0) == pytest.approx(96.0)


# -------------------------------------------------- trailing, breakeven, monitor


def _long(entry: float = 100.0, stop: float = 98.0) -> Position:
    return open_position("BTCUSDT", 0.1, entry, stop_loss=stop, opened_at=T0)


def test_update_stop_moves_to_breakeven_at_the_threshold_r():
    risk = CFG.with_overrides({"risk.trailing_stop": False}).risk
    below = Bar(open=100.0, high=100.0 + RISK.breakeven_threshold * 2.0 - 0.01, low=99.5, close=100.5)
    at = Bar(open=100.0, high=100.0 + RISK.breakeven_threshold * 2.0, low=99.5, close=102.0)
    assert update_stop(_long(), below, risk) == 98.0
    assert update_stop(_long(), at, risk) == 100.0


def test_update_stop_never_loosens_along_a_real_price_path():
    w = bars("2021-05-10", "2021-05-25")  # includes the May 2021 crash
    close = w.close.to_numpy()
    atr = talib.ATR(w.high.to_numpy(), w.low.to_numpy(), close, timeperiod=14)
    for side in (1, -1):
        entry = close[20]
        stop0 = entry * (1 - side * 0.5)  # wide, so the path does not end the test
        p = Position(
            symbol="BTCUSDT", qty=side * 0.1, entry_price=entry, stop_loss=stop0, initial_stop=stop0, opened_at=T0
        )
        stops = [p.stop_loss]
        for i in range(21, len(w)):
            p = dataclass_replace_stop(p, update_stop(p, as_bar(w.iloc[i]), RISK, atr=float(atr[i])))
            stops.append(p.stop_loss)
        steps = np.diff(stops) * side
        assert (steps >= 0).all()
        assert steps.sum() > 0  # it did trail


def dataclass_replace_stop(p: Position, stop: float) -> Position:
    return dataclasses.replace(p, stop_loss=stop)


def test_position_monitor_tracks_mae_and_mfe_from_real_bars():
    w = bars("2020-03-11", "2020-03-14")  # the March 2020 crash
    entry = w.close.iloc[0]
    p = open_position("BTCUSDT", 0.1, entry, stop_loss=entry * 0.2, opened_at=T0)
    for i in range(1, len(w)):
        p = track_excursions(p, as_bar(w.iloc[i]))
    assert p.mae == pytest.approx(entry - w.low.iloc[1:].min())
    assert p.mfe == pytest.approx(max(w.high.iloc[1:].max() - entry, 0.0))
    assert p.mae_r == pytest.approx(p.mae / (entry * 0.8))


def test_position_monitor_exits_at_the_stop_through_the_simulator():
    w = bars("2020-03-12 00:00", "2020-03-12 23:00")
    entry = w.open.iloc[0]
    p = open_position("BTCUSDT", 0.1, entry, stop_loss=entry * 0.95, opened_at=T0)
    exit_, stop_before = None, p.stop_loss
    for i in range(len(w)):
        stop_before = p.stop_loss
        p, exit_ = monitor_position(p, as_bar(w.iloc[i]), RISK)
        if exit_ is not None:
            break
    assert exit_ is not None and exit_[1] is ReasonCode.STOP_LOSS_HIT
    assert stop_before >= entry * 0.95  # trailed up, never down
    bar = w.iloc[i]
    assert exit_[0] == (bar.open if bar.open <= stop_before else stop_before)  # gap: the open, else the stop


def test_position_monitor_equals_excursions_then_trailed_stop_on_real_bars():
    # monitor_position builds the moved position in one step: the same as tracking the excursions, then
    # trailing the stop of the tracked position (long and short, with and without an ATR)
    from l2_tactical.stops import update_stop

    w = bars("2020-03-10", "2020-03-20")
    for qty, stop_pct in ((0.1, 0.9), (-0.1, 1.1)):
        for atr in (None, 150.0):
            entry = w.close.iloc[0]
            p = open_position("BTCUSDT", qty, entry, stop_loss=entry * stop_pct, opened_at=T0)
            for i in range(1, len(w)):
                b = as_bar(w.iloc[i])
                moved, hit = monitor_position(p, b, RISK, atr=atr)
                tracked = track_excursions(p, b)
                expected = tracked if hit is not None else dataclasses.replace(
                    tracked, stop_loss=update_stop(tracked, b, RISK, atr=atr))
                assert moved == expected
                if hit is not None:
                    break
                p = moved


# ------------------------------------------------------------------ risk state


def test_drawdown_moves_active_to_reducing_to_halted_and_halt_is_sticky():
    s = new_risk_state(10000.0, T0)
    s, _ = mark_to_market(s, 9500.0, T0, RISK)
    assert s.trading_state is TradingState.ACTIVE
    s, alerts = mark_to_market(s, 10000.0 * (1 - RISK.drawdown_reduce), T0 + timedelta(days=1), RISK)
    assert s.trading_state is TradingState.REDUCING
    assert [a.severity for a in alerts] == [AlertSeverity.WARNING]
    s, _ = mark_to_market(s, 9500.0, T0 + timedelta(days=2), RISK)
    assert s.trading_state is TradingState.ACTIVE  # reducing recovers with the drawdown
    s, alerts = mark_to_market(s, 10000.0 * (1 - RISK.drawdown_halt), T0 + timedelta(days=3), RISK)
    assert s.trading_state is TradingState.HALTED
    assert alerts[0].code is ReasonCode.DRAWDOWN_KILL_SWITCH and alerts[0].severity is AlertSeverity.CRITICAL
    s, _ = mark_to_market(s, 10000.0, T0 + timedelta(days=4), RISK)
    assert s.trading_state is TradingState.HALTED
    assert reset_kill_switch(s).trading_state is TradingState.ACTIVE


def test_daily_loss_limit_blocks_new_risk_until_the_next_utc_day():
    s = new_risk_state(10000.0, T0)
    s, alerts = mark_to_market(s, 10000.0 * (1 - RISK.daily_loss_limit), T0 + timedelta(hours=1), RISK)
    assert s.daily_loss_hit and alerts[-1].code is ReasonCode.DAILY_LOSS_LIMIT
    s, _ = mark_to_market(s, 10000.0, T0 + timedelta(hours=5), RISK)  # recovered, same day: still blocked
    assert s.daily_loss_hit
    s, _ = mark_to_market(s, 10000.0, datetime(2023, 5, 2, 0, 0, tzinfo=timezone.utc), RISK)
    assert not s.daily_loss_hit and s.day_start_equity == 10000.0 and s.trades_today == 0


def test_record_order_counts_only_risk_increasing_orders():
    s = new_risk_state(10000.0, T0)
    assert record_order(s, reduce_only=False).trades_today == 1
    assert record_order(s, reduce_only=True).trades_today == 0


def test_apply_fill_opens_adds_and_closes_positions():
    s = apply_fill(new_risk_state(10000.0, T0), "BTCUSDT", 0.1, 100.0, now=T0, stop_loss=98.0)
    s = apply_fill(s, "BTCUSDT", 0.1, 110.0, now=T0)
    assert s.positions["BTCUSDT"].entry_price == pytest.approx(105.0)
    s = apply_fill(s, "BTCUSDT", -0.2, 120.0, now=T0)
    assert "BTCUSDT" not in s.positions
    with pytest.raises(ValueError, match="stop_loss"):
        apply_fill(s, "ETHUSDT", 1.0, 100.0, now=T0)


def test_risk_metrics_report_exposure_heat_and_state():
    s = apply_fill(new_risk_state(10000.0, T0), "BTCUSDT", 0.01, 30000.0, now=T0, stop_loss=29000.0)
    m = risk_metrics(s, T0)
    assert m.exposure == pytest.approx(0.03)
    assert m.portfolio_heat == pytest.approx(0.001)
    assert m.open_positions == 1 and m.trading_state is TradingState.ACTIVE


# ----------------------------------------------------------- pre-trade checks


def test_check_stop_names_missing_and_incoherent_stops():
    assert check_stop(Side.BUY, 100.0, None) is ReasonCode.MISSING_STOP
    assert check_stop(Side.BUY, 100.0, math.nan) is ReasonCode.MISSING_STOP
    assert check_stop(Side.BUY, 100.0, 101.0) is ReasonCode.INCOHERENT_STOP
    assert check_stop(Side.SELL, 100.0, 99.0) is ReasonCode.INCOHERENT_STOP
    assert check_stop(Side.SELL, 100.0, 101.0) is ReasonCode.OK


def test_check_volatility_spike_pauses_on_the_march_2020_crash_bar():
    w = bars("2020-03-01", "2020-03-13 02:00")
    atr = talib.ATR(w.high.to_numpy(), w.low.to_numpy(), w.close.to_numpy(), timeperiod=14)
    crash_range = w.high.iloc[-1] - w.low.iloc[-1]
    assert check_volatility_spike(crash_range, atr[-2], RISK.volatility_spike_multiple) is ReasonCode.VOLATILITY_PAUSE
    calm = w.loc["2020-03-05"]
    calm_range = float((calm.high - calm.low).median())
    assert check_volatility_spike(calm_range, atr[-2], RISK.volatility_spike_multiple) is ReasonCode.OK


def test_check_correlation_ignores_unknown_and_hedging_correlations():
    assert check_correlation({"ETHUSDT": 0.83}, 0.7) is ReasonCode.CORRELATION_LIMIT
    assert check_correlation({"ETHUSDT": -0.83, "SOLUSDT": math.nan}, 0.7) is ReasonCode.OK


def _state(**kw: object) -> RiskState:
    base = new_risk_state(10000.0, T0)
    return RiskState(**{**{f: getattr(base, f) for f in ("equity", "peak_equity", "day_start_equity", "day")}, **kw})  # type: ignore[arg-type]


def _with_positions(*symbols: str, notional: float = 1000.0) -> RiskState:
    s = new_risk_state(10000.0, T0)
    for sym in symbols:
        s = apply_fill(s, sym, notional / 100.0, 100.0, now=T0, stop_loss=99.0)
    return s


BUY = ProposedOrder(symbol="BTCUSDT", side=Side.BUY, qty=0.01, price=30000.0, stop_loss=29400.0)
LIMITS = CFG.symbols["BTCUSDT"]


def _order(**kw: object) -> ProposedOrder:
    return dataclasses.replace(BUY, **kw)  # type: ignore[arg-type]


# one row per reason code risk controls can return: (order, state, extra kwargs, config overrides)
REASON_TABLE = {
    ReasonCode.MISSING_STOP: (_order(stop_loss=None), _state(), {}, {}),
    ReasonCode.INCOHERENT_STOP: (_order(stop_loss=30100.0), _state(), {}, {}),
    ReasonCode.MAX_POSITION: (_order(qty=0.05), _state(), {}, {}),
    ReasonCode.EXPOSURE_LIMIT: (_order(qty=0.02), _with_positions("ETHUSDT", "SOLUSDT", notional=3800.0), {}, {}),
    ReasonCode.MAX_CONCURRENT_POSITIONS: (BUY, _with_positions("A", "B", "C", notional=100.0), {}, {}),
    ReasonCode.MAX_DAILY_TRADES: (BUY, _state(trades_today=RISK.max_daily_trades), {}, {}),
    ReasonCode.CORRELATION_LIMIT: (BUY, _with_positions("ETHUSDT"), {"correlations": {"ETHUSDT": 0.83}}, {}),
    ReasonCode.DAILY_LOSS_LIMIT: (BUY, _state(daily_loss_hit=True), {}, {}),
    ReasonCode.DRAWDOWN_KILL_SWITCH: (BUY, _state(trading_state=TradingState.HALTED), {}, {}),
    ReasonCode.NOT_ACTIVE: (BUY, _state(trading_state=TradingState.REDUCING), {}, {}),
    ReasonCode.VOLATILITY_PAUSE: (BUY, _state(), {"bar_range": 4000.0, "atr": 1000.0}, {}),
    ReasonCode.SIZE_ZERO: (_order(qty=0.0002), _state(), {}, {}),
}


def test_reason_table_covers_every_l2_risk_reason_code():
    l2_codes = {
        c
        for c in ReasonCode
        if c is not ReasonCode.OK
        and c.name != "UNKNOWN_SYMBOL"
        and list(ReasonCode).index(c) <= list(ReasonCode).index(ReasonCode.SIZE_ZERO)
    }
    assert set(REASON_TABLE) == l2_codes


@pytest.mark.parametrize("code", list(REASON_TABLE), ids=lambda c: c.value)
def test_check_order_returns_the_reason_code(code: ReasonCode):
    order, state, extra, overrides = REASON_TABLE[code]
    cfg = CFG.with_overrides(overrides) if overrides else CFG
    decision = check_order(order, state, risk=cfg.risk, sizing=cfg.position_sizing, limits=LIMITS, now=T0, **extra)  # type: ignore[arg-type]
    assert decision.reason is code
    if code in (ReasonCode.MAX_POSITION, ReasonCode.EXPOSURE_LIMIT):  # shrink, not deny
        assert 0 < decision.qty < order.qty
        assert decision.alerts and decision.alerts[0].code is code
    else:
        assert decision.qty == 0.0


def test_check_order_shrinks_to_the_position_limit_exactly():
    d = check_order(_order(qty=0.05), _state(), risk=RISK, sizing=SIZING, limits=LIMITS, now=T0)
    cap = min(SIZING.max_position_pct * 10000.0, LIMITS.max_exposure * 10000.0, LIMITS.max_notional)
    assert d.qty * 30000.0 <= cap + 1e-9
    assert d.qty * 30000.0 > cap - 30000.0 * LIMITS.lot_step


def test_check_order_keeps_gross_exposure_under_the_limit():
    s = _with_positions("ETHUSDT", "SOLUSDT", notional=3800.0)
    d = check_order(_order(qty=0.02), s, risk=RISK, sizing=SIZING, limits=LIMITS, now=T0)
    assert s.gross_exposure() + d.qty * 30000.0 <= RISK.exposure_limit * 10000.0 + 1e-9


@pytest.mark.parametrize("trading", [TradingState.HALTED, TradingState.REDUCING])
def test_check_order_lets_exposure_reducing_orders_through_when_not_active(trading: TradingState):
    s = apply_fill(
        _state(trading_state=trading, daily_loss_hit=True), "BTCUSDT", 0.01, 30000.0, now=T0, stop_loss=29000.0
    )
    sell = ProposedOrder(symbol="BTCUSDT", side=Side.SELL, qty=0.05, price=30000.0, stop_loss=30600.0, reduce_only=True)
    d = check_order(sell, s, risk=RISK, sizing=SIZING, limits=LIMITS, now=T0)
    assert d.reason is ReasonCode.OK and d.qty == pytest.approx(0.01)  # capped at the position


def test_check_order_denies_a_reduce_only_order_without_a_coherent_stop():
    s = apply_fill(_state(), "BTCUSDT", 0.01, 30000.0, now=T0, stop_loss=29000.0)
    sell = ProposedOrder(symbol="BTCUSDT", side=Side.SELL, qty=0.01, price=30000.0, stop_loss=29900.0, reduce_only=True)
    assert check_order(sell, s, risk=RISK, sizing=SIZING, limits=LIMITS, now=T0).reason is ReasonCode.INCOHERENT_STOP
