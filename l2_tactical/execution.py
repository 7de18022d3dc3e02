"""The one execution simulator (DESIGN.md rule 2).

Training envs, the backtester and the L1 paper executor all fill orders here, so
a strategy is judged in training exactly as it is traded.

Rules
-----
* A market order decided on bar t fills on bar t+1 at its **open**, never at the
  close the agent just saw. Callers pass that next bar's open/high/low.
* The fill price moves against the trader by the half-spread, a fixed slippage
  (both in bps) and a volatility term (``volatility_slippage`` x the fill bar's
  range as a fraction of its open). It is then clipped into the fill bar's
  ``[low, high]``: a fill is never outside its bar's range (on a flat bar that
  means no spread is paid; documented, deliberate).
* The fee is ``fee_bps`` of the traded notional, always >= 0, paid in quote.
* Quantities are rounded **down** to the exchange's lot step; an order below
  ``min_qty`` or ``min_notional`` is not sent (unless it closes the position).
* Stops and take-profits trigger inside a bar. A bar that opens beyond the stop
  fills at its open (gap). When one bar touches both stop and take-profit, the
  stop is assumed to have been hit first (the worse outcome).

The functions take plain floats or numpy arrays with the same formula
(``ops=np`` for arrays), so the batched VecEnv uses the very same code.

>>> c = Costs(fee_bps=10, half_spread_bps=1, slippage_bps=2, volatility_slippage=0.0)
>>> round(fill_price(1.0, 100.0, 101.0, 99.0, c), 6)   # buy: 3 bps worse than the open
100.03
>>> round(fee(1000.0, c), 6)
1.0
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from l2_tactical.messages import ReasonCode


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Costs:
    fee_bps: float
    half_spread_bps: float
    slippage_bps: float
    volatility_slippage: float

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"Costs.{f.name}={v!r}: must be a finite number >= 0")

    @classmethod
    def from_config(cls, cfg: Any) -> Costs:
        """From an ``ExecutionConfig`` (``L2Config.execution``)."""
        return cls(
            fee_bps=cfg.fee_bps,
            half_spread_bps=cfg.half_spread_bps,
            slippage_bps=cfg.slippage_bps,
            volatility_slippage=cfg.volatility_slippage,
        )

    @classmethod
    def zero(cls) -> Costs:
        return cls(fee_bps=0.0, half_spread_bps=0.0, slippage_bps=0.0, volatility_slippage=0.0)

    @property
    def fee_rate(self) -> float:
        return self.fee_bps * 1e-4

    @property
    def fixed_impact(self) -> float:
        return (self.half_spread_bps + self.slippage_bps) * 1e-4


class _ScalarOps:
    """The subset of numpy's API the formulas use, on Python floats (much faster per call)."""

    @staticmethod
    def clip(x: float, lo: float, hi: float) -> float:
        return lo if x < lo else hi if x > hi else x

    @staticmethod
    def where(cond: bool, a: float, b: float) -> float:
        return a if cond else b

    @staticmethod
    def abs(x: float) -> float:
        return -x if x < 0 else x

    @staticmethod
    def minimum(a: float, b: float) -> float:
        return a if a < b else b

    @staticmethod
    def maximum(a: float, b: float) -> float:
        return a if a > b else b

    @staticmethod
    def floor(x: float) -> float:
        return float(math.floor(x))

    @staticmethod
    def logical_and(a: bool, b: bool) -> bool:
        return a and b

    @staticmethod
    def logical_not(a: bool) -> bool:
        return not a


SCALAR = _ScalarOps()


# ----------------------------------------------------------------- prices and fees


def fill_price(sign: Any, open_: Any, high: Any, low: Any, costs: Costs, ops: Any = SCALAR) -> Any:
    """Price of a market order of direction ``sign`` (+1 buy, -1 sell) on its fill bar."""
    impact = costs.fixed_impact + costs.volatility_slippage * (high - low) / open_
    return ops.clip(open_ * (1.0 + sign * impact), low, high)


def fee(notional: Any, costs: Costs) -> Any:
    """Fee in quote currency for a traded notional (absolute value taken)."""
    return abs(notional) * costs.fee_rate


def slippage_bps(sign: float, price: float, reference: float) -> float:
    """How much worse than ``reference`` the fill was, in bps (>= 0 means worse)."""
    return sign * (price - reference) / reference * 1e4


def round_to_step(qty: Any, step: float, ops: Any = SCALAR) -> Any:
    """Round a quantity's magnitude down to the lot step (``step <= 0``: no rounding).

    >>> round_to_step(0.123456, 0.001)
    0.123
    """
    if step <= 0:
        return qty
    sign = ops.where(qty < 0, -1.0, 1.0)
    return sign * ops.floor(ops.abs(qty) / step + 1e-9) * step


