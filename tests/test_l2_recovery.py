"""L2 rebuilds its account from L1's book on (re)start, and checks it against L1's later snapshots.

Real L1 (PaperExecutor + journal + L1BusAdapter), real L2 (TacticalLoop + L2BusAdapter), real
BTCUSDT 1m bars of 2025-06-02; the signals are scripted (:class:`tests.test_tactical_loop.Scripted`)
so the scenario is exact. L1's heartbeat period is an hour: the tests send its heartbeats and
snapshots (:meth:`L1BusAdapter.beat`, :meth:`L1BusAdapter.publish_snapshot`) when the scenario
needs them, as L1's heartbeat task would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from datetime import timedelta

import pytest

from l1_operational.bus_adapter import L1BusAdapter, ReportTrail
from l1_operational.executor import PaperExecutor
from l1_operational.journal import Journal
from l1_operational.portfolio import FillRecord
from l2_tactical.bus import Backoff, Topic, open_bus
from l2_tactical.bus_adapter import L2BusAdapter
from l2_tactical.cli import main
from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles
from l2_tactical.loop_stats import LoopStats
from l2_tactical.messages import (
    AccountPosition,
    AlertSeverity,
    ReasonCode,
    RiskAlert,
    Side,
    SignalDirection,
    TradingState,
)
from l2_tactical.risk_store import RiskStore
from l2_tactical.tactical_account import AccountSync, TacticalAccount
from l2_tactical.tactical_loop import TacticalLoop
from tests.l1_support import BTC_1M, intent_after
from tests.test_bus_adapter import FakeLiveness, _cleanup_redis, until
from tests.test_tactical_loop import Scripted, day

CFG = L2Config.default().with_overrides({"bus.retry_base_seconds": 0.01, "bus.retry_max_seconds": 0.05})
SYMBOL = "BTCUSDT"
ENTRY = 35          # the first L2's LONG (bar index in day()); L1 fills it at the open of bar ENTRY + 1
pytestmark = pytest.mark.timeout(120)


def history_before(index: int):
    """Real closed bars before ``day()[index]`` (a restarted L2 warms up on them, as ``l2 paper`` does)."""
    start = day()[0].open_time - timedelta(hours=2)
    return load_candles(BTC_1M).slice(start.isoformat(), day()[index].open_time.isoformat())


class Stack:
    """L1 and the current L2 on one bus URL and one simulated clock; bars go in the canonical order."""

    def __init__(self, url: str, prefix: str, journal_url: str = "sqlite://") -> None:
        self.url, self.prefix, self.journal_url = url, prefix, journal_url
        self.clock = SimulatedClock(day()[0].open_time)
        self.alerts: list[RiskAlert] = []
        self.buses: list = []
        self.l2: L2BusAdapter | None = None

    def bus(self, group: str, consumer: str):
        bus = open_bus(self.url, prefix=self.prefix, group=group, consumer=consumer, max_deliveries=3,
                       clock=self.clock, retry_base_seconds=0.01, retry_max_seconds=0.05)
        self.buses.append(bus)
        return bus

    async def start_l1(self, *, start: bool = True) -> L1BusAdapter:
        self.journal = Journal(self.journal_url)
        self.executor = PaperExecutor.from_config(CFG, journal=self.journal, clock=self.clock)
        self.l1 = L1BusAdapter(self.bus("l1", "l1-1"), self.executor, heartbeat_seconds=3600.0)
        if start:
            await self.l1.start()
        return self.l1

    async def stop_l1(self) -> None:
        await self.l1.stop()
        self.journal.close()

    def new_l2(self, plan: dict[int, SignalDirection], *, warm_until: int | None = None, config: L2Config = CFG,
               store: RiskStore | None = None) -> L2BusAdapter:
        loop = TacticalLoop(config, Scripted(plan), clock=self.clock)
        if warm_until is not None:
            loop.warm_up(SYMBOL, history_before(warm_until))
        self.l2 = L2BusAdapter(self.bus("l2", "l2-1"), loop, liveness=FakeLiveness(), probe_timeout_s=0.3,
                               backoff=Backoff(0.01, 0.05, rng=random.Random(7)), store=store)
        self.reports_before = self.l1.published   # what earlier L2s consumed
        self.orders_before = self.executor.stats.received
        return self.l2

    async def watch_alerts(self) -> None:
        async def on_alert(alert) -> None:
            self.alerts.append(alert)

        await self.bus("watch", "w").subscribe(Topic.L2_ALERTS, on_alert)

    async def bar(self, index: int):
        """L1 processes bar ``index`` (fills, exits), L2 hears the reports, decides, L1 gets the orders."""
        l2, bar = self.l2, day()[index]
        assert l2 is not None
        self.clock.set(bar.close_time)
        await self.l1.on_bar(bar)
        await until(lambda: l2.stats.reports_received >= self.l1.published - self.reports_before, what="reports")
        decision = await l2.on_bar(bar, bar.close_time)
        sent = l2.stats.orders_published
        await until(lambda: self.executor.stats.received >= self.orders_before + sent, what="orders at L1")
        await until(lambda: l2.stats.reports_received >= self.l1.published - self.reports_before, what="answers")
        return decision

    async def snapshot_adopted(self) -> None:
        l2 = self.l2
        assert l2 is not None
        seen = l2.stats.snapshots_received
        assert await self.l1.publish_snapshot()
        await until(lambda: l2.stats.snapshots_received > seen, what="the snapshot at L2")

    async def close(self) -> None:
        if self.l2 is not None:
            await self.l2.stop(flush_timeout_s=0.5)
        for bus in self.buses:
            await bus.close()


def memory_url() -> str:
    return f"memory://recovery-{uuid.uuid4().hex[:8]}"


def assert_mirror_is_l1s_book(l2: L2BusAdapter, executor: PaperExecutor, *, stops: bool = True) -> None:
    """L2's account = L1's portfolio: cash, and per position quantity, entry and (``stops``) the stop L1
    guards (L2 keeps an entry's stop when it adds to a position, L1 takes the addition's: not compared then)."""
    account, book = l2.loop.account, executor.portfolio
    assert account.cash == pytest.approx(book.balance("USDT"), rel=1e-12)
    assert set(account.state.positions) == set(book.positions)
    for symbol, held in book.positions.items():
        mine = account.state.positions[symbol]
        assert mine.qty == pytest.approx(held.qty, rel=1e-12)
        assert mine.entry_price == pytest.approx(held.avg_price, rel=1e-12)
        if stops:
            assert account.stop_sent[symbol] == held.stop_loss and mine.initial_stop == held.stop_loss


async def restart_l2_with_an_order_in_flight(stack: Stack) -> tuple[L2BusAdapter, TacticalLoop]:
    """The first L2 sends an entry and dies before its fill; L1 fills it at the next open; a new L2 starts
    on the same bus (same group) and hears L1's heartbeat, but not yet its account."""
    await stack.start_l1()
    await stack.watch_alerts()
    first = stack.new_l2({ENTRY: SignalDirection.LONG})
    await first.start()
    assert await first.wait_for_l1(5.0)
    decisions = [await stack.bar(i) for i in range(ENTRY + 1)]
    (entry,) = [o for d in decisions for o in d.orders]
    await first.stop()                                           # L2 gone, its order still pending at L1
    consumed = stack.l1.published
    stack.clock.set(day()[ENTRY + 1].close_time)
    await stack.l1.on_bar(day()[ENTRY + 1])                      # filled while no L2 listens
    assert stack.executor.portfolio.position(SYMBOL).qty == pytest.approx(entry.qty)
    second = stack.new_l2({0: SignalDirection.LONG, 2: SignalDirection.LONG}, warm_until=ENTRY + 2)
    stack.reports_before = consumed                              # the new L2 hears the fill report too
    await second.start()
    await stack.l1.beat()
    await until(lambda: second.l1_heartbeat_age() == 0.0, what="L1's heartbeat at the new L2")
    control = TacticalLoop(CFG, Scripted({2: SignalDirection.LONG}), clock=stack.clock)
    control.warm_up(SYMBOL, history_before(ENTRY + 2))
    control.risk_gate(True, 0.0)
    return second, control


