"""The replay exchange's trading side: balances, orders, fills, and the signed order endpoints' logic.

:class:`ReplayAccount` keeps balances, orders and trades: MARKET orders fill against the bar in
progress, resting sells (STOP_LOSS_LIMIT, LIMIT_MAKER, OCO pairs) fill when a later bar trades
through them (:meth:`ReplayAccount.match_bar`). :class:`ReplayTrading` turns the parameters of
Binance's signed endpoints (``POST|GET|DELETE /api/v3/order``, ``POST /api/v3/orderList/oco``,
``GET /api/v3/openOrders``, ``GET /api/v3/myTrades``, ``GET /api/v3/account``) into Binance-shaped
JSON; :func:`check_api_key` and :func:`signed_params` are Binance's SIGNED checks. Refusals are
:class:`ExchangeError` (Binance's ``{"code", "msg"}``). No HTTP here:
:class:`l1_operational.binance_replay_server.BinanceReplayServer` serves it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

OPEN = ("NEW", "PARTIALLY_FILLED")
TICK = 0.01


def num(x: float) -> str:
    """A price or quantity as Binance writes it (a string with 8 decimals)."""
    return f"{x:.8f}"



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
        result = {**ack, "price": num(self.price), "origQty": num(self.qty), "executedQty": num(self.executed),
                  "cummulativeQuoteQty": num(self.quote), "status": self.status,
                  "timeInForce": "GTC", "type": self.type, "side": self.side, "workingTime": self.time,
                  "selfTradePreventionMode": "NONE"}
        if self.stop_price:
            result["stopPrice"] = num(self.stop_price)
        return {**result, "fills": list(self.fills)} if resp_type == "FULL" else result

    def query_json(self) -> dict[str, Any]:
        """``GET /api/v3/order`` shape (``time``/``updateTime``/``isWorking`` instead of ``transactTime``)."""
        out = self.as_json("RESULT")
        when = out.pop("transactTime")
        return {**out, "stopPrice": num(self.stop_price), "icebergQty": num(0.0), "time": when,
                "updateTime": when, "isWorking": self.status in OPEN, "origQuoteOrderQty": num(0.0)}


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
        return [{"asset": a, "free": num(self.free[a]), "locked": num(self.locked.get(a, 0.0))}
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
        fill = {"price": num(price), "qty": num(qty), "commission": num(commission),
                "commissionAsset": base if buy else quote, "tradeId": trade_id}
        order.fills.append(fill)
        order.executed += qty
        order.quote += qty * price
        self.trades.append({"symbol": order.symbol, "id": trade_id, "orderId": order.order_id,
                            "orderListId": order.list_id, "price": fill["price"], "qty": fill["qty"],
                            "quoteQty": num(qty * price), "commission": fill["commission"],
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


def check_api_key(key: str, api_key: str) -> None:
    """The ``X-MBX-APIKEY`` header ``key`` against the server's ``api_key`` (-2014 missing, -2015 wrong)."""
    if not key:
        raise ExchangeError(-2014, "API-key format invalid.", 401)
    if not api_key or not hmac.compare_digest(key, api_key):
        raise ExchangeError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def signed_params(total: str, api_secret: str) -> dict[str, str]:
    """The parameters of a SIGNED request whose query string + body is ``total``: ``signature`` must be
    HMAC-SHA256(secret, everything before ``&signature=``) (-1022), and ``timestamp`` present."""
    payload, sep, signature = total.rpartition("&signature=")
    if not sep or not signature:
        raise ExchangeError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
    expected = hmac.new(api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise ExchangeError(-1022, "Signature for this request is not valid.")
    params = dict(parse_qsl(payload, keep_blank_values=True))
    _param(params, "timestamp")
    return params


class ReplayTrading:
    """The signed endpoints: request parameters in, Binance-shaped JSON out (or :class:`ExchangeError`).

    ``price(symbol)`` is the replay's current price and ``server_time_ms()`` its clock (both from the server).
    """

    def __init__(self, account: ReplayAccount, limits: Mapping[str, Any], *, symbols: Collection[str],
                 price: Callable[[str], float], server_time_ms: Callable[[], int]) -> None:
        self.account, self.limits, self.symbols = account, limits, symbols
        self.price, self.server_time_ms = price, server_time_ms

    def _symbol_param(self, p: Mapping[str, str]) -> str:
        symbol = _param(p, "symbol")
        if symbol not in self.symbols:
            raise ExchangeError(-1121, "Invalid symbol.")
        return symbol

    def _qty(self, symbol: str, p: Mapping[str, str], price: float) -> float:
        lim, qty = self.limits[symbol], _positive(p, "quantity")
        if qty < lim.min_qty or not _on_grid(qty, lim.lot_step):
            raise ExchangeError(-1013, "Filter failure: LOT_SIZE")
        if qty * price < lim.min_notional:
            raise ExchangeError(-1013, "Filter failure: MIN_NOTIONAL")
        return qty

    def new_order(self, p: dict[str, str]) -> dict[str, Any]:
        symbol = self._symbol_param(p)
        side = _choice(p, "side", ("BUY", "SELL"))
        otype = _choice(p, "type", ("MARKET", "STOP_LOSS_LIMIT", "LIMIT_MAKER"))
        (base, quote), ref, now = assets_of(symbol), self.price(symbol), self.server_time_ms()
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

    def new_oco(self, p: dict[str, str]) -> dict[str, Any]:
        symbol = self._symbol_param(p)
        if _choice(p, "side", ("BUY", "SELL")) != "SELL" or p.get("aboveType") != "LIMIT_MAKER" \
                or p.get("belowType") != "STOP_LOSS_LIMIT":
            raise ExchangeError(-1013, "This replay exchange supports SELL OCOs of LIMIT_MAKER above, "
                                       "STOP_LOSS_LIMIT below only.")
        above, below, stop = _tick(p, "abovePrice"), _tick(p, "belowPrice"), _tick(p, "belowStopPrice")
        _param(p, "belowTimeInForce")
        base, ref, now = assets_of(symbol)[0], self.price(symbol), self.server_time_ms()
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

    def query_order(self, p: dict[str, str]) -> dict[str, Any]:
        return self._lookup(p).query_json()

    def cancel_order(self, p: dict[str, str]) -> dict[str, Any]:
        order = self._lookup(p)
        self.account.cancel(order, assets_of(order.symbol)[0])
        return {**order.as_json("RESULT"), "origClientOrderId": order.client_id}

    def open_orders(self, p: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self._symbol_param(p) if "symbol" in p else None
        return [o.query_json() for o in self.account.orders if o.status in OPEN and symbol in (None, o.symbol)]

    def my_trades(self, p: dict[str, str]) -> list[dict[str, Any]]:
        symbol, order_id = self._symbol_param(p), p.get("orderId")
        return [t for t in self.account.trades
                if t["symbol"] == symbol and (order_id is None or str(t["orderId"]) == order_id)]

    def account_info(self, p: dict[str, str]) -> dict[str, Any]:
        rate = num(self.account.commission_rate)
        bps = round(self.account.commission_rate * 1e4)
        return {"makerCommission": bps, "takerCommission": bps, "buyerCommission": 0, "sellerCommission": 0,
                "commissionRates": {"maker": rate, "taker": rate, "buyer": num(0.0), "seller": num(0.0)},
                "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
                "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self.server_time_ms(),
                "accountType": "SPOT", "balances": self.account.balances_json(), "permissions": ["SPOT"], "uid": 1}


def assets_of(symbol: str) -> tuple[str, str]:
    """(base, quote) of a symbol: ``BTCUSDT`` -> ``("BTC", "USDT")``."""
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

