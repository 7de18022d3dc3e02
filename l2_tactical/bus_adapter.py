"""L2BusAdapter: the TacticalLoop on the message bus.

* ``l3.decisions`` -> :meth:`TacticalLoop.on_decision`; ``l1.reports`` -> :meth:`TacticalLoop.on_report`
  (position state, fills, rejections) through the :class:`~l2_tactical.tactical_account.AccountSync`;
  ``heartbeats`` from L1 -> its liveness; ``l1.account`` (L1's AccountSnapshot) -> the
  AccountSync: the first one is adopted (start-up and restart alike: L2 rebuilds its account
  from L1's book), later ones are compared with the mirror (a mismatch raises a RiskAlert on
  ``l2.alerts`` and L1's book is adopted; see :mod:`l2_tactical.tactical_account`).
* each closed bar (:meth:`on_bar`, or :meth:`run_feed` over a feed of bars): the liveness gate
  is set first — the bus must answer a ping and hold no unsent messages, L1's last heartbeat
  must be at most ``bus.heartbeat_timeout_seconds`` old and an account snapshot from L1 must
  have been adopted, else only reduce-only orders leave L2 (reason ``BUS_UNAVAILABLE`` /
  ``STALE_HEARTBEAT`` / ``ACCOUNT_NOT_SYNCED``, a RiskAlert on each change) — then the loop
  decides and its OrderIntents go to ``l2.orders``, its RiskAlerts to ``l2.alerts``.
  Correlation ids are the loop's (the signal id, prefixed by the L3 decision id when one rules).
* ``store`` (:class:`~l2_tactical.risk_store.RiskStore`, optional): L2's risk state (kill switch,
  peak, day, per-position tracking) is restored from it on the first adoption of L1's account (the
  RiskAlert saying what was restored, or a WARNING naming the file when nothing was stored, goes to
  ``l2.alerts`` and the log) and written after each bar, report and snapshot that changed it. The
  adapter does not own the store: whoever opened it closes it (which releases its writer lock).
* a Heartbeat from ``sender`` every ``bus.heartbeat_seconds``.
* publishing: one attempt inline; on TransientError the message waits in an outbox (order
  kept) that a background task retries with exponential backoff and jitter
  (``bus.retry_base_seconds`` .. ``bus.retry_max_seconds``). Nothing is dropped: an order
  that reaches L1 after its ``expires_at`` is rejected there as EXPIRED and its report frees
  the loop. While the outbox is not empty the bus counts as unreachable (no new risk).

Liveness is measured on ``liveness`` (monotonic seconds, wall time by default) so a replay on
a simulated clock still notices a silent L1; tests pass a fake one and never sleep.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterable, Callable
from datetime import datetime
from typing import Any

from l2_tactical.bus import Backoff, DropReason, MessageBus, Topic
from l2_tactical.errors import TransientError
from l2_tactical.messages import (
    AccountSnapshot,
    AlertSeverity,
    ExecutionReport,
    Heartbeat,
    Message,
    RiskAlert,
    StrategicDecision,
)
from l2_tactical.risk_gate import account_gate
from l2_tactical.risk_store import RiskStore
from l2_tactical.tactical_account import AccountSync
from l2_tactical.tactical_loop import BarDecision, TacticalLoop

log = logging.getLogger(__name__)


@dataclasses.dataclass
class AdapterStats:
    bars: int = 0
    orders_published: int = 0
    alerts_published: int = 0
    reports_received: int = 0
    decisions_received: int = 0
    l1_heartbeats: int = 0
    snapshots_received: int = 0
    heartbeats_sent: int = 0
    publish_failures: int = 0
    outbox_retries: int = 0


class L2BusAdapter:
    """L2 on the bus (see the module docstring). ``await start()``, then bars, then ``await stop()``."""

    def __init__(self, bus: MessageBus, loop: TacticalLoop, *, sender: str = "l2", l1_sender: str = "l1",
                 liveness: Callable[[], float] = time.monotonic, advance_clock: bool = False,
                 probe_timeout_s: float = 1.0, backoff: Backoff | None = None,
                 store: RiskStore | None = None) -> None:
        cfg = loop.config.bus
        self.bus, self.loop, self.sender, self.l1_sender = bus, loop, sender, l1_sender
        self.heartbeat_seconds, self.timeout_s = cfg.heartbeat_seconds, cfg.heartbeat_timeout_seconds
        self.liveness, self.advance_clock, self.probe_timeout_s = liveness, advance_clock, probe_timeout_s
        self.backoff = backoff or Backoff(cfg.retry_base_seconds, cfg.retry_max_seconds)
        self.outbox: collections.deque[tuple[Topic, Message]] = collections.deque()
        self.stats = AdapterStats()
        self.sync = AccountSync(loop.account, loop.on_report, store=store, risk=loop.config.risk if store else None)
        self._l1_seen: float | None = None
        self._l1_beat = asyncio.Event()
        self._account = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[Any] = []

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Subscribe to L3 decisions, L1 reports, heartbeats and L1's account; start heartbeats and the
        outbox flusher."""
        bus = self.bus
        self._subs = [await bus.subscribe(Topic.L3_DECISIONS, self._on_decision),
                      await bus.subscribe(Topic.L1_REPORTS, self._on_report, on_drop=self._on_report_dropped),
                      await bus.subscribe(Topic.HEARTBEATS, self._on_heartbeat),
                      await bus.subscribe(Topic.L1_ACCOUNT, self._on_snapshot)]
        self._tasks = [asyncio.create_task(self._heartbeats(), name="l2-heartbeats"),
                       asyncio.create_task(self._flusher(), name="l2-outbox")]

    async def stop(self, *, flush_timeout_s: float = 2.0) -> None:
        """Try to send what waits in the outbox (bounded), then stop tasks and subscriptions."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), flush_timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self._subs:
            await sub.stop()
        self._tasks, self._subs = [], []
        if self.outbox:
            log.warning("l2: %d message(s) left unsent in the outbox at stop", len(self.outbox))

    # ------------------------------------------------------------------ liveness
    def l1_heartbeat_age(self) -> float | None:
        """Seconds since L1's last heartbeat arrived (``None``: none yet)."""
        return None if self._l1_seen is None else self.liveness() - self._l1_seen

    async def wait_for_l1(self, timeout_s: float) -> bool:
        """Wait until L1 is heard (a heartbeat) and its account adopted (True), or ``timeout_s`` passed (False)."""
        async def both() -> None:
            await self._l1_beat.wait()
            await self._account.wait()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both(), timeout_s)
        return self._l1_beat.is_set() and self._account.is_set()

    async def bus_reachable(self) -> bool:
        """The bus answers a ping within ``probe_timeout_s`` and nothing waits in the outbox."""
        if self.outbox:
            return False
        try:
            await asyncio.wait_for(self.bus.ping(), self.probe_timeout_s)
        except (TransientError, TimeoutError, OSError) as exc:
            log.warning("l2: bus unreachable: %s", exc)
            return False
        return True

    # ------------------------------------------------------------------ bars
    async def on_bar(self, bar: Any, now: datetime | None = None) -> BarDecision:
        """Gate, decide and publish for one closed bar of ``bar.symbol``."""
        clock = self.loop.clock
        if self.advance_clock and bar.close_time > clock.now():
            clock.set(bar.close_time)  # type: ignore[attr-defined]
        now = now or clock.now()
        previous = self.loop.gate
        liveness = self.loop.risk_gate(await self.bus_reachable(), self.l1_heartbeat_age())
        self.loop.gate = account_gate(liveness, self.sync.synced)
        changed = self.loop.gate_alert(previous, now)
        decision = self.loop.on_bar(bar.symbol, bar, now)
        self.sync.save(now)
        self.stats.bars += 1
        for order in decision.orders:
            await self.send(Topic.L2_ORDERS, order)
        for alert in (changed, *decision.alerts) if changed is not None else decision.alerts:
            await self.send(Topic.L2_ALERTS, alert)
        return decision

    async def run_feed(self, feed: AsyncIterable[Any], *, max_bars: int | None = None,
                       on_decision: Callable[[BarDecision], None] | None = None) -> int:
        """Run :meth:`on_bar` over ``feed`` (at most ``max_bars``); returns the bars processed."""
        n = 0
        async for bar in feed:
            if max_bars is not None and n >= max_bars:
                break
            decision = await self.on_bar(bar)
            n += 1
            if on_decision is not None:
                on_decision(decision)
        return n

    # ------------------------------------------------------------------ publishing
    async def send(self, topic: Topic, message: Message) -> bool:
        """Publish now, or queue behind what already waits (True when it went out now)."""
        if not self.outbox:
            try:
                await self.bus.publish(topic, message)
                self._count(topic)
                return True
            except TransientError as exc:
                self.stats.publish_failures += 1
                log.warning("l2: %s not published (%s); queued for retry", type(message).__name__, exc)
        self.outbox.append((topic, message))
        self._wake.set()
        return False

    def _count(self, topic: Topic) -> None:
        if topic is Topic.L2_ORDERS:
            self.stats.orders_published += 1
        elif topic is Topic.L2_ALERTS:
            self.stats.alerts_published += 1

    async def _drain(self) -> None:
        """Send the outbox in order; on TransientError wait a backoff with jitter and go on."""
        while self.outbox:
            topic, message = self.outbox[0]
            try:
                await self.bus.publish(topic, message)
            except TransientError as exc:
                delay = self.backoff.next()
                self.stats.outbox_retries += 1
                log.warning("l2: outbox (%d waiting) retry in %.2fs: %s", len(self.outbox), delay, exc)
                await asyncio.sleep(delay)
                continue
            self.outbox.popleft()
            self._count(topic)
            self.backoff.reset()

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()

    async def _heartbeats(self) -> None:
        sequence = 0
        while True:
            sequence += 1
            try:
                await self.bus.publish(Topic.HEARTBEATS, Heartbeat(sender=self.sender, timestamp=self.loop.clock.now(),
                                                                   sequence=sequence))
                self.stats.heartbeats_sent += 1
            except TransientError as exc:
                log.warning("l2: heartbeat %d not sent: %s", sequence, exc)
            await asyncio.sleep(self.heartbeat_seconds)

    # ------------------------------------------------------------------ handlers
    async def _on_decision(self, message: Message) -> None:
        if isinstance(message, StrategicDecision):
            self.stats.decisions_received += 1
            self.loop.on_decision(message)

    async def _on_report(self, message: Message) -> None:
        if isinstance(message, ExecutionReport):
            self.stats.reports_received += 1
            if self.sync.on_report(message):
                self.sync.save(self.loop.clock.now())

    async def _on_snapshot(self, message: Message) -> None:
        if not isinstance(message, AccountSnapshot) or message.sender != self.l1_sender:
            return
        self.stats.snapshots_received += 1
        now = self.loop.clock.now()
        for alert in self.sync.on_snapshot(message, now):
            log.log(logging.INFO if alert.severity is AlertSeverity.INFO else logging.WARNING, "l2: %s",
                    alert_text(alert))
            await self.send(Topic.L2_ALERTS, alert)
        self.sync.save(now)
        if self.sync.synced:
            self._account.set()

    async def _on_report_dropped(self, message: Message, reason: DropReason) -> None:
        self.stats.reports_received += 1  # a duplicate the loop has already applied
        log.info("l2: report %s dropped by the bus: %s", getattr(message, "report_id", "?"), reason.value)

    async def _on_heartbeat(self, message: Message) -> None:
        if isinstance(message, Heartbeat) and message.sender == self.l1_sender:
            self.stats.l1_heartbeats += 1
            self._l1_seen = self.liveness()
            self._l1_beat.set()


def alert_text(alert: RiskAlert) -> str:
    """One line for logs and the dashboard."""
    where = f" {alert.symbol}" if alert.symbol else ""
    return f"[{alert.severity.value}] {alert.code.value}{where}: {alert.message}"
