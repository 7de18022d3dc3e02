"""RiskStore: L2's risk state and per-position tracking, kept across restarts (a small SQLite file).

L1's book is the book of record for cash and positions (see :mod:`l2_tactical.tactical_account`);
what only L2 knows is kept here: the trading state (a HALTED kill switch stays HALTED), the equity
peak, the UTC day with its start equity, trade count and ``daily_loss_hit``, and per open position
the bars held, the source that opened it (``origin``) and the equity when it was opened.

* :func:`capture` reads that from a :class:`~l2_tactical.tactical_account.TacticalAccount`;
  :meth:`RiskStore.save` writes it in one small transaction, and only when it differs from what
  was last written (a flat account on a quiet bar writes nothing).
* :func:`restore` puts it back on the first adoption of L1's snapshot (the AccountSync calls it):
  the trading state as stored, then re-marked at the current equity (so REDUCING is recomputed
  from the restored peak, and a HALTED state never clears by itself); the peak is the larger of
  the stored one and the current equity; the day's figures only when the stored UTC day is
  today (else a new day starts at the current equity); and each symbol's tracking only when L1
  still holds it with the same quantity and entry price (else it is dropped).
* :meth:`RiskStore.reset_kill_switch` is the operator's way out of a stored HALTED state
  (``l2 risk reset``, ``l2 paper --reset-kill-switch``): ACTIVE, and the peak restarts at the
  last stored equity (what :func:`~l2_tactical.risk_controls.reset_kill_switch` does); the reset
  is written to the file's ``events`` with the state changes. Reset a stopped L2: a running one
  rewrites its own state at its next change.

The file is marked as this store in its SQLite header (``PRAGMA application_id`` =
:data:`APPLICATION_ID`, ``user_version`` = :data:`SCHEMA_VERSION`); both are read, and the exact
tables and columns checked, before anything is written. A file that is not SQLite, not marked, of
another version, with other tables or with a value out of range raises :class:`StateStoreError`
naming the file and what is wrong, never a fresh start; only a missing or empty (0-byte) file
becomes a new store, and only for a writer. One writer per file: a writer holds an exclusive lock
(``fcntl.flock`` on ``<file>.lock``, with its pid in it) from opening to :meth:`RiskStore.close`,
and a second writer (another L2, ``l2 risk reset`` while an L2 runs) is refused with a
:class:`StateStoreError` saying the file is in use. Readers (``l2 risk show``,
:meth:`RiskStore.existing`) open the file read-only and take no lock. ``path=None`` keeps the store
in memory (tests; the backtest never restarts and uses no store). Writes use SQLite's WAL journal
with ``synchronous=NORMAL``: a committed state survives the L2 process dying; an operating-system
crash may lose the last writes.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import math
import os
import sqlite3
from datetime import date, datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from l2_tactical.errors import DataError
from l2_tactical.messages import AlertSeverity, ReasonCode, RiskAlert, TradingState
from l2_tactical.risk_controls import mark_to_market

log = logging.getLogger(__name__)

APPLICATION_ID = 0x4C325253   # "L2RS": SQLite's header field saying whose file this is
SCHEMA_VERSION = 1            # SQLite's user_version
_REL = 1e-9   # the quantity and entry L1 reports agree with what was stored to rounding
_TABLES = """
CREATE TABLE risk_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), saved_at TEXT NOT NULL, trading_state TEXT NOT NULL,
    equity REAL NOT NULL, peak_equity REAL NOT NULL, day TEXT NOT NULL, day_start_equity REAL NOT NULL,
    trades_today INTEGER NOT NULL, daily_loss_hit INTEGER NOT NULL);
CREATE TABLE held (
    symbol TEXT PRIMARY KEY, qty REAL NOT NULL, entry_price REAL NOT NULL, bars_held INTEGER NOT NULL,
    origin TEXT NOT NULL, entry_equity REAL NOT NULL);
CREATE TABLE events (at TEXT NOT NULL, event TEXT NOT NULL);
"""
_COLUMNS = {"risk_state": ("id", "saved_at", "trading_state", "equity", "peak_equity", "day", "day_start_equity",
                           "trades_today", "daily_loss_hit"),
            "held": ("symbol", "qty", "entry_price", "bars_held", "origin", "entry_equity"),
            "events": ("at", "event")}


class StateStoreError(DataError):
    """L2's risk state file cannot be read or written (names the file; exit code 4)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HeldRecord:
    """L2's own tracking of one open position, with the quantity and entry it belongs to."""

    symbol: str
    qty: float
    entry_price: float
    bars_held: int
    origin: str
    entry_equity: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StoredRisk:
    """What survives a restart (see the module docstring); ``saved_at`` is not compared."""

    trading_state: TradingState
    equity: float
    peak_equity: float
    day: date
    day_start_equity: float
    trades_today: int
    daily_loss_hit: bool
    held: tuple[HeldRecord, ...] = ()
    saved_at: datetime | None = dataclasses.field(default=None, compare=False)