def check_filters(
    qty: float, price: float, *, min_qty: float, min_notional: float, max_notional: float = math.inf
) -> ReasonCode:
    """Exchange filters for one order; ``ReasonCode.OK`` when it may be sent."""
    if not (qty > 0 and math.isfinite(qty)):
        return ReasonCode.INVALID_QTY
    if qty < min_qty or qty * price < min_notional:
        return ReasonCode.MIN_NOTIONAL
    if qty * price > max_notional:
        return ReasonCode.MAX_NOTIONAL
    return ReasonCode.OK


# ----------------------------------------------------------- rebalancing an account


def trade_to_target(cash: Any, qty: Any, target: Any, open_: Any, high: Any, low: Any, costs: Costs, *,
                    lot_step: float = 0.0, min_notional: float = 0.0, allow_short: bool = False,
                    ops: Any = SCALAR) -> tuple[Any, Any, Any, Any, Any]:
    """Move a one-asset account towards ``target`` exposure (position value / equity at the open).

    Returns ``(cash, qty, price, fee, traded_qty)`` after the fill. In spot mode the
    target is clipped to [0, 1] and a buy never spends more cash than there is
    (fee included). Works on floats or, with ``ops=np``, on arrays of accounts.
    """
    if ops is SCALAR:
        return _trade_floats(cash, qty, target, open_, high, low, costs, lot_step, min_notional, allow_short)
    lo = -1.0 if allow_short else 0.0
    target = ops.clip(target, lo, 1.0)
    equity = cash + qty * open_
    delta = target * equity / open_ - qty
    sign = ops.where(delta > 0, 1.0, -1.0)
    price = fill_price(sign, open_, high, low, costs, ops)
    # spend at most the cash a buy can pay for, fee included (spot: cash never < 0)
    afford = ops.maximum(cash, 0.0) / (price * (1.0 + costs.fee_rate))
    delta = ops.where(delta > 0, ops.minimum(delta, afford), delta)
    closing = ops.abs(qty + delta) < 1e-12
    delta = ops.where(closing, -qty, round_to_step(delta, lot_step, ops))
    too_small = ops.abs(delta) * price < min_notional
    delta = ops.where(ops.logical_and(too_small, ops.logical_not(closing)), 0.0, delta)
    paid = fee(delta * price, costs)
    return cash - delta * price - paid, qty + delta, price, paid, delta


def _trade_floats(cash: float, qty: float, target: float, open_: float, high: float, low: float, costs: Costs,
                  lot_step: float, min_notional: float, allow_short: bool) -> tuple[float, float, float, float, float]:
    """trade_to_target on Python floats, the ``SCALAR`` ops written out inline (the single env's hot path):
    the same operations in the same order, so the same numbers (tests/test_execution.py)."""
    lo = -1.0 if allow_short else 0.0
    target = lo if target < lo else 1.0 if target > 1.0 else target
    equity = cash + qty * open_
    delta = target * equity / open_ - qty
    buy = delta > 0
    impact = costs.fixed_impact + costs.volatility_slippage * (high - low) / open_
    price = open_ * (1.0 + (1.0 if buy else -1.0) * impact)
    price = low if price < low else high if price > high else price
    if buy:
        afford = (cash if cash > 0.0 else 0.0) / (price * (1.0 + costs.fee_rate))
        delta = delta if delta < afford else afford
    total = qty + delta
    closing = (-total if total < 0 else total) < 1e-12
    if closing:
        delta = -qty
    elif lot_step > 0:
        size = -delta if delta < 0 else delta
        delta = (-1.0 if delta < 0 else 1.0) * float(math.floor(size / lot_step + 1e-9)) * lot_step
    if not closing and (-delta if delta < 0 else delta) * price < min_notional:
        delta = 0.0
    notional = delta * price
    paid = abs(notional) * costs.fee_rate
    return cash - notional - paid, qty + delta, price, paid, delta


# ------------------------------------------------- the same rebalancing on preallocated arrays

_mul, _div, _add, _sub, _abs, _copyto = np.multiply, np.divide, np.add, np.subtract, np.absolute, np.copyto
_neg, _max, _min, _greater, _less, _putmask = np.negative, np.maximum, np.minimum, np.greater, np.less, np.putmask
_BAR_OPEN, _BAR_BUY_COST, _BAR_BUY, _BAR_SELL = range(4)


def bar_prices(open_: Any, high: Any, low: Any, costs: Costs) -> np.ndarray:
    """Per-bar constants of :class:`BatchTrader`, float64 ``[4, n_bars]``: the open, a buy's cost per unit
    with its fee (``buy price * (1 + fee_rate)``, the affordable quantity's divisor, next to the open's), the
    fill price of a buy and of a sell (:func:`fill_price` with sign +1 / -1): once per bar, not per call."""
    o, h, lo = (np.asarray(x, dtype=np.float64) for x in (open_, high, low))
    buy = fill_price(1.0, o, h, lo, costs, np)
    return np.stack([o, buy * (1.0 + costs.fee_rate), buy, fill_price(-1.0, o, h, lo, costs, np)])


