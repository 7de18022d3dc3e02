"""L1BusAdapter: wires the PaperExecutor to the message bus and a market-data feed.

* ``l2.orders`` -> :meth:`PaperExecutor.submit`; a rejection's report goes out at once.
  The subscription keeps every message (no bus-side dedup or expiry drop): the executor,
  backed by the journal, answers duplicates with ``DUPLICATE_ORDER`` and expired intents
  with ``EXPIRED``, so L2 hears about each.
* each bar of the feed -> :meth:`PaperExecutor.on_bar` (fills and stop/take-profit exits)
  -> reports on ``l1.reports``, one metrics CSV row per cycle.
* ``heartbeats``: a Heartbeat from ``sender`` every ``heartbeat_seconds``.
* Reports are journaled before they are published (an outbox): reports that could not be
  published (bus down, process killed) are re-sent on the next cycle / at start. A handler
  never fails because the bus is down, so the bus never re-delivers an order L1 journaled.
* Group commit: the journal runs deferred; the orders of one bus read batch (each in its own
  savepoint) and the fills of one bar share one transaction, committed by :meth:`flush` before
  it publishes their reports (in one round trip) and before the batch is acknowledged. If that
  commit fails, the executor reloads from the journal and the batch stays pending (re-delivered).

The bus package is imported here only (not by the executor core).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, Any

from l1_operational.datafeed import Bar
from l1_operational.executor import PaperExecutor
from l2_tactical.errors import TransientError
from l2_tactical.messages import ExecutionReport, Heartbeat, Message, OrderIntent

if TYPE_CHECKING:
    from l1_operational.metrics_log import MetricsLog

log = logging.getLogger(__name__)


class L1BusAdapter:
    def __init__(self, bus: Any, executor: PaperExecutor, *, sender: str = "l1", heartbeat_seconds: float = 5.0,
                 metrics: MetricsLog | None = None, advance_clock: bool = False) -> None:
        self.bus, self.executor, self.sender = bus, executor, sender
        self.heartbeat_seconds, self.metrics, self.advance_clock = heartbeat_seconds, metrics, advance_clock
        self._outbox: list[ExecutionReport] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Any = None
        self._flush_lock = asyncio.Lock()
        self.published = 0
        self.bars = 0

    async def start(self) -> None:
        """Re-send reports left unpublished by a previous run, then consume orders and send heartbeats."""
        from l2_tactical.bus import Topic

        self.executor.journal.deferred = True
        self._outbox = self.executor.journal.reports(unpublished_only=True)
        await self.flush()
        self._subscription = await self.bus.subscribe(Topic.L2_ORDERS, self._on_order, dedup=False,
                                                      drop_expired=False, after_batch=self.flush)
        self._tasks.append(asyncio.create_task(self._heartbeats(), name="l1-heartbeats"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
        await self.flush()
        self.executor.journal.flush()
        self.executor.journal.deferred = False
        if self.metrics is not None:
            self.metrics.flush()

    async def run_feed(self, feed: AsyncIterable[Bar]) -> None:
        """Process every bar of ``feed`` (a ReplayFeed or BinanceFeed) until it ends."""
        async for bar in feed:
            await self.on_bar(bar)

    async def on_bar(self, bar: Bar) -> None:
        self.apply_bar(bar)
        if self._outbox or self.executor.journal.in_transaction:
            await self.flush()

    def apply_bar(self, bar: Bar) -> None:
        """The executor's work for one bar (fills, exits; journaled, not yet committed); reports to the outbox."""
        if self.advance_clock:
            clock = self.executor.clock
            if bar.close_time > clock.now():
                clock.set(bar.close_time)  # type: ignore[attr-defined]
        reports = self.executor.on_bar(bar)
        self.bars += 1
        if self.metrics is not None:
            self.metrics.record(bar, self.executor)
        self._outbox.extend(reports)

    async def _on_order(self, message: Message) -> None:
        """Validate and journal one order (its own savepoint); the batch's :meth:`flush` commits and reports."""
        if not isinstance(message, OrderIntent):
            log.warning("l1: ignoring %s on the orders topic", type(message).__name__)
            return
        with self.executor.journal.savepoint():
            report = self.executor.submit(message)
        if report is not None:
            self._outbox.append(report)

    async def flush(self) -> None:
        """Commit the journal, then publish the outbox in order (one round trip); what fails stays for the
        next try (never raises on a bus outage). A failed commit reloads the executor and raises."""
        from l2_tactical.bus import Topic

        async with self._flush_lock:   # the order consumer and the feed loop both flush
            self._commit()
            if not self._outbox:
                return
            batch = list(self._outbox)
            try:
                await self.bus.publish_many(Topic.L1_REPORTS, batch)
            except TransientError as exc:
                log.warning("l1: %d report(s) wait for the bus: %s", len(self._outbox), exc)
                return
            del self._outbox[:len(batch)]
            self.executor.journal.mark_published(r.report_id for r in batch)
            self.published += len(batch)

    def _commit(self) -> None:
        journal = self.executor.journal
        try:
            journal.commit()
        except Exception:
            journal.rollback()
            self.executor.reload()
            self._outbox = journal.reports(unpublished_only=True)
            raise

    async def _heartbeats(self) -> None:
        from l2_tactical.bus import Topic

        sequence = 0
        while True:
            sequence += 1
            try:
                beat = Heartbeat(sender=self.sender, timestamp=self.executor.clock.now(), sequence=sequence)
                await self.bus.publish(Topic.HEARTBEATS, beat)
            except TransientError as exc:
                log.warning("l1: heartbeat %d not sent: %s", sequence, exc)
            await asyncio.sleep(self.heartbeat_seconds)
