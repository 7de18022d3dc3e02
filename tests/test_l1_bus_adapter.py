"""L1BusAdapter over the in-process bus: orders in, reports out, heartbeats, metrics, the report outbox."""

from __future__ import annotations

import asyncio
import csv
import uuid
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest

from l1_operational.bus_adapter import L1BusAdapter
from l1_operational.executor import PaperExecutor
from l1_operational.journal import Journal
from l1_operational.metrics_log import COLUMNS, MetricsLog
from l2_tactical.bus import Topic, open_bus
from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.messages import AccountSnapshot, ExecutionReport, ExecutionStatus, Heartbeat, ReasonCode
from tests.l1_support import BTC_1H, bars, intent_after

CFG = L2Config.default()
FAST = {"retry_base_seconds": 0.01, "retry_max_seconds": 0.05, "block_seconds": 0.02}
pytestmark = pytest.mark.timeout(60)


async def wait_until(cond, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Harness:
    """An L1 adapter and a stand-in for L2 (group "l2") on one named in-process broker."""

    def __init__(self, tmp_path, window):
        self.url = f"memory://l1-{uuid.uuid4().hex[:8]}"
        self.clock = SimulatedClock(window[0].open_time)
        self.journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
        self.executor = PaperExecutor.from_config(CFG, journal=self.journal, clock=self.clock)
        self.metrics = MetricsLog(tmp_path / "metrics.csv", flush_every=1)
        self.l1_bus = open_bus(self.url, prefix="t", group="l1", consumer="l1-1", max_deliveries=3,
                               clock=self.clock, **FAST)
        self.l2_bus = open_bus(self.url, prefix="t", group="l2", consumer="l2-1", max_deliveries=3,
                               clock=self.clock, **FAST)
        self.adapter = L1BusAdapter(self.l1_bus, self.executor, metrics=self.metrics, advance_clock=True,
                                    heartbeat_seconds=0.05)
        self.reports: list[ExecutionReport] = []
        self.beats: list[Heartbeat] = []

    async def __aenter__(self):
        async def on_report(m):
            self.reports.append(m)

        async def on_beat(m):
            self.beats.append(m)

        await self.l2_bus.subscribe(Topic.L1_REPORTS, on_report, dedup=False)
        await self.l2_bus.subscribe(Topic.HEARTBEATS, on_beat)
        await self.adapter.start()
        return self

    async def __aexit__(self, *exc):
        await self.adapter.stop()
        await self.l1_bus.close()
        await self.l2_bus.close()
        self.metrics.close()


def test_bus_adapter_fills_orders_from_the_bus_and_reports_back(tmp_path):
    window = bars(BTC_1H, "2020-03-12T02:00:00Z", "2020-03-12T12:00:00Z")

    async def scenario():
        async with Harness(tmp_path, window) as h:
            await h.adapter.on_bar(window[0])
            intent = replace(intent_after(window[0], qty=0.02), stop_loss=6800.0)
            await h.l2_bus.publish(Topic.L2_ORDERS, intent)
            await wait_until(lambda: h.executor.pending(), what="order accepted")
            await h.l2_bus.publish(Topic.L2_ORDERS, intent)                      # the same order again
            await wait_until(lambda: any(r.reason_code is ReasonCode.DUPLICATE_ORDER for r in h.reports),
                             what="duplicate report")
            for bar in window[1:]:
                await h.adapter.on_bar(bar)
            await wait_until(lambda: len(h.reports) >= 3, what="fill and stop reports")
            await wait_until(lambda: h.beats, what="a heartbeat")
            return intent, list(h.reports), h.beats[0]

    intent, reports, beat = asyncio.run(scenario())
    by_reason = {r.reason_code: r for r in reports}
    assert by_reason[ReasonCode.DUPLICATE_ORDER].status is ExecutionStatus.REJECTED
    fill = by_reason[ReasonCode.OK]
    assert fill.order_id == intent.order_id and fill.status is ExecutionStatus.FILLED
    assert fill.timestamp == window[1].open_time                        # next bar's open
    assert by_reason[ReasonCode.STOP_LOSS_HIT].timestamp == bars(BTC_1H, "2020-03-12T10:00:00Z",
                                                                 "2020-03-12T11:00:00Z")[0].open_time
    assert sum(r.status is ExecutionStatus.FILLED and r.reason_code is ReasonCode.OK for r in reports) == 1
    assert beat.sender == "l1"
    rows = list(csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines()))
    assert tuple(rows[0]) == COLUMNS and len(rows) == len(window)
    assert rows[1]["orders_filled"] == "1" and float(rows[1]["base_balance"]) == pytest.approx(0.02)
    assert rows[-1]["exits"] == "1" and float(rows[-1]["base_balance"]) == 0.0


