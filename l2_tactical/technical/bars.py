"""The two views of one timeframe's bars that feature kinds compute from.

:class:`BatchBars` holds whole arrays and memoises indicator arrays, so two
features that share an indicator (e.g. the ATR) compute it once.
:class:`StreamBars` is the incremental twin: it owns the streaming indicator
objects and the ring buffers that the requested features need, feeds each
closed bar to all of them once, and then the features read their values.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
Feed = Callable[[float, float, float, float, float], object]


class BatchBars:
    """OHLCV arrays (float64) of one timeframe plus a memo of derived arrays."""

    def __init__(
        self, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
    ) -> None:
        self.open, self.high, self.low, self.close, self.volume = open_, high, low, close, volume
        self._memo: dict[Hashable, Any] = {}

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


_APPENDERS: dict[str, Callable[[deque[float]], Feed]] = {
    "open": lambda d: lambda o, h, lo, c, v: d.append(o),
    "high": lambda d: lambda o, h, lo, c, v: d.append(h),
    "low": lambda d: lambda o, h, lo, c, v: d.append(lo),
    "close": lambda d: lambda o, h, lo, c, v: d.append(c),
    "volume": lambda d: lambda o, h, lo, c, v: d.append(v),
}


class StreamBars:
    """Streaming state of one timeframe: indicators and windows, fed once per closed bar."""

    def __init__(self) -> None:
        self.count = 0
        self.open = self.high = self.low = self.close = self.volume = np.nan
        self._objects: dict[Hashable, Any] = {}
        self._feeds: list[Feed] = []

    def indicator(self, key: Hashable, make: Callable[[], T], feed: Callable[[T], Feed]) -> T:
        """The shared object for ``key``, created (and subscribed to bars) on first request."""
        if key not in self._objects:
            obj = make()
            self._objects[key] = obj
            self._feeds.append(feed(obj))
        return self._objects[key]

    def window(self, field: str, size: int) -> deque[float]:
        """Ring buffer of the last ``size`` values of ``field`` (open/high/low/close/volume)."""
        if field not in _APPENDERS:
            raise ValueError(f"unknown bar field {field!r}")
        make: Callable[[], deque[float]] = lambda: deque(maxlen=size)  # noqa: E731
        return self.indicator(("window", field, size), make, _APPENDERS[field])

    def push(self, o: float, h: float, lo: float, c: float, v: float) -> None:
        """Feed one closed bar of this timeframe to every subscribed indicator."""
        self.count += 1
        self.open, self.high, self.low, self.close, self.volume = o, h, lo, c, v
        for feed in self._feeds:
            feed(o, h, lo, c, v)
