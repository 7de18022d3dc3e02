"""EnsembleManager: the configured specialists, each asked for a target exposure and a confidence, voted.

Per decision:

1. each available specialist gets its observation (:mod:`feature_processor` layout) and answers
   ``(exposure in [-1, 1], confidence in [0, 1])`` through its numpy policy
   (:mod:`fast_policy`; SB3 ``predict`` only for policies without a numpy export). A specialist
   trained in spot mode (:func:`is_long_only`) votes in [0, 1]: its short actions mean flat, and
   a discrete policy's confidence is then the mass of all actions meaning the chosen exposure;
2. a specialist that is missing (not loaded), raises, or answers later than
   ``ai_model.timeout_ms`` (measured on the injected :class:`~l2_tactical.clock.Clock`; a late
   answer is discarded, it cannot be pre-empted in-thread) does not vote; its name and reason go
   to :attr:`EnsembleDecision.degraded`;
3. weights: configured weight x performance multiplier x regime multiplier, floored
   (:mod:`l2_tactical.ensemble.performance`), over all configured specialists; the voters keep
   their share;
4. vote (``ensemble.voting``), consensus and composite confidence
   (:mod:`l2_tactical.ensemble`): confidence is scaled by the *coverage*, the share of the
   weight that answered, so a degraded ensemble is less confident.

Predictions can be cached (``ai_model.cache_predictions``, ``cache_ttl_seconds``) under a key
the caller gives (symbol, bar time, position), so repeated calls on the same bar skip inference.
The manager never sizes anything: it outputs direction and conviction only.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from l2_tactical.clock import Clock, SystemClock
from l2_tactical.config import PACKAGE_ROOT, EnsembleConfig, L2Config
from l2_tactical.ensemble.consensus_builder import consensus_and_confidence
from l2_tactical.ensemble.performance import PerformanceTracker, adaptive_weights_list, regime_multipliers
from l2_tactical.errors import L2Error
from l2_tactical.finrl_models.fast_policy import (
    UnsupportedPolicy,
    action_to_exposure,
    default_action_values,
    export_policy,
    grouped_confidence,
)
from l2_tactical.finrl_models.feature_processor import HOLDING_SCALE_BARS, infer_window

Policy = Callable[[np.ndarray], tuple[float, float]]
Answer = tuple[str, float, float, str]  # a specialist's status, exposure, confidence, detail
CACHE_SIZE = 4096
_ANSWERED = ("ok", "cached")  # the statuses of a specialist that voted


@dataclass(frozen=True, slots=True)
class Specialist:
    """One loaded specialist: its policy and what it must be shown."""

    name: str
    specialization: str
    algorithm: str
    feature_names: tuple[str, ...]
    feature_schema_hash: str | None
    window: int
    policy: Policy  # one observation -> (exposure, confidence)
    holding_scale_bars: float = HOLDING_SCALE_BARS
    backend: str = "numpy"
    long_only: bool = False  # trained in spot mode: votes in [0, 1] (see is_long_only)

    def act(self, obs: np.ndarray) -> tuple[float, float]:
        exposure, confidence = self.policy(obs)
        if not (math.isfinite(exposure) and math.isfinite(confidence)):
            raise ValueError(f"specialist {self.name} answered a non-finite ({exposure}, {confidence})")
        return min(1.0, max(-1.0, exposure)), min(1.0, max(0.0, confidence))


def specialist_from_loaded(name: str, specialization: str, loaded: Any) -> Specialist:
    """Wrap a :class:`~l2_tactical.finrl_models.model_loader.LoadedModel` (SB3) as a Specialist."""
    names = tuple(loaded.feature_names)
    if not names:
        raise L2Error(f"{loaded.path}: the model card records no feature names; cannot build its observation")
    extra = dict(loaded.card.get("extra", {}) or {})
    obs_size = int(loaded.model.observation_space.shape[0])
    window = int(extra.get("window", infer_window(obs_size, len(names))))
    scale = float(extra.get("holding_scale_bars", HOLDING_SCALE_BARS))
    try:
        fast = export_policy(loaded.model, loaded.algorithm)
    except UnsupportedPolicy:
        return Specialist(name, specialization, loaded.algorithm, names, loaded.feature_schema_hash, window,
                          _sb3_policy(loaded, extra), scale, backend="sb3", long_only=is_long_only(extra))
    values = tuple(extra.get("action_values") or (default_action_values(fast.n_actions) if fast.n_actions else ()))
    long_only = is_long_only(extra)
    return Specialist(name, specialization, loaded.algorithm, names, loaded.feature_schema_hash, window,
                      _numpy_policy(fast, values, long_only), scale, long_only=long_only)


def is_long_only(extra: Mapping[str, Any]) -> bool:
    """True for a specialist trained in spot mode: its card's ``extra.env_kwargs`` exists without ``margin: true``.

    Such a policy cannot hold a short (the env treats short as flat), so its negative actions mean
    *flat*, not bearish conviction; cards without ``env_kwargs`` keep the policy's raw sign.

    >>> is_long_only({"env_kwargs": {}}), is_long_only({"env_kwargs": {"margin": True}}), is_long_only({})
    (True, False, False)
    """
    kwargs = extra.get("env_kwargs")
    return isinstance(kwargs, Mapping) and not bool(kwargs.get("margin", False))


def _numpy_policy(fast: Any, values: tuple[float, ...], long_only: bool) -> Policy:
    act_one = fast.act_one
    if fast.kind == "discrete" and long_only:
        clipped = tuple(max(0.0, v) for v in values)
        probs_one = fast.probs_one
        if len(set(clipped)) < 2:
            def one_exposure(obs: np.ndarray) -> tuple[float, float]:
                p = probs_one(obs)
                index = int(p.argmax())
                return clipped[index], grouped_confidence(p, clipped, index)
            return one_exposure
        # grouped_confidence with its groups worked out once: the chosen action's group, summed in action order
        groups = tuple(tuple(j for j, e in enumerate(clipped) if e == target) for target in clipped)
        g = float(len(set(clipped)))

        def spot_discrete(obs: np.ndarray) -> tuple[float, float]:
            p = probs_one(obs)
            index = int(p.argmax())
            probs = p.tolist()
            mass = float(sum([probs[j] for j in groups[index]]))
            return clipped[index], min(1.0, max(0.0, (mass - 1.0 / g) / (1.0 - 1.0 / g)))
        return spot_discrete
    if fast.kind == "discrete":
        def discrete(obs: np.ndarray) -> tuple[float, float]:
            index, conf = act_one(obs)
            return values[int(index)], conf
        return discrete
    low = 0.0 if long_only else -1.0

    def box(obs: np.ndarray) -> tuple[float, float]:
        action, conf = act_one(obs)  # a clipped-away short keeps the sign-agreement confidence (flat vs long)
        return min(1.0, max(low, float(action))), conf
    return box


def _sb3_policy(loaded: Any, extra: Mapping[str, Any]) -> Policy:
    from gymnasium import spaces

    space = loaded.model.action_space
    discrete = isinstance(space, spaces.Discrete)
    values = tuple(extra.get("action_values") or (default_action_values(int(space.n)) if discrete else ()))

    low = 0.0 if is_long_only(extra) else -1.0

    def policy(obs: np.ndarray) -> tuple[float, float]:
        action, conf = loaded.predict(obs)
        exposure = action_to_exposure("discrete" if discrete else "box", np.asarray(action).reshape(1, -1), values)
        return max(low, float(exposure[0])), (0.5 if not math.isfinite(conf) else float(conf))

    return policy


@dataclass(frozen=True, slots=True)
class SpecialistVote:
    name: str
    status: str  # ok | missing | error | timeout | cached
    exposure: float = 0.0
    confidence: float = 0.0
    weight: float = 0.0  # effective (floored, regime and performance adjusted) share
    detail: str = ""

    @property
    def answered(self) -> bool:
        return self.status in _ANSWERED


@dataclass(frozen=True, slots=True)
class EnsembleDecision:
    """The ensemble's vote: a target exposure and how much to believe it (never a size)."""

    exposure: float
    confidence: float
    consensus: float
    coverage: float
    strategy: str
    votes: tuple[SpecialistVote, ...]
    degraded: tuple[str, ...] = field(default=())

    @property
    def answered(self) -> int:
        return sum(v.answered for v in self.votes)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "ensemble_exposure": round(self.exposure, 6), "consensus": round(self.consensus, 6),
            "ensemble_confidence": round(self.confidence, 6), "coverage": round(self.coverage, 6),
            "voting": self.strategy, "degraded": list(self.degraded),
            "votes": {v.name: {"status": v.status, "exposure": round(v.exposure, 6),
                               "confidence": round(v.confidence, 6), "weight": round(v.weight, 6),
                               **({"detail": v.detail} if v.detail else {})} for v in self.votes},
        }


