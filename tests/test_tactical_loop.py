"""TacticalLoop: the per-bar L2 decision shared by `l2 paper` and the backtest, on real 1m candles."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from functools import lru_cache

import pytest

from l1_operational.executor import PaperExecutor
from l1_operational.journal import Journal
from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.messages import (
    ExecutionReport,
    ExecutionStatus,
    ReasonCode,
    Regime,
    Side,
    SignalDirection,
    SignalSource,
    StrategicDecision,
    TacticalSignal,
    order_id_for,
)
from l2_tactical.tactical_loop import GateState, TacticalLoop, drive_bar
from tests.l1_support import BTC_1M, ETH_1M, bars

CFG = L2Config.default()


@lru_cache(maxsize=4)
def day(path=BTC_1M, start="2025-06-02T00:00:00Z", end="2025-06-03T00:00:00Z"):
    return tuple(bars(path, start, end))


@lru_cache(maxsize=1)
def warm_history():
    """The two real days before :func:`day`: enough closed bars for every feature of the ``full`` preset."""
    from l2_tactical.data.candles import load_candles

    return load_candles(BTC_1M).slice("2025-05-31T00:00:00Z", "2025-06-02T00:00:00Z")


def real_loop():
    from l2_tactical.signal_generator import SignalGenerator

    clock = SimulatedClock(day()[0].open_time)
    loop = TacticalLoop(CFG, SignalGenerator(CFG, clock=clock, timeframe="1m"), clock=clock)
    loop.risk_gate(True, 0.0)
    assert loop.warm_up("BTCUSDT", warm_history()) == 2880
    executor = PaperExecutor.from_config(CFG, journal=Journal("sqlite://"), clock=clock)
    return loop, executor, clock


class Scripted:
    """A signal source that says ``direction`` on chosen bars (real prices, stamped at the bar's close)."""

    def __init__(self, plan: dict[int, SignalDirection] | None = None, every: int = 0) -> None:
        self.plan, self.every, self.n = dict(plan or {}), every, 0
        self.contexts: list[object] = []

    def on_bar(self, symbol, candle, regime_context=None, position=None):
        self.contexts.append(regime_context)
        i, self.n = self.n, self.n + 1
        direction = self.plan.get(i)
        if direction is None and self.every:
            phase = i % self.every
            direction = {self.every // 4: SignalDirection.LONG,
                         3 * self.every // 4: SignalDirection.CLOSE_LONG}.get(phase)
        if direction is None:
            return ()
        from datetime import datetime, timezone

        when = datetime.fromtimestamp(candle[0] / 1e9 + 60, tz=timezone.utc)
        return (TacticalSignal(symbol=symbol, direction=direction, strength=0.8, confidence=0.7, price=candle[4],
                               timestamp=when, source=SignalSource.COMPOSITE,
                               expires_at=when + timedelta(minutes=15)),)


def make(generator, *, config=CFG, first=None):
    first = first or day()[0]
    clock = SimulatedClock(first.open_time)
    loop = TacticalLoop(config, generator, clock=clock)
    loop.risk_gate(True, 0.0)
    executor = PaperExecutor.from_config(config, journal=Journal("sqlite://"), clock=clock)
    return loop, executor, clock


def replay(loop, executor, clock, some_bars):
    decisions = []
    for bar in some_bars:
        clock.set(bar.close_time)
        decisions.append(drive_bar(loop, executor, bar, bar.close_time))
    return decisions


def orders_of(decisions):
    return [o for d in decisions for o in d.orders]


def test_long_signal_becomes_an_order_with_a_coherent_stop_and_ids_derived_from_the_signal():
    loop, _, clock = make(Scripted({30: SignalDirection.LONG}))
    decisions = []
    for bar in day()[:31]:
        clock.set(bar.close_time)
        decisions.append(loop.on_bar(bar.symbol, bar, bar.close_time))
    (order,) = orders_of(decisions)
    signal = decisions[-1].signals[0]
    assert order.side is Side.BUY and order.qty > 0 and not order.reduce_only
    assert order.stop_loss < order.price == day()[30].close
    assert order.take_profit is not None and order.take_profit > order.price
    assert order.order_id == order_id_for(signal.signal_id)
    assert order.correlation_id == signal.signal_id  # no L3 decision: the signal is the correlation
    assert order.timestamp == day()[30].close_time


def test_l2_account_mirror_equals_the_l1_portfolio_after_a_day_of_real_bars():
    loop, executor, clock = make(Scripted(every=120))
    decisions = replay(loop, executor, clock, day())
    assert len(orders_of(decisions)) >= 6
    assert executor.stats.filled >= 6
    portfolio = executor.portfolio
    assert loop.cash == pytest.approx(portfolio.balance("USDT"), rel=1e-12)
    mirrored = {s: p.qty for s, p in loop.state.positions.items()}
    held = {s: pos.qty for s, pos in portfolio.positions.items()}
    assert mirrored.keys() == held.keys()
    for symbol, qty in held.items():
        assert mirrored[symbol] == pytest.approx(qty, rel=1e-12)
    assert loop.stats.fees == pytest.approx(portfolio.fees_paid, rel=1e-12)


def test_every_order_from_the_real_signal_generator_carries_a_coherent_stop():
    loop, executor, clock = real_loop()
    decisions = replay(loop, executor, clock, day()[:900])
    orders = orders_of(decisions)
    assert sum(len(d.signals) for d in decisions) > 0
    assert orders, "the real generator produced no order on 900 real bars"
    for o in orders:
        assert (o.stop_loss < o.price) if o.side is Side.BUY else (o.stop_loss > o.price)
    # only the traded (composite) signals are built to decide; every signal is still there when asked for
    for d in decisions:
        assert d.traded == tuple(s for s in d.signals if s.source is SignalSource.COMPOSITE)
        assert d.signals == d.generated.signals
    assert {s.source for d in decisions for s in d.signals} > {SignalSource.COMPOSITE}


def test_same_bars_and_reports_give_identical_orders_and_fills():
    def run():
        loop, executor, clock = real_loop()
        decisions = replay(loop, executor, clock, day()[:600])
        return [o.to_dict() for o in orders_of(decisions)], [r.to_dict() for r in executor.journal.reports()]

    first_orders, first_reports = run()
    again_orders, again_reports = run()
    assert first_orders and first_orders == again_orders
    assert first_reports == again_reports


def test_stale_l1_heartbeat_blocks_new_risk_but_lets_exits_through():
    plan = {40: SignalDirection.LONG, 70: SignalDirection.LONG, 71: SignalDirection.CLOSE_LONG}
    loop, executor, clock = make(Scripted(plan))
    decisions = replay(loop, executor, clock, day()[:42])
    assert len(orders_of(decisions)) == 1 and loop.state.positions  # opened while L1 was alive
    gate = loop.risk_gate(True, CFG.bus.heartbeat_timeout_seconds + 0.5)
    assert gate == GateState(ok=False, reason=ReasonCode.STALE_HEARTBEAT)
    decisions = replay(loop, executor, clock, day()[42:72])
    reasons = [r for d in decisions for _, r in d.reasons]
    orders = orders_of(decisions)
    assert ReasonCode.STALE_HEARTBEAT in reasons
    assert [o.reduce_only for o in orders] == [True] and orders[0].side is Side.SELL


def test_heartbeat_never_seen_counts_as_stale_and_an_unreachable_bus_has_its_own_reason():
    loop, _, _ = make(Scripted())
    assert loop.risk_gate(True, None).reason is ReasonCode.STALE_HEARTBEAT
    assert loop.risk_gate(False, 0.1).reason is ReasonCode.BUS_UNAVAILABLE
    assert loop.risk_gate(True, CFG.bus.heartbeat_timeout_seconds).ok


def test_gate_changes_raise_an_alert_and_its_clearance_is_announced():
    loop, _, _ = make(Scripted())
    now = day()[0].close_time
    before = loop.gate
    loop.risk_gate(False, 0.0)
    down = loop.gate_alert(before, now)
    assert down is not None and down.code is ReasonCode.BUS_UNAVAILABLE
    assert loop.gate_alert(loop.gate, now) is None
    previous = loop.gate
    loop.risk_gate(True, 0.0)
    up = loop.gate_alert(previous, now)
    assert up is not None and "cleared" in up.message


def test_an_order_in_flight_counts_as_filled_and_a_rejection_releases_it():
    loop, _, clock = make(Scripted({35: SignalDirection.LONG, 36: SignalDirection.CLOSE_LONG}))
    decisions = []
    for bar in day()[:37]:
        clock.set(bar.close_time)
        decisions.append(loop.on_bar(bar.symbol, bar, bar.close_time))
    buy, sell = orders_of(decisions)
    assert sell.reduce_only and sell.side is Side.SELL and sell.qty == pytest.approx(buy.qty)
    assert set(loop.working) == {buy.order_id, sell.order_id}
    for o in (buy, sell):
        loop.on_report(ExecutionReport(order_id=o.order_id, symbol=o.symbol, side=o.side,
                                       status=ExecutionStatus.REJECTED, requested_qty=o.qty, executed_qty=0.0,
                                       avg_price=0.0, timestamp=o.timestamp,
                                       reason_code=ReasonCode.INSUFFICIENT_BALANCE))
    assert loop.working == {} and loop.state.positions == {}
    assert loop.stats.rejections["insufficient_balance"] == 2


def test_a_report_delivered_twice_is_applied_once():
    loop, executor, clock = make(Scripted({33: SignalDirection.LONG}))
    decisions = replay(loop, executor, clock, day()[:36])
    (fill,) = [r for r in executor.journal.reports() if r.status is ExecutionStatus.FILLED]
    cash = loop.cash
    assert loop.on_report(fill) is False
    assert loop.cash == cash and loop.stats.fills == 1
    assert orders_of(decisions)


def test_l3_universe_and_exposure_budget_limit_entries_with_a_reason():
    start = day()[0].open_time
    outside = StrategicDecision(regime=Regime.RANGING, strength=0.5, target_exposure=0.5, risk_appetite=0.5,
                                universe=("ETHUSDT",), timestamp=start)
    loop, executor, clock = make(Scripted({35: SignalDirection.LONG}))
    assert loop.on_decision(outside)
    decisions = replay(loop, executor, clock, day()[:36])
    assert not orders_of(decisions) and decisions[-1].reasons[0][1] is ReasonCode.EXPOSURE_LIMIT

    zero = dataclasses.replace(outside, universe=("BTCUSDT",), target_exposure=0.0, decision_id="")
    loop, executor, clock = make(Scripted({35: SignalDirection.LONG}))
    loop.on_decision(zero)
    decisions = replay(loop, executor, clock, day()[:36])
    assert not orders_of(decisions) and decisions[-1].reasons[0][1] is ReasonCode.EXPOSURE_LIMIT

    small = dataclasses.replace(zero, target_exposure=0.02, decision_id="")
    loop, executor, clock = make(Scripted({35: SignalDirection.LONG}))
    loop.on_decision(small)
    orders = orders_of(replay(loop, executor, clock, day()[:36]))
    assert all(o.qty * o.price <= 0.02 * CFG.execution.initial_cash * (1 + 1e-9) for o in orders)
    unbounded = orders_of(replay(*make(Scripted({35: SignalDirection.LONG})), day()[:36]))
    assert unbounded and unbounded[0].qty * unbounded[0].price > 0.02 * CFG.execution.initial_cash


def test_an_older_or_expired_l3_decision_does_not_rule_and_orders_carry_the_decision_id():
    start = day()[0].open_time
    newer = StrategicDecision(regime=Regime.TRENDING, strength=0.9, target_exposure=0.8, risk_appetite=0.5,
                              universe=("BTCUSDT",), timestamp=start + timedelta(minutes=1))
    older = dataclasses.replace(newer, timestamp=start, decision_id="", universe=("ETHUSDT",))
    gen = Scripted({35: SignalDirection.LONG})
    loop, executor, clock = make(gen)
    assert loop.on_decision(newer) and not loop.on_decision(older)
    (order,) = orders_of(replay(loop, executor, clock, day()[:36]))
    assert order.correlation_id == f"{newer.decision_id}/{order.signal_id}"
    assert gen.contexts[-1] is newer  # the generator sees L3's regime

    expired = dataclasses.replace(newer, universe=("ETHUSDT",), expires_at=start + timedelta(minutes=2),
                                  decision_id="")
    loop, executor, clock = make(Scripted({35: SignalDirection.LONG}))
    loop.on_decision(expired)
    (order,) = orders_of(replay(loop, executor, clock, day()[:36]))
    assert order.correlation_id == order.signal_id


def test_l2_trailing_stop_exits_only_after_it_tightened_beyond_l1s_stop_and_was_traded_through():
    week = tuple(bars(BTC_1M, "2025-06-02T00:00:00Z", "2025-06-09T00:00:00Z"))
    cfg = CFG.with_overrides({"risk.stop_method": "fixed", "risk.default_stop_pct": 0.01,
                              "risk.take_profit_r": 20.0})
    loop, executor, clock = make(Scripted(every=360), config=cfg, first=week[0])
    exits = 0
    for bar in week:
        clock.set(bar.close_time)
        pos = loop.state.positions.get(bar.symbol)
        before = (pos.stop_loss, loop.stop_sent.get(bar.symbol)) if pos is not None else None
        decision = drive_bar(loop, executor, bar, bar.close_time)
        for signal in decision.exits:
            exits += 1
            l2_stop, l1_stop = before
            assert l2_stop > l1_stop and bar.low <= l2_stop
            (order,) = [o for o in decision.orders if o.signal_id == signal.signal_id]
            assert order.reduce_only and order.side is Side.SELL
    assert exits > 0, "no trailed stop was hit in a week of real bars: the test would prove nothing"


def test_a_generator_answering_something_else_than_signals_is_refused():
    class Broken:
        def on_bar(self, symbol, candle, regime_context=None, position=None):
            return ["long"]

    loop, _, _ = make(Broken())
    bar = day()[0]
    with pytest.raises(TypeError, match="expected TacticalSignal"):
        loop.on_bar(bar.symbol, bar, bar.close_time)


def test_two_symbols_keep_separate_histories_and_positions():
    eth = tuple(bars(ETH_1M, "2025-06-02T00:00:00Z", "2025-06-02T02:00:00Z"))
    btc = day()[:len(eth)]
    loop, executor, clock = make(Scripted(every=60))
    merged = sorted(btc + eth, key=lambda b: (b.open_time, b.symbol))
    replay(loop, executor, clock, merged)
    assert set(loop.history) == {"BTCUSDT", "ETHUSDT"}
    assert loop.history["ETHUSDT"].n == len(eth)
    assert loop.cash == pytest.approx(executor.portfolio.balance("USDT"), rel=1e-12)
