"""TacticalLoop: the per-bar L2 decision, shared by ``l2 paper`` and the backtest engine.

The loop holds L2's state (recent closed bars per symbol, the account as L1 reported it,
orders sent and not yet answered, the latest L3 decision, the liveness gate) and turns
each closed bar into orders. It does no I/O and reads no clock of its own: the decision
time is the ``now`` argument (else ``clock.now()``), so a backtest and a replayed paper
run that feed the same bars and the same reports get the same orders.

API (every call is synchronous and deterministic)::

    loop = TacticalLoop(config, generator, clock=clock)   # generator: SignalGenerator (on_bar)
    loop.on_decision(decision)           # StrategicDecision from L3 (older ones are ignored)
    loop.on_report(report)               # ExecutionReport from L1 (fills, exits, rejections)
    loop.risk_gate(bus_ok, l1_age_s)     # -> GateState; when not ok only reduce-only orders pass
    d = loop.on_bar(symbol, bar, now)    # -> BarDecision(signals, orders, alerts, latency_s, reasons, exits)
    drive_bar(loop, executor, bar, now)  # the canonical bar order against an in-process L1 (backtests)

Per bar, in this order (the backtest and the paper runner must respect it: L1's reports
for bar t — fills at its open, stop/take-profit exits inside it — are given to
:meth:`on_report` BEFORE :meth:`on_bar` for bar t; the orders returned are submitted to
L1 before bar t+1)::

    history <- bar; positions marked at the close (MAE/MFE, trailed stop); equity -> RiskState
    signals  = generator.on_bar(symbol, bar)         (only ``trade_sources`` are traded)
    + a CLOSE signal when the L2-trailed stop was hit (L1 only knows the initial stop)
    orders   = order_pipeline.build_order(signal, state + working orders, market, config)
    gate     : not ok -> risk-increasing orders dropped (BUS_UNAVAILABLE / STALE_HEARTBEAT)
    L3       : symbols outside the decision's universe get no entries; gross exposure is
               capped at ``min(risk.exposure_limit, decision.target_exposure)`` (EXPOSURE_LIMIT)

``bar`` is any object with ``open_time`` (UTC datetime of the bar's open), ``open``,
``high``, ``low``, ``close``, ``volume`` (``l1_operational.datafeed.Bar`` fits).
Orders in flight count as filled for sizing (so a signal repeated on the next bar does not
double the position); a rejection report releases them.

Parts: L2's copy of the account in :mod:`l2_tactical.tactical_account`, the liveness gate and
L3's budget in :mod:`l2_tactical.risk_gate`, the counters in :mod:`l2_tactical.loop_stats`
(their public names are importable from here too).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from l2_tactical.clock import Clock
from l2_tactical.finrl_models.feature_processor import PositionState
from l2_tactical.loop_stats import LoopStats, count_bar, count_decision, stats_snapshot
from l2_tactical.messages import (
    ExecutionReport,
    ExecutionStatus,
    OrderIntent,
    ReasonCode,
    RiskAlert,
    SignalDirection,
    SignalSource,
    StrategicDecision,
    TacticalSignal,
    order_id_for,
)
from l2_tactical.order_pipeline import Bars, MarketState, OrderDecision, build_order, measure_atr
from l2_tactical.position_monitor import Position, monitor_position, track_excursions
from l2_tactical.risk_controls import RiskState, risk_metrics
from l2_tactical.risk_gate import GateState, StrategicBudget, gate_alert, liveness_gate
from l2_tactical.stops import Bar as PriceBar
from l2_tactical.tactical_account import TacticalAccount

__all__ = ["BarDecision", "Executor", "GateState", "LoopStats", "SignalProducer", "StrategicBudget",
           "TacticalAccount", "TacticalLoop", "drive_bar"]


class SignalProducer(Protocol):
    """What the loop needs from :class:`l2_tactical.signal_generator.SignalGenerator`: per closed bar
    ``(open_time_ns, open, high, low, close, volume)`` a Decision (``.signals``) or TacticalSignals."""

    def on_bar(self, symbol: str, candle: Any, regime_context: Any = None,
               position: PositionState | None = None) -> Any: ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BarDecision:
    """One bar's outcome: the generator's output (:attr:`signals`), the traded signals, orders, alerts."""

    symbol: str
    bar_time: datetime
    generated: Any  # the generator's output for the bar: a Decision (signals built when read) or TacticalSignals
    traded: tuple[TacticalSignal, ...]  # the generated signals of the loop's trade_sources
    orders: tuple[OrderIntent, ...]
    alerts: tuple[RiskAlert, ...]
    latency_s: float
    reasons: tuple[tuple[str, ReasonCode], ...] = ()  # (signal_id, why no order) for traded signals
    exits: tuple[TacticalSignal, ...] = ()  # L2's own close signals (trailed stop hit)

    @property
    def signals(self) -> tuple[TacticalSignal, ...]:
        """Every signal the generator made for the bar (traded or not)."""
        return _signals_of(self.generated)


class _History:
    """The last ``capacity`` closed bars of one symbol in contiguous numpy arrays (amortised O(1) push)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.n = capacity, 0
        self.ts = np.zeros(2 * capacity, dtype=np.int64)
        self.cols = tuple(np.zeros(2 * capacity, dtype=np.float64) for _ in range(4))  # open, high, low, close
        self._bars: Bars | None = None  # views of the current bars, until the next push

    def push(self, ts_ns: int, o: float, h: float, lo: float, c: float) -> None:
        self._bars = None
        n = self.n
        if n == self.ts.shape[0]:
            keep = self.capacity - 1
            for arr in (self.ts, *self.cols):
                arr[:keep] = arr[n - keep:n]
            n = keep
        self.ts[n] = ts_ns
        co, ch, cl, cc = self.cols
        co[n], ch[n], cl[n], cc[n] = o, h, lo, c
        self.n = n + 1

    def bars(self, timeframe: str) -> Bars:
        """The last ``capacity`` bars (one Bars object per push, so measures taken on it are shared)."""
        got = self._bars
        if got is None or got.timeframe != timeframe:
            i, n = max(0, self.n - self.capacity), self.n
            co, ch, cl, cc = self.cols
            got = self._bars = Bars(timeframe=timeframe, timestamps=self.ts[i:n], open=co[i:n], high=ch[i:n],
                                    low=cl[i:n], close=cc[i:n])
        return got


