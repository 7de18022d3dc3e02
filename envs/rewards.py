"""Reward functions of the trading environments: pure, numbers in and numbers out.

Every function takes plain floats or, with ``ops=np``, numpy arrays (one entry per
environment of the batched VecEnv) and uses the same formula for both, like
:mod:`l2_tactical.execution`. State that a reward carries between steps (the
differential Sharpe ratio's moving moments) is passed in and returned as plain
values; nothing here keeps state.

Terms
-----
* :func:`log_growth` -- log of the equity ratio over one bar. Equity is marked
  after fees, spread, slippage and borrow costs, so this is growth *net of costs*.
* :func:`drawdown_penalty` -- ``weight`` x the *increase* of the drawdown from the
  running equity peak over this bar (a recovery is not paid back twice: its gain is
  already in the log growth).
* :func:`holding_penalty` -- ``weight`` per bar a position has been held beyond
  ``free_bars`` (mean reversion should not sit in trades).
* :func:`entry_penalty` -- ``weight`` on the bar a position is opened or flipped (``bars_held == 1``):
  a trade penalty on top of the costs already in the log growth, so a policy does not churn
  in and out of positions for moves smaller than its round-trip cost.
* :func:`differential_sharpe` -- Moody & Saffell's differential Sharpe ratio
  (J. Moody, M. Saffell, "Learning to trade via direct reinforcement", IEEE TNN
  12(4), 2001): the first-order change of an exponential-moving-average Sharpe ratio
  caused by this bar's return, ``D = (B dA - A dB / 2) / (B - A^2)^(3/2)``.

>>> round(log_growth(100.0, 101.0), 6)
0.00995
>>> drawdown_penalty(0.05, 0.10, 2.0)
0.1
>>> holding_penalty(30.0, 1e-3, 24.0)
0.006
>>> entry_penalty(1.0, 1e-3), entry_penalty(2.0, 1e-3), entry_penalty(0.0, 1e-3)
(0.001, 0.0, 0.0)
>>> d, a, b = differential_sharpe(0.01, 0.001, 0.0002, 0.1)
>>> round(d, 4), round(a, 6), round(b, 6)
(0.659, 0.0019, 0.00019)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from l2_tactical.execution import SCALAR

#: smallest equity ratio a bar's log growth is taken of (keeps the reward finite on ruin)
MIN_GROWTH_RATIO = 1e-6
#: moment variance below which the differential Sharpe ratio is defined as 0
MIN_VARIANCE = 1e-12


class _ScalarMath:
    """The few numpy functions the rewards use, on Python floats (execution's SCALAR plus log/sqrt)."""

    where = staticmethod(SCALAR.where)
    maximum = staticmethod(SCALAR.maximum)
    minimum = staticmethod(SCALAR.minimum)
    clip = staticmethod(SCALAR.clip)
    log = staticmethod(math.log)
    sqrt = staticmethod(math.sqrt)


SCALAR_MATH = _ScalarMath()


def log_growth(prev_equity: Any, equity: Any, ops: Any = SCALAR_MATH) -> Any:
    """``log(equity / prev_equity)``, with the ratio floored at ``MIN_GROWTH_RATIO``."""
    return ops.log(ops.maximum(equity / prev_equity, MIN_GROWTH_RATIO))


def drawdown_penalty(prev_drawdown: Any, drawdown: Any, weight: float, ops: Any = SCALAR_MATH) -> Any:
    """``weight`` x how much deeper the drawdown got over this bar (0 if it did not)."""
    return weight * ops.maximum(drawdown - prev_drawdown, 0.0)


def holding_penalty(bars_held: Any, weight: float, free_bars: float, ops: Any = SCALAR_MATH) -> Any:
    """``weight`` x the bars a position has been held beyond ``free_bars`` (0 when flat)."""
    return weight * ops.maximum(bars_held - free_bars, 0.0)


def entry_penalty(bars_held: Any, weight: float, ops: Any = SCALAR_MATH) -> Any:
    """``weight`` on the bar a position was opened or flipped (``bars_held == 1``), else 0."""
    return weight * ops.where(bars_held == 1.0, 1.0, 0.0)


def differential_sharpe(ret: Any, mean: Any, second: Any, eta: float,
                        ops: Any = SCALAR_MATH) -> tuple[Any, Any, Any]:
    """Differential Sharpe ratio of ``ret`` given the moving moments ``mean`` (A) and ``second`` (B).

    Returns ``(D, A', B')`` with ``A' = A + eta (R - A)`` and ``B' = B + eta (R^2 - B)``.
    ``D`` is 0 while the moving variance ``B - A^2`` is below ``MIN_VARIANCE``.
    """
    d_mean = ret - mean
    d_second = ret * ret - second
    variance = second - mean * mean
    ok = variance > MIN_VARIANCE
    safe = ops.where(ok, variance, 1.0)
    value = ops.where(ok, (second * d_mean - 0.5 * mean * d_second) / (safe * ops.sqrt(safe)), 0.0)
    return value, mean + eta * d_mean, second + eta * d_second


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RewardSpec:
    """How a specialist is rewarded: which terms, with which weights.

    ``sharpe=True`` replaces log growth with the differential Sharpe ratio of the
    bar's log growth (clipped to ``[-sharpe_clip, sharpe_clip]``: it is unbounded
    when the moving variance is tiny). ``scale`` multiplies the final reward.
    """

    drawdown_weight: float = 0.0
    holding_weight: float = 0.0
    holding_free_bars: float = 0.0
    entry_weight: float = 0.0
    sharpe: bool = False
    sharpe_eta: float = 0.01
    sharpe_clip: float = 10.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "sharpe" and (not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
                raise ValueError(f"RewardSpec.{f.name}={v!r}: must be a finite number >= 0")
        if self.sharpe and not 0 < self.sharpe_eta <= 1:
            raise ValueError(f"RewardSpec.sharpe_eta={self.sharpe_eta!r}: must be in (0, 1]")


def step_reward(spec: RewardSpec, prev_equity: Any, equity: Any, prev_drawdown: Any, drawdown: Any,
                bars_held: Any, mean: Any, second: Any, ops: Any = SCALAR_MATH) -> tuple[Any, Any, Any]:
    """The reward of one bar under ``spec``: ``(reward, A', B')`` (A, B unchanged unless ``spec.sharpe``)."""
    growth = log_growth(prev_equity, equity, ops)
    if spec.sharpe:
        growth, mean, second = differential_sharpe(growth, mean, second, spec.sharpe_eta, ops)
        growth = ops.clip(growth, -spec.sharpe_clip, spec.sharpe_clip)
    if spec.drawdown_weight:
        growth = growth - drawdown_penalty(prev_drawdown, drawdown, spec.drawdown_weight, ops)
    if spec.holding_weight:
        growth = growth - holding_penalty(bars_held, spec.holding_weight, spec.holding_free_bars, ops)
    if spec.entry_weight:
        growth = growth - entry_penalty(bars_held, spec.entry_weight, ops)
    return (growth * spec.scale if spec.scale != 1.0 else growth), mean, second


__all__ = [
    "MIN_GROWTH_RATIO",
    "MIN_VARIANCE",
    "SCALAR_MATH",
    "RewardSpec",
    "differential_sharpe",
    "drawdown_penalty",
    "entry_penalty",
    "holding_penalty",
    "log_growth",
    "step_reward",
]
