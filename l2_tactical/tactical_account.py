"""TacticalAccount: L2's copy of the account as L1 reports it (cash, positions, orders in flight).

L2 never fills an order itself: its cash and positions move only on L1's ExecutionReports
(:meth:`TacticalAccount.apply_report`, each report applied once). Orders sent and not yet
answered are ``working``; for sizing they count as filled (:meth:`TacticalAccount.with_working`),
so a signal repeated on the next bar does not double the position, and a rejection releases
them. A closed trade is credited to the signal source that opened it (``origin``) in the
shared :class:`~l2_tactical.loop_stats.LoopStats`.

Recovery on (re)start (:class:`AccountSync`, used by the bus adapter; the backtest never needs it):
L1's book is the book of record, and L2 rebuilds its mirror from L1's
:class:`~l2_tactical.messages.AccountSnapshot` — start-up and restart run the same path.

* Until a snapshot is adopted, L2 takes no new risk (the adapter's gate: ``ACCOUNT_NOT_SYNCED``)
  and the reports that arrive are held back, not applied to an empty mirror.
* The first snapshot (no order in flight) is adopted: cash, and each position with L1's stop
  as the stop L1 guards (``stop_sent``), so the loop marks, trails and sizes against it. The
  reports held back are then applied, except those the snapshot already reflects (its
  ``recent_report_ids``); so are the reports that arrive later.
* Later snapshots are compared with the mirror only when they are at the same point of L1's
  report stream (their ``last_report_id`` is the last report the mirror applied) and no order
  is in flight: reports and snapshots travel on different streams, and a snapshot ahead of or
  behind the mirror would disagree without anything being wrong.
* A disagreement beyond rounding (cash, or a symbol's quantity) raises a RiskAlert
  (``ACCOUNT_MISMATCH``, naming the symbol and both quantities) and L1's book is adopted: L1
  holds the journal and the exchange's answers, L2 only a copy. A position whose quantity and
  entry agree keeps L2's own tracking (trailed stop, excursions, bars held).

What only L2 knows survives a restart when the AccountSync has a
:class:`~l2_tactical.risk_store.RiskStore` (``l2 paper`` always gives it one): after the first
adoption the stored trading state (a HALTED kill switch stays HALTED until the operator resets it,
``l2 risk reset``), equity peak, today's start equity, trade count and ``daily_loss_hit``, and per
position still held with the same quantity and entry its bars held, origin and entry equity are
put back, with a RiskAlert saying what was restored (details in :mod:`l2_tactical.risk_store`); a
store with nothing in it (a new file) gives a WARNING RiskAlert naming the file: L2 starts fresh.
What a restart still cannot recover: the orders in flight (L1's reports and snapshot settle them),
the trailed stop and excursions of a position (L1's stop is taken), and, without a store or for a
position whose quantity or entry changed while L2 was down, the tracking above (bars held 0,
origin ``unknown``, entry equity = today's equity less the position's unrealised PnL; the risk
state restarts at the adopted account).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from l2_tactical.finrl_models.feature_processor import PositionState
from l2_tactical.loop_stats import LoopStats
from l2_tactical.messages import (
    AccountPosition,
    AccountSnapshot,
    AlertSeverity,
    ExecutionReport,
    ExecutionStatus,
    OrderIntent,
    ReasonCode,
    RiskAlert,
    Side,
    stable_id,
)
from l2_tactical.position_monitor import Position
from l2_tactical.risk_controls import (
    RiskState,
    apply_fill,
    mark_to_market,
    new_risk_state,
    record_order,
    replace_position,
)
from l2_tactical.risk_store import RiskStore, capture, fresh_alert, restore

log = logging.getLogger(__name__)

_SEEN_REPORTS = 100_000   # report ids remembered for deduplication
_REL = 1e-9               # L1 and L2 do the same arithmetic in another order: they agree to rounding
_CASH_ABS, _QTY_ABS = 1e-6, 1e-12


class TacticalAccount:
    """Cash, :class:`RiskState` (positions, equity, drawdown) and the orders L2 sent, as L1 reported them."""

    def __init__(self, cash: float, now: datetime, *, default_stop_pct: float, stats: LoopStats) -> None:
        self.cash = float(cash)
        self.state: RiskState = new_risk_state(self.cash, now)
        self.default_stop_pct, self.stats = default_stop_pct, stats
        self.working: dict[str, OrderIntent] = {}       # order_id -> intent sent, no report yet
        self.origin: dict[str, str] = {}                # symbol -> source of the signal that opened it
        self.stop_sent: dict[str, float] = {}           # symbol -> stop L1 guards (the entry order's)
        self.entry_equity: dict[str, float] = {}        # symbol -> equity when it was opened
        self.bars_held: dict[str, int] = {}
        self._reports_seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._sent: set[str] = set()
        self._flat: PositionState | None = None

    # ------------------------------------------------------------ L1's reports
    def apply_report(self, report: ExecutionReport) -> bool:
        """Apply one L1 report; False for a report already applied."""
        if report.report_id in self._reports_seen:
            return False
        self._reports_seen[report.report_id] = None
        if len(self._reports_seen) > _SEEN_REPORTS:
            self._reports_seen.popitem(last=False)
        intent = self.working.pop(report.order_id, None)
        if report.status is ExecutionStatus.REJECTED:
            self.stats.rejections[report.reason_code.value] += 1
            if intent is not None and not intent.reduce_only and intent.symbol not in self.state.positions:
                self.origin.pop(intent.symbol, None)
            return True
        sign = 1.0 if report.side is Side.BUY else -1.0
        qty, price = report.executed_qty, report.avg_price
        self.cash -= sign * qty * price + report.fees
        self.stats.fills += 1
        self.stats.fees += report.fees
        self._book(report.symbol, sign * qty, price, report.fees, intent, report.timestamp)
        return True

    def _book(self, symbol: str, signed_qty: float, price: float, fees: float, intent: OrderIntent | None,
              when: datetime) -> None:
        pos = self.state.positions.get(symbol)
        if pos is not None and signed_qty * pos.qty < 0:  # a reduction realises PnL
            self._realise(symbol, pos, signed_qty, price, fees)
        stop = intent.stop_loss if intent is not None else None
        if pos is None and stop is None:  # a fill L2 did not order: protect it like L1 would
            stop = price * (1.0 - math.copysign(self.default_stop_pct, signed_qty))
        tp = intent.take_profit if intent is not None else None
        self.state = apply_fill(self.state, symbol, signed_qty, price, now=when, stop_loss=stop, take_profit=tp)
        if pos is None and symbol in self.state.positions and stop is not None:
            self.stop_sent[symbol] = stop
            self.entry_equity[symbol], self.bars_held[symbol] = self.state.equity, 0
        if symbol not in self.state.positions:
            self.entry_equity.pop(symbol, None)
            self.bars_held.pop(symbol, None)

    def _realise(self, symbol: str, pos: Position, signed_qty: float, price: float, fees: float) -> None:
        closed = min(abs(signed_qty), abs(pos.qty))
        pnl = closed * (price - pos.entry_price) * pos.side
        self.stats.realised_pnl += pnl
        if abs(signed_qty) >= abs(pos.qty) - 1e-12:
            source = self.origin.pop(symbol, "unknown")
            self.stats.trades_closed[source] += 1
            self.stats.wins[source] += int(pnl - fees > 0)
            self.stop_sent.pop(symbol, None)

    # ------------------------------------------------------------ L2's orders
    def was_sent(self, order_id: str) -> bool:
        """True once an order with this id left L2 (the same signal never makes two orders)."""
        return order_id in self._sent

    def record_sent(self, order: OrderIntent, source: str) -> None:
        """``order`` leaves L2 now (opened by a signal of ``source``): it is working until L1 answers."""
        self.state = record_order(self.state, reduce_only=order.reduce_only)
        self.working[order.order_id] = order
        self._sent.add(order.order_id)
        if not order.reduce_only and order.symbol not in self.state.positions:
            self.origin[order.symbol] = source

    def with_working(self) -> RiskState:
        """The account with every order in flight counted as filled at its intent price."""
        state = self.state
        for o in self.working.values():
            sign = 1.0 if o.side is Side.BUY else -1.0
            state = apply_fill(state, o.symbol, sign * o.qty, o.price, now=o.timestamp, stop_loss=o.stop_loss,
                               take_profit=o.take_profit)
        return state

    # --------------------------------------------------------------- marking
    def mark_to_market(self, now: datetime, risk: Any, *, moved: Position | None = None) -> tuple[RiskAlert, ...]:
        """Equity at the positions' last prices -> RiskState (drawdown, daily loss, kill switch); its alerts.

        ``moved``: the open position of its symbol after one more bar (marked, maybe trailed): the bar is
        counted in ``bars_held`` and the position replaced in the same new state."""
        state = self.state
        positions = state.positions
        if moved is not None:
            self.bars_held[moved.symbol] = self.bars_held.get(moved.symbol, 0) + 1
            positions = dict(positions)
            positions[moved.symbol] = moved
        equity = self.cash + sum(p.qty * p.last_price for p in positions.values())
        if equity == state.equity and now.date() == state.day:  # nothing to re-mark (flat, same UTC day)
            if moved is not None:
                self.state = replace_position(state, moved.symbol, moved)
            return ()
        self.state, alerts = mark_to_market(state, equity, now, risk, positions=positions)
        return alerts

    def position_state(self, symbol: str) -> PositionState:
        """What the specialists are shown about ``symbol``'s position (L2's view of L1's fills)."""
        pos = self.state.positions.get(symbol)
        equity = self.state.equity
        if pos is None or equity <= 0:
            dd = self.state.drawdown
            if self._flat is None or self._flat.drawdown != dd:
                self._flat = PositionState(drawdown=dd)
            return self._flat
        entry_equity = self.entry_equity.get(symbol, equity)
        return PositionState(exposure=pos.qty * pos.last_price / equity,
                             unrealised_pnl=equity / entry_equity - 1.0 if entry_equity > 0 else 0.0,
                             bars_in_position=float(self.bars_held.get(symbol, 0)), drawdown=self.state.drawdown)

    # ------------------------------------------------------------ L1's book
    def differences(self, snapshot: AccountSnapshot) -> list[tuple[str, float, float]]:
        """Where the mirror and L1's snapshot disagree beyond rounding: ``("", L2's cash, L1's cash)``
        first, then ``(symbol, L2's qty, L1's qty)`` per symbol (0 where one side holds nothing)."""
        out: list[tuple[str, float, float]] = []
        if not math.isclose(self.cash, snapshot.cash, rel_tol=_REL, abs_tol=_CASH_ABS):
            out.append(("", self.cash, snapshot.cash))
        mine = {s: p.qty for s, p in self.state.positions.items()}
        theirs = {p.symbol: p.qty for p in snapshot.positions}
        for symbol in sorted(mine.keys() | theirs.keys()):
            a, b = mine.get(symbol, 0.0), theirs.get(symbol, 0.0)
            if not math.isclose(a, b, rel_tol=_REL, abs_tol=_QTY_ABS):
                out.append((symbol, a, b))
        return out

    def adopt(self, snapshot: AccountSnapshot, now: datetime, *, first: bool) -> None:
        """Make the mirror L1's book (see the module docstring). ``first``: L2 knew nothing before, so
        the risk state (equity peak, day) restarts at the adopted equity; a mirror that already agrees
        is left as it is."""
        kept = {p.symbol: self.state.positions[p.symbol] for p in snapshot.positions if self._agrees(p)}
        if not self.differences(snapshot) and len(kept) == len(self.state.positions):
            return
        for symbol in set(self.state.positions) - set(kept):
            for table in (self.stop_sent, self.entry_equity, self.bars_held, self.origin):
                table.pop(symbol, None)
        positions = {p.symbol: kept.get(p.symbol) or self._position_of(p, snapshot.timestamp)
                     for p in snapshot.positions}
        self.cash = snapshot.cash
        equity = self.cash + sum(p.qty * p.last_price for p in positions.values())
        for symbol, pos in positions.items():
            if symbol not in kept:
                self.stop_sent[symbol] = pos.stop_loss
                self.entry_equity[symbol] = equity - pos.unrealised_pnl()
                self.bars_held[symbol] = 0
        if first:
            self.state = dataclasses.replace(new_risk_state(equity, now), positions=positions)
        else:
            self.state = dataclasses.replace(self.state, positions=positions, equity=equity,
                                             peak_equity=max(self.state.peak_equity, equity))

    def _agrees(self, held: AccountPosition) -> bool:
        pos = self.state.positions.get(held.symbol)
        return pos is not None and math.isclose(pos.qty, held.qty, rel_tol=_REL, abs_tol=_QTY_ABS) \
            and math.isclose(pos.entry_price, held.avg_price, rel_tol=_REL)

    def _position_of(self, held: AccountPosition, when: datetime) -> Position:
        """L1's position as L2 tracks one; no stop at L1: L2's default stop, as for a fill it did not order."""
        stop = held.stop_loss
        if stop is None:
            stop = held.avg_price * (1.0 - math.copysign(self.default_stop_pct, held.qty))
        return Position(symbol=held.symbol, qty=held.qty, entry_price=held.avg_price, stop_loss=stop,
                        initial_stop=stop, opened_at=held.opened_at or when, take_profit=held.take_profit,
                        last_price=held.mark or held.avg_price)


