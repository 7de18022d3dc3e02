"""The local Binance-compatible server: endpoints, formats and errors, checked with python-binance and aiohttp."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from l1_operational.binance_replay_server import BinanceReplayServer
from l2_tactical.config import L2Config
from tests.l1_support import BTC_1H, ETH_1H, bars, utc

LIMITS = L2Config.default().symbols
START = "2020-03-12T10:00:00Z"
pytestmark = pytest.mark.timeout(120)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


async def with_client(fn):
    from binance import AsyncClient

    async with BinanceReplayServer([BTC_1H, ETH_1H], limits=LIMITS, start=START) as server:
        client = AsyncClient()
        client.API_URL = server.rest_url + "/api"
        try:
            return await fn(client, server)
        finally:
            await client.close_connection()


def test_replay_server_answers_ping_time_and_exchange_info_through_python_binance():
    async def calls(client, server):
        return await client.ping(), await client.get_server_time(), await client.get_symbol_info("ETHUSDT")

    ping, server_time, info = run(with_client(calls))
    assert ping == {}
    assert server_time["serverTime"] == int(utc(START).timestamp() * 1000)
    filters = {f["filterType"]: f for f in info["filters"]}
    assert info["baseAsset"] == "ETH" and info["quoteAsset"] == "USDT"
    assert float(filters["LOT_SIZE"]["stepSize"]) == LIMITS["ETHUSDT"].lot_step
    assert float(filters["LOT_SIZE"]["minQty"]) == LIMITS["ETHUSDT"].min_qty
    assert float(filters["MIN_NOTIONAL"]["minNotional"]) == LIMITS["ETHUSDT"].min_notional
    assert float(filters["PRICE_FILTER"]["tickSize"]) == 0.01


def test_replay_server_klines_by_time_range_match_the_file():
    async def calls(client, server):
        return await client.get_klines(symbol="BTCUSDT", interval="1h",
                                       startTime=int(utc("2020-03-12T06:00:00Z").timestamp() * 1000),
                                       endTime=int(utc("2020-03-12T08:00:00Z").timestamp() * 1000))

    rows = run(with_client(calls))
    want = bars(BTC_1H, "2020-03-12T06:00:00Z", "2020-03-12T09:00:00Z")
    assert len(rows) == 3
    for row, bar in zip(rows, want, strict=True):
        assert row[0] == int(bar.open_time.timestamp() * 1000) and row[6] == row[0] + 3_600_000 - 1
        assert all(isinstance(v, str) for v in row[1:6])                       # Binance sends prices as strings
        assert [float(v) for v in row[1:6]] == [bar.open, bar.high, bar.low, bar.close, bar.volume]


def test_replay_server_never_serves_bars_after_its_clock():
    async def calls(client, server):
        return await client.get_klines(symbol="BTCUSDT", interval="1h", limit=5)

    rows = run(with_client(calls))
    in_progress = rows[-1]
    assert in_progress[0] == int(utc(START).timestamp() * 1000)               # the bar that just opened...
    real = bars(BTC_1H, START, "2020-03-12T11:00:00Z")[0]
    assert float(in_progress[1]) == real.open and float(in_progress[3]) == real.open   # ...shows only its open
    assert float(in_progress[5]) == 0.0                                        # (its real low 5,550 is future)
    assert [r[0] for r in rows[:-1]] == [int(b.open_time.timestamp() * 1000)
                                         for b in bars(BTC_1H, "2020-03-12T06:00:00Z", START)]


@pytest.mark.parametrize(("params", "code"), [
    ({"symbol": "DOGEUSDT", "interval": "1h"}, -1121),
    ({"symbol": "BTCUSDT", "interval": "1m"}, -1120),
    ({"interval": "1h"}, -1102),
    ({"symbol": "BTCUSDT", "interval": "1h", "limit": "5000"}, -1130),
    ({"symbol": "BTCUSDT", "interval": "1h", "startTime": "yesterday"}, -1100),
])
def test_replay_server_rejects_bad_kline_requests_with_binance_error_codes(params, code):
    async def calls(client, server):
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{server.rest_url}/api/v3/klines", params=params)
            return resp.status, await resp.json()

    status, body = run(with_client(calls))
    assert status == 400 and body["code"] == code and body["msg"]


def test_replay_server_errors_reach_python_binance_as_api_exceptions():
    from binance.exceptions import BinanceAPIException

    async def calls(client, server):
        return await client.get_klines(symbol="NOPEUSDT", interval="1h")

    with pytest.raises(BinanceAPIException, match="Invalid symbol"):
        run(with_client(calls))


def test_replay_server_only_listens_on_loopback():
    with pytest.raises(ValueError, match="loopback"):
        BinanceReplayServer([BTC_1H], limits=LIMITS, host="0.0.0.0")
