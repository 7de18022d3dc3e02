"""L1 journal: orders, fills and reports in SQL (SQLAlchemy Core), the executor's source of truth.

``sqlite:///path`` by default, ``postgresql+psycopg2://...`` by URL; the same code for both.

* ``l1_orders``: one row per order_id ever received (the UNIQUE constraint is what makes a
  second message with the same order_id a ``DUPLICATE_ORDER`` even across processes), with
  its status ``accepted`` (waiting for its fill bar) -> ``filled`` | ``rejected``.
* ``l1_fills``: every fill (market fills and stop/take-profit exits) in order; ``fill_id``
  is UNIQUE, so a fill can never be applied twice.
* ``l1_reports``: every ExecutionReport with a ``published`` flag (an outbox: reports
  written but not yet on the bus when the process died are re-sent on restart).
* ``l1_meta``: the initial balances, written once.

A fill, the order's status change and its report are written in ONE transaction (an order and
its rejection report too); the L1 bus adapter groups the writes of a batch of orders or of a bar
into one transaction, committed before any of their reports is published (see :class:`Journal`).
The portfolio is never stored: :meth:`Journal.rebuild_portfolio` replays the fills through
:meth:`Portfolio.apply_fill`, the code path of a fresh start (where there are none).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from l1_operational.portfolio import FillRecord, Portfolio
from l2_tactical.messages import ExecutionReport, OrderIntent

ORDER_STATUSES = ("accepted", "filled", "rejected")


def _tables(metadata: sa.MetaData) -> dict[str, sa.Table]:
    text, dbl = sa.String(200), sa.Double[float]()
    orders = sa.Table(
        "l1_orders", metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", text, nullable=False, unique=True),
        sa.Column("symbol", text, nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("qty", dbl, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason_code", sa.String(40), nullable=False),
        sa.Column("after_bar", sa.String(40)),
        sa.Column("received_at", sa.String(40), nullable=False),
        sa.Column("intent", sa.Text, nullable=False),
    )
    fills = sa.Table(
        "l1_fills", metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fill_id", text, nullable=False, unique=True),
        sa.Column("order_id", text, nullable=False),
        sa.Column("symbol", text, nullable=False),
        sa.Column("qty", dbl, nullable=False),
        sa.Column("price", dbl, nullable=False),
        sa.Column("fee", dbl, nullable=False),
        sa.Column("reference", dbl, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("bar_time", sa.String(40), nullable=False),
        sa.Column("stop_loss", dbl),
        sa.Column("take_profit", dbl),
        sa.Column("correlation_id", text, nullable=False),
    )
    reports = sa.Table(
        "l1_reports", metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("report_id", text, nullable=False, unique=True),
        sa.Column("order_id", text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("published", sa.Boolean, nullable=False, default=False),
    )
    meta = sa.Table(
        "l1_meta", metadata,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    return {"orders": orders, "fills": fills, "reports": reports, "meta": meta}


SYNC_MODES = ("normal", "full")


def _sqlite_pragmas(sync: str) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")     # readers never block; survives a killed process
        cur.execute(f"PRAGMA synchronous={sync.upper()}")  # NORMAL: fsync at checkpoints; FULL: every commit
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    return on_connect


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class _Sql:
    """The write statements, rendered once for the dialect (positional parameters, no per-call compile)."""

    def __init__(self, engine: sa.Engine, tables: dict[str, sa.Table]) -> None:
        style = engine.dialect.paramstyle
        if style not in ("qmark", "format", "pyformat"):
            raise ValueError(f"journal: DB-API paramstyle {style!r} of {engine.dialect.name} is not supported "
                             "(SQLite and PostgreSQL are)")
        ph = "?" if style == "qmark" else "%s"
        name = {k: engine.dialect.identifier_preparer.format_table(t) for k, t in tables.items()}

        def insert(table: str, columns: tuple[str, ...], key: str) -> str:
            return (f"INSERT INTO {name[table]} ({', '.join(columns)}) VALUES ({', '.join([ph] * len(columns))}) "
                    f"ON CONFLICT ({key}) DO NOTHING")

        self.order = insert("orders", ORDER_COLUMNS, "order_id")
        self.fill = insert("fills", FILL_COLUMNS, "fill_id")
        self.report = insert("reports", ("report_id", "order_id", "payload", "published"), "report_id")
        self.filled = f"UPDATE {name['orders']} SET status = {ph} WHERE order_id = {ph}"
        self.rejected = f"UPDATE {name['orders']} SET status = {ph}, reason_code = {ph} WHERE order_id = {ph}"
        self.published = f"UPDATE {name['reports']} SET published = {ph} WHERE report_id = {ph}"


ORDER_COLUMNS = ("order_id", "symbol", "side", "qty", "status", "reason_code", "after_bar", "received_at", "intent")
FILL_COLUMNS = ("fill_id", "order_id", "symbol", "qty", "price", "fee", "reference", "kind", "bar_time",
                "stop_loss", "take_profit", "correlation_id")


class Journal:
    """The L1 journal over one SQLAlchemy engine (``schema`` selects a PostgreSQL schema).

    Writes go through one held DB-API connection with statements rendered once. By default each
    write method is its own transaction, committed before it returns. With ``deferred = True``
    (what :class:`~l1_operational.bus_adapter.L1BusAdapter` sets) writes join one open transaction
    until :meth:`commit` (group commit: the adapter commits once per batch of orders / per bar,
    always before it publishes the reports). Reads commit what is pending first, so they see every
    write.

    ``sync`` (SQLite): ``"normal"`` (default; WAL, fsync at checkpoints: a committed transaction
    survives a killed process, the last ones may be lost on power failure or an OS crash) or
    ``"full"`` (fsync of the WAL at every commit: survives power loss too). PostgreSQL follows the
    server's ``synchronous_commit``.
    """

    def __init__(self, url: str, *, schema: str | None = None, sync: str = "normal") -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync={sync!r}: not one of {SYNC_MODES}")
        if url.startswith("sqlite:///"):
            from pathlib import Path

            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.url, self.schema, self.sync = url, schema, sync
        self.engine = sa.create_engine(url, future=True)
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self._sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas(sync))
        self._t = _tables(sa.MetaData(schema=schema))
        next(iter(self._t.values())).metadata.create_all(self.engine)
        self._sql = _Sql(self.engine, self._t)
        self.deferred = False
        self._raw: Any = None        # the held DB-API connection (pool proxy) for writes
        self._cur: Any = None
        self._open = False           # a transaction is open on it
        self._depth = 0              # savepoints open
        self.commits = 0

    def close(self) -> None:
        """Commit what is pending, then release the connections."""
        try:
            if self._raw is not None and self._depth == 0:
                self.flush()
        finally:
            if self._raw is not None:
                with contextlib.suppress(Exception):
                    self._raw.close()
            self._raw = self._cur = None
            self._open = False
            self.engine.dispose()

    # ------------------------------------------------------------ transactions
    def _begin(self) -> Any:
        """The write cursor, inside an open transaction."""
        if self._raw is None:
            self._raw = self.engine.raw_connection()
            self._cur = self._raw.cursor()
        if not self._open:
            if self._sqlite:
                self._cur.execute("BEGIN IMMEDIATE")  # take the write lock now (busy_timeout applies)
            self._open = True
        return self._cur

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        """One write method: committed at once, or left in the open transaction when deferred / in a savepoint."""
        cur = self._begin()
        try:
            yield cur
        except BaseException:
            if not self.deferred and self._depth == 0:
                self.rollback()
            raise
        if not self.deferred and self._depth == 0:
            self.commit()

    @property
    def in_transaction(self) -> bool:
        """Writes wait for :meth:`commit`."""
        return self._open

    def commit(self) -> None:
        """Commit the open transaction; nothing open: nothing to do."""
        if not self._open:
            return
        if self._depth:
            raise RuntimeError("journal.commit() inside a savepoint")
        try:
            self._raw.commit()
        except BaseException:
            self.rollback()
            raise
        self._open = False
        self.commits += 1

    def rollback(self) -> None:
        """Discard the open transaction; a connection that cannot even roll back is dropped (reconnects)."""
        if self._raw is None:
            return
        self._open, self._depth = False, 0
        try:
            self._raw.rollback()
        except Exception:
            with contextlib.suppress(Exception):
                self._raw.invalidate()
            self._raw = self._cur = None

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Writes inside are undone if the block raises (the rest of the open transaction stays)."""
        cur = self._begin()
        name = f"l1_sp{self._depth}"
        cur.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._open:
                cur.execute(f"ROLLBACK TO SAVEPOINT {name}")
                cur.execute(f"RELEASE SAVEPOINT {name}")
                if not self.deferred and self._depth == 0:
                    self.commit()
            raise
        self._depth -= 1
        cur.execute(f"RELEASE SAVEPOINT {name}")
        if not self.deferred and self._depth == 0:
            self.commit()

    def flush(self) -> None:
        """Commit pending writes (reads and writes through the engine do it first, to see them)."""
        if self._depth:
            raise RuntimeError("journal: read inside a savepoint (its writes are not committed yet)")
        self.commit()

    # ------------------------------------------------------------------ writes
    def record_order(self, intent: OrderIntent, *, status: str, reason: str, qty: float,
                     after_bar: datetime | None, received_at: datetime,
                     report: ExecutionReport | None = None) -> bool:
        """Insert the order (and its rejection report); ``False`` if the order_id is already journaled."""
        if status not in ORDER_STATUSES:
            raise ValueError(f"status={status!r}: not one of {ORDER_STATUSES}")
        row = (intent.order_id, intent.symbol, intent.side.value, qty, status, reason, _iso(after_bar),
               received_at.isoformat(), intent.to_json())
        with self._write() as cur:
            cur.execute(self._sql.order, row)
            if cur.rowcount != 1:
                return False
            if report is not None:
                self._insert_report(cur, report)
        return True

    def record_fill(self, fill: FillRecord, report: ExecutionReport, *, order_filled: bool) -> bool:
        """Fill + report (+ the order's status -> filled) atomically; ``False`` if the fill_id exists."""
        row = (fill.fill_id, fill.order_id, fill.symbol, fill.qty, fill.price, fill.fee, fill.reference, fill.kind,
               fill.bar_time.isoformat(), fill.stop_loss, fill.take_profit, fill.correlation_id)
        with self._write() as cur:
            cur.execute(self._sql.fill, row)
            if cur.rowcount != 1:
                return False
            if order_filled:
                cur.execute(self._sql.filled, ("filled", fill.order_id))
            self._insert_report(cur, report)
        return True

    def reject_accepted(self, order_id: str, reason: str, report: ExecutionReport) -> None:
        """An accepted order could not be filled on its bar (expired, balance): status -> rejected."""
        with self._write() as cur:
            cur.execute(self._sql.rejected, ("rejected", reason, order_id))
            self._insert_report(cur, report)

    def record_report(self, report: ExecutionReport) -> bool:
        with self._write() as cur:
            return self._insert_report(cur, report)

    def _insert_report(self, cur: Any, report: ExecutionReport) -> bool:
        cur.execute(self._sql.report, (report.report_id, report.order_id, report.to_json(), False))
        return bool(cur.rowcount == 1)

    def mark_published(self, report_ids: Iterable[str]) -> None:
        """Flag reports as on the bus; committed at once, also when deferred (what is still flagged
        unpublished when the process dies is re-sent at start, so this window stays as short as it can)."""
        rows = [(True, rid) for rid in report_ids]
        if rows:
            self._begin().executemany(self._sql.published, rows)
            if self._depth == 0:
                self.commit()

    def ensure_initial_balances(self, balances: Mapping[str, float]) -> dict[str, float]:
        """Store the initial balances on first start; afterwards return the stored ones."""
        self.flush()
        meta = self._t["meta"]
        with self.engine.begin() as conn:
            got = conn.execute(sa.select(meta.c.value).where(meta.c.key == "initial_balances")).scalar()
            if got is not None:
                return {k: float(v) for k, v in json.loads(got).items()}
            conn.execute(meta.insert().values(key="initial_balances", value=json.dumps(dict(balances))))
        return dict(balances)

    # ------------------------------------------------------------------- reads
    def has_order(self, order_id: str) -> bool:
        orders = self._t["orders"]
        self.flush()
        with self.engine.connect() as conn:
            return conn.execute(sa.select(orders.c.seq).where(orders.c.order_id == order_id)).first() is not None

    def order_ids(self) -> set[str]:
        self.flush()
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(self._t["orders"].c.order_id)).scalars())

    def order_statuses(self) -> dict[str, tuple[str, str]]:
        """order_id -> (status, reason_code)."""
        o = self._t["orders"]
        self.flush()
        with self.engine.connect() as conn:
            return {r.order_id: (r.status, r.reason_code)
                    for r in conn.execute(sa.select(o.c.order_id, o.c.status, o.c.reason_code))}

    def pending_orders(self) -> list[tuple[OrderIntent, float, datetime | None]]:
        """Accepted, not yet filled orders in arrival order: (intent, qty, after_bar)."""
        o = self._t["orders"]
        query = sa.select(o.c.intent, o.c.qty, o.c.after_bar).where(o.c.status == "accepted").order_by(o.c.seq)
        self.flush()
        with self.engine.connect() as conn:
            return [(OrderIntent.from_json(r.intent), r.qty, _time(r.after_bar)) for r in conn.execute(query)]

    def fills(self) -> list[FillRecord]:
        f = self._t["fills"]
        self.flush()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(f).order_by(f.c.seq)).mappings().all()
        return [FillRecord(**{k: v for k, v in r.items() if k not in ("seq", "bar_time")},
                           bar_time=datetime.fromisoformat(r["bar_time"])) for r in rows]

    def reports(self, *, unpublished_only: bool = False) -> list[ExecutionReport]:
        r = self._t["reports"]
        query = sa.select(r.c.payload).order_by(r.c.seq)
        if unpublished_only:
            query = query.where(r.c.published.is_(False))
        self.flush()
        with self.engine.connect() as conn:
            return [ExecutionReport.from_json(p) for p in conn.execute(query).scalars()]

    def rebuild_portfolio(self, initial_balances: Mapping[str, float], *, quote_asset: str) -> Portfolio:
        """Start-up and restart alike: initial balances, then every journaled fill in order."""
        portfolio = Portfolio(self.ensure_initial_balances(initial_balances), quote_asset=quote_asset)
        for fill in self.fills():
            portfolio.apply_fill(fill)
        return portfolio
