"""Consensus across timeframes: do 1m, 5m, 15m and 1h agree on the direction?

Each timeframe casts a vote: the sign of a direction measure (by default its
MACD histogram feature; anything whose sign means up/down works), 0 inside a
dead band. The *score* is the weighted mean of the votes, in [-1, 1]; the
consensus *direction* is its sign; the *agreement* is the share of the total
weight voting for that direction; the timeframes are *aligned* when the
agreement reaches ``alignment_threshold`` (``timeframes.alignment_threshold``
in the configuration). Weights default to equal.

>>> c = timeframe_consensus({"1m": -0.1, "5m": 0.2, "15m": 0.4, "1h": 0.3}, alignment_threshold=0.7)
>>> c.direction, c.agreement, c.aligned
(1, 0.75, True)
>>> timeframe_consensus({"1m": 0.1, "1h": -0.1}, alignment_threshold=0.7).direction
0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from l2_tactical.technical.feature_spec import FeatureError, parse_feature


@dataclass(frozen=True)
class Consensus:
    direction: int  # +1 up, -1 down, 0 no majority
    score: float  # weighted mean vote in [-1, 1]
    agreement: float  # share of weight voting `direction` (0 when direction is 0)
    aligned: bool  # agreement >= alignment_threshold (never when direction is 0)
    votes: Mapping[str, int]  # per timeframe: +1, -1 or 0

    def to_metadata(self) -> dict[str, object]:
        """JSON-able summary for a signal's metadata."""
        return {
            "direction": self.direction,
            "score": round(self.score, 4),
            "agreement": round(self.agreement, 4),
            "aligned": self.aligned,
            "votes": dict(self.votes),
        }


def _check_threshold(alignment_threshold: float) -> None:
    if not 0.0 <= alignment_threshold <= 1.0:
        raise ValueError(f"alignment_threshold={alignment_threshold!r} must be in [0, 1]")


def timeframe_consensus(
    directions: Mapping[str, float],
    *,
    alignment_threshold: float,
    weights: Mapping[str, float] | None = None,
    dead_band: float = 0.0,
) -> Consensus:
    """Weighted agreement of per-timeframe direction measures (see the module docstring)."""
    _check_threshold(alignment_threshold)
    if not directions:
        raise ValueError("no timeframes to build a consensus from")
    votes: dict[str, int] = {}
    total = score = 0.0
    for tf, value in directions.items():
        w = 1.0 if weights is None else float(weights.get(tf, 0.0))
        if not (math.isfinite(value) and math.isfinite(w) and w >= 0):
            raise ValueError(f"timeframe {tf}: direction {value!r} / weight {w!r} must be finite (weight >= 0)")
        vote = 0 if abs(value) <= dead_band else (1 if value > 0 else -1)
        votes[tf] = vote
        total += w
        score += w * vote
    if total <= 0:
        raise ValueError("timeframe weights sum to zero")
    score /= total
    direction = 0 if score == 0 else (1 if score > 0 else -1)
    agree = sum(
        (1.0 if weights is None else float(weights.get(tf, 0.0)))
        for tf, v in votes.items()
        if v == direction and direction != 0
    )
    agreement = agree / total
    return Consensus(
        direction=direction,
        score=score,
        agreement=agreement,
        aligned=direction != 0 and agreement >= alignment_threshold,
        votes=votes,
    )


def consensus_scores(
    values: np.ndarray,
    *,
    alignment_threshold: float,
    weights: Sequence[float] | None = None,
    dead_band: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised consensus for a ``[n_rows, n_timeframes]`` array of direction measures.

    Returns ``(direction int8, agreement float64, aligned bool)`` per row, equal
    to :func:`timeframe_consensus` row by row.
    """
    _check_threshold(alignment_threshold)
    w = np.ones(values.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    votes = np.where(np.abs(values) <= dead_band, 0, np.sign(values))
    score = votes @ w / w.sum()
    direction = np.sign(score).astype(np.int8)
    agreement = ((votes == direction[:, None]) & (direction[:, None] != 0)) @ w / w.sum()
    return direction, agreement, (direction != 0) & (agreement >= alignment_threshold)


def _kind_of(column: str) -> str | None:
    try:
        return parse_feature(column).name
    except FeatureError:
        return None


def directions_from_row(
    row: Mapping[str, float], timeframes: Sequence[str], kind: str = "macd_hist"
) -> dict[str, float]:
    """Per timeframe, the value of the first feature of ``kind`` on it (e.g. ``macd_hist_12_26_9@5m``)."""
    out: dict[str, float] = {}
    for name, value in row.items():
        tf = name.partition("@")[2]
        if tf in timeframes and tf not in out and _kind_of(name) == kind:
            out[tf] = float(value)
    missing = [tf for tf in timeframes if tf not in out]
    if missing:
        raise KeyError(f"no {kind!r} feature for timeframe(s) {missing} in the row")
    return {tf: out[tf] for tf in timeframes}
