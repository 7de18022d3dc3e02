"""Open positions and their monitor: stop management plus MAE / MFE tracking.

A :class:`Position` is immutable; :func:`monitor_position` returns the position
after one more closed bar: its maximum adverse excursion (MAE, the worst
unrealised move against it, per unit, in price) and maximum favourable
excursion (MFE) updated from the bar's low/high, its stop trailed (never
loosened, see :func:`l2_tactical.stops.update_stop`), and whether the bar hit
its stop or take-profit (decided by the one execution simulator,
:func:`l2_tactical.execution.stop_exit`).

>>> from datetime import datetime, timezone
>>> from l2_tactical.stops import Bar
>>> p = open_position("BTCUSDT", 0.1, 100.0, stop_loss=98.0, take_profit=104.0,
...                   opened_at=datetime(2024, 1, 1, tzinfo=timezone.utc))
>>> p = track_excursions(p, Bar(open=100.0, high=103.0, low=99.0, close=102.0))
>>> p.mae, p.mfe, p.mfe_r
(1.0, 3.0, 1.5)
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from typing import Any

from l2_tactical.execution import stop_exit
from l2_tactical.messages import ReasonCode
from l2_tactical.stops import Bar, update_stop


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """An open position: ``qty`` > 0 long, < 0 short (base asset)."""

    symbol: str
    qty: float
    entry_price: float
    stop_loss: float
    initial_stop: float
    opened_at: datetime
    take_profit: float | None = None
    last_price: float = 0.0
    mae: float = 0.0
    mfe: float = 0.0

    def __post_init__(self) -> None:
        for name in ("qty", "entry_price", "stop_loss", "initial_stop"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"Position.{name}={v!r}: must be a finite number")
        if self.qty == 0:
            raise ValueError(f"Position.qty={self.qty!r}: an open position has a non-zero quantity")
        if self.entry_price <= 0 or self.stop_loss <= 0:
            raise ValueError(f"Position {self.symbol}: entry_price and stop_loss must be > 0")
        if self.last_price <= 0:
            object.__setattr__(self, "last_price", self.entry_price)

    @property
    def side(self) -> int:
        return 1 if self.qty > 0 else -1

    @property
    def initial_risk(self) -> float:
        """R per unit: distance from the entry to the initial stop."""
        return abs(self.entry_price - self.initial_stop)

    @property
    def mae_r(self) -> float:
        return self.mae / self.initial_risk if self.initial_risk > 0 else 0.0

    @property
    def mfe_r(self) -> float:
        return self.mfe / self.initial_risk if self.initial_risk > 0 else 0.0

    def notional(self, price: float | None = None) -> float:
        """Absolute value of the position at ``price`` (default: the last seen price)."""
        return abs(self.qty) * (self.last_price if price is None else price)

    def risk_to_stop(self, price: float | None = None) -> float:
        """Quote currency lost if the stop is hit from ``price`` (0 once the stop locks in profit)."""
        p = self.last_price if price is None else price
        return abs(self.qty) * max(self.side * (p - self.stop_loss), 0.0)

    def unrealised_pnl(self, price: float | None = None) -> float:
        p = self.last_price if price is None else price
        return self.qty * (p - self.entry_price)


def open_position(
    symbol: str, qty: float, price: float, *, stop_loss: float, opened_at: datetime, take_profit: float | None = None
) -> Position:
    return Position(
        symbol=symbol,
        qty=qty,
        entry_price=price,
        stop_loss=stop_loss,
        initial_stop=stop_loss,
        take_profit=take_profit,
        opened_at=opened_at,
        last_price=price,
    )


def add_to_position(position: Position, qty: float, price: float) -> Position | None:
    """The position after a fill of signed ``qty`` at ``price`` (``None`` when it is closed).

    Adding moves the entry to the volume-weighted average; reducing keeps it.
    """
    new_qty = position.qty + qty
    if abs(new_qty) <= 1e-12 * max(abs(position.qty), 1.0) or new_qty * position.qty < 0:
        return None
    entry = position.entry_price
    if qty * position.qty > 0:
        entry = (position.qty * position.entry_price + qty * price) / new_qty
    return dataclasses.replace(position, qty=new_qty, entry_price=entry, last_price=price)


def track_excursions(position: Position, bar: Bar) -> Position:
    """MAE / MFE (per unit, price) updated with the bar's extremes; last price = close."""
    mae, mfe = _excursions(position, bar)
    return dataclasses.replace(position, mae=mae, mfe=mfe, last_price=bar.close)


def _excursions(position: Position, bar: Bar) -> tuple[float, float]:
    """The position's (MAE, MFE) once ``bar`` is included."""
    if position.side > 0:
        adverse, favourable = position.entry_price - bar.low, bar.high - position.entry_price
    else:
        adverse, favourable = bar.high - position.entry_price, position.entry_price - bar.low
    return max(position.mae, adverse, 0.0), max(position.mfe, favourable, 0.0)


def monitor_position(
    position: Position, bar: Bar, risk: Any, *, atr: float | None = None
) -> tuple[Position, tuple[float, ReasonCode] | None]:
    """One closed bar of a position: exit check against the stop *before* the bar, then
    excursions and the new (trailed) stop. Returns ``(position, exit)`` where ``exit`` is
    ``(level, STOP_LOSS_HIT | TAKE_PROFIT_HIT)`` when the bar left the position."""
    hit = stop_exit(position.side, position.stop_loss, position.take_profit, bar.open, bar.high, bar.low)
    if hit is not None:
        return track_excursions(position, bar), hit
    # the stop trails from the position's levels, which the excursions do not change: one new position
    stop = update_stop(position, bar, risk, atr=atr)
    mae, mfe = _excursions(position, bar)
    p = position  # dataclasses.replace(position, mae=, mfe=, last_price=, stop_loss=) without its field walk
    return Position(symbol=p.symbol, qty=p.qty, entry_price=p.entry_price, stop_loss=stop,
                    initial_stop=p.initial_stop, opened_at=p.opened_at, take_profit=p.take_profit,
                    last_price=bar.close, mae=mae, mfe=mfe), None
