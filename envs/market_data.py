"""MarketData: candles and their FeatureSet, precomputed once as the arrays the envs slice.

An env step never touches pandas: it reads row ``t`` of these arrays.

* ``features``: float32 ``[n, k]``, C-contiguous, row ``t`` computed from candles
  closed at or before bar ``t`` (the FeatureSet's guarantee);
* ``feature_low`` / ``feature_high``: the FeatureSet's documented bounds (float32 ``[k]``);
* ``open`` / ``high`` / ``low`` / ``close``: float64 ``[n]``;
* ``segments``: ``[start, end)`` row ranges that are gap-free *and* whose features are
  all ready (finite). An episode never crosses a segment boundary;
* ``timestamps``: bar open times, int64 epoch nanoseconds; ``schema_hash``: the
  FeatureSet's hash, recorded by every model trained on these observations.

All arrays are made read-only (``from_arrays`` and ``from_candles`` copy their inputs
first), so one MarketData is safely shared by many envs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from l2_tactical.errors import DataError

_TIMEFRAME_SECONDS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800,
                      "1h": 3600, "2h": 7200, "4h": 14400, "1d": 86400}


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class MarketData:
    """Precomputed arrays for the trading envs (see the module docstring)."""

    symbol: str
    timeframe: str
    features: np.ndarray
    feature_names: tuple[str, ...]
    feature_low: np.ndarray
    feature_high: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    timestamps: np.ndarray
    segments: tuple[tuple[int, int], ...]
    schema_hash: str

    def __post_init__(self) -> None:
        n, k = self.features.shape if self.features.ndim == 2 else (-1, -1)
        if n < 0:
            raise ValueError(f"MarketData.features: expected a 2-D array, got shape {self.features.shape}")
        if self.features.dtype != np.float32 or not self.features.flags.c_contiguous:
            raise ValueError("MarketData.features: must be a C-contiguous float32 array")
        if len(self.feature_names) != k or self.feature_low.shape != (k,) or self.feature_high.shape != (k,):
            raise ValueError(f"MarketData: {k} feature columns but {len(self.feature_names)} names, "
                             f"bounds of shape {self.feature_low.shape} / {self.feature_high.shape}")
        for name in ("open", "high", "low", "close", "timestamps"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"MarketData.{name}: shape {getattr(self, name).shape}, expected ({n},)")
        if self.timeframe not in _TIMEFRAME_SECONDS:
            raise ValueError(f"MarketData.timeframe={self.timeframe!r}: not one of {sorted(_TIMEFRAME_SECONDS)}")
        _check_segments(self)
        for arr in (self.features, self.feature_low, self.feature_high, self.open, self.high, self.low,
                    self.close, self.timestamps):
            arr.setflags(write=False)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def bar_seconds(self) -> int:
        return _TIMEFRAME_SECONDS[self.timeframe]

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, *, features: np.ndarray, feature_names: tuple[str, ...] | list[str],
                    feature_low: Any, feature_high: Any, open_: Any, high: Any, low: Any, close: Any,
                    timestamps: Any, gap_free: list[tuple[int, int]] | None = None, symbol: str = "SYNTH",
                    timeframe: str = "1h", schema_hash: str = "") -> MarketData:
        """Build from plain arrays: segments are the finite-feature runs inside ``gap_free`` ranges."""
        feats = np.array(features, dtype=np.float32, order="C")  # a copy: the caller's arrays stay writable
        n = feats.shape[0]
        ready = np.asarray(np.isfinite(feats).all(axis=1) if feats.ndim == 2 else np.zeros(0, bool), dtype=bool)
        return cls(
            symbol=symbol, timeframe=timeframe, features=feats, feature_names=tuple(feature_names),
            feature_low=np.array(feature_low, dtype=np.float32), feature_high=np.array(feature_high, np.float32),
            open=np.array(open_, dtype=np.float64), high=np.array(high, dtype=np.float64),
            low=np.array(low, dtype=np.float64), close=np.array(close, dtype=np.float64),
            timestamps=np.array(timestamps, dtype=np.int64),
            segments=ready_segments(ready, gap_free if gap_free is not None else [(0, n)]),
            schema_hash=schema_hash,
        )

    @classmethod
    def from_candles(cls, candles: Any, feature_set: Any) -> MarketData:
        """Build ``feature_set`` (a :class:`~l2_tactical.data.features.FeatureSet` on the candles'
        timeframe) on ``candles``, one gap-free segment at a time, so no indicator state is
        carried across a gap; rows whose features are still warming up belong to no segment."""
        if feature_set.base_timeframe != candles.timeframe:
            raise DataError(f"FeatureSet base timeframe {feature_set.base_timeframe} does not match the "
                            f"candles' timeframe {candles.timeframe}", file=getattr(candles, "source", None))
        n = len(candles)
        values = np.tile(np.asarray(feature_set.neutral, dtype=np.float32), (n, 1))
        ready = np.zeros(n, dtype=bool)
        gap_free = candles.segments()
        for s, e in gap_free:
            if e - s > feature_set.lookback_bars:
                matrix = feature_set.build(candles.frame.iloc[s:e])
                values[s:e] = matrix.values
                ready[s:e] = matrix.ready.all(axis=1)
        frame = candles.frame
        return cls(
            symbol=candles.symbol, timeframe=candles.timeframe, features=np.ascontiguousarray(values),
            feature_names=tuple(feature_set.names), feature_low=np.asarray(feature_set.lower, np.float32),
            feature_high=np.asarray(feature_set.upper, np.float32),
            open=frame["open"].to_numpy(np.float64, copy=True), high=frame["high"].to_numpy(np.float64, copy=True),
            low=frame["low"].to_numpy(np.float64, copy=True), close=frame["close"].to_numpy(np.float64, copy=True),
            timestamps=candles.timestamps_ns.copy(), segments=ready_segments(ready, gap_free),
            schema_hash=str(feature_set.schema_hash),
        )

    # ------------------------------------------------------------ episode geometry
    def segment_end(self) -> np.ndarray:
        """``end[t]``: the end (exclusive) of the segment holding row ``t``; 0 outside every segment."""
        end = np.zeros(len(self), dtype=np.int64)
        for s, e in self.segments:
            end[s:e] = e
        return end

    def episode_starts(self, window: int, min_steps: int = 1) -> np.ndarray:
        """Rows ``t`` an episode may start at: ``window`` ready rows end at ``t`` and at least
        ``min_steps`` more bars follow in the same segment (each step fills on the next bar)."""
        parts = [np.arange(s + window - 1, e - min_steps, dtype=np.int64) for s, e in self.segments]
        starts = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if starts.size == 0:
            raise DataError(f"{self.symbol} {self.timeframe}: no segment holds a {window}-bar window plus "
                            f"{min_steps} step(s); segments: {list(self.segments)[:5]}")
        return starts


def ready_segments(ready: np.ndarray, gap_free: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Maximal runs of ``ready`` rows inside each gap-free ``[start, end)`` range."""
    out: list[tuple[int, int]] = []
    for s, e in gap_free:
        r = np.concatenate(([False], ready[s:e], [False])).astype(np.int8)
        edges = np.flatnonzero(np.diff(r))
        out.extend((s + int(a), s + int(b)) for a, b in zip(edges[0::2], edges[1::2], strict=True))
    return tuple(out)


