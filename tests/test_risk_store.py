"""L2's risk state survives an L2 restart (l2_tactical.risk_store): kill switch, daily loss, peak, tracking.

Real L1 (PaperExecutor on real BTCUSDT 1m bars of 2025-06-02 and 03), real L2 (TacticalLoop with an
AccountSync on a RiskStore file); the signals are scripted so the scenario is exact. A restart is a
new TacticalLoop + AccountSync + RiskStore on the same file, adopting L1's snapshot as on the bus
(the bus versions are in tests/test_l2_recovery.py).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from datetime import timedelta
from functools import lru_cache

import pytest

from l1_operational.bus_adapter import ReportTrail
from l1_operational.executor import PaperExecutor
from l1_operational.journal import Journal
from l2_tactical.cli import main
from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles
from l2_tactical.messages import AlertSeverity, ReasonCode, Side, SignalDirection, TradingState
from l2_tactical.risk_store import APPLICATION_ID, RiskStore, StateStoreError, capture
from l2_tactical.tactical_account import AccountSync
from l2_tactical.tactical_loop import TacticalLoop
from tests.l1_support import BTC_1M, bars, intent_after
from tests.test_tactical_loop import Scripted

SYMBOL = "BTCUSDT"
LONG, CLOSE = SignalDirection.LONG, SignalDirection.CLOSE_LONG
BASE = L2Config.default()


@lru_cache(maxsize=1)
def two_days():
    """Real closed 1m bars of 2025-06-02 and 2025-06-03 (index 1440 is the first bar of the second UTC day)."""
    return tuple(bars(BTC_1M, "2025-06-02T00:00:00Z", "2025-06-04T00:00:00Z"))


NEXT_DAY = 1440


def config(**risk: object) -> L2Config:
    return BASE.with_overrides({f"risk.{k}": v for k, v in risk.items()})


HOLD = {"stop_method": "fixed", "default_stop_pct": 0.03, "trailing_stop": False}   # a position that stays open


class L2:
    """One L2 process: its loop, its AccountSync on the store, the alerts its start raised."""

    def __init__(self, desk: Desk, cfg: L2Config, plan: dict[int, SignalDirection], index: int) -> None:
        self.loop = TacticalLoop(cfg, Scripted(plan), clock=desk.clock)
        start = two_days()[index].open_time
        self.loop.warm_up(SYMBOL, load_candles(BTC_1M).slice((start - timedelta(hours=3)).isoformat(),
                                                             start.isoformat()))
        self.loop.risk_gate(True, 0.0)
        self.store = RiskStore(desk.path)
        self.sync = AccountSync(self.loop.account, self.loop.on_report, store=self.store, risk=cfg.risk)
        self.alerts = self.sync.on_snapshot(desk.snapshot(), desk.clock.now())
        self.held_bars = 0        # bars this L2 saw close with the position open (counted here, not by L2)

    @property
    def state(self):
        return self.loop.account.state

    def stop(self) -> None:
        self.store.close()


class Desk:
    """A real L1 book and the L2s that trade on it one after the other (a restart = a new :class:`L2`)."""

    def __init__(self, path) -> None:
        self.path = path
        self.clock = SimulatedClock(two_days()[0].open_time)
        self.executor = PaperExecutor.from_config(BASE, journal=Journal("sqlite://"), clock=self.clock)
        self.trail = ReportTrail()
        self.sequence = 0
        self.index = 0               # the next bar

    def snapshot(self):
        self.sequence += 1
        return self.executor.portfolio.account_snapshot(sender="l1", timestamp=self.clock.now(),
                                                        reports=self.trail.count, recent_report_ids=self.trail.recent(),
                                                        sequence=self.sequence)

    def start(self, plan: dict[int, SignalDirection] | None = None, cfg: L2Config = BASE) -> L2:
        """A new L2 starting at the next bar; ``plan``: its signals, by bars since its start."""
        return L2(self, cfg, plan or {}, self.index)

    def bar(self, l2: L2 | None):
        """The next bar: L1 fills/exits, L2 (``None``: down) hears the reports, decides, saves its state."""
        bar = two_days()[self.index]
        self.index += 1
        self.clock.set(bar.close_time)
        reports = self.executor.on_bar(bar)
        for report in reports:
            self.trail.add(report.report_id)
        if l2 is None:
            return None
        for report in reports:
            l2.sync.on_report(report)
        decision = l2.loop.on_bar(SYMBOL, bar, bar.close_time)
        for order in decision.orders:
            answer = self.executor.submit(order)
            if answer is not None:
                self.trail.add(answer.report_id)
                l2.sync.on_report(answer)
        l2.sync.save(bar.close_time)
        l2.held_bars += SYMBOL in l2.state.positions
        return decision

    def run(self, l2: L2 | None, n: int) -> list:
        return [self.bar(l2) for _ in range(n)]


def stored(path):
    """What the file holds, read as ``l2 risk show`` reads it (read-only, closed again)."""
    store = RiskStore.existing(path)
    try:
        return store.load()
    finally:
        store.close()


def reasons(decisions) -> list[ReasonCode]:
    return [r for d in decisions if d is not None for _, r in d.reasons]


def buys(decisions) -> list:
    return [o for d in decisions if d is not None for o in d.orders if o.side is Side.BUY]


def halted_desk(tmp_path) -> tuple[Desk, L2, L2Config]:
    """An L2 whose kill switch fired (limits tight enough for a round trip on real bars to trip it)."""
    cfg = config(drawdown_reduce=0.0002, drawdown_halt=0.0002)
    desk = Desk(tmp_path / "l2state.sqlite")
    desk.run(None, 600)
    first = desk.start({0: LONG, 30: CLOSE}, cfg)
    decisions = desk.run(first, 40)
    assert len(buys(decisions)) == 1 and SYMBOL not in desk.executor.portfolio.positions   # in and out
    assert first.state.trading_state is TradingState.HALTED
    first.stop()
    return desk, first, cfg


def test_a_halted_l2_restarted_stays_halted_and_sends_no_new_risk_until_the_operator_resets_it(tmp_path, capsys):
    desk, _, cfg = halted_desk(tmp_path)
    desk.run(None, 5)                                          # L2 down for five bars

    second = desk.start({0: LONG, 3: LONG}, cfg)
    (restored,) = [a for a in second.alerts if "restored" in a.message]
    assert restored.severity is AlertSeverity.WARNING and restored.code is ReasonCode.DRAWDOWN_KILL_SWITCH
    assert second.state.trading_state is TradingState.HALTED
    decisions = desk.run(second, 5)
    assert buys(decisions) == [] and reasons(decisions) == [ReasonCode.DRAWDOWN_KILL_SWITCH] * 2
    second.stop()

    assert main(["risk", "reset", "--state", str(desk.path)]) == 0
    out = capsys.readouterr().out
    assert "kill switch reset" in out and str(desk.path) in out and "HALTED -> ACTIVE" in out
    assert main(["risk", "reset", "--state", str(desk.path)]) == 0      # again: nothing to reset, says so
    assert "not engaged" in capsys.readouterr().out

    third = desk.start({0: LONG}, cfg)
    assert third.state.trading_state is TradingState.ACTIVE
    assert [a.code for a in third.alerts if "restored" in a.message] == [ReasonCode.STATE_RESTORED]
    assert len(buys(desk.run(third, 1))) == 1                          # it trades again
    third.stop()
    store = RiskStore(desk.path)
    assert any("kill switch reset by l2 risk reset" in e for _, e in store.events(10))
    store.close()


def test_without_a_store_the_same_restart_would_have_traded_and_says_it_starts_fresh(tmp_path, monkeypatch):
    """The gap the store closes: a fresh L2 on the same book forgets the kill switch; it says so, naming
    the file it found empty by its absolute path."""
    desk, _, cfg = halted_desk(tmp_path)
    monkeypatch.chdir(tmp_path)
    desk.path = "other.sqlite"                                         # a restart that lost its state
    fresh = desk.start({0: LONG}, cfg)
    assert fresh.state.trading_state is TradingState.ACTIVE
    (alert,) = fresh.alerts
    assert alert.severity is AlertSeverity.WARNING and alert.code is ReasonCode.STATE_RESTORED
    assert alert.message.startswith(f"no stored risk state in {tmp_path / 'other.sqlite'}: starting fresh")
    assert len(buys(desk.run(fresh, 1))) == 1
    fresh.stop()


def daily_loss_desk(tmp_path) -> tuple[Desk, L2, L2Config]:
    cfg = config(daily_loss_limit=0.0002, drawdown_reduce=0.5, drawdown_halt=0.9, volatility_spike_multiple=100.0)
    desk = Desk(tmp_path / "l2state.sqlite")
    desk.run(None, 600)
    first = desk.start({0: LONG, 30: CLOSE}, cfg)
    decisions = desk.run(first, 40)
    assert len(buys(decisions)) == 1 and first.state.daily_loss_hit
    assert first.state.trading_state is TradingState.ACTIVE
    first.stop()
    return desk, first, cfg


def test_a_daily_loss_limit_hit_today_still_blocks_after_a_restart_the_same_utc_day(tmp_path):
    desk, first, cfg = daily_loss_desk(tmp_path)
    start_equity, trades = first.state.day_start_equity, first.state.trades_today
    second = desk.start({0: LONG}, cfg)
    (restored,) = [a for a in second.alerts if "restored" in a.message]
    assert restored.severity is AlertSeverity.WARNING and restored.code is ReasonCode.DAILY_LOSS_LIMIT
    assert second.state.daily_loss_hit and second.state.day == first.state.day
    assert (second.state.day_start_equity, second.state.trades_today) == (start_equity, trades) and trades == 1
    decisions = desk.run(second, 2)
    assert buys(decisions) == [] and reasons(decisions) == [ReasonCode.DAILY_LOSS_LIMIT]
    second.stop()


def test_the_next_utc_day_a_restarted_l2_starts_a_new_day_at_the_current_equity(tmp_path):
    desk, first, cfg = daily_loss_desk(tmp_path)
    desk.run(None, NEXT_DAY - desk.index)                              # down until midnight UTC
    second = desk.start({0: LONG}, cfg)
    equity = desk.executor.portfolio.account_snapshot(sender="l1", timestamp=desk.clock.now(), reports=0,
                                                      recent_report_ids=()).equity()
    assert second.state.day == two_days()[NEXT_DAY].open_time.date() != first.state.day
    assert not second.state.daily_loss_hit and second.state.trades_today == 0
    assert second.state.day_start_equity == pytest.approx(equity)
    (restored,) = second.alerts
    assert restored.severity is AlertSeverity.INFO and "a new day starts" in restored.message
    assert len(buys(desk.run(second, 1))) == 1
    second.stop()


def test_the_peak_bars_held_origin_and_entry_equity_survive_and_drawdown_is_measured_from_the_old_peak(tmp_path):
    desk = Desk(tmp_path / "l2state.sqlite")
    desk.run(None, 600)
    first = desk.start({0: LONG}, config(**HOLD))
    desk.run(first, 60)
    before = first.loop.account
    assert SYMBOL in before.state.positions and first.held_bars > 0
    peak, entry_equity = before.state.peak_equity, before.entry_equity[SYMBOL]
    first.stop()
    down = 0
    while True:                                                        # L2 down until the equity is below its peak
        desk.run(None, 1)
        down += 1
        snap = desk.snapshot()
        if snap.equity() < peak * (1 - 1e-5):
            break
    drawdown = 1 - snap.equity() / peak
    tightened = config(**HOLD, drawdown_reduce=drawdown / 2)           # the operator tightened the limits

    second = desk.start({}, tightened)
    account = second.loop.account
    assert account.state.peak_equity == peak and account.state.drawdown == pytest.approx(drawdown)
    assert account.state.trading_state is TradingState.REDUCING       # recomputed from the restored peak
    assert any(a.code is ReasonCode.NOT_ACTIVE and "-> reducing" in a.message for a in second.alerts)
    assert account.bars_held[SYMBOL] == first.held_bars                # bars L2 was down are not counted
    assert account.origin[SYMBOL] == "composite" and account.entry_equity[SYMBOL] == entry_equity
    desk.run(second, 1)
    assert account.bars_held[SYMBOL] == first.held_bars + 1
    second.stop()


def test_tracking_of_a_position_l1_changed_while_l2_was_down_is_dropped(tmp_path):
    desk = Desk(tmp_path / "l2state.sqlite")
    desk.run(None, 600)
    first = desk.start({0: LONG}, config(**HOLD))
    desk.run(first, 10)
    qty = first.state.positions[SYMBOL].qty
    first.stop()
    bar = two_days()[desk.index - 1]
    assert desk.executor.submit(intent_after(bar, side=Side.SELL, qty=qty / 2, stop_pct=0.05)) is None
    desk.run(None, 1)                                                   # L1 sold half: not the stored position
    second = desk.start(cfg=config(**HOLD))
    account = second.loop.account
    held = desk.executor.portfolio.positions[SYMBOL].qty
    assert held < 0.6 * qty and account.state.positions[SYMBOL].qty == pytest.approx(held)
    assert account.bars_held[SYMBOL] == 0 and SYMBOL not in account.origin
    assert "no longer held as stored: BTCUSDT" in second.alerts[0].message
    assert [h.qty for h in stored(desk.path).held] == [pytest.approx(held)]   # rewritten
    second.stop()


def test_the_store_is_written_only_when_the_state_changed(tmp_path):
    desk = Desk(tmp_path / "l2state.sqlite")
    desk.run(None, 600)
    l2 = desk.start({5: LONG})
    assert l2.store.saves == 1                                         # the adopted account
    desk.run(l2, 5)
    assert l2.store.saves == 1                                         # flat, quiet bars: nothing written
    desk.run(l2, 2)                                                    # the order (trades today), then the fill
    writes = l2.store.saves
    assert writes >= 2
    desk.run(l2, 3)
    assert l2.store.saves == writes + 3                                # held: bars held and equity move each bar
    assert stored(desk.path) == capture(l2.loop.account)
    l2.stop()


def test_a_corrupt_or_foreign_store_file_gives_a_clear_error_naming_it(tmp_path, capsys):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database, it is a note about one " * 100)
    with pytest.raises(StateStoreError, match=str(garbage)):
        RiskStore(garbage)
    assert main(["risk", "show", "--state", str(garbage)]) == 4
    err = capsys.readouterr().err
    assert str(garbage) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE orders (id TEXT)")
    with pytest.raises(StateStoreError, match="not an L2 risk state store"):
        RiskStore(foreign)

    good = tmp_path / "good.sqlite"
    desk = Desk(good)
    desk.start().stop()
    with sqlite3.connect(good) as db:
        db.execute("UPDATE risk_state SET trading_state = 'paused'")
    with pytest.raises(StateStoreError, match=r"risk_state.trading_state='paused'"):
        RiskStore(good)
    with sqlite3.connect(good) as db:
        db.execute("UPDATE risk_state SET trading_state = 'halted'")
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StateStoreError, match="schema version 99"):
        RiskStore(good)


def test_risk_show_prints_the_stored_state_and_a_missing_file_is_an_error(tmp_path, capsys):
    desk, first, _ = halted_desk(tmp_path)
    assert main(["risk", "show", "--state", str(desk.path)]) == 0
    out = capsys.readouterr().out
    assert "trading state halted" in out and f"trades {first.state.trades_today}" in out
    assert main(["risk", "reset", "--state", str(tmp_path / "missing.sqlite")]) == 4
    assert "missing.sqlite" in capsys.readouterr().err
    assert not (tmp_path / "missing.sqlite").exists()                  # never created by the operator's command
    assert not (tmp_path / "missing.sqlite.lock").exists()
    with pytest.raises(SystemExit) as usage:
        main(["risk", "reset"])
    assert usage.value.code == 2


def test_before_l1s_account_is_adopted_nothing_is_written_and_a_sync_with_a_store_needs_the_risk_limits(tmp_path):
    desk, _, cfg = halted_desk(tmp_path)
    loop = TacticalLoop(cfg, Scripted({}), clock=desk.clock)
    store = RiskStore(desk.path)
    sync = AccountSync(loop.account, loop.on_report, store=store, risk=cfg.risk)
    loop.on_bar(SYMBOL, two_days()[desk.index], two_days()[desk.index].close_time)   # a bar before the snapshot
    assert loop.state.trading_state is TradingState.ACTIVE and not sync.save(desk.clock.now())
    assert store.load().trading_state is TradingState.HALTED          # the fresh state did not overwrite it
    with pytest.raises(ValueError, match="risk"):
        AccountSync(loop.account, loop.on_report, store=store)
    store.close()


def sqlite_file(path, *statements: str):
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    return path


def fingerprint(path) -> tuple[str, list[str]]:
    """The file's bytes (hashed) and the files next to it (a -wal or -journal would show a write)."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), sorted(p.name for p in path.parent.iterdir())


