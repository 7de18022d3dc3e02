"""The loader refuses untrusted model files before interpreting a byte of them.

Every refusal is a ModelIntegrityError; a pickle payload that would create a sentinel file is
refused and the file never appears (and a positive control proves the payload really works).
"""

from __future__ import annotations

import base64
import json
import pickle
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from l2_tactical.errors import ModelIntegrityError
from l2_tactical.finrl_models.model_card import file_sha256, update_manifest
from l2_tactical.finrl_models.model_loader import load_model
from tests.test_model_loader import FEATURES, MomentumModel, publish, train_tiny, write_bundle


class WritesSentinel:
    """Unpickling this object opens ``path`` for writing, creating the file: the attack we refuse."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    pytest.importorskip("torch").set_num_threads(1)


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    return tmp_path / "pwned.txt"


@pytest.fixture(scope="module")
def a2c_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Bytes of a genuinely trained SB3 A2C zip."""
    path = tmp_path_factory.mktemp("a2c") / "agent.zip"
    train_tiny("A2C", path, steps=32)
    return path.read_bytes()


def test_sentinel_payload_really_writes_the_file_when_unpickled(sentinel: Path) -> None:
    """Positive control: without the loader's checks the payload does its damage."""
    handle = pickle.loads(pickle.dumps(WritesSentinel(sentinel)))
    handle.close()
    assert sentinel.exists()


# -- hashes -------------------------------------------------------------------------------------------