def _new_vote(name: str, status: str, exposure: float, confidence: float, weight: float, detail: str
              ) -> SpecialistVote:
    """``SpecialistVote(name, status, exposure, confidence, weight, detail)`` without the frozen ``__init__``'s
    per-field ``object.__setattr__`` (the per-bar path; the class has no ``__post_init__``: the same object)."""
    v = _new(SpecialistVote)
    _SET_VOTE[0](v, name), _SET_VOTE[1](v, status), _SET_VOTE[2](v, exposure)
    _SET_VOTE[3](v, confidence), _SET_VOTE[4](v, weight), _SET_VOTE[5](v, detail)
    return v


def _new_decision(exposure: float, confidence: float, consensus: float, coverage: float, strategy: str,
                  votes: tuple[SpecialistVote, ...], degraded: tuple[str, ...]) -> EnsembleDecision:
    """``EnsembleDecision(...)`` of all its fields, as :func:`_new_vote` builds a vote."""
    d = _new(EnsembleDecision)
    _SET_DECISION[0](d, exposure), _SET_DECISION[1](d, confidence), _SET_DECISION[2](d, consensus)
    _SET_DECISION[3](d, coverage), _SET_DECISION[4](d, strategy), _SET_DECISION[5](d, votes)
    _SET_DECISION[6](d, degraded)
    return d


