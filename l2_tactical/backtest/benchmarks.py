"""The baselines of a backtest on its own timeline: buy-and-hold and an SMA cross, per symbol and pooled.

Each symbol gets an equal share of the initial cash and its own sub-account, traded through
the one execution simulator (:mod:`l2_tactical.backtest.baselines`: decision at a close, fill at
the next open, costs on). The portfolio is the sum of the sub-accounts on the run's timeline (a
symbol without a bar at a step carries its last value), never rebalanced. The SMA cross sees the
closes before the first evaluated bar, so it can be in the market from the start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from l2_tactical.backtest.baselines import BaselineResult, buy_and_hold, run_target_exposure, sma_cross_targets
from l2_tactical.backtest.metrics import Metrics, TradeFill, compute_metrics
from l2_tactical.backtest.results import with_round_trips
from l2_tactical.config import L2Config
from l2_tactical.execution import Costs

BUY_AND_HOLD = "buy_and_hold"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BenchmarkRun:
    """A baseline on the run's timeline."""

    name: str
    equity: np.ndarray
    exposure: np.ndarray
    fills: tuple[TradeFill, ...]
    metrics: Metrics

    @property
    def returns(self) -> np.ndarray:
        return self.equity[1:] / self.equity[:-1] - 1.0


def sma_name(fast: int, slow: int) -> str:
    return f"sma_cross_{fast}_{slow}"


def _rows(candles: Any, timeline: np.ndarray) -> tuple[int, int]:
    ts = np.asarray(candles.timestamps_ns, dtype=np.int64)
    return int(np.searchsorted(ts, timeline[0], side="left")), int(np.searchsorted(ts, timeline[-1], side="right"))


def _symbol_runs(candles: Any, timeline: np.ndarray, config: L2Config, cash: float, fast: int,
                 slow: int) -> tuple[np.ndarray, list[BaselineResult]]:
    lo, hi = _rows(candles, timeline)
    f = candles.frame
    o, h, low, c = (f[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close"))
    costs = Costs.from_config(config.execution)
    limits = config.symbols.get(candles.symbol)
    kw = {"initial_cash": cash, "lot_step": limits.lot_step if limits else 0.0,
          "min_notional": limits.min_notional if limits else 0.0}
    ohlc = (o[lo:hi], h[lo:hi], low[lo:hi], c[lo:hi])
    bh = buy_and_hold(*ohlc, costs, **kw)
    targets = sma_cross_targets(c[:hi], fast, slow)[lo:hi]
    sma = run_target_exposure(targets, *ohlc, costs, name=sma_name(fast, slow), source="sma_cross", **kw)
    return np.asarray(candles.timestamps_ns, dtype=np.int64)[lo:hi], [bh, sma]


def _on_timeline(values: np.ndarray, ts: np.ndarray, timeline: np.ndarray, before: float) -> np.ndarray:
    j = np.searchsorted(ts, timeline, side="right") - 1
    return np.where(j >= 0, values[np.clip(j, 0, None)], before)


def benchmark_runs(candles: Sequence[Any], timeline: np.ndarray, config: L2Config, *, fast: int = 24,
                   slow: int = 168) -> dict[str, BenchmarkRun]:
    """Buy-and-hold and SMA(fast/slow) cross over ``timeline`` (int64 ns bar open times of a backtest)."""
    timeline = np.asarray(timeline, dtype=np.int64)
    cash = float(config.execution.initial_cash) / len(candles)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, list[TradeFill], float]]] = {}
    for c in candles:
        ts, runs = _symbol_runs(c, timeline, config, cash, fast, slow)
        mark = float(c.frame["close"].iloc[_rows(c, timeline)[1] - 1])
        for r in runs:
            equity = _on_timeline(r.equity, ts, timeline, cash)
            value = _on_timeline(r.exposure * r.equity, ts, timeline, 0.0)
            fills = [dataclasses.replace(f, bar=int(np.searchsorted(timeline, ts[f.bar]))) for f in r.fills]
            parts.setdefault(r.name, []).append((equity, value, fills, mark))
    out = {}
    for name, items in parts.items():
        equity = np.sum([e for e, _, _, _ in items], axis=0)
        exposure = np.sum([v for _, v, _, _ in items], axis=0) / equity
        fills = sorted((f for _, _, fs, _ in items for f in fs), key=lambda f: f.bar)
        m = compute_metrics(equity, timeframe=candles[0].timeframe, fills=fills, exposure=exposure)
        m = with_round_trips(m, [(fs, mark) for _, _, fs, mark in items])
        out[name] = BenchmarkRun(name=name, equity=equity, exposure=exposure, fills=tuple(fills), metrics=m)
    return out


def verdict(strategy: Metrics, benchmarks: Mapping[str, BenchmarkRun]) -> list[str]:
    """Plain sentences: where the strategy beat or lost to each baseline (total return and Sharpe)."""
    lines = []
    for name, b in benchmarks.items():
        for label, key, fmt in (("total return", "total_return", "{:+.2%}"), ("Sharpe", "sharpe", "{:.2f}")):
            ours, theirs = getattr(strategy, key), getattr(b.metrics, key)
            word = "beat" if ours > theirs else "LOST to"
            lines.append(f"{label}: {fmt.format(ours)} {word} {name} ({fmt.format(theirs)})")
    return lines
