"""Training pipeline: tiny real training runs per algorithm, reload through the safe loader, determinism,
and the walk-forward discipline (the test window never reaches training or model selection).

Runs use the real BTCUSDT 1h candles with a late walk-forward split (train until 2025-06-01,
validation until 2025-07-15) so that the validation and test windows are about a month each
and every run stays a few seconds long.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from envs.specialists import get_specialist
from l2_tactical.config import PACKAGE_ROOT, L2Config
from l2_tactical.data.features import feature_set
from l2_tactical.finrl_models.model_card import read_card, read_manifest
from l2_tactical.finrl_models.model_loader import load_model

pytest.importorskip("stable_baselines3")

from training import outputs, shared
from training import walk_forward as wf
from training.evaluation import evaluate_window, sb3_predict
from training.zoo_format import HYPERPARAMS_DIR

BTC = str(PACKAGE_ROOT / "data" / "BTCUSDT-1h.csv.gz")
ALGORITHMS = {"PPO": "trend", "A2C": "mean_reversion", "SAC": "volatility"}
TINY = {
    "PPO": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "A2C": {"n_steps": 8},
    "SAC": {"learning_starts": 64, "batch_size": 32, "buffer_size": 2000, "train_freq": 4, "gradient_steps": 1},
}
STEPS = 256


def late_config() -> L2Config:
    return L2Config.default().with_overrides(
        {"walk_forward.train_end": "2025-06-01", "walk_forward.validation_end": "2025-07-15"}
    )


@pytest.fixture(scope="module")
def tiny_hyperparams(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped hyperparameter files with rollouts shrunk for a few hundred steps."""
    folder = tmp_path_factory.mktemp("hyperparams")
    for algo, overrides in TINY.items():
        table = yaml.safe_load((HYPERPARAMS_DIR / f"{algo.lower()}.yml").read_text())
        for entry in table.values():
            entry.update(overrides)
            entry["n_envs"] = 2
        (folder / f"{algo.lower()}.yml").write_text(yaml.safe_dump(table))
    return folder


def settings(algo: str, out: Path, hyper: Path, seed: int = 7) -> shared.TrainSettings:
    return shared.TrainSettings(
        specialist=ALGORITHMS[algo],
        data=(BTC,),
        timesteps=STEPS,
        seed=seed,
        out=str(out),
        work_dir=str(out / "work"),
        tensorboard_log=str(out / "tb"),
        eval_freq=128,
        progress_bar=False,
        hyperparams_dir=str(hyper),
        verbose=0,
    )


class EventLog:
    """Records which MarketData windows reach training, selection and the final evaluation, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, int, int]] = []
        build, validate = shared.build_train_env, shared.evaluate_window
        final, test_window = outputs.evaluate_window, wf.test_window

        def spy(kind: str, fn: Any, mds_of: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                result = fn(*args, **kwargs)
                for md in mds_of(args, result):
                    self.events.append((kind, int(md.timestamps[0]), int(md.timestamps[-1])))
                return result

            return wrapper

        monkeypatch.setattr(shared, "build_train_env", spy("train", build, lambda a, r: a[0]))
        monkeypatch.setattr(shared, "evaluate_window", spy("validation", validate, lambda a, r: a[0]))
        monkeypatch.setattr(outputs, "evaluate_window", spy("final", final, lambda a, r: a[0]))
        monkeypatch.setattr(wf, "test_window", spy("test_window", test_window, lambda a, r: [r]))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_hyperparams: Path) -> dict[str, Any]:
    """One tiny PPO run on real candles, with every window it touched recorded."""
    out = tmp_path_factory.mktemp("ppo")
    with pytest.MonkeyPatch.context() as mp:
        log = EventLog(mp)
        result = shared.train_specialist(settings("PPO", out, tiny_hyperparams), late_config())
    return {"result": result, "events": log, "out": out}


def reload_and_check(result: shared.TrainResult, algo: str, out: Path) -> None:
    """Load through the safe loader (manifest + current FeatureSet) and reproduce the card's numbers."""
    spec = get_specialist(result.card.specialist)
    fs = feature_set(spec.feature_set, "1h")
    loaded = load_model(
        result.model_path,
        manifest=out / "manifest.json",
        expected_feature_hash=fs.schema_hash,
        expected_features=fs.names,
    )
    assert loaded.algorithm == algo
    cfg = late_config()
    prepared = shared.prepare_data((BTC,), spec.name, cfg)
    env_kwargs = shared.env_kwargs_for(spec.name, algo)
    again, _ = evaluate_window(
        prepared.validation, sb3_predict(loaded.model), config=cfg, specialist=spec.name, env_kwargs=env_kwargs
    )
    assert again == result.card.validation_metrics
    import stable_baselines3

    (best,) = (out / "work").glob(f"{spec.name}-seed7-*/best_model.zip")
    direct = getattr(stable_baselines3, algo).load(best)
    from envs.trading_env import TradingEnv

    env = TradingEnv(prepared.validation[0], cfg, specialist=spec.name, **env_kwargs)
    obs = np.stack([env.reset(seed=i)[0] for i in range(16)])
    np.testing.assert_array_equal(
        loaded.model.predict(obs, deterministic=True)[0], direct.predict(obs, deterministic=True)[0]
    )


