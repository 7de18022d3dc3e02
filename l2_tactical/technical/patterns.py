"""Candlestick patterns through TA-Lib's CDL functions.

TA-Lib returns +100 (bullish), -100 (bearish) or 0 per bar (a few patterns use
+/-200 for a confirmed variant). A pattern's output at bar t depends only on
a bounded window of bars (its TA-Lib lookback: the pattern's own candles plus
the averaging periods of TA-Lib's candle settings, at most ~13 bars), so the
incremental :class:`PatternWindow` calls TA-Lib on exactly that window.

>>> import numpy as np
>>> o, h, l, c = (np.array(x, dtype=float) for x in ([10.0] * 12, [11.0] * 12, [9.0] * 12, [10.0] * 12))
>>> int(detect_pattern("doji", o, h, l, c)[-1])
100
"""

from __future__ import annotations

import numpy as np
import talib
from talib import abstract

#: pattern name -> TA-Lib function
PATTERNS: dict[str, str] = {
    "hammer": "CDLHAMMER",
    "inverted_hammer": "CDLINVERTEDHAMMER",
    "engulfing": "CDLENGULFING",
    "doji": "CDLDOJI",
    "morning_star": "CDLMORNINGSTAR",
    "evening_star": "CDLEVENINGSTAR",
    "shooting_star": "CDLSHOOTINGSTAR",
    "hanging_man": "CDLHANGINGMAN",
    "harami": "CDLHARAMI",
}
#: patterns that only make sense as reversal up / down; the others carry their own sign
# the C functions themselves, without talib's pandas/polars-aware Python wrapper (per-bar cost)
_RAW = {name: getattr(getattr(talib, fn), "__wrapped__", getattr(talib, fn)) for name, fn in PATTERNS.items()}
BULLISH = frozenset({"hammer", "inverted_hammer", "morning_star"})
BEARISH = frozenset({"evening_star", "shooting_star", "hanging_man"})
INDECISION = frozenset({"doji"})


def _function(name: str):
    try:
        return getattr(talib, PATTERNS[name])
    except KeyError:
        raise ValueError(f"unknown pattern {name!r}; known: {', '.join(PATTERNS)}") from None


def pattern_lookback(name: str) -> int:
    """TA-Lib's lookback of the pattern: bars before the first bar it can flag."""
    _function(name)
    return int(abstract.Function(PATTERNS[name]).lookback)  # type: ignore[attr-defined]


def detect_pattern(name: str, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """TA-Lib's output (int, -200..200) for every bar; 0 during warm-up."""
    return _function(name)(open_, high, low, close).astype(np.int64)


class PatternWindow:
    """Keeps the last ``size`` bars and evaluates patterns on the newest one.

    The bars live in a numpy ring written twice (at ``i`` and ``i + size``), so
    the last ``k`` bars are always a contiguous view: no allocation per bar.
    """

    __slots__ = ("_buf", "_count", "_pos", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf = np.zeros((4, 2 * size))
        self._pos = 0
        self._count = 0

    def update(self, o: float, h: float, lo: float, c: float) -> None:
        buf, pos, size = self._buf, self._pos, self.size
        buf[:, pos] = buf[:, pos + size] = (o, h, lo, c)
        self._pos = (pos + 1) % size
        self._count += 1

    def value(self, name: str) -> float:
        """Pattern output on the newest bar, nan until the window holds its lookback + 1 bars."""
        need = pattern_lookback_cached(name) + 1
        if self._count < need:
            return np.nan
        end = self._pos + self.size
        o, h, lo, c = self._buf[:, end - need : end]
        return float(_RAW[name](o, h, lo, c)[-1])


_LOOKBACKS: dict[str, int] = {}


def pattern_lookback_cached(name: str) -> int:
    if name not in _LOOKBACKS:
        _LOOKBACKS[name] = pattern_lookback(name)
    return _LOOKBACKS[name]
