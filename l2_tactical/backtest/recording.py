"""What a backtest records per bar, by listening in on the live components without changing them.

* :class:`RecordingGenerator` passes everything through to the signal generator and keeps its
  last decision; :class:`ReportTap` passes everything through to L1 and keeps the bar's reports;
* :class:`Recorder` writes one bar into the run's arrays: each symbol's prices, the orders and
  their fills (as :class:`~l2_tactical.backtest.metrics.TradeFill`, credited to the signal
  source that opened the position), each source's and specialist's call, each specialist's
  contribution (its effective ensemble weight x its target exposure, negative parts dropped in
  spot mode), portfolio equity and exposure at the close and the active (L2-trailed) stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from l2_tactical.backtest.metrics import TradeFill
from l2_tactical.backtest.results import SymbolTrace
from l2_tactical.backtest.setup import PaperAccount
from l2_tactical.messages import ExecutionReport, ExecutionStatus, OrderIntent, ReasonCode, Side


class RecordingGenerator:
    """Passes everything through to the signal generator and keeps its last decision."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.last = inner, None

    def on_bar(self, symbol: str, candle: Any, regime_context: Any = None, position: Any = None) -> Any:
        self.last = self.inner.on_bar(symbol, candle, regime_context=regime_context, position=position)
        return self.last

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ReportTap:
    """Passes everything through to L1 and keeps the reports of the current bar."""

    def __init__(self, inner: PaperAccount) -> None:
        self.inner = inner
        self.reports: list[ExecutionReport] = []

    def on_bar(self, bar: Any) -> Sequence[ExecutionReport]:
        out = self.inner.on_bar(bar)
        self.reports.extend(out)
        return out

    def submit(self, intent: OrderIntent) -> ExecutionReport | None:
        out = self.inner.submit(intent)
        if out is not None:
            self.reports.append(out)
        return out


class Recorder:
    """The arrays and lists of one run, written bar by bar (see the module docstring)."""

    def __init__(self, symbols: Sequence[str], n: int, specialists: Sequence[str], *, allow_short: bool) -> None:
        self.traces = {s: SymbolTrace.empty(s, n, specialists) for s in symbols}
        self.equity, self.exposure = np.zeros(n), np.zeros(n)
        self.orders: list[OrderIntent] = []
        self.reports: list[ExecutionReport] = []
        self.allow_short = allow_short
        self._order_meta: dict[str, tuple[str, str]] = {}  # order id -> (source, reason)
        self._opened_by: dict[str, str] = {}  # symbol -> source of the open position

    def prices(self, trace: SymbolTrace, t: int, bar: Any) -> None:
        trace.open[t], trace.high[t], trace.low[t], trace.close[t] = bar.open, bar.high, bar.low, bar.close

    def orders_of(self, decision: Any) -> None:
        """Keep the bar's orders and, per order, the source and reason of the signal behind it."""
        if not decision.orders:
            return
        calls = {s.signal_id: s for s in (*decision.traded, *decision.exits)}  # orders come from these
        for order in decision.orders:
            signal = calls.get(order.signal_id)
            source = signal.source.value if signal is not None else "unknown"
            reason = str(signal.metadata.get("reason", "")) if signal is not None else ""
            self._order_meta[order.order_id] = (source, reason or ("close" if order.reduce_only else "signal"))
            self.orders.append(order)

    def fills(self, reports: Sequence[ExecutionReport], t: int, portfolio: Any) -> None:
        """Keep the bar's reports; each fill becomes a TradeFill of its symbol."""
        for report in reports:
            self.reports.append(report)
            if report.status is not ExecutionStatus.FILLED or report.executed_qty <= 0:
                continue
            sign = 1.0 if report.side is Side.BUY else -1.0
            meta = self._order_meta.get(report.order_id)
            if meta is None:  # an L1 stop-loss / take-profit exit
                meta = (self._opened_by.get(report.symbol, "unknown"), report.reason_code.value)
            elif sign > 0 and report.reason_code is ReasonCode.OK:
                self._opened_by.setdefault(report.symbol, meta[0])
            self.traces[report.symbol].fills.append(TradeFill(bar=t, qty=sign * report.executed_qty,
                                                              price=report.avg_price, fee=report.fees,
                                                              source=meta[0], reason=meta[1]))
            if portfolio.position(report.symbol) is None:
                self._opened_by.pop(report.symbol, None)

    def calls(self, trace: SymbolTrace, t: int, decision: Any) -> None:
        """Each source's call (signed target exposure) and each answering specialist's call and contribution."""
        calls = getattr(decision, "calls", None)  # a Decision's (source, exposure) without building its signals
        if calls is None:
            calls = tuple((s.source, s.exposure) for s in getattr(decision, "signals", ()))
        for source, exposure in calls:
            trace.signals[source.value][t] = exposure
        ens = getattr(decision, "ensemble", None)
        if ens is None:
            return
        for v in ens.votes:
            if v.answered and v.name in trace.contributions:
                trace.signals[v.name][t] = v.exposure
                held = v.exposure if self.allow_short else max(0.0, v.exposure)
                trace.contributions[v.name][t] = v.weight * held

    def account(self, t: int, portfolio: Any, positions: Any) -> None:
        """Equity and gross exposure at the close, each symbol's exposure and L2's active stop."""
        equity = float(portfolio.equity())
        self.equity[t] = equity
        gross = 0.0
        for symbol, trace in self.traces.items():
            mark = portfolio.mark(symbol)
            x = portfolio.base_qty(symbol) * mark / equity if mark is not None and equity > 0 else 0.0
            trace.exposure[t] = x
            gross += abs(x)
            pos = positions.get(symbol)
            trace.stops[t] = pos.stop_loss if pos is not None and pos.stop_loss is not None else np.nan
        self.exposure[t] = gross