def test_a_restarted_l2_takes_no_new_risk_until_it_adopted_l1s_account_and_then_does_not_double_it():
    async def scenario():
        stack = Stack(memory_url(), "rec")
        try:
            l2, control = await restart_l2_with_an_order_in_flight(stack)
            await until(lambda: l2.stats.reports_received >= 1, what="the fill report at the new L2")
            assert not l2.sync.synced and SYMBOL not in l2.loop.state.positions     # held back, not applied

            blocked = await stack.bar(ENTRY + 2)                                    # its LONG, before the snapshot
            control.on_bar(SYMBOL, day()[ENTRY + 2], day()[ENTRY + 2].close_time)
            assert blocked.orders == () and [r for _, r in blocked.reasons] == [ReasonCode.ACCOUNT_NOT_SYNCED]
            await until(lambda: any(a.code is ReasonCode.ACCOUNT_NOT_SYNCED for a in stack.alerts), what="alert")

            await stack.snapshot_adopted()
            assert l2.sync.synced and await l2.wait_for_l1(1.0)
            assert_mirror_is_l1s_book(l2, stack.executor)
            assert l2.loop.stats.fills == 0                      # the held-back fill was in the snapshot: not twice
            held = l2.loop.state.positions[SYMBOL].qty

            decisions = [await stack.bar(i) for i in (ENTRY + 3, ENTRY + 4)]          # its second LONG
            for i in (ENTRY + 3, ENTRY + 4):
                reference = control.on_bar(SYMBOL, day()[i], day()[i].close_time)
            (full,) = reference.orders            # what an L2 that sized as if flat would have sent
            top_up = sum(o.qty for d in decisions for o in d.orders if o.side is Side.BUY)
            assert full.qty > 0.5 * held          # so a flat mirror would have (nearly) doubled the position
            assert held + top_up <= 1.01 * max(full.qty, held)
            assert ReasonCode.ACCOUNT_NOT_SYNCED not in [r for d in decisions for _, r in d.reasons]
            assert any(a.code is ReasonCode.ACCOUNT_NOT_SYNCED and a.severity is AlertSeverity.INFO
                       for a in stack.alerts)     # the gate's "cleared" alert

            await stack.bar(ENTRY + 5)                                               # L1 fills any top-up
            assert stack.executor.portfolio.position(SYMBOL).qty <= 1.01 * max(full.qty, held)
            await stack.snapshot_adopted()
            assert l2.sync.compared >= 1 and l2.sync.mismatches == 0
            assert_mirror_is_l1s_book(l2, stack.executor, stops=top_up == 0)
        finally:
            await stack.close()
            await stack.stop_l1()

    asyncio.run(scenario())


