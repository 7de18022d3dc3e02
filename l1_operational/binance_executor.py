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

Binance's fills, errors and refusals are read in :mod:`l1_operational.binance_fills`, the protective
orders' ids and requests built in :mod:`l1_operational.binance_protection` and kept on the exchange
(placed, polled, cancelled, flattened when refused) by the base class in
:mod:`l1_operational.binance_stop_keeper`, which also holds :func:`client_order_id`; the bus adapter
is :mod:`l1_operational.binance_bus_adapter` (their names are importable from here too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from l1_operational.binance_bus_adapter import BinanceBusAdapter
from l1_operational.binance_fills import (
    AUTH_CODES,
    BinanceRefusal,
    FillSummary,
    fill_time,
    market_fill,
    reason_for,
    summarize_fills,
)
from l1_operational.binance_protection import Protection, format_step, protection_for
from l1_operational.binance_stop_keeper import OPEN, BinanceStopKeeper, client_order_id
from l1_operational.executor import ExecutorStats, PendingOrder
from l1_operational.live_gate import RedactingFilter, api_credentials
from l1_operational.order_manager import AccountView, check_order
from l1_operational.portfolio import FillRecord, Portfolio, base_asset
from l2_tactical.errors import ConfigError, TransientError
from l2_tactical.messages import ExecutionReport, ExecutionStatus, OrderIntent, ReasonCode, Side

if TYPE_CHECKING:
    from l1_operational.datafeed import Bar
    from l1_operational.journal import Journal
    from l2_tactical.clock import Clock

__all__ = ["AUTH_CODES", "OPEN", "BinanceBusAdapter", "BinanceExecutor", "BinanceRefusal", "FillSummary", "Protection",
           "client_order_id", "protection_for", "reason_for", "summarize_fills"]

log = logging.getLogger(__name__)
_LOGGERS = ("", "binance", "l1_operational", "aiohttp")



class BinanceExecutor(BinanceStopKeeper):
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
            except BinanceRefusal as exc:
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
                                        quantity=format_step(order.qty, self._lot(intent.symbol)), newClientOrderId=cid,
                                        newOrderRespType="FULL")
            except BinanceRefusal as exc:
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
        except BinanceRefusal as exc:
            if exc.code == -2013:
                return None
            raise TransientError(f"binance order lookup {cid}: code {exc.code} {exc.message}") from None
        if float(found["executedQty"]) <= 0:
            return None if found["status"] not in OPEN else found | {"fills": []}
        trades = await self._call("trades", self.client.get_my_trades, symbol=symbol, orderId=found["orderId"])
        log.info("binance: order %s was already placed (orderId %s); not sending it again", cid, found["orderId"])
        return {**found, "transactTime": found.get("updateTime", found.get("time")), "fills": trades}

    def _record_market_fill(self, intent: OrderIntent, requested: float, resp: Mapping[str, Any]) -> ExecutionReport:
        fill = market_fill(intent, requested, resp, self.quote_asset)
        if fill is None:
            return self._reject(intent, ReasonCode.EXPIRED, fill_time(resp["transactTime"]), journal="accepted")
        self._commit(*fill, order_filled=True)
        self.stats.filled += 1
        return fill[1]

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

