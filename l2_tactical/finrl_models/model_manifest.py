"""The shipped-model manifest and sha256 pinning: a model file is read only if its hash is pinned.

``saved_models/manifest.json`` pins every shipped model file to its sha256::

    {"schema": 1, "models": {"trend.zip": {"sha256": "<64 hex>", "bytes": 123456}}}

Keys are file names relative to the manifest's directory. :func:`read_manifest` returns
``{file_name: sha256}``; :func:`read_pinned` refuses a file whose name is listed with another
hash (or not listed and not allow-listed) before any byte of it is interpreted. Also here: the
plain-JSON file helpers that the manifest and the model cards
(:mod:`l2_tactical.finrl_models.model_card`) share.

Nothing here unpickles anything: the manifest is plain JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from l2_tactical.errors import ModelIntegrityError

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


# -- plain JSON files -----------------------------------------------------------------------------


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as sorted, indented JSON through a temporary file: a reader never sees half of it."""
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


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of ``path``; missing or invalid is a :class:`ModelIntegrityError` naming ``what``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelIntegrityError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(f"{path}: {what} is not valid JSON: {exc}") from None


# -- the manifest ---------------------------------------------------------------------------------


def _manifest_entries(path: Path) -> dict[str, dict[str, Any]]:
    data = read_json(path, "manifest")
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
    write_json_atomic(manifest_path, {"schema": MANIFEST_SCHEMA, "models": dict(sorted(models.items()))})
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
