"""Consensus: how much the voters agree with the direction the vote chose.

``agreement_i`` of a voter with the voted exposure ``E`` compares directions
(:func:`~l2_tactical.ensemble.voting_strategy.direction_of`, flat band included):

* 1.0 when the voter points the same way as ``E`` (both long, both short, or both flat);
* 0.5 when exactly one of them is flat (the voter neither supports nor opposes);
* 0.0 when they point opposite ways.

``consensus = sum(w_i * agreement_i) / sum(w_i)`` in [0, 1], over the voters that answered.
It is 1 for a unanimous ensemble and 0 when every weighted voter opposes the result (which
a weighted vote cannot produce, but a majority vote with a heavy dissenter can approach).

>>> build_consensus([1.0, 0.6, -1.0], [1.0, 0.4, 0.9], [0.4, 0.35, 0.25], "weighted").consensus
0.75
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from l2_tactical.ensemble.voting_strategy import ArrayLike, combine_votes, direction_of


def agreement(exposures: ArrayLike, result: float) -> np.ndarray:
    """Per voter: 1 same direction as ``result``, 0.5 one side flat, 0 opposite.

    >>> agreement([1.0, 0.0, -0.5], 0.7).tolist()
    [1.0, 0.5, 0.0]
    """
    d = direction_of(exposures)
    r = int(direction_of([result])[0])
    same = d == r
    half = (d == 0) ^ (r == 0)
    return np.where(same, 1.0, np.where(half, 0.5, 0.0))


def consensus_score(exposures: ArrayLike, weights: ArrayLike, result: float) -> float:
    """Weight-averaged :func:`agreement` in [0, 1]; 0 with no weighted voter."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    total = w.sum()
    if total <= 0:
        return 0.0
    return float(np.dot(w, agreement(exposures, result)) / total)


@dataclass(frozen=True, slots=True)
class Consensus:
    """The vote's result and how much the voters back it."""

    exposure: float  # voted target exposure in [-1, 1]
    consensus: float  # weighted agreement in [0, 1]
    agreement: tuple[float, ...]  # per voter, in input order
    strategy: str


def build_consensus(exposures: ArrayLike, confidences: ArrayLike, weights: ArrayLike, strategy: str) -> Consensus:
    """Vote with ``strategy`` and measure the agreement with the result."""
    exposure = combine_votes(strategy, exposures, confidences, weights)
    exposure = float(np.clip(exposure, -1.0, 1.0))
    agree = agreement(exposures, exposure)
    return Consensus(exposure=exposure, consensus=consensus_score(exposures, weights, exposure),
                     agreement=tuple(float(a) for a in agree), strategy=strategy)
