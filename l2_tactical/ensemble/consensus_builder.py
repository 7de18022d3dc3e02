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

import math
from dataclasses import dataclass

import numpy as np

from l2_tactical.ensemble.voting_strategy import NEUTRAL_BAND, ArrayLike, combine_votes, side_of


def _agree(d: int, r: int) -> float:
    return 1.0 if d == r else (0.5 if (d == 0) != (r == 0) else 0.0)


def agreement_list(exposures: ArrayLike, result: float) -> list[float]:
    """:func:`agreement` as a plain list (hot path)."""
    values = exposures.reshape(-1).tolist() if isinstance(exposures, np.ndarray) else exposures
    r = side_of(result, NEUTRAL_BAND)
    return [_agree(side_of(float(e), NEUTRAL_BAND), r) for e in values]


def agreement(exposures: ArrayLike, result: float) -> np.ndarray:
    """Per voter: 1 same direction as ``result``, 0.5 one side flat, 0 opposite.

    >>> agreement([1.0, 0.0, -0.5], 0.7).tolist()
    [1.0, 0.5, 0.0]
    """
    return np.array(agreement_list(exposures, result), dtype=np.float64)


def consensus_score(exposures: ArrayLike, weights: ArrayLike, result: float) -> float:
    """Weight-averaged :func:`agreement` in [0, 1]; 0 with no weighted voter."""
    w = [float(x) for x in (weights.reshape(-1).tolist() if isinstance(weights, np.ndarray) else weights)]
    total = math.fsum(w)
    if total <= 0:
        return 0.0
    return math.fsum(wi * a for wi, a in zip(w, agreement_list(exposures, result), strict=True)) / total


@dataclass(frozen=True, slots=True)
class Consensus:
    """The vote's result and how much the voters back it."""

    exposure: float  # voted target exposure in [-1, 1]
    consensus: float  # weighted agreement in [0, 1]
    agreement: tuple[float, ...]  # per voter, in input order
    strategy: str


def build_consensus(exposures: ArrayLike, confidences: ArrayLike, weights: ArrayLike, strategy: str) -> Consensus:
    """Vote with ``strategy`` and measure the agreement with the result."""
    exposure = min(1.0, max(-1.0, combine_votes(strategy, exposures, confidences, weights)))
    agree = agreement_list(exposures, exposure)
    w = [float(x) for x in (weights.reshape(-1).tolist() if isinstance(weights, np.ndarray) else weights)]
    total = math.fsum(w)
    consensus = math.fsum(wi * a for wi, a in zip(w, agree, strict=True)) / total if total > 0 else 0.0
    return Consensus(exposure=exposure, consensus=consensus, agreement=tuple(agree), strategy=strategy)


@dataclass(frozen=True, slots=True)
class SourceVote:
    """One signal source's contribution to the composite (a silent source votes 0 with confidence 0)."""

    source: str
    exposure: float
    confidence: float
    weight: float


def compose_sources(votes: list[SourceVote] | tuple[SourceVote, ...]) -> Consensus:
    """Weighted composite of the sources: exposure = weighted vote, consensus = weighted agreement.

    >>> c = compose_sources([SourceVote("ai_model", 0.8, 0.7, 0.6), SourceVote("technical", -0.5, 0.6, 0.3),
    ...                      SourceVote("pattern", 0.0, 0.0, 0.1)])
    >>> round(c.exposure, 4), c.agreement
    (0.33, (1.0, 0.0, 0.5))
    """
    return build_consensus([v.exposure for v in votes], [v.confidence for v in votes],
                           [v.weight for v in votes], "weighted")
