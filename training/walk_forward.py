"""Walk-forward split by time: train / validation / test with a purge gap, as MarketData windows.

The boundaries come from ``L2Config.walk_forward`` (``config/l2_config.yaml``)::

    train       [first bar,                       train_end)
    validation  [train_end + purge_bars bars,      validation_end)
    test        [validation_end + purge_bars bars, last bar]

Each window is its own :class:`~envs.market_data.MarketData`, built from the candles of that
window only, plus a warm-up of *earlier* candles so that its features are ready at the window's
first bar (features at bar t use candles closed at or before t, so looking back is no leak).
A window's MarketData therefore never holds a candle at or after the window's end: the training
and validation data cannot even see a test candle. :func:`test_window` is only called after
training and model selection have finished.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from envs.market_data import MarketData
from l2_tactical.errors import DataError

_NS = 1_000_000_000


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WalkForwardSplit:
    """Window boundaries as int64 epoch nanoseconds (half-open ``[start, end)``); ``test_end`` None = open."""

    train_end: int
    validation_start: int
    validation_end: int
    test_start: int
    purge_bars: int
    bar_seconds: int

    def __post_init__(self) -> None:
        if not self.train_end <= self.validation_start < self.validation_end <= self.test_start:
            raise ValueError(f"walk-forward windows out of order: {self.describe()}")

    def describe(self) -> dict[str, str]:
        """The boundaries as ISO-8601 UTC strings."""
        return {
            name: iso(getattr(self, name)) for name in ("train_end", "validation_start", "validation_end", "test_start")
        }


def iso(ns: int) -> str:
    """Epoch nanoseconds -> ``2023-01-01T00:00:00+00:00``.

    >>> iso(1_672_531_200 * 10**9)
    '2023-01-01T00:00:00+00:00'
    """
    import pandas as pd

    return pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat()


def to_ns(value: str) -> int:
    """ISO date/time (naive = UTC) -> epoch nanoseconds."""
    import pandas as pd

    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def split_from_config(walk_forward: Any, bar_seconds: int) -> WalkForwardSplit:
    """The split of ``L2Config.walk_forward`` for bars of ``bar_seconds``."""
    purge = int(walk_forward.purge_bars) * int(bar_seconds) * _NS
    train_end, validation_end = to_ns(walk_forward.train_end), to_ns(walk_forward.validation_end)
    return WalkForwardSplit(
        train_end=train_end,
        validation_start=train_end + purge,
        validation_end=validation_end,
        test_start=validation_end + purge,
        purge_bars=int(walk_forward.purge_bars),
        bar_seconds=int(bar_seconds),
    )


def slice_rows(md: MarketData, lo: int, hi: int) -> MarketData:
    """Rows ``[lo, hi)`` of ``md`` as a MarketData (views, no copy); segments clipped and shifted."""
    if not 0 <= lo <= hi <= len(md):
        raise ValueError(f"slice_rows({lo}, {hi}): not a range inside [0, {len(md)}]")
    segments = tuple((max(s, lo) - lo, min(e, hi) - lo) for s, e in md.segments if min(e, hi) > max(s, lo))
    return MarketData(
        symbol=md.symbol,
        timeframe=md.timeframe,
        features=md.features[lo:hi],
        feature_names=md.feature_names,
        feature_low=md.feature_low,
        feature_high=md.feature_high,
        open=md.open[lo:hi],
        high=md.high[lo:hi],
        low=md.low[lo:hi],
        close=md.close[lo:hi],
        timestamps=md.timestamps[lo:hi],
        segments=segments,
        schema_hash=md.schema_hash,
    )


def window_market_data(
    candles: Any, feature_set: Any, start: int | None, end: int | None, warmup_bars: int
) -> MarketData:
    """MarketData of the bars with ``start <= timestamp < end`` (ns; None = open), features warmed up on
    the ``warmup_bars`` bars before ``start``. Raises DataError when the window holds no bar."""
    import pandas as pd

    step = int(candles.step_ns)
    lo = None if start is None else pd.Timestamp(start - warmup_bars * step, unit="ns", tz="UTC")
    hi = None if end is None else pd.Timestamp(end, unit="ns", tz="UTC")
    md = MarketData.from_candles(candles.slice(lo, hi), feature_set)
    first = 0 if start is None else int(np.searchsorted(md.timestamps, start, side="left"))
    if first >= len(md):
        raise DataError(
            f"{candles.symbol}: no bar in the window [{_label(start)}, {_label(end)})",
            file=getattr(candles, "source", None),
        )
    return slice_rows(md, first, len(md))


def _label(ns: int | None) -> str:
    return "open" if ns is None else iso(ns)


def warmup_for(feature_set: Any, window: int) -> int:
    """Bars of history a window needs before its first bar: the FeatureSet's lookback plus the obs window."""
    return int(feature_set.lookback_bars) + int(window) + 1


def train_window(candles: Any, feature_set: Any, split: WalkForwardSplit) -> MarketData:
    """The training window: every bar before ``train_end``."""
    return window_market_data(candles, feature_set, None, split.train_end, 0)


def validation_window(candles: Any, feature_set: Any, split: WalkForwardSplit, window: int) -> MarketData:
    """The validation window ``[validation_start, validation_end)``."""
    return window_market_data(
        candles, feature_set, split.validation_start, split.validation_end, warmup_for(feature_set, window)
    )


def test_window(candles: Any, feature_set: Any, split: WalkForwardSplit, window: int) -> MarketData:
    """The test window ``[test_start, last bar]``; only for the final, once-only evaluation."""
    return window_market_data(candles, feature_set, split.test_start, None, warmup_for(feature_set, window))


def period_of(mds: list[MarketData], end: int | None = None) -> tuple[str, str]:
    """``(first bar, end)`` ISO strings of a window over several symbols (end: the boundary, else last bar + 1)."""
    first = min(int(md.timestamps[0]) for md in mds)
    last = max(int(md.timestamps[-1]) + md.bar_seconds * _NS for md in mds)
    return iso(first), iso(end if end is not None else last)


test_window.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name
