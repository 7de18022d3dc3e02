"""Model cards: what a saved model is, what it saw, how it was made and how good it is.

A model card is a JSON file ``saved_models/<name>.json`` beside ``<name>.zip``. It says what the
model is (specialist, algorithm, env id and version), what it saw (FeatureSet schema hash and
feature names, data files with their sha256, train/validation/test periods), how it was made
(hyperparameters, seed) and how good it is (validation and test metrics after costs, next to
buy-and-hold on the same window), plus the sha256 of the model file it describes.

The manifest that pins every shipped model file to its sha256, and the reading of a file only
once its hash is pinned, live in :mod:`l2_tactical.finrl_models.model_manifest`; their names
(``read_manifest``, ``update_manifest``, ``read_pinned``, ``file_sha256``, ``is_sha256``,
``MANIFEST_SCHEMA``) are importable from here too.

Nothing here unpickles anything: cards are plain JSON.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from l2_tactical.errors import ModelIntegrityError
from l2_tactical.finrl_models.model_manifest import (
    MANIFEST_SCHEMA,
    file_sha256,
    is_sha256,
    read_json,
    read_manifest,
    read_pinned,
    update_manifest,
    write_json_atomic,
)

__all__ = [
    "CARD_SCHEMA",
    "MANIFEST_SCHEMA",
    "DataFile",
    "Metrics",
    "ModelCard",
    "Period",
    "WindowMetrics",
    "card_path_for",
    "file_sha256",
    "is_sha256",
    "read_card",
    "read_manifest",
    "read_pinned",
    "update_manifest",
    "write_card",
]

CARD_SCHEMA = 1


def _check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected {sorted(names)}")


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Period:
    """A half-open time window [start, end) as ISO-8601 UTC strings."""

    start: str
    end: str

    def __post_init__(self) -> None:
        start, end = _parse_time("start", self.start), _parse_time("end", self.end)
        if start >= end:
            raise ValueError(f"period start must be before end, got start={self.start!r} end={self.end!r}")


def _parse_time(name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO-8601 string, got {value!r}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not an ISO-8601 time: {value!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics:
    """Performance after costs on one window. Drawdown and hit rate are fractions in [0, 1]."""

    total_return: float
    sharpe: float
    sortino: float
    max_drawdown: float
    hit_rate: float
    turnover: float

    def __post_init__(self) -> None:
        for f in fields(self):
            _finite(f.name, getattr(self, f.name))
        for name in ("max_drawdown", "hit_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.turnover < 0:
            raise ValueError(f"turnover must be >= 0, got {self.turnover!r}")
        if self.total_return < -1.0:
            raise ValueError(f"total_return must be >= -1, got {self.total_return!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowMetrics:
    """The agent's metrics next to buy-and-hold on the same window."""

    agent: Metrics
    buy_and_hold: Metrics


