"""One bar's decision out of its sources: the composite vote, the quality filters, the conflicts.

:class:`Composer` holds the thresholds and weights of an :class:`~l2_tactical.config.L2Config`
and turns the ensemble's vote and the technical / pattern calls of a bar into a :class:`Decision`
(the rules are steps 4-6 of :mod:`l2_tactical.signal_generator`'s docstring). Also here: the
:class:`Decision` and the L3 context (:class:`Context`, :func:`parse_regime`) a bar is decided in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from l2_tactical.config import L2Config
from l2_tactical.ensemble.consensus_builder import Consensus, consensus_and_confidence
from l2_tactical.ensemble.performance import REGIME_FAVOURS
from l2_tactical.ensemble.voting_strategy import NEUTRAL_BAND, direction_of, side_of
from l2_tactical.finrl_models.ensemble_manager import EnsembleDecision
from l2_tactical.messages import SignalDirection, SignalSource, StrategicDecision, TacticalSignal
from l2_tactical.technical.signals import SourceCall

_DIRECTIONS = {1: SignalDirection.LONG, -1: SignalDirection.SHORT, 0: SignalDirection.NEUTRAL}
_SOURCES = ("ai_model", "technical", "pattern")

# source, exposure, confidence, failed quality tests ((what, value, name, limit); none: passed), call
Candidate = tuple[SignalSource, float, float, tuple[tuple[str, float, str, float], ...], SourceCall | None]
Kept = tuple[SignalSource, float, float, SourceCall | None]


class Decision:
    """One bar's outcome for one symbol: the composite view and the signals that passed.

    The signals are built when first read (:attr:`signals`, :meth:`signals_from`; each one once),
    so a loop that trades the composite only builds that one; :attr:`calls` gives every signal's
    source and exposure without building it. Decisions compare by their values, signals included.
    """

    __slots__ = ("_builder", "_built", "_kept", "_reasons", "confidence", "ensemble", "exposure", "price", "symbol",
                 "timestamp")
    symbol: str
    timestamp: datetime  # the bar's close
    price: float
    exposure: float  # composite target exposure in [-1, 1], before filters
    confidence: float
    ensemble: EnsembleDecision | None
    _reasons: tuple[str, ...] | _Reasons  # formatted when first read (:attr:`reasons`)
    _kept: tuple[Kept, ...]  # the candidates that passed, in source order
    _builder: _SignalBuilder
    _built: list[TacticalSignal | None]

    def __init__(self, symbol: str, timestamp: datetime, price: float, exposure: float, confidence: float,
                 kept: Sequence[Kept], builder: _SignalBuilder, ensemble: EnsembleDecision | None,
                 reasons: tuple[str, ...] | _Reasons = ()) -> None:
        _set_symbol(self, symbol), _set_timestamp(self, timestamp), _set_price(self, price)
        _set_exposure(self, exposure), _set_confidence(self, confidence), _set_ensemble(self, ensemble)
        _set_reasons(self, reasons), _set_kept(self, tuple(kept)), _set_builder(self, builder)
        _set_built(self, [None] * len(kept))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Decision is immutable (cannot set {name})")

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why candidates were dropped or overruled (quality filters, conflicts), in the order they were."""
        r = self._reasons
        return r if isinstance(r, tuple) else r.text()

    @property
    def signals(self) -> tuple[TacticalSignal, ...]:
        """Every signal that passed, in source order (AI_MODEL, TECHNICAL, PATTERN, COMPOSITE)."""
        return tuple(self._signal(i) for i in range(len(self._kept)))

    def signals_from(self, sources: Collection[SignalSource]) -> tuple[TacticalSignal, ...]:
        """The signals of ``sources`` only (the others are not built)."""
        return tuple(self._signal(i) for i, k in enumerate(self._kept) if k[0] in sources)

    @property
    def calls(self) -> tuple[tuple[SignalSource, float], ...]:
        """(source, exposure) of each signal, equal to ``(s.source, s.exposure)`` of :attr:`signals`."""
        return tuple((src, signal_exposure(e, sig)) for src, e, _, sig in self._kept)

    def _signal(self, i: int) -> TacticalSignal:
        built = self._built[i]
        if built is None:
            built = self._built[i] = self._builder.build(*self._kept[i])
        return built

    @property
    def direction(self) -> SignalDirection:
        return _DIRECTIONS[int(direction_of([self.exposure])[0])]

    @property
    def composite(self) -> TacticalSignal | None:
        return next(iter(self.signals_from((SignalSource.COMPOSITE,))), None)

    def _values(self) -> tuple[Any, ...]:
        return (self.symbol, self.timestamp, self.price, self.exposure, self.confidence, self.signals, self.ensemble,
                self.reasons)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # compares by value (and its signals hold mappings)

    def __repr__(self) -> str:
        names = ("symbol", "timestamp", "price", "exposure", "confidence", "signals", "ensemble", "reasons")
        return "Decision(" + ", ".join(f"{n}={v!r}" for n, v in zip(names, self._values(), strict=True)) + ")"


