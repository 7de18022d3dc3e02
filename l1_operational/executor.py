"""PaperExecutor: validates OrderIntents, fills them through THE simulator, guards stops, journals all.

Life of an order (a transition table, journaled at every step)::

    received --check_order--> rejected (reason code; a report goes out at once)
             \\-------------> accepted --first fill bar--> filled (FILLED report, slippage and fees)
                                        \\--------------> rejected (EXPIRED / INSUFFICIENT_BALANCE at fill time)

* **Fill bar.** A market order fills at the OPEN of the first bar of its symbol that opens
  after the last bar L1 had seen when it accepted the order, and not before the intent's
  ``timestamp`` (the decision time: L2 decides once a bar has closed, so its timestamp is at
  or after that close). Never at a price the deciding side had already seen. Prices, fees and
  slippage come from :func:`l2_tactical.execution.market_fill` only.
* **Stops.** On every bar each open position is checked with
  :func:`l2_tactical.execution.stop_exit` (stop first when both levels are inside the bar;
  a gap fills at the open) and closed with :func:`l2_tactical.execution.exit_fill`.
  The bar a position was bought on is checked too (the fill is at its open).
* **Exactly once.** Order ids and fill ids are UNIQUE in the journal; the portfolio is only
  changed after the journal committed the fill, and is rebuilt from the journal at start.
  Replaying bars that were already processed (a restarted replay) changes nothing: pending
  orders keep their journaled ``after_bar`` and positions only look at bars from ``since``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from l1_operational.datafeed import Bar
from l1_operational.order_manager import AccountView, OrderDecision, check_order, intent_from_payload
from l1_operational.portfolio import DUST, FillRecord, Portfolio
from l2_tactical.execution import Costs, Fill, exit_fill, market_fill, stop_exit
from l2_tactical.messages import (
    ExecutionReport,
    ExecutionStatus,
    OrderIntent,
    ReasonCode,
    Side,
    order_id_for,
    stable_id,
)

if TYPE_CHECKING:
    from l1_operational.journal import Journal
    from l2_tactical.clock import Clock


@dataclasses.dataclass(frozen=True, slots=True)
class PendingOrder:
    intent: OrderIntent
    qty: float
    after_bar: datetime | None


@dataclasses.dataclass
class ExecutorStats:
    received: int = 0
    filled: int = 0
    exits: int = 0
    rejected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    fees: float = 0.0
    slippage_bps_sum: float = 0.0

    @property
    def avg_slippage_bps(self) -> float:
        n = self.filled + self.exits
        return self.slippage_bps_sum / n if n else 0.0


class PaperExecutor:
    """L1 in PAPER mode; the same object backs replay, live-data paper trading and tests."""

    def __init__(self, *, journal: Journal, symbols: Mapping[str, Any], costs: Costs,
                 initial_balances: Mapping[str, float], quote_asset: str, clock: Clock) -> None:
        self.journal, self.symbols, self.costs, self.clock = journal, dict(symbols), costs, clock
        self.quote_asset, self.initial_balances = quote_asset, dict(initial_balances)
        self._last_bar: dict[str, datetime] = {}
        self.stats = ExecutorStats()
        self.reload()

    def reload(self) -> None:
        """(Re)build the portfolio, the seen order ids and the pending orders from the journal.

        Start-up runs it; so does the bus adapter when a group commit failed (the journal lost the
        batch's writes, so the in-memory state must forget them too; the bus re-delivers the batch).
        """
        journal = self.journal
        self.portfolio: Portfolio = journal.rebuild_portfolio(self.initial_balances, quote_asset=self.quote_asset)
        self._seen: set[str] = journal.order_ids()
        self._pending: dict[str, list[PendingOrder]] = collections.defaultdict(list)
        for intent, qty, after in journal.pending_orders():
            self._pending[intent.symbol].append(PendingOrder(intent, qty, after))

    @classmethod
    def from_config(cls, cfg: Any, *, journal: Journal, clock: Clock,
                    initial_balances: Mapping[str, float] | None = None) -> PaperExecutor:
        """From an ``L2Config``: ``symbols`` limits, ``execution`` costs, initial cash in the quote asset."""
        quote = cfg.execution.quote_asset
        balances = initial_balances if initial_balances is not None else {quote: cfg.execution.initial_cash}
        return cls(journal=journal, symbols=cfg.symbols, costs=Costs.from_config(cfg.execution),
                   initial_balances=balances, quote_asset=quote, clock=clock)

    # --------------------------------------------------------------- orders
    def submit(self, intent: OrderIntent) -> ExecutionReport | None:
        """Validate and journal an intent: a rejection report now, or ``None`` (accepted, fills on a later bar)."""
        self.stats.received += 1
        decision = check_order(intent, limits=self.symbols, account=self.account_view(), now=self.clock.now(),
                               seen=self._seen)
        if decision.reason is ReasonCode.DUPLICATE_ORDER:
            return self._duplicate(intent, decision)
        self._seen.add(intent.order_id)
        now = self.clock.now()
        if not decision.accepted:
            report = self._rejection(intent, decision.reason, now)
            if not self.journal.record_order(intent, status="rejected", reason=decision.reason.value, qty=intent.qty,
                                             after_bar=None, received_at=now, report=report):
                return self._duplicate(intent, OrderDecision(ReasonCode.DUPLICATE_ORDER, "journal"))
            self.stats.rejected[decision.reason.value] += 1
            return report
        after = self._last_bar.get(intent.symbol)
        if not self.journal.record_order(intent, status="accepted", reason=ReasonCode.OK.value, qty=decision.qty,
                                         after_bar=after, received_at=now):
            return self._duplicate(intent, OrderDecision(ReasonCode.DUPLICATE_ORDER, "journal"))
        self._pending[intent.symbol].append(PendingOrder(intent, decision.qty, after))
        return None

    def submit_payload(self, payload: Mapping[str, Any] | str | bytes) -> ExecutionReport | None:
        """Decode bus JSON and submit it; an undecodable intent is rejected with its reason when it can be
        addressed (order_id, symbol, side readable), else :class:`ValueError` (the bus dead-letters it)."""
        intent, reason, detail = intent_from_payload(payload)
        if intent is not None:
            return self.submit(intent)
        return self._reject_undecodable(payload, reason, detail)

    def handle_order(self, intent: OrderIntent, fill_bar: Bar) -> ExecutionReport:
        """Synchronous form: validate, then fill on ``fill_bar`` (the bar after the decision)."""
        report = self.submit(intent)
        if report is not None:
            return report
        for rep in self.on_bar(fill_bar):
            if rep.order_id == intent.order_id:
                return rep
        raise ValueError(f"fill_bar {fill_bar.symbol} {fill_bar.open_time.isoformat()} is not a valid fill bar for "
                         f"order {intent.order_id} (timestamp {intent.timestamp.isoformat()}); it stays pending")

    def pending(self) -> list[PendingOrder]:
        return [p for orders in self._pending.values() for p in orders]

    # ----------------------------------------------------------------- bars
    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        """Fill the symbol's due orders at the bar's open, then check its position's stop/take-profit."""
        reports: list[ExecutionReport] = []
        waiting = []
        for order in self._pending.get(bar.symbol, []):
            after_ok = order.after_bar is None or bar.open_time > order.after_bar
            due = after_ok and bar.open_time >= order.intent.timestamp
            if due:
                reports.append(self._fill_order(order, bar))
            else:
                waiting.append(order)
        if bar.symbol in self._pending:
            self._pending[bar.symbol] = waiting
        exit_report = self._check_exit(bar)
        if exit_report is not None:
            reports.append(exit_report)
        self.portfolio.update_mark(bar.symbol, bar.close)
        last = self._last_bar.get(bar.symbol)
        if last is None or bar.open_time > last:
            self._last_bar[bar.symbol] = bar.open_time
        return reports

    def _fill_order(self, order: PendingOrder, bar: Bar) -> ExecutionReport:
        intent = order.intent
        if intent.expires_at is not None and intent.expires_at <= bar.open_time:
            return self._reject_accepted(intent, ReasonCode.EXPIRED, bar.open_time)
        qty = order.qty
        if intent.side is Side.SELL:
            held = self.portfolio.base_qty(intent.symbol)
            lot = self.symbols[intent.symbol].lot_step
            if qty > held + DUST:
                return self._reject_accepted(intent, ReasonCode.INSUFFICIENT_BALANCE, bar.open_time)
            qty = held if held - qty < lot else qty  # never leave dust below one lot behind
        fill = market_fill(qty if intent.side is Side.BUY else -qty, bar.open, bar.high, bar.low, self.costs)
        if fill.qty > 0 and fill.qty * fill.price + fill.fee > self.portfolio.balance(self.quote_asset) + 1e-9:
            return self._reject_accepted(intent, ReasonCode.INSUFFICIENT_BALANCE, bar.open_time)
        record = FillRecord(fill_id=stable_id("fill", intent.order_id), order_id=intent.order_id,
                            symbol=intent.symbol, qty=fill.qty, price=fill.price, fee=fill.fee, kind="market",
                            bar_time=bar.open_time, reference=fill.reference, stop_loss=intent.stop_loss,
                            take_profit=intent.take_profit, correlation_id=intent.correlation_id)
        report = self._fill_report(intent.order_id, intent.symbol, intent.side, order.qty, fill, bar.open_time,
                                   ReasonCode.OK, intent.correlation_id)
        self._commit_fill(record, report, order_filled=True)
        self.stats.filled += 1
        return report

    def _check_exit(self, bar: Bar) -> ExecutionReport | None:
        pos = self.portfolio.position(bar.symbol)
        if pos is None or bar.open_time < pos.since:
            return None
        hit = stop_exit(1.0, pos.stop_loss, pos.take_profit, bar.open, bar.high, bar.low)
        if hit is None:
            return None
        level, reason = hit
        fill = exit_fill(pos.qty, level, bar.high, bar.low, self.costs)
        exit_id = stable_id("exit", pos.order_id, bar.open_time.isoformat())
        kind = "stop_loss" if reason is ReasonCode.STOP_LOSS_HIT else "take_profit"
        record = FillRecord(fill_id=exit_id, order_id=exit_id, symbol=bar.symbol, qty=fill.qty, price=fill.price,
                            fee=fill.fee, kind=kind, bar_time=bar.open_time, reference=fill.reference,
                            correlation_id=pos.correlation_id)
        report = self._fill_report(exit_id, bar.symbol, Side.SELL, pos.qty, fill, bar.open_time, reason,
                                   pos.correlation_id)
        self._commit_fill(record, report, order_filled=False)
        self.stats.exits += 1
        return report

    def _commit_fill(self, record: FillRecord, report: ExecutionReport, *, order_filled: bool) -> None:
        if self.journal.record_fill(record, report, order_filled=order_filled):  # journal first, then state
            self.portfolio.apply_fill(record)
            self.stats.fees += record.fee
            self.stats.slippage_bps_sum += report.slippage_bps

    # -------------------------------------------------------------- account
    def account_view(self) -> AccountView:
        """Balances minus what accepted orders have reserved (at their intent price, fee included)."""
        fee_rate = self.costs.fee_rate
        quote = self.portfolio.balance(self.quote_asset)
        available, held = {}, {}
        for symbol in self.symbols:
            base = self.portfolio.base_qty(symbol)
            available[symbol], held[symbol] = base, base
        for p in self.pending():
            if p.intent.side is Side.BUY:
                quote -= p.qty * p.intent.price * (1 + fee_rate)
                held[p.intent.symbol] = held.get(p.intent.symbol, 0.0) + p.qty
            else:
                available[p.intent.symbol] = available.get(p.intent.symbol, 0.0) - p.qty
        return AccountView(quote_available=quote, base_available=available, base_held=held,
                           equity=self.portfolio.equity(), fee_rate=fee_rate)

    # -------------------------------------------------------------- reports
    def _fill_report(self, order_id: str, symbol: str, side: Side, requested: float, fill: Fill, when: datetime,
                     reason: ReasonCode, correlation_id: str) -> ExecutionReport:
        return ExecutionReport(order_id=order_id, symbol=symbol, side=side, status=ExecutionStatus.FILLED,
                               requested_qty=requested, executed_qty=abs(fill.qty), avg_price=fill.price,
                               timestamp=when, slippage_bps=fill.slippage_bps, fees=fill.fee, reason_code=reason,
                               correlation_id=correlation_id)

    def _rejection(self, intent: OrderIntent, reason: ReasonCode, when: datetime) -> ExecutionReport:
        return ExecutionReport(order_id=intent.order_id, symbol=intent.symbol, side=intent.side,
                               status=ExecutionStatus.REJECTED, requested_qty=intent.qty, executed_qty=0.0,
                               avg_price=0.0, timestamp=when, reason_code=reason, correlation_id=intent.correlation_id)

    def _duplicate(self, intent: OrderIntent, decision: OrderDecision) -> ExecutionReport:
        self._seen.add(intent.order_id)
        self.stats.rejected[ReasonCode.DUPLICATE_ORDER.value] += 1
        report = self._rejection(intent, ReasonCode.DUPLICATE_ORDER, self.clock.now())
        self.journal.record_report(report)
        return report

    def _reject_accepted(self, intent: OrderIntent, reason: ReasonCode, when: datetime) -> ExecutionReport:
        report = self._rejection(intent, reason, when)
        self.journal.reject_accepted(intent.order_id, reason.value, report)
        self.stats.rejected[reason.value] += 1
        return report

    def _reject_undecodable(self, payload: Any, reason: ReasonCode, detail: str) -> ExecutionReport:
        data = _as_mapping(payload)
        try:
            side, symbol, signal_id = Side(data["side"]), data["symbol"], data["signal_id"]
            if not (isinstance(symbol, str) and symbol and isinstance(signal_id, str) and signal_id):
                raise ValueError(symbol)
        except (KeyError, ValueError, TypeError):
            raise ValueError(f"undecodable order intent, no signal_id/symbol/side to reject it by "
                             f"({reason.value}): {detail}") from None
        qty = data.get("qty")
        qty = float(qty) if isinstance(qty, (int, float)) and math.isfinite(qty) and qty > 0 else 0.0
        self.stats.received += 1
        self.stats.rejected[reason.value] += 1
        report = ExecutionReport(order_id=order_id_for(signal_id), symbol=symbol, side=side,
                                 status=ExecutionStatus.REJECTED, requested_qty=qty, executed_qty=0.0, avg_price=0.0,
                                 timestamp=self.clock.now(), reason_code=reason,
                                 correlation_id=str(data.get("correlation_id") or signal_id))
        self.journal.record_report(report)
        return report

    def summary(self) -> dict[str, Any]:
        """Counts, fees, slippage and the portfolio, for the end-of-run summary."""
        return {"received": self.stats.received, "filled": self.stats.filled, "exits": self.stats.exits,
                "rejected": dict(self.stats.rejected), "fees": self.stats.fees,
                "avg_slippage_bps": self.stats.avg_slippage_bps, "equity": self.portfolio.equity(),
                "balances": self.portfolio.balances, "open_positions": len(self.portfolio.positions),
                "pending": len(self.pending())}


def _as_mapping(payload: Any) -> Mapping[str, Any]:
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return {}
    return payload if isinstance(payload, Mapping) else {}