def test_bus_adapter_answers_expired_orders_with_a_reason(tmp_path):
    window = bars(BTC_1H, "2020-03-12T02:00:00Z", "2020-03-12T04:00:00Z")

    async def scenario():
        async with Harness(tmp_path, window) as h:
            await h.adapter.on_bar(window[0])
            await h.adapter.on_bar(window[1])          # the clock is now past the intent's expiry
            stale = intent_after(window[0], qty=0.01, expires_at=window[0].close_time + timedelta(minutes=10))
            await h.l2_bus.publish(Topic.L2_ORDERS, stale)
            await wait_until(lambda: h.reports, what="expiry report")
            return stale, h.reports[0]

    stale, report = asyncio.run(scenario())
    assert report.order_id == stale.order_id and report.reason_code is ReasonCode.EXPIRED


def test_bus_adapter_resends_reports_left_unpublished_by_a_previous_run(tmp_path):
    window = bars(BTC_1H, "2020-03-12T02:00:00Z", "2020-03-12T04:00:00Z")
    # a previous run journaled a rejection but died before publishing it
    journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    old = PaperExecutor.from_config(CFG, journal=journal, clock=SimulatedClock(window[0].close_time))
    lost = old.submit(intent_after(window[0], qty=0.9))            # MAX_SYMBOL_QTY
    assert lost.reason_code is ReasonCode.MAX_SYMBOL_QTY

    async def scenario():
        async with Harness(tmp_path, window) as h:
            await wait_until(lambda: h.reports, what="the old report")
            return list(h.reports), h.journal.reports(unpublished_only=True)

    reports, unpublished = asyncio.run(scenario())
    assert [r.report_id for r in reports] == [lost.report_id] and unpublished == []


def test_bus_adapter_publishes_the_account_rebuilt_from_the_journal_at_start_then_with_heartbeats(tmp_path):
    """A restarted L1 sends its book (journal rebuild) with how many reports it reflects and the last ids:
    those of the previous run and the one it re-sent at start."""
    window = bars(BTC_1H, "2020-03-12T02:00:00Z", "2020-03-12T05:00:00Z")
    journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")    # a previous run: a fill, a lost rejection
    old = PaperExecutor.from_config(CFG, journal=journal, clock=SimulatedClock(window[0].close_time))
    assert old.submit(intent_after(window[0], qty=0.01)) is None
    (fill,) = old.on_bar(window[1])
    journal.mark_published([fill.report_id])
    lost = old.submit(intent_after(window[1], qty=0.9))            # MAX_SYMBOL_QTY, never published
    journal.close()

    async def scenario():
        async with Harness(tmp_path, window) as h:
            snaps: list[AccountSnapshot] = []

            async def on_snapshot(m):
                snaps.append(m)

            await h.l2_bus.subscribe(Topic.L1_ACCOUNT, on_snapshot)
            await wait_until(lambda: len(snaps) >= 3, what="the start-up snapshot and two after heartbeats")
            return snaps, h.executor.portfolio

    snaps, book = asyncio.run(scenario())
    first = snaps[0]
    assert (first.sender, first.sequence, first.reports) == ("l1", 1, 2)
    assert first.recent_report_ids == (fill.report_id, lost.report_id) and first.last_report_id == lost.report_id
    assert first.cash == pytest.approx(book.balance("USDT"), rel=1e-15)
    (held,) = first.positions
    position = book.position("BTCUSDT")
    assert (held.symbol, held.qty, held.avg_price, held.stop_loss, held.opened_at) == \
        ("BTCUSDT", position.qty, position.avg_price, position.stop_loss, window[1].open_time)
    assert [s.sequence for s in snaps[:3]] == [1, 2, 3] and len({s.snapshot_id for s in snaps}) == len(snaps)


