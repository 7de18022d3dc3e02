"""L1 -> L2: the account as L1's book holds it (:class:`AccountSnapshot`), for L2's recovery on (re)start.

L1 publishes one on ``l1.account`` at start (after its journal rebuild and its report outbox
re-send) and with each heartbeat. ``reports`` and ``recent_report_ids`` say how current it is:
the snapshot reflects exactly the ExecutionReports L1 had produced when it was taken, the last
of them being ``last_report_id``. Reports travel on another stream, so L2 compares a snapshot
with its mirror only when the last report it applied is that one (see
:mod:`l2_tactical.tactical_account`). :mod:`l2_tactical.messages` re-exports both classes.

>>> from datetime import datetime, timezone
>>> t = datetime(2025, 6, 2, tzinfo=timezone.utc)
>>> s = AccountSnapshot(sender="l1", timestamp=t, quote_asset="USDT", cash=9000.0, reports=3,
...                     recent_report_ids=("rep-a", "rep-b", "rep-c"),
...                     positions=(AccountPosition(symbol="BTCUSDT", qty=0.01, avg_price=100000.0,
...                                                stop_loss=98000.0, opened_at=t),))
>>> AccountSnapshot.from_json(s.to_json()) == s, s.last_report_id, s.position("BTCUSDT").qty
(True, 'rep-c', 0.01)
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime

from l2_tactical.message_codec import (
    SCHEMA_VERSION,
    Message,
    check_count,
    check_finite,
    check_text,
    check_time,
    fail,
    stable_id,
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AccountPosition(Message):
    """One open position in L1's book (travels inside an :class:`AccountSnapshot`, no schema of its own).

    ``qty`` is signed (spot L1: > 0); ``stop_loss`` / ``take_profit`` are the levels L1 guards
    (``None``: none); ``opened_at`` the bar it was (last) bought on; ``mark`` L1's last price.
    """

    symbol: str
    qty: float
    avg_price: float
    stop_loss: float | None = None
    take_profit: float | None = None
    opened_at: datetime | None = None
    mark: float | None = None

    def __post_init__(self) -> None:
        check_text(self, "symbol")
        check_finite(self, "qty")
        if self.qty == 0:
            fail("AccountPosition", "qty", self.qty, "an open position has a non-zero quantity")
        check_finite(self, "avg_price", "stop_loss", "take_profit", "mark", positive=True)
        check_time(self, "opened_at")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AccountSnapshot(Message):
    """L1's cash and open positions, and how many of its reports they reflect.

    ``reports``: ExecutionReports L1 had produced (journal-wide, over restarts) when the snapshot
    was taken; ``recent_report_ids``: the ids of the last of them, oldest first (at most what L1
    keeps, never more than ``reports``). ``sequence`` counts the snapshots of one L1 process.
    """

    sender: str
    timestamp: datetime
    quote_asset: str
    cash: float
    positions: tuple[AccountPosition, ...] = ()
    reports: int = 0
    recent_report_ids: tuple[str, ...] = ()
    sequence: int = 0
    snapshot_id: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_text(self, "sender", "quote_asset")
        check_time(self, "timestamp")
        check_finite(self, "cash")  # spot cash is >= 0 up to float residue: no silent clamp here
        check_count(self, "reports", "sequence")
        self._check_positions()
        self._check_report_ids()
        if not self.snapshot_id:
            sid = stable_id("snap", self.sender, self.sequence, self.timestamp.isoformat(), self.reports,
                            self.last_report_id)
            object.__setattr__(self, "snapshot_id", sid)

    def _check_positions(self) -> None:
        positions = self.positions
        if not isinstance(positions, tuple) or not all(isinstance(p, AccountPosition) for p in positions):
            fail("AccountSnapshot", "positions", positions, "must be a tuple of AccountPosition")
        symbols = [p.symbol for p in positions]
        if len(set(symbols)) != len(symbols):
            fail("AccountSnapshot", "positions", symbols, "holds a symbol twice")

    def _check_report_ids(self) -> None:
        ids = self.recent_report_ids
        if not isinstance(ids, tuple) or not all(isinstance(i, str) and i for i in ids):
            fail("AccountSnapshot", "recent_report_ids", ids, "must be a tuple of report ids")
        if len(set(ids)) != len(ids):
            fail("AccountSnapshot", "recent_report_ids", ids, "names a report twice")
        if len(ids) > self.reports:
            fail("AccountSnapshot", "recent_report_ids", ids, f"names more reports than reports={self.reports}")
        if self.reports and not ids:
            fail("AccountSnapshot", "recent_report_ids", ids, f"must name the last of reports={self.reports}")

    @property
    def last_report_id(self) -> str:
        """The last report this snapshot reflects (``""``: L1 had produced none)."""
        return self.recent_report_ids[-1] if self.recent_report_ids else ""

    def position(self, symbol: str) -> AccountPosition | None:
        return next((p for p in self.positions if p.symbol == symbol), None)

    def equity(self) -> float:
        """Cash plus every position at its mark (its average price when L1 has no mark)."""
        return self.cash + math.fsum(p.qty * (p.mark or p.avg_price) for p in self.positions)
