"""Property tests: random signal sequences traded on real BTC/ETH hourly price paths.

Each example draws a window of real bars (BTCUSDT-1h and ETHUSDT-1h share every
timestamp), a risk configuration and a signal per bar, then trades it bar by bar:
decide at a bar's close with :func:`build_order`, fill at the next bar's open with
the one execution simulator, exit on stops through the position monitor. The test
keeps its own books (equity peak, start-of-day equity, entries per UTC day) and
checks every order against them:

* no OrderIntent without a coherent stop; sizes finite and >= 0;
* no position, gross-exposure, concurrent-position or daily-trade limit exceeded;
* after the daily loss limit is hit, no risk-increasing order until the next UTC day;
* once drawdown reaches ``drawdown_halt`` the state is HALTED and only exits pass;
  at ``drawdown_reduce`` no risk-increasing order passes.

Profiles: ``fast`` (default, 200 examples per property) and ``ci`` (thousands), chosen
with ``HYPOTHESIS_PROFILE=ci``. The March 2020 crash and the zero-volume bars of
data/README.md are explicit examples.
"""

from __future__ import annotations

import dataclasses
import math
import os
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.execution import Costs, exit_fill, market_fill
from l2_tactical.messages import OrderIntent, SignalDirection, SignalSource, TacticalSignal, TradingState
from l2_tactical.order_pipeline import Bars, MarketState, build_order
from l2_tactical.position_monitor import monitor_position
from l2_tactical.position_sizer import SizingInputs, size_position
from l2_tactical.risk_controls import (
    RiskState,
    apply_fill,
    mark_to_market,
    new_risk_state,
    record_order,
    replace_position,
)
from l2_tactical.stops import Bar