def test_a_later_snapshot_that_disagrees_raises_an_alert_and_l1s_book_is_adopted():
    async def scenario():
        stack = Stack(memory_url(), "rec")
        try:
            await stack.start_l1()
            await stack.watch_alerts()
            l2 = stack.new_l2({ENTRY: SignalDirection.LONG})
            await l2.start()
            assert await l2.wait_for_l1(5.0)
            older = await stack.l1.account_snapshot()                      # flat: before the position
            for i in range(ENTRY + 2):
                await stack.bar(i)
            await until(lambda: SYMBOL in l2.loop.state.positions, what="the position at L2")

            assert older is not None and l2.loop.account.differences(older)   # it does disagree ...
            seen = l2.stats.snapshots_received
            await stack.l1.bus.publish(Topic.L1_ACCOUNT, older)
            await until(lambda: l2.stats.snapshots_received > seen, what="the older snapshot at L2")
            assert l2.sync.compared == 0 and l2.sync.mismatches == 0      # ... but it is behind: not compared
            assert_mirror_is_l1s_book(l2, stack.executor)

            await stack.snapshot_adopted()                                 # a current one agrees
            assert l2.sync.compared == 1 and l2.sync.mismatches == 0

            mine = l2.loop.state.positions[SYMBOL].qty
            book = stack.executor.portfolio                                # L1's book moves, its report is lost
            last = day()[ENTRY + 1]
            book.apply_fill(FillRecord(fill_id="lost", order_id="lost", symbol=SYMBOL, qty=-mine / 2,
                                       price=last.close, fee=0.0, kind="market", bar_time=last.open_time))
            await stack.snapshot_adopted()
            await until(lambda: len([a for a in stack.alerts if a.code is ReasonCode.ACCOUNT_MISMATCH]) == 2,
                        what="the mismatch alerts")
            by_symbol = {a.symbol: a for a in stack.alerts if a.code is ReasonCode.ACCOUNT_MISMATCH}
            qty_alert = by_symbol[SYMBOL]
            assert qty_alert.severity is AlertSeverity.CRITICAL
            assert (qty_alert.value, qty_alert.limit) == (pytest.approx(mine), pytest.approx(mine / 2))
            assert f"{mine:.10g}" in qty_alert.message and f"{mine / 2:.10g}" in qty_alert.message
            assert by_symbol[""].limit == pytest.approx(book.balance("USDT"))     # cash, L1's number
            assert l2.sync.mismatches == 1
            assert_mirror_is_l1s_book(l2, stack.executor)                  # L1 is the book of record

            await stack.snapshot_adopted()                                 # agreed again: no new alert
            assert l2.sync.compared == 3 and l2.sync.mismatches == 1
        finally:
            await stack.close()
            await stack.stop_l1()

    asyncio.run(scenario())