_new = object.__new__
_SET_VOTE = tuple(getattr(SpecialistVote, f.name).__set__ for f in fields(SpecialistVote))
_SET_DECISION = tuple(getattr(EnsembleDecision, f.name).__set__ for f in fields(EnsembleDecision))


class EnsembleManager:
    """The configured specialists (see the module docstring). ``specialists[name] is None`` = unavailable."""

    def __init__(self, config: EnsembleConfig, specialists: Mapping[str, Specialist | None], *,
                 unavailable: Mapping[str, str] | None = None, clock: Clock | None = None,
                 timeout_ms: float = 250.0, cache_ttl_seconds: float = 0.0) -> None:
        unknown = sorted(set(specialists) - set(config.models))
        if unknown:
            raise ValueError(f"specialists {unknown} are not in ensemble.models {sorted(config.models)}")
        self.config = config
        self.names: tuple[str, ...] = tuple(config.models)
        self.specialists: dict[str, Specialist | None] = {n: specialists.get(n) for n in self.names}
        self.unavailable = {n: (dict(unavailable or {}).get(n) or "not loaded")
                            for n in self.names if self.specialists[n] is None}
        self.clock: Clock = clock or SystemClock()
        self.timeout_s = timeout_ms / 1000.0
        self.cache_ttl = cache_ttl_seconds
        self._cache: OrderedDict[tuple, tuple[float, float, float]] = OrderedDict()
        self.base_weights = np.array([config.models[n].weight for n in self.names], dtype=np.float64)
        self.specializations = tuple(config.models[n].specialization for n in self.names)
        self._base_list = self.base_weights.tolist()
        self._regime_cache: dict[tuple[str | None, float], list[float]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: L2Config, *, root: str | Path = PACKAGE_ROOT,
                    manifest: str | Path | None = None, clock: Clock | None = None,
                    loader: Callable[..., Any] | None = None) -> EnsembleManager:
        """Load every ``ensemble.models`` entry through the safe loader; a failure leaves it unavailable."""
        if loader is None:
            from l2_tactical.finrl_models.model_loader import load_model

            loader = load_model
        root = Path(root)
        specialists: dict[str, Specialist | None] = {}
        reasons: dict[str, str] = {}
        for name, entry in config.ensemble.models.items():
            path = Path(entry.path) if Path(entry.path).is_absolute() else root / entry.path
            pin = Path(manifest) if manifest is not None else path.parent / "manifest.json"
            try:
                loaded = loader(path, manifest=pin)
                specialists[name] = specialist_from_loaded(name, entry.specialization, loaded)
            except (L2Error, OSError, ValueError) as exc:
                specialists[name] = None
                reasons[name] = ("missing: " if not path.exists() else "refused: ") + str(exc)
        return cls(config.ensemble, specialists, unavailable=reasons, clock=clock,
                   timeout_ms=config.ai_model.timeout_ms,
                   cache_ttl_seconds=config.ai_model.cache_ttl_seconds if config.ai_model.cache_predictions else 0.0)

    @property
    def available(self) -> tuple[Specialist, ...]:
        return tuple(s for s in self.specialists.values() if s is not None)

    def new_tracker(self) -> PerformanceTracker:
        return PerformanceTracker(self.names, self.config.performance_window)

    # ------------------------------------------------------------------ weights
    def weights(self, tracker: PerformanceTracker | None = None, regime: str | None = None,
                strength: float = 1.0) -> np.ndarray:
        """Effective weight per configured specialist (sums to 1; see ensemble.performance)."""
        return np.array(self._weights_list(tracker, regime, strength), dtype=np.float64)

    def _weights_list(self, tracker: PerformanceTracker | None, regime: str | None, strength: float
                      ) -> list[float]:
        """:meth:`weights` as a plain list (the per-bar path: no array built and unpacked again)."""
        scores = tracker.scores() if tracker is not None else {}
        s = [scores.get(n, 0.0) for n in self.names]
        key = (regime, strength)
        g = self._regime_cache.get(key)
        if g is None:
            g = self._regime_cache[key] = regime_multipliers(self.specializations, regime,
                                                             boost=self.config.regime_boost, strength=strength).tolist()
        return adaptive_weights_list(self._base_list, s, g, sensitivity=self.config.performance_sensitivity,
                                     min_weight=self.config.min_weight)

    # ------------------------------------------------------------------ inference
    def ask(self, name: str, obs: np.ndarray | None, key: tuple | None = None) -> SpecialistVote:
        """One specialist's answer, or why there is none."""
        status, exposure, confidence, detail = self._answer(name, obs, key)
        return SpecialistVote(name, status, exposure, confidence, detail=detail)

    def _answer(self, name: str, obs: np.ndarray | None, key: tuple | None) -> Answer:
        """:meth:`ask` as ``(status, exposure, confidence, detail)``."""
        spec = self.specialists.get(name)
        if spec is None:
            return "missing", 0.0, 0.0, self.unavailable.get(name, "not loaded")
        if obs is None:
            return "missing", 0.0, 0.0, "no observation (features warming up)"
        monotonic = self.clock.monotonic
        now = monotonic()
        cached = key is not None and self.cache_ttl > 0
        if cached:
            hit = self._cache.get((name, *key))  # type: ignore[misc]
            if hit is not None and hit[2] > now:
                return "cached", hit[0], hit[1], ""
        try:
            exposure, confidence = spec.act(obs)
        except Exception as exc:  # a broken model must not stop the others
            return "error", 0.0, 0.0, f"{type(exc).__name__}: {exc}"
        elapsed = monotonic() - now
        if elapsed > self.timeout_s:
            return "timeout", 0.0, 0.0, (f"answered in {elapsed * 1000:.1f} ms > "
                                         f"timeout {self.timeout_s * 1000:.1f} ms")
        if cached:
            self._remember((name, *key), exposure, confidence, now + self.cache_ttl)  # type: ignore[misc]
        return "ok", exposure, confidence, ""

    def _remember(self, key: tuple, exposure: float, confidence: float, expires: float) -> None:
        self._cache[key] = (exposure, confidence, expires)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def predict(self, observations: Mapping[str, np.ndarray | None], *, tracker: PerformanceTracker | None = None,
                regime: str | None = None, strength: float = 1.0, key: tuple | None = None) -> EnsembleDecision:
        """Ask every configured specialist and vote (see the module docstring)."""
        answer, get = self._answer, observations.get
        answers = [(n, *answer(n, get(n), key)) for n in self.names]
        return self._combine(answers, self._weights_list(tracker, regime, strength))

    def vote(self, answers: Sequence[SpecialistVote], weights: np.ndarray | Sequence[float]) -> EnsembleDecision:
        """Combine answers (in ``self.names`` order) with effective ``weights`` (plain Python: a handful of voters)."""
        ws = weights.tolist() if isinstance(weights, np.ndarray) else [float(x) for x in weights]
        return self._combine([(a.name, a.status, a.exposure, a.confidence, a.detail) for a in answers], ws)

    def _combine(self, answers: Sequence[tuple[str, str, float, float, str]], ws: list[float]) -> EnsembleDecision:
        """:meth:`vote` on ``(name, status, exposure, confidence, detail)`` answers and plain weights."""
        votes: list[SpecialistVote] = []
        e: list[float] = []
        c: list[float] = []
        w: list[float] = []
        degraded: list[str] = []
        for (name, status, exposure, confidence, detail), wa in zip(answers, ws, strict=True):
            votes.append(_new_vote(name, status, exposure, confidence, wa, detail))
            if status in _ANSWERED:
                e.append(exposure)
                c.append(confidence)
                w.append(wa)
            else:
                degraded.append(f"{name}: {status} ({detail})")
        voting = self.config.voting
        if not e:
            return EnsembleDecision(0.0, 0.0, 0.0, 0.0, voting, tuple(votes), tuple(degraded))
        cons, cover, conf = consensus_and_confidence(e, c, w, ws, voting)
        return _new_decision(cons.exposure, conf, cons.consensus, cover, voting, tuple(votes), tuple(degraded))
