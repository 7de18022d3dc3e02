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

from collections.abc import Sequence

import numpy as np

#: |exposure| below this is a flat vote (direction 0)
NEUTRAL_BAND = 0.05
STRATEGIES = ("weighted", "majority", "confidence_weighted")

ArrayLike = Sequence[float] | np.ndarray


def direction_of(exposure: ArrayLike | float, band: float = NEUTRAL_BAND) -> np.ndarray:
    """-1, 0 or +1 per exposure, with ``|e| < band`` counted as flat.

    >>> direction_of([0.5, -0.01, -0.3]).tolist()
    [1, 0, -1]
    """
    e = np.asarray(exposure, dtype=np.float64)
    return np.where(np.abs(e) < band, 0, np.sign(e)).astype(np.int64)


def _arrays(exposures: ArrayLike, weights: ArrayLike, confidences: ArrayLike | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = np.asarray(exposures, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    c = np.ones_like(e) if confidences is None else np.asarray(confidences, dtype=np.float64).reshape(-1)
    if not e.shape == w.shape == c.shape:
        raise ValueError(f"votes: exposures {e.shape}, weights {w.shape} and confidences {c.shape} differ in length")
    if not np.all(np.isfinite(e)) or np.any(np.abs(e) > 1.0):
        raise ValueError(f"votes: exposures={e.tolist()} must be finite and in [-1, 1]")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"votes: weights={w.tolist()} must be finite and >= 0")
    if not np.all(np.isfinite(c)) or np.any((c < 0) | (c > 1)):
        raise ValueError(f"votes: confidences={c.tolist()} must be in [0, 1]")
    return e, w, c


def weighted_vote(exposures: ArrayLike, weights: ArrayLike) -> float:
    """Weight-averaged exposure; 0 when there are no votes or all weights are 0."""
    e, w, _ = _arrays(exposures, weights)
    total = w.sum()
    return float(np.dot(w, e) / total) if total > 0 else 0.0


def confidence_weighted_vote(exposures: ArrayLike, confidences: ArrayLike, weights: ArrayLike) -> float:
    """Exposure averaged with weights ``w_i * c_i``; 0 when that total is 0."""
    e, w, c = _arrays(exposures, weights, confidences)
    wc = w * c
    total = wc.sum()
    return float(np.dot(wc, e) / total) if total > 0 else 0.0


def majority_vote(exposures: ArrayLike, weights: ArrayLike, band: float = NEUTRAL_BAND) -> float:
    """Mean exposure of the side with the most (unweighted) votes; 0 on a tie or a flat majority."""
    e, w, _ = _arrays(exposures, weights)
    voting = w > 0
    e = e[voting]
    if e.size == 0:
        return 0.0
    d = direction_of(e, band)
    counts = {side: int(np.sum(d == side)) for side in (-1, 0, 1)}
    ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
    (winner, top), (_, second) = ranked[0], ranked[1]
    if top == second or winner == 0:
        return 0.0
    return float(np.mean(e[d == winner]))


def combine_votes(strategy: str, exposures: ArrayLike, confidences: ArrayLike, weights: ArrayLike) -> float:
    """Dispatch on ``ensemble.voting``; ``ValueError`` naming an unknown strategy."""
    if strategy == "weighted":
        return weighted_vote(exposures, weights)
    if strategy == "confidence_weighted":
        return confidence_weighted_vote(exposures, confidences, weights)
    if strategy == "majority":
        return majority_vote(exposures, weights)
    raise ValueError(f"ensemble.voting={strategy!r}: not one of {STRATEGIES}")