@pytest.mark.service
def test_over_redis_l1_restarted_from_its_journal_and_a_new_l2_rebuild_the_same_account(redis_url, tmp_path):
    prefix = f"test-l2-recovery-{uuid.uuid4().hex[:8]}"

    async def scenario():
        stack = Stack(redis_url, prefix, journal_url=f"sqlite:///{tmp_path / 'l1.sqlite'}")
        try:
            await stack.start_l1()
            await stack.watch_alerts()
            first = stack.new_l2({ENTRY: SignalDirection.LONG})
            await first.start()
            assert await first.wait_for_l1(10.0)
            for i in range(ENTRY + 3):
                await stack.bar(i)
            await until(lambda: SYMBOL in first.loop.state.positions, what="the position at the first L2")
            before = stack.executor.portfolio.snapshot()
            await first.stop()
            await stack.stop_l1()                                           # both processes gone

            await stack.start_l1(start=False)                               # L1 again, from its SQLite journal
            assert stack.executor.portfolio.snapshot() == before
            l2 = stack.new_l2({0: SignalDirection.LONG, 2: SignalDirection.LONG}, warm_until=ENTRY + 3)
            await l2.start()
            await stack.l1.beat()                                           # alive, its account not sent yet
            await until(lambda: l2.l1_heartbeat_age() == 0.0, timeout=10.0, what="L1's heartbeat")
            bar = day()[ENTRY + 3]
            stack.clock.set(bar.close_time)
            blocked = await l2.on_bar(bar, bar.close_time)
            assert blocked.orders == () and [r for _, r in blocked.reasons] == [ReasonCode.ACCOUNT_NOT_SYNCED]

            await stack.l1.start()                                          # start-up publishes the account
            assert await l2.wait_for_l1(10.0)
            assert_mirror_is_l1s_book(l2, stack.executor)
            held = l2.loop.state.positions[SYMBOL].qty
            await stack.l1.on_bar(bar)                                      # L1's turn for that bar
            for i in (ENTRY + 4, ENTRY + 5, ENTRY + 6):
                await stack.bar(i)
            assert stack.executor.portfolio.position(SYMBOL).qty < 1.5 * held    # the second LONG did not double
            await stack.snapshot_adopted()
            assert l2.sync.compared >= 1 and l2.sync.mismatches == 0
            assert not [a for a in stack.alerts if a.code is ReasonCode.ACCOUNT_MISMATCH]
        finally:
            await stack.close()
            await stack.stop_l1()

    try:
        asyncio.run(scenario())
    finally:
        _cleanup_redis(redis_url, prefix)


# ------------------------------------------------------------------ L2's risk state across a restart

TIGHT = CFG.with_overrides({"risk.drawdown_reduce": 0.0002, "risk.drawdown_halt": 0.0002})  # a round trip trips it