settings.register_profile(
    "fast", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile(
    "ci", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
PROFILE = settings.get_profile("ci" if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else "fast")

ROOT = Path(__file__).resolve().parent.parent
SYMBOLS = ("BTCUSDT", "ETHUSDT")
HISTORY = 120  # closed bars the pipeline sees before each decision
HOUR_NS = 3_600_000_000_000
DIRECTIONS = (
    SignalDirection.LONG,
    SignalDirection.LONG,
    SignalDirection.SHORT,
    SignalDirection.CLOSE_LONG,
    SignalDirection.NEUTRAL,
)
TOL = 1e-9


@cache
def prices() -> dict[str, np.ndarray]:
    """Both symbols' bars as arrays, loaded once (the two files have the same timestamps)."""
    out: dict[str, np.ndarray] = {}
    for sym in SYMBOLS:
        df = pd.read_csv(ROOT / "data" / f"{sym}-1h.csv.gz", parse_dates=["timestamp"], index_col="timestamp")
        out["ts"] = np.asarray(df.index.as_unit("ns").asi8, dtype=np.int64)
        out[sym] = df[["open", "high", "low", "close"]].to_numpy(dtype=np.float64).T.copy()
    return out


def row_of(when: str) -> int:
    return int(np.searchsorted(prices()["ts"], pd.Timestamp(when, tz="UTC").value))


@dataclasses.dataclass(frozen=True)
class Scenario:
    start: int  # first decision bar (row)
    actions: tuple[tuple[int, int, float, float] | None, ...]  # per bar: (symbol, direction, strength, confidence)
    overrides: tuple[tuple[str, Any], ...]
    allow_short: bool = False


@dataclasses.dataclass
class Books:
    """The test's own accounting, independent of RiskState."""

    peak: float
    day: Any = None
    day_start: float = 0.0
    loss_hit: bool = False
    entries_today: int = 0
    halted: bool = False
    orders: int = 0
    denied_after_loss: int = 0
    denied_halted: int = 0


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(24, 96))
    start = draw(st.integers(HISTORY + 1, len(prices()["ts"]) - n - 2))
    conviction = st.one_of(st.floats(0.0, 1.0), st.floats(0.6, 1.0))
    action = st.one_of(
        st.none(), st.tuples(st.integers(0, 1), st.integers(0, len(DIRECTIONS) - 1), conviction, conviction)
    )
    reduce = draw(st.sampled_from([0.002, 0.005, 0.01, 0.03]))
    overrides = (
        ("risk.daily_loss_limit", draw(st.sampled_from([0.002, 0.005, 0.01, 0.05]))),
        ("risk.drawdown_reduce", reduce),
        ("risk.drawdown_halt", reduce + draw(st.sampled_from([0.0, 0.003, 0.01, 0.03]))),
        ("risk.max_daily_trades", draw(st.integers(0, 6))),
        ("risk.max_concurrent_positions", draw(st.sampled_from([0, 1, 1, 2, 2]))),
        ("risk.exposure_limit", draw(st.sampled_from([0.05, 0.3, 0.8, 1.0]))),
        ("risk.max_correlation", draw(st.sampled_from([0.5, 0.9, 1.0]))),
        ("risk.stop_method", draw(st.sampled_from(["fixed", "atr", "volatility"]))),
        ("risk.max_loss_per_trade", draw(st.sampled_from([0.02, 0.1, 0.3]))),
        ("risk.default_stop_pct", draw(st.sampled_from([0.005, 0.02, 0.05]))),
        ("position_sizing.max_position_pct", draw(st.sampled_from([0.1, 0.5, 1.0]))),
        ("position_sizing.max_portfolio_heat", draw(st.sampled_from([0.06, 0.5, 1.0]))),
        ("position_sizing.method", draw(st.sampled_from(["min", "weighted"]))),
        ("position_sizing.correlation_window", draw(st.sampled_from([24, 96]))),
    )
    return Scenario(
        start=start,
        actions=tuple(draw(st.lists(action, min_size=n, max_size=n))),
        overrides=overrides,
        allow_short=draw(st.booleans()),
    )


AGGRESSIVE = (
    ("risk.daily_loss_limit", 0.03),
    ("risk.drawdown_reduce", 0.01),
    ("risk.drawdown_halt", 0.03),
    ("risk.max_daily_trades", 4),
    ("risk.max_concurrent_positions", 2),
    ("risk.exposure_limit", 1.0),
    ("risk.max_correlation", 1.0),
    ("risk.stop_method", "fixed"),
    ("risk.default_stop_pct", 0.1),
    ("risk.max_loss_per_trade", 0.3),
    ("position_sizing.max_position_pct", 0.5),
    ("position_sizing.max_portfolio_heat", 1.0),
    ("position_sizing.correlation_window", 24),
)


def scripted(when: str, n: int = 48, overrides: tuple[tuple[str, Any], ...] = AGGRESSIVE) -> Scenario:
    """Keep buying both symbols with conviction from ``when`` on (an explicit example)."""
    acts = tuple((i % 2, 0, 1.0, 0.9) for i in range(n))
    return Scenario(start=row_of(when), actions=acts, overrides=overrides)


CRASH = scripted("2020-03-12 00:00")
ZERO_VOLUME_EXAMPLES = [scripted(w, n=30) for w in ("2019-06-07 10:00", "2021-02-10 16:00", "2023-03-24 00:00")]


def _config(scenario: Scenario) -> L2Config:
    return _config_cached(scenario.overrides)


@cache
def _config_cached(overrides: tuple[tuple[str, Any], ...]) -> L2Config:
    base = {f"symbols.{s}.{k}": v for s in SYMBOLS for k, v in (("max_qty", 1e6), ("max_exposure", 1.0))}
    return L2Config.default().with_overrides({**base, **dict(overrides)})


def _market(t: int) -> MarketState:
    p = prices()
    sl = slice(t - HISTORY + 1, t + 1)
    return MarketState(
        bars={
            s: Bars(
                timeframe="1h",
                timestamps=p["ts"][sl],
                open=p[s][0, sl],
                high=p[s][1, sl],
                low=p[s][2, sl],
                close=p[s][3, sl],
            )
            for s in SYMBOLS
        }
    )


def _bar(sym: str, t: int) -> Bar:
    o, h, lo, c = prices()[sym][:, t]
    return Bar(open=float(o), high=float(h), low=float(lo), close=float(c))


def _fill_pending(
    order: OrderIntent, state: RiskState, cash: float, t: int, costs: Costs, now: datetime
) -> tuple[RiskState, float]:
    b = _bar(order.symbol, t)
    signed = order.qty if order.side.value == "buy" else -order.qty
    fill = market_fill(signed, b.open, b.high, b.low, costs)
    state = apply_fill(
        state, order.symbol, signed, fill.price, now=now, stop_loss=order.stop_loss, take_profit=order.take_profit
    )
    return state, cash - fill.qty * fill.price - fill.fee


def _monitor(state: RiskState, cash: float, t: int, cfg: L2Config, costs: Costs) -> tuple[RiskState, float]:
    for sym, pos in list(state.positions.items()):
        b = _bar(sym, t)
        pos, hit = monitor_position(pos, b, cfg.risk)
        if hit is None:
            state = replace_position(state, sym, pos)
            continue
        fill = exit_fill(pos.qty, hit[0], b.high, b.low, costs)
        cash -= fill.qty * fill.price + fill.fee
        state = replace_position(state, sym, None)
    return state, cash


def _update_books(books: Books, equity: float, now: datetime, risk: Any) -> None:
    books.peak = max(books.peak, equity)
    if now.date() != books.day:
        books.day, books.day_start, books.loss_hit, books.entries_today = now.date(), equity, False, 0
    if 1.0 - equity / books.day_start >= risk.daily_loss_limit:
        books.loss_hit = True
    if 1.0 - equity / books.peak >= risk.drawdown_halt:
        books.halted = True


def _check_order(order: OrderIntent, state: RiskState, books: Books, cfg: L2Config) -> None:
    """Every invariant an emitted order must satisfy, against the test's own books."""
    buy = order.side.value == "buy"
    assert (order.stop_loss < order.price) if buy else (order.stop_loss > order.price)
    assert math.isfinite(order.qty) and order.qty > 0
    if order.reduce_only:
        return
    risk, sizing, limits = cfg.risk, cfg.position_sizing, cfg.symbols[order.symbol]
    eq = state.equity
    assert not books.halted, "risk-increasing order after the drawdown kill switch"
    assert 1.0 - eq / books.peak < risk.drawdown_reduce, "risk-increasing order while drawdown >= drawdown_reduce"
    assert not books.loss_hit, "risk-increasing order after the daily loss limit, same UTC day"
    assert books.entries_today + 1 <= risk.max_daily_trades
    held = state.positions.get(order.symbol)
    assert len(state.positions) + (held is None) <= risk.max_concurrent_positions
    pos_value = (abs(held.qty) if held else 0.0) * order.price + order.qty * order.price
    cap = min(
        sizing.max_position_pct * eq,
        sizing.max_position_size,
        limits.max_notional,
        limits.max_qty * order.price,
        limits.max_exposure * eq,
    )
    assert pos_value <= cap * (1 + TOL)
    others = sum(abs(p.qty) * p.last_price for s, p in state.positions.items() if s != order.symbol)
    assert others + pos_value <= risk.exposure_limit * eq * (1 + TOL)


def simulate(scenario: Scenario) -> Books:
    cfg, costs = _config(scenario), Costs.from_config(_config(scenario).execution)
    p = prices()
    t0 = scenario.start
    clock = SimulatedClock(datetime.fromtimestamp((p["ts"][t0] + HOUR_NS) / 1e9, tz=timezone.utc))
    cash = cfg.execution.initial_cash
    state, books = new_risk_state(cash, clock.now()), Books(peak=cash)
    pending: OrderIntent | None = None
    for k, action in enumerate(scenario.actions):
        t = t0 + k
        clock.set(datetime.fromtimestamp((p["ts"][t] + HOUR_NS) / 1e9, tz=timezone.utc))  # bar t's close
        if pending is not None:
            state, cash = _fill_pending(pending, state, cash, t, costs, clock.now())
            pending = None
        state, cash = _monitor(state, cash, t, cfg, costs)
        equity = cash + sum(pos.qty * pos.last_price for pos in state.positions.values())
        state, _ = mark_to_market(state, equity, clock.now(), cfg.risk)
        _update_books(books, equity, clock.now(), cfg.risk)
        assert (state.trading_state is TradingState.HALTED) == books.halted
        if action is None:
            continue
        sym, d, strength, confidence = SYMBOLS[action[0]], DIRECTIONS[action[1]], action[2], action[3]
        signal = TacticalSignal(
            symbol=sym,
            direction=d,
            strength=strength,
            confidence=confidence,
            price=float(p[sym][3, t]),
            source=SignalSource.COMPOSITE,
            timestamp=clock.now(),
        )
        decision = build_order(signal, state, _market(t), cfg, clock, allow_short=scenario.allow_short)
        if decision.size is not None:
            assert all(math.isfinite(v) and v >= 0 for v in (decision.size.qty, decision.size.notional))
        if decision.order is None:
            books.denied_after_loss += books.loss_hit and d is SignalDirection.LONG
            books.denied_halted += books.halted and d is SignalDirection.LONG
            continue
        _check_order(decision.order, state, books, cfg)
        books.orders += 1
        books.entries_today += not decision.order.reduce_only
        state = record_order(state, reduce_only=decision.order.reduce_only)
        pending = decision.order
    return books


# ------------------------------------------------------------------ properties


@PROFILE
@given(scenario=scenarios())
@example(scenario=CRASH)
@example(scenario=ZERO_VOLUME_EXAMPLES[0])
@example(scenario=ZERO_VOLUME_EXAMPLES[1])
@example(scenario=ZERO_VOLUME_EXAMPLES[2])
def test_random_signals_on_real_prices_never_break_a_limit(scenario: Scenario):
    simulate(scenario)


@PROFILE
@given(
    price=st.floats(1e-6, 1e7),
    stop_frac=st.floats(-0.9, 0.9),
    equity=st.floats(-1e6, 1e9),
    p=st.floats(0.0, 1.0),
    vol=st.one_of(st.just(math.nan), st.floats(0.0, 50.0)),
    corr=st.lists(st.floats(-1.0, 1.0), max_size=3),
    other_risk=st.floats(0.0, 1e9),
    method=st.sampled_from(["min", "weighted"]),
    symbol=st.sampled_from(SYMBOLS),
)
def test_sizes_are_finite_and_non_negative(
    price: float,
    stop_frac: float,
    equity: float,
    p: float,
    vol: float,
    corr: list[float],
    other_risk: float,
    method: str,
    symbol: str,
):
    cfg = _config_cached((("position_sizing.method", method),))
    size = size_position(
        SizingInputs(
            symbol=symbol,
            price=price,
            stop_loss=price * (1 - stop_frac),
            equity=equity,
            win_probability=p,
            volatility=vol,
            correlations=tuple(corr),
            other_risk=other_risk,
        ),
        cfg.position_sizing,
        cfg.risk,
        cfg.symbols[symbol],
    )
    for v in (size.qty, size.notional, size.risk_amount):
        assert math.isfinite(v) and v >= 0
    if size.qty > 0:
        assert size.notional <= cfg.position_sizing.max_position_pct * equity * (1 + TOL)
        assert size.risk_amount <= max(cfg.position_sizing.max_portfolio_heat * equity - other_risk, 0) * (1 + TOL)


# ------------------------------------------- the explicit examples do bite


def test_march_2020_crash_trips_the_daily_loss_limit_and_the_kill_switch():
    books = simulate(CRASH)
    assert books.orders > 0
    assert books.denied_after_loss > 0
    assert books.halted and books.denied_halted > 0


@pytest.mark.parametrize("scenario", ZERO_VOLUME_EXAMPLES, ids=["2019-06-07", "2021-02-11", "2023-03-24"])
def test_zero_volume_bars_trade_through_without_breaking_limits(scenario: Scenario):
    p = prices()
    window = p["ts"][scenario.start : scenario.start + len(scenario.actions)]
    flat = [
        (
            p[s][1, scenario.start : scenario.start + len(window)]
            == p[s][2, scenario.start : scenario.start + len(window)]
        ).any()
        for s in SYMBOLS
    ]
    assert all(flat)  # the example really contains the flat zero-volume bar
    assert simulate(scenario).orders > 0