class BatchTrader:
    """:func:`trade_to_target` for ``n`` accounts at once, on preallocated arrays (the VecEnv's hot path).

    The same float operations on the same values, so the same bits (tests/test_execution.py). Constants
    are arrays made once, per-bar prices come from :func:`bar_prices`, ``np.where`` becomes masked copies,
    and two independent operations of a kind run as one numpy call on two adjacent rows of a work block,
    two of them rewritten exactly (IEEE negation is exact, ``a - b`` is ``a + (-b)``, rounding is symmetric
    in the sign): ``qty + d`` as ``d - (-qty)``; the lot rounding on ``-(d / step)``, times ``-step``. The
    target clip is separate (:meth:`clip_target`): targets from a table clipped once skip it.
    """

    def __init__(self, n: int, costs: Costs, *, lot_step: float = 0.0, min_notional: float = 0.0,
                 allow_short: bool = False) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"BatchTrader n={n!r}: must be an int >= 1")
        for name, v in (("lot_step", lot_step), ("min_notional", min_notional)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"BatchTrader {name}={v!r}: must be a finite number >= 0")
        self.n, self.costs, self.lot_step, self.min_notional = n, costs, float(lot_step), float(min_notional)
        self.allow_short = bool(allow_short)
        self.target_low = -1.0 if allow_short else 0.0
        # stacked rows: [target * equity, max(cash, 0)] / [open, buy cost] = [.., afford]; [qty + d, d] =
        # [d0, -(d0 / step)] - [-qty, copysign(1e-9, d0)] (d0 = min(delta, afford): d before rounding);
        # [|qty + d|, |d| * price] < [1e-12, min_notional] = [closing, too small]
        w, masks = np.zeros((24, n)), np.zeros((3, n), dtype=bool)
        for row, value in ((8, 1e-12), (9, min_notional), (15, costs.fee_rate), (20, -float(lot_step)), (21, 1e-9),
                           (22, self.target_low), (23, 1.0)):
            w[row] = value
        self._rows = (w[0:2], w[2:4], w[4:6], w[6:8], w[8:10], masks[0:2], w[10:12], w[12:14], w[1], w[2], w[3],
                      w[4], w[5], w[7], *w[10:22], *masks)
        self._clip = (w[22], w[23])  # the clip's bounds as arrays: no scalar conversion, no temporary
        self._bars: tuple[Any, ...] = (None,)  # the last ``bars`` argument and its rows (callers reuse one)
        #: results of the last :meth:`trade` (overwritten by the next call): fill price, fee, traded qty
        self.price, self.fee, self.traded = w[17], w[18], w[1]

    def clip_target(self, target: Any, out: np.ndarray | None = None) -> np.ndarray:
        """``target`` clipped to ``[target_low, 1]`` as :func:`trade_to_target` clips it."""
        if out is None or out.shape != (self.n,):
            return np.minimum(np.maximum(target, self.target_low), 1.0, out=out)
        return _min(_max(target, self._clip[0], out=out), self._clip[1], out=out)  # type: ignore[no-any-return]

    def trade(self, cash: np.ndarray, qty: np.ndarray, target: np.ndarray, bars: np.ndarray,
              cash_out: np.ndarray, qty_out: np.ndarray) -> None:
        """Rebalance: ``bars`` is ``bar_prices(...)[:, rows]`` of each account's fill bar; targets in range.
        Writes the new cash and quantity into ``cash_out`` / ``qty_out`` (which may be ``cash`` / ``qty``),
        and the fill price, fee and traded quantity into ``self.price/fee/traded``."""
        (sums, parts, negs, sizes, limits, masks, num, ratio, d, d0, d0_step, neg_qty, sign_eps, value, product,
         cash_floor, delta, afford, zero, fee_rate, equity, price, paid, notional, neg_step, eps, closing, small,
         buy) = self._rows
        if bars is not self._bars[0]:
            self._bars = (bars, bars[_BAR_OPEN], bars[_BAR_OPEN:_BAR_BUY_COST + 1], bars[_BAR_BUY], bars[_BAR_SELL])
        _, o, divisors, buy_price, sell_price = self._bars
        _add(cash, _mul(qty, o, equity), equity)                       # equity at the open
        _mul(target, equity, product)
        _max(cash, zero, out=cash_floor)
        _div(num, divisors, ratio)         # target * equity / open; afford = max(cash, 0) / buy cost (fee included)
        _sub(delta, qty, delta)                                        # target * equity / open - qty
        _greater(delta, zero, buy)
        _copyto(price, sell_price)
        _putmask(price, buy, buy_price)
        _neg(qty, neg_qty)
        # a buy spends at most the cash (fee included); min(delta, afford) needs no mask: afford >= 0 >= a sell
        if self.lot_step > 0:
            # round_to_step: sign * floor(|d| / step + 1e-9) * step == trunc(d / step + copysign(1e-9, d)) * step
            # (IEEE rounding is symmetric in the sign), negated twice: trunc(-(d / step) - copysign(..)) * -step
            _min(delta, afford, out=d0)
            _div(d0, neg_step, d0_step)
            np.copysign(eps, d0, sign_eps)
            _sub(parts, negs, sums)
            _mul(np.trunc(d, d), neg_step, d)
        else:
            _min(delta, afford, out=d)
            _sub(d, neg_qty, sums[0])
        _abs(sums, sizes)
        _mul(value, price, value)
        _less(sizes, limits, masks)
        if self.min_notional > 0:                                      # too small and not closing: not sent
            _putmask(d, small, zero)
        _putmask(d, closing, neg_qty)
        _mul(d, price, notional)
        _mul(_abs(notional, paid), fee_rate, paid)
        _sub(_sub(cash, notional, cash_out), paid, cash_out)
        _add(qty, d, qty_out)