def broken_store(path, statement: str):
    """A real store of this L2 (marker and version), then ``statement`` run on it."""
    RiskStore(path).close()
    os.remove(f"{path}.lock")
    return sqlite_file(path, statement)


FOREIGN = {
    "another app's file with a generic meta table": (
        lambda p: sqlite_file(p, "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                              "INSERT INTO meta VALUES ('schema_version', '1')", "CREATE TABLE users (id INTEGER)"),
        "not an L2 risk state store"),
    "a meta table and nothing else": (
        lambda p: sqlite_file(p, "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"),
        "not an L2 risk state store"),
    "another version": (
        lambda p: sqlite_file(p, f"PRAGMA application_id = {APPLICATION_ID}", "PRAGMA user_version = 2",
                              "CREATE TABLE risk_state_v2 (x)"),
        "schema version 2"),
    "this store with its risk_state table lost": (
        lambda p: broken_store(p, "DROP TABLE risk_state"), r"\['risk_state'\] missing"),
    "this store with a table of its own": (
        lambda p: broken_store(p, "CREATE TABLE extra (x)"), r"\['extra'\] missing, extra"),
}


@pytest.mark.parametrize("case", FOREIGN)
def test_a_foreign_or_other_version_file_is_refused_before_anything_is_written_to_it(tmp_path, case):
    make, why = FOREIGN[case]
    path = make(tmp_path / "state.sqlite")
    before = fingerprint(path)
    with pytest.raises(StateStoreError, match=why) as refused:
        RiskStore(path)
    assert str(path) in str(refused.value)
    with pytest.raises(StateStoreError, match=why):
        RiskStore.existing(path)
    assert fingerprint(path)[0] == before[0]
    new = [n for n in fingerprint(path)[1] if n not in before[1]]
    wal = tmp_path / "state.sqlite-wal"                                # a reader of a WAL file makes an empty one
    assert set(new) - {"state.sqlite-wal", "state.sqlite-shm"} == {"state.sqlite.lock"}   # the writer's lock
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("kind", ["missing", "empty", "foreign", "directory"])
def test_risk_show_and_reset_on_a_missing_empty_or_foreign_file_exit_4_naming_it_and_write_nothing(
        tmp_path, capsys, kind):
    path = tmp_path / "state.sqlite"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign":
        sqlite_file(path, "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    elif kind == "directory":
        path.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    for action in ("show", "reset"):
        assert main(["risk", action, "--state", str(path)]) == 4
        err = capsys.readouterr().err
        assert str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    after = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in after if n not in before] in ([], ["state.sqlite.lock"])   # reset's lock, nothing else
    if kind == "empty":
        assert path.read_bytes() == b""                                   # still empty: no tables written
    if kind == "foreign":
        with sqlite3.connect(path) as db:
            assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["meta", "sqlite_autoindex_meta_1"]


def test_a_second_writer_is_refused_while_an_l2_holds_the_state_and_show_still_reads_it(tmp_path, capsys):
    desk, _, cfg = halted_desk(tmp_path)
    running = desk.start({0: LONG}, cfg)                               # an L2 running on the file, halted
    with pytest.raises(StateStoreError, match=f"{desk.path}: in use: L2 pid {os.getpid()} holds {desk.path}.lock"):
        RiskStore(desk.path)                                           # a second L2 on the same --state
    assert main(["risk", "reset", "--state", str(desk.path)]) == 4     # the operator's reset while L2 runs
    err = capsys.readouterr().err
    assert "in use" in err and str(desk.path) in err
    assert stored(desk.path).trading_state is TradingState.HALTED     # not reset behind the running L2's back
    assert main(["risk", "show", "--state", str(desk.path)]) == 0      # reading needs no lock
    assert "trading state halted" in capsys.readouterr().out
    running.stop()
    assert main(["risk", "reset", "--state", str(desk.path)]) == 0     # stopped: the lock is free
    assert stored(desk.path).trading_state is TradingState.ACTIVE


def open_files(path) -> list[str]:
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [n for n in names if n.startswith(str(path))]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_an_open_that_fails_closes_the_file_and_releases_the_lock(tmp_path):
    path = tmp_path / "state.sqlite"
    desk = Desk(path)
    desk.start().stop()
    sqlite_file(path, "UPDATE risk_state SET equity = 'lots'")
    for _ in range(3):
        with pytest.raises(StateStoreError, match="risk_state.equity='lots'") as failed:
            RiskStore(path)
    assert open_files(path) == []                                      # failed (and kept by pytest) yet closed
    sqlite_file(path, "UPDATE risk_state SET equity = 10000.0")
    store = RiskStore(path)                                            # the failed opens left no lock behind
    assert store.load() is not None and failed.value is not None
    store.close()
    assert open_files(path) == []