@pytest.mark.parametrize("bus", ["memory", pytest.param("redis", marks=pytest.mark.service)])
def test_a_halted_l2_restarted_on_the_bus_stays_halted_until_the_operator_resets_its_kill_switch(bus, request,
                                                                                                 tmp_path, capsys):
    url = request.getfixturevalue("redis_url") if bus == "redis" else memory_url()
    prefix = f"test-l2-halt-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "l2state.sqlite"

    async def restart(plan: dict[int, SignalDirection], at: int) -> L2BusAdapter:
        store = RiskStore(path)
        stores.append(store)
        l2 = stack.new_l2(plan, warm_until=at, config=TIGHT, store=store)
        await l2.start()
        await stack.l1.beat()
        await stack.snapshot_adopted()
        assert await l2.wait_for_l1(10.0)
        return l2

    async def scenario():
        try:
            await halted_then_reset()
        finally:
            await stack.close()
            await stack.stop_l1()

    async def halted_then_reset():
        await stack.start_l1()
        await stack.watch_alerts()
        first = stack.new_l2({ENTRY: SignalDirection.LONG, ENTRY + 30: SignalDirection.CLOSE_LONG}, config=TIGHT,
                             store=RiskStore(path))
        stores.append(first.sync.store)
        await first.start()
        assert await first.wait_for_l1(10.0)
        fresh = f"no stored risk state in {path}: starting fresh"             # a new file: L2 says so on l2.alerts
        await until(lambda: any(a.message.startswith(fresh) for a in stack.alerts), what="the starting-fresh alert")
        decisions = [await stack.bar(i) for i in range(ENTRY + 33)]
        assert len([o for d in decisions for o in d.orders]) == 2 and not stack.executor.portfolio.positions
        assert first.loop.state.trading_state is TradingState.HALTED        # the kill switch fired
        await first.stop()
        first.sync.store.close()                                            # the process ends: its lock goes

        second = await restart({0: SignalDirection.LONG, 2: SignalDirection.LONG}, ENTRY + 33)
        await until(lambda: any("restored" in a.message for a in stack.alerts), what="the restored alert")
        (restored,) = [a for a in stack.alerts if "restored" in a.message]
        assert restored.severity is AlertSeverity.WARNING and restored.code is ReasonCode.DRAWDOWN_KILL_SWITCH
        blocked = [await stack.bar(i) for i in range(ENTRY + 33, ENTRY + 36)]
        assert [o for d in blocked for o in d.orders] == []
        assert [r for d in blocked for _, r in d.reasons] == [ReasonCode.DRAWDOWN_KILL_SWITCH] * 2
        assert main(["risk", "reset", "--state", str(path)]) == 4            # refused while this L2 runs
        assert "in use" in capsys.readouterr().err
        await second.stop()
        second.sync.store.close()

        assert main(["risk", "reset", "--state", str(path)]) == 0
        assert "kill switch reset" in capsys.readouterr().out
        third = await restart({0: SignalDirection.LONG}, ENTRY + 36)
        assert third.loop.state.trading_state is TradingState.ACTIVE
        received = stack.executor.stats.received
        trades = await stack.bar(ENTRY + 36)
        assert [o.side for o in trades.orders] == [Side.BUY] and stack.executor.stats.received == received + 1

    stack = Stack(url, prefix)
    stores: list[RiskStore] = []
    try:
        asyncio.run(scenario())
    finally:
        for store in stores:
            store.close()
        if bus == "redis":
            _cleanup_redis(url, prefix)


# ------------------------------------------------------------------ the protocol, without a bus


class Book:
    """A real L1 book (PaperExecutor on real bars) and the snapshots it would publish."""

    def __init__(self) -> None:
        self.clock = SimulatedClock(day()[0].open_time)
        self.executor = PaperExecutor.from_config(CFG, journal=Journal("sqlite://"), clock=self.clock)
        self.trail = ReportTrail()
        self.sequence = 0

    def fill(self, index: int, side: Side, qty: float):
        """An order after bar ``index`` closed, filled at the next open: its report."""
        bar = day()[index]
        self.clock.set(bar.close_time)
        assert self.executor.submit(intent_after(bar, side=side, qty=qty)) is None
        self.clock.set(day()[index + 1].close_time)
        (report,) = self.executor.on_bar(day()[index + 1])
        self.trail.add(report.report_id)
        return report

    def snapshot(self):
        self.sequence += 1
        return self.executor.portfolio.account_snapshot(sender="l1", timestamp=self.clock.now(),
                                                        reports=self.trail.count,
                                                        recent_report_ids=self.trail.recent(), sequence=self.sequence)


def mirror() -> tuple[TacticalAccount, AccountSync]:
    account = TacticalAccount(CFG.execution.initial_cash, day()[0].open_time,
                              default_stop_pct=CFG.risk.default_stop_pct, stats=LoopStats())
    return account, AccountSync(account, account.apply_report)