class _At:
    """A clock stopped at one instant (build_order takes a Clock)."""

    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._now.timestamp()


def _signals_of(raw: Any) -> tuple[TacticalSignal, ...]:
    if raw is None:
        return ()
    if isinstance(raw, TacticalSignal):
        return (raw,)
    items = tuple(getattr(raw, "signals", raw))
    bad = [type(s).__name__ for s in items if not isinstance(s, TacticalSignal)]
    if bad:
        raise TypeError(f"signal generator on_bar returned {bad}; expected TacticalSignal(s)")
    return items


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000) * 1000


class TacticalLoop:
    """L2's state and its per-bar decision (see the module docstring)."""

    def __init__(self, config: Any, generator: SignalProducer, *, clock: Clock, timeframe: str = "1m",
                 trade_sources: Iterable[SignalSource] = (SignalSource.COMPOSITE,), allow_short: bool = False,
                 initial_cash: float | None = None, timer: Callable[[], float] = time.perf_counter) -> None:
        self.config, self.generator, self.clock = config, generator, clock
        self.timeframe, self.allow_short, self.timer = timeframe, allow_short, timer
        self.trade_sources = frozenset(trade_sources)
        self.stats = LoopStats()
        cash = float(config.execution.initial_cash if initial_cash is None else initial_cash)
        self.account = TacticalAccount(cash, clock.now(), default_stop_pct=config.risk.default_stop_pct,
                                       stats=self.stats)
        self.budget = StrategicBudget(config)
        self.capacity = max(config.position_sizing.correlation_window + 1, 4 * config.technical.atr_period, 64)
        self.history: dict[str, _History] = {}
        self.gate = GateState(ok=True)
        self._trail_hit: set[str] = set()

    # ------------------------------------------------- the account (read-only views)
    @property
    def cash(self) -> float:
        return self.account.cash

    @property
    def state(self) -> RiskState:
        return self.account.state

    @property
    def working(self) -> dict[str, OrderIntent]:
        """order_id -> intent sent, no report yet."""
        return self.account.working

    @property
    def origin(self) -> dict[str, str]:
        return self.account.origin

    @property
    def stop_sent(self) -> dict[str, float]:
        return self.account.stop_sent

    @property
    def entry_equity(self) -> dict[str, float]:
        return self.account.entry_equity

    @property
    def bars_held(self) -> dict[str, int]:
        return self.account.bars_held

    @property
    def decision(self) -> StrategicDecision | None:
        return self.budget.decision

    # ------------------------------------------------------------------ inputs
    def on_decision(self, decision: StrategicDecision) -> bool:
        """Adopt an L3 decision unless it is older than the current one; True when adopted."""
        return self.budget.adopt(decision)

    def risk_gate(self, bus_ok: bool, l1_heartbeat_age_s: float | None) -> GateState:
        """Set the liveness gate: the bus must answer and L1's last heartbeat be at most
        ``bus.heartbeat_timeout_seconds`` old (``None``: none seen yet = stale)."""
        self.gate = liveness_gate(bus_ok, l1_heartbeat_age_s, self.config.bus.heartbeat_timeout_seconds)
        return self.gate

    def on_report(self, report: ExecutionReport) -> bool:
        """Apply one L1 report to L2's account mirror; False for a report already applied."""
        if not self.account.apply_report(report):
            return False
        if report.status is not ExecutionStatus.REJECTED:
            hook = getattr(self.generator, "on_execution", None)
            if callable(hook):
                hook(report)
        return True

    def warm_up(self, symbol: str, history: Any) -> int:
        """Start ``symbol`` on closed bars before the run (a frame indexed by UTC open time with float
        open/high/low/close/volume, or ``Candles``): the loop's lookback and the generator's features.
        No signal, order or statistic comes out of it. Returns the number of bars used."""
        frame = getattr(history, "frame", history)
        ts = np.asarray(frame.index.as_unit("ns").asi8, dtype=np.int64)
        o, h, lo, c = (frame[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close"))
        hist = self.history[symbol] = _History(self.capacity)
        for i in range(max(0, ts.shape[0] - self.capacity), ts.shape[0]):
            hist.push(int(ts[i]), float(o[i]), float(h[i]), float(lo[i]), float(c[i]))
        warm = getattr(self.generator, "warm_up", None)
        if callable(warm) and ts.shape[0]:
            warm(symbol, history, regime_context=self.decision, position=self.position_state(symbol))
        return int(ts.shape[0])

    # ----------------------------------------------------------------- the bar
    def on_bar(self, symbol: str, bar: Any, now: datetime | None = None) -> BarDecision:
        """One closed bar of ``symbol``: signals -> orders (see the module docstring)."""
        t0 = self.timer()
        now = now or self.clock.now()
        hist = self.history.get(symbol)
        if hist is None:
            hist = self.history[symbol] = _History(self.capacity)
        candle = (_ns(bar.open_time), float(bar.open), float(bar.high), float(bar.low), float(bar.close),
                  float(bar.volume))
        hist.push(*candle[:5])
        count_bar(self.stats, bar.open_time)
        alerts: list[RiskAlert] = list(self._mark(symbol, bar, now))
        raw = self.generator.on_bar(symbol, candle, regime_context=self.budget.active(now),
                                    position=self.position_state(symbol))
        generated, traded = self._traded(raw)
        trail = self._trailing_exit(symbol, bar, now)
        exits = (trail,) if trail is not None else ()
        orders, reasons = self._decide_all((*traded, *exits), now, alerts)
        count_decision(self.stats, traded, orders, reasons, self.trade_sources)
        latency = self.timer() - t0
        self.stats.latencies.append(latency)
        return BarDecision(symbol=symbol, bar_time=bar.open_time, generated=generated, traded=traded,
                           orders=tuple(orders), alerts=tuple(alerts), latency_s=latency, reasons=tuple(reasons),
                           exits=exits)

    def _traded(self, raw: Any) -> tuple[Any, tuple[TacticalSignal, ...]]:
        """The generator's output as kept in the BarDecision, and its signals of ``trade_sources``
        (a Decision builds only those; other outputs are checked to be TacticalSignals now)."""
        pick = getattr(raw, "signals_from", None)
        if callable(pick):
            return raw, tuple(pick(self.trade_sources))
        signals = _signals_of(raw)
        return signals, tuple(s for s in signals if s.source in self.trade_sources)

    def position_state(self, symbol: str) -> PositionState:
        """What the specialists are shown about ``symbol``'s position (L2's view of L1's fills)."""
        return self.account.position_state(symbol)

    def _mark(self, symbol: str, bar: Any, now: datetime) -> tuple[RiskAlert, ...]:
        pos = self.account.state.positions.get(symbol)
        moved: Position | None = None
        if pos is not None:
            pb = PriceBar(open=float(bar.open), high=float(bar.high), low=float(bar.low), close=float(bar.close))
            if self.config.risk.trailing_stop:
                atr = measure_atr(self.history[symbol].bars(self.timeframe), self.config.technical.atr_period)[0]
                moved, hit = monitor_position(pos, pb, self.config.risk, atr=atr if math.isfinite(atr) else None)
                if hit is not None and hit[1] is ReasonCode.STOP_LOSS_HIT:
                    self._trail_hit.add(symbol)
            else:
                moved = track_excursions(pos, pb)
        return self.account.mark_to_market(now, self.config.risk, moved=moved)

    def _trailing_exit(self, symbol: str, bar: Any, now: datetime) -> TacticalSignal | None:
        """A CLOSE signal once the bar traded through the stop L2 trailed beyond the one L1 guards."""
        hit = symbol in self._trail_hit
        self._trail_hit.discard(symbol)
        pos = self.account.state.positions.get(symbol)
        sent = self.account.stop_sent.get(symbol)
        if not hit or pos is None or sent is None or any(o.symbol == symbol for o in self.account.working.values()):
            return None
        if (pos.stop_loss - sent) * pos.side <= 0:  # not tightened: L1's own stop handles it
            return None
        direction = SignalDirection.CLOSE_LONG if pos.side > 0 else SignalDirection.CLOSE_SHORT
        return TacticalSignal(symbol=symbol, direction=direction, strength=1.0, confidence=1.0,
                              price=float(bar.close), timestamp=now, source=SignalSource.COMPOSITE,
                              metadata={"reason": "trailing_stop", "stop": pos.stop_loss, "initial_stop": sent})

    def _decide_all(self, traded: Sequence[TacticalSignal], now: datetime,
                    alerts: list[RiskAlert]) -> tuple[list[OrderIntent], list[tuple[str, ReasonCode]]]:
        """An order or the reason for none, per traded signal (their risk alerts appended to ``alerts``)."""
        orders: list[OrderIntent] = []
        reasons: list[tuple[str, ReasonCode]] = []
        if traded:
            market = MarketState(bars={s: h.bars(self.timeframe) for s, h in self.history.items()})
            for signal in traded:
                order, reason, more = self._decide(signal, market, now)
                alerts.extend(more)
                if order is not None:
                    orders.append(order)
                else:
                    reasons.append((signal.signal_id, reason))
        return orders, reasons

    def _decide(self, signal: TacticalSignal, market: MarketState,
                now: datetime) -> tuple[OrderIntent | None, ReasonCode, tuple[RiskAlert, ...]]:
        if self.account.was_sent(order_id_for(signal.signal_id)):  # the same signal never makes two orders
            return None, ReasonCode.DUPLICATE_ORDER, ()
        entry = signal.direction in (SignalDirection.LONG, SignalDirection.SHORT)
        if entry and not self.budget.allows_entry(signal.symbol, now):
            return None, ReasonCode.EXPOSURE_LIMIT, ()
        decision: OrderDecision = build_order(signal, self.account.with_working(), market,
                                              self.budget.config_at(now), _At(now), allow_short=self.allow_short)
        order = decision.order
        if order is None:
            return None, decision.reason, decision.alerts
        if not order.reduce_only and not self.gate.ok:
            return None, self.gate.reason, decision.alerts
        decision_id = self.budget.decision_id(now)
        if decision_id:
            order = dataclasses.replace(order, correlation_id=f"{decision_id}/{order.signal_id}")
        self.account.record_sent(order, signal.source.value)
        return order, decision.reason, decision.alerts

    # ----------------------------------------------------------------- output
    def snapshot(self, now: datetime | None = None) -> Mapping[str, Any]:
        """Numbers for the dashboard and the summary (plain values)."""
        now = now or self.clock.now()
        return stats_snapshot(self.stats, risk_metrics(self.account.state, now), gate=self.gate.reason.value,
                              working_orders=len(self.account.working))

    def gate_alert(self, previous: GateState, now: datetime) -> RiskAlert | None:
        """An alert when the gate changed between ``previous`` and now."""
        return gate_alert(previous, self.gate, now)


class Executor(Protocol):
    """What :func:`drive_bar` needs from L1 (``l1_operational.executor.PaperExecutor`` fits)."""

    def on_bar(self, bar: Any) -> Sequence[ExecutionReport]: ...

    def submit(self, intent: OrderIntent) -> ExecutionReport | None: ...


def drive_bar(loop: TacticalLoop, executor: Executor, bar: Any, now: datetime) -> BarDecision:
    """One bar in the canonical order, without a bus: L1 processes the bar (fills at its open,
    exits inside it), L2 hears the reports, decides at the close, L1 receives the orders.

    The backtest uses this directly; ``l2 paper --bus memory`` does the same through the bus.
    """
    for report in executor.on_bar(bar):
        loop.on_report(report)
    decision = loop.on_bar(bar.symbol, bar, now)
    for order in decision.orders:
        answer = executor.submit(order)
        if answer is not None:
            loop.on_report(answer)
    return decision
