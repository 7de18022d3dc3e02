"""LoopStats: the tactical loop's counters (bars, signals, orders, fills, reasons) and their summary.

:class:`~l2_tactical.tactical_loop.TacticalLoop` counts bars and traded signals here, and
:class:`~l2_tactical.tactical_account.TacticalAccount` counts L1's fills, fees, rejections and
closed trades; :func:`stats_snapshot` turns them into the plain numbers the dashboard and the
run summary show.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from l2_tactical.messages import OrderIntent, ReasonCode, RiskMetrics, SignalSource, TacticalSignal


@dataclasses.dataclass
class LoopStats:
    """Counters for dashboards and summaries."""

    bars: int = 0
    signals: int = 0
    orders: int = 0
    confidence_sum: float = 0.0
    consensus_sum: float = 0.0
    consensus_n: int = 0
    reasons: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    fills: int = 0
    rejections: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    fees: float = 0.0
    realised_pnl: float = 0.0
    wins: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    trades_closed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    latencies: collections.deque[float] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=2048))
    first_bar: datetime | None = None
    last_bar: datetime | None = None


def count_bar(stats: LoopStats, bar_time: datetime) -> None:
    """One more closed bar, opened at ``bar_time``."""
    stats.bars += 1
    if stats.first_bar is None:
        stats.first_bar = bar_time
    stats.last_bar = bar_time


def count_decision(stats: LoopStats, signals: Sequence[TacticalSignal], orders: Sequence[OrderIntent],
                   reasons: Sequence[tuple[str, ReasonCode]], trade_sources: Collection[SignalSource]) -> None:
    """Count one bar's traded signals (confidence, ensemble consensus), its orders and the reasons for no order."""
    for sig in signals:
        if sig.source not in trade_sources:
            continue
        stats.signals += 1
        stats.confidence_sum += sig.confidence
        ens = sig.metadata.get("ensemble")
        consensus = ens.get("consensus") if isinstance(ens, Mapping) else None
        consensus = sig.metadata.get("source_agreement") if consensus is None else consensus
        if isinstance(consensus, (int, float)) and math.isfinite(consensus):
            stats.consensus_sum += float(consensus)
            stats.consensus_n += 1
    stats.orders += len(orders)
    for _, reason in reasons:
        stats.reasons[reason.value] += 1


def stats_snapshot(s: LoopStats, m: RiskMetrics, *, gate: str, working_orders: int) -> dict[str, Any]:
    """Numbers for the dashboard and the summary (plain values), from the counters and the risk metrics."""
    hours = ((s.last_bar - s.first_bar).total_seconds() / 3600.0) if s.first_bar and s.last_bar else 0.0
    lat = np.asarray(s.latencies, dtype=np.float64)
    return {"bars": s.bars, "signals": s.signals, "orders": s.orders, "fills": s.fills,
            "signals_per_hour": s.signals / hours if hours > 0 else 0.0,
            "avg_confidence": s.confidence_sum / s.signals if s.signals else 0.0,
            "avg_consensus": s.consensus_sum / s.consensus_n if s.consensus_n else math.nan,
            "open_positions": m.open_positions, "portfolio_heat": m.portfolio_heat, "exposure": m.exposure,
            "equity": m.equity, "drawdown": m.drawdown, "trading_state": m.trading_state.value,
            "latency_p95_ms": float(np.percentile(lat, 95)) * 1e3 if lat.size else math.nan,
            "realised_pnl": s.realised_pnl, "fees": s.fees, "l2_reasons": dict(s.reasons),
            "l1_rejections": dict(s.rejections), "gate": gate, "working_orders": working_orders,
            "hit_rate": {k: s.wins[k] / n for k, n in s.trades_closed.items() if n}}