def test_bus_adapter_takes_no_account_snapshot_while_a_batch_is_uncommitted(tmp_path):
    window = bars(BTC_1H, "2020-03-12T02:00:00Z", "2020-03-12T05:00:00Z")

    async def scenario():
        async with Harness(tmp_path, window) as h:
            await h.adapter.on_bar(window[0])
            assert h.executor.submit(intent_after(window[0], qty=0.01)) is None
            h.adapter.apply_bar(window[1])                              # the fill, journaled, not committed
            assert h.journal.in_transaction and await h.adapter.account_snapshot() is None
            await h.adapter.flush()
            snap = await h.adapter.account_snapshot()
            return snap, h.journal.reports()

    snap, journaled = asyncio.run(scenario())
    assert snap is not None and snap.position("BTCUSDT") is not None
    assert snap.reports == len(journaled) and snap.last_report_id == journaled[-1].report_id


def _batch(window):
    """Three acceptable orders and two over BTC's max qty (rejected at once, with a report)."""
    ok = [intent_after(b, qty=0.01, tag="-ok") for b in window[:3]]
    too_big = [intent_after(b, qty=5.0, tag="-big") for b in window[:2]]
    return ok, too_big


def test_bus_adapter_commits_a_batch_of_orders_once_before_publishing_its_reports(tmp_path):
    window = bars(BTC_1H, "2020-03-12T02:00:00Z", "2020-03-12T08:00:00Z")

    async def scenario():
        async with Harness(tmp_path, window) as h:
            await h.adapter.on_bar(window[0])
            ok, too_big = _batch(window)
            seen_committed: list[bool] = []
            other = Journal(h.journal.url)

            async def on_report(m):     # when a report arrives, its order is already committed
                seen_committed.append(m.order_id in other.order_ids())

            await h.l2_bus.subscribe(Topic.L1_REPORTS, on_report, group="probe", dedup=False)
            commits = h.journal.commits
            await h.l2_bus.publish_many(Topic.L2_ORDERS, [*ok, *too_big])        # one read batch
            await wait_until(lambda: len(seen_committed) == 2, what="two rejection reports")
            other.close()
            return ok, too_big, h.journal.commits - commits, seen_committed, h.journal.order_ids()

    ok, too_big, commits, seen_committed, journaled = asyncio.run(scenario())
    assert seen_committed == [True, True]
    assert commits == 2            # the batch's five orders in one commit, then the published flags
    assert {o.order_id for o in ok + too_big} <= journaled


def test_bus_adapter_failed_commit_reloads_the_executor_and_the_batch_comes_again(tmp_path):
    window = bars(BTC_1H, "2020-03-12T02:00:00Z", "2020-03-12T08:00:00Z")

    async def scenario():
        async with Harness(tmp_path, window) as h:
            await h.adapter.on_bar(window[0])
            real_commit, failures = h.journal.commit, {"left": 1}

            def flaky_commit():
                if h.journal.in_transaction and failures["left"]:
                    failures["left"] -= 1
                    raise OSError("disk I/O error (simulated)")
                real_commit()

            h.journal.commit = flaky_commit
            ok, too_big = _batch(window)
            await h.l2_bus.publish_many(Topic.L2_ORDERS, [*ok, *too_big])
            await wait_until(lambda: len(h.reports) >= 2 and not h.executor.journal.in_transaction,
                             what="the rejections after the retry")
            await asyncio.sleep(0.1)
            for bar in window[1:4]:
                await h.adapter.on_bar(bar)
            await wait_until(lambda: len(h.reports) >= 5, what="the fills")
            return ok, too_big, list(h.reports), failures["left"]

    ok, too_big, reports, left = asyncio.run(scenario())
    assert left == 0                                                          # the commit did fail once
    journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    statuses = journal.order_statuses()
    assert {o.order_id: statuses[o.order_id][0] for o in ok} == {o.order_id: "filled" for o in ok}
    assert {statuses[o.order_id] for o in too_big} == {("rejected", ReasonCode.MAX_SYMBOL_QTY.value)}
    by_order = Counter(r.order_id for r in reports)
    assert all(by_order[o.order_id] == 1 for o in ok + too_big)               # nothing lost, nothing twice
    assert all(r.reason_code is not ReasonCode.DUPLICATE_ORDER for r in reports)
    assert Counter(f.order_id for f in journal.fills() if f.kind == "market") == {o.order_id: 1 for o in ok}
    journal.close()
