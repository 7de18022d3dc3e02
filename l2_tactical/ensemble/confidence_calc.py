"""Confidence scores: of one policy's action distribution, and of the ensemble as a whole.

Policy confidence is *the probability mass behind the chosen direction, rescaled so that an
indifferent (coin-flip) policy scores 0 and a certain one scores 1*:

* Discrete actions (PPO / A2C with ``Discrete(n)``): ``p`` is the softmax probability of the
  deterministic (argmax) action; ``confidence = (p - 1/n) / (1 - 1/n)`` — 0 for a uniform
  policy, 1 when the policy puts all its mass on one action.
* Gaussian actions (PPO / A2C with ``Box``, and SAC before its ``tanh`` squash): the
  deterministic action is the mean ``mu``; a sampled action has the same sign as ``mu`` with
  probability ``Phi(|mu| / sigma)`` (``tanh`` and clipping keep signs). Rescaled from
  [0.5, 1] to [0, 1]: ``confidence = 2 Phi(|mu|/sigma) - 1 = erf(|mu| / (sigma sqrt 2))``.
  A policy whose mean sits at 0 has no directional conviction and scores 0. For several
  action dimensions the mean over dimensions is used.

Ensemble confidence (:func:`composite_confidence`)::

    confidence = coverage * sum(w_i * c_i * agreement_i) / sum(w_i)

over the voters that answered, where ``agreement_i`` is the voter's agreement with the voted
direction (:mod:`l2_tactical.ensemble.consensus_builder`: 1 / 0.5 / 0) and ``coverage`` is the
share of the configured weight that answered (``sum(w_i answered) / sum(w_j configured)``).
So conviction pointing the other way counts for nothing, and a missing, failing or late
specialist lowers the ensemble's confidence by its share of the weight.

>>> round(discrete_confidence([0.2, 0.1, 0.7]), 4)
0.55
>>> round(gaussian_confidence(0.0, 1.0), 4), round(gaussian_confidence(1.0, 0.5), 4)
(0.0, 0.9545)
>>> composite_confidence([0.8, 0.6], [1.0, 0.0], [0.5, 0.5], coverage=1.0)
0.4
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from l2_tactical.ensemble.voting_strategy import ArrayLike

_SQRT2 = math.sqrt(2.0)


def discrete_confidence(probs: ArrayLike) -> float:
    """Rescaled probability of the most likely action (see the module docstring)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    n = p.size
    if n < 2:
        return 1.0
    return float(np.clip((p.max() - 1.0 / n) / (1.0 - 1.0 / n), 0.0, 1.0))


def discrete_confidence_batch(probs: np.ndarray) -> np.ndarray:
    """:func:`discrete_confidence` for each row of a ``[batch, n]`` array."""
    n = probs.shape[-1]
    if n < 2:
        return np.ones(probs.shape[0])
    return np.clip((probs.max(axis=-1) - 1.0 / n) / (1.0 - 1.0 / n), 0.0, 1.0)


def gaussian_confidence(mean: ArrayLike | float, std: ArrayLike | float) -> float:
    """``erf(|mu| / (sigma sqrt 2))`` averaged over action dimensions; 1 where ``sigma == 0`` and ``mu != 0``."""
    mu = np.abs(np.asarray(mean, dtype=np.float64).reshape(-1))
    sigma = np.broadcast_to(np.asarray(std, dtype=np.float64).reshape(-1), mu.shape)
    vals = [math.erf(m / (s * _SQRT2)) if s > 0 else float(m > 0) for m, s in zip(mu, sigma, strict=True)]
    return float(np.mean(vals)) if vals else 0.0


def coverage(answered_weights: ArrayLike, configured_weights: ArrayLike) -> float:
    """Share of the configured weight that answered, in [0, 1].

    >>> coverage([0.4, 0.25], [0.4, 0.35, 0.25])
    0.65
    """
    total = math.fsum(_plain(configured_weights))
    if total <= 0:
        return 0.0
    return min(1.0, max(0.0, math.fsum(_plain(answered_weights)) / total))


def composite_confidence(confidences: ArrayLike, agreements: ArrayLike, weights: ArrayLike,
                         *, coverage: float) -> float:
    """Ensemble confidence in [0, 1] (formula in the module docstring)."""
    c, a, w = _plain(confidences), _plain(agreements), _plain(weights)
    if not len(c) == len(a) == len(w):
        raise ValueError(f"composite_confidence: lengths {len(c)}, {len(a)}, {len(w)} differ")
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"composite_confidence: coverage={coverage!r} must be in [0, 1]")
    total = math.fsum(w)
    if total <= 0:
        return 0.0
    value = coverage * math.fsum([wi * ci * ai for wi, ci, ai in zip(w, c, a, strict=True)]) / total
    return min(1.0, max(0.0, value))


def _plain(values: ArrayLike | tuple[float, ...]) -> Sequence[float]:
    if (type(values) is list or type(values) is tuple) and all(type(v) is float for v in values):
        return values  # already plain (the per-bar path)
    return [float(v) for v in (values.reshape(-1).tolist() if isinstance(values, np.ndarray) else values)]


def mean_confidence(confidences: Sequence[float], weights: Sequence[float]) -> float:
    """Plain weight-averaged confidence (0 when no weight)."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    return float(np.dot(w, np.asarray(confidences, dtype=np.float64)) / total) if total > 0 else 0.0
