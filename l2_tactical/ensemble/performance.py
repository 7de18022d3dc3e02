"""Adaptive weights: rolling realised performance of each specialist, and L3's regime.

**Realised performance.** After each bar the tracker is told, per specialist, the exposure
it voted for *before* the bar and the bar's return: the specialist's realised return is
``r = exposure * bar_return`` (what following its vote alone would have earned, before
costs). The last ``window`` (``ensemble.performance_window``) returns are kept per specialist.

**Score.** ``score = tanh(t / 2)`` in (-1, 1), where ``t = mean(r) / std(r) * sqrt(n)`` is the
t-statistic of the rolling mean return (n >= 2 bars and std > 0; otherwise 0). ``t = 2``
(a mean about two standard errors above 0) gives 0.76.

**Adaptive weight.** ``w_i = base_i * exp(sensitivity * score_i) * regime_i``, then
normalised to sum 1 and floored: every weight is at least ``min_weight`` (a share of the
total; ``ensemble.min_weight``), the rest is shared in proportion. So the performance
multiplier is bounded in ``[exp(-sensitivity), exp(sensitivity)]`` and no specialist is
ever silenced by a bad streak (it keeps voting and can earn its weight back).

**Regime.** ``regime_i = 1 + (boost - 1) * strength`` for the specialist L3's regime favours
(``trending`` -> ``trend_following``, ``ranging`` -> ``mean_reversion``, ``volatile`` ->
``volatility_breakout``), 1 for the others; ``boost = ensemble.regime_boost``, ``strength``
is L3's regime strength in [0, 1] (1 when not given).

>>> floor_weights([0.9, 0.08, 0.02], 0.05).round(4).tolist()
[0.8724, 0.0776, 0.05]
>>> regime_multipliers(["trend_following", "mean_reversion"], "ranging", boost=1.5).tolist()
[1.0, 1.5]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

REGIME_FAVOURS: dict[str, str] = {
    "trending": "trend_following",
    "ranging": "mean_reversion",
    "volatile": "volatility_breakout",
}


def performance_score(returns: Sequence[float] | np.ndarray) -> float:
    """``tanh(t / 2)`` of the rolling returns (0 with fewer than 2 returns or a std <= 1e-15).

    Sums are exact (``math.fsum``), so the score of a window does not depend on what left it.

    >>> performance_score([0.01, 0.02, 0.015]) > 0.9, performance_score([0.0, 0.0])
    (True, 0.0)
    """
    r = returns.reshape(-1).tolist() if isinstance(returns, np.ndarray) else [float(v) for v in returns]
    n = len(r)
    if n < 2:
        return 0.0
    mean = math.fsum(r) / n
    std = math.sqrt(math.fsum((v - mean) * (v - mean) for v in r) / (n - 1))
    if not std > 1e-15:
        return 0.0
    return math.tanh(mean / std * math.sqrt(n) / 2.0)


def floor_weights(weights: Sequence[float] | np.ndarray, min_weight: float) -> np.ndarray:
    """Normalise to sum 1 with every share >= ``min_weight`` (equal shares if the floor cannot hold)."""
    return np.array(floor_weights_list(_plain(weights), min_weight), dtype=np.float64)


def _plain(values: Sequence[float] | np.ndarray) -> list[float]:
    if isinstance(values, list) and all(type(v) is float for v in values):
        return values
    return [float(v) for v in (values.reshape(-1).tolist() if isinstance(values, np.ndarray) else values)]


def floor_weights_list(w: list[float], min_weight: float) -> list[float]:
    """:func:`floor_weights` on a plain list (hot path: a handful of specialists)."""
    n = len(w)
    if n == 0:
        return []
    if any(x < 0 or not math.isfinite(x) for x in w):
        raise ValueError(f"floor_weights: weights={w} must be finite and >= 0")
    total = math.fsum(w)
    if min_weight * n >= 1.0 or total <= 0:
        return [1.0 / n] * n
    w = [x / total for x in w]
    fixed = [False] * n
    for _ in range(n):
        low = [i for i in range(n) if w[i] < min_weight and not fixed[i]]
        if not low:
            break
        for i in low:
            fixed[i] = True
        free_total = math.fsum(w[i] for i in range(n) if not fixed[i])
        scale = (1.0 - min_weight * sum(fixed)) / free_total if free_total > 0 else 0.0
        w = [min_weight if fixed[i] else w[i] * scale for i in range(n)]
    return w


def regime_multipliers(specializations: Sequence[str], regime: str | None, *, boost: float,
                       strength: float = 1.0) -> np.ndarray:
    """Per specialist: ``1 + (boost - 1) * strength`` if the regime favours it, else 1."""
    if regime is not None and regime not in REGIME_FAVOURS:
        raise ValueError(f"regime={regime!r}: not one of {sorted(REGIME_FAVOURS)}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"regime strength={strength!r}: must be in [0, 1]")
    favoured = REGIME_FAVOURS.get(regime or "")
    up = 1.0 + (boost - 1.0) * strength
    return np.array([up if s == favoured else 1.0 for s in specializations], dtype=np.float64)


def adaptive_weights(base: Sequence[float], scores: Sequence[float], regime: Sequence[float], *,
                     sensitivity: float, min_weight: float) -> np.ndarray:
    """``floor_weights(base * exp(sensitivity * score) * regime, min_weight)``.

    >>> adaptive_weights([0.5, 0.5], [0.5, -0.5], [1.0, 1.0], sensitivity=1.0, min_weight=0.05).round(4).tolist()
    [0.7311, 0.2689]
    """
    return np.array(adaptive_weights_list(_plain(base), _plain(scores), _plain(regime), sensitivity=sensitivity,
                                          min_weight=min_weight), dtype=np.float64)


def adaptive_weights_list(base: list[float], scores: list[float], regime: list[float], *, sensitivity: float,
                          min_weight: float) -> list[float]:
    """:func:`adaptive_weights` on plain lists (hot path: once per bar)."""
    raw = [b * math.exp(sensitivity * min(1.0, max(-1.0, s))) * g for b, s, g in zip(base, scores, regime, strict=True)]
    return floor_weights_list(raw, min_weight)



class _Rolling:
    """Last ``window`` returns and their score, recomputed once per new return.

    The returns are also kept in a ring (a float64 array written in place): the score's sums are
    exact (``math.fsum``), so the order the ring holds them in does not matter, and the squared
    deviations are one numpy pass instead of a Python loop (the same float64 operations per return).
    A window of zeros (a specialist that stayed flat) scores 0 without a pass: the count of non-zero
    returns in the window is kept exactly as returns enter and leave.
    """

    __slots__ = ("_next", "_nonzero", "_ring", "_score", "values")

    def __init__(self, window: int) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self._ring = np.zeros(window, dtype=np.float64)
        self._next = 0
        self._score: float | None = 0.0
        self._nonzero = 0

    def append(self, r: float) -> None:
        values, ring = self.values, self._ring
        if len(values) == values.maxlen and values[0] != 0.0:
            self._nonzero -= 1
        values.append(r)
        if r != 0.0:
            self._nonzero += 1
        i = self._next
        ring[i] = r
        self._next = 0 if i + 1 == ring.shape[0] else i + 1
        self._score = None

    def score(self) -> float:
        """:func:`performance_score` of the window (cached until the next return)."""
        if self._score is None:
            # all zeros: mean 0, std 0 -> performance_score gives 0.0 (NaN counts as non-zero)
            self._score = self._window_score() if self._nonzero else 0.0
        return self._score

    def _window_score(self) -> float:
        """:func:`performance_score` of the ring's returns (the same operations, exact sums)."""
        n = len(self.values)
        if n < 2:
            return 0.0
        r = self._ring if n == self._ring.shape[0] else self._ring[:n]
        mean = math.fsum(self.values) / n  # the ring's returns (an exact sum: their order does not matter)
        d = r - mean
        np.multiply(d, d, out=d)
        std = math.sqrt(math.fsum(d.tolist()) / (n - 1))
        if not std > 1e-15:
            return 0.0
        return math.tanh(mean / std * math.sqrt(n) / 2.0)


class PerformanceTracker:
    """Rolling realised returns per specialist (see the module docstring)."""

    def __init__(self, names: Sequence[str], window: int) -> None:
        if window < 2:
            raise ValueError(f"performance window={window!r}: must be >= 2")
        self.window = window
        self._rolling: dict[str, _Rolling] = {n: _Rolling(window) for n in names}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._rolling)

    def record(self, exposures: Mapping[str, float], bar_return: float) -> None:
        """Add one bar: each named specialist earned ``exposure * bar_return``."""
        if not math.isfinite(bar_return):
            raise ValueError(f"bar_return={bar_return!r}: must be finite")
        for name, exposure in exposures.items():
            if name not in self._rolling:
                raise KeyError(f"unknown specialist {name!r}; known: {sorted(self._rolling)}")
            self._rolling[name].append(float(exposure) * bar_return)

    def returns(self, name: str) -> tuple[float, ...]:
        return tuple(self._rolling[name].values)

    def scores(self) -> dict[str, float]:
        return {n: r.score() for n, r in self._rolling.items()}

    def reset(self) -> None:
        self._rolling = {n: _Rolling(self.window) for n in self._rolling}
