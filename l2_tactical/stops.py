"""Stop-loss and take-profit levels: initial placement, trailing and move-to-breakeven.

Pure functions on numbers. ``side`` is ``+1`` for a long (a BUY entry: the stop
lies *below* the entry) and ``-1`` for a short (a SELL entry: the stop lies
*above*). A function that cannot place a stop returns ``None`` (never a
made-up level); the pipeline turns that into ``ReasonCode.MISSING_STOP``.

Methods (``risk.stop_method``)

* ``fixed``: ``entry * (1 - side * risk.default_stop_pct)``
* ``atr``: ``entry - side * risk.atr_multiplier * ATR``
* ``volatility``: ``entry * exp(-side * risk.atr_multiplier * sigma)`` with sigma
  the per-bar standard deviation of log returns
* ``support_resistance``: just beyond the nearest support below (long) or
  resistance above (short) the entry; the levels are an input

The take-profit sits at ``risk.take_profit_r`` times the initial risk R
(``|entry - stop|``) on the other side of the entry.

>>> fixed_stop(100.0, 1, 0.02)
98.0
>>> take_profit(100.0, 98.0, 2.0)
104.0
>>> atr_stop(100.0, -1, atr=1.5, multiplier=2.0)
103.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

STOP_METHODS = ("fixed", "atr", "volatility", "support_resistance")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One closed bar (prices only)."""

    open: float
    high: float
    low: float
    close: float


def _finite_positive(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def _check_side(side: int) -> None:
    if side not in (1, -1):
        raise ValueError(f"side={side!r}: must be +1 (long) or -1 (short)")


def _coherent(entry: float, side: int, stop: float) -> float | None:
    """``stop`` if it is a positive finite level strictly on the losing side of ``entry``."""
    if not _finite_positive(stop):
        return None
    return stop if (side > 0 and stop < entry) or (side < 0 and stop > entry) else None


def is_coherent_stop(side: int, price: float, stop: float | None) -> bool:
    """A buy's stop must be below the price, a sell's above it.

    >>> is_coherent_stop(1, 100.0, 99.0), is_coherent_stop(1, 100.0, 101.0)
    (True, False)
    """
    return stop is not None and _coherent(price, side, stop) is not None


def fixed_stop(entry: float, side: int, pct: float) -> float | None:
    _check_side(side)
    if not (_finite_positive(entry) and _finite_positive(pct) and pct < 1):
        return None
    return _coherent(entry, side, entry * (1.0 - side * pct))


def atr_stop(entry: float, side: int, *, atr: float, multiplier: float) -> float | None:
    _check_side(side)
    if not (_finite_positive(entry) and _finite_positive(atr) and _finite_positive(multiplier)):
        return None
    return _coherent(entry, side, entry - side * multiplier * atr)


def volatility_stop(entry: float, side: int, *, sigma: float, multiplier: float) -> float | None:
    """Stop at ``multiplier`` per-bar standard deviations of log return away from the entry."""
    _check_side(side)
    if not (_finite_positive(entry) and _finite_positive(sigma) and _finite_positive(multiplier)):
        return None
    return _coherent(entry, side, entry * math.exp(-side * multiplier * sigma))


def support_resistance_stop(entry: float, side: int, levels: Sequence[float], *, buffer_pct: float) -> float | None:
    """Just beyond the nearest support below (long) or resistance above (short) the entry.

    >>> support_resistance_stop(100.0, 1, [90.0, 97.0, 105.0], buffer_pct=0.01)
    96.03
    >>> support_resistance_stop(100.0, 1, [105.0], buffer_pct=0.01) is None
    True
    """
    _check_side(side)
    if not _finite_positive(entry):
        return None
    below = [lv for lv in levels if _finite_positive(lv) and lv < entry]
    above = [lv for lv in levels if _finite_positive(lv) and lv > entry]
    if side > 0:
        return _coherent(entry, side, max(below) * (1.0 - buffer_pct)) if below else None
    return _coherent(entry, side, min(above) * (1.0 + buffer_pct)) if above else None


def initial_stop(
    method: str,
    entry: float,
    side: int,
    risk: Any,
    *,
    atr: float | None = None,
    sigma: float | None = None,
    levels: Sequence[float] = (),
) -> float | None:
    """The stop of a new position by ``risk.stop_method`` (``risk`` is ``L2Config.risk``).

    The support/resistance buffer is ``risk.default_stop_pct / 4`` beyond the level.
    """
    if method == "fixed":
        return fixed_stop(entry, side, risk.default_stop_pct)
    if method == "atr":
        return atr_stop(entry, side, atr=atr if atr is not None else math.nan, multiplier=risk.atr_multiplier)
    if method == "volatility":
        return volatility_stop(
            entry, side, sigma=sigma if sigma is not None else math.nan, multiplier=risk.atr_multiplier
        )
    if method == "support_resistance":
        return support_resistance_stop(entry, side, levels, buffer_pct=risk.default_stop_pct / 4)
    raise ValueError(f"stop method {method!r}: must be one of {', '.join(STOP_METHODS)}")


def take_profit(entry: float, stop: float, r_multiple: float) -> float | None:
    """``entry + r_multiple * (entry - stop)`` mirrored for shorts; ``None`` if not positive."""
    if not (_finite_positive(entry) and _finite_positive(stop) and _finite_positive(r_multiple)):
        return None
    level = entry + r_multiple * (entry - stop)
    return level if _finite_positive(level) else None


def trail_candidate(side: int, bar: Bar, *, atr: float | None, multiplier: float, pct: float) -> float:
    """Where a trailing stop would sit after ``bar``: ATR-based when an ATR is known, else percent."""
    if _finite_positive(atr):
        return bar.high - multiplier * atr if side > 0 else bar.low + multiplier * atr  # type: ignore[operator]
    return bar.high * (1.0 - pct) if side > 0 else bar.low * (1.0 + pct)


def update_stop(position: Any, bar: Bar, risk: Any, *, atr: float | None = None) -> float:
    """The position's stop after ``bar``: trailing and move-to-breakeven, never looser.

    ``position`` needs ``qty`` (signed), ``entry_price``, ``stop_loss`` and
    ``initial_stop`` (see :class:`l2_tactical.position_monitor.Position`).
    Once the bar's best price is ``risk.breakeven_threshold`` R in profit the stop
    moves to the entry; with ``risk.trailing_stop`` it also trails the bar's
    extreme by ``risk.atr_multiplier`` ATR (or ``risk.default_stop_pct``). A long's
    stop only ever rises, a short's only falls.
    """
    side = 1 if position.qty > 0 else -1
    stop = position.stop_loss
    r = abs(position.entry_price - position.initial_stop)
    best_move = (bar.high - position.entry_price) if side > 0 else (position.entry_price - bar.low)
    candidates = [stop]
    if risk.breakeven_threshold > 0 and r > 0 and best_move >= risk.breakeven_threshold * r:
        candidates.append(position.entry_price)
    if risk.trailing_stop:
        cand = trail_candidate(side, bar, atr=atr, multiplier=risk.atr_multiplier, pct=risk.default_stop_pct)
        if _finite_positive(cand):
            candidates.append(cand)
    return max(candidates) if side > 0 else min(candidates)
