"""A local, Binance-compatible market-data server over the bundled candles (aiohttp, 127.0.0.1 only).

It lets python-binance's real client path (``AsyncClient`` REST and ``BinanceSocketManager``
kline websockets) run without the internet: tests and demos point the client's ``API_URL`` /
``STREAM_URL`` at it (see :class:`l1_operational.datafeed.BinanceFeed`).

Served (spot API v3 shapes, prices as strings):

* ``GET /api/v3/ping`` -> ``{}``; ``GET /api/v3/time`` -> ``{"serverTime": ms}``
* ``GET /api/v3/exchangeInfo[?symbol=]`` -> symbols with PRICE_FILTER, LOT_SIZE, MIN_NOTIONAL
  (lot step, min qty and min notional from ``L2Config.symbols``)
* ``GET /api/v3/klines?symbol=&interval=[&startTime=&endTime=&limit=]`` -> kline arrays
* ``WS /ws/<symbol>@kline_<interval>`` -> kline events, one closed bar (``"x": true``) every
  ``bar_seconds``, each followed by the next bar's opening snapshot (``"x": false``).

Signed trading endpoints (given ``api_key``/``api_secret``; their logic and the exchange's account are in
:mod:`l1_operational.binance_replay_account`):
``POST|GET|DELETE /api/v3/order``, ``POST /api/v3/orderList/oco`` (what python-binance
1.0.37's ``create_oco_order`` calls), ``GET /api/v3/openOrders``, ``GET /api/v3/myTrades``,
``GET /api/v3/account``. Each needs the ``X-MBX-APIKEY`` header (-2014 missing, -2015 wrong)
and ``signature`` = HMAC-SHA256(secret, query string + body without the signature) (-1022).

Replay time: the server's clock is the open time of its ``cursor`` bar. Bars before the
cursor are history (REST); the websocket plays bars from the cursor on and advances it. Like
Binance, REST ``klines`` also returns the bar in progress (as it looks the instant it opened:
open = high = low = close = its real open, volume 0), so clients must drop unclosed bars.
Fields the bundled files do not carry (quote volume, trade count, taker volumes) are ``0``.

Run it: ``python -m l1_operational.binance_replay_server data/BTCUSDT-1m.csv.gz --port 8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from l1_operational.binance_replay_account import (
    OPEN,
    TICK,
    ExchangeError,
    ReplayAccount,
    ReplayOrder,
    ReplayTrading,
    assets_of,
    check_api_key,
    num,
    signed_params,
)
from l1_operational.datafeed import INTERVALS, CandleArrays, read_candle_arrays

__all__ = ["OPEN", "TICK", "BinanceReplayServer", "ExchangeError", "ReplayAccount", "ReplayOrder", "ReplayTrading",
           "kline_event", "kline_row", "main"]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 500


def _error(code: int, msg: str, status: int = 400) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


class BinanceReplayServer:
    """Serve candle files Binance-style on 127.0.0.1; ``start`` is the first bar the websocket plays."""

    def __init__(self, paths: Sequence[str | Path], *, limits: Mapping[str, Any], start: datetime | str | None = None,
                 bar_seconds: float = 0.0, ws_max_bars: int | None = None, host: str = "127.0.0.1",
                 port: int = 0, api_key: str = "", api_secret: str = "", balances: Mapping[str, float] | None = None,
                 commission_rate: float = 0.001, book_step_bps: float = 1.0, fill_levels: int = 2) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"host={host!r}: this test server only listens on loopback")
        self.sources: dict[str, CandleArrays] = {}
        for path in paths:
            src = read_candle_arrays(path)
            if src.symbol not in limits:
                raise ValueError(f"limits: no symbols.{src.symbol} entry for {path}")
            self.sources[src.symbol] = src
        self.limits, self.bar_seconds, self.ws_max_bars = limits, bar_seconds, ws_max_bars
        self.host, self.port = host, port
        start_ms = _to_ms(start)
        self.cursor = {s: _first_live(src, start_ms) for s, src in self.sources.items()}
        self._runner: web.AppRunner | None = None
        self.requests: list[str] = []   # paths served, for tests
        self.api_key, self.api_secret = api_key, api_secret
        self.account = ReplayAccount(balances if balances is not None else {"USDT": 10_000.0},
                                     commission_rate=commission_rate, book_step_bps=book_step_bps,
                                     fill_levels=fill_levels)
        self.trading = ReplayTrading(self.account, limits, symbols=self.sources, price=self.price,
                                     server_time_ms=self.server_time_ms)
        self.signed: list[tuple[str, str, dict[str, str]]] = []   # verified (method, path, params), for tests

    # ------------------------------------------------------------ lifecycle
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/ws/{stream}", self._ws)
        self._add_trading_routes(app)
        return app

    async def start(self) -> BinanceReplayServer:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BinanceReplayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    def server_time_ms(self) -> int:
        return max(int(src.times[min(self.cursor[s], len(src) - 1)]) for s, src in self.sources.items())

    # --------------------------------------------------------------- REST
    async def _ping(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        return web.json_response({"serverTime": self.server_time_ms()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        wanted = request.query.get("symbol")
        if wanted is not None and wanted not in self.sources:
            return _error(-1121, "Invalid symbol.")
        symbols = [self._symbol_info(s) for s in self.sources if wanted in (None, s)]
        return web.json_response({"timezone": "UTC", "serverTime": self.server_time_ms(), "rateLimits": [],
                                  "exchangeFilters": [], "symbols": symbols})

    def _symbol_info(self, symbol: str) -> dict[str, Any]:
        lim = self.limits[symbol]
        quote = "USDT" if symbol.endswith("USDT") else symbol[-4:]
        return {
            "symbol": symbol, "status": "TRADING", "baseAsset": symbol[: -len(quote)], "baseAssetPrecision": 8,
            "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": False, "permissions": ["SPOT"],
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": num(0.01), "maxPrice": num(1_000_000.0),
                 "tickSize": num(0.01)},
                {"filterType": "LOT_SIZE", "minQty": num(lim.min_qty), "maxQty": num(9000.0),
                 "stepSize": num(lim.lot_step)},
                {"filterType": "MIN_NOTIONAL", "minNotional": num(lim.min_notional), "applyToMarket": True,
                 "avgPriceMins": 5},
            ],
        }

    async def _klines(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        q = request.query
        symbol, interval = q.get("symbol", ""), q.get("interval", "")
        if not symbol or not interval:
            name = "symbol" if not symbol else "interval"
            return _error(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        src = self.sources.get(symbol)
        if src is None:
            return _error(-1121, "Invalid symbol.")
        if interval != src.interval:
            return _error(-1120, "Invalid interval.")
        try:
            limit = int(q.get("limit", DEFAULT_LIMIT))
            start, end = (int(q[k]) if k in q else None for k in ("startTime", "endTime"))
        except ValueError:
            return _error(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= MAX_LIMIT:
            return _error(-1130, "Invalid data sent for a parameter.")
        return web.json_response(self._kline_rows(src, self.cursor[symbol], start, end, limit))

    def _kline_rows(self, src: CandleArrays, cursor: int, start: int | None, end: int | None,
                    limit: int) -> list[list[Any]]:
        visible = min(cursor + 1, len(src))        # history plus the bar in progress
        lo = int(np.searchsorted(src.times[:visible], start)) if start is not None else 0
        hi = int(np.searchsorted(src.times[:visible], end, side="right")) if end is not None else visible
        lo, hi = (lo, min(hi, lo + limit)) if start is not None else (max(lo, hi - limit), hi)
        return [kline_row(src, i, closed=i < cursor) for i in range(lo, hi)]

    # ------------------------------------------------------- trading (signed)
    def _add_trading_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v3/order", self._signed(self.trading.new_order))
        app.router.add_get("/api/v3/order", self._signed(self.trading.query_order))
        app.router.add_delete("/api/v3/order", self._signed(self.trading.cancel_order))
        app.router.add_post("/api/v3/orderList/oco", self._signed(self.trading.new_oco))
        app.router.add_get("/api/v3/openOrders", self._signed(self.trading.open_orders))
        app.router.add_get("/api/v3/myTrades", self._signed(self.trading.my_trades))
        app.router.add_get("/api/v3/account", self._signed(self.trading.account_info))

    def _signed(self, handler: Callable[[dict[str, str]], Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            self.requests.append(request.path)
            try:
                params = await self._verify(request)
                self.signed.append((request.method, request.path, params))
                return web.json_response(handler(params))
            except ExchangeError as exc:
                return _error(exc.code, exc.msg, exc.status)
        return endpoint

    async def _verify(self, request: web.Request) -> dict[str, str]:
        """Binance's SIGNED check: API key header, then HMAC-SHA256 over query string + body."""
        check_api_key(request.headers.get("X-MBX-APIKEY", ""), self.api_key)
        total = request.rel_url.raw_query_string + (await request.read()).decode()
        return signed_params(total, self.api_secret)

    def price(self, symbol: str) -> float:
        """The replay's current price: the open of the bar in progress (the last close once the file ends)."""
        src, i = self.sources[symbol], self.cursor[symbol]
        return float(src.ohlcv[i][0]) if i < len(src) else float(src.ohlcv[-1][3])

    def advance(self, symbol: str, bars: int = 1) -> None:
        """Close ``bars`` bars of ``symbol`` (as the websocket does): resting orders they trade through fill."""
        src = self.sources[symbol]
        for _ in range(bars):
            i = self.cursor[symbol]
            if i >= len(src):
                return
            self.cursor[symbol] = i + 1
            base, quote = assets_of(symbol)
            o, h, lo, c, _v = (float(x) for x in src.ohlcv[i])
            closed_ms = int(src.times[i]) + INTERVALS[src.interval] * 1000
            self.account.match_bar(symbol, base, quote, (o, h, lo, c), closed_ms)


    # ---------------------------------------------------------- websocket
    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        stream = request.match_info["stream"]
        symbol, _, interval = stream.upper().partition("@KLINE_")
        src = self.sources.get(symbol)
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.requests.append(request.path)
        if src is None or interval.lower() != src.interval:
            await ws.close(code=1008, message=b"unknown stream")
            return ws
        player = asyncio.create_task(self._play(ws, symbol, src))
        try:
            async for msg in ws:     # drain client frames until it closes
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            player.cancel()
        return ws

    async def _play(self, ws: web.WebSocketResponse, symbol: str, src: CandleArrays) -> None:
        sent = 0
        while not ws.closed and self.cursor[symbol] < len(src):
            if self.ws_max_bars is not None and sent >= self.ws_max_bars:
                return
            await asyncio.sleep(self.bar_seconds)
            i = self.cursor[symbol]
            self.advance(symbol)
            await ws.send_json(kline_event(src, i, closed=True))
            if i + 1 < len(src):
                await ws.send_json(kline_event(src, i + 1, closed=False))
            sent += 1