def capture(account: Any) -> StoredRisk:
    """The durable part of a TacticalAccount's state."""
    s = account.state
    held = tuple(HeldRecord(symbol=sym, qty=p.qty, entry_price=p.entry_price,
                            bars_held=account.bars_held.get(sym, 0), origin=account.origin.get(sym, "unknown"),
                            entry_equity=account.entry_equity.get(sym, s.equity))
                 for sym, p in sorted(s.positions.items()))
    return StoredRisk(trading_state=s.trading_state, equity=s.equity, peak_equity=s.peak_equity, day=s.day,
                      day_start_equity=s.day_start_equity, trades_today=s.trades_today,
                      daily_loss_hit=s.daily_loss_hit, held=held)


def restore(account: Any, stored: StoredRisk, now: datetime, risk: Any, *, source: str = "") -> tuple[RiskAlert, ...]:
    """Put ``stored`` back on an account that has just adopted L1's book (see the module docstring);
    the alerts: one saying what was restored, then any the re-marking raised (REDUCING, HALTED, daily loss)."""
    s = account.state
    s = dataclasses.replace(s, trading_state=stored.trading_state, peak_equity=max(stored.peak_equity, s.equity),
                            day=stored.day, day_start_equity=stored.day_start_equity,
                            trades_today=stored.trades_today, daily_loss_hit=stored.daily_loss_hit)
    same_day = stored.day == now.date()
    account.state, marked = mark_to_market(s, s.equity, now, risk)  # a different UTC day starts afresh here
    kept: list[str] = []
    dropped = []
    for rec in stored.held:
        pos = account.state.positions.get(rec.symbol)
        if pos is not None and math.isclose(pos.qty, rec.qty, rel_tol=_REL) \
                and math.isclose(pos.entry_price, rec.entry_price, rel_tol=_REL):
            account.bars_held[rec.symbol], account.entry_equity[rec.symbol] = rec.bars_held, rec.entry_equity
            account.origin[rec.symbol] = rec.origin
            kept.append(f"{rec.symbol} ({rec.bars_held} bars, opened by {rec.origin})")
        else:
            dropped.append(rec.symbol)
    return (restored_alert(account.state, stored, now, same_day, kept, dropped, source), *marked)


def restored_alert(state: Any, stored: StoredRisk, now: datetime, same_day: bool, kept: list[str],
                   dropped: list[str], source: str) -> RiskAlert:
    """WARNING when a limit carried over (kill switch, today's daily loss), else INFO."""
    parts = [f"trading {state.trading_state.value}", f"equity peak {state.peak_equity:,.2f}",
             f"drawdown {state.drawdown:.2%}"]
    if same_day:
        parts.append(f"today's start equity {state.day_start_equity:,.2f}, {state.trades_today} trade(s)"
                     + (", daily loss limit hit" if state.daily_loss_hit else ""))
    else:
        parts.append(f"stored day {stored.day.isoformat()} is not today ({now.date().isoformat()}): a new day starts")
    parts.append("positions tracked: " + (", ".join(kept) or "none"))
    if dropped:
        parts.append("no longer held as stored: " + ", ".join(dropped))
    if state.trading_state is TradingState.HALTED:
        severity, code = AlertSeverity.WARNING, ReasonCode.DRAWDOWN_KILL_SWITCH
    elif state.daily_loss_hit:
        severity, code = AlertSeverity.WARNING, ReasonCode.DAILY_LOSS_LIMIT
    else:
        severity, code = AlertSeverity.INFO, ReasonCode.STATE_RESTORED
    where = f" from {source}" if source else ""
    return RiskAlert(severity=severity, code=code, timestamp=now, value=state.drawdown,
                     message=f"L2 risk state restored{where}: " + "; ".join(parts))


def fresh_alert(store_name: str, now: datetime) -> RiskAlert:
    """The WARNING for a first adoption with nothing stored: the limits start over from L1's account."""
    return RiskAlert(severity=AlertSeverity.WARNING, code=ReasonCode.STATE_RESTORED, timestamp=now,
                     message=f"no stored risk state in {store_name}: starting fresh (kill switch, equity peak and "
                             "today's loss budget start from L1's account now)")


