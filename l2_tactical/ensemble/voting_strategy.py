"""Voting: combine the specialists' target exposures into one exposure in [-1, 1].

Every voter gives a target exposure ``e_i`` in [-1, 1], a confidence ``c_i`` in [0, 1] and
has a (non-negative) weight ``w_i``. Three strategies, chosen by ``ensemble.voting``:

``weighted``
    ``E = sum(w_i e_i) / sum(w_i)``.
``confidence_weighted``
    ``E = sum(w_i c_i e_i) / sum(w_i c_i)``: a voter counts in proportion to its weight
    *and* its conviction. When every confidence is 0 the result is 0 (nobody is sure).
``majority``
    One voter, one vote on the *direction* ``sign(e_i)`` (an exposure with
    ``|e_i| < NEUTRAL_BAND`` votes flat). The direction with the most votes wins; a tie
    between the two leading directions gives no majority and the result is 0 (flat). Weights
    play no part except that a voter with weight 0 does not vote. ``E`` is the mean exposure
    of the voters on the winning side (0 when flat wins).

All functions are pure and take plain sequences or numpy arrays.

>>> weighted_vote([1.0, -1.0, 0.5], [0.5, 0.25, 0.25])
0.375
>>> round(confidence_weighted_vote([1.0, -1.0], [0.9, 0.3], [1.0, 1.0]), 6)
0.5
>>> majority_vote([0.8, 0.6, -1.0], [1.0, 1.0, 5.0])
0.7
>>> majority_vote([1.0, -1.0], [1.0, 1.0])
0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: |exposure| below this is a flat vote (direction 0)
NEUTRAL_BAND = 0.05
STRATEGIES = ("weighted", "majority", "confidence_weighted")

ArrayLike = Sequence[float] | np.ndarray


def side_of(e: float, band: float) -> int:
    return 0 if abs(e) < band else (1 if e > 0 else -1)


def direction_of(exposure: ArrayLike | float, band: float = NEUTRAL_BAND) -> np.ndarray:
    """-1, 0 or +1 per exposure, with ``|e| < band`` counted as flat.

    >>> direction_of([0.5, -0.01, -0.3]).tolist()
    [1, 0, -1]
    """
    e = np.asarray(exposure, dtype=np.float64)
    return np.where(np.abs(e) < band, 0, np.sign(e)).astype(np.int64)


def _floats(values: ArrayLike, name: str) -> list[float]:
    if isinstance(values, list) and all(type(v) is float for v in values):
        out = values
    else:
        out = [float(v) for v in (values.reshape(-1).tolist() if isinstance(values, np.ndarray) else values)]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"votes: {name}={out} must be finite")
    return out


def _lists(exposures: ArrayLike, weights: ArrayLike, confidences: ArrayLike | None = None
           ) -> tuple[list[float], list[float], list[float]]:
    """Validated plain lists (the voter counts are small: plain Python beats numpy here)."""
    e, w = _floats(exposures, "exposures"), _floats(weights, "weights")
    c = [1.0] * len(e) if confidences is None else _floats(confidences, "confidences")
    if not len(e) == len(w) == len(c):
        raise ValueError(f"votes: exposures ({len(e)}), weights ({len(w)}) and confidences ({len(c)}) "
                         f"differ in length")
    if any(abs(x) > 1.0 for x in e):
        raise ValueError(f"votes: exposures={e} must be in [-1, 1]")
    if any(x < 0 for x in w):
        raise ValueError(f"votes: weights={w} must be >= 0")
    if any(x < 0 or x > 1 for x in c):
        raise ValueError(f"votes: confidences={c} must be in [0, 1]")
    return e, w, c


def weighted_vote(exposures: ArrayLike, weights: ArrayLike) -> float:
    """Weight-averaged exposure; 0 when there are no votes or all weights are 0."""
    e, w, _ = _lists(exposures, weights)
    total = math.fsum(w)
    # normalise first: with denormal weights, products lose the precision the shares keep
    return math.fsum(wi / total * ei for wi, ei in zip(w, e, strict=True)) if total > 0 else 0.0


def confidence_weighted_vote(exposures: ArrayLike, confidences: ArrayLike, weights: ArrayLike) -> float:
    """Exposure averaged with weights ``w_i * c_i``; 0 when that total is 0."""
    e, w, c = _lists(exposures, weights, confidences)
    wc = [wi * ci for wi, ci in zip(w, c, strict=True)]
    total = math.fsum(wc)
    return math.fsum(x / total * ei for x, ei in zip(wc, e, strict=True)) if total > 0 else 0.0


def majority_vote(exposures: ArrayLike, weights: ArrayLike, band: float = NEUTRAL_BAND) -> float:
    """Mean exposure of the side with the most (unweighted) votes; 0 on a tie or a flat majority."""
    e, w, _ = _lists(exposures, weights)
    voting = [ei for ei, wi in zip(e, w, strict=True) if wi > 0]
    if not voting:
        return 0.0
    sides = [side_of(x, band) for x in voting]
    counts = sorted(((sides.count(side), side) for side in (-1, 0, 1)), reverse=True)
    (top, winner), (second, _) = counts[0], counts[1]
    if top == second or winner == 0:
        return 0.0
    chosen = [x for x, d in zip(voting, sides, strict=True) if d == winner]
    return math.fsum(chosen) / len(chosen)


def combine_votes(strategy: str, exposures: ArrayLike, confidences: ArrayLike, weights: ArrayLike) -> float:
    """Dispatch on ``ensemble.voting``; ``ValueError`` naming an unknown strategy."""
    if strategy == "weighted":
        return weighted_vote(exposures, weights)
    if strategy == "confidence_weighted":
        return confidence_weighted_vote(exposures, confidences, weights)
    if strategy == "majority":
        return majority_vote(exposures, weights)
    raise ValueError(f"ensemble.voting={strategy!r}: not one of {STRATEGIES}")
