"""The exchange-side protection of a position: its order ids and the python-binance request that places it.

A position's whole quantity is guarded on Binance by a STOP_LOSS_LIMIT sell, or by an OCO
(LIMIT_MAKER take-profit above, STOP_LOSS_LIMIT below) when it has a take-profit. The ids derive
from the position (its opening order and quantity), so a restart finds the same orders again.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from l1_operational.portfolio import Position
from l2_tactical.execution import round_to_step
from l2_tactical.messages import stable_id


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


def format_step(x: float, step: float) -> str:
    """``x`` rounded to the ``step`` grid, written with the step's decimals (as Binance's filters want it).

    >>> format_step(0.123456, 0.0001), format_step(6014.937, 0.01)
    ('0.1234', '6014.93')
    """
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{round_to_step(x, step):.{decimals}f}"


def protection_request(prot: Protection, pos: Position, qty: float, *, lot: float, tick: float,
                       stop_limit_bps: float) -> tuple[str, dict[str, Any]]:
    """("OCO" | "stop", the parameters of python-binance's ``create_oco_order`` | ``create_order``) guarding
    ``qty`` of ``pos``: the stop at its stop-loss (on the tick grid), its limit ``stop_limit_bps`` below."""
    if pos.stop_loss is None:
        raise ValueError(f"position {pos.symbol}: stop_loss=None, nothing to protect with")
    stop = round(pos.stop_loss / tick) * tick
    limit = math.floor(stop * (1 - stop_limit_bps * 1e-4) / tick) * tick
    common = {"symbol": pos.symbol, "side": "SELL", "quantity": format_step(qty, lot)}
    if pos.take_profit is not None:
        return "OCO", {**common, "listClientOrderId": prot.list_id, "aboveType": "LIMIT_MAKER",
                       "abovePrice": format_step(pos.take_profit, tick), "aboveClientOrderId": prot.tp_id,
                       "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": format_step(stop, tick),
                       "belowPrice": format_step(limit, tick), "belowTimeInForce": "GTC",
                       "belowClientOrderId": prot.stop_id}
    return "stop", {**common, "type": "STOP_LOSS_LIMIT", "timeInForce": "GTC", "stopPrice": format_step(stop, tick),
                    "price": format_step(limit, tick), "newClientOrderId": prot.stop_id}
