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

A fill, the order's status change and its report are written in ONE transaction.
The portfolio is never stored: :meth:`Journal.rebuild_portfolio` replays the fills through
:meth:`Portfolio.apply_fill`, the code path of a fresh start (where there are none).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")     # durable across a killed process, readers never block
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class Journal:
    """The L1 journal over one SQLAlchemy engine (``schema`` selects a PostgreSQL schema)."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        if url.startswith("sqlite:///"):
            from pathlib import Path

            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.url, self.schema = url, schema
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._t = _tables(sa.MetaData(schema=schema))
        next(iter(self._t.values())).metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ writes
    def record_order(self, intent: OrderIntent, *, status: str, reason: str, qty: float,
                     after_bar: datetime | None, received_at: datetime,
                     report: ExecutionReport | None = None) -> bool:
        """Insert the order (and its rejection report); ``False`` if the order_id is already journaled."""
        if status not in ORDER_STATUSES:
            raise ValueError(f"status={status!r}: not one of {ORDER_STATUSES}")
        row = {"order_id": intent.order_id, "symbol": intent.symbol, "side": intent.side.value, "qty": qty,
               "status": status, "reason_code": reason, "after_bar": _iso(after_bar),
               "received_at": received_at.isoformat(), "intent": intent.to_json()}
        try:
            with self.engine.begin() as conn:
                conn.execute(self._t["orders"].insert().values(**row))
                if report is not None:
                    self._insert_report(conn, report)
        except IntegrityError:
            return False
        return True

    def record_fill(self, fill: FillRecord, report: ExecutionReport, *, order_filled: bool) -> bool:
        """Fill + report (+ the order's status -> filled) atomically; ``False`` if the fill_id exists."""
        row = {"fill_id": fill.fill_id, "order_id": fill.order_id, "symbol": fill.symbol, "qty": fill.qty,
               "price": fill.price, "fee": fill.fee, "reference": fill.reference, "kind": fill.kind,
               "bar_time": fill.bar_time.isoformat(), "stop_loss": fill.stop_loss,
               "take_profit": fill.take_profit, "correlation_id": fill.correlation_id}
        orders = self._t["orders"]
        try:
            with self.engine.begin() as conn:
                conn.execute(self._t["fills"].insert().values(**row))
                if order_filled:
                    conn.execute(orders.update().where(orders.c.order_id == fill.order_id)
                                 .values(status="filled"))
                self._insert_report(conn, report)
        except IntegrityError:
            return False
        return True

    def reject_accepted(self, order_id: str, reason: str, report: ExecutionReport) -> None:
        """An accepted order could not be filled on its bar (expired, balance): status -> rejected."""
        orders = self._t["orders"]
        with self.engine.begin() as conn:
            conn.execute(orders.update().where(orders.c.order_id == order_id)
                         .values(status="rejected", reason_code=reason))
            self._insert_report(conn, report)

    def record_report(self, report: ExecutionReport) -> bool:
        try:
            with self.engine.begin() as conn:
                self._insert_report(conn, report)
        except IntegrityError:
            return False
        return True

    def _insert_report(self, conn: sa.Connection, report: ExecutionReport) -> None:
        conn.execute(self._t["reports"].insert().values(
            report_id=report.report_id, order_id=report.order_id, payload=report.to_json(), published=False))

    def mark_published(self, report_ids: Iterable[str]) -> None:
        ids = list(report_ids)
        if not ids:
            return
        reports = self._t["reports"]
        with self.engine.begin() as conn:
            conn.execute(reports.update().where(reports.c.report_id.in_(ids)).values(published=True))

    def ensure_initial_balances(self, balances: Mapping[str, float]) -> dict[str, float]:
        """Store the initial balances on first start; afterwards return the stored ones."""
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
        with self.engine.connect() as conn:
            return conn.execute(sa.select(orders.c.seq).where(orders.c.order_id == order_id)).first() is not None

    def order_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(self._t["orders"].c.order_id)).scalars())

    def order_statuses(self) -> dict[str, tuple[str, str]]:
        """order_id -> (status, reason_code)."""
        o = self._t["orders"]
        with self.engine.connect() as conn:
            return {r.order_id: (r.status, r.reason_code)
                    for r in conn.execute(sa.select(o.c.order_id, o.c.status, o.c.reason_code))}

    def pending_orders(self) -> list[tuple[OrderIntent, float, datetime | None]]:
        """Accepted, not yet filled orders in arrival order: (intent, qty, after_bar)."""
        o = self._t["orders"]
        query = sa.select(o.c.intent, o.c.qty, o.c.after_bar).where(o.c.status == "accepted").order_by(o.c.seq)
        with self.engine.connect() as conn:
            return [(OrderIntent.from_json(r.intent), r.qty, _time(r.after_bar)) for r in conn.execute(query)]

    def fills(self) -> list[FillRecord]:
        f = self._t["fills"]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(f).order_by(f.c.seq)).mappings().all()
        return [FillRecord(**{k: v for k, v in r.items() if k not in ("seq", "bar_time")},
                           bar_time=datetime.fromisoformat(r["bar_time"])) for r in rows]

    def reports(self, *, unpublished_only: bool = False) -> list[ExecutionReport]:
        r = self._t["reports"]
        query = sa.select(r.c.payload).order_by(r.c.seq)
        if unpublished_only:
            query = query.where(r.c.published.is_(False))
        with self.engine.connect() as conn:
            return [ExecutionReport.from_json(p) for p in conn.execute(query).scalars()]

    def rebuild_portfolio(self, initial_balances: Mapping[str, float], *, quote_asset: str) -> Portfolio:
        """Start-up and restart alike: initial balances, then every journaled fill in order."""
        portfolio = Portfolio(self.ensure_initial_balances(initial_balances), quote_asset=quote_asset)
        for fill in self.fills():
            portfolio.apply_fill(fill)
        return portfolio