class AccountSync:
    """Keeps a :class:`TacticalAccount` in line with L1's AccountSnapshots (see the module docstring).

    ``apply`` applies one report to the mirror (``TacticalLoop.on_report``: it also tells the signal
    generator about fills); ``early_limit`` bounds the reports held back before the first snapshot
    (beyond it the oldest go, and the next comparable snapshot repairs the mirror). ``store``: where
    L2's risk state survives a restart (:mod:`l2_tactical.risk_store`), restored on the first
    adoption (re-marked with the ``risk`` limits) and written by :meth:`save`.
    """

    def __init__(self, account: TacticalAccount, apply: Callable[[ExecutionReport], bool], *,
                 early_limit: int = 10_000, store: RiskStore | None = None, risk: Any = None) -> None:
        if store is not None and risk is None:
            raise ValueError("AccountSync(store=...) needs the risk limits (risk=config.risk) to restore with")
        self.account, self.apply, self.store, self.risk = account, apply, store, risk
        self.adopted: AccountSnapshot | None = None   # the snapshot the mirror was last rebuilt from
        self.position = ""                            # the last L1 report the mirror reflects ("": none)
        self.compared = self.mismatches = self.dropped_early = 0
        self._reflected: frozenset[str] = frozenset()
        self._early: collections.deque[ExecutionReport] = collections.deque(maxlen=early_limit)

    @property
    def synced(self) -> bool:
        """True once a snapshot from L1 was adopted (new risk may leave L2)."""
        return self.adopted is not None

    def on_report(self, report: ExecutionReport) -> bool:
        """One L1 report: held back before the first snapshot, skipped when the adopted snapshot
        already reflects it, else applied. True when it changed the mirror's position in the stream."""
        if self.adopted is None:
            if len(self._early) == self._early.maxlen and not self.dropped_early:
                log.warning("l2: %d reports held back and still no account snapshot from L1: dropping the oldest "
                            "(the first comparable snapshot repairs the mirror)", len(self._early))
            self.dropped_early += len(self._early) == self._early.maxlen
            self._early.append(report)
            return False
        if report.report_id in self._reflected or not self.apply(report):
            return False
        self.position = report.report_id
        return True

    def on_snapshot(self, snapshot: AccountSnapshot, now: datetime) -> tuple[RiskAlert, ...]:
        """Adopt the first snapshot, compare the later ones (see the module docstring); the alerts raised."""
        if self.account.working:
            return ()  # an order in flight: its report moves the mirror first
        if self.adopted is None:
            self._adopt(snapshot, now, first=True)
            restored = self._restore(now)
            early, self._early = list(self._early), collections.deque(maxlen=self._early.maxlen)
            for report in early:
                self.on_report(report)
            log.info("l2: account adopted from L1 snapshot %d: cash %.2f, positions %s, after report %r",
                     snapshot.sequence, snapshot.cash, {p.symbol: p.qty for p in snapshot.positions},
                     snapshot.last_report_id)
            self.save(now)
            return restored
        if snapshot.last_report_id != self.position:
            return ()  # ahead of or behind the mirror in L1's report stream: not comparable
        self.compared += 1
        diffs = self.account.differences(snapshot)
        if not diffs:
            return ()
        self.mismatches += 1
        alerts = tuple(mismatch_alert(symbol, mine, theirs, snapshot, now) for symbol, mine, theirs in diffs)
        self._adopt(snapshot, now, first=False)
        return alerts

    def _restore(self, now: datetime) -> tuple[RiskAlert, ...]:
        """Put the stored risk state back (no store: nothing; an empty one: a WARNING that L2 starts fresh)."""
        if self.store is None:
            return ()
        stored = self.store.load()
        if stored is None:
            return (fresh_alert(self.store.name, now),)
        return restore(self.account, stored, now, self.risk, source=self.store.name)

    def save(self, now: datetime) -> bool:
        """Write the risk state to the store if it changed (True when written); nothing before L1's
        account is adopted (the fresh state then must never overwrite a stored one)."""
        if self.store is None or self.adopted is None:
            return False
        return self.store.save(capture(self.account), now)

    def _adopt(self, snapshot: AccountSnapshot, now: datetime, *, first: bool) -> None:
        self.account.adopt(snapshot, now, first=first)
        self.adopted, self.position = snapshot, snapshot.last_report_id
        self._reflected = frozenset(snapshot.recent_report_ids)


def mismatch_alert(symbol: str, mine: float, theirs: float, snapshot: AccountSnapshot, now: datetime) -> RiskAlert:
    """The RiskAlert for one disagreement (``symbol`` "" = cash): ``value`` is L2's number, ``limit`` L1's."""
    what = f"{symbol} quantity" if symbol else f"cash ({snapshot.quote_asset})"
    code = ReasonCode.ACCOUNT_MISMATCH
    return RiskAlert(severity=AlertSeverity.CRITICAL if symbol else AlertSeverity.WARNING, code=code, timestamp=now,
                     symbol=symbol, value=mine, limit=theirs,
                     alert_id=stable_id("alr", code.value, symbol, snapshot.snapshot_id),
                     message=f"{what}: L2's mirror has {mine:.10g}, L1's book {theirs:.10g} (L1 snapshot "
                             f"{snapshot.sequence} after report {snapshot.last_report_id or 'none'}); "
                             "L1's book adopted")