class RiskStore:
    """The SQLite file (``path``; ``None``: in memory); see the module docstring. ``writable``: a
    writer (locks the file; ``create``: a missing or empty file becomes a new store), else read-only.
    Opening reads and checks it; a failed open closes what it opened."""

    def __init__(self, path: str | Path | None, *, writable: bool = True, create: bool = True) -> None:
        self.path = None if path is None else Path(path)
        self.name = str(self.path.absolute()) if self.path is not None else ":memory:"
        self.writable = writable
        self._last: StoredRisk | None = None
        self.saves = 0
        self._lock: IO[str] | None = None
        try:
            self._db = self._open(create)
            self._last = self.load()
        except BaseException:
            self.close()
            raise

    @classmethod
    def existing(cls, path: str | Path, *, writable: bool = False) -> RiskStore:
        """Open a store that must exist already (the operator's commands never create one); read-only
        unless ``writable`` (then locked: refused while an L2 runs on it)."""
        if not Path(path).is_file():
            raise StateStoreError("no L2 risk state store here (L2 writes it once it adopted L1's account)",
                                  file=str(Path(path).absolute()))
        return cls(path, writable=writable, create=False)

    def _error(self, message: str) -> StateStoreError:
        return StateStoreError(message, file=self.name)

    def _open(self, create: bool) -> sqlite3.Connection:
        """The checked connection (closed again when the check fails)."""
        db: sqlite3.Connection | None = None
        try:
            if self.path is None:
                db = sqlite3.connect(":memory:")
            elif self.writable:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock = self._take_lock()
                db = sqlite3.connect(self.name, timeout=5.0)
            else:
                db = sqlite3.connect(f"file:{quote(self.name)}?mode=ro", uri=True, timeout=5.0)
            self._check(db, create)
            return db
        except BaseException as exc:
            if db is not None:
                db.close()
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise self._error(f"cannot open L2's risk state store: {exc}") from None
            raise

    def _take_lock(self) -> IO[str]:
        """The writer's exclusive lock on ``<file>.lock`` (released by close, or by the process ending)."""
        lock = f"{self.name}.lock"
        fh = open(lock, "a+")  # noqa: SIM115 - held open for the store's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise self._error(f"in use: {holder} holds {lock} (one writer per risk state file: stop that L2 "
                              "first)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"L2 pid {os.getpid()}\n")
        fh.flush()
        return fh

    def _check(self, db: sqlite3.Connection, create: bool) -> None:
        """Read the marker, version and tables before anything is written; a new store in an empty file."""
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        objects = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app == 0 and version == 0 and objects == 0:
            if not (create and self.writable):
                raise self._error("empty file, not an L2 risk state store (nothing stored yet)")
            db.executescript(f"BEGIN; PRAGMA application_id={APPLICATION_ID}; "
                             f"PRAGMA user_version={SCHEMA_VERSION}; {_TABLES} COMMIT;")
            app, version = APPLICATION_ID, SCHEMA_VERSION
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app != APPLICATION_ID:
            raise self._error(f"not an L2 risk state store (application_id {app:#x}, expected "
                              f"{APPLICATION_ID:#x}; tables {sorted(tables)})")
        if version != SCHEMA_VERSION:
            raise self._error(f"schema version {version}: this L2 reads version {SCHEMA_VERSION}")
        columns = {t: tuple(r[0] for r in db.execute("SELECT name FROM pragma_table_info(?) ORDER BY cid", (t,)))
                   for t in tables}
        wrong = sorted(t for t in columns.keys() | _COLUMNS.keys() if columns.get(t) != _COLUMNS.get(t))
        if wrong:
            raise self._error(f"table(s) {wrong} missing, extra or with other columns than schema version "
                              f"{SCHEMA_VERSION} has (tables here: {sorted(tables)})")
        if self.path is not None and self.writable:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")

    def load(self) -> StoredRisk | None:
        """The stored state (``None``: nothing stored yet)."""
        try:
            row = self._db.execute("SELECT saved_at, trading_state, equity, peak_equity, day, day_start_equity, "
                                   "trades_today, daily_loss_hit FROM risk_state WHERE id = 1").fetchone()
            held = self._db.execute("SELECT symbol, qty, entry_price, bars_held, origin, entry_equity FROM held "
                                    "ORDER BY symbol").fetchall()
        except sqlite3.Error as exc:
            raise self._error(f"cannot read L2's risk state: {exc}") from None
        return None if row is None else self._decode(row, held)

    def _decode(self, row: tuple[Any, ...], held: list[tuple[Any, ...]]) -> StoredRisk:
        saved_at, state, equity, peak, day, day_start, trades, hit = row
        try:
            trading = TradingState(state)
        except ValueError:
            raise self._error(f"risk_state.trading_state={state!r}: not one of "
                              f"{[t.value for t in TradingState]}") from None
        records = tuple(HeldRecord(symbol=self._text("held.symbol", s), qty=self._number("held.qty", q),
                                   entry_price=self._number("held.entry_price", e, positive=True),
                                   bars_held=self._count("held.bars_held", b), origin=self._text("held.origin", o),
                                   entry_equity=self._number("held.entry_equity", ee))
                        for s, q, e, b, o, ee in held)
        return StoredRisk(trading_state=trading, equity=self._number("risk_state.equity", equity),
                          peak_equity=self._number("risk_state.peak_equity", peak),
                          day=self._when("risk_state.day", day, date.fromisoformat),
                          day_start_equity=self._number("risk_state.day_start_equity", day_start),
                          trades_today=self._count("risk_state.trades_today", trades),
                          daily_loss_hit=bool(self._count("risk_state.daily_loss_hit", hit)), held=records,
                          saved_at=self._when("risk_state.saved_at", saved_at, datetime.fromisoformat))

    def _number(self, column: str, v: Any, *, positive: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            raise self._error(f"{column}={v!r}: must be a finite{' positive' if positive else ''} number")
        return float(v)

    def _count(self, column: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self._error(f"{column}={v!r}: must be a whole number >= 0")
        return v

    def _text(self, column: str, v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise self._error(f"{column}={v!r}: must be a non-empty text")
        return v

    def _when(self, column: str, v: Any, parse: Any) -> Any:
        try:
            return parse(v)
        except (TypeError, ValueError):
            raise self._error(f"{column}={v!r}: not an ISO date/time") from None

    def save(self, state: StoredRisk, now: datetime) -> bool:
        """Write ``state`` (one transaction) unless it is what was last written; True when written."""
        if state == self._last:
            return False
        try:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO risk_state VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (now.isoformat(), state.trading_state.value, state.equity, state.peak_equity,
                     state.day.isoformat(), state.day_start_equity, state.trades_today, int(state.daily_loss_hit)))
                self._db.execute("DELETE FROM held")
                self._db.executemany("INSERT INTO held VALUES (?, ?, ?, ?, ?, ?)",
                                     [(h.symbol, h.qty, h.entry_price, h.bars_held, h.origin, h.entry_equity)
                                      for h in state.held])
                if self._last is None or state.trading_state is not self._last.trading_state:
                    self._db.execute("INSERT INTO events VALUES (?, ?)",
                                     (now.isoformat(), f"trading state {state.trading_state.value}"))
        except sqlite3.Error as exc:
            raise self._error(f"cannot write L2's risk state: {exc}") from None
        self._last = dataclasses.replace(state, saved_at=now)
        self.saves += 1
        return True

    def reset_kill_switch(self, who: str = "operator") -> StoredRisk | None:
        """Clear a stored HALTED state: ACTIVE, the peak reset to the stored equity. Returns the state
        before, or ``None`` when it was not HALTED (nothing written)."""
        if not self.writable:
            raise self._error("opened read-only: the kill switch cannot be reset through it")
        before = self.load()
        if before is None or before.trading_state is not TradingState.HALTED:
            return None
        now = datetime.now(timezone.utc)
        after = dataclasses.replace(before, trading_state=TradingState.ACTIVE, peak_equity=before.equity)
        self._last = None
        self.save(after, now)
        self.event(now, f"kill switch reset by {who} (was halted, peak {before.peak_equity:,.2f}, "
                        f"equity {before.equity:,.2f})")
        log.warning("kill switch reset by %s in %s (peak %.2f -> %.2f)", who, self.name, before.peak_equity,
                    before.equity)
        return before

    def event(self, now: datetime, text: str) -> None:
        try:
            with self._db:
                self._db.execute("INSERT INTO events VALUES (?, ?)", (now.isoformat(), text))
        except sqlite3.Error as exc:
            raise self._error(f"cannot write L2's risk state: {exc}") from None

    def events(self, limit: int = 10) -> list[tuple[str, str]]:
        """The last ``limit`` events (trading state changes, resets), oldest first."""
        try:
            rows = self._db.execute("SELECT at, event FROM events ORDER BY rowid DESC LIMIT ?", (limit,)).fetchall()
        except sqlite3.Error as exc:
            raise self._error(f"cannot read L2's risk state: {exc}") from None
        return [(str(a), str(e)) for a, e in reversed(rows)]

    def close(self) -> None:
        """Close the file and release the writer's lock (again: nothing happens)."""
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
