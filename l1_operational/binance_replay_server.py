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

Signed trading endpoints (given ``api_key``/``api_secret``; see :class:`ReplayAccount`):
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
import dataclasses
import hashlib
import hmac
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from aiohttp import WSMsgType, web

from l1_operational.datafeed import INTERVALS, CandleArrays, read_candle_arrays

MAX_LIMIT = 1000
DEFAULT_LIMIT = 500


def _num(x: float) -> str:
    return f"{x:.8f}"


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
                {"filterType": "PRICE_FILTER", "minPrice": _num(0.01), "maxPrice": _num(1_000_000.0),
                 "tickSize": _num(0.01)},
                {"filterType": "LOT_SIZE", "minQty": _num(lim.min_qty), "maxQty": _num(9000.0),
                 "stepSize": _num(lim.lot_step)},
                {"filterType": "MIN_NOTIONAL", "minNotional": _num(lim.min_notional), "applyToMarket": True,
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
        app.router.add_post("/api/v3/order", self._signed(self._new_order))
        app.router.add_get("/api/v3/order", self._signed(self._query_order))
        app.router.add_delete("/api/v3/order", self._signed(self._cancel_order))
        app.router.add_post("/api/v3/orderList/oco", self._signed(self._new_oco))
        app.router.add_get("/api/v3/openOrders", self._signed(self._open_orders))
        app.router.add_get("/api/v3/myTrades", self._signed(self._my_trades))
        app.router.add_get("/api/v3/account", self._signed(self._account))

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
        key = request.headers.get("X-MBX-APIKEY", "")
        if not key:
            raise ExchangeError(-2014, "API-key format invalid.", 401)
        if not self.api_key or not hmac.compare_digest(key, self.api_key):
            raise ExchangeError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        total = request.rel_url.raw_query_string + (await request.read()).decode()
        payload, sep, signature = total.rpartition("&signature=")
        if not sep or not signature:
            raise ExchangeError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        expected = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise ExchangeError(-1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(payload, keep_blank_values=True))
        _param(params, "timestamp")
        return params

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
            base, quote = _assets(symbol)
            o, h, lo, c, _v = (float(x) for x in src.ohlcv[i])
            closed_ms = int(src.times[i]) + INTERVALS[src.interval] * 1000
            self.account.match_bar(symbol, base, quote, (o, h, lo, c), closed_ms)

    def _symbol_param(self, p: Mapping[str, str]) -> str:
        symbol = _param(p, "symbol")
        if symbol not in self.sources:
            raise ExchangeError(-1121, "Invalid symbol.")
        return symbol

    def _qty(self, symbol: str, p: Mapping[str, str], price: float) -> float:
        lim, qty = self.limits[symbol], _positive(p, "quantity")
        if qty < lim.min_qty or not _on_grid(qty, lim.lot_step):
            raise ExchangeError(-1013, "Filter failure: LOT_SIZE")
        if qty * price < lim.min_notional:
            raise ExchangeError(-1013, "Filter failure: MIN_NOTIONAL")
        return qty

    def _new_order(self, p: dict[str, str]) -> dict[str, Any]:
        symbol = self._symbol_param(p)
        side = _choice(p, "side", ("BUY", "SELL"))
        otype = _choice(p, "type", ("MARKET", "STOP_LOSS_LIMIT", "LIMIT_MAKER"))
        (base, quote), ref, now = _assets(symbol), self.price(symbol), self.server_time_ms()
        client = p.get("newClientOrderId") or f"replay-{len(self.account.orders) + 1}"
        if otype == "MARKET":
            qty = self._qty(symbol, p, ref)
            order = self.account.market(symbol, base, quote, side, qty, ref, self.limits[symbol].lot_step, client, now)
            return order.as_json(p.get("newOrderRespType", "FULL"))
        if side != "SELL":
            raise ExchangeError(-1013, f"This replay exchange rests SELL orders only (got {otype} {side}).")
        price = _tick(p, "price")
        stop = _tick(p, "stopPrice") if otype == "STOP_LOSS_LIMIT" else 0.0
        if otype == "STOP_LOSS_LIMIT":
            _param(p, "timeInForce")
            if stop >= ref:
                raise ExchangeError(-2010, "Stop price would trigger immediately.")
        elif price <= ref:
            raise ExchangeError(-2010, "Order would immediately match and take.")
        qty = self._qty(symbol, p, price)
        self.account.check_new([client], base, qty)
        order = self.account.resting_sell(symbol, base, otype, qty, price, stop, client, now)
        return order.as_json(p.get("newOrderRespType", "ACK"))

    def _new_oco(self, p: dict[str, str]) -> dict[str, Any]:
        symbol = self._symbol_param(p)
        if _choice(p, "side", ("BUY", "SELL")) != "SELL" or p.get("aboveType") != "LIMIT_MAKER" \
                or p.get("belowType") != "STOP_LOSS_LIMIT":
            raise ExchangeError(-1013, "This replay exchange supports SELL OCOs of LIMIT_MAKER above, "
                                       "STOP_LOSS_LIMIT below only.")
        above, below, stop = _tick(p, "abovePrice"), _tick(p, "belowPrice"), _tick(p, "belowStopPrice")
        _param(p, "belowTimeInForce")
        base, ref, now = _assets(symbol)[0], self.price(symbol), self.server_time_ms()
        if not above > ref > stop:
            raise ExchangeError(-2010, "The relationship of the prices for the orders is not correct.")
        qty = self._qty(symbol, p, below)
        n, list_id = len(self.account.orders), len(self.account.lists) + 1
        ids = [p.get("aboveClientOrderId") or f"replay-{n + 1}", p.get("belowClientOrderId") or f"replay-{n + 2}"]
        self.account.check_new(ids, base, qty)
        legs = [self.account.resting_sell(symbol, base, "LIMIT_MAKER", qty, above, 0.0, ids[0], now, list_id),
                self.account.resting_sell(symbol, base, "STOP_LOSS_LIMIT", qty, below, stop, ids[1], now, list_id,
                                          lock=False)]
        self.account.lists[list_id] = legs
        return {"orderListId": list_id, "contingencyType": "OCO", "listStatusType": "EXEC_STARTED",
                "listOrderStatus": "EXECUTING", "listClientOrderId": p.get("listClientOrderId") or f"list-{list_id}",
                "transactionTime": now, "symbol": symbol,
                "orders": [{"symbol": symbol, "orderId": o.order_id, "clientOrderId": o.client_id} for o in legs],
                "orderReports": [o.as_json("RESULT") for o in legs]}

    def _lookup(self, p: Mapping[str, str]) -> ReplayOrder:
        symbol = self._symbol_param(p)
        if not p.get("orderId") and not p.get("origClientOrderId"):
            raise ExchangeError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        return self.account.find(symbol, p.get("orderId"), p.get("origClientOrderId"))

    def _query_order(self, p: dict[str, str]) -> dict[str, Any]:
        return self._lookup(p).query_json()

    def _cancel_order(self, p: dict[str, str]) -> dict[str, Any]:
        order = self._lookup(p)
        self.account.cancel(order, _assets(order.symbol)[0])
        return {**order.as_json("RESULT"), "origClientOrderId": order.client_id}

    def _open_orders(self, p: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self._symbol_param(p) if "symbol" in p else None
        return [o.query_json() for o in self.account.orders if o.status in OPEN and symbol in (None, o.symbol)]

    def _my_trades(self, p: dict[str, str]) -> list[dict[str, Any]]:
        symbol, order_id = self._symbol_param(p), p.get("orderId")
        return [t for t in self.account.trades
                if t["symbol"] == symbol and (order_id is None or str(t["orderId"]) == order_id)]

    def _account(self, p: dict[str, str]) -> dict[str, Any]:
        rate = _num(self.account.commission_rate)
        bps = round(self.account.commission_rate * 1e4)
        return {"makerCommission": bps, "takerCommission": bps, "buyerCommission": 0, "sellerCommission": 0,
                "commissionRates": {"maker": rate, "taker": rate, "buyer": _num(0.0), "seller": _num(0.0)},
                "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
                "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self.server_time_ms(),
                "accountType": "SPOT", "balances": self.account.balances_json(), "permissions": ["SPOT"], "uid": 1}

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


def _assets(symbol: str) -> tuple[str, str]:
    quote = "USDT" if symbol.endswith("USDT") else symbol[-4:]
    return symbol[: -len(quote)], quote


def _param(p: Mapping[str, str], name: str) -> str:
    value = p.get(name)
    if not value:
        raise ExchangeError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return value


def _choice(p: Mapping[str, str], name: str, allowed: Sequence[str]) -> str:
    value = _param(p, name)
    if value not in allowed:
        raise ExchangeError(-1116 if name == "type" else -1117, f"Invalid {name} (replay exchange: one of {allowed}).")
    return value


def _positive(p: Mapping[str, str], name: str) -> float:
    text = _param(p, name)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ExchangeError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '> 0'.")
    return value


def _on_grid(x: float, step: float) -> bool:
    return abs(round(x / step) * step - x) <= step * 1e-6


def _tick(p: Mapping[str, str], name: str) -> float:
    value = _positive(p, name)
    if not _on_grid(value, TICK):
        raise ExchangeError(-1013, "Filter failure: PRICE_FILTER")
    return value


# ------------------------------------------------------------------ the replay exchange's account

OPEN = ("NEW", "PARTIALLY_FILLED")
TICK = 0.01


class ExchangeError(Exception):
    """A Binance error answer: ``{"code": code, "msg": msg}`` with an HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


@dataclasses.dataclass
class ReplayOrder:
    """One order as the replay exchange keeps it (Binance field names in :meth:`as_json`)."""

    symbol: str
    order_id: int
    client_id: str
    side: str
    type: str
    qty: float
    price: float
    stop_price: float
    time: int
    list_id: int = -1
    status: str = "NEW"
    executed: float = 0.0
    quote: float = 0.0
    fills: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def as_json(self, resp_type: str = "RESULT") -> dict[str, Any]:
        ack = {"symbol": self.symbol, "orderId": self.order_id, "orderListId": self.list_id,
               "clientOrderId": self.client_id, "transactTime": self.time}
        if resp_type == "ACK":
            return ack
        result = {**ack, "price": _num(self.price), "origQty": _num(self.qty), "executedQty": _num(self.executed),
                  "cummulativeQuoteQty": _num(self.quote), "status": self.status,
                  "timeInForce": "GTC", "type": self.type, "side": self.side, "workingTime": self.time,
                  "selfTradePreventionMode": "NONE"}
        if self.stop_price:
            result["stopPrice"] = _num(self.stop_price)
        return {**result, "fills": list(self.fills)} if resp_type == "FULL" else result

    def query_json(self) -> dict[str, Any]:
        """``GET /api/v3/order`` shape (``time``/``updateTime``/``isWorking`` instead of ``transactTime``)."""
        out = self.as_json("RESULT")
        when = out.pop("transactTime")
        return {**out, "stopPrice": _num(self.stop_price), "icebergQty": _num(0.0), "time": when,
                "updateTime": when, "isWorking": self.status in OPEN, "origQuoteOrderQty": _num(0.0)}


class ReplayAccount:
    """Balances, orders and trades of the replay exchange; market orders fill against the current bar.

    * MARKET: filled at once at the price of the bar in progress (its open), walking ``fill_levels``
      price levels ``book_step_bps`` apart; commission ``commission_rate`` in the asset received
      (base on a buy, quote on a sell), as Binance charges without BNB.
    * STOP_LOSS_LIMIT / LIMIT_MAKER (and OCO pairs of them): accepted as NEW, the sold base is
      locked; :meth:`match_bar` fills them when a bar trades through (the stop first, pessimistic).
    """

    def __init__(self, balances: Mapping[str, float], *, commission_rate: float = 0.001,
                 book_step_bps: float = 1.0, fill_levels: int = 2) -> None:
        self.free = {a: float(v) for a, v in balances.items()}
        self.locked = dict.fromkeys(self.free, 0.0)
        self.commission_rate, self.book_step_bps, self.fill_levels = commission_rate, book_step_bps, fill_levels
        self.orders: list[ReplayOrder] = []
        self.trades: list[dict[str, Any]] = []
        self.lists: dict[int, list[ReplayOrder]] = {}

    # ------------------------------------------------------------ lookups
    def find(self, symbol: str, order_id: str | None, client_id: str | None) -> ReplayOrder:
        for order in reversed(self.orders):
            if order.symbol == symbol and (str(order.order_id) == order_id or order.client_id == client_id):
                return order
        raise ExchangeError(-2013, "Order does not exist.")

    def balances_json(self) -> list[dict[str, str]]:
        return [{"asset": a, "free": _num(self.free[a]), "locked": _num(self.locked.get(a, 0.0))}
                for a in sorted(self.free)]

    def _move(self, asset: str, free: float = 0.0, locked: float = 0.0) -> None:
        self.free[asset] = self.free.get(asset, 0.0) + free
        self.locked[asset] = self.locked.get(asset, 0.0) + locked

    # -------------------------------------------------------------- orders
    def market(self, symbol: str, base: str, quote: str, side: str, qty: float, ref: float, step: float,
               client_id: str, now: int) -> ReplayOrder:
        fills = self._walk(side, qty, ref, step)
        cost = sum(q * p for q, p in fills)
        if (side == "BUY" and cost > self.free.get(quote, 0.0) + 1e-9) or \
                (side == "SELL" and qty > self.free.get(base, 0.0) + 1e-12):
            raise ExchangeError(-2010, "Account has insufficient balance for requested action.")
        order = self._new(symbol, client_id, side, "MARKET", qty, 0.0, 0.0, now)
        for q, p in fills:
            self._trade(order, base, quote, q, p, now)
        order.status = "FILLED"
        return order

    def _walk(self, side: str, qty: float, ref: float, step: float) -> list[tuple[float, float]]:
        lots = round(qty / step)
        levels = max(1, min(self.fill_levels, lots))
        sizes = [lots // levels + (1 if k < lots % levels else 0) for k in range(levels)]
        sign = 1.0 if side == "BUY" else -1.0
        return [(n * step, round(ref * (1 + sign * k * self.book_step_bps * 1e-4), 2)) for k, n in enumerate(sizes)]

    def _trade(self, order: ReplayOrder, base: str, quote: str, qty: float, price: float, now: int) -> None:
        buy = order.side == "BUY"
        commission = qty * self.commission_rate if buy else qty * price * self.commission_rate
        if buy:
            self._move(quote, free=-qty * price)
            self._move(base, free=qty - commission)
        else:
            self._move(base, **({"locked": -qty} if order.type != "MARKET" else {"free": -qty}))
            self._move(quote, free=qty * price - commission)
        trade_id = len(self.trades) + 1
        fill = {"price": _num(price), "qty": _num(qty), "commission": _num(commission),
                "commissionAsset": base if buy else quote, "tradeId": trade_id}
        order.fills.append(fill)
        order.executed += qty
        order.quote += qty * price
        self.trades.append({"symbol": order.symbol, "id": trade_id, "orderId": order.order_id,
                            "orderListId": order.list_id, "price": fill["price"], "qty": fill["qty"],
                            "quoteQty": _num(qty * price), "commission": fill["commission"],
                            "commissionAsset": fill["commissionAsset"], "time": now, "isBuyer": buy,
                            "isMaker": order.type != "MARKET", "isBestMatch": True})

    def check_new(self, client_ids: Sequence[str], base: str, qty: float) -> None:
        """Refuse before anything changes: a client id among the open orders, or base not free to lock."""
        if any(o.client_id in client_ids and o.status in OPEN for o in self.orders):
            raise ExchangeError(-2010, "Duplicate order sent.")
        if qty > self.free.get(base, 0.0) + 1e-12:
            raise ExchangeError(-2010, "Account has insufficient balance for requested action.")

    def resting_sell(self, symbol: str, base: str, otype: str, qty: float, price: float, stop: float,
                     client_id: str, now: int, list_id: int = -1, *, lock: bool = True) -> ReplayOrder:
        """A resting sell (call :meth:`check_new` first); it locks ``qty`` base unless its OCO sibling did."""
        order = self._new(symbol, client_id, "SELL", otype, qty, price, stop, now, list_id)
        if lock:
            self._move(base, free=-qty, locked=qty)
        return order

    def _new(self, symbol: str, client_id: str, side: str, otype: str, qty: float, price: float, stop: float,
             now: int, list_id: int = -1) -> ReplayOrder:
        if any(o.client_id == client_id and o.status in OPEN for o in self.orders):
            raise ExchangeError(-2010, "Duplicate order sent.")
        order = ReplayOrder(symbol=symbol, order_id=len(self.orders) + 1, client_id=client_id, side=side,
                            type=otype, qty=qty, price=price, stop_price=stop, time=now, list_id=list_id)
        self.orders.append(order)
        return order

    def cancel(self, order: ReplayOrder, base: str, *, status: str = "CANCELED") -> list[ReplayOrder]:
        """Cancel an open order and, for an OCO leg, its whole list; the locked base is released once."""
        if order.status not in OPEN:
            raise ExchangeError(-2011, "Unknown order sent.")
        legs = self.lists.get(order.list_id, [order]) if order.list_id >= 0 else [order]
        for leg in legs:
            if leg.status in OPEN:
                leg.status = status
        self._move(base, free=order.qty - order.executed, locked=-(order.qty - order.executed))
        return legs

    def match_bar(self, symbol: str, base: str, quote: str, bar: tuple[float, float, float, float],
                  now: int) -> None:
        """Fill the symbol's resting sells that ``bar`` (open, high, low, close) trades through."""
        o, h, lo, _ = bar
        for order in [x for x in self.orders if x.symbol == symbol and x.status in OPEN and x.side == "SELL"]:
            if order.status not in OPEN:       # its OCO sibling filled earlier in this loop
                continue
            if order.type == "STOP_LOSS_LIMIT" and lo <= order.stop_price and h >= order.price:
                price = max(order.price, min(o, order.stop_price))
            elif order.type == "LIMIT_MAKER" and h >= order.price and not self._stop_sibling_hit(order, lo):
                price = max(order.price, o)
            else:
                continue
            self._trade(order, base, quote, order.qty, round(price, 2), now)
            order.status = "FILLED"
            for leg in self.lists.get(order.list_id, []) if order.list_id >= 0 else []:
                if leg is not order and leg.status in OPEN:
                    leg.status = "EXPIRED"

    def _stop_sibling_hit(self, order: ReplayOrder, low: float) -> bool:
        legs = self.lists.get(order.list_id, []) if order.list_id >= 0 else []
        return any(leg.type == "STOP_LOSS_LIMIT" and low <= leg.stop_price for leg in legs)


def kline_row(src: CandleArrays, i: int, *, closed: bool) -> list[Any]:
    """Binance REST kline array; an unclosed bar shows only its open."""
    t = int(src.times[i])
    o, h, lo, c, v = src.ohlcv[i] if closed else (src.ohlcv[i][0],) * 4 + (0.0,)
    close_ms = t + INTERVALS[src.interval] * 1000 - 1
    return [t, _num(o), _num(h), _num(lo), _num(c), _num(v), close_ms, _num(0.0), 0, _num(0.0), _num(0.0), "0"]


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
