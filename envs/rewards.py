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

import numpy as np

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


class BatchReward:
    """:func:`step_reward` for ``n`` envs at once, in place on preallocated arrays (the VecEnv's hot path).

    The same float operations in the same order, so the rewards equal ``step_reward(..., ops=np)`` bit
    for bit (tests/test_envs_rewards.py holds the two together); the constants are arrays made once
    (a Python scalar operand costs numpy a conversion per call), ``where`` becomes masked copies and
    no call allocates. Every call is a 1-D float64 ufunc with ``out=``, the kinds the fill before it
    (:class:`l2_tactical.execution.BatchTrader`) has just run, so they are cheap even when another
    library (SB3's torch update) has run in between and evicted numpy's code from the caches.
    """

    def __init__(self, spec: RewardSpec, n: int) -> None:
        self.spec = spec
        consts = {"zero": 0.0, "one": 1.0, "half": 0.5, "min_growth": MIN_GROWTH_RATIO, "min_var": MIN_VARIANCE,
                  "eta": spec.sharpe_eta, "clip_lo": -spec.sharpe_clip, "clip_hi": spec.sharpe_clip,
                  "w_dd": spec.drawdown_weight, "w_hold": spec.holding_weight, "free": spec.holding_free_bars,
                  "w_entry": spec.entry_weight, "scale": spec.scale}
        block = np.empty((len(consts) + 5, n))
        self._c = dict(zip(consts, block, strict=False))
        for name, value in consts.items():
            self._c[name].fill(value)
        self._x, self._y, self._z, self._dm, self._ds = block[len(consts):]
        self._ok = np.empty(n, dtype=bool)

    def __call__(self, prev_equity: np.ndarray, equity: np.ndarray, prev_drawdown: np.ndarray,
                 drawdown: np.ndarray, bars_held: np.ndarray, mean: np.ndarray, second: np.ndarray,
                 out: np.ndarray) -> np.ndarray:
        """The rewards into ``out`` (float64 [n]); ``mean`` / ``second`` advanced in place when ``spec.sharpe``."""
        spec, c, x = self.spec, self._c, self._x
        _div(equity, prev_equity, out)                          # log_growth
        np.maximum(out, c["min_growth"], out=out)
        np.log(out, out)
        if spec.sharpe:
            self._sharpe(out, mean, second)
        if spec.drawdown_weight:                                # drawdown_penalty
            _sub(drawdown, prev_drawdown, x)
            _mul(c["w_dd"], np.maximum(x, c["zero"], out=x), x)
            _sub(out, x, out)
        if spec.holding_weight:                                 # holding_penalty
            _sub(bars_held, c["free"], x)
            _mul(c["w_hold"], np.maximum(x, c["zero"], out=x), x)
            _sub(out, x, out)
        if spec.entry_weight:                                   # entry_penalty: weight * (1.0 or 0.0), i.e.
            _copyto(x, c["zero"])                               # weight or 0.0 (weight is finite and >= 0)
            _copyto(x, c["w_entry"], where=np.equal(bars_held, c["one"], self._ok))
            _sub(out, x, out)
        if spec.scale != 1.0:
            _mul(out, c["scale"], out)
        return out

    def _sharpe(self, growth: np.ndarray, mean: np.ndarray, second: np.ndarray) -> None:
        """differential_sharpe + the clip, in place: ``growth`` becomes the clipped D; A, B advance."""
        c, x, y, z, dm, ds, ok = self._c, self._x, self._y, self._z, self._dm, self._ds, self._ok
        _sub(growth, mean, dm)                                  # d_mean
        _sub(_mul(growth, growth, ds), second, ds)              # d_second
        _sub(second, _mul(mean, mean, x), x)                    # variance
        np.greater(x, c["min_var"], ok)
        _copyto(y, c["one"])                                    # safe = where(ok, variance, 1)
        _copyto(y, x, where=ok)
        _mul(second, dm, x)                                     # (second * d_mean - 0.5 * mean * d_second)
        _sub(x, _mul(_mul(c["half"], mean, z), ds, z), x)
        _div(x, _mul(y, np.sqrt(y, z), z), x)                   # / (safe * sqrt(safe))
        _copyto(growth, c["zero"])                              # value = where(ok, ..., 0)
        _copyto(growth, x, where=ok)
        _add(mean, _mul(c["eta"], dm, x), mean)
        _add(second, _mul(c["eta"], ds, x), second)
        np.minimum(np.maximum(growth, c["clip_lo"], out=growth), c["clip_hi"], out=growth)


_add, _sub, _mul, _div, _copyto = np.add, np.subtract, np.multiply, np.divide, np.copyto


__all__ = [
    "MIN_GROWTH_RATIO",
    "MIN_VARIANCE",
    "SCALAR_MATH",
    "BatchReward",
    "RewardSpec",
    "differential_sharpe",
    "drawdown_penalty",
    "entry_penalty",
    "holding_penalty",
    "log_growth",
    "step_reward",
]
