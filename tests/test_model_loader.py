"""The safe model loader round-trips every supported format, and model cards / the manifest are strict.

The SB3 tests train on Gymnasium's CartPole-v1 / Pendulum-v1: the real trading envs (L2Trend-v0 ...)
are written by another helper; the loader does not care which env made the zip. The sklearn and
.pkl-dict models are fitted on real BTCUSDT 1h candles.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from l2_tactical.data.candles import load_candles
from l2_tactical.errors import ModelIntegrityError
from l2_tactical.finrl_models.model_card import (
    DataFile,
    Metrics,
    ModelCard,
    Period,
    WindowMetrics,
    card_path_for,
    file_sha256,
    read_card,
    read_manifest,
    update_manifest,
    write_card,
)
from l2_tactical.finrl_models.model_loader import load_model

FEATURES = ("ret_1", "ret_4", "ret_24")
SCHEMA_HASH = "f" * 16
BTC_1H = Path(__file__).resolve().parent.parent / "data" / "BTCUSDT-1h.csv.gz"


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)


def make_card(model_path: Path, *, algorithm: str, features=FEATURES, schema_hash=SCHEMA_HASH) -> ModelCard:
    """A complete card for ``model_path`` as the training code would write it (metrics are inputs here)."""
    metrics = Metrics(total_return=0.05, sharpe=0.8, sortino=1.1, max_drawdown=0.12, hit_rate=0.52, turnover=3.5)
    hold = Metrics(total_return=0.09, sharpe=0.6, sortino=0.9, max_drawdown=0.3, hit_rate=0.5, turnover=0.0)
    return ModelCard(
        name=model_path.stem,
        specialist="trend",
        algorithm=algorithm,
        env_id="L2Trend-v0",
        env_version="0.1.0",
        feature_schema_hash=schema_hash,
        feature_names=tuple(features),
        data_files=(DataFile(path="data/BTCUSDT-1h.csv.gz", sha256=file_sha256(BTC_1H)),),
        train=Period(start="2018-01-01T00:00:00+00:00", end="2023-01-01T00:00:00+00:00"),
        validation=Period(start="2023-01-08T00:00:00+00:00", end="2024-01-01T00:00:00+00:00"),
        test=Period(start="2024-01-08T00:00:00+00:00", end="2025-09-01T00:00:00+00:00"),
        hyperparameters={"learning_rate": 3e-4, "net_arch": [32, 32]},
        seed=7,
        validation_metrics=WindowMetrics(agent=metrics, buy_and_hold=hold),
        test_metrics=WindowMetrics(agent=metrics, buy_and_hold=hold),
        model_file=model_path.name,
        sha256=file_sha256(model_path),
    )


def publish(model_path: Path, *, algorithm: str, **card_kw) -> Path:
    """Write the card beside the model and pin it in a manifest next to it; return the manifest path."""
    write_card(card_path_for(model_path), make_card(model_path, algorithm=algorithm, **card_kw))
    manifest = model_path.parent / "manifest.json"
    update_manifest(manifest, model_path)
    return manifest


# -- SB3: a tiny training run per algorithm -------------------------------------------------------

SB3_CASES = {
    "PPO": ("CartPole-v1", {"n_steps": 64, "batch_size": 32, "n_epochs": 2}),
    "A2C": ("CartPole-v1", {"n_steps": 8}),
    "SAC": ("Pendulum-v1", {"learning_starts": 50, "batch_size": 32}),
}


def train_tiny(algorithm: str, path: Path, steps: int = 300):
    import gymnasium as gym
    import stable_baselines3

    env_id, kwargs = SB3_CASES[algorithm]
    algo_cls = getattr(stable_baselines3, algorithm)
    model = algo_cls(
        "MlpPolicy", gym.make(env_id), seed=3, device="cpu", policy_kwargs={"net_arch": [32, 32]}, **kwargs
    )
    model.learn(total_timesteps=steps)
    model.save(path)
    return model, env_id


def sample_observations(env_id: str, n: int = 32) -> np.ndarray:
    import gymnasium as gym

    env = gym.make(env_id)
    return np.stack([env.reset(seed=i)[0] for i in range(n)])


@pytest.mark.parametrize("algorithm", sorted(SB3_CASES))
def test_load_model_sb3_round_trip_predicts_identically(tmp_path: Path, algorithm: str) -> None:
    model, env_id = train_tiny(algorithm, tmp_path / "agent.zip")
    manifest = publish(tmp_path / "agent.zip", algorithm=algorithm)

    loaded = load_model(
        tmp_path / "agent.zip", manifest=manifest, expected_features=FEATURES, expected_feature_hash=SCHEMA_HASH
    )

    obs = sample_observations(env_id)
    expected, _ = model.predict(obs, deterministic=True)
    action, confidence = loaded.predict(obs)
    np.testing.assert_array_equal(action, expected)
    assert loaded.kind == "sb3" and loaded.algorithm == algorithm
    assert type(loaded.model).__name__ == algorithm
    assert loaded.feature_names == FEATURES and loaded.feature_schema_hash == SCHEMA_HASH
    assert loaded.sha256 == file_sha256(tmp_path / "agent.zip") == loaded.card["sha256"]
    assert 0.0 < confidence <= 1.0
    single_action, single_confidence = loaded.predict(obs[0])
    np.testing.assert_array_equal(single_action, model.predict(obs[0], deterministic=True)[0])
    assert 0.0 < single_confidence <= 1.0
    assert loaded.policy is loaded.model.policy


@pytest.mark.parametrize("algorithm", ["A2C", "DDPG", "DQN", "PPO", "SAC", "TD3"])
def test_load_model_infers_sb3_algorithm_from_zip_json_without_card(tmp_path: Path, algorithm: str) -> None:
    import gymnasium as gym
    import stable_baselines3

    env_id = "CartPole-v1" if algorithm in ("A2C", "DQN", "PPO") else "Pendulum-v1"
    algo_cls = getattr(stable_baselines3, algorithm)
    algo_cls("MlpPolicy", gym.make(env_id), device="cpu", policy_kwargs={"net_arch": [8]}).save(tmp_path / "m.zip")

    loaded = load_model(tmp_path / "m.zip", manifest=None, allowed_sha256={file_sha256(tmp_path / "m.zip")})

    assert loaded.algorithm == algorithm
    assert type(loaded.model) is algo_cls
    assert loaded.card == {} and loaded.feature_names == ()


def test_load_model_refuses_card_whose_algorithm_disagrees_with_zip(tmp_path: Path) -> None:
    train_tiny("A2C", tmp_path / "agent.zip", steps=16)
    manifest = publish(tmp_path / "agent.zip", algorithm="SAC")
    with pytest.raises(ModelIntegrityError, match="card says SAC but the zip holds a A2C model"):
        load_model(tmp_path / "agent.zip", manifest=manifest)


def test_load_model_refuses_card_describing_other_bytes(tmp_path: Path) -> None:
    train_tiny("A2C", tmp_path / "agent.zip", steps=16)
    card = replace(make_card(tmp_path / "agent.zip", algorithm="A2C"), sha256="0" * 64)
    write_card(card_path_for(tmp_path / "agent.zip"), card)
    update_manifest(tmp_path / "manifest.json", tmp_path / "agent.zip")
    with pytest.raises(ModelIntegrityError, match="card describes sha256 0{64}"):
        load_model(tmp_path / "agent.zip", manifest=tmp_path / "manifest.json")


# -- seed 000 bundle and seed 001 .pkl dict, fitted on real candles --------------------------------


def real_features(n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Lagged log returns of real BTCUSDT 1h closes and the sign of the next return."""
    close = load_candles(BTC_1H).frame["close"].to_numpy()[-n:]
    logp = np.log(close)
    x = np.column_stack([logp[24:-1] - logp[23:-2], logp[24:-1] - logp[20:-5], logp[24:-1] - logp[:-25]])
    y = (logp[25:] > logp[24:-1]).astype(int)
    return x, y


