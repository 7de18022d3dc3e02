"""Market data for L1: closed bars from a candle file (replay) or from Binance (python-binance).

Both feeds are async iterators of :class:`Bar` (closed bars only, ascending per symbol):

* :class:`ReplayFeed` replays one or more bundled candle files (``timestamp,open,high,low,
  close,volume`` CSV/CSV.gz, the format of ``data/``), merged by time, at ``speed`` x real
  time (``speed=0``: as fast as possible). The last bar of a 1m file may have been still
  forming when it was downloaded (data/README.md), so it is dropped by default.
* :class:`BinanceFeed` (``l1_operational.binance_feed``) backfills with REST ``get_klines`` and
  then follows the kline websocket, yielding a bar only when Binance marks it closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from l2_tactical.errors import DataError

INTERVALS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400,
             "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400}
_NAME = re.compile(r"(?P<symbol>[A-Z0-9]+)[-_](?P<interval>\d+[mhd])")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One closed OHLCV bar; ``open_time`` is the bar's open (UTC)."""

    symbol: str
    interval: str
    open_time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def close_time(self) -> datetime:
        """The instant the bar closes (= the next bar's open time)."""
        return self.open_time + timedelta(seconds=INTERVALS[self.interval])


@dataclasses.dataclass(frozen=True, slots=True)
class CandleArrays:
    """A candle file as arrays: ``times`` int64 ms since epoch (bar open), prices float64."""

    symbol: str
    interval: str
    times: np.ndarray
    ohlcv: np.ndarray  # shape (n, 5): open, high, low, close, volume

    def bar(self, i: int) -> Bar:
        o, h, lo, c, v = (float(x) for x in self.ohlcv[i])
        t = datetime.fromtimestamp(int(self.times[i]) / 1000, tz=timezone.utc)
        return Bar(symbol=self.symbol, interval=self.interval, open_time=t, open=o, high=h, low=lo, close=c, volume=v)

    def __len__(self) -> int:
        return len(self.times)


def parse_source_name(path: str | Path) -> tuple[str, str]:
    """``data/BTCUSDT-1m.csv.gz`` -> ``("BTCUSDT", "1m")``."""
    m = _NAME.search(Path(path).name)
    if not m or m["interval"] not in INTERVALS:
        raise DataError("cannot tell symbol and interval from the file name (expected e.g. BTCUSDT-1h.csv.gz)",
                        file=str(path))
    return m["symbol"], m["interval"]


def read_candle_arrays(path: str | Path, *, symbol: str | None = None, interval: str | None = None) -> CandleArrays:
    """Read a ``timestamp,open,high,low,close,volume`` file; bad content raises DataError with file and row."""
    import pandas as pd

    name_symbol, name_interval = (symbol, interval) if symbol and interval else parse_source_name(path)
    try:
        df = pd.read_csv(path, dtype={c: "float64" for c in ("open", "high", "low", "close", "volume")})
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"unreadable candle file ({exc})", file=str(path)) from None
    expected = ["timestamp", "open", "high", "low", "close", "volume"]
    if [c.lower() for c in df.columns] != expected:
        raise DataError(f"header {list(df.columns)} != {expected}", file=str(path), line=1)
    times = pd.to_datetime(df["timestamp"], utc=True, errors="coerce")
    bad = np.flatnonzero(times.isna().to_numpy() | df[expected[1:]].isna().any(axis=1).to_numpy())
    if bad.size:
        raise DataError("unparsable timestamp or empty price", file=str(path), row=int(bad[0]) + 1)
    ms = times.dt.as_unit("ms").astype("int64").to_numpy(dtype=np.int64)
    order = np.flatnonzero(np.diff(ms) <= 0)
    if order.size:
        raise DataError("timestamps not strictly ascending", file=str(path), row=int(order[0]) + 2, column="timestamp")
    ohlcv = np.ascontiguousarray(df[expected[1:]].to_numpy(dtype=np.float64))
    return CandleArrays(symbol or name_symbol, interval or name_interval, ms, ohlcv)


def _iso_ms(when: datetime | str | None) -> int | None:
    if when is None:
        return None
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def merged_bars(sources: Sequence[CandleArrays], *, start: datetime | str | None = None,
                end: datetime | str | None = None, drop_last: bool | None = None) -> Iterator[Bar]:
    """Bars of several sources in time order (ties: source order); ``end`` is exclusive.

    ``drop_last=None`` drops a 1m source's last bar (possibly still forming when downloaded).
    """
    lo, hi = _iso_ms(start), _iso_ms(end)
    ranges = []
    for src in sources:
        n = len(src) - (1 if (drop_last if drop_last is not None else src.interval == "1m") else 0)
        i0 = int(np.searchsorted(src.times[:n], lo)) if lo is not None else 0
        i1 = int(np.searchsorted(src.times[:n], hi)) if hi is not None else n
        ranges.append((i0, i1))
    heap = [(int(src.times[i0]), k, i0) for k, (src, (i0, i1)) in enumerate(zip(sources, ranges, strict=True))
            if i0 < i1]
    heapq.heapify(heap)
    while heap:
        _, k, i = heapq.heappop(heap)
        yield sources[k].bar(i)
        if i + 1 < ranges[k][1]:
            heapq.heappush(heap, (int(sources[k].times[i + 1]), k, i + 1))


class ReplayFeed:
    """Async iterator over closed bars of candle files at ``speed`` x real time (0 = no waiting).

    >>> import asyncio
    >>> feed = ReplayFeed(["data/BTCUSDT-1h.csv.gz"], start="2020-03-12T10:00:00Z", limit=2)
    >>> async def first(): return [b.close async for b in feed]
    >>> asyncio.run(first())
    [6014.9, 6067.01]
    """

    def __init__(self, paths: Sequence[str | Path] | str | Path, *, speed: float = 0.0,
                 start: datetime | str | None = None, end: datetime | str | None = None,
                 drop_last: bool | None = None, limit: int | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if not (speed >= 0):
            raise ValueError(f"speed={speed!r}: must be >= 0 (0 = as fast as possible)")
        self.paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not self.paths:
            raise ValueError("paths: at least one candle file is needed")
        self.speed, self.start, self.end, self.drop_last, self.limit = speed, start, end, drop_last, limit
        self._sleep = sleep
        self.sources = [read_candle_arrays(p) for p in self.paths]

    @property
    def symbols(self) -> list[str]:
        return [s.symbol for s in self.sources]

    def __aiter__(self) -> AsyncIterator[Bar]:
        return self._run()

    async def _run(self) -> AsyncIterator[Bar]:
        previous: datetime | None = None
        for n, bar in enumerate(merged_bars(self.sources, start=self.start, end=self.end, drop_last=self.drop_last)):
            if self.limit is not None and n >= self.limit:
                return
            if self.speed > 0 and previous is not None and bar.open_time > previous:
                await self._sleep((bar.open_time - previous).total_seconds() / self.speed)
            elif n % 256 == 0:
                await asyncio.sleep(0)  # let other tasks (bus consumers) run even at full speed
            previous = bar.open_time
            yield bar
