"""The shipped specialists in saved_models/: pinned by the manifest, loadable through the safe loader,
trained on the current FeatureSet (this test catches feature drift), with honest, complete cards."""

from __future__ import annotations

import numpy as np
import pytest

from envs.specialists import SPECIALISTS
from l2_tactical.config import PACKAGE_ROOT, L2Config
from l2_tactical.data.features import feature_set
from l2_tactical.finrl_models.model_card import file_sha256, read_card, read_manifest
from l2_tactical.finrl_models.model_loader import load_model

SAVED = PACKAGE_ROOT / "saved_models"
MANIFEST = SAVED / "manifest.json"
HOUR_NS = 3600 * 10**9

pytest.importorskip("stable_baselines3")


@pytest.mark.parametrize("name", sorted(SPECIALISTS))
def test_shipped_model_loads_through_the_safe_loader_with_the_current_feature_set(name: str) -> None:
    spec = SPECIALISTS[name]
    fs = feature_set(spec.feature_set, "1h")
    path = SAVED / f"{name}.zip"
    loaded = load_model(path, manifest=MANIFEST, expected_feature_hash=fs.schema_hash, expected_features=fs.names)
    configured = L2Config.default().ensemble.models[name]
    assert loaded.algorithm == configured.algorithm
    assert (PACKAGE_ROOT / configured.path).resolve() == path.resolve()
    assert read_manifest(MANIFEST)[path.name] == file_sha256(path) == loaded.sha256
    assert path.stat().st_size < 2_000_000, "shipped models should stay small MLPs"


@pytest.mark.parametrize("name", sorted(SPECIALISTS))
def test_shipped_model_acts_on_a_real_observation_of_its_env(name: str) -> None:
    from envs.trading_env import TradingEnv
    from training import walk_forward as wf

    spec = SPECIALISTS[name]
    card = read_card(SAVED / f"{name}.json")
    loaded = load_model(SAVED / f"{name}.zip", manifest=MANIFEST)
    from l2_tactical.data.candles import load_candles

    candles = load_candles(PACKAGE_ROOT / "data" / "BTCUSDT-1h.csv.gz")
    split = wf.split_from_config(L2Config.default().walk_forward, 3600)
    test = wf.test_window(candles, feature_set(spec.feature_set, "1h"), split, spec.window)
    env = TradingEnv(test, specialist=name, **card.extra["env_kwargs"])
    obs, _ = env.reset(seed=0)
    action, confidence = loaded.predict(obs)
    assert env.action_space.contains(np.asarray(action).reshape(env.action_space.shape).astype(env.action_space.dtype))
    assert 0.0 <= confidence <= 1.0
    env.step(np.asarray(action).reshape(env.action_space.shape) if env.action_space.shape else int(action))


@pytest.mark.parametrize("name", sorted(SPECIALISTS))
def test_shipped_card_periods_follow_the_configured_walk_forward_split(name: str) -> None:
    from training import walk_forward as wf

    card = read_card(SAVED / f"{name}.json")
    cfg = L2Config.default().walk_forward
    split = wf.split_from_config(cfg, 3600)
    assert wf.to_ns(card.train.end) == split.train_end
    assert wf.to_ns(card.validation.start) == split.validation_start
    assert wf.to_ns(card.validation.end) == split.validation_end
    assert wf.to_ns(card.test.start) == split.test_start
    assert card.extra["purge_bars"] == cfg.purge_bars
    best = max(h["score"] for h in card.extra["selection"]["history"] if h["score"] is not None)
    assert card.validation_metrics.agent.sharpe == pytest.approx(best, abs=1e-12)
    for data in card.data_files:
        assert file_sha256(PACKAGE_ROOT / data.path) == data.sha256, f"{data.path} changed since training"


def test_shipped_resolved_configs_sit_beside_the_models() -> None:
    import yaml

    for name in SPECIALISTS:
        resolved = yaml.safe_load((SAVED / f"{name}.yaml").read_text())
        card = read_card(SAVED / f"{name}.json")
        assert resolved["algorithm"] == card.algorithm
        assert resolved["hyperparameters"] == dict(card.hyperparameters)
