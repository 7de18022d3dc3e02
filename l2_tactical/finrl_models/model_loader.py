"""Safe, hash-pinned loading of trained models.

Order of operations in :func:`load_model` (each step refuses with :class:`ModelIntegrityError`):

1. Read the file once, streaming it through sha256 into memory (bounded size), and compare the
   digest with the manifest entry for the file's name or with an explicit allow-list. Until this
   passes, no byte of the model is interpreted: no zip parsing, no JSON, no unpickling. Every
   later step works on the bytes that were hashed, so the file cannot change underneath
   (:func:`~l2_tactical.finrl_models.model_manifest.read_pinned`).
2. For zips: check every member (no absolute paths, no ``..``, no symlinks, no duplicates,
   bounded count, declared size and compression ratio) and the member names of the format
   (:mod:`l2_tactical.finrl_models.model_archive`; its limits are importable from here too).
3. Read the model card (``<name>.json`` beside the model; plain JSON) and check it describes these
   bytes; check the FeatureSet (card, or the bundle's ``feature_names.json``) against the expected
   names / schema hash, naming the missing and extra features.
4. Only then deserialise: stable-baselines3 ``ALGO.load(..., device="cpu")`` (its ``data`` member
   holds cloudpickled objects; SB3 2.9.2 reads ``*.pth`` with ``torch.load(weights_only=True)``),
   or pickle/joblib for seed 000's sklearn bundle and seed 001's ``.pkl`` dict.

Formats: ``"sb3"`` (PPO/A2C/SAC/DQN/TD3/DDPG zips, including FinRL ``DRLAgent`` saves, which are
plain SB3 zips), ``"sklearn_bundle"`` (zip with model.pkl, optional preprocessor.pkl,
feature_names.json, metadata.json) and ``"pkl_dict"`` (pickled dict with model, scaler,
feature_names, action_space, specialization, performance_metrics, training_config).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from l2_tactical.errors import ModelIntegrityError
from l2_tactical.finrl_models.model_archive import (
    MAX_MEMBERS,
    MAX_RATIO,
    MAX_TOTAL_UNCOMPRESSED,
    ModelKind,
    inspect_format,
    read_json_member,
    read_member,
    sb3_algorithm,
)
from l2_tactical.finrl_models.model_card import card_path_for, read_card
from l2_tactical.finrl_models.model_manifest import read_pinned

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_MEMBERS",
    "MAX_RATIO",
    "MAX_TOTAL_UNCOMPRESSED",
    "SB3_ALGORITHMS",
    "LoadedModel",
    "ModelKind",
    "check_features",
    "load_model",
]

MAX_FILE_BYTES = 256 << 20
SB3_ALGORITHMS = ("A2C", "DDPG", "DQN", "PPO", "SAC", "TD3")
_PKL_DICT_KEYS = frozenset({"model", "feature_names"})


@dataclass(frozen=True, slots=True)
class _Verified:
    """What the checks established before any deserialisation."""

    path: Path
    payload: bytes
    digest: str
    card: dict[str, Any] | None
    members: Mapping[str, zipfile.ZipInfo]
    expected_hash: str | None
    expected_features: Sequence[str] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedModel:
    """A model that passed every check. ``model`` is the SB3 algorithm, sklearn estimator or dict's model."""

    path: Path
    kind: ModelKind
    algorithm: str
    model: Any
    feature_names: tuple[str, ...]
    feature_schema_hash: str | None
    card: Mapping[str, Any]
    sha256: str
    preprocessor: Any = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def policy(self) -> Any:
        """The SB3 policy network for ``"sb3"``, otherwise the model itself."""
        return self.model.policy if self.kind == "sb3" else self.model

    def predict(self, obs: Any) -> tuple[np.ndarray, float]:
        """Deterministic action and a confidence in [0, 1] (``nan`` when the model gives none).

        SB3: discrete -> probability of the chosen action; continuous -> 1 / (1 + mean std) of the
        policy's Gaussian. sklearn/pkl: max class probability when ``predict_proba`` exists.
        """
        if self.kind == "sb3":
            return _predict_sb3(self.model, obs)
        x = np.asarray(obs, dtype=np.float64)
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if self.preprocessor is not None:
            x = self.preprocessor.transform(x)
        out = self.model.predict(x)
        action = np.asarray(out[0] if isinstance(out, tuple) else out)
        confidence = float("nan")
        if hasattr(self.model, "predict_proba"):
            confidence = float(np.max(self.model.predict_proba(x), axis=-1).mean())
        return action, confidence


