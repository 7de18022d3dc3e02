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
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from l2_tactical.clock import Clock
from l2_tactical.finrl_models.feature_processor import PositionState
from l2_tactical.messages import (
    AlertSeverity,
    ExecutionReport,
    ExecutionStatus,
    OrderIntent,
    ReasonCode,
    RiskAlert,
    Side,
    SignalDirection,
    SignalSource,
    StrategicDecision,
    TacticalSignal,
    order_id_for,
)
from l2_tactical.order_pipeline import Bars, MarketState, OrderDecision, build_order, measure
from l2_tactical.position_monitor import monitor_position, track_excursions
from l2_tactical.risk_controls import (
    RiskState,
    apply_fill,
    mark_to_market,
    new_risk_state,
    record_order,
    replace_position,
    risk_metrics,
)
from l2_tactical.stops import Bar as PriceBar


class SignalProducer(Protocol):
    """What the loop needs from :class:`l2_tactical.signal_generator.SignalGenerator`: per closed bar
    ``(open_time_ns, open, high, low, close, volume)`` a Decision (``.signals``) or TacticalSignals."""

    def on_bar(self, symbol: str, candle: Any, regime_context: Any = None,
               position: PositionState | None = None) -> Any: ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GateState:
    """Liveness gate: ``ok`` False means only reduce-only orders may leave L2, because of ``reason``."""

    ok: bool
    reason: ReasonCode = ReasonCode.OK


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BarDecision:
    symbol: str
    bar_time: datetime
    signals: tuple[TacticalSignal, ...]
    orders: tuple[OrderIntent, ...]
    alerts: tuple[RiskAlert, ...]
    latency_s: float
    reasons: tuple[tuple[str, ReasonCode], ...] = ()  # (signal_id, why no order) for traded signals
    exits: tuple[TacticalSignal, ...] = ()  # L2's own close signals (trailed stop hit)


@dataclasses.dataclass
class LoopStats:
    """Counters for dashboards and summaries."""

    bars: int = 0
    signals: int = 0
    orders: int = 0
    confidence_sum: float = 0.0
    consensus_sum: float = 0.0
    consensus_n: int = 0
    reasons: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    fills: int = 0
    rejections: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    fees: float = 0.0
    realised_pnl: float = 0.0
    wins: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    trades_closed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    latencies: collections.deque[float] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=2048))
    first_bar: datetime | None = None
    last_bar: datetime | None = None


