"""What a hash-pinned model file holds, read without deserialising anything.

Step 2 of :func:`l2_tactical.finrl_models.model_loader.load_model`: tell the format from the bytes
(a zip, or a ``.pkl`` by its name), check every zip member (no absolute paths, no ``..``, no
symlinks, no duplicates, bounded count, declared size and compression ratio) and the member names
of the format, read single members back with their declared size enforced, and infer an SB3
zip's algorithm from its ``data`` JSON. Everything here works on the bytes the loader hashed;
none of it parses a pickle.
"""

from __future__ import annotations

import io
import json
import re
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from l2_tactical.errors import ModelIntegrityError

ModelKind = Literal["sb3", "sklearn_bundle", "pkl_dict"]

MAX_MEMBERS = 64
MAX_TOTAL_UNCOMPRESSED = 512 << 20
MAX_RATIO = 200.0
_RATIO_MIN_BYTES = 1 << 20
_SB3_REQUIRED = frozenset({"data", "policy.pth"})
_SB3_OPTIONAL = frozenset({"_stable_baselines3_version", "system_info.txt"})
_PTH = re.compile(r"^[A-Za-z0-9_.\-]+\.pth$")
_BUNDLE_REQUIRED = frozenset({"model.pkl"})
_BUNDLE_OPTIONAL = frozenset({"preprocessor.pkl", "feature_names.json", "metadata.json"})


def inspect_format(path: Path, payload: bytes) -> tuple[ModelKind, dict[str, zipfile.ZipInfo]]:
    """The file's format and, for a zip, its checked members by name; refuses anything else."""
    if payload[:4] == b"PK\x03\x04" or zipfile.is_zipfile(io.BytesIO(payload)):
        return _inspect_zip(path, payload)
    if path.suffix.lower() == ".pkl":
        return "pkl_dict", {}
    raise ModelIntegrityError(f"{path}: neither a zip nor a .pkl file; cannot tell its format")


def _inspect_zip(path: Path, payload: bytes) -> tuple[ModelKind, dict[str, zipfile.ZipInfo]]:
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelIntegrityError(f"{path}: unreadable zip: {exc}") from None
    if len(infos) > MAX_MEMBERS:
        raise ModelIntegrityError(f"{path}: {len(infos)} zip members, more than the limit {MAX_MEMBERS}")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        _check_member(path, info)
        if info.filename in members:
            raise ModelIntegrityError(f"{path}: duplicate zip member {info.filename!r}")
        members[info.filename] = info
        total += info.file_size
    if total > MAX_TOTAL_UNCOMPRESSED:
        raise ModelIntegrityError(
            f"{path}: zip declares {total} uncompressed bytes, more than the limit {MAX_TOTAL_UNCOMPRESSED}"
        )
    return _zip_kind(path, set(members)), members


def _check_member(path: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name:
        raise ModelIntegrityError(f"{path}: unsafe zip member path {name!r} (absolute or path traversal)")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ModelIntegrityError(f"{path}: zip member {name!r} is a symbolic link")
    if info.file_size > MAX_TOTAL_UNCOMPRESSED:
        raise ModelIntegrityError(
            f"{path}: zip member {name!r} declares {info.file_size} bytes, more than the limit {MAX_TOTAL_UNCOMPRESSED}"
        )
    if info.file_size > _RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise ModelIntegrityError(
            f"{path}: zip member {name!r} expands {info.file_size} / {info.compress_size} bytes "
            f"(ratio above {MAX_RATIO:g}); looks like a zip bomb"
        )


def _zip_kind(path: Path, names: set[str]) -> ModelKind:
    if names >= _SB3_REQUIRED:
        unexpected = sorted(n for n in names - _SB3_REQUIRED - _SB3_OPTIONAL if not _PTH.match(n))
        kind: ModelKind = "sb3"
    elif names >= _BUNDLE_REQUIRED:
        unexpected = sorted(names - _BUNDLE_REQUIRED - _BUNDLE_OPTIONAL)
        kind = "sklearn_bundle"
    else:
        raise ModelIntegrityError(
            f"{path}: zip is neither an SB3 model (needs {sorted(_SB3_REQUIRED)}) nor a model bundle "
            f"(needs {sorted(_BUNDLE_REQUIRED)}); members: {sorted(names)}"
        )
    if unexpected:
        raise ModelIntegrityError(f"{path}: unexpected member(s) {unexpected} in a {kind} zip")
    return kind


def read_member(path: Path, payload: bytes, info: zipfile.ZipInfo) -> bytes:
    """One member's bytes, refused if their length differs from the size the zip declares."""
    with zipfile.ZipFile(io.BytesIO(payload)) as archive, archive.open(info) as handle:
        data = handle.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise ModelIntegrityError(f"{path}: zip member {info.filename!r} size differs from its declared size")
    return data


def read_json_member(path: Path, payload: bytes, info: zipfile.ZipInfo) -> Any:
    """One member parsed as UTF-8 JSON (never unpickled)."""
    try:
        return json.loads(read_member(path, payload, info).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(f"{path}: member {info.filename!r} is not valid JSON: {exc}") from None


def sb3_algorithm(path: Path, payload: bytes, members: Mapping[str, zipfile.ZipInfo]) -> str | None:
    """Infer the algorithm from the zip's ``data`` JSON without unpickling anything."""
    data = read_json_member(path, payload, members["data"])
    if not isinstance(data, dict):
        raise ModelIntegrityError(f"{path}: SB3 'data' member is not a JSON object")
    policy = data.get("policy_class")
    module = policy.get("__module__", "") if isinstance(policy, dict) else ""
    by_module = {"stable_baselines3.sac.": "SAC", "stable_baselines3.dqn.": "DQN"}
    for prefix, algo in by_module.items():
        if module.startswith(prefix):
            return algo
    if module.startswith("stable_baselines3.td3."):
        return "DDPG" if data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0.0 else "TD3"
    if module.startswith("stable_baselines3.common.policies"):
        return "PPO" if "clip_range" in data else "A2C"
    return None
