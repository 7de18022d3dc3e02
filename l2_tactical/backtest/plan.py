"""The events of a backtest run: every evaluated bar of every symbol, in time order, and the warm-up bars.

:func:`plan_events` reads the candles once into plain arrays; ties in time keep the order the
candle files were given in. The run's timeline is the union of the symbols' bar open times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from l2_tactical.errors import DataError


@dataclasses.dataclass(frozen=True, slots=True)
class EventPlan:
    """The events of a run: (symbol index, row) in time order, the timeline, each symbol's warm-up frame."""

    arrays: tuple[tuple[np.ndarray, ...], ...]  # per symbol: ts_ns, open, high, low, close, volume
    order: np.ndarray  # (n_events, 2) symbol index, row
    timeline: np.ndarray  # int64 ns, evaluated bar open times
    warmup: tuple[Any, ...]  # per symbol: the frame of the bars before the first evaluated one
    history: tuple[Any, ...] = ()  # per symbol: the warm-up bars followed by the evaluated ones

    def columns(self) -> list[int]:
        """Per event, its column in the timeline."""
        ev_ts = np.empty(self.order.shape[0], dtype=np.int64)
        for k, arrays in enumerate(self.arrays):
            mine = self.order[:, 0] == k
            ev_ts[mine] = arrays[0][self.order[mine, 1]]
        return list(np.searchsorted(self.timeline, ev_ts).tolist())


def _bounds_ns(value: Any) -> int | None:
    if value is None:
        return None
    import pandas as pd

    ts = pd.Timestamp(value)
    return int((ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).value)


def plan_events(candles: Sequence[Any], start: Any = None, end: Any = None, warmup_bars: int = 0) -> EventPlan:
    """Events of ``candles`` with ``start <= open time < end``; up to ``warmup_bars`` earlier bars per symbol
    make its warm-up frame (for :meth:`TacticalLoop.warm_up`, as ``l2 paper`` warms up)."""
    lo_ns, hi_ns = _bounds_ns(start), _bounds_ns(end)
    arrays, keys, warm, history = [], [], [], []
    for k, c in enumerate(candles):
        f = c.frame
        ts = np.asarray(c.timestamps_ns, dtype=np.int64)
        arrays.append((ts, *(f[name].to_numpy(dtype=np.float64) for name in ("open", "high", "low", "close",
                                                                                "volume"))))
        lo = 0 if lo_ns is None else int(np.searchsorted(ts, lo_ns, side="left"))
        hi = ts.size if hi_ns is None else int(np.searchsorted(ts, hi_ns, side="left"))
        if hi <= lo:
            raise DataError(f"{c.symbol}: no bar between {start or 'the first bar'} and {end or 'the last bar'}",
                            file=getattr(c, "source", None))
        rows = np.arange(lo, hi)
        keys.append(np.stack([ts[rows], np.full(rows.size, k), rows], axis=1))
        warm.append(f.iloc[max(0, lo - warmup_bars):lo])
        history.append(f.iloc[max(0, lo - warmup_bars):hi])
    ev = np.concatenate(keys)
    ev = ev[np.lexsort((ev[:, 1], ev[:, 0]))]
    return EventPlan(tuple(arrays), ev[:, 1:3].copy(), np.unique(ev[:, 0]), tuple(warm), tuple(history))
