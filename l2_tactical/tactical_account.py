"""TacticalAccount: L2's copy of the account as L1 reports it (cash, positions, orders in flight).

L2 never fills an order itself: its cash and positions move only on L1's ExecutionReports
(:meth:`TacticalAccount.apply_report`, each report applied once). Orders sent and not yet
answered are ``working``; for sizing they count as filled (:meth:`TacticalAccount.with_working`),
so a signal repeated on the next bar does not double the position, and a rejection releases
them. A closed trade is credited to the signal source that opened it (``origin``) in the
shared :class:`~l2_tactical.loop_stats.LoopStats`.
"""

from __future__ import annotations

import collections
import math
from datetime import datetime
from typing import Any

from l2_tactical.finrl_models.feature_processor import PositionState
from l2_tactical.loop_stats import LoopStats
from l2_tactical.messages import ExecutionReport, ExecutionStatus, OrderIntent, RiskAlert, Side
from l2_tactical.position_monitor import Position
from l2_tactical.risk_controls import (
    RiskState,
    apply_fill,
    mark_to_market,
    new_risk_state,
    record_order,
    replace_position,
)

_SEEN_REPORTS = 100_000   # report ids remembered for deduplication


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
    def hold(self, symbol: str, moved: Position) -> None:
        """One more bar in ``symbol``'s open position, now marked (and maybe trailed) as ``moved``."""
        self.bars_held[symbol] = self.bars_held.get(symbol, 0) + 1
        self.state = replace_position(self.state, symbol, moved)

    def mark_to_market(self, now: datetime, risk: Any) -> tuple[RiskAlert, ...]:
        """Equity at the positions' last prices -> RiskState (drawdown, daily loss, kill switch); its alerts."""
        equity = self.cash + sum(p.qty * p.last_price for p in self.state.positions.values())
        if equity == self.state.equity and now.date() == self.state.day:
            return ()  # nothing to re-mark (flat, same UTC day)
        self.state, alerts = mark_to_market(self.state, equity, now, risk)
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
