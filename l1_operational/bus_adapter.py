"""L1BusAdapter: wires the PaperExecutor to the message bus and a market-data feed.

* ``l2.orders`` -> :meth:`PaperExecutor.submit`; a rejection's report goes out at once.
  The subscription keeps every message (no bus-side dedup or expiry drop): the executor,
  backed by the journal, answers duplicates with ``DUPLICATE_ORDER`` and expired intents
  with ``EXPIRED``, so L2 hears about each.
* each bar of the feed -> :meth:`PaperExecutor.on_bar` (fills and stop/take-profit exits)
  -> reports on ``l1.reports``, one metrics CSV row per cycle.
* ``heartbeats``: a Heartbeat from ``sender`` every ``heartbeat_seconds``.
* ``l1.account``: an AccountSnapshot of the executor's portfolio (the book of record) at start,
  after the journal rebuild and the outbox re-send, then after each heartbeat. It says how
  current it is (``reports`` produced so far, the ids of the last :data:`RECENT_REPORTS`), so L2
  can rebuild its account on (re)start and compare later snapshots without racing the reports
  stream. A snapshot is only taken between batches (journal committed, every report of the state
  in the outbox or published); otherwise that heartbeat's snapshot is skipped.
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
import collections
import contextlib
import logging
from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any

from l1_operational.datafeed import Bar
from l1_operational.executor import PaperExecutor
from l2_tactical.errors import TransientError
from l2_tactical.messages import AccountSnapshot, ExecutionReport, Heartbeat, Message, MessageError, OrderIntent

if TYPE_CHECKING:
    from l1_operational.journal import Journal
    from l1_operational.metrics_log import MetricsLog

log = logging.getLogger(__name__)

RECENT_REPORTS = 64
"""How many of the last report ids an AccountSnapshot carries (L2 skips those it receives after adopting it)."""


class ReportTrail:
    """How many reports L1 has produced (journal-wide, over restarts) and the ids of the last ones.

    A report queued again while it is among the last ones (an executor handing back a report the
    journal already gave the outbox) is not counted twice.

    >>> t = ReportTrail(["rep-1", "rep-2"], keep=2)
    >>> t.add("rep-3"); t.add("rep-3"); t.count, t.recent()
    (3, ('rep-2', 'rep-3'))
    """

    def __init__(self, report_ids: Iterable[str] = (), *, keep: int = RECENT_REPORTS) -> None:
        self._recent: collections.deque[str] = collections.deque(maxlen=keep)
        self.count = 0
        for report_id in report_ids:
            self.add(report_id)

    @classmethod
    def from_journal(cls, journal: Journal) -> ReportTrail:
        """Every report the journal holds, in journal order (a read of the whole table: start-up only)."""
        return cls(r.report_id for r in journal.reports())

    def add(self, report_id: str) -> None:
        if report_id in self._recent:
            return
        self._recent.append(report_id)
        self.count += 1

    def recent(self) -> tuple[str, ...]:
        return tuple(self._recent)


class _Outbox(list[ExecutionReport]):
    """Reports waiting for the bus. Each one appended was just produced: it is counted on the trail
    (what the journal hands back at start or after a reload was counted when the trail was read)."""

    def __init__(self, trail: ReportTrail, reports: Iterable[ExecutionReport] = ()) -> None:
        super().__init__(reports)
        self.trail = trail

    def append(self, report: ExecutionReport) -> None:
        super().append(report)
        self.trail.add(report.report_id)

    def extend(self, reports: Iterable[ExecutionReport]) -> None:
        for report in reports:
            self.append(report)


class L1BusAdapter:
    def __init__(self, bus: Any, executor: PaperExecutor, *, sender: str = "l1", heartbeat_seconds: float = 5.0,
                 metrics: MetricsLog | None = None, advance_clock: bool = False) -> None:
        self.bus, self.executor, self.sender = bus, executor, sender
        self.heartbeat_seconds, self.metrics, self.advance_clock = heartbeat_seconds, metrics, advance_clock
        self.trail = ReportTrail()
        self._queue = _Outbox(self.trail)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Any = None
        self._flush_lock = asyncio.Lock()
        self.published = 0
        self.bars = 0
        self.beats = 0
        self.snapshots = 0

    @property
    def _outbox(self) -> list[ExecutionReport]:
        """Reports journaled and not yet on the bus, in order (appending one counts it on the trail)."""
        return self._queue

    @_outbox.setter
    def _outbox(self, reports: Iterable[ExecutionReport]) -> None:  # from the journal: already on the trail
        self._queue = _Outbox(self.trail, reports)

    async def start(self) -> None:
        """Re-send reports left unpublished by a previous run, publish the account, then consume orders
        and send heartbeats (each followed by a snapshot of the account)."""
        from l2_tactical.bus import Topic

        self.executor.journal.deferred = True
        self._reload_reports()
        await self.flush()
        await self.publish_snapshot()
        self._subscription = await self.bus.subscribe(Topic.L2_ORDERS, self._on_order, dedup=False,
                                                      drop_expired=False, after_batch=self.flush)
        self._tasks.append(asyncio.create_task(self._heartbeats(), name="l1-heartbeats"))

    def _reload_reports(self) -> None:
        """The trail and the outbox from the journal (start-up, and after a failed commit)."""
        journal = self.executor.journal
        self.trail = ReportTrail.from_journal(journal)
        self._outbox = journal.reports(unpublished_only=True)

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
            self._reload_reports()
            raise

    # ------------------------------------------------------------ liveness and the account
    async def beat(self) -> bool:
        """Publish one Heartbeat; False when the bus did not take it (logged)."""
        from l2_tactical.bus import Topic

        self.beats += 1
        try:
            beat = Heartbeat(sender=self.sender, timestamp=self.executor.clock.now(), sequence=self.beats)
            await self.bus.publish(Topic.HEARTBEATS, beat)
        except TransientError as exc:
            log.warning("l1: heartbeat %d not sent: %s", self.beats, exc)
            return False
        return True

    async def account_snapshot(self) -> AccountSnapshot | None:
        """The executor's portfolio as an AccountSnapshot, or ``None`` while a batch is in progress.

        Taken once any flush in progress is done and only when the journal holds no uncommitted
        writes: then every fill in the portfolio is committed and its report is on the trail.
        """
        async with self._flush_lock:
            if self.executor.journal.in_transaction:
                return None
            self.snapshots += 1
            return self.executor.portfolio.account_snapshot(
                sender=self.sender, timestamp=self.executor.clock.now(), reports=self.trail.count,
                recent_report_ids=self.trail.recent(), sequence=self.snapshots)

    async def publish_snapshot(self) -> bool:
        """Publish :meth:`account_snapshot` on ``l1.account``; False when skipped or the bus did not take it
        (the next heartbeat's snapshot follows; the account is never queued: a newer one supersedes it)."""
        from l2_tactical.bus import Topic

        try:
            snapshot = await self.account_snapshot()
        except MessageError as exc:  # a book the message refuses: said loudly; L2 then stays without new risk
            log.error("l1: account snapshot not built: %s", exc)
            return False
        if snapshot is None:
            log.info("l1: account snapshot skipped (a batch is being committed)")
            return False
        try:
            await self.bus.publish(Topic.L1_ACCOUNT, snapshot)
        except TransientError as exc:
            log.warning("l1: account snapshot %d not sent: %s", snapshot.sequence, exc)
            return False
        return True

    async def _heartbeats(self) -> None:
        while True:
            if await self.beat() and self.beats > 1:  # the start-up snapshot went out with start()
                await self.publish_snapshot()
            await asyncio.sleep(self.heartbeat_seconds)