# the slots' own setters (Decision.__setattr__ refuses every assignment after construction)
_set_symbol, _set_timestamp, _set_price, _set_exposure, _set_confidence, _set_ensemble, _set_reasons, _set_kept, \
    _set_builder, _set_built = (getattr(Decision, n).__set__ for n in (
        "symbol", "timestamp", "price", "exposure", "confidence", "ensemble", "_reasons", "_kept", "_builder",
        "_built"))


def signal_exposure(exposure: float, call: SourceCall | None) -> float:
    """The exposure of the signal built for a kept candidate: its call's, or the side x the rounded strength
    that :meth:`Composer._signal` gives it."""
    if call is not None:
        return call.exposure
    side = side_of(exposure, NEUTRAL_BAND)
    return side * round(min(1.0, abs(exposure)), 6) if side else 0.0


@dataclass(frozen=True, slots=True)
class Context:
    regime: str | None = None
    strength: float = 1.0
    preferred: bool | None = None


_NO_CONTEXT = Context()


def parse_regime(regime_context: Any, symbol: str) -> Context:
    """L3's context: a mapping (seed 000: regime, strength, preferred_assets) or a StrategicDecision."""
    if regime_context is None:
        return _NO_CONTEXT
    if isinstance(regime_context, StrategicDecision):
        return Context(regime_context.regime.value, regime_context.strength, symbol in regime_context.universe)
    if not isinstance(regime_context, Mapping):
        raise ValueError(f"regime_context={regime_context!r}: expected a mapping or a StrategicDecision")
    regime = regime_context.get("regime")
    if regime is not None and regime not in REGIME_FAVOURS:
        raise ValueError(f"regime_context['regime']={regime!r}: not one of {sorted(REGIME_FAVOURS)}")
    strength = float(regime_context.get("strength", 1.0))
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"regime_context['strength']={strength!r}: must be in [0, 1]")
    assets = regime_context.get("preferred_assets")
    return Context(regime, strength, None if assets is None else symbol in assets)


@dataclass(frozen=True, slots=True)
class _Votes:
    """The sources' votes in the composite (a silent source votes 0 with confidence 0)."""

    labels: list[str]
    exposures: list[float]
    confidences: list[float]
    weights: list[float]
    consensus: Consensus