@dataclass(frozen=True, slots=True, kw_only=True)
class DataFile:
    """A training data file and the sha256 of its bytes."""

    path: str
    sha256: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"data file path must be a non-empty string, got {self.path!r}")
        if not is_sha256(self.sha256):
            raise ValueError(f"data file {self.path}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCard:
    """Everything needed to trust, reproduce and judge one saved model."""

    name: str
    specialist: str
    algorithm: str
    env_id: str
    env_version: str
    feature_schema_hash: str
    feature_names: tuple[str, ...]
    data_files: tuple[DataFile, ...]
    train: Period
    validation: Period
    test: Period
    hyperparameters: Mapping[str, Any]
    seed: int
    validation_metrics: WindowMetrics
    test_metrics: WindowMetrics
    model_file: str
    sha256: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    schema: int = CARD_SCHEMA

    def __post_init__(self) -> None:
        if self.schema != CARD_SCHEMA:
            raise ValueError(f"schema must be {CARD_SCHEMA}, got {self.schema!r}")
        for name in ("name", "specialist", "algorithm", "env_id", "env_version", "feature_schema_hash", "model_file"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if Path(self.model_file).name != self.model_file:
            raise ValueError(f"model_file must be a bare file name, got {self.model_file!r}")
        if not is_sha256(self.sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        _check_features(self.feature_names)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        _check_periods(self.train, self.validation, self.test)
        for name in ("hyperparameters", "extra"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ValueError(f"{name} must be a mapping, got {type(value).__name__}")
            try:
                json.dumps(dict(value), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name} must be JSON-serialisable: {exc}") from None
            object.__setattr__(self, name, MappingProxyType(dict(value)))
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "data_files", tuple(self.data_files))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; :meth:`from_dict` inverts it."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Build a card from a dict, rejecting unknown fields and other schema versions."""
        _check_keys(cls, data, "model card")
        if data.get("schema", CARD_SCHEMA) != CARD_SCHEMA:
            raise ValueError(f"model card schema {data.get('schema')!r} is not supported (expected {CARD_SCHEMA})")
        missing = sorted(f.name for f in fields(cls) if f.name not in data and f.name not in ("extra", "schema"))
        if missing:
            raise ValueError(f"model card: missing field(s) {missing}")
        kw = dict(data)
        for name in ("train", "validation", "test"):
            kw[name] = _build(Period, kw[name], name)
        for name in ("validation_metrics", "test_metrics"):
            _check_keys(WindowMetrics, kw[name], name)
            kw[name] = WindowMetrics(
                agent=_build(Metrics, kw[name].get("agent"), f"{name}.agent"),
                buy_and_hold=_build(Metrics, kw[name].get("buy_and_hold"), f"{name}.buy_and_hold"),
            )
        if not isinstance(kw["data_files"], list | tuple):
            raise ValueError(f"data_files must be a list, got {kw['data_files']!r}")
        kw["data_files"] = tuple(_build(DataFile, d, "data_files[]") for d in kw["data_files"])
        if not isinstance(kw["feature_names"], list | tuple):
            raise ValueError(f"feature_names must be a list, got {kw['feature_names']!r}")
        kw["feature_names"] = tuple(kw["feature_names"])
        return cls(**kw)


def _build(cls: type, data: Any, where: str) -> Any:
    _check_keys(cls, data, where)
    try:
        return cls(**data)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_features(names: object) -> None:
    if not isinstance(names, tuple | list) or not names:
        raise ValueError(f"feature_names must be a non-empty list, got {names!r}")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise ValueError(f"feature_names must be non-empty strings, got {bad!r}")
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ValueError(f"feature_names has duplicates: {dupes}")


def _check_periods(train: Period, validation: Period, test: Period) -> None:
    windows = (("train", train), ("validation", validation), ("test", test))
    for name, period in windows:
        if not isinstance(period, Period):
            raise ValueError(f"{name} must be a Period, got {period!r}")
    for (n1, p1), (n2, p2) in itertools.pairwise(windows):
        if _parse_time(f"{n1}.end", p1.end) > _parse_time(f"{n2}.start", p2.start):
            raise ValueError(f"{n1} must end before {n2} starts, got {n1}.end={p1.end!r} {n2}.start={p2.start!r}")


def _to_plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


def card_path_for(model_path: str | Path) -> Path:
    """``saved_models/trend.zip`` -> ``saved_models/trend.json``."""
    return Path(model_path).with_suffix(".json")


def write_card(path: str | Path, card: ModelCard) -> None:
    """Write ``card`` as sorted, indented JSON (atomically: a reader never sees half a card)."""
    if not isinstance(card, ModelCard):
        raise TypeError(f"card must be a ModelCard, got {type(card).__name__}")
    write_json_atomic(Path(path), card.to_dict())


def read_card(path: str | Path) -> ModelCard:
    """Read and validate a card; a missing or invalid card is a :class:`ModelIntegrityError`."""
    path = Path(path)
    try:
        return ModelCard.from_dict(read_json(path, "model card"))
    except ValueError as exc:
        raise ModelIntegrityError(f"{path}: invalid model card: {exc}") from None
