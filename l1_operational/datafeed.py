"""Market data for L1: closed bars from a candle file (replay) or from Binance (python-binance).

Both feeds are async iterators of :class:`Bar` (closed bars only, ascending per symbol):

* :class:`ReplayFeed` replays one or more bundled candle files (``timestamp,open,high,low,
  close,volume`` CSV/CSV.gz, the format of ``data/``), merged by time, at ``speed`` x real
  time on an absolute schedule (``speed=0``: as fast as possible). The last bar of a 1m file may have been still
  forming when it was downloaded (data/README.md), so it is dropped by default.
* :class:`BinanceFeed` backfills with python-binance's REST ``get_klines`` and then follows the
  kline websocket, yielding a bar only once Binance marks it closed. Its base URLs are
  configurable, so tests point it at :mod:`l1_operational.binance_replay_server` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from l2_tactical.data.bar import Bar
from l2_tactical.data.candles import TIMEFRAMES
from l2_tactical.errors import DataError

INTERVALS = TIMEFRAMES  # bar length in seconds per interval name (one table, in l2_tactical.data)
SOCKET_POLL_SECONDS = 0.25
_NAME = re.compile(r"(?P<symbol>[A-Z0-9]+)[-_](?P<interval>\d+[mhd])")


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
    times = pd.to_datetime(df["timestamp"], utc=True, errors="coerce", format="ISO8601")
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
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 monotonic: Callable[[], float] | None = None) -> None:
        if not (speed >= 0):
            raise ValueError(f"speed={speed!r}: must be >= 0 (0 = as fast as possible)")
        self.paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not self.paths:
            raise ValueError("paths: at least one candle file is needed")
        self.speed, self.start, self.end, self.drop_last, self.limit = speed, start, end, drop_last, limit
        self._sleep = sleep
        if monotonic is None and sleep is not asyncio.sleep:
            monotonic = _SleptTime(self)   # an injected sleep defines time (it may not really sleep)
        self._monotonic = monotonic or time.monotonic
        self.sources = [read_candle_arrays(p) for p in self.paths]

    @property
    def symbols(self) -> list[str]:
        return [s.symbol for s in self.sources]

    def __aiter__(self) -> AsyncIterator[Bar]:
        return self._run()

    async def _run(self) -> AsyncIterator[Bar]:
        """Bar k is due at ``t0 + (open_k - open_0) / speed`` on the monotonic clock: an absolute schedule,
        so the consumer's processing time does not add up as drift (a late consumer gets the due bars
        without waiting until it is back on schedule)."""
        first: datetime | None = None
        t0 = 0.0
        for n, bar in enumerate(merged_bars(self.sources, start=self.start, end=self.end, drop_last=self.drop_last)):
            if self.limit is not None and n >= self.limit:
                return
            if self.speed > 0 and first is not None:
                wait = t0 + (bar.open_time - first).total_seconds() / self.speed - self._monotonic()
                if wait > 0:
                    await self._sleep(wait)
                elif n % 256 == 0:
                    await asyncio.sleep(0)
            elif n % 256 == 0:
                await asyncio.sleep(0)  # let other tasks (bus consumers) run even at full speed
            if first is None:
                first, t0 = bar.open_time, self._monotonic()
            yield bar


class _SleptTime:
    """A clock that advances only by what the feed slept (for an injected ``sleep``)."""

    def __init__(self, feed: ReplayFeed) -> None:
        self.now = 0.0
        inner = feed._sleep

        async def sleep(seconds: float) -> None:
            self.now += seconds
            await inner(seconds)

        feed._sleep = sleep

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------ Binance


def bar_from_kline(symbol: str, interval: str, row: Sequence[object]) -> Bar:
    """A Binance REST kline array ``[t, o, h, l, c, v, T, ...]`` -> Bar."""
    t, o, h, lo, c, v = row[:6]
    return Bar(symbol=symbol, interval=interval, open_time=datetime.fromtimestamp(int(t) / 1000, tz=timezone.utc),  # type: ignore[call-overload]
               open=float(o), high=float(h), low=float(lo), close=float(c), volume=float(v))  # type: ignore[arg-type]


def bar_from_event(event: dict[str, object]) -> Bar | None:
    """A kline websocket event -> Bar when the bar is closed (``"x": true``), else None."""
    k = event.get("k")
    if event.get("e") != "kline" or not isinstance(k, dict) or not k.get("x"):
        return None
    return bar_from_kline(str(k["s"]), str(k["i"]), [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"]])


class BinanceFeed:
    """Closed bars from Binance through python-binance: REST backfill, then the kline websocket.

    ``rest_url`` (e.g. ``http://127.0.0.1:8765``) and ``stream_url`` (``ws://127.0.0.1:8765/``)
    replace python-binance's hosts; ``testnet=True`` uses Binance's spot testnet hosts. Market
    data needs no API key. ``max_bars`` ends the iteration (tests, bounded runs).
    """

    def __init__(self, symbols: Sequence[str], interval: str = "1m", *, backfill: int = 0,
                 rest_url: str | None = None, stream_url: str | None = None, testnet: bool = False,
                 max_bars: int | None = None) -> None:
        if interval not in INTERVALS:
            raise ValueError(f"interval={interval!r}: not one of {sorted(INTERVALS)}")
        if not 0 <= backfill <= 1000:
            raise ValueError(f"backfill={backfill!r}: must be in [0, 1000] (one get_klines call)")
        self.symbols, self.interval, self.backfill = [s.upper() for s in symbols], interval, backfill
        self.rest_url, self.stream_url, self.testnet, self.max_bars = rest_url, stream_url, testnet, max_bars

    async def _client(self) -> object:
        from binance import AsyncClient

        client = AsyncClient(testnet=self.testnet)
        if self.rest_url:
            client.API_URL = self.rest_url.rstrip("/") + "/api"
        try:
            await client.ping()
        except Exception:
            await client.close_connection()
            raise
        return client

    def __aiter__(self) -> AsyncIterator[Bar]:
        return self._run()

    async def _run(self) -> AsyncIterator[Bar]:
        from binance import BinanceSocketManager

        client = await self._client()
        last: dict[str, datetime] = {}
        emitted = 0
        try:
            for bar in await self._backfill(client):
                if self.max_bars is not None and emitted >= self.max_bars:
                    return
                last[bar.symbol] = bar.open_time
                emitted += 1
                yield bar
            manager = BinanceSocketManager(client)  # type: ignore[arg-type]
            if self.stream_url:
                manager.STREAM_URL = self.stream_url
            queue: asyncio.Queue[Bar | BaseException] = asyncio.Queue()
            sockets = [manager.kline_socket(s, interval=self.interval) for s in self.symbols]
            readers = []
            try:
                for socket in sockets:
                    socket.TIMEOUT = SOCKET_POLL_SECONDS  # bounds how long a close waits for the read loop
                    await socket.__aenter__()
                    readers.append(asyncio.create_task(self._read(socket, queue)))
                while self.max_bars is None or emitted < self.max_bars:
                    item = await queue.get()
                    if isinstance(item, BaseException):
                        raise item
                    if item.symbol in last and item.open_time <= last[item.symbol]:
                        continue   # overlap with the backfill or a reconnect
                    last[item.symbol] = item.open_time
                    emitted += 1
                    yield item
            finally:
                # Closing the socket ends its read loop, which makes a pending recv() raise; cancelling
                # recv() alone is not reliable (python-binance 1.0.37 retries its queue wait).
                for socket in sockets:
                    await socket.__aexit__(None, None, None)
                if readers:
                    await asyncio.wait(readers, timeout=5 * SOCKET_POLL_SECONDS + 1)
                for task in readers:
                    task.cancel()
        finally:
            await client.close_connection()  # type: ignore[attr-defined]

    async def _backfill(self, client: object) -> list[Bar]:
        if not self.backfill:
            return []
        now_ms = int((await client.get_server_time())["serverTime"])  # type: ignore[attr-defined]
        out: list[Bar] = []
        for symbol in self.symbols:
            rows = await client.get_klines(symbol=symbol, interval=self.interval,  # type: ignore[attr-defined]
                                           limit=self.backfill + 1)
            closed = [r for r in rows if int(r[6]) < now_ms]          # drop the bar in progress
            out += [bar_from_kline(symbol, self.interval, r) for r in closed[-self.backfill:]]
        return sorted(out, key=lambda b: (b.open_time, self.symbols.index(b.symbol)))

    async def _read(self, socket: object, queue: asyncio.Queue[Bar | BaseException]) -> None:
        from l2_tactical.errors import TransientError

        try:
            while True:
                event = await socket.recv()  # type: ignore[attr-defined]
                if event.get("e") == "error":
                    raise TransientError(f"kline websocket: {event.get('type')}: {event.get('m')}")
                bar = bar_from_event(event)
                if bar is not None:
                    await queue.put(bar)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put(exc)