def test_training_ppo_saves_card_manifest_config_and_reloads_identically(trained: dict[str, Any]) -> None:
    result, out = trained["result"], trained["out"]
    assert result.model_path == out / "trend.zip"
    assert read_manifest(out / "manifest.json")["trend.zip"] == result.card.sha256
    card = read_card(result.card_path)
    assert card == result.card
    assert card.algorithm == "PPO" and card.env_id == "L2Trend-v0" and card.env_version == "v0"
    assert card.hyperparameters["n_timesteps"] == STEPS and card.seed == 7
    resolved = yaml.safe_load(result.config_path.read_text())
    assert resolved["algorithm"] == "PPO" and resolved["l2_config"]["walk_forward"]["train_end"] == "2025-06-01"
    assert list((out / "tb").iterdir()), "TensorBoard logs were not written"
    reload_and_check(result, "PPO", out)


def test_training_selects_the_model_with_the_best_validation_sharpe(trained: dict[str, Any]) -> None:
    card = trained["result"].card
    history = card.extra["selection"]["history"]
    assert len(history) >= 2
    best = max(h["score"] for h in history)
    assert card.extra["selection"]["best_score"] == best
    assert card.validation_metrics.agent.sharpe == best  # the saved zip replays the selected score


def test_training_never_passes_the_test_window_to_training_or_selection(trained: dict[str, Any]) -> None:
    log: EventLog = trained["events"]
    split = wf.split_from_config(late_config().walk_forward, 3600)
    kinds = log.kinds()
    assert "train" in kinds and "validation" in kinds and "test_window" in kinds
    first_test = kinds.index("test_window")
    assert all(k in ("final", "test_window") for k in kinds[first_test:]), kinds
    for kind, _, last in log.events[:first_test]:
        assert last < split.test_start, f"{kind} window reaches the test window"
    for kind, first, last in log.events:
        if kind == "train":
            assert last < split.train_end
        if kind == "validation":
            assert first >= split.validation_start and last < split.validation_end
        if kind == "test_window":
            assert first >= split.test_start


def test_training_same_seed_gives_byte_identical_policy_parameters(
    trained: dict[str, Any], tiny_hyperparams: Path, tmp_path: Path
) -> None:
    import stable_baselines3
    import torch

    again = shared.train_specialist(settings("PPO", tmp_path, tiny_hyperparams), late_config())
    first = stable_baselines3.PPO.load(trained["result"].model_path).policy.state_dict()
    second = stable_baselines3.PPO.load(again.model_path).policy.state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert again.card.validation_metrics == trained["result"].card.validation_metrics


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["A2C", "SAC"])
def test_training_tiny_run_per_algorithm_reloads_and_predicts_identically(
    algo: str, tiny_hyperparams: Path, tmp_path: Path
) -> None:
    result = shared.train_specialist(settings(algo, tmp_path, tiny_hyperparams), late_config())
    assert result.card.algorithm == algo
    assert result.card.extra["trained_timesteps"] >= STEPS
    reload_and_check(result, algo, tmp_path)


def test_training_refuses_a_tampered_shipped_style_zip(trained: dict[str, Any], tmp_path: Path) -> None:
    from l2_tactical.errors import ModelIntegrityError

    out = trained["out"]
    for name in ("trend.zip", "trend.json", "manifest.json"):
        shutil.copy(out / name, tmp_path / name)
    with open(tmp_path / "trend.zip", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch"):
        load_model(tmp_path / "trend.zip", manifest=tmp_path / "manifest.json")


def test_training_refuses_to_ship_a_checkpoint_that_does_not_replay_its_selection_score(tmp_path: Path) -> None:
    """If the best-model file was overwritten (another run, a crash), the replayed validation Sharpe
    differs from the selected one and no card is written for it."""
    from types import SimpleNamespace

    selected = SimpleNamespace(history=[{"score": -0.42}], best_score=-0.42, best_timestep=7500)
    outputs.check_replay(tmp_path / "best_model.zip", selected, -0.42)
    with pytest.raises(RuntimeError, match="not the selected model"):
        outputs.check_replay(tmp_path / "best_model.zip", selected, -4.31)


def test_training_runs_of_the_same_specialist_and_seed_get_separate_checkpoint_folders(tmp_path: Path) -> None:
    first, second = shared.run_dir(str(tmp_path), "volatility-seed0"), shared.run_dir(str(tmp_path), "volatility-seed0")
    assert first != second and first.is_dir() and second.is_dir()
