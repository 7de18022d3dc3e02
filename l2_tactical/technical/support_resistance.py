"""Support and resistance from swing highs and lows, without look-ahead.

A *swing high* at bar ``j`` is a high that is the maximum of the ``2w + 1``
highs ``j - w .. j + w``; it can only be known once bar ``j + w`` has closed,
so it *becomes a level* at ``j + w`` (swing lows likewise with the lows). The
levels in force at bar ``t`` are the prices of the last ``n_levels`` swing
points (highs and lows together: a broken resistance becomes support)
confirmed at or before ``t``.

From the levels: the nearest resistance is the lowest level strictly above
the close and the nearest support the highest level strictly below it (nan
when there is none). A *breakout* at ``t`` is a close above the resistance in
force at ``t - 1`` (or below its support: breakdown) on volume at least
``vol_mult`` times the mean volume of the last ``vol_period`` bars.

>>> import numpy as np
>>> high = np.array([1, 2, 5, 2, 1, 2, 3], dtype=float)
>>> low = high - 0.5
>>> levels = swing_levels(high, low, swing=2, n_levels=4)
>>> np.nan_to_num(levels[-1]).tolist()   # the swing high 5 (bar 2) confirmed on bar 4, low 0.5 on bar 6
[0.0, 0.0, 5.0, 0.5]
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _swing_mask(x: np.ndarray, swing: int, *, high: bool) -> np.ndarray:
    """``mask[t]`` is True when bar ``t - swing`` is a swing point confirmed at ``t``."""
    n, width = x.shape[0], 2 * swing + 1
    mask = np.zeros(n, dtype=bool)
    if n < width:
        return mask
    w = sliding_window_view(x, width)
    extreme = w.max(axis=1) if high else w.min(axis=1)
    mask[width - 1 :] = x[swing : n - swing] == extreme
    return mask


def swing_levels(high: np.ndarray, low: np.ndarray, swing: int, n_levels: int) -> np.ndarray:
    """``[n, n_levels]`` levels in force at each bar, oldest first, nan-padded on the left."""
    n = high.shape[0]
    hi_mask = _swing_mask(high, swing, high=True)
    lo_mask = _swing_mask(low, swing, high=False)
    # events in confirmation order; a high before a low on the same bar
    ev_bar = np.concatenate([np.flatnonzero(hi_mask), np.flatnonzero(lo_mask)])
    ev_kind = np.concatenate([np.zeros(hi_mask.sum(), int), np.ones(lo_mask.sum(), int)])
    order = np.lexsort((ev_kind, ev_bar))
    ev_bar, ev_kind = ev_bar[order], ev_kind[order]
    prices = np.where(ev_kind == 0, high[np.maximum(ev_bar - swing, 0)], low[np.maximum(ev_bar - swing, 0)])
    padded = np.concatenate([np.full(n_levels, np.nan), prices])
    count = np.searchsorted(ev_bar, np.arange(n), side="right")
    return sliding_window_view(padded, n_levels)[count]


def nearest_levels(levels: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest resistance (lowest level > close) and support (highest level < close); nan if none."""
    above = np.where(levels > close[:, None], levels, np.inf).min(axis=1)
    below = np.where(levels < close[:, None], levels, -np.inf).max(axis=1)
    return np.where(np.isinf(above), np.nan, above), np.where(np.isinf(below), np.nan, below)


def breakouts(
    close: np.ndarray,
    volume: np.ndarray,
    resistance: np.ndarray,
    support: np.ndarray,
    volume_mean: np.ndarray,
    vol_mult: float,
) -> np.ndarray:
    """+1 breakout / -1 breakdown / 0, against the levels in force on the previous bar."""
    out = np.zeros(close.shape[0])
    if close.shape[0] < 2:
        return out
    confirmed = volume[1:] >= vol_mult * volume_mean[1:]
    up = (close[1:] > resistance[:-1]) & confirmed
    down = (close[1:] < support[:-1]) & confirmed
    out[1:] = up.astype(float) - down.astype(float)
    return out


class SwingLevels:
    """Incremental twin of :func:`swing_levels` + :func:`nearest_levels`."""

    __slots__ = ("_highs", "_lows", "levels", "swing")

    def __init__(self, swing: int, n_levels: int) -> None:
        self.swing = swing
        self.levels: deque[float] = deque(maxlen=n_levels)
        self._highs: deque[float] = deque(maxlen=2 * swing + 1)
        self._lows: deque[float] = deque(maxlen=2 * swing + 1)

    def update(self, high: float, low: float) -> None:
        self._highs.append(high)
        self._lows.append(low)
        if len(self._highs) < 2 * self.swing + 1:
            return
        mid_high = self._highs[self.swing]
        if mid_high == max(self._highs):
            self.levels.append(mid_high)
        mid_low = self._lows[self.swing]
        if mid_low == min(self._lows):
            self.levels.append(mid_low)

    def nearest(self, close: float) -> tuple[float, float]:
        """(resistance, support) for ``close``; nan where there is none."""
        res, sup = np.inf, -np.inf
        for lvl in self.levels:
            if close < lvl < res:
                res = lvl
            elif sup < lvl < close:
                sup = lvl
        return (res if res != np.inf else np.nan), (sup if sup != -np.inf else np.nan)