def test_a_snapshot_ahead_of_or_behind_the_mirror_is_not_compared():
    book = Book()
    account, sync = mirror()
    flat = book.snapshot()
    assert sync.on_snapshot(flat, book.clock.now()) == () and sync.synced
    fill = book.fill(10, Side.BUY, 0.006)
    ahead = book.snapshot()                                 # reflects the fill L2 has not heard yet
    assert account.differences(ahead) and sync.on_snapshot(ahead, book.clock.now()) == ()
    assert sync.on_report(fill) and sync.position == fill.report_id
    behind = flat                                           # the flat one, arriving late
    assert account.differences(behind) and sync.on_snapshot(behind, book.clock.now()) == ()
    assert sync.compared == 0 and account.state.positions[SYMBOL].qty == pytest.approx(0.006)
    assert sync.on_snapshot(book.snapshot(), book.clock.now()) == () and sync.compared == 1


def test_reports_the_adopted_snapshot_reflects_are_skipped_and_later_ones_applied():
    book = Book()
    account, sync = mirror()
    first = book.fill(10, Side.BUY, 0.006)
    snap = book.snapshot()
    second = book.fill(20, Side.SELL, 0.002)
    assert not sync.on_report(second) and not account.state.positions     # held back before any snapshot
    sync.on_snapshot(snap, book.clock.now())
    assert not sync.on_report(first)                                        # the snapshot has it already
    assert account.state.positions[SYMBOL].qty == pytest.approx(0.004)     # 0.006 adopted, then the sell applied
    assert sync.position == second.report_id
    assert account.cash == pytest.approx(book.executor.portfolio.balance("USDT"), rel=1e-12)
    assert sync.on_snapshot(book.snapshot(), book.clock.now()) == () and sync.compared == 1


def test_no_comparison_while_an_order_is_in_flight():
    book = Book()
    account, sync = mirror()
    sync.on_snapshot(book.snapshot(), book.clock.now())
    intent = intent_after(day()[30], qty=0.01)
    account.record_sent(intent, "composite")
    book.executor.portfolio.apply_fill(FillRecord(fill_id="x", order_id="x", symbol=SYMBOL, qty=0.01,
                                                  price=day()[31].open, fee=0.0, kind="market",
                                                  bar_time=day()[31].open_time, stop_loss=intent.stop_loss))
    snap = book.snapshot()
    assert account.differences(snap) and sync.on_snapshot(snap, book.clock.now()) == ()
    assert sync.compared == 0 and sync.mismatches == 0


def test_adopting_a_book_that_agrees_changes_nothing_and_an_unprotected_position_gets_l2s_default_stop():
    book = Book()
    account, sync = mirror()
    state = account.state
    sync.on_snapshot(book.snapshot(), book.clock.now())
    assert account.state is state                           # same account: the start of a paper run is untouched
    bar = day()[40]
    unprotected = dataclasses.replace(book.snapshot(), snapshot_id="", positions=(
        AccountPosition(symbol=SYMBOL, qty=0.003, avg_price=bar.open, opened_at=bar.open_time, mark=bar.close),))
    _, fresh = mirror()
    fresh.on_snapshot(unprotected, bar.close_time)
    pos = fresh.account.state.positions[SYMBOL]
    assert pos.stop_loss == pytest.approx(bar.open * (1 - CFG.risk.default_stop_pct))
    assert fresh.account.stop_sent[SYMBOL] == pos.stop_loss and pos.last_price == bar.close
    assert fresh.account.state.equity == pytest.approx(unprotected.equity())
    assert fresh.account.position_state(SYMBOL).unrealised_pnl == pytest.approx(
        0.003 * (bar.close - bar.open) / (unprotected.equity() - 0.003 * (bar.close - bar.open)))


def test_reports_held_back_are_bounded_and_counted_when_no_snapshot_comes(caplog):
    book = Book()
    account, _ = mirror()
    sync = AccountSync(account, account.apply_report, early_limit=2)
    reports = [book.fill(i, Side.BUY, 0.001) for i in (10, 20, 30)]
    with caplog.at_level("WARNING", logger="l2_tactical.tactical_account"):
        for report in (*reports, *reports):
            assert not sync.on_report(report)
    assert sync.dropped_early == 4 and len(caplog.records) == 1 and "held back" in caplog.text
    sync.on_snapshot(book.snapshot(), book.clock.now())     # the snapshot has all three: nothing applied twice
    assert account.state.positions[SYMBOL].qty == pytest.approx(0.003) and account.stats.fills == 0