def test_load_model_refuses_tampered_zip_naming_file_and_both_hashes(tmp_path: Path, a2c_zip: bytes) -> None:
    path = tmp_path / "trend.zip"
    path.write_bytes(a2c_zip)
    manifest = publish(path, algorithm="A2C")
    pinned = file_sha256(path)
    tampered = bytearray(a2c_zip)
    tampered[len(tampered) // 2] ^= 0x01
    path.write_bytes(bytes(tampered))

    with pytest.raises(ModelIntegrityError) as err:
        load_model(path, manifest=manifest)
    message = str(err.value)
    assert "trend.zip" in message and "sha256 mismatch" in message
    assert pinned in message and file_sha256(path) in message


def test_load_model_refuses_hash_not_in_allow_list(tmp_path: Path, a2c_zip: bytes) -> None:
    path = tmp_path / "agent.zip"
    path.write_bytes(a2c_zip)
    with pytest.raises(ModelIntegrityError, match=f"sha256 {file_sha256(path)} is not in the allow-list"):
        load_model(path, manifest=None, allowed_sha256=["0" * 64])


def test_load_model_refuses_file_missing_from_manifest(tmp_path: Path, a2c_zip: bytes) -> None:
    (tmp_path / "other.zip").write_bytes(b"other")
    update_manifest(tmp_path / "manifest.json", tmp_path / "other.zip")
    (tmp_path / "agent.zip").write_bytes(a2c_zip)
    with pytest.raises(ModelIntegrityError, match=r"agent\.zip: not listed in manifest"):
        load_model(tmp_path / "agent.zip", manifest=tmp_path / "manifest.json")


def test_load_model_refuses_when_default_manifest_is_absent(tmp_path: Path, monkeypatch, a2c_zip: bytes) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agent.zip").write_bytes(a2c_zip)
    with pytest.raises(ModelIntegrityError, match=r"manifest saved_models/manifest\.json does not exist"):
        load_model(tmp_path / "agent.zip")


# -- pickle payloads ----------------------------------------------------------------------------------


def evil_bundle(tmp_path: Path, sentinel: Path, features=FEATURES) -> Path:
    return write_bundle(
        tmp_path / "evil.zip",
        {
            "model.pkl": pickle.dumps(WritesSentinel(sentinel)),
            "feature_names.json": json.dumps(list(features)).encode(),
        },
    )


def test_pickle_payload_in_bundle_is_refused_and_never_runs(tmp_path: Path, sentinel: Path) -> None:
    path = evil_bundle(tmp_path, sentinel)
    with pytest.raises(ModelIntegrityError, match="not in the allow-list"):
        load_model(path, manifest=None)
    assert not sentinel.exists()


def test_pickle_payload_as_pkl_dict_is_refused_and_never_runs(tmp_path: Path, sentinel: Path) -> None:
    path = tmp_path / "trend_agent_v2.pkl"
    path.write_bytes(pickle.dumps({"model": WritesSentinel(sentinel), "feature_names": list(FEATURES)}))
    (tmp_path / "benign.pkl").write_bytes(pickle.dumps({"model": None, "feature_names": []}))
    update_manifest(tmp_path / "manifest.json", tmp_path / "benign.pkl")
    with pytest.raises(ModelIntegrityError, match="not listed in manifest"):
        load_model(path, manifest=tmp_path / "manifest.json")
    assert not sentinel.exists()


def test_pickle_payload_swapped_in_after_pinning_is_refused(tmp_path: Path, sentinel: Path) -> None:
    path = tmp_path / "agent.pkl"
    path.write_bytes(pickle.dumps({"model": MomentumModel([1.0, 0.0, 0.0]), "feature_names": list(FEATURES)}))
    update_manifest(tmp_path / "manifest.json", path)
    path.write_bytes(pickle.dumps({"model": WritesSentinel(sentinel), "feature_names": list(FEATURES)}))
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch"):
        load_model(path, manifest=tmp_path / "manifest.json")
    assert not sentinel.exists()


def test_pickle_payload_in_sb3_data_json_is_refused_and_never_runs(tmp_path: Path, sentinel: Path, a2c_zip) -> None:
    """SB3 keeps cloudpickled objects in its 'data' member; an unpinned zip never reaches them."""
    src = tmp_path / "src.zip"
    src.write_bytes(a2c_zip)
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(members["data"])
    data["policy_class"][":serialized:"] = base64.b64encode(pickle.dumps(WritesSentinel(sentinel))).decode()
    members["data"] = json.dumps(data).encode()
    path = write_bundle(tmp_path / "agent.zip", members)
    with pytest.raises(ModelIntegrityError, match="not in the allow-list"):
        load_model(path, manifest=None)
    assert not sentinel.exists()


def test_feature_mismatch_is_refused_before_unpickling_even_when_hash_allowed(tmp_path: Path, sentinel: Path) -> None:
    path = evil_bundle(tmp_path, sentinel, features=("ret_1", "ret_4", "rsi_14"))
    with pytest.raises(ModelIntegrityError, match=r"missing features \['ret_24'\], extra features \['rsi_14'\]"):
        load_model(path, manifest=None, allowed_sha256=[file_sha256(path)], expected_features=FEATURES)
    assert not sentinel.exists()


# -- FeatureSet -----------------------------------------------------------------------------------------


def test_load_model_refuses_wrong_featureset_naming_missing_and_extra(tmp_path: Path, a2c_zip: bytes) -> None:
    path = tmp_path / "trend.zip"
    path.write_bytes(a2c_zip)
    manifest = publish(path, algorithm="A2C", features=("ema_slope_24", "macd_hist", "adx_14"))
    with pytest.raises(ModelIntegrityError) as err:
        load_model(path, manifest=manifest, expected_features=("ema_slope_24", "macd_hist", "rsi_14", "atr_14"))
    message = str(err.value)
    assert "trend.zip" in message
    assert "missing features ['rsi_14', 'atr_14']" in message and "extra features ['adx_14']" in message


def test_load_model_refuses_model_trained_on_another_featureset_preset(tmp_path: Path, a2c_zip: bytes) -> None:
    from l2_tactical.data.features import feature_set

    trained, wanted = feature_set("trend", "1h"), feature_set("mean_reversion", "1h")
    path = tmp_path / "trend.zip"
    path.write_bytes(a2c_zip)
    manifest = publish(path, algorithm="A2C", features=trained.names, schema_hash=trained.schema_hash)
    missing, extra = wanted.compare(trained.names)
    assert missing and extra  # the presets really differ

    with pytest.raises(ModelIntegrityError) as err:
        load_model(path, manifest=manifest, expected_features=wanted.names, expected_feature_hash=wanted.schema_hash)
    assert f"missing features {missing}, extra features {extra}" in str(err.value)
    same = load_model(
        path, manifest=manifest, expected_features=trained.names, expected_feature_hash=trained.schema_hash
    )
    assert same.feature_names == trained.names


def test_load_model_refuses_featureset_in_another_order(tmp_path: Path, a2c_zip: bytes) -> None:
    path = tmp_path / "trend.zip"
    path.write_bytes(a2c_zip)
    manifest = publish(path, algorithm="A2C")
    with pytest.raises(ModelIntegrityError, match="FeatureSet mismatch: order differs"):
        load_model(path, manifest=manifest, expected_features=tuple(reversed(FEATURES)))


def test_load_model_refuses_featureset_schema_hash_mismatch(tmp_path: Path, a2c_zip: bytes) -> None:
    path = tmp_path / "trend.zip"
    path.write_bytes(a2c_zip)
    manifest = publish(path, algorithm="A2C", schema_hash="abc123")
    with pytest.raises(ModelIntegrityError, match="schema hash mismatch: expected def456, model has abc123"):
        load_model(path, manifest=manifest, expected_feature_hash="def456")


def test_load_model_refuses_feature_check_when_model_records_no_features(tmp_path: Path, a2c_zip: bytes) -> None:
    path = tmp_path / "agent.zip"
    path.write_bytes(a2c_zip)
    with pytest.raises(ModelIntegrityError, match="records no feature names"):
        load_model(path, manifest=None, allowed_sha256=[file_sha256(path)], expected_features=FEATURES)


# -- zip structure (all these files are hash-allowed: the member checks are the only gate) -------------


def load_allowed(path: Path):  # type: ignore[no-untyped-def]
    return load_model(path, manifest=None, allowed_sha256=[file_sha256(path)])


@pytest.mark.parametrize("name", ["../evil", "sub/../../evil", "/etc/evil", "C:/evil", "..\\evil"])
def test_zip_path_traversal_member_is_refused(tmp_path: Path, name: str) -> None:
    path = write_bundle(tmp_path / "m.zip", {"model.pkl": pickle.dumps(1), name: b"x"})
    with pytest.raises(ModelIntegrityError, match="unsafe zip member path"):
        load_allowed(path)


def test_zip_symlink_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.pkl", pickle.dumps(1))
        link = zipfile.ZipInfo("feature_names.json")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(ModelIntegrityError, match="is a symbolic link"):
        load_allowed(path)


def patch_declared_size(data: bytes, size: int) -> bytes:
    """Rewrite every local and central header's uncompressed size: a zip that claims to be huge."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = out.find(signature)
        while start != -1:
            out[start + offset : start + offset + 4] = struct.pack("<I", size)
            start = out.find(signature, start + 4)
    return bytes(out)


def test_zip_bomb_with_huge_declared_size_is_refused(tmp_path: Path) -> None:
    src = write_bundle(tmp_path / "src.zip", {"model.pkl": pickle.dumps(MomentumModel([1.0]))})
    path = tmp_path / "bomb.zip"
    path.write_bytes(patch_declared_size(src.read_bytes(), 0x7FFF0000))
    with zipfile.ZipFile(path) as archive:  # the header really claims ~2 GiB
        assert archive.getinfo("model.pkl").file_size == 0x7FFF0000
    with pytest.raises(ModelIntegrityError, match="declares 2147418112 bytes"):
        load_allowed(path)


def test_zip_bomb_with_extreme_compression_ratio_is_refused(tmp_path: Path) -> None:
    path = write_bundle(tmp_path / "bomb.zip", {"model.pkl": pickle.dumps(1), "metadata.json": b" " * (32 << 20)})
    with pytest.raises(ModelIntegrityError, match="looks like a zip bomb"):
        load_allowed(path)


def test_zip_with_too_many_members_is_refused(tmp_path: Path) -> None:
    members = {"model.pkl": pickle.dumps(1)} | {f"w{i}.pth": b"" for i in range(100)}
    with pytest.raises(ModelIntegrityError, match="101 zip members, more than the limit 64"):
        load_allowed(write_bundle(tmp_path / "m.zip", members))


def test_zip_with_duplicate_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("model.pkl", pickle.dumps(1))
        archive.writestr("model.pkl", pickle.dumps(2))
    with pytest.raises(ModelIntegrityError, match="duplicate zip member 'model.pkl'"):
        load_allowed(path)


def test_sb3_zip_with_unexpected_member_is_refused(tmp_path: Path, a2c_zip: bytes) -> None:
    path = tmp_path / "agent.zip"
    path.write_bytes(a2c_zip)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("sitecustomize.py", "import os")
    with pytest.raises(ModelIntegrityError, match=r"unexpected member\(s\) \['sitecustomize.py'\] in a sb3 zip"):
        load_allowed(path)


def test_zip_of_unknown_layout_is_refused(tmp_path: Path) -> None:
    path = write_bundle(tmp_path / "m.zip", {"weights.bin": b"\x00" * 16})
    with pytest.raises(ModelIntegrityError, match="neither an SB3 model"):
        load_allowed(path)


def test_file_of_unknown_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(pickle.dumps(1))
    with pytest.raises(ModelIntegrityError, match=r"neither a zip nor a \.pkl file"):
        load_allowed(path)


def test_missing_model_file_is_an_integrity_error(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="model file not found"):
        load_model(tmp_path / "nope.zip", manifest=None)