def borrow_cost(qty: Any, price: Any, rate_per_bar: float, ops: Any = SCALAR) -> Any:
    """Borrow fee for a short position over one bar (0 for longs)."""
    return ops.maximum(-qty, 0.0) * price * rate_per_bar


# ------------------------------------------------------------------ stops in a bar


def stop_exit(
    position_sign: float, stop: float | None, take_profit: float | None, open_: float, high: float, low: float
) -> tuple[float, ReasonCode] | None:
    """Where a protected position leaves on this bar, before costs, or ``None``.

    A long (``position_sign`` > 0) stops when ``low <= stop`` and takes profit when
    ``high >= take_profit``; a short mirrors it. A gap through a level fills at the
    open. If both levels are inside the bar the stop wins (worse first).

    >>> stop_exit(1, 95.0, 110.0, 100.0, 111.0, 94.0)   # both touched: stop first
    (95.0, <ReasonCode.STOP_LOSS_HIT: 'stop_loss_hit'>)
    >>> stop_exit(1, 95.0, 110.0, 90.0, 92.0, 89.0)     # gapped below the stop: the open
    (90.0, <ReasonCode.STOP_LOSS_HIT: 'stop_loss_hit'>)
    """
    if position_sign == 0:
        return None
    long = position_sign > 0
    if stop is not None:
        if (long and open_ <= stop) or (not long and open_ >= stop):
            return open_, ReasonCode.STOP_LOSS_HIT
        if (long and low <= stop) or (not long and high >= stop):
            return stop, ReasonCode.STOP_LOSS_HIT
    if take_profit is not None:
        if (long and open_ >= take_profit) or (not long and open_ <= take_profit):
            return open_, ReasonCode.TAKE_PROFIT_HIT
        if (long and high >= take_profit) or (not long and low <= take_profit):
            return take_profit, ReasonCode.TAKE_PROFIT_HIT
    return None


def exit_fill_price(position_sign: float, level: float, high: float, low: float, costs: Costs) -> float:
    """Fill price of a stop/take-profit exit at ``level``: costs against the trader, inside the bar."""
    sign = -1.0 if position_sign > 0 else 1.0
    impact = costs.fixed_impact + costs.volatility_slippage * (high - low) / level
    return SCALAR.clip(level * (1.0 + sign * impact), low, high)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    """One simulated fill."""

    qty: float  # signed: + bought, - sold
    price: float
    fee: float
    reference: float  # the price the fill is compared with (open or stop level)

    @property
    def notional(self) -> float:
        return abs(self.qty) * self.price

    @property
    def slippage_bps(self) -> float:
        return slippage_bps(1.0 if self.qty > 0 else -1.0, self.price, self.reference)


def market_fill(signed_qty: float, open_: float, high: float, low: float, costs: Costs) -> Fill:
    """Fill a market order of ``signed_qty`` on its fill bar (the bar after the decision)."""
    sign = 1.0 if signed_qty > 0 else -1.0
    price = fill_price(sign, open_, high, low, costs)
    return Fill(qty=signed_qty, price=price, fee=fee(signed_qty * price, costs), reference=open_)


def exit_fill(position_qty: float, level: float, high: float, low: float, costs: Costs) -> Fill:
    """Close ``position_qty`` at a triggered stop/take-profit ``level``."""
    price = exit_fill_price(position_qty, level, high, low, costs)
    return Fill(qty=-position_qty, price=price, fee=fee(position_qty * price, costs), reference=level)
