"""Closed-bar resampling of OHLCV bars to a higher timeframe.

Buckets are aligned to the Unix epoch (``floor(open_time / timeframe)``), the
same grid as Binance and ``pandas.resample`` for 1m..4h. A bucket aggregates
its bars with first/max/min/last/sum. Missing base bars are not filled: a
bucket is the aggregate of the bars that exist.

When is a higher-timeframe bar visible (the closed-bar rule)? A bar stamped
``t`` (its open time) closes at ``t + base``. A bucket ``[B, B + tf)`` is
closed, and its bar visible, on the first base row whose close time is at or
after ``B + tf``: normally its own last bar (on 1m bars the 1h bar is visible
from the row of the hh:59 bar), or — when that bar is missing — the first bar
of a later bucket. A bucket that never closed in the data (the trailing,
forming one) is dropped. At base row ``i`` only candles closed at or before
row ``i``'s close are used.

>>> import numpy as np
>>> ts = np.array([0, 60, 120, 180, 240, 300], dtype=np.int64) * 10**9
>>> r = resample_arrays(ts, *(np.arange(6.0),) * 5, base="1m", timeframe="5m")
>>> r.close.tolist(), r.visible_row.tolist()
([4.0], [4])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from l2_tactical.data.candle_checks import TIMEFRAMES

NS_PER_SECOND = 1_000_000_000
TIMEFRAME_SECONDS: dict[str, int] = TIMEFRAMES  # one table of timeframe lengths (candle_checks)


def timeframe_ns(timeframe: str) -> int:
    """Length of a timeframe in nanoseconds; ``ValueError`` naming it when unknown."""
    try:
        return TIMEFRAME_SECONDS[timeframe] * NS_PER_SECOND
    except KeyError:
        known = ", ".join(TIMEFRAME_SECONDS)
        raise ValueError(f"unknown timeframe {timeframe!r}; known: {known}") from None


@dataclass(frozen=True)
class ResampledBars:
    """Higher-timeframe bars plus, for each, the base row at which it becomes visible."""

    timestamp: np.ndarray  # int64 ns, bucket open time
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    visible_row: np.ndarray  # int64 index into the base rows


def resample_arrays(
    ts_ns: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    *,
    base: str,
    timeframe: str,
) -> ResampledBars:
    """Aggregate base bars (sorted, int64 ns open times) into closed ``timeframe`` bars."""
    base_ns, tf_ns = timeframe_ns(base), timeframe_ns(timeframe)
    if tf_ns % base_ns:
        raise ValueError(f"timeframe {timeframe} is not a multiple of the base {base}")
    n = ts_ns.shape[0]
    bucket = ts_ns // tf_ns
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]]) if n else np.zeros(0, int)
    last = np.r_[starts[1:] - 1, n - 1].astype(np.int64) if n else np.zeros(0, np.int64)
    complete = ts_ns[last] + base_ns >= (bucket[last] + 1) * tf_ns
    # a bucket whose last bar is missing closes on the first row of the next bucket
    visible = np.where(complete, last, last + 1)
    keep = visible < n
    s, e = starts[keep], last[keep]
    return ResampledBars(
        timestamp=bucket[s] * tf_ns,
        open=open_[s],
        high=np.maximum.reduceat(high, starts)[keep] if n else high[:0],
        low=np.minimum.reduceat(low, starts)[keep] if n else low[:0],
        close=close[e],
        volume=_segment_sums(volume, starts, last)[keep],
        visible_row=visible[keep],
    )


def _segment_sums(x: np.ndarray, starts: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Left-to-right sum of each segment ``x[starts[k]:last[k] + 1]``.

    Vectorised over segments, sequential within one, so the sums are bit for
    bit those of :class:`BarAggregator` adding one bar at a time.
    """
    total = np.zeros(starts.shape[0])
    lengths = last - starts + 1
    for j in range(int(lengths.max()) if lengths.size else 0):
        live = lengths > j
        total[live] += x[starts[live] + j]
    return total


def resample_ohlcv(frame: pd.DataFrame, timeframe: str, *, base: str) -> pd.DataFrame:
    """Closed ``timeframe`` bars of an OHLCV frame indexed by UTC open time.

    Same columns as the input, indexed by the bucket's open time; buckets that
    had not closed by the last row are left out.
    """
    idx = pd.DatetimeIndex(frame.index)
    ts = idx.as_unit("ns").asi8
    cols = [frame[c].to_numpy(np.float64) for c in ("open", "high", "low", "close", "volume")]
    r = resample_arrays(ts, *cols, base=base, timeframe=timeframe)
    out_idx = pd.DatetimeIndex(pd.to_datetime(r.timestamp, unit="ns", utc=True), name=idx.name)
    return pd.DataFrame(
        {"open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume},
        index=out_idx,
    )


class BarAggregator:
    """Incremental twin of :func:`resample_arrays`: feed base bars, get closed bars back.

    ``push`` returns the list (usually empty, at most two entries) of bars
    ``(ts_ns, open, high, low, close, volume)`` that closed with this base bar,
    oldest first.
    """

    __slots__ = ("_bar", "_base_ns", "_bucket", "_tf_ns")

    def __init__(self, base: str, timeframe: str) -> None:
        self._base_ns = timeframe_ns(base)
        self._tf_ns = timeframe_ns(timeframe)
        self._bucket = -1
        self._bar: list[float] = []

    def push(self, ts_ns: int, o: float, h: float, lo: float, c: float, v: float) -> list[tuple]:
        closed: list[tuple] = []
        bucket = ts_ns // self._tf_ns
        bar = self._bar
        if bucket != self._bucket:
            if bar:
                closed.append((self._bucket * self._tf_ns, *bar))
            self._bucket = bucket
            bar = self._bar = [o, h, lo, c, v]
        else:
            if h > bar[1]:
                bar[1] = h
            if lo < bar[2]:
                bar[2] = lo
            bar[3] = c
            bar[4] += v
        if ts_ns + self._base_ns >= (bucket + 1) * self._tf_ns:
            closed.append((bucket * self._tf_ns, *bar))
            self._bar = []
        return closed