class _History:
    """The last ``capacity`` closed bars of one symbol in contiguous numpy arrays (amortised O(1) push)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.n = capacity, 0
        self.ts = np.zeros(2 * capacity, dtype=np.int64)
        self.ohlc = np.zeros((4, 2 * capacity), dtype=np.float64)

    def push(self, ts_ns: int, o: float, h: float, lo: float, c: float) -> None:
        if self.n == self.ts.shape[0]:
            keep = self.capacity - 1
            self.ts[:keep] = self.ts[self.n - keep:self.n]
            self.ohlc[:, :keep] = self.ohlc[:, self.n - keep:self.n]
            self.n = keep
        self.ts[self.n] = ts_ns
        self.ohlc[:, self.n] = (o, h, lo, c)
        self.n += 1

    def bars(self, timeframe: str) -> Bars:
        i = max(0, self.n - self.capacity)
        o, h, lo, c = self.ohlc[:, i:self.n]
        return Bars(timeframe=timeframe, timestamps=self.ts[i:self.n], open=o, high=h, low=lo, close=c)


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
        self.cash = float(config.execution.initial_cash if initial_cash is None else initial_cash)
        self.state: RiskState = new_risk_state(self.cash, clock.now())
        self.capacity = max(config.position_sizing.correlation_window + 1, 4 * config.technical.atr_period, 64)
        self.history: dict[str, _History] = {}
        self.working: dict[str, OrderIntent] = {}       # order_id -> intent sent, no report yet
        self.origin: dict[str, str] = {}                # symbol -> source of the signal that opened it
        self.stop_sent: dict[str, float] = {}           # symbol -> stop L1 guards (the entry order's)
        self.entry_equity: dict[str, float] = {}        # symbol -> equity when it was opened
        self.bars_held: dict[str, int] = {}
        self.decision: StrategicDecision | None = None
        self.gate = GateState(ok=True)
        self.stats = LoopStats()
        self._reports_seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._sent: set[str] = set()
        self._cfg_cache: tuple[float, Any] | None = None
        self._trail_hit: set[str] = set()
        self._flat: PositionState | None = None

    # ------------------------------------------------------------------ inputs
    def on_decision(self, decision: StrategicDecision) -> bool:
        """Adopt an L3 decision unless it is older than the current one; True when adopted."""
        if self.decision is not None and decision.timestamp < self.decision.timestamp:
            return False
        self.decision = decision
        return True

    def risk_gate(self, bus_ok: bool, l1_heartbeat_age_s: float | None) -> GateState:
        """Set the liveness gate: the bus must answer and L1's last heartbeat be at most
        ``bus.heartbeat_timeout_seconds`` old (``None``: none seen yet = stale)."""
        if not bus_ok:
            self.gate = GateState(ok=False, reason=ReasonCode.BUS_UNAVAILABLE)
        elif l1_heartbeat_age_s is None or not l1_heartbeat_age_s <= self.config.bus.heartbeat_timeout_seconds:
            self.gate = GateState(ok=False, reason=ReasonCode.STALE_HEARTBEAT)
        else:
            self.gate = GateState(ok=True)
        return self.gate

    def on_report(self, report: ExecutionReport) -> bool:
        """Apply one L1 report to L2's account mirror; False for a report already applied."""
        if report.report_id in self._reports_seen:
            return False
        self._reports_seen[report.report_id] = None
        if len(self._reports_seen) > 100_000:
            self._reports_seen.popitem(last=False)
        intent = self.working.pop(report.order_id, None)
        if report.status is ExecutionStatus.REJECTED:
            self.stats.rejections[report.reason_code.value] += 1
            if intent is not None and not intent.reduce_only and intent.symbol not in self.state.positions:
                self.origin.pop(intent.symbol, None)
            return True
        sign = 1.0 if report.side is Side.BUY else -1.0
        qty, price = report.executed_qty, report.avg_price
        self.cash -= sign * qty * price + report.fees
        self.stats.fills += 1
        self.stats.fees += report.fees
        self._book(report.symbol, sign * qty, price, report.fees, intent, report.timestamp)
        hook = getattr(self.generator, "on_execution", None)
        if callable(hook):
            hook(report)
        return True

    def _book(self, symbol: str, signed_qty: float, price: float, fees: float, intent: OrderIntent | None,
              when: datetime) -> None:
        pos = self.state.positions.get(symbol)
        if pos is not None and signed_qty * pos.qty < 0:  # a reduction realises PnL
            closed = min(abs(signed_qty), abs(pos.qty))
            pnl = closed * (price - pos.entry_price) * pos.side
            self.stats.realised_pnl += pnl
            if abs(signed_qty) >= abs(pos.qty) - 1e-12:
                source = self.origin.pop(symbol, "unknown")
                self.stats.trades_closed[source] += 1
                self.stats.wins[source] += int(pnl - fees > 0)
                self.stop_sent.pop(symbol, None)
        stop = intent.stop_loss if intent is not None else None
        if pos is None and stop is None:  # a fill L2 did not order: protect it like L1 would
            stop = price * (1.0 - math.copysign(self.config.risk.default_stop_pct, signed_qty))
        tp = intent.take_profit if intent is not None else None
        self.state = apply_fill(self.state, symbol, signed_qty, price, now=when, stop_loss=stop, take_profit=tp)
        if pos is None and symbol in self.state.positions and stop is not None:
            self.stop_sent[symbol] = stop
            self.entry_equity[symbol], self.bars_held[symbol] = self.state.equity, 0
        if symbol not in self.state.positions:
            self.entry_equity.pop(symbol, None)
            self.bars_held.pop(symbol, None)

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
        self._track_stats(bar.open_time)
        alerts: list[RiskAlert] = list(self._mark(symbol, bar, now))
        raw = self.generator.on_bar(symbol, candle, regime_context=self._active(now),
                                    position=self.position_state(symbol))
        signals = _signals_of(raw)
        traded = [s for s in signals if s.source in self.trade_sources]
        trail = self._trailing_exit(symbol, bar, now)
        exits = (trail,) if trail is not None else ()
        traded.extend(exits)
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
        self._count(signals, orders, reasons)
        latency = self.timer() - t0
        self.stats.latencies.append(latency)
        return BarDecision(symbol=symbol, bar_time=bar.open_time, signals=signals, orders=tuple(orders),
                           alerts=tuple(alerts), latency_s=latency, reasons=tuple(reasons), exits=exits)

    def position_state(self, symbol: str) -> PositionState:
        """What the specialists are shown about ``symbol``'s position (L2's view of L1's fills)."""
        pos = self.state.positions.get(symbol)
        equity = self.state.equity
        if pos is None or equity <= 0:
            dd = self.state.drawdown
            if self._flat is None or self._flat.drawdown != dd:
                self._flat = PositionState(drawdown=dd)
            return self._flat
        entry_equity = self.entry_equity.get(symbol, equity)
        return PositionState(exposure=pos.qty * pos.last_price / equity,
                             unrealised_pnl=equity / entry_equity - 1.0 if entry_equity > 0 else 0.0,
                             bars_in_position=float(self.bars_held.get(symbol, 0)), drawdown=self.state.drawdown)

    def _mark(self, symbol: str, bar: Any, now: datetime) -> tuple[RiskAlert, ...]:
        pos = self.state.positions.get(symbol)
        if pos is not None:
            self.bars_held[symbol] = self.bars_held.get(symbol, 0) + 1
            pb = PriceBar(open=float(bar.open), high=float(bar.high), low=float(bar.low), close=float(bar.close))
            if self.config.risk.trailing_stop:
                m = measure(self.history[symbol].bars(self.timeframe), self.config.technical.atr_period)
                moved, hit = monitor_position(pos, pb, self.config.risk, atr=m.atr if math.isfinite(m.atr) else None)
                if hit is not None and hit[1] is ReasonCode.STOP_LOSS_HIT:
                    self._trail_hit.add(symbol)
            else:
                moved = track_excursions(pos, pb)
            self.state = replace_position(self.state, symbol, moved)
        equity = self.cash + sum(p.qty * p.last_price for p in self.state.positions.values())
        if equity == self.state.equity and now.date() == self.state.day:
            return ()  # nothing to re-mark (flat, same UTC day)
        self.state, alerts = mark_to_market(self.state, equity, now, self.config.risk)
        return alerts

    def _trailing_exit(self, symbol: str, bar: Any, now: datetime) -> TacticalSignal | None:
        """A CLOSE signal once the bar traded through the stop L2 trailed beyond the one L1 guards."""
        hit = symbol in self._trail_hit
        self._trail_hit.discard(symbol)
        pos = self.state.positions.get(symbol)
        sent = self.stop_sent.get(symbol)
        if not hit or pos is None or sent is None or any(o.symbol == symbol for o in self.working.values()):
            return None
        if (pos.stop_loss - sent) * pos.side <= 0:  # not tightened: L1's own stop handles it
            return None
        direction = SignalDirection.CLOSE_LONG if pos.side > 0 else SignalDirection.CLOSE_SHORT
        return TacticalSignal(symbol=symbol, direction=direction, strength=1.0, confidence=1.0,
                              price=float(bar.close), timestamp=now, source=SignalSource.COMPOSITE,
                              metadata={"reason": "trailing_stop", "stop": pos.stop_loss, "initial_stop": sent})

    def _decide(self, signal: TacticalSignal, market: MarketState,
                now: datetime) -> tuple[OrderIntent | None, ReasonCode, tuple[RiskAlert, ...]]:
        if order_id_for(signal.signal_id) in self._sent:  # the same signal never makes two orders
            return None, ReasonCode.DUPLICATE_ORDER, ()
        entry = signal.direction in (SignalDirection.LONG, SignalDirection.SHORT)
        if entry and not self._has_budget(signal.symbol, now):
            return None, ReasonCode.EXPOSURE_LIMIT, ()
        decision: OrderDecision = build_order(signal, self._with_working(), market, self._config(now), _At(now),
                                              allow_short=self.allow_short)
        order = decision.order
        if order is None:
            return None, decision.reason, decision.alerts
        if not order.reduce_only and not self.gate.ok:
            return None, self.gate.reason, decision.alerts
        decision_id = self._decision_id(now)
        if decision_id:
            order = dataclasses.replace(order, correlation_id=f"{decision_id}/{order.signal_id}")
        self.state = record_order(self.state, reduce_only=order.reduce_only)
        self.working[order.order_id] = order
        self._sent.add(order.order_id)
        if not order.reduce_only and order.symbol not in self.state.positions:
            self.origin[order.symbol] = signal.source.value
        return order, decision.reason, decision.alerts

    def _with_working(self) -> RiskState:
        """The account with every order in flight counted as filled at its intent price."""
        state = self.state
        for o in self.working.values():
            sign = 1.0 if o.side is Side.BUY else -1.0
            state = apply_fill(state, o.symbol, sign * o.qty, o.price, now=o.timestamp, stop_loss=o.stop_loss,
                               take_profit=o.take_profit)
        return state

    # ------------------------------------------------------------------ L3
    def _active(self, now: datetime) -> StrategicDecision | None:
        d = self.decision
        return None if d is None or (d.expires_at is not None and now >= d.expires_at) else d

    def _decision_id(self, now: datetime) -> str:
        d = self._active(now)
        return d.decision_id if d is not None else ""

    def _has_budget(self, symbol: str, now: datetime) -> bool:
        """No L3 decision, or one whose universe holds ``symbol`` with a target exposure above 0."""
        d = self._active(now)
        return d is None or (symbol in d.universe and d.target_exposure > 0)

    def _config(self, now: datetime) -> Any:
        """The config with L3's exposure budget applied (cached per budget)."""
        d = self._active(now)
        if d is None or d.target_exposure >= self.config.risk.exposure_limit:
            return self.config
        if self._cfg_cache is None or self._cfg_cache[0] != d.target_exposure:
            risk = dataclasses.replace(self.config.risk, exposure_limit=d.target_exposure)
            self._cfg_cache = (d.target_exposure, dataclasses.replace(self.config, risk=risk))
        return self._cfg_cache[1]

    # ----------------------------------------------------------------- stats
    def _track_stats(self, bar_time: datetime) -> None:
        self.stats.bars += 1
        if self.stats.first_bar is None:
            self.stats.first_bar = bar_time
        self.stats.last_bar = bar_time

    def _count(self, signals: Sequence[TacticalSignal], orders: Sequence[OrderIntent],
               reasons: Sequence[tuple[str, ReasonCode]]) -> None:
        s = self.stats
        for sig in signals:
            if sig.source not in self.trade_sources:
                continue
            s.signals += 1
            s.confidence_sum += sig.confidence
            ens = sig.metadata.get("ensemble")
            consensus = ens.get("consensus") if isinstance(ens, Mapping) else None
            consensus = sig.metadata.get("source_agreement") if consensus is None else consensus
            if isinstance(consensus, (int, float)) and math.isfinite(consensus):
                s.consensus_sum += float(consensus)
                s.consensus_n += 1
        s.orders += len(orders)
        for _, reason in reasons:
            s.reasons[reason.value] += 1

    def snapshot(self, now: datetime | None = None) -> Mapping[str, Any]:
        """Numbers for the dashboard and the summary (plain values)."""
        now = now or self.clock.now()
        s, m = self.stats, risk_metrics(self.state, now)
        hours = ((s.last_bar - s.first_bar).total_seconds() / 3600.0) if s.first_bar and s.last_bar else 0.0
        lat = np.asarray(s.latencies, dtype=np.float64)
        return {"bars": s.bars, "signals": s.signals, "orders": s.orders, "fills": s.fills,
                "signals_per_hour": s.signals / hours if hours > 0 else 0.0,
                "avg_confidence": s.confidence_sum / s.signals if s.signals else 0.0,
                "avg_consensus": s.consensus_sum / s.consensus_n if s.consensus_n else math.nan,
                "open_positions": m.open_positions, "portfolio_heat": m.portfolio_heat, "exposure": m.exposure,
                "equity": m.equity, "drawdown": m.drawdown, "trading_state": m.trading_state.value,
                "latency_p95_ms": float(np.percentile(lat, 95)) * 1e3 if lat.size else math.nan,
                "realised_pnl": s.realised_pnl, "fees": s.fees, "l2_reasons": dict(s.reasons),
                "l1_rejections": dict(s.rejections), "gate": self.gate.reason.value,
                "working_orders": len(self.working),
                "hit_rate": {k: s.wins[k] / n for k, n in s.trades_closed.items() if n}}

    def gate_alert(self, previous: GateState, now: datetime) -> RiskAlert | None:
        """An alert when the gate changed between ``previous`` and now."""
        if previous == self.gate:
            return None
        if self.gate.ok:
            return RiskAlert(severity=AlertSeverity.INFO, code=previous.reason, timestamp=now,
                             message=f"{previous.reason.value} cleared: new risk allowed again")
        return RiskAlert(severity=AlertSeverity.CRITICAL, code=self.gate.reason, timestamp=now,
                         message=f"{self.gate.reason.value}: no new risk, only reduce-only orders")


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