class Composer:
    """Composite, quality filters and conflicts of one bar (see the module docstring)."""

    def __init__(self, config: L2Config) -> None:
        s = config.signals
        self.weights = (s.ai_model_weight, s.technical_weight, s.pattern_weight)
        self.min_strength = s.min_signal_strength
        self.prediction_threshold = config.ai_model.prediction_threshold
        self.consensus_threshold = config.ensemble.consensus_threshold
        self.confidence_threshold = config.ensemble.confidence_threshold
        self.expiry = timedelta(minutes=s.signal_expiry_minutes)

    def compose(self, symbol: str, when: datetime, close: float, ens: EnsembleDecision, tech: SourceCall | None,
                patt: SourceCall | None, ctx: Context) -> Decision:
        """The bar's Decision: composite = weighted vote of the sources, then filters and conflicts."""
        ai_ok = ens.answered > 0
        votes, conf = self._vote(ens if ai_ok else None, tech, patt)
        comp = votes.consensus
        reasons = _Reasons()
        kept: list[Kept] = []
        for src, e, c, failed, sig in self._candidates(ens if ai_ok else None, tech, patt, comp.exposure, conf):
            if side_of(e, NEUTRAL_BAND) == 0:
                continue
            if failed:
                reasons.dropped(src, failed)
            else:
                kept.append((src, e, c, sig))
        kept = resolve_conflicts(kept, comp.exposure, reasons)
        builder = _SignalBuilder(self, symbol, close, when, ens, votes, ctx, reasons,
                                 ai_ok and any(sig is None for *_, sig in kept))
        return Decision(symbol, when, close, comp.exposure, conf, kept, builder, ens if ai_ok else None, reasons)

    def _vote(self, ens: EnsembleDecision | None, tech: SourceCall | None, patt: SourceCall | None
              ) -> tuple[_Votes, float]:
        """The sources' votes, their consensus (weighted vote) and the composite confidence (full coverage)."""
        w_ai, w_tech, w_patt = self.weights
        if ens is not None:
            agreeing = ens.consensus >= self.consensus_threshold
            labels = list(_SOURCES)
            e = [ens.exposure if agreeing else 0.0]
            c = [ens.confidence if agreeing else 0.0]
            w = [w_ai, w_tech, w_patt]
        else:
            labels, e, c, w = list(_SOURCES[1:]), [], [], [w_tech, w_patt]
        for sig in (tech, patt):
            e.append(sig.exposure if sig is not None else 0.0)
            c.append(sig.confidence if sig is not None else 0.0)
        # every source counts in the composite's weight: coverage 1 (compose_sources + composite_confidence)
        consensus, _, conf = consensus_and_confidence(e, c, w, w, "weighted")
        return _Votes(labels, e, c, w, consensus), conf

    def _candidates(self, ens: EnsembleDecision | None, tech: SourceCall | None, patt: SourceCall | None,
                    comp_exposure: float, conf: float) -> list[Candidate]:
        """(source, exposure, confidence, failed quality filters, ready-made call or None) per source."""
        s = self.min_strength
        cands: list[Candidate] = []
        if ens is not None:
            cands.append((SignalSource.AI_MODEL, ens.exposure, ens.confidence, _failed_tests(
                ("strength", abs(ens.exposure), "min_signal_strength", s),
                ("confidence", ens.confidence, "prediction_threshold", self.prediction_threshold),
                ("consensus", ens.consensus, "consensus_threshold", self.consensus_threshold)), None))
        for sig in (tech, patt):
            if sig is not None:
                cands.append((sig.source, sig.exposure, sig.confidence,
                              _failed_tests(("strength", sig.strength, "min_signal_strength", s)), sig))
        cands.append((SignalSource.COMPOSITE, comp_exposure, conf, _failed_tests(
            ("strength", abs(comp_exposure), "min_signal_strength", s),
            ("confidence", conf, "confidence_threshold", self.confidence_threshold)), None))
        return cands

    def _signal(self, symbol: str, source: SignalSource, exposure: float, confidence: float, close: float,
                when: datetime, metadata: dict[str, Any] | None) -> TacticalSignal:
        d = side_of(exposure, NEUTRAL_BAND)
        return TacticalSignal(symbol=symbol, direction=_DIRECTIONS[d], strength=round(min(1.0, abs(exposure)), 6),
                              confidence=round(min(1.0, max(0.0, confidence)), 6), price=close, timestamp=when,
                              source=source, metadata=metadata or {}, expires_at=when + self.expiry)


class _SignalBuilder:
    """Builds one bar's kept signals on demand (:class:`Decision`), from values that no longer change."""

    __slots__ = ("_ens_meta", "close", "composer", "ctx", "ens", "reasons", "symbol", "votes", "when", "with_ai")

    def __init__(self, composer: Composer, symbol: str, close: float, when: datetime, ens: EnsembleDecision,
                 votes: _Votes, ctx: Context, reasons: _Reasons, with_ai: bool) -> None:
        self.composer, self.symbol, self.close, self.when = composer, symbol, close, when
        self.ens, self.votes, self.ctx, self.reasons, self.with_ai = ens, votes, ctx, reasons, with_ai
        self._ens_meta: dict[str, Any] | None = None

    def ens_meta(self) -> dict[str, Any] | None:
        """The ensemble's metadata when a kept signal speaks for the specialists (AI_MODEL or COMPOSITE)."""
        if self.with_ai and self._ens_meta is None:
            self._ens_meta = self.ens.to_metadata()
        return self._ens_meta

    def build(self, src: SignalSource, e: float, c: float, sig: SourceCall | None) -> TacticalSignal:
        if sig is not None:
            return sig.to_signal(self.symbol, self.close, self.when, self.composer.expiry)
        ens_meta = self.ens_meta()
        meta = ens_meta if src is SignalSource.AI_MODEL else composite_metadata(self.ens, ens_meta, self.votes,
                                                                              self.ctx, self.reasons.text())
        return self.composer._signal(self.symbol, src, e, c, self.close, self.when, meta)


