"""Incremental side of the feature pipeline: one closed base bar in, one feature row out.

Per bar the updater feeds the base timeframe's streaming indicators, and each
higher timeframe's :class:`~l2_tactical.data.resample.BarAggregator`; only
when a higher-timeframe bar closes are that timeframe's indicators fed and its
features re-read, otherwise its columns keep their values. State is a few
floats and short ring buffers per indicator: the cost per bar does not grow
with history.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from l2_tactical.data.resample import BarAggregator, timeframe_ns
from l2_tactical.errors import DataError
from l2_tactical.technical.bars import StreamBars
from l2_tactical.technical.feature_kinds import KINDS
from l2_tactical.technical.feature_spec import FeatureSpec

_COLUMNS = ("open", "high", "low", "close", "volume")


def _to_ns(ts: Any) -> int:
    if isinstance(ts, (int, np.integer)):
        return int(ts)
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.value)


def ohlcv_arrays(frame: Any, base: str) -> tuple[pd.DatetimeIndex, np.ndarray, tuple[np.ndarray, ...]]:
    """Validated (index, int64 ns open times, float64 OHLCV columns) of a frame or ``Candles``."""
    frame = getattr(frame, "frame", frame)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected an OHLCV DataFrame, got {type(frame).__name__}")
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"missing columns {missing}", column=missing[0])
    index = pd.DatetimeIndex(frame.index)
    if index.tz is None:
        index = index.tz_localize("UTC")
    ts = index.as_unit("ns").asi8
    step = timeframe_ns(base)
    bad = np.flatnonzero((ts % step != 0) | np.r_[False, np.diff(ts) <= 0])
    if bad.size:
        raise DataError(
            f"timestamp {index[bad[0]]} is not after the previous bar on the {base} grid",
            row=int(bad[0]) + 1,
            column="timestamp",
        )
    cols = tuple(frame[c].to_numpy(dtype=np.float64) for c in _COLUMNS)
    for name, col in zip(_COLUMNS, cols, strict=True):
        wrong = ~np.isfinite(col) | ((col < 0) if name == "volume" else (col <= 0))
        if wrong.any():
            row = int(np.argmax(wrong))
            raise DataError(f"invalid {name} {col[row]!r}", row=row + 1, column=name)
    return index, ts, cols


class FeatureUpdater:
    """Computes the feature row of each new closed base bar (see ``FeatureSet.incremental``)."""

    def __init__(self, features: Sequence[FeatureSpec], base_timeframe: str) -> None:
        self.names = tuple(s.column for s in features)
        self.base_timeframe = base_timeframe
        self._step = timeframe_ns(base_timeframe)
        self._last_ns: int | None = None
        self._row = [float(s.neutral) for s in features]
        self._ready = [False] * len(features)
        self._groups: list[tuple[BarAggregator | None, StreamBars, list[tuple]]] = []
        for tf in sorted({s.timeframe for s in features}, key=timeframe_ns):
            sb = StreamBars()
            readers = [
                (j, KINDS[s.name].stream(sb, s.param_dict), *s.bounds, float(s.neutral))
                for j, s in enumerate(features)
                if s.timeframe == tf
            ]
            agg = None if tf == base_timeframe else BarAggregator(base_timeframe, tf)
            self._groups.append((agg, sb, readers))

    @property
    def ready(self) -> np.ndarray:
        """Per feature: has it finished warming up?"""
        return np.array(self._ready, dtype=bool)

    @property
    def is_ready(self) -> bool:
        return all(self._ready)

    def update(self, bar: Sequence[Any]) -> np.ndarray:
        """Feed one closed bar ``(timestamp, open, high, low, close, volume)``; return its float32 row.

        ``timestamp`` is the bar's open time: int ns since the epoch, or a
        (UTC) ``datetime`` / ``pandas.Timestamp``.
        """
        ts, o, h, lo, c, v = bar
        self.advance(_to_ns(ts), float(o), float(h), float(lo), float(c), float(v))
        return np.array(self._row, dtype=np.float32)

    def advance(self, ts_ns: int, o: float, h: float, lo: float, c: float, v: float) -> None:
        """:meth:`update` without building the row (warm-up, replay)."""
        self._check(ts_ns, o, h, lo, c, v)
        self._last_ns = ts_ns
        for agg, sb, readers in self._groups:
            if agg is None:
                sb.push(o, h, lo, c, v)
                self._read(readers)
            else:
                for closed in agg.push(ts_ns, o, h, lo, c, v):
                    sb.push(*closed[1:])
                    self._read(readers)

    def row(self) -> np.ndarray:
        """The current row (float32 copy)."""
        return np.array(self._row, dtype=np.float32)

    def warm_up(self, ts_ns: np.ndarray, *cols: np.ndarray) -> None:
        for ts, o, h, lo, c, v in zip(ts_ns.tolist(), *(col.tolist() for col in cols), strict=True):
            self.advance(ts, o, h, lo, c, v)

    def _read(self, readers: list[tuple]) -> None:
        row, ready = self._row, self._ready
        for j, read, lo, hi, neutral in readers:
            x = read()
            if math.isfinite(x):
                row[j] = lo if x < lo else (hi if x > hi else x)
                ready[j] = True
            else:
                row[j] = neutral
                ready[j] = False

    def _check(self, ts_ns: int, o: float, h: float, lo: float, c: float, v: float) -> None:
        if ts_ns % self._step or (self._last_ns is not None and ts_ns <= self._last_ns):
            raise DataError(
                f"bar at {_iso(ts_ns)} is not after the previous bar on the {self.base_timeframe} grid",
                column="timestamp",
            )
        if not (o > 0 and h > 0 and lo > 0 and c > 0 and v >= 0 and math.isfinite(o + h + lo + c + v)):
            raise DataError(f"bar at {_iso(ts_ns)} has invalid prices or volume: {(o, h, lo, c, v)}")


def _iso(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).isoformat()


class MatrixFeed:
    """A precomputed feature matrix replayed bar by bar behind :class:`FeatureUpdater`'s interface.

    For backtests: ``FeatureSet.build`` over the history once (equal row for row to the
    incremental updater fed the same bars, ``tests/test_features_equality.py``), then
    :meth:`advance` only moves a cursor. A bar that is not the matrix's next row (other time or
    other OHLCV) raises :class:`DataError`: the feed never serves a row computed from other bars.
    """

    __slots__ = ("_all_ready", "_cols", "_i", "_ready", "_ts", "_values", "base_timeframe", "names")

    def __init__(self, values: np.ndarray, ready: np.ndarray, names: Sequence[str], base_timeframe: str,
                 ts_ns: np.ndarray, cols: Sequence[np.ndarray]) -> None:
        n = ts_ns.shape[0]
        if values.shape[0] != n or ready.shape != values.shape or any(c.shape[0] != n for c in cols):
            raise ValueError(f"MatrixFeed: {values.shape[0]} rows of features for {n} bars")
        self.names, self.base_timeframe = tuple(names), base_timeframe
        self._values, self._ready = values, ready
        self._all_ready: list[bool] = list(np.all(ready, axis=1).tolist())
        self._ts = ts_ns.tolist()
        self._cols = tuple(c.tolist() for c in cols)
        self._i = -1

    @property
    def position(self) -> int:
        """Row of the last bar fed (-1 before the first)."""
        return self._i

    @property
    def values(self) -> np.ndarray:
        """The whole feature matrix (rows in bar order; read-only use)."""
        return self._values

    @property
    def ready_matrix(self) -> np.ndarray:
        """Readiness of every feature of every row (``ready`` is the current row's)."""
        return self._ready

    @property
    def ready(self) -> np.ndarray:
        return self._ready[self._i]

    @property
    def is_ready(self) -> bool:
        return bool(self._all_ready[self._i])

    def advance(self, ts_ns: int, o: float, h: float, lo: float, c: float, v: float) -> None:
        i = self._i + 1
        if i >= len(self._ts) or self._ts[i] != ts_ns or (o, h, lo, c, v) != tuple(col[i] for col in self._cols):
            raise DataError(f"bar at {_iso(ts_ns)} is not the next bar of the precomputed features "
                            f"(row {i} of {len(self._ts)})", column="timestamp")
        self._i = i

    def row(self) -> np.ndarray:
        """The current row (a read-only view into the matrix)."""
        return self._values[self._i]