def kline_row(src: CandleArrays, i: int, *, closed: bool) -> list[Any]:
    """Binance REST kline array; an unclosed bar shows only its open."""
    t = int(src.times[i])
    o, h, lo, c, v = src.ohlcv[i] if closed else (src.ohlcv[i][0],) * 4 + (0.0,)
    close_ms = t + INTERVALS[src.interval] * 1000 - 1
    return [t, num(o), num(h), num(lo), num(c), num(v), close_ms, num(0.0), 0, num(0.0), num(0.0), "0"]


def kline_event(src: CandleArrays, i: int, *, closed: bool) -> dict[str, Any]:
    row = kline_row(src, i, closed=closed)
    k = {"t": row[0], "T": row[6], "s": src.symbol, "i": src.interval, "f": -1, "L": -1, "o": row[1], "c": row[4],
         "h": row[2], "l": row[3], "v": row[5], "n": 0, "x": closed, "q": row[7], "V": row[9], "Q": row[10],
         "B": "0"}
    return {"e": "kline", "E": int(time.time() * 1000), "s": src.symbol, "k": k}


def _first_live(src: CandleArrays, start_ms: int | None) -> int:
    """Index of the first bar the websocket plays (default: after up to 1,000 bars of history)."""
    return int(np.searchsorted(src.times, start_ms)) if start_ms is not None else min(len(src) // 2, 1000)


def _to_ms(when: datetime | str | None) -> int | None:
    if when is None:
        return None
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return int(when.timestamp() * 1000)


async def _serve(args: argparse.Namespace) -> None:
    from l2_tactical.config import L2Config

    server = BinanceReplayServer(args.files, limits=L2Config.default().symbols, start=args.start,
                                 bar_seconds=args.bar_seconds, port=args.port)
    async with server:
        print(f"REST {server.rest_url}/api  stream {server.stream_url}", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m l1_operational.binance_replay_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="candle files, e.g. data/BTCUSDT-1m.csv.gz")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--start", default=None, help="first bar the websocket plays (ISO time)")
    parser.add_argument("--bar-seconds", type=float, default=1.0, help="seconds between websocket bars")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
