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

from l2_tactical.ensemble.confidence_calc import composite_confidence, coverage
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
    if strategy in _FAST and _plain_votes(exposures, confidences, weights, strategy):
        return _fast_consensus(exposures, confidences, weights, strategy)  # type: ignore[arg-type]
    exposure = min(1.0, max(-1.0, combine_votes(strategy, exposures, confidences, weights)))
    agree = agreement_list(exposures, exposure)
    w = [float(x) for x in (weights.reshape(-1).tolist() if isinstance(weights, np.ndarray) else weights)]
    total = math.fsum(w)
    consensus = math.fsum(wi * a for wi, a in zip(w, agree, strict=True)) / total if total > 0 else 0.0
    return Consensus(exposure=exposure, consensus=consensus, agreement=tuple(agree), strategy=strategy)


_FAST = ("weighted", "confidence_weighted")


def _plain_votes(exposures: ArrayLike, confidences: ArrayLike, weights: ArrayLike, strategy: str) -> bool:
    """True for lists of plain floats that :func:`combine_votes` accepts as they are (exposures in [-1, 1],
    finite weights >= 0, equal lengths; confidences in [0, 1] when they are used). Anything else takes
    the general path, which converts or raises its errors."""
    if type(exposures) is not list or type(weights) is not list or len(exposures) != len(weights):
        return False
    for e in exposures:
        if type(e) is not float or not -1.0 <= e <= 1.0:
            return False
    for w in weights:
        if type(w) is not float or not 0.0 <= w < math.inf:
            return False
    if strategy == "weighted":
        return True
    if type(confidences) is not list or len(confidences) != len(weights):
        return False
    return all(type(c) is float and 0.0 <= c <= 1.0 for c in confidences)


def _fast_consensus(e: list[float], c: list[float], w: list[float], strategy: str) -> Consensus:
    """:func:`build_consensus` on checked plain lists: the operations of
    :func:`~l2_tactical.ensemble.voting_strategy.weighted_vote` /
    :func:`~l2_tactical.ensemble.voting_strategy.confidence_weighted_vote` and :func:`agreement_list`, inlined."""
    weighted = strategy == "weighted"
    shares = w if weighted else [wi * ci for wi, ci in zip(w, c, strict=True)]
    return _vote(shares, e, w, weighted)[0]


def _vote(shares: list[float], e: list[float], w: list[float], weighted: bool) -> tuple[Consensus, float]:
    """The vote of plain lists with their shares (``w``, or ``w * c``): the Consensus and ``fsum(w)``."""
    fsum = math.fsum
    share_total = fsum(shares)
    # normalise first (denormal weights), then the exact sum
    voted = fsum([x / share_total * ei for x, ei in zip(shares, e, strict=True)]) if share_total > 0 else 0.0
    exposure = min(1.0, max(-1.0, voted))
    band = NEUTRAL_BAND
    r = 0 if abs(exposure) < band else (1 if exposure > 0 else -1)
    agree = []
    for x in e:  # _agree of each voter's side with the result's
        d = 0 if abs(x) < band else (1 if x > 0 else -1)
        agree.append(1.0 if d == r else (0.5 if (d == 0) != (r == 0) else 0.0))
    total = share_total if weighted else fsum(w)
    consensus = fsum([wi * a for wi, a in zip(w, agree, strict=True)]) / total if total > 0 else 0.0
    return Consensus(exposure=exposure, consensus=consensus, agreement=tuple(agree),
                     strategy="weighted" if weighted else "confidence_weighted"), total


def consensus_and_confidence(exposures: list[float], confidences: list[float], weights: list[float],
                             configured: list[float], strategy: str) -> tuple[Consensus, float, float]:
    """The ensemble's vote in one call: ``(build_consensus(...), coverage, composite_confidence(...))`` of the
    voters that answered (``weights``) out of every configured specialist's weight (``configured``).

    Plain, in-range float lists take the inlined path (:func:`_plain_consensus`: the same operations);
    anything else goes through the general functions and their errors.
    """
    if strategy in _FAST:
        got = _plain_consensus(exposures, confidences, weights, configured, strategy == "weighted")
        if got is not None:
            return got
    cons = build_consensus(exposures, confidences, weights, strategy)
    cover = coverage(weights, configured)
    return cons, cover, composite_confidence(confidences, cons.agreement, weights, coverage=cover)


def _plain_consensus(e: list[float], c: list[float], w: list[float], configured: list[float], weighted: bool
                     ) -> tuple[Consensus, float, float] | None:
    """:func:`consensus_and_confidence` on plain lists (the checks of :func:`_plain_votes`, and ``configured``
    plain floats), with the operations of :func:`_vote`, :func:`coverage` and
    :func:`composite_confidence` in their order, in one pass per step (a handful of voters, once or twice
    per bar); None when the lists are not plain."""
    if type(e) is not list or type(w) is not list or len(e) != len(w):
        return None
    if not (weighted or (type(c) is list and len(c) == len(w))):
        return None
    shares = []
    for i, wi in enumerate(w):
        ei = e[i]
        if type(ei) is not float or not -1.0 <= ei <= 1.0 or type(wi) is not float or not 0.0 <= wi < math.inf:
            return None
        if weighted:
            shares.append(wi)
        else:
            ci = c[i]
            if type(ci) is not float or not 0.0 <= ci <= 1.0:
                return None
            shares.append(wi * ci)
    if configured is not w and (type(configured) is not list or not all(type(x) is float for x in configured)):
        return None
    cons, total = _vote(shares, e, w, weighted)
    fsum = math.fsum
    # coverage and composite confidence: ``total`` is fsum(w) here (the same sum as both strategies take)
    configured_total = total if configured is w else fsum(configured)
    cover = 0.0 if configured_total <= 0 else min(1.0, max(0.0, total / configured_total))
    if total <= 0:
        return cons, cover, 0.0
    value = cover * fsum([wi * ci * ai for wi, ci, ai in zip(w, c, cons.agreement, strict=True)]) / total
    return cons, cover, min(1.0, max(0.0, value))


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