def load_model(
    path: str | Path,
    *,
    manifest: str | Path | None = "saved_models/manifest.json",
    allowed_sha256: Collection[str] = (),
    expected_feature_hash: str | None = None,
    expected_features: Sequence[str] | None = None,
) -> LoadedModel:
    """Verify and load a model file; see the module docstring for the checks and their order."""
    path = Path(path)
    payload, digest = read_pinned(path, manifest=manifest, allowed_sha256=allowed_sha256, max_bytes=MAX_FILE_BYTES)
    kind, members = inspect_format(path, payload)
    card_file = card_path_for(path)
    card = read_card(card_file).to_dict() if card_file.is_file() else None
    if card is not None and card["sha256"] != digest:
        raise ModelIntegrityError(f"{card_file}: card describes sha256 {card['sha256']} but {path} has sha256 {digest}")
    verified = _Verified(path, payload, digest, card, members, expected_feature_hash, expected_features)
    loaders = {"sb3": _load_sb3, "sklearn_bundle": _load_bundle, "pkl_dict": _load_pkl_dict}
    return loaders[kind](verified)


# -- step 3: FeatureSet -------------------------------------------------------------------------


def check_features(
    path: Path,
    names: Sequence[str] | None,
    schema_hash: str | None,
    expected_features: Sequence[str] | None,
    expected_hash: str | None,
) -> None:
    """Refuse a model whose feature names or schema hash differ from what the caller computes."""
    if expected_features is not None:
        if names is None:
            raise ModelIntegrityError(f"{path}: model records no feature names; cannot check the FeatureSet")
        expected, actual = list(expected_features), list(names)
        if expected != actual:
            missing = [n for n in expected if n not in actual]
            extra = [n for n in actual if n not in expected]
            detail = f"missing features {missing}, extra features {extra}" if missing or extra else "order differs"
            raise ModelIntegrityError(f"{path}: FeatureSet mismatch: {detail} (model has {len(actual)} features)")
    if expected_hash is not None and schema_hash != expected_hash:
        raise ModelIntegrityError(
            f"{path}: FeatureSet schema hash mismatch: expected {expected_hash}, model has {schema_hash}; "
            f"model features: {list(names) if names is not None else 'unknown'}"
        )


def _card_features(card: Mapping[str, Any] | None) -> tuple[tuple[str, ...] | None, str | None]:
    if card is None:
        return None, None
    return tuple(card["feature_names"]), card["feature_schema_hash"]


# -- step 4: deserialise ------------------------------------------------------------------------


def _load_sb3(v: _Verified) -> LoadedModel:
    path, payload, card, members = v.path, v.payload, v.card, v.members
    names, schema_hash = _card_features(card)
    check_features(path, names, schema_hash, v.expected_features, v.expected_hash)
    inferred = sb3_algorithm(path, payload, members)
    algorithm = str(card["algorithm"]).upper() if card is not None else inferred
    if algorithm is None:
        raise ModelIntegrityError(f"{path}: cannot tell the SB3 algorithm (no model card, unknown policy class)")
    if inferred is not None and card is not None and inferred != algorithm:
        raise ModelIntegrityError(f"{path}: card says {algorithm} but the zip holds a {inferred} model")
    if algorithm not in SB3_ALGORITHMS:
        raise ModelIntegrityError(f"{path}: algorithm {algorithm!r} is not one of {list(SB3_ALGORITHMS)}")
    import stable_baselines3

    algo_cls = getattr(stable_baselines3, algorithm)
    try:
        model = algo_cls.load(io.BytesIO(payload), device="cpu")
    except Exception as exc:  # SB3 raises many types on a corrupt but hash-allowed file
        raise ModelIntegrityError(f"{path}: stable-baselines3 could not load the {algorithm} model: {exc}") from exc
    return LoadedModel(
        path=path,
        kind="sb3",
        algorithm=algorithm,
        model=model,
        feature_names=names or (),
        feature_schema_hash=schema_hash,
        card=_frozen(card),
        sha256=v.digest,
    )


