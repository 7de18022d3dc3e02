"""L1 order validation: every OrderIntent gets a decision with a reason code, never an exception.

Checks, in this order (the first failing one is the reason):

===================  =======================================================================
DUPLICATE_ORDER      the order_id was seen before (journal): an order is filled at most once
EXPIRED              ``expires_at`` is at or before now
UNKNOWN_SYMBOL       no ``symbols.<SYMBOL>`` limits configured
INCOHERENT_STOP      buy stop not below price / sell stop not above it (defence in depth:
                     OrderIntent already refuses to be built that way; payloads decoded by
                     :func:`intent_from_payload` map that refusal to this code)
INVALID_QTY          the quantity is not > 0 once rounded down to the symbol's lot step
MAX_SYMBOL_QTY       the quantity exceeds the per-symbol cap (``symbols.<S>.max_qty``)
MIN_NOTIONAL         below ``min_qty`` or ``min_notional`` (a sell closing the whole position
                     is exempt)
MAX_NOTIONAL         above ``max_notional``
INSUFFICIENT_BALANCE a buy costs more quote (fee included) than is available, or a sell
                     exceeds the available base balance (spot: no shorting)
ASSET_EXPOSURE       after a buy the asset would exceed ``symbols.<S>.max_exposure`` of equity
===================  =======================================================================

"Available" already excludes what accepted-but-unfilled orders have reserved
(:class:`AccountView`). The functions are pure: numbers and messages in, a decision out.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Container, Mapping
from datetime import datetime
from typing import Any

from l2_tactical.execution import check_filters, round_to_step
from l2_tactical.messages import MessageError, OrderIntent, ReasonCode, Side


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AccountView:
    """What the order manager needs to know about the account (reservations already deducted)."""

    quote_available: float
    base_available: Mapping[str, float]   # symbol -> base qty available to sell
    base_held: Mapping[str, float]        # symbol -> base qty held plus pending buys (for exposure)
    equity: float
    fee_rate: float


@dataclasses.dataclass(frozen=True, slots=True)
class OrderDecision:
    reason: ReasonCode
    detail: str = ""
    qty: float = 0.0  # the quantity to trade (rounded to the lot step) when accepted

    @property
    def accepted(self) -> bool:
        return self.reason is ReasonCode.OK


def _reject(reason: ReasonCode, detail: str) -> OrderDecision:
    return OrderDecision(reason, detail)


def check_order(intent: OrderIntent, *, limits: Mapping[str, Any], account: AccountView,
                now: datetime, seen: Container[str]) -> OrderDecision:
    """Validate one intent. ``limits`` maps symbol -> SymbolLimits (``L2Config.symbols``)."""
    if intent.order_id in seen:
        return _reject(ReasonCode.DUPLICATE_ORDER, f"order_id {intent.order_id} was already received")
    if intent.expires_at is not None and intent.expires_at <= now:
        return _reject(ReasonCode.EXPIRED, f"expires_at {intent.expires_at.isoformat()} <= now {now.isoformat()}")
    lim = limits.get(intent.symbol)
    if lim is None:
        return _reject(ReasonCode.UNKNOWN_SYMBOL, f"symbol {intent.symbol!r} not in {sorted(limits)}")
    static = _check_static(intent, lim)
    if not static.accepted:
        return static
    return _check_account(intent, lim, account, static.qty)


def _check_static(intent: OrderIntent, lim: Any) -> OrderDecision:
    """Checks that depend on the order and the symbol's limits only."""
    if not isinstance(intent.side, Side):
        return _reject(ReasonCode.MALFORMED_MESSAGE, f"side={intent.side!r}")
    buy = intent.side is Side.BUY
    if (buy and intent.stop_loss >= intent.price) or (not buy and intent.stop_loss <= intent.price):
        return _reject(ReasonCode.INCOHERENT_STOP,
                       f"{intent.side.value} stop {intent.stop_loss} vs price {intent.price}")
    qty = round_to_step(intent.qty, lim.lot_step) if math.isfinite(intent.qty) else 0.0
    if not qty > 0:
        return _reject(ReasonCode.INVALID_QTY, f"qty {intent.qty} is {qty} at lot step {lim.lot_step}")
    if qty > lim.max_qty * (1 + 1e-12):
        return _reject(ReasonCode.MAX_SYMBOL_QTY, f"qty {qty} > max_qty {lim.max_qty} for {intent.symbol}")
    return OrderDecision(ReasonCode.OK, "", qty)


def _check_account(intent: OrderIntent, lim: Any, account: AccountView, qty: float) -> OrderDecision:
    price = intent.price
    held_to_sell = account.base_available.get(intent.symbol, 0.0)
    closes_all = intent.side is Side.SELL and abs(qty - round_to_step(held_to_sell, lim.lot_step)) < lim.lot_step / 2
    filt = check_filters(qty, price, min_qty=lim.min_qty, min_notional=lim.min_notional,
                         max_notional=lim.max_notional)
    if filt is not ReasonCode.OK and not (closes_all and filt is ReasonCode.MIN_NOTIONAL):
        return _reject(filt, f"qty {qty} x price {price} = {qty * price:.2f} vs [{lim.min_notional}, "
                             f"{lim.max_notional}] (min_qty {lim.min_qty})")
    if intent.side is Side.BUY:
        cost = qty * price * (1 + account.fee_rate)
        if cost > account.quote_available + 1e-9:
            return _reject(ReasonCode.INSUFFICIENT_BALANCE,
                           f"buy costs {cost:.2f} > available {account.quote_available:.2f}")
        held_after = account.base_held.get(intent.symbol, 0.0) + qty
        exposure = held_after * price / account.equity if account.equity > 0 else math.inf
        if exposure > lim.max_exposure + 1e-12:
            return _reject(ReasonCode.ASSET_EXPOSURE,
                           f"{intent.symbol} exposure {exposure:.4f} > max_exposure {lim.max_exposure}")
    elif qty > held_to_sell * (1 + 1e-9):
        return _reject(ReasonCode.INSUFFICIENT_BALANCE, f"sell {qty} > available base {held_to_sell}")
    return OrderDecision(ReasonCode.OK, "", qty)


# ----------------------------------------------------------------------- payloads

_FIELD_REASONS = {"qty": ReasonCode.INVALID_QTY, "stop_loss": ReasonCode.INCOHERENT_STOP}


def intent_from_payload(payload: Mapping[str, Any] | str | bytes) -> tuple[OrderIntent | None, ReasonCode, str]:
    """Decode an OrderIntent from bus JSON; a refusal is mapped to the L1 reason code it stands for.

    Returns ``(intent, OK, "")`` or ``(None, reason, detail)``: ``INVALID_QTY`` for a bad quantity,
    ``INCOHERENT_STOP`` for a stop on the wrong side of the price, ``MISSING_STOP`` when there is
    none, ``MALFORMED_MESSAGE`` for anything else.
    """
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return None, ReasonCode.MALFORMED_MESSAGE, f"OrderIntent: payload is not JSON ({exc})"
    if not isinstance(payload, Mapping):
        got = type(payload).__name__
        return None, ReasonCode.MALFORMED_MESSAGE, f"OrderIntent: payload must be an object, got {got}"
    try:
        return OrderIntent.from_dict(payload), ReasonCode.OK, ""
    except MessageError as exc:
        text = str(exc)
        if payload.get("stop_loss") is None:
            return None, ReasonCode.MISSING_STOP, text
        for field, reason in _FIELD_REASONS.items():
            if text.startswith(f"OrderIntent.{field}="):
                return None, reason, text
        return None, ReasonCode.MALFORMED_MESSAGE, text
