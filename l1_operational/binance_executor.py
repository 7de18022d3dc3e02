"""BinanceExecutor: L1's real order path (TESTNET / LIVE) through python-binance, PaperExecutor's contract.

Reached only through :func:`l1_operational.live_gate.resolve_mode` (``BINANCE_MODE`` in the
environment AND ``--confirm-live``); keys come from the environment only and every log
handler gets a :class:`~l1_operational.live_gate.RedactingFilter` for them.

Life of an order::

    submit(intent) --order_manager.check_order--> rejected (report at once, journaled)
                   \\--> accepted (journaled) --sync()--> MARKET order, newClientOrderId = client_order_id(order_id)
                          --> filled: Binance's fills[] -> avg price, fees, slippage vs intent.price -> FILLED report
                          --> protection: the whole position gets a STOP_LOSS_LIMIT sell, or an OCO
                              (LIMIT_MAKER take-profit above, STOP_LOSS_LIMIT below) when take_profit is set
                          --> refused by Binance: REJECTED report with the mapped reason code

* **Exactly once.** The journal's UNIQUE order_id answers a re-sent intent with
  ``DUPLICATE_ORDER`` before Binance is called; the clientOrderId is derived from the order_id, so
  an order that may have reached Binance (restart, network error) is looked up by it
  (``GET /api/v3/order?origClientOrderId=``) and never placed a second time.
* **Stops live on the exchange.** :meth:`sync` polls the protective orders; a filled one becomes a
  stop-loss / take-profit exit (fills from ``myTrades``), a vanished one is placed again. A stop
  Binance refuses outright makes L1 close the position at market: never an unprotected position.
* ``submit`` / ``on_bar`` are synchronous like PaperExecutor's; the network work happens in
  ``await sync()`` (:class:`BinanceBusAdapter` calls it on every order and bar).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from l1_operational.bus_adapter import L1BusAdapter
from l1_operational.executor import ExecutorStats, PendingOrder
from l1_operational.live_gate import RedactingFilter, api_credentials
from l1_operational.order_manager import AccountView, check_order
from l1_operational.portfolio import FillRecord, Portfolio, Position, base_asset
from l2_tactical.errors import ConfigError, TransientError
from l2_tactical.execution import round_to_step, slippage_bps
from l2_tactical.messages import ExecutionReport, ExecutionStatus, Message, OrderIntent, ReasonCode, Side, stable_id

if TYPE_CHECKING:
    from l1_operational.datafeed import Bar
    from l1_operational.journal import Journal
    from l2_tactical.clock import Clock

log = logging.getLogger(__name__)
AUTH_CODES = (-1022, -2008, -2014, -2015)   # bad signature / key: fatal, fix the environment
OPEN = ("NEW", "PARTIALLY_FILLED")
_LOGGERS = ("", "binance", "l1_operational", "aiohttp")


def client_order_id(order_id: str) -> str:
    """Binance newClientOrderId for an order_id (``^[.A-Z:/a-z0-9_-]{1,36}$``).

    >>> client_order_id("ord-0123456789abcdef0123")
    'l2-ord-0123456789abcdef0123'
    """
    cid = f"l2-{order_id}"
    if len(cid) > 36 or not all(c.isalnum() or c in ".:/_-" for c in cid):
        raise ValueError(f"order_id={order_id!r}: cannot be a Binance clientOrderId ({cid!r})")
    return cid


@dataclasses.dataclass(frozen=True, slots=True)
class FillSummary:
    """Binance fills folded into one fill: ``base_delta`` (net of base commission) and ``fee`` (quote units)."""

    executed: float
    avg_price: float
    fee: float
    base_delta: float


def summarize_fills(fills: Sequence[Mapping[str, Any]], side: Side, base: str, quote: str) -> FillSummary:
    """Average price, quote-valued fees and the net base change of Binance's ``fills[]``.

    A commission in the base asset is valued at the average price; in another asset (BNB) it
    is not valued (logged). The fee is what makes ``FillRecord`` accounting exact:
    quote change = -(base_delta * avg + fee).

    >>> s = summarize_fills([{"price": "100", "qty": "1", "commission": "0.001", "commissionAsset": "BTC"},
    ...                      {"price": "102", "qty": "1", "commission": "0.001", "commissionAsset": "BTC"}],
    ...                     Side.BUY, "BTC", "USDT")
    >>> s.executed, s.avg_price, round(s.fee, 6), s.base_delta
    (2.0, 101.0, 0.202, 1.998)
    """
    executed = sum(float(f["qty"]) for f in fills)
    if executed <= 0:
        return FillSummary(0.0, 0.0, 0.0, 0.0)
    avg = sum(float(f["qty"]) * float(f["price"]) for f in fills) / executed
    base_fee = sum(float(f["commission"]) for f in fills if f["commissionAsset"] == base)
    quote_fee = sum(float(f["commission"]) for f in fills if f["commissionAsset"] == quote)
    other = {f["commissionAsset"] for f in fills if f["commissionAsset"] not in (base, quote)}
    if other:
        log.warning("binance: commission paid in %s is not valued in the report's fees", sorted(other))
    sign = 1.0 if side is Side.BUY else -1.0
    return FillSummary(executed, avg, base_fee * avg + quote_fee, sign * executed - base_fee)


def reason_for(code: int, message: str) -> ReasonCode:
    """The L1 reason code of a Binance order refusal."""
    text = message.lower()
    if "insufficient balance" in text:
        return ReasonCode.INSUFFICIENT_BALANCE
    if "notional" in text:
        return ReasonCode.MIN_NOTIONAL
    if "lot_size" in text:
        return ReasonCode.INVALID_QTY
    if code == -1121:
        return ReasonCode.UNKNOWN_SYMBOL
    return ReasonCode.EXCHANGE_REJECTED


@dataclasses.dataclass(frozen=True, slots=True)
class Protection:
    """The exchange-side protective order(s) of one position (ids derive from the position)."""

    symbol: str
    stop_id: str
    tp_id: str | None
    list_id: str | None


def protection_for(pos: Position, lot_step: float) -> Protection:
    key = stable_id("prot", pos.order_id, f"{round_to_step(pos.qty, lot_step):.8f}")[5:]
    tp = pos.take_profit is not None
    return Protection(pos.symbol, f"l2s-{key}", f"l2t-{key}" if tp else None, f"l2o-{key}" if tp else None)


def _fmt(x: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{round_to_step(x, step):.{decimals}f}"


def _ms(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)


class BinanceExecutor:
    """L1 in TESTNET / LIVE mode: same validation, journal and reports as PaperExecutor, fills from Binance."""

    def __init__(self, *, journal: Journal, symbols: Mapping[str, Any], quote_asset: str, clock: Clock, mode: str,
                 api_key: str, api_secret: str, rest_url: str | None = None, stop_limit_bps: float = 50.0) -> None:
        if mode not in ("TESTNET", "LIVE"):
            raise ConfigError(f"BinanceExecutor mode={mode!r}: TESTNET or LIVE (PAPER uses PaperExecutor)")
        if not api_key or not api_secret:
            raise ConfigError("BinanceExecutor needs BINANCE_API_KEY and BINANCE_API_SECRET in the environment")
        self.journal, self.symbols, self.quote_asset, self.clock = journal, dict(symbols), quote_asset, clock
        self.mode, self.rest_url, self.stop_limit_bps = mode, rest_url, stop_limit_bps
        self._credentials = (api_key, api_secret)
        self.redaction = RedactingFilter(self._credentials)
        self.portfolio = Portfolio({quote_asset: 0.0}, quote_asset=quote_asset)   # rebuilt in start()
        self.stats = ExecutorStats()
        self.client: Any = None
        self._seen: set[str] = journal.order_ids()
        self._pending: list[PendingOrder] = [PendingOrder(i, q, a) for i, q, a in journal.pending_orders()]
        self._maybe_sent = {p.intent.order_id for p in self._pending}
        self._balances: dict[str, tuple[float, float]] = {}
        self._fee_rate = 0.0
        self._ticks: dict[str, float] = {}
        self._protection: dict[str, Protection] = {}
        self._ready: list[ExecutionReport] = []
        self._lock = asyncio.Lock()
        self._filtered: list[logging.Filterer] = []

    @classmethod
    def from_config(cls, cfg: Any, *, mode: str, journal: Journal, clock: Clock, rest_url: str | None = None,
                    env: Mapping[str, str] | None = None) -> BinanceExecutor:
        key, secret = api_credentials(env)
        return cls(journal=journal, symbols=cfg.symbols, quote_asset=cfg.execution.quote_asset, clock=clock,
                   mode=mode, api_key=key, api_secret=secret, rest_url=rest_url)

    @property
    def base_url(self) -> str:
        """The REST base orders go to: ``rest_url`` when set, else python-binance's testnet or live host."""
        from binance import AsyncClient

        if self.rest_url:
            return self.rest_url.rstrip("/") + "/api"
        return AsyncClient.API_TESTNET_URL if self.mode == "TESTNET" else AsyncClient.API_URL.format("", "com")

    # --------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect, read the symbols' tick sizes and the account, rebuild the portfolio, recover orders."""
        from binance import AsyncClient

        self._filtered = [*logging.getLogger().handlers, *map(logging.getLogger, _LOGGERS)]
        for target in self._filtered:
            target.addFilter(self.redaction)
        self.client = AsyncClient(*self._credentials, testnet=self.mode == "TESTNET")
        self.client.API_URL = self.client.API_TESTNET_URL = self.base_url
        info = await self._call("exchange info", self.client.get_exchange_info)
        listed = {s["symbol"]: s for s in info["symbols"]}
        for symbol in self.symbols:
            if symbol not in listed:
                raise ConfigError(f"symbols.{symbol}: not listed by Binance at {self.base_url}")
            prices = next(f for f in listed[symbol]["filters"] if f["filterType"] == "PRICE_FILTER")
            self._ticks[symbol] = float(prices["tickSize"])
        await self._refresh_account()
        start = {a: sum(self._balances.get(a, (0.0, 0.0))) for a in self._assets()}
        self.portfolio = self.journal.rebuild_portfolio(start, quote_asset=self.quote_asset)
        for symbol in self.portfolio.positions:
            self._protection[symbol] = protection_for(self.portfolio.positions[symbol], self._lot(symbol))
        await self.sync_into_ready()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close_connection()
            self.client = None
        for target in self._filtered:
            target.removeFilter(self.redaction)
        self._filtered = []

    # ------------------------------------------------------------------ orders
    def submit(self, intent: OrderIntent) -> ExecutionReport | None:
        """Validate and journal (as PaperExecutor does): a rejection report now, or ``None`` (placed by sync())."""
        self.stats.received += 1
        now = self.clock.now()
        decision = check_order(intent, limits=self.symbols, account=self.account_view(), now=now, seen=self._seen)
        self._seen.add(intent.order_id)
        if decision.reason is ReasonCode.DUPLICATE_ORDER:
            return self._reject(intent, decision.reason, now, journal="report")
        if not decision.accepted:
            report = self._rejection(intent, decision.reason, now)
            if not self.journal.record_order(intent, status="rejected", reason=decision.reason.value,
                                             qty=intent.qty, after_bar=None, received_at=now, report=report):
                return self._reject(intent, ReasonCode.DUPLICATE_ORDER, now, journal="report")
            self.stats.rejected[decision.reason.value] += 1
            return report
        if not self.journal.record_order(intent, status="accepted", reason=ReasonCode.OK.value, qty=decision.qty,
                                         after_bar=None, received_at=now):
            return self._reject(intent, ReasonCode.DUPLICATE_ORDER, now, journal="report")
        self._pending.append(PendingOrder(intent, decision.qty, None))
        return None

    async def execute(self, intent: OrderIntent) -> ExecutionReport | None:
        """submit + sync: the intent's report (``None`` if a network error left it pending for the next sync)."""
        report = self.submit(intent)
        if report is not None:
            return report
        await self.sync_into_ready()
        return next((r for r in self._ready if r.order_id == intent.order_id), None)

    def pending(self) -> list[PendingOrder]:
        return list(self._pending)

    async def sync(self) -> list[ExecutionReport]:
        """Place accepted orders, then check every protective order; the reports of what happened."""
        async with self._lock:
            reports: list[ExecutionReport] = []
            try:
                while self._pending:
                    reports.extend(await self._place(self._pending[0]))
                    self._pending.pop(0)
                for symbol in list(self.portfolio.positions):
                    reports.extend(await self._check_protection(symbol))
            except TransientError as exc:
                log.warning("binance: %s; retrying on the next sync", exc)
            except _Refused as exc:
                log.error("binance refused a request (%s); retrying on the next sync", exc)
            return reports

    async def sync_into_ready(self) -> None:
        """:meth:`sync`, keeping the reports for the next :meth:`on_bar` / :meth:`drain`."""
        self._ready.extend(await self.sync())

    def on_bar(self, bar: Bar) -> list[ExecutionReport]:
        """Mark the portfolio; the reports :meth:`sync` produced since the last call."""
        self.portfolio.update_mark(bar.symbol, bar.close)
        ready, self._ready = self._ready, []
        return ready

    def drain(self) -> list[ExecutionReport]:
        ready, self._ready = self._ready, []
        return ready

    # --------------------------------------------------------------- placement
    async def _place(self, order: PendingOrder) -> list[ExecutionReport]:
        intent, cid = order.intent, client_order_id(order.intent.order_id)
        resp = await self._recover(intent.symbol, cid) if intent.order_id in self._maybe_sent else None
        if resp is None:
            now = self.clock.now()
            if intent.expires_at is not None and intent.expires_at <= now:
                return [self._reject(intent, ReasonCode.EXPIRED, now, journal="accepted")]
            early = await self._cancel_protection(intent.symbol) if intent.side is Side.SELL else []
            self._ready.extend(early)
            self._maybe_sent.add(intent.order_id)
            try:
                resp = await self._call("order", self.client.create_order, symbol=intent.symbol,
                                        side=intent.side.value.upper(), type="MARKET",
                                        quantity=_fmt(order.qty, self._lot(intent.symbol)), newClientOrderId=cid,
                                        newOrderRespType="FULL")
            except _Refused as exc:
                reports = [self._reject(intent, reason_for(exc.code, exc.message), now, journal="accepted")]
                return reports + await self._protect(intent.symbol)
        reports = [self._record_market_fill(intent, order.qty, resp)]
        self._maybe_sent.discard(intent.order_id)
        await self._refresh_account()
        return reports + await self._protect(intent.symbol)

    async def _recover(self, symbol: str, cid: str) -> dict[str, Any] | None:
        """The order Binance already has under ``cid`` (with its fills from myTrades), or ``None``."""
        try:
            found = await self._call("order lookup", self.client.get_order, symbol=symbol, origClientOrderId=cid)
        except _Refused as exc:
            if exc.code == -2013:
                return None
            raise TransientError(f"binance order lookup {cid}: code {exc.code} {exc.message}") from None
        if float(found["executedQty"]) <= 0:
            return None if found["status"] not in OPEN else found | {"fills": []}
        trades = await self._call("trades", self.client.get_my_trades, symbol=symbol, orderId=found["orderId"])
        log.info("binance: order %s was already placed (orderId %s); not sending it again", cid, found["orderId"])
        return {**found, "transactTime": found.get("updateTime", found.get("time")), "fills": trades}

    def _record_market_fill(self, intent: OrderIntent, requested: float, resp: Mapping[str, Any]) -> ExecutionReport:
        base = base_asset(intent.symbol, self.quote_asset)
        fills = summarize_fills(resp.get("fills", []), intent.side, base, self.quote_asset)
        when = _ms(resp["transactTime"])
        if fills.executed <= 0:
            return self._reject(intent, ReasonCode.EXPIRED, when, journal="accepted")
        sign = 1.0 if intent.side is Side.BUY else -1.0
        record = FillRecord(fill_id=stable_id("fill", intent.order_id), order_id=intent.order_id,
                            symbol=intent.symbol, qty=fills.base_delta, price=fills.avg_price, fee=fills.fee,
                            kind="market", bar_time=when, reference=intent.price, stop_loss=intent.stop_loss,
                            take_profit=intent.take_profit, correlation_id=intent.correlation_id)
        full = fills.executed >= requested * (1 - 1e-9)
        report = ExecutionReport(
            order_id=intent.order_id, symbol=intent.symbol, side=intent.side,
            status=ExecutionStatus.FILLED if full else ExecutionStatus.PARTIALLY_FILLED, requested_qty=requested,
            executed_qty=min(fills.executed, requested), avg_price=fills.avg_price, timestamp=when,
            slippage_bps=slippage_bps(sign, fills.avg_price, intent.price), fees=fills.fee,
            correlation_id=intent.correlation_id)
        self._commit(record, report, order_filled=True)
        self.stats.filled += 1
        return report

    # -------------------------------------------------------------- protection
    async def _protect(self, symbol: str) -> list[ExecutionReport]:
        """(Re)place the protective order(s) for the symbol's whole position; refused -> close at market."""
        reports = await self._cancel_protection(symbol)
        pos = self.portfolio.position(symbol)
        if pos is None or pos.stop_loss is None:
            return reports
        lot, tick = self._lot(symbol), self._ticks[symbol]
        qty = round_to_step(min(pos.qty, sum(self._balances.get(base_asset(symbol, self.quote_asset), (0, 0)))), lot)
        if qty < self.symbols[symbol].min_qty:
            return reports
        prot = protection_for(pos, lot)
        stop = round(pos.stop_loss / tick) * tick
        limit = math.floor(stop * (1 - self.stop_limit_bps * 1e-4) / tick) * tick
        common = {"symbol": symbol, "side": "SELL", "quantity": _fmt(qty, lot)}
        try:
            if pos.take_profit is not None:
                await self._call("OCO", self.client.create_oco_order, **common, listClientOrderId=prot.list_id,
                                 aboveType="LIMIT_MAKER", abovePrice=_fmt(pos.take_profit, tick),
                                 aboveClientOrderId=prot.tp_id, belowType="STOP_LOSS_LIMIT",
                                 belowStopPrice=_fmt(stop, tick), belowPrice=_fmt(limit, tick),
                                 belowTimeInForce="GTC", belowClientOrderId=prot.stop_id)
            else:
                await self._call("stop", self.client.create_order, **common, type="STOP_LOSS_LIMIT",
                                 timeInForce="GTC", stopPrice=_fmt(stop, tick), price=_fmt(limit, tick),
                                 newClientOrderId=prot.stop_id)
        except _Refused as exc:
            log.error("binance refused the protective stop of %s (code %s: %s); closing the position at market",
                      symbol, exc.code, exc.message)
            try:
                return [*reports, await self._flatten(pos, qty)]
            except _Refused as refused:
                log.critical("binance refused to close the unprotected %s position (%s); retrying on the next sync",
                             symbol, refused)
                return reports
        self._protection[symbol] = prot
        await self._refresh_account()
        return reports

    async def _cancel_protection(self, symbol: str) -> list[ExecutionReport]:
        """Cancel the symbol's protective order(s); if they had filled meanwhile, the exit's report."""
        prot = self._protection.pop(symbol, None)
        if prot is None:
            return []
        try:
            await self._call("cancel", self.client.cancel_order, symbol=symbol, origClientOrderId=prot.stop_id)
        except _Refused as exc:
            if exc.code not in (-2011, -2013):
                self._protection[symbol] = prot
                raise TransientError(f"binance cancel {prot.stop_id}: code {exc.code} {exc.message}") from None
            state, order, reason = await self._leg_state(symbol, prot)
            pos = self.portfolio.position(symbol)
            if state == "filled" and pos is not None and order is not None and reason is not None:
                await self._refresh_account()
                return [self._record_exit(pos, order, reason)]
        await self._refresh_account()
        return []

    async def _check_protection(self, symbol: str) -> list[ExecutionReport]:
        """A filled protective leg becomes an exit; a missing or cancelled one is placed again."""
        prot, pos = self._protection.get(symbol), self.portfolio.position(symbol)
        if pos is None:
            return []
        if prot is None:
            return await self._protect(symbol)
        state, order, reason = await self._leg_state(symbol, prot)
        if state == "open":
            return []
        self._protection.pop(symbol, None)
        if state == "filled" and order is not None and reason is not None:
            await self._refresh_account()
            return [self._record_exit(pos, order, reason)]
        return await self._protect(symbol)

    async def _leg_state(self, symbol: str, prot: Protection) -> tuple[str, dict[str, Any] | None, ReasonCode | None]:
        """("open" | "filled" | "gone", the filled leg with its fills, the exit's reason)."""
        for leg, reason in ((prot.stop_id, ReasonCode.STOP_LOSS_HIT), (prot.tp_id, ReasonCode.TAKE_PROFIT_HIT)):
            order = None if leg is None else await self._recover(symbol, leg)
            if order is None:
                continue
            if float(order["executedQty"]) > 0:
                return "filled", order, reason
            if order["status"] in OPEN:
                return "open", None, None
        return "gone", None, None

    async def _flatten(self, pos: Position, qty: float) -> ExecutionReport:
        cid = client_order_id(stable_id("flat", pos.order_id, f"{qty:.8f}")[:24])
        resp = await self._recover(pos.symbol, cid)
        if resp is None:
            resp = await self._call("flatten", self.client.create_order, symbol=pos.symbol, side="SELL",
                                    type="MARKET", quantity=_fmt(qty, self._lot(pos.symbol)), newClientOrderId=cid,
                                    newOrderRespType="FULL")
        await self._refresh_account()
        return self._record_exit(pos, resp, ReasonCode.STOP_REFUSED)

    def _record_exit(self, pos: Position, order: Mapping[str, Any], reason: ReasonCode) -> ExecutionReport:
        fills = summarize_fills(order["fills"], Side.SELL, base_asset(pos.symbol, self.quote_asset), self.quote_asset)
        when = _ms(order["transactTime"])
        exit_id = stable_id("exit", pos.order_id, order["orderId"])
        level = pos.take_profit if reason is ReasonCode.TAKE_PROFIT_HIT else pos.stop_loss
        reference = level if reason is not ReasonCode.STOP_REFUSED and level else fills.avg_price
        kind = "take_profit" if reason is ReasonCode.TAKE_PROFIT_HIT else "stop_loss"
        record = FillRecord(fill_id=stable_id("bfill", pos.symbol, order["orderId"]), order_id=exit_id,
                            symbol=pos.symbol, qty=fills.base_delta, price=fills.avg_price, fee=fills.fee, kind=kind,
                            bar_time=when, reference=reference, correlation_id=pos.correlation_id)
        report = ExecutionReport(order_id=exit_id, symbol=pos.symbol, side=Side.SELL, status=ExecutionStatus.FILLED,
                                 requested_qty=fills.executed, executed_qty=fills.executed, avg_price=fills.avg_price,
                                 timestamp=when, slippage_bps=slippage_bps(-1.0, fills.avg_price, reference),
                                 fees=fills.fee, reason_code=reason, correlation_id=pos.correlation_id)
        self._commit(record, report, order_filled=False)
        self.stats.exits += 1
        return report

    # ----------------------------------------------------------------- account
    def account_view(self) -> AccountView:
        """Binance's balances (free quote; free + locked base, as L1's own stops hold it) minus pending orders."""
        quote = self._balances.get(self.quote_asset, (0.0, 0.0))[0]
        available, held, equity = {}, {}, sum(self._balances.get(self.quote_asset, (0.0, 0.0)))
        for symbol in self.symbols:
            base = sum(self._balances.get(base_asset(symbol, self.quote_asset), (0.0, 0.0)))
            available[symbol], held[symbol] = base, base
            pos = self.portfolio.position(symbol)
            equity += base * (self.portfolio.mark(symbol) or (pos.avg_price if pos else 0.0))
        for p in self._pending:
            if p.intent.side is Side.BUY:
                quote -= p.qty * p.intent.price * (1 + self._fee_rate)
                held[p.intent.symbol] = held.get(p.intent.symbol, 0.0) + p.qty
            else:
                available[p.intent.symbol] = available.get(p.intent.symbol, 0.0) - p.qty
        return AccountView(quote_available=quote, base_available=available, base_held=held, equity=equity,
                           fee_rate=self._fee_rate)

    async def _refresh_account(self) -> None:
        account = await self._call("account", self.client.get_account)
        self._balances = {b["asset"]: (float(b["free"]), float(b["locked"])) for b in account["balances"]}
        self._fee_rate = float(account.get("commissionRates", {}).get("taker", account.get("takerCommission", 0)))

    def _assets(self) -> list[str]:
        return [self.quote_asset, *(base_asset(s, self.quote_asset) for s in self.symbols)]

    def _lot(self, symbol: str) -> float:
        return float(self.symbols[symbol].lot_step)

    async def _call(self, what: str, fn: Any, **params: Any) -> Any:
        """One python-binance call: credential errors are fatal, network trouble transient, refusals raised."""
        from aiohttp import ClientError
        from binance.exceptions import BinanceAPIException, BinanceRequestException

        try:
            return await fn(**params)
        except BinanceAPIException as exc:
            if exc.code in AUTH_CODES:
                raise ConfigError(f"Binance rejected the API credentials on {what} (code {exc.code}: {exc.message}); "
                                  "check BINANCE_API_KEY / BINANCE_API_SECRET") from None
            if exc.status_code >= 500 or exc.code in (-1001, -1003, -1021):
                raise TransientError(f"binance {what}: code {exc.code} {exc.message}") from None
            raise _Refused(exc.code, exc.message) from None
        except (TimeoutError, BinanceRequestException, ClientError, OSError) as exc:
            raise TransientError(f"binance {what}: {type(exc).__name__}: {exc}") from None

    # ----------------------------------------------------------------- reports
    def _commit(self, record: FillRecord, report: ExecutionReport, *, order_filled: bool) -> None:
        if self.journal.record_fill(record, report, order_filled=order_filled):   # journal first, then state
            self.portfolio.apply_fill(record)
            self.stats.fees += record.fee
            self.stats.slippage_bps_sum += report.slippage_bps

    def _rejection(self, intent: OrderIntent, reason: ReasonCode, when: datetime) -> ExecutionReport:
        return ExecutionReport(order_id=intent.order_id, symbol=intent.symbol, side=intent.side,
                               status=ExecutionStatus.REJECTED, requested_qty=intent.qty, executed_qty=0.0,
                               avg_price=0.0, timestamp=when, reason_code=reason, correlation_id=intent.correlation_id)

    def _reject(self, intent: OrderIntent, reason: ReasonCode, when: datetime, *, journal: str) -> ExecutionReport:
        report = self._rejection(intent, reason, when)
        if journal == "accepted":
            self.journal.reject_accepted(intent.order_id, reason.value, report)
            self._maybe_sent.discard(intent.order_id)
        else:
            self.journal.record_report(report)
        self.stats.rejected[reason.value] += 1
        return report

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "received": self.stats.received, "filled": self.stats.filled,
                "exits": self.stats.exits, "rejected": dict(self.stats.rejected), "fees": self.stats.fees,
                "avg_slippage_bps": self.stats.avg_slippage_bps, "equity": self.portfolio.equity(),
                "balances": self.portfolio.balances, "open_positions": len(self.portfolio.positions),
                "pending": len(self._pending), "protected": sorted(self._protection)}


class _Refused(Exception):
    """Binance refused a request (an order-level error, not credentials or the network)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"code {code}: {message}")
        self.code, self.message = code, message


class BinanceBusAdapter(L1BusAdapter):
    """L1BusAdapter for a BinanceExecutor: connects it on start and runs its network work on orders and bars."""

    executor: BinanceExecutor  # type: ignore[assignment]

    async def start(self) -> None:
        await self.executor.start()
        await super().start()

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            await self.executor.close()

    async def on_bar(self, bar: Bar) -> None:
        self.executor.portfolio.update_mark(bar.symbol, bar.close)
        await self.executor.sync_into_ready()
        await super().on_bar(bar)

    async def _on_order(self, message: Message) -> None:
        await super()._on_order(message)
        await self.executor.sync_into_ready()
        self._outbox.extend(self.executor.drain())
        await self.flush()
