"""Binance's answers in L1's terms: fills folded into one fill, the journal's FillRecord and the
ExecutionReport of a market order or a protective exit, and what an error or refusal means.

Pure functions over python-binance's JSON (``fills[]`` of an order response, or ``myTrades``
rows for an order found again); :class:`l1_operational.binance_executor.BinanceExecutor`
journals what they return. :func:`call_binance` sorts python-binance's exceptions: bad
credentials are fatal (ConfigError), network trouble is transient (TransientError), anything
else is a :class:`BinanceRefusal` whose reason code :func:`reason_for` gives.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from l1_operational.portfolio import FillRecord, Position, base_asset
from l2_tactical.errors import ConfigError, TransientError
from l2_tactical.execution import slippage_bps
from l2_tactical.messages import ExecutionReport, ExecutionStatus, OrderIntent, ReasonCode, Side, stable_id

log = logging.getLogger(__name__)
AUTH_CODES = (-1022, -2008, -2014, -2015)   # bad signature / key: fatal, fix the environment


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
    """The L1 reason code of a Binance order refusal.

    >>> reason_for(-2010, "Account has insufficient balance for requested action.").value
    'insufficient_balance'
    """
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


def fill_time(value: Any) -> datetime:
    """A Binance millisecond timestamp as a UTC datetime."""
    return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)


def market_fill(intent: OrderIntent, requested: float, resp: Mapping[str, Any],
                quote_asset: str) -> tuple[FillRecord, ExecutionReport] | None:
    """The fill and report of ``intent``'s MARKET order (``requested`` base); ``None`` when nothing executed."""
    fills = summarize_fills(resp.get("fills", []), intent.side, base_asset(intent.symbol, quote_asset), quote_asset)
    when = fill_time(resp["transactTime"])
    if fills.executed <= 0:
        return None
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
    return record, report


def exit_fill(pos: Position, order: Mapping[str, Any], reason: ReasonCode,
              quote_asset: str) -> tuple[FillRecord, ExecutionReport]:
    """The fill and report of the sell that closed ``pos``: a protective leg that filled (STOP_LOSS_HIT /
    TAKE_PROFIT_HIT, slippage against its level) or L1's market close of a refused stop (STOP_REFUSED)."""
    fills = summarize_fills(order["fills"], Side.SELL, base_asset(pos.symbol, quote_asset), quote_asset)
    when = fill_time(order["transactTime"])
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
    return record, report


class BinanceRefusal(Exception):
    """Binance refused a request (an order-level error, not credentials or the network)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"code {code}: {message}")
        self.code, self.message = code, message


async def call_binance(what: str, fn: Any, **params: Any) -> Any:
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
        raise BinanceRefusal(exc.code, exc.message) from None
    except (TimeoutError, BinanceRequestException, ClientError, OSError) as exc:
        raise TransientError(f"binance {what}: {type(exc).__name__}: {exc}") from None
