"""What a backtest run produced: per-symbol traces, the result, and its metrics over several symbols."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from l2_tactical.backtest.metrics import Metrics, TradeFill, compute_metrics, profit_factor, round_trips, win_rate
from l2_tactical.messages import ExecutionReport, ExecutionStatus, OrderIntent, SignalSource
from l2_tactical.tactical_loop import LoopStats

SOURCES = tuple(s.value for s in SignalSource)


@dataclasses.dataclass
class SymbolTrace:
    """One symbol over the run's timeline (NaN where it has no bar)."""

    symbol: str
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    exposure: np.ndarray
    stops: np.ndarray
    fills: list[TradeFill]
    signals: dict[str, np.ndarray]  # source or specialist -> signed target exposure called at the close
    contributions: dict[str, np.ndarray]  # specialist -> effective weight x target exposure

    @classmethod
    def empty(cls, symbol: str, n: int, specialists: Sequence[str]) -> SymbolTrace:
        nan = lambda: np.full(n, np.nan)  # noqa: E731
        return cls(symbol, nan(), nan(), nan(), nan(), np.zeros(n), nan(), [],
                   {k: np.zeros(n) for k in (*SOURCES, *specialists)}, {k: np.zeros(n) for k in specialists})

    def forward_returns(self) -> np.ndarray:
        """Close-to-close return of the bar after each bar (NaN at the end and across missing bars)."""
        fwd = np.full(self.close.size, np.nan)
        with np.errstate(invalid="ignore"):
            fwd[:-1] = self.close[1:] / self.close[:-1] - 1.0
        return fwd


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BacktestResult:
    """Everything one run produced; arrays have one value per timeline step (bar open time)."""

    symbols: tuple[str, ...]
    timeframe: str
    timestamps: np.ndarray  # datetime64[ns] UTC, bar open times (union over symbols)
    equity: np.ndarray
    exposure: np.ndarray  # gross position value / equity at each close
    traces: Mapping[str, SymbolTrace]
    orders: tuple[OrderIntent, ...]
    reports: tuple[ExecutionReport, ...]
    metrics: Metrics
    loop_stats: LoopStats
    executor_summary: Mapping[str, Any]
    unavailable: Mapping[str, str]
    seconds: float
    bars_processed: int
    notes: tuple[str, ...] = ()

    @property
    def fills(self) -> list[TradeFill]:
        return sorted((f for t in self.traces.values() for f in t.fills), key=lambda f: f.bar)

    @property
    def bars_per_second(self) -> float:
        return self.bars_processed / self.seconds if self.seconds > 0 else math.nan

    def summary(self) -> dict[str, Any]:
        """Plain, JSON-safe numbers of the run (metrics, counts, rejections, speed)."""
        rejected = [r for r in self.reports if r.status is ExecutionStatus.REJECTED]
        return {
            "symbols": list(self.symbols), "timeframe": self.timeframe,
            "start": str(self.timestamps[0]) if self.timestamps.size else None,
            "end": str(self.timestamps[-1]) if self.timestamps.size else None,
            "metrics": self.metrics.to_dict(json_safe=True), "orders": len(self.orders),
            "fills": len(self.fills), "rejections": _count(r.reason_code.value for r in rejected),
            "l2_reasons": dict(self.loop_stats.reasons), "unavailable": dict(self.unavailable),
            "bars_processed": self.bars_processed, "seconds": self.seconds, "bars_per_second": self.bars_per_second,
            "notes": list(self.notes),
        }


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in items:
        out[k] = out.get(k, 0) + 1
    return out


def run_metrics(equity: np.ndarray, timeframe: str, traces: Sequence[SymbolTrace], exposure: np.ndarray) -> Metrics:
    """Metrics of a run over several symbols: portfolio curve; round trips per symbol (never mixing
    two assets); hit rate and attribution pooled over the symbols' bars."""
    fwd = np.concatenate([t.forward_returns() for t in traces])
    signals = {k: np.concatenate([t.signals[k] for t in traces]) for k in traces[0].signals}
    signals = {k: v for k, v in signals.items() if np.any(v != 0)}
    contributions = {k: np.concatenate([t.contributions[k] for t in traces]) for k in traces[0].contributions}
    fills = sorted((f for t in traces for f in t.fills), key=lambda f: f.bar)
    m = compute_metrics(equity, timeframe=timeframe, fills=fills, exposure=exposure, signals=signals or None,
                        forward_returns=fwd, contributions=contributions or None, asset_returns=fwd)
    return with_round_trips(m, [(t.fills, _last_close(t)) for t in traces])


def with_round_trips(m: Metrics, books: Iterable[tuple[Sequence[TradeFill], float | None]]) -> Metrics:
    """``m`` with its trade statistics recomputed from round trips built per symbol
    (``books``: each symbol's fills and its last close to mark an open trade)."""
    trades = [tr for fills, mark in books for tr in round_trips(fills, mark)]
    pnls = np.array([tr.pnl for tr in trades], dtype=np.float64)
    return dataclasses.replace(
        m, n_trades=int(pnls.size), win_rate=win_rate(pnls), profit_factor=profit_factor(pnls),
        avg_win=float(pnls[pnls > 0].mean()) if np.any(pnls > 0) else 0.0,
        avg_loss=float(pnls[pnls < 0].mean()) if np.any(pnls < 0) else 0.0)


def _last_close(trace: SymbolTrace) -> float | None:
    finite = trace.close[np.isfinite(trace.close)]
    return float(finite[-1]) if finite.size else None
