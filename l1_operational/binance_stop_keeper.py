"""BinanceStopKeeper: the exchange-side stops of :class:`~l1_operational.binance_executor.BinanceExecutor`.

Every open position is guarded on Binance by a STOP_LOSS_LIMIT sell of its whole quantity, or by
an OCO (LIMIT_MAKER take-profit above, STOP_LOSS_LIMIT below) when it has a take-profit; the ids
and requests are built in :mod:`l1_operational.binance_protection`. This base class of the
executor places them, cancels them before a sell, and polls them: a filled leg becomes a
stop-loss / take-profit exit (its fills from ``myTrades``), a vanished one is placed again, and a
stop Binance refuses outright makes L1 close the position at market: never an unprotected
position.

It works on the executor's state (client, portfolio, balances, journal commit); the order
lookup :meth:`BinanceExecutor._recover`, :meth:`~BinanceExecutor._refresh_account`,
:meth:`~BinanceExecutor._commit` and :meth:`~BinanceExecutor._lot` are the executor's. Also here:
the clientOrderId an order_id maps to, and Binance's open order statuses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from l1_operational.binance_fills import BinanceRefusal, call_binance, exit_fill
from l1_operational.binance_protection import Protection, format_step, protection_for, protection_request
from l1_operational.executor import ExecutorStats
from l1_operational.portfolio import Portfolio, Position, base_asset
from l2_tactical.errors import TransientError
from l2_tactical.execution import round_to_step
from l2_tactical.messages import ExecutionReport, ReasonCode, stable_id

if TYPE_CHECKING:
    from l1_operational.portfolio import FillRecord

log = logging.getLogger("l1_operational.binance_executor")   # the executor's records, whichever part logs them
OPEN = ("NEW", "PARTIALLY_FILLED")


def client_order_id(order_id: str) -> str:
    """Binance newClientOrderId for an order_id (``^[.A-Z:/a-z0-9_-]{1,36}$``).

    >>> client_order_id("ord-0123456789abcdef0123")
    'l2-ord-0123456789abcdef0123'
    """
    cid = f"l2-{order_id}"
    if len(cid) > 36 or not all(c.isalnum() or c in ".:/_-" for c in cid):
        raise ValueError(f"order_id={order_id!r}: cannot be a Binance clientOrderId ({cid!r})")
    return cid


class BinanceStopKeeper:
    """The protective orders of a BinanceExecutor's positions: place, cancel, poll, flatten when refused."""

    client: Any
    portfolio: Portfolio
    symbols: dict[str, Any]
    quote_asset: str
    stop_limit_bps: float
    stats: ExecutorStats
    _balances: dict[str, tuple[float, float]]
    _ticks: dict[str, float]
    _protection: dict[str, Protection]
    _call = staticmethod(call_binance)

    if TYPE_CHECKING:   # the executor's; declared here for the type checker only
        async def _recover(self, symbol: str, cid: str) -> dict[str, Any] | None: ...
        async def _refresh_account(self) -> None: ...
        def _commit(self, record: FillRecord, report: ExecutionReport, *, order_filled: bool) -> None: ...
        def _lot(self, symbol: str) -> float: ...

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
        what, params = protection_request(prot, pos, qty, lot=lot, tick=tick, stop_limit_bps=self.stop_limit_bps)
        try:
            await self._call(what, self.client.create_oco_order if what == "OCO" else self.client.create_order,
                             **params)
        except BinanceRefusal as exc:
            log.error("binance refused the protective stop of %s (code %s: %s); closing the position at market",
                      symbol, exc.code, exc.message)
            try:
                return [*reports, await self._flatten(pos, qty)]
            except BinanceRefusal as refused:
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
        except BinanceRefusal as exc:
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
                                    type="MARKET", quantity=format_step(qty, self._lot(pos.symbol)),
                                    newClientOrderId=cid, newOrderRespType="FULL")
        await self._refresh_account()
        return self._record_exit(pos, resp, ReasonCode.STOP_REFUSED)

    def _record_exit(self, pos: Position, order: Mapping[str, Any], reason: ReasonCode) -> ExecutionReport:
        record, report = exit_fill(pos, order, reason, self.quote_asset)
        self._commit(record, report, order_filled=False)
        self.stats.exits += 1
        return report
