"""Technical and pattern signal sources: feature rows in, :class:`TacticalSignal` out.

Both functions are pure. They read a feature row as a mapping of column name
to value (``dict(zip(feature_set.names, row))``) on one timeframe, so they see
exactly the numbers the models see, and say *why* in the signal's metadata.
They return ``None`` when no rule fires (no signal is not a NEUTRAL vote).

Technical rules (each a vote in [-1, 1]; missing features skip their rule):

* RSI(14) below ``rsi_oversold`` votes long, above ``rsi_overbought`` short,
  in proportion to how far past the threshold it is;
* MACD histogram crossing zero since ``previous`` row: a full vote for the
  cross direction; otherwise a third of a vote for the histogram's sign;
* Bollinger %b below 0 / above 1 (close outside the bands): mean-reversion vote;
* ADX above ``adx_trend``: a trend vote in the direction of +DI - -DI;
* a :class:`~l2_tactical.technical.multi_timeframe.Consensus`, when aligned.

``strength`` = |weighted mean vote|; ``confidence`` = share of the vote mass
on the winning side. Pattern rules are described on :func:`pattern_signal`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from l2_tactical.messages import SignalDirection, SignalSource, TacticalSignal
from l2_tactical.technical.multi_timeframe import Consensus
from l2_tactical.technical.patterns import BEARISH, BULLISH, INDECISION

Row = Mapping[str, float]
Why = dict[str, Any] | None  # where a rule says why (None: the numbers only)


@dataclass(frozen=True)
class TechnicalRules:
    """Thresholds of the technical rules (indicator units: RSI and ADX 0..100)."""

    rsi_oversold: float = 30.0
    rsi_overbought: float = 70.0
    adx_trend: float = 25.0
    min_strength: float = 0.05  # |mean vote| below this is no signal
    macd_weight: float = 1.0
    rsi_weight: float = 1.0
    bollinger_weight: float = 0.7
    trend_weight: float = 1.0
    consensus_weight: float = 1.0


_DEFAULT_RULES = TechnicalRules()


def _get(row: Row, kind: str, timeframe: str) -> float | None:
    value = row.get(f"{kind}@{timeframe}")
    return None if value is None else float(value)


def _rsi_vote(row: Row, tf: str, r: TechnicalRules, why: Why) -> float | None:
    value = _get(row, "rsi_14", tf)
    if value is None:
        return None
    rsi = 100 * value
    if why is not None:
        why["rsi"] = round(rsi, 2)
    if rsi < r.rsi_oversold:
        return min(1.0, (r.rsi_oversold - rsi) / r.rsi_oversold + 0.5)
    if rsi > r.rsi_overbought:
        return -min(1.0, (rsi - r.rsi_overbought) / (100 - r.rsi_overbought) + 0.5)
    return 0.0


def _macd_vote(row: Row, prev: Row | None, tf: str, why: Why) -> float | None:
    hist = _get(row, "macd_hist_12_26_9", tf)
    if hist is None:
        return None
    before = _get(prev, "macd_hist_12_26_9", tf) if prev is not None else None
    cross = "none"
    if before is not None and before <= 0 < hist:
        cross = "bullish"
    elif before is not None and before >= 0 > hist:
        cross = "bearish"
    if why is not None:
        why["macd_hist_pct"] = round(hist, 6)
        why["macd_cross"] = cross
    if cross != "none":
        return 1.0 if cross == "bullish" else -1.0
    return 0.0 if hist == 0 else (1 / 3 if hist > 0 else -1 / 3)


def _bollinger_vote(row: Row, tf: str, why: Why) -> float | None:
    pctb = _get(row, "bb_pctb_20_2.0", tf)
    if pctb is None:
        return None
    if why is not None:
        why["bb_pctb"] = round(pctb, 4)
    return 1.0 if pctb < 0 else (-1.0 if pctb > 1 else 0.0)


def _trend_vote(row: Row, tf: str, r: TechnicalRules, why: Why) -> float | None:
    adx, di = _get(row, "adx_14", tf), _get(row, "di_diff_14", tf)
    if adx is None or di is None:
        return None
    if why is not None:
        why["adx"], why["di_diff"] = round(100 * adx, 2), round(100 * di, 2)
    if 100 * adx < r.adx_trend or di == 0:
        return 0.0
    return (1.0 if di > 0 else -1.0) * min(1.0, 100 * adx / (2 * r.adx_trend))


def _combine(votes: dict[str, tuple[float, float]]) -> tuple[int, float, float]:
    """(direction, strength, confidence) from ``{rule: (vote, weight)}``.

    The sums run left to right from 0 in the rules' order (as ``sum()`` adds floats).
    """
    total_w = weighted = mass = 0.0
    for v, w in votes.values():
        total_w += w
        weighted += v * w
        mass += abs(v) * w
    if total_w <= 0:
        return 0, 0.0, 0.0
    score = weighted / total_w
    direction = 0 if score == 0 else (1 if score > 0 else -1)
    agree = 0.0
    for v, w in votes.values():
        if v * direction > 0:
            agree += abs(v) * w
    return direction, min(1.0, abs(score)), (agree / mass if mass > 0 else 0.0)


@dataclass(frozen=True, slots=True)
class SourceCall:
    """A technical or pattern source's call as numbers, before it becomes a :class:`TacticalSignal`.

    ``strength`` and ``confidence`` are already rounded as the signal carries them, so
    ``exposure`` equals ``to_signal(...).exposure``. Building the message (validation, id) is
    left to :meth:`to_signal`, for the calls that survive the quality filters, and so is saying
    why (:attr:`metadata`, worked out from the call's inputs when asked for).
    """

    source: SignalSource
    direction: int  # +1 or -1
    strength: float
    confidence: float
    describe: Callable[[], dict[str, Any]] = field(compare=False, repr=False)  # -> the metadata

    @property
    def exposure(self) -> float:
        return self.direction * self.strength

    @property
    def metadata(self) -> dict[str, Any]:
        """Why the source called it (the rules' readings and votes): a new dict at each access."""
        return self.describe()

    def to_signal(self, symbol: str, price: float, timestamp: datetime, expiry: timedelta | None = None
                  ) -> TacticalSignal:
        return TacticalSignal(
            symbol=symbol,
            direction=SignalDirection.LONG if self.direction > 0 else SignalDirection.SHORT,
            strength=self.strength,
            confidence=self.confidence,
            price=price,
            timestamp=timestamp,
            source=self.source,
            metadata=self.metadata,
            expires_at=None if expiry is None else timestamp + expiry,
        )


def _call(direction: int, strength: float, confidence: float, source: SignalSource,
          describe: Callable[[], dict[str, Any]]) -> SourceCall:
    return SourceCall(source, direction, round(strength, 6), round(confidence, 6), describe)


def technical_signal(
    symbol: str,
    row: Row,
    *,
    price: float,
    timestamp: datetime,
    timeframe: str,
    previous: Row | None = None,
    consensus: Consensus | None = None,
    rules: TechnicalRules | None = None,
    expiry: timedelta | None = None,
) -> TacticalSignal | None:
    """A TECHNICAL signal from the indicator features of ``timeframe`` in ``row`` (see the module doc)."""
    call = technical_call(row, timeframe=timeframe, previous=previous, consensus=consensus, rules=rules)
    return None if call is None else call.to_signal(symbol, price, timestamp, expiry)


def technical_call(
    row: Row,
    *,
    timeframe: str,
    previous: Row | None = None,
    consensus: Consensus | None = None,
    rules: TechnicalRules | None = None,
) -> SourceCall | None:
    """:func:`technical_signal` as numbers (no message built)."""
    r = rules or _DEFAULT_RULES
    direction, strength, confidence = _combine(_technical_votes(row, timeframe, previous, consensus, r, None))
    if direction == 0 or strength < r.min_strength:
        return None
    return _call(direction, strength, confidence, SignalSource.TECHNICAL,
                 partial(_technical_why, row, timeframe, previous, consensus, r))


def _technical_votes(row: Row, timeframe: str, previous: Row | None, consensus: Consensus | None,
                     r: TechnicalRules, why: Why) -> dict[str, tuple[float, float]]:
    """``{rule: (vote, weight)}`` of the rules that could vote (their readings written to ``why``)."""
    candidates = {
        "rsi": (_rsi_vote(row, timeframe, r, why), r.rsi_weight),
        "macd": (_macd_vote(row, previous, timeframe, why), r.macd_weight),
        "bollinger": (_bollinger_vote(row, timeframe, why), r.bollinger_weight),
        "trend": (_trend_vote(row, timeframe, r, why), r.trend_weight),
    }
    if consensus is not None:
        if why is not None:
            why["consensus"] = consensus.to_metadata()
        vote = consensus.direction * consensus.agreement if consensus.aligned else 0.0
        candidates["consensus"] = (vote, r.consensus_weight)
    return {k: (v, w) for k, (v, w) in candidates.items() if v is not None}


def _technical_why(row: Row, timeframe: str, previous: Row | None, consensus: Consensus | None,
                   r: TechnicalRules) -> dict[str, Any]:
    """A TECHNICAL call's metadata: the timeframe, each rule's readings, the votes."""
    why: dict[str, Any] = {"timeframe": timeframe}
    votes = _technical_votes(row, timeframe, previous, consensus, r, why)
    why["votes"] = {k: round(v, 4) for k, (v, _) in votes.items()}
    return why


def pattern_columns(names: Iterable[str], timeframe: str) -> tuple[tuple[str, str], ...]:
    """``(column, pattern)`` of the candlestick features of ``timeframe`` among ``names``, in their order.

    >>> pattern_columns(["rsi_14@1h", "cdl_doji@1h", "cdl_engulfing@4h"], "1h")
    (('cdl_doji@1h', 'doji'),)
    """
    suffix = f"@{timeframe}"
    return tuple((n, n[4 : -len(suffix)]) for n in names if n.startswith("cdl_") and n.endswith(suffix))


def _pattern_votes(row: Row, columns: tuple[tuple[str, str], ...]) -> tuple[dict[str, float], list[str]]:
    found: dict[str, float] = {}
    indecision: list[str] = []
    for name, pattern in columns:
        value = row[name]
        if value == 0:
            continue
        if pattern in INDECISION:
            indecision.append(pattern)
        elif pattern in BULLISH:
            found[pattern] = abs(float(value))
        elif pattern in BEARISH:
            found[pattern] = -abs(float(value))
        else:
            found[pattern] = float(value)
    return found, indecision


def pattern_signal(
    symbol: str,
    row: Row,
    *,
    price: float,
    timestamp: datetime,
    timeframe: str,
    expiry: timedelta | None = None,
) -> TacticalSignal | None:
    """A PATTERN signal (see :func:`pattern_call` for the rules)."""
    call = pattern_call(row, timeframe=timeframe)
    return None if call is None else call.to_signal(symbol, price, timestamp, expiry)


def pattern_call(row: Row, *, timeframe: str, columns: tuple[tuple[str, str], ...] | None = None
                 ) -> SourceCall | None:
    """A PATTERN call from the candlestick features (``cdl_*``) of ``timeframe`` in ``row``.

    Direction: sign of the summed pattern votes (bullish +, bearish -; doji
    only lowers confidence). Strength: |sum| / 2, capped at 1 (two agreeing
    patterns give full strength). Confidence starts at 0.5; +0.25 when the
    prior 5-bar move (``ret_5``) went the other way (a reversal pattern after a
    move to reverse), +0.25 when relative volume is above 1.2, -0.25 when a
    doji shows indecision; clipped to [0, 1].
    """
    if columns is None:
        columns = pattern_columns(row, timeframe)
    found, indecision = _pattern_votes(row, columns)
    total = sum(found.values())
    if total == 0:
        return None
    direction = 1 if total > 0 else -1
    confidence = 0.5
    prior = _get(row, "ret_5", timeframe)
    if prior is not None:
        confidence += 0.25 if prior * direction < 0 else 0.0
    rel_volume = _get(row, "rel_volume_20", timeframe)
    if rel_volume is not None:
        confidence += 0.25 if rel_volume > 1.2 else 0.0
    if indecision:
        confidence -= 0.25
    confidence = min(1.0, max(0.0, confidence))
    return _call(direction, min(1.0, abs(total) / 2), confidence, SignalSource.PATTERN,
                 partial(_pattern_why, timeframe, found, prior, rel_volume, indecision))


def _pattern_why(timeframe: str, found: dict[str, float], prior: float | None, rel_volume: float | None,
                 indecision: list[str]) -> dict[str, Any]:
    """A PATTERN call's metadata: the patterns found, the prior move, relative volume, indecision."""
    why: dict[str, Any] = {"timeframe": timeframe, "patterns": {k: round(v, 2) for k, v in found.items()}}
    if prior is not None:
        why["prior_return_pct"] = round(prior, 4)
    if rel_volume is not None:
        why["rel_volume"] = round(rel_volume, 3)
    if indecision:
        why["indecision"] = list(indecision)
    return why
