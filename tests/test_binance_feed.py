"""python-binance's real client path (AsyncClient REST + BinanceSocketManager websocket) against the
local Binance-compatible replay server on 127.0.0.1, serving the bundled 1m candles."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from l1_operational.binance_replay_server import BinanceReplayServer
from l1_operational.datafeed import BinanceFeed, merged_bars
from l2_tactical.config import L2Config
from tests.l1_support import BTC_1M, ETH_1M, arrays, bars, utc

LIMITS = L2Config.default().symbols
START = "2025-06-01T00:00:00Z"
pytestmark = pytest.mark.timeout(120)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=90))


def expected(path, start, n):
    return list(merged_bars([arrays(path)], start=start))[:n]


def test_binance_feed_backfills_over_rest_then_streams_closed_klines():
    async def scenario():
        async with BinanceReplayServer([BTC_1M], limits=LIMITS, start=START, ws_max_bars=5) as server:
            feed = BinanceFeed(
                ["BTCUSDT"], "1m", backfill=10, rest_url=server.rest_url, stream_url=server.stream_url, max_bars=15
            )
            got = [bar async for bar in feed]
            return got, server.requests

    got, requests = run(scenario())
    history = bars(BTC_1M, "2025-05-31T23:50:00Z", START)  # the 10 bars before the server's "now"
    live = expected(BTC_1M, START, 5)
    assert got == history + live  # exact prices: the string round trip loses nothing
    assert all(b.symbol == "BTCUSDT" and b.interval == "1m" for b in got)
    assert "/api/v3/ping" in requests and "/api/v3/klines" in requests
    assert "/ws/btcusdt@kline_1m" in requests


def test_binance_feed_drops_the_bar_in_progress_from_the_backfill():
    async def scenario():
        async with BinanceReplayServer([BTC_1M], limits=LIMITS, start=START, ws_max_bars=0) as server:
            async with aiohttp.ClientSession() as http:
                raw = await (
                    await http.get(
                        f"{server.rest_url}/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": "3"}
                    )
                ).json()
            feed = BinanceFeed(
                ["BTCUSDT"], "1m", backfill=3, rest_url=server.rest_url, stream_url=server.stream_url, max_bars=3
            )
            return raw, [bar async for bar in feed]

    raw, got = run(scenario())
    assert raw[-1][0] == int(utc(START).timestamp() * 1000)  # Binance-like: the open bar is included...
    assert got[-1].open_time == utc("2025-05-31T23:59:00Z")  # ...and the feed does not yield it
    assert len(got) == 3


def test_binance_feed_merges_two_symbols_streams_without_duplicates():
    async def scenario():
        async with BinanceReplayServer([BTC_1M, ETH_1M], limits=LIMITS, start=START, ws_max_bars=4) as server:
            feed = BinanceFeed(
                ["BTCUSDT", "ETHUSDT"],
                "1m",
                backfill=2,
                rest_url=server.rest_url,
                stream_url=server.stream_url,
                max_bars=12,
            )
            return [bar async for bar in feed]

    got = run(scenario())
    for symbol, path in (("BTCUSDT", BTC_1M), ("ETHUSDT", ETH_1M)):
        mine = [b for b in got if b.symbol == symbol]
        assert mine == bars(path, "2025-05-31T23:58:00Z", START) + expected(path, START, 4)
    assert got[:4] == sorted(got[:4], key=lambda b: b.open_time)


def test_binance_feed_reports_an_unreachable_server_with_a_clear_error():
    feed = BinanceFeed(["BTCUSDT"], rest_url="http://127.0.0.1:9", stream_url="ws://127.0.0.1:9/", max_bars=1)

    async def scenario():
        return [bar async for bar in feed]

    with pytest.raises(aiohttp.ClientConnectionError):
        run(scenario())


def test_binance_feed_validates_its_arguments():
    with pytest.raises(ValueError, match="interval"):
        BinanceFeed(["BTCUSDT"], "7m")
    with pytest.raises(ValueError, match="backfill"):
        BinanceFeed(["BTCUSDT"], backfill=5000)
