"""L1 journal: SQLite always, PostgreSQL (own schema) when the service is there; same code for both."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from l1_operational.executor import PaperExecutor
from l1_operational.journal import Journal
from l1_operational.portfolio import FillRecord, Portfolio
from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.messages import ExecutionReport, ExecutionStatus, ReasonCode, Side
from tests.l1_support import BTC_1H, ETH_1H, bars, intent_after, require_service, utc

CFG = L2Config.default()
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_journal():
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    schema = f"l1_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    journal = Journal(PG_URL, schema=schema)
    try:
        yield journal
    finally:
        journal.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def sqlite_journal(tmp_path):
    journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    yield journal
    journal.close()


def _report(order_id: str, symbol: str, when) -> ExecutionReport:
    return ExecutionReport(order_id=order_id, symbol=symbol, side=Side.BUY, status=ExecutionStatus.FILLED,
                           requested_qty=0.01, executed_qty=0.01, avg_price=100.0, timestamp=when)


def exercise_journal(journal: Journal) -> None:
    """The journal contract, run against each backend."""
    window = bars(BTC_1H, "2020-03-12T08:00:00Z", "2020-03-12T10:00:00Z")
    intent = intent_after(window[0], qty=0.02)
    assert journal.record_order(intent, status="accepted", reason="ok", qty=0.02, after_bar=window[0].open_time,
                                received_at=window[0].close_time)
    assert not journal.record_order(intent, status="accepted", reason="ok", qty=0.02, after_bar=None,
                                    received_at=window[1].close_time)           # same order_id: refused
    ((pending, qty, after),) = journal.pending_orders()
    assert pending == intent and qty == 0.02 and after == window[0].open_time
    fill = FillRecord(fill_id="fill-1", order_id=intent.order_id, symbol="BTCUSDT", qty=0.02, price=window[1].open,
                      fee=0.15, kind="market", bar_time=window[1].open_time, reference=window[1].open,
                      stop_loss=intent.stop_loss, correlation_id=intent.correlation_id)
    report = _report(intent.order_id, "BTCUSDT", window[1].open_time)
    assert journal.record_fill(fill, report, order_filled=True)
    assert not journal.record_fill(fill, replace(report, report_id="other"), order_filled=True)   # fill_id unique
    assert journal.fills() == [fill] and journal.pending_orders() == []
    assert journal.order_statuses()[intent.order_id] == ("filled", "ok")
    assert [r.report_id for r in journal.reports(unpublished_only=True)] == [report.report_id]
    journal.mark_published([report.report_id])
    assert journal.reports(unpublished_only=True) == [] and journal.reports() == [report]
    assert journal.ensure_initial_balances({"USDT": 5000.0}) == {"USDT": 5000.0}
    assert journal.ensure_initial_balances({"USDT": 1.0}) == {"USDT": 5000.0}     # written once
    rebuilt = journal.rebuild_portfolio({"USDT": 1.0}, quote_asset="USDT")
    expected = Portfolio({"USDT": 5000.0})
    expected.apply_fill(fill)
    assert rebuilt.snapshot() == expected.snapshot()
    assert rebuilt.balance("USDT") == pytest.approx(5000.0 - 0.02 * window[1].open - 0.15)


def test_journal_contract_on_sqlite(sqlite_journal):
    exercise_journal(sqlite_journal)


@pytest.mark.service
def test_journal_contract_on_postgresql(pg_journal):
    exercise_journal(pg_journal)


def run_session(journal: Journal) -> PaperExecutor:
    """Trade BTC and ETH through the March 2020 crash (stops included) on one journal."""
    ex = PaperExecutor.from_config(CFG, journal=journal, clock=SimulatedClock(utc("2020-03-11T21:00:00Z")),
                                   initial_balances={"USDT": 10_000.0})
    btc = bars(BTC_1H, "2020-03-11T20:00:00Z", "2020-03-13T06:00:00Z")
    eth = bars(ETH_1H, "2020-03-11T20:00:00Z", "2020-03-13T06:00:00Z")
    for i, (b, e) in enumerate(zip(btc, eth, strict=True)):
        ex.clock.set(max(ex.clock.now(), b.close_time))
        ex.on_bar(b)
        ex.on_bar(e)
        if i % 5 == 0:
            ex.submit(intent_after(b, qty=0.01, stop_pct=0.04))
            ex.submit(intent_after(e, qty=0.25, stop_pct=0.05))
        if i % 5 == 3 and ex.portfolio.balance("ETH") > 0:
            ex.submit(intent_after(e, side=Side.SELL, qty=ex.portfolio.balance("ETH")))
    return ex


def exercise_restart(journal: Journal) -> None:
    ex = run_session(journal)
    kinds = {f.kind for f in journal.fills()}
    assert {"market", "stop_loss"} <= kinds
    again = PaperExecutor.from_config(CFG, journal=journal, clock=SimulatedClock(ex.clock.now()),
                                      initial_balances={"USDT": 1.0})   # ignored: the journal has them
    assert again.portfolio.snapshot() == ex.portfolio.snapshot()
    assert again.portfolio.balance("USDT") == pytest.approx(ex.portfolio.balance("USDT"), abs=0)


def test_journal_restart_rebuilds_identical_portfolio_on_sqlite(sqlite_journal):
    exercise_restart(sqlite_journal)


@pytest.mark.service
def test_journal_restart_rebuilds_identical_portfolio_on_postgresql(pg_journal):
    exercise_restart(pg_journal)


@pytest.mark.service
def test_journal_duplicate_rejected_across_two_processes_sharing_postgresql(pg_journal):
    """Two executors on one database: the UNIQUE order_id lets only one of them accept the order."""
    first = PaperExecutor.from_config(CFG, journal=pg_journal, clock=SimulatedClock(utc("2020-03-12T09:00:00Z")))
    second = PaperExecutor.from_config(CFG, journal=Journal(pg_journal.url, schema=pg_journal.schema),
                                       clock=SimulatedClock(utc("2020-03-12T09:00:00Z")))
    intent = intent_after(bars(BTC_1H, "2020-03-12T08:00:00Z", "2020-03-12T09:00:00Z")[0], qty=0.01)
    assert first.submit(intent) is None
    assert second.submit(intent).reason_code is ReasonCode.DUPLICATE_ORDER


def test_journal_deferred_writes_are_one_transaction_visible_to_others_only_after_commit(tmp_path):
    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    journal, other = Journal(url), Journal(url)
    window = bars(BTC_1H, "2020-03-12T08:00:00Z", "2020-03-12T11:00:00Z")
    first, second = (intent_after(b, qty=0.01) for b in window[:2])
    journal.deferred = True
    for intent in (first, second):
        assert journal.record_order(intent, status="accepted", reason="ok", qty=0.01, after_bar=None,
                                    received_at=window[2].open_time)
    assert journal.in_transaction and other.order_ids() == set()       # a second reader sees nothing yet
    commits = journal.commits
    journal.commit()
    assert journal.commits == commits + 1 and not journal.in_transaction
    assert other.order_ids() == {first.order_id, second.order_id}       # both in the one commit
    journal.close(), other.close()


def test_journal_savepoint_undoes_only_the_failed_block_and_keeps_the_rest_of_the_batch(sqlite_journal):
    window = bars(BTC_1H, "2020-03-12T08:00:00Z", "2020-03-12T11:00:00Z")
    kept, undone = intent_after(window[0], qty=0.01), intent_after(window[1], qty=0.01)
    sqlite_journal.deferred = True
    with sqlite_journal.savepoint():
        sqlite_journal.record_order(kept, status="accepted", reason="ok", qty=0.01, after_bar=None,
                                    received_at=window[2].open_time)
    with pytest.raises(RuntimeError, match="handler bug"), sqlite_journal.savepoint():
        sqlite_journal.record_order(undone, status="accepted", reason="ok", qty=0.01, after_bar=None,
                                    received_at=window[2].open_time)
        raise RuntimeError("handler bug")
    sqlite_journal.commit()
    assert set(sqlite_journal.order_ids()) == {kept.order_id}
    with pytest.raises(RuntimeError, match="read inside a savepoint"), sqlite_journal.savepoint():
        sqlite_journal.order_ids()


def test_journal_rollback_discards_the_batch_and_the_executor_reloads_to_the_journal(sqlite_journal):
    """A failed group commit: the journal drops the batch, the executor forgets it (the bus re-delivers it)."""
    window = bars(BTC_1H, "2020-03-12T08:00:00Z", "2020-03-12T12:00:00Z")
    ex = PaperExecutor.from_config(CFG, journal=sqlite_journal, clock=SimulatedClock(window[0].close_time),
                                   initial_balances={"USDT": 10_000.0})
    assert ex.submit(intent_after(window[0], qty=0.01)) is None
    ex.on_bar(window[1])                                                   # filled, committed (not deferred)
    before = ex.portfolio.snapshot()
    sqlite_journal.deferred = True
    ex.clock.set(window[1].close_time)
    lost = intent_after(window[1], qty=0.02)
    assert ex.submit(lost) is None
    ex.on_bar(window[2])
    assert ex.portfolio.snapshot() != before
    sqlite_journal.rollback()
    ex.reload()
    assert ex.portfolio.snapshot() == before and ex.pending() == []
    assert lost.order_id not in sqlite_journal.order_ids()
    assert ex.submit(lost) is None                                         # not a duplicate: it was never kept


def test_journal_rejects_an_unknown_sync_mode(tmp_path):
    with pytest.raises(ValueError, match="sync='fsync'"):
        Journal(f"sqlite:///{tmp_path / 'j.sqlite'}", sync="fsync")


def test_journal_full_sync_sets_sqlite_synchronous_full(tmp_path):
    journal = Journal(f"sqlite:///{tmp_path / 'j.sqlite'}", sync="full")
    import sqlalchemy as sa

    with journal.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2          # FULL
    journal.close()
    journal = Journal(f"sqlite:///{tmp_path / 'j.sqlite'}")
    with journal.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1          # NORMAL
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    journal.close()
