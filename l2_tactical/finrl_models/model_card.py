"""Model cards and the shipped-model manifest.

A model card is a JSON file ``saved_models/<name>.json`` beside ``<name>.zip``. It says what the
model is (specialist, algorithm, env id and version), what it saw (FeatureSet schema hash and
feature names, data files with their sha256, train/validation/test periods), how it was made
(hyperparameters, seed) and how good it is (validation and test metrics after costs, next to
buy-and-hold on the same window), plus the sha256 of the model file it describes.

``saved_models/manifest.json`` pins every shipped model file to its sha256::

    {"schema": 1, "models": {"trend.zip": {"sha256": "<64 hex>", "bytes": 123456}}}

Keys are file names relative to the manifest's directory. :func:`read_manifest` returns
``{file_name: sha256}``; the loader refuses a file whose name is listed with another hash.

Nothing here unpickles anything: cards and the manifest are plain JSON.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import re
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from l2_tactical.errors import ModelIntegrityError

CARD_SCHEMA = 1
MANIFEST_SCHEMA = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def is_sha256(value: object) -> bool:
    """True for a lowercase 64-hex-digit digest.

    >>> is_sha256("a" * 64), is_sha256("A" * 64), is_sha256("abc")
    (True, False, False)
    """
    return isinstance(value, str) and bool(_SHA256.match(value))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def _atomic_write_json(path: Path, payload: Mapping[str, Any]) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelIntegrityError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(f"{path}: {what} is not valid JSON: {exc}") from None


def card_path_for(model_path: str | Path) -> Path:
    """``saved_models/trend.zip`` -> ``saved_models/trend.json``."""
    return Path(model_path).with_suffix(".json")


def write_card(path: str | Path, card: ModelCard) -> None:
    """Write ``card`` as sorted, indented JSON (atomically: a reader never sees half a card)."""
    if not isinstance(card, ModelCard):
        raise TypeError(f"card must be a ModelCard, got {type(card).__name__}")
    _atomic_write_json(Path(path), card.to_dict())


def read_card(path: str | Path) -> ModelCard:
    """Read and validate a card; a missing or invalid card is a :class:`ModelIntegrityError`."""
    path = Path(path)
    try:
        return ModelCard.from_dict(_read_json(path, "model card"))
    except ValueError as exc:
        raise ModelIntegrityError(f"{path}: invalid model card: {exc}") from None


def _manifest_entries(path: Path) -> dict[str, dict[str, Any]]:
    data = _read_json(path, "manifest")
    if not isinstance(data, dict) or set(data) != {"schema", "models"}:
        raise ModelIntegrityError(f"{path}: manifest must be an object with keys 'schema' and 'models'")
    if data["schema"] != MANIFEST_SCHEMA:
        raise ModelIntegrityError(f"{path}: manifest schema {data['schema']!r} is not supported")
    models = data["models"]
    if not isinstance(models, dict):
        raise ModelIntegrityError(f"{path}: manifest 'models' must be an object")
    for name, entry in models.items():
        if not isinstance(entry, dict) or not is_sha256(entry.get("sha256")):
            raise ModelIntegrityError(f"{path}: manifest entry {name!r} has no valid sha256: {entry!r}")
    return models


def read_manifest(path: str | Path) -> dict[str, str]:
    """``{model file name: sha256}`` of every model the manifest pins."""
    return {name: entry["sha256"] for name, entry in _manifest_entries(Path(path)).items()}


def update_manifest(manifest_path: str | Path, model_path: str | Path) -> str:
    """Pin ``model_path`` (by file name) to the sha256 of its current bytes; create the manifest if needed.

    Returns the sha256 written.
    """
    manifest_path, model_path = Path(manifest_path), Path(model_path)
    if not model_path.is_file():
        raise ModelIntegrityError(f"{model_path}: model file not found")
    models = _manifest_entries(manifest_path) if manifest_path.exists() else {}
    digest = file_sha256(model_path)
    models[model_path.name] = {"sha256": digest, "bytes": model_path.stat().st_size}
    _atomic_write_json(manifest_path, {"schema": MANIFEST_SCHEMA, "models": dict(sorted(models.items()))})
    return digest


# -- pinning: hash before anything ---------------------------------------------------------------


def read_pinned(
    path: str | Path,
    *,
    manifest: str | Path | None,
    allowed_sha256: Collection[str] = (),
    max_bytes: int = 256 << 20,
) -> tuple[bytes, str]:
    """Read a file once, hashing it as it streams in, and return ``(bytes, sha256)`` only if the
    digest is in ``allowed_sha256`` or the manifest pins the file's name to it.

    Nothing is interpreted before this passes; callers work on the returned bytes, so the file
    cannot change between the check and the load. Refusals are :class:`ModelIntegrityError`
    naming the file, the expected and the actual hash.
    """
    path = Path(path)
    payload, digest = _read_hashed(path, max_bytes)
    _check_allowed(path, digest, manifest, allowed_sha256)
    return payload, digest


def _read_hashed(path: Path, max_bytes: int) -> tuple[bytes, str]:
    digest, buffer, total = hashlib.sha256(), io.BytesIO(), 0
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                total += len(chunk)
                if total > max_bytes:
                    raise ModelIntegrityError(f"{path}: file is larger than {max_bytes} bytes; refused")
                digest.update(chunk)
                buffer.write(chunk)
    except FileNotFoundError:
        raise ModelIntegrityError(f"{path}: model file not found") from None
    except IsADirectoryError:
        raise ModelIntegrityError(f"{path}: is a directory, not a model file") from None
    return buffer.getvalue(), digest.hexdigest()


def _check_allowed(path: Path, digest: str, manifest: str | Path | None, allowed: Collection[str]) -> None:
    if isinstance(allowed, str):
        raise TypeError("allowed_sha256 must be a collection of digests, not a single string")
    if digest in {a.lower() for a in allowed}:
        return
    if manifest is None:
        raise ModelIntegrityError(
            f"{path}: sha256 {digest} is not in the allow-list and no manifest was given; refused before reading it"
        )
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ModelIntegrityError(
            f"{path}: sha256 {digest} is not in the allow-list and manifest {manifest} does not exist; refused"
        )
    expected = read_manifest(manifest).get(path.name)
    if expected is None:
        raise ModelIntegrityError(
            f"{path}: not listed in manifest {manifest} (actual sha256 {digest}); refused before reading it"
        )
    if expected != digest:
        raise ModelIntegrityError(
            f"{path}: sha256 mismatch: manifest {manifest} expects {expected}, actual {digest}; refused"
        )