def composite_metadata(ens: EnsembleDecision, ens_meta: dict[str, Any] | None, votes: _Votes, ctx: Context,
                       reasons: Sequence[str]) -> dict[str, Any]:
    """The COMPOSITE signal's metadata: AI status, L3 context, each source's vote, what was filtered."""
    status = ("ok" if not ens.degraded else "degraded") if ens_meta is not None else \
        "unavailable: technical + pattern only"
    meta: dict[str, Any] = {
        "ai_status": status, "regime": ctx.regime, "regime_strength": ctx.strength,
        "preferred_asset": ctx.preferred, "source_agreement": round(votes.consensus.consensus, 6),
        "sources": {label: {"exposure": round(e, 6), "confidence": round(c, 6), "weight": w}
                    for label, e, c, w in zip(votes.labels, votes.exposures, votes.confidences, votes.weights,
                                              strict=True)},
        "filtered": list(reasons),
    }
    if ens_meta is not None:  # the summary; the AI_MODEL signal carries every vote
        meta["ensemble"] = {k: ens_meta[k] for k in ("ensemble_exposure", "ensemble_confidence", "consensus",
                                                     "coverage", "voting", "degraded")}
    else:
        meta["ai_reasons"] = list(ens.degraded)
    return meta


def failed_filters(*tests: tuple[str, float, str, float]) -> str:
    """``"strength 0.21 < min_signal_strength 0.3; ..."`` for the failed (what, value, name, limit) tests."""
    failed = _failed_tests(*tests)
    if not failed:
        return ""
    return "; ".join(f"{what} {value:.2f} < {name} {limit}" for what, value, name, limit in failed)


def _failed_tests(*tests: tuple[str, float, str, float]) -> tuple[tuple[str, float, str, float], ...]:
    """The (what, value, name, limit) tests that failed (``value < limit``), in order."""
    return tuple([t for t in tests if t[1] < t[3]])


class _Reasons:
    """One bar's reasons for dropping or overruling candidates, formatted when first read (a bar's
    reasons are read only when its composite signal is built or its Decision is inspected)."""

    __slots__ = ("_items", "_text")

    def __init__(self) -> None:
        self._items: list[str | tuple[SignalSource, tuple[tuple[str, float, str, float], ...]]] = []
        self._text: tuple[str, ...] | None = None

    def dropped(self, source: SignalSource, failed: tuple[tuple[str, float, str, float], ...]) -> None:
        """``source`` failed the quality ``failed`` tests (:func:`failed_filters`)."""
        self._items.append((source, failed))

    def append(self, text: str) -> None:
        self._items.append(text)

    def text(self) -> tuple[str, ...]:
        if self._text is None:
            self._text = tuple(item if isinstance(item, str) else
                               f"{item[0].value} dropped: {failed_filters(*item[1])}" for item in self._items)
        return self._text


def resolve_conflicts(kept: list[Kept], composite_exposure: float, reasons: list[str] | _Reasons) -> list[Kept]:
    """Keep only the composite's side when both LONG and SHORT candidates survived the filters."""
    sides = {side_of(e, NEUTRAL_BAND) for _, e, _, _ in kept}
    if len(sides) < 2:
        return kept
    comp_passed = any(src is SignalSource.COMPOSITE for src, *_ in kept)
    winner = side_of(composite_exposure, NEUTRAL_BAND) if comp_passed else None
    out = [k for k in kept if side_of(k[1], NEUTRAL_BAND) == winner]
    for src, e, _, _ in kept:
        if side_of(e, NEUTRAL_BAND) != winner:
            why = f"composite is {_DIRECTIONS[winner].value}" if winner is not None else "no composite passed"
            reasons.append(f"conflict: {src.value} {_DIRECTIONS[side_of(e, NEUTRAL_BAND)].value} overruled ({why})")
    return out