def _unpickle(path: Path, data: bytes, what: str) -> Any:
    """Deserialise hash-allowed pickle bytes (joblib when available: it reads plain pickles too)."""
    try:
        import joblib

        return joblib.load(io.BytesIO(data))
    except ImportError:
        import pickle

        return pickle.loads(data)
    except Exception as exc:
        raise ModelIntegrityError(f"{path}: could not unpickle {what}: {exc}") from exc


def _load_bundle(v: _Verified) -> LoadedModel:
    path, payload, card, members = v.path, v.payload, v.card, v.members
    names, schema_hash = _card_features(card)
    metadata: dict[str, Any] = {}
    if "metadata.json" in members:
        metadata = read_json_member(path, payload, members["metadata.json"])
        if not isinstance(metadata, dict):
            raise ModelIntegrityError(f"{path}: metadata.json must be a JSON object")
        schema_hash = schema_hash or metadata.get("feature_schema_hash")
    if "feature_names.json" in members:
        listed = read_json_member(path, payload, members["feature_names.json"])
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise ModelIntegrityError(f"{path}: feature_names.json must be a list of strings")
        if names is not None and tuple(listed) != names:
            raise ModelIntegrityError(f"{path}: feature_names.json disagrees with the model card")
        names = tuple(listed)
    check_features(path, names, schema_hash, v.expected_features, v.expected_hash)
    model = _unpickle(path, read_member(path, payload, members["model.pkl"]), "model.pkl")
    pre = None
    if "preprocessor.pkl" in members:
        pre = _unpickle(path, read_member(path, payload, members["preprocessor.pkl"]), "preprocessor.pkl")
    algorithm = str(metadata.get("model_type") or (card or {}).get("algorithm") or type(model).__name__)
    return LoadedModel(
        path=path,
        kind="sklearn_bundle",
        algorithm=algorithm,
        model=model,
        feature_names=names or (),
        feature_schema_hash=schema_hash,
        card=_frozen(card),
        sha256=v.digest,
        preprocessor=pre,
        metadata=_frozen(metadata),
    )


def _load_pkl_dict(v: _Verified) -> LoadedModel:
    path, payload, card = v.path, v.payload, v.card
    if card is not None:  # check what the card says before unpickling
        check_features(path, *_card_features(card), v.expected_features, v.expected_hash)
    obj = _unpickle(path, payload, "the model dict")
    if not isinstance(obj, dict) or not set(obj) >= _PKL_DICT_KEYS:
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ModelIntegrityError(f"{path}: .pkl must hold a dict with keys {sorted(_PKL_DICT_KEYS)}; found {found}")
    names = tuple(str(n) for n in obj["feature_names"])
    config = obj.get("training_config") or {}
    schema_hash = (card or {}).get("feature_schema_hash") or (
        config.get("feature_schema_hash") if isinstance(config, dict) else None
    )
    check_features(path, names, schema_hash, v.expected_features, v.expected_hash)
    meta = {k: v for k, v in obj.items() if k not in ("model", "scaler")}
    algorithm = str((card or {}).get("algorithm") or type(obj["model"]).__name__)
    return LoadedModel(
        path=path,
        kind="pkl_dict",
        algorithm=algorithm,
        model=obj["model"],
        feature_names=names,
        feature_schema_hash=schema_hash,
        card=_frozen(card),
        sha256=v.digest,
        preprocessor=obj.get("scaler"),
        metadata=_frozen(meta),
    )


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def _predict_sb3(model: Any, obs: Any) -> tuple[np.ndarray, float]:
    import torch
    from gymnasium import spaces

    action, _ = model.predict(obs, deterministic=True)
    policy = model.policy
    with torch.no_grad():
        obs_tensor, _ = policy.obs_to_tensor(obs)
        if isinstance(model.action_space, spaces.Discrete) and hasattr(policy, "get_distribution"):
            probs = policy.get_distribution(obs_tensor).distribution.probs
            chosen = torch.as_tensor(np.asarray(action).reshape(-1), dtype=torch.long)
            return action, float(probs.gather(-1, chosen.reshape(-1, 1)).mean())
        if hasattr(policy, "get_distribution"):
            std = policy.get_distribution(obs_tensor).distribution.stddev
        elif hasattr(policy, "actor") and hasattr(policy.actor, "get_action_dist_params"):
            _, log_std, _ = policy.actor.get_action_dist_params(obs_tensor)
            std = log_std.exp()
        else:
            return action, float("nan")
    return action, float(1.0 / (1.0 + std.mean().item()))