class MomentumModel:
    """A tiny picklable model (no sklearn needed): long when the weighted returns are positive."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x) @ self.weights > 0).astype(int)


class MeanStdScaler:
    def fit(self, x: np.ndarray) -> MeanStdScaler:
        self.mean, self.std = x.mean(axis=0), x.std(axis=0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def write_bundle(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_load_model_sklearn_bundle_when_allow_listed(tmp_path: Path) -> None:
    sklearn_linear = pytest.importorskip("sklearn.linear_model", reason="scikit-learn is the optional sklearn extra")
    from sklearn.preprocessing import StandardScaler

    x, y = real_features()
    scaler = StandardScaler().fit(x)
    clf = sklearn_linear.LogisticRegression().fit(scaler.transform(x), y)
    metadata = {"version": "1.0.0", "model_type": "LogisticRegression", "feature_schema_hash": SCHEMA_HASH}
    path = write_bundle(
        tmp_path / "clf.zip",
        {
            "model.pkl": pickle.dumps(clf),
            "preprocessor.pkl": pickle.dumps(scaler),
            "feature_names.json": json.dumps(list(FEATURES)).encode(),
            "metadata.json": json.dumps(metadata).encode(),
        },
    )

    loaded = load_model(
        path,
        manifest=None,
        allowed_sha256=[file_sha256(path)],
        expected_features=FEATURES,
        expected_feature_hash=SCHEMA_HASH,
    )

    action, confidence = loaded.predict(x[-5:])
    np.testing.assert_array_equal(action, clf.predict(scaler.transform(x[-5:])))
    assert confidence == pytest.approx(clf.predict_proba(scaler.transform(x[-5:])).max(axis=1).mean())
    assert (loaded.kind, loaded.algorithm, loaded.feature_names) == ("sklearn_bundle", "LogisticRegression", FEATURES)
    assert loaded.metadata["version"] == "1.0.0"


def test_load_model_bundle_without_optional_members(tmp_path: Path) -> None:
    x, _ = real_features(500)
    model = MomentumModel([1.0, 0.5, 0.25])
    path = write_bundle(tmp_path / "plain.zip", {"model.pkl": pickle.dumps(model)})

    loaded = load_model(path, manifest=None, allowed_sha256=[file_sha256(path)])

    np.testing.assert_array_equal(loaded.predict(x)[0], model.predict(x))
    assert np.isnan(loaded.predict(x)[1])  # no predict_proba: confidence unknown, not invented
    assert loaded.algorithm == "MomentumModel" and loaded.preprocessor is None


def test_load_model_pkl_dict_when_allow_listed(tmp_path: Path) -> None:
    x, _ = real_features()
    scaler = MeanStdScaler().fit(x)
    bundle = {
        "model": MomentumModel([1.0, -0.5, 0.1]),
        "scaler": scaler,
        "feature_names": list(FEATURES),
        "action_space": 3,
        "specialization": "trend_following",
        "performance_metrics": {"sharpe_ratio": 0.4, "max_drawdown": 0.2, "win_rate": 0.51},
        "training_config": {"lookback_window": 24, "timeframes": ["1h"], "feature_schema_hash": SCHEMA_HASH},
    }
    path = tmp_path / "trend_agent_v2.pkl"
    path.write_bytes(pickle.dumps(bundle))
    manifest = tmp_path / "manifest.json"
    update_manifest(manifest, path)

    loaded = load_model(path, manifest=manifest, expected_features=FEATURES, expected_feature_hash=SCHEMA_HASH)

    np.testing.assert_array_equal(loaded.predict(x[-50:])[0], bundle["model"].predict(scaler.transform(x[-50:])))
    assert loaded.kind == "pkl_dict" and loaded.metadata["specialization"] == "trend_following"
    assert loaded.metadata["action_space"] == 3 and "model" not in loaded.metadata


# -- model cards and manifest -----------------------------------------------------------------------


def test_model_card_round_trips_through_json(tmp_path: Path) -> None:
    model = tmp_path / "m.zip"
    model.write_bytes(b"not really a model")
    card = make_card(model, algorithm="PPO")
    write_card(tmp_path / "m.json", card)
    assert read_card(tmp_path / "m.json") == card
    on_disk = json.loads((tmp_path / "m.json").read_text())
    assert on_disk["test_metrics"]["buy_and_hold"]["max_drawdown"] == 0.3
    assert on_disk["sha256"] == file_sha256(model) and on_disk["feature_names"] == list(FEATURES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "XYZ"}, "sha256 must be 64 lowercase hex"),
        ({"feature_names": ("a", "a")}, "duplicates"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"model_file": "../m.zip"}, "bare file name"),
        (
            {"validation": Period(start="2022-06-01T00:00:00+00:00", end="2024-01-01T00:00:00+00:00")},
            "train must end before validation starts",
        ),
        ({"hyperparameters": {"f": object()}}, "JSON-serialisable"),
    ],
)
def test_model_card_rejects_invalid_fields(tmp_path: Path, change: dict, message: str) -> None:
    model = tmp_path / "m.zip"
    model.write_bytes(b"x")
    with pytest.raises(ValueError, match=message):
        replace(make_card(model, algorithm="PPO"), **change)


def test_metrics_reject_out_of_range_values() -> None:
    with pytest.raises(ValueError, match=r"max_drawdown must be in \[0, 1\]"):
        Metrics(total_return=0.1, sharpe=1, sortino=1, max_drawdown=1.5, hit_rate=0.5, turnover=1)
    with pytest.raises(ValueError, match="sharpe must be a finite number"):
        Metrics(total_return=0.1, sharpe=float("nan"), sortino=1, max_drawdown=0.1, hit_rate=0.5, turnover=1)


def test_read_card_names_unknown_field_and_file(tmp_path: Path) -> None:
    model = tmp_path / "m.zip"
    model.write_bytes(b"x")
    data = make_card(model, algorithm="PPO").to_dict() | {"sharpe_hint": 3}
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(
        ModelIntegrityError, match=r"m\.json: invalid model card: .*unknown field\(s\) \['sharpe_hint'\]"
    ):
        read_card(tmp_path / "m.json")


def test_update_manifest_pins_each_file_to_its_current_hash(tmp_path: Path) -> None:
    a, b = tmp_path / "a.zip", tmp_path / "b.pkl"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    manifest = tmp_path / "saved" / "manifest.json"
    update_manifest(manifest, a)
    update_manifest(manifest, b)
    a.write_bytes(b"retrained")
    returned = update_manifest(manifest, a)
    import hashlib

    assert read_manifest(manifest) == {
        "a.zip": hashlib.sha256(b"retrained").hexdigest(),
        "b.pkl": hashlib.sha256(b"second").hexdigest(),
    }
    assert returned == hashlib.sha256(b"retrained").hexdigest()


def test_read_manifest_rejects_malformed_entry(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": 1, "models": {"a.zip": {"sha256": "abc"}}}))
    with pytest.raises(ModelIntegrityError, match="manifest entry 'a.zip' has no valid sha256"):
        read_manifest(tmp_path / "manifest.json")


def test_loaded_model_is_immutable(tmp_path: Path) -> None:
    path = write_bundle(tmp_path / "plain.zip", {"model.pkl": pickle.dumps(MomentumModel([1.0, 0.0, 0.0]))})
    loaded = load_model(path, manifest=None, allowed_sha256=[file_sha256(path)])
    with pytest.raises(AttributeError):
        loaded.sha256 = "0" * 64  # type: ignore[misc]
    with pytest.raises(TypeError):
        loaded.metadata["x"] = 1  # type: ignore[index]