def _check_segments(md: MarketData) -> None:
    """Inside every segment the features must be finite and inside their documented bounds."""
    n = len(md)
    for s, e in md.segments:
        if not 0 <= s < e <= n:
            raise ValueError(f"MarketData.segments: ({s}, {e}) is not a range inside [0, {n})")
        block = md.features[s:e]
        bad = ~np.isfinite(block) | (block < md.feature_low) | (block > md.feature_high)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise DataError(f"feature {md.feature_names[col]}={float(block[row, col])!r} is outside its bounds "
                            f"[{md.feature_low[col]}, {md.feature_high[col]}]", row=s + row + 1,
                            column=md.feature_names[col])


def as_market_data(data: Any, feature_set_name: str) -> MarketData:
    """Accept MarketData, Candles or a candle file path; compute the named FeatureSet preset if needed."""
    if isinstance(data, MarketData):
        return data
    if isinstance(data, (str, os.PathLike)):
        path = Path(data).resolve()
        if not path.exists():
            raise DataError("no such candle file", file=str(data))
        return _cached_from_path(str(path), path.stat().st_mtime_ns, feature_set_name)
    if hasattr(data, "frame") and hasattr(data, "segments"):
        return MarketData.from_candles(data, _feature_set(feature_set_name, data.timeframe))
    raise TypeError(f"data={type(data).__name__}: expected MarketData, Candles or a path to a candle file")


def _feature_set(name: str, timeframe: str) -> Any:
    from l2_tactical.data.features import feature_set

    return feature_set(name, timeframe)


@functools.lru_cache(maxsize=8)
def _cached_from_path(path: str, mtime_ns: int, feature_set_name: str) -> MarketData:
    from l2_tactical.data.candles import load_candles

    candles = load_candles(path)
    return MarketData.from_candles(candles, _feature_set(feature_set_name, candles.timeframe))
