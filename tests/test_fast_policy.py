"""The numpy export of SB3 policies acts exactly like SB3's deterministic ``predict`` on real observations.

Tiny specialists are trained here for a few hundred steps on the real trading envs over real
BTCUSDT candles (the shipped models come later from training); the observations compared are
the ones the envs produce while stepping through real bars. :func:`train_specialist` and
:func:`publish_specialist` are reused by the ensemble and signal-generator tests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from l2_tactical.data.candles import Candles, load_candles
from l2_tactical.finrl_models.fast_policy import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    UnsupportedPolicy,
    action_to_exposure,
    default_action_values,
    export_policy,
    grouped_confidence,
)
from l2_tactical.finrl_models.model_card import (
    DataFile,
    Metrics,
    ModelCard,
    Period,
    WindowMetrics,
    card_path_for,
    file_sha256,
    update_manifest,
    write_card,
)

ROOT = Path(__file__).resolve().parent.parent
BTC_1H = ROOT / "data" / "BTCUSDT-1h.csv.gz"
BTC_1M = ROOT / "data" / "BTCUSDT-1m.csv.gz"
ENV_IDS = {"trend": "L2Trend-v0", "mean_reversion": "L2MeanReversion-v0", "volatility": "L2Volatility-v0"}
ALGO_KWARGS: dict[str, dict[str, Any]] = {
    "PPO": {"n_steps": 64, "batch_size": 32, "n_epochs": 2},
    "A2C": {"n_steps": 8},
    "SAC": {"learning_starts": 40, "batch_size": 32},
}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


def btc_1h_tail(n: int = 2500) -> Candles:
    candles = load_candles(BTC_1H)
    return candles.slice(candles.frame.index[-n], None)


def make_env(specialist: str, data: Any, action_mode: str | None = None) -> Any:
    import gymnasium as gym

    import envs.registration  # noqa: F401  (registers the ids)

    kwargs = {"action_mode": action_mode} if action_mode else {}
    return gym.make(ENV_IDS[specialist], data=data, **kwargs)


def train_specialist(
    specialist: str, algorithm: str, data: Any, *, action_mode: str | None = None, steps: int = 64, seed: int = 3
) -> tuple[Any, Any]:
    """A tiny SB3 model trained for ``steps`` on the specialist's real env; returns (model, env)."""
    import stable_baselines3

    env = make_env(specialist, data, action_mode)
    model = getattr(stable_baselines3, algorithm)(
        "MlpPolicy", env, seed=seed, device="cpu", policy_kwargs={"net_arch": [32, 32]}, **ALGO_KWARGS[algorithm]
    )
    model.learn(total_timesteps=steps)
    return model, env


def publish_specialist(model: Any, env: Any, path: Path, *, specialist: str, algorithm: str,
                       extra: dict[str, Any] | None = None) -> Path:
    """Save ``model`` at ``path`` with a model card (the env's FeatureSet) and pin it in ``manifest.json``."""
    model.save(path)
    data = env.unwrapped.data
    metrics = Metrics(total_return=0.0, sharpe=0.0, sortino=0.0, max_drawdown=0.1, hit_rate=0.5, turnover=1.0)
    card = ModelCard(
        name=path.stem,
        specialist=specialist,
        algorithm=algorithm,
        env_id=ENV_IDS[specialist],
        env_version="0",
        feature_schema_hash=data.schema_hash,
        feature_names=data.feature_names,
        data_files=(DataFile(path="data/BTCUSDT-1h.csv.gz", sha256=file_sha256(BTC_1H)),),
        train=Period(start="2018-01-01T00:00:00+00:00", end="2023-01-01T00:00:00+00:00"),
        validation=Period(start="2023-01-08T00:00:00+00:00", end="2024-01-01T00:00:00+00:00"),
        test=Period(start="2024-01-08T00:00:00+00:00", end="2025-09-01T00:00:00+00:00"),
        hyperparameters={"net_arch": [32, 32]},
        seed=3,
        validation_metrics=WindowMetrics(agent=metrics, buy_and_hold=metrics),
        test_metrics=WindowMetrics(agent=metrics, buy_and_hold=metrics),
        model_file=path.name,
        sha256=file_sha256(path),
        extra=extra or {},
    )
    write_card(card_path_for(path), card)
    manifest = path.parent / "manifest.json"
    update_manifest(manifest, path)
    return manifest


def real_observations(env: Any, model: Any, n: int = 200) -> np.ndarray:
    """Observations of the env stepping through real bars, acting with the model's own sampled actions."""
    obs, _ = env.reset(seed=11)
    out = [obs]
    while len(out) < n:
        action, _ = model.predict(obs, deterministic=False)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
        out.append(obs)
    return np.stack(out)


CASES = [
    ("trend", "PPO", None),  # Discrete(3)
    ("mean_reversion", "A2C", None),  # Discrete(5)
    ("volatility", "SAC", None),  # squashed Gaussian
    ("volatility", "PPO", "continuous"),  # clipped Gaussian
]


@pytest.fixture(scope="module")
def trained() -> dict[tuple[str, str, str | None], tuple[Any, Any]]:
    _, models = shared_ensemble("1h")
    out = {(name, algo, None): models[name] for name, algo in (("trend", "PPO"), ("mean_reversion", "A2C"),
                                                               ("volatility", "SAC"))}
    out[CASES[3]] = train_specialist(CASES[3][0], CASES[3][1], btc_1h_tail(), action_mode=CASES[3][2])
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_fast_policy_matches_sb3_deterministic_predict_on_real_observations(trained: dict, case: tuple) -> None:
    model, env = trained[case]
    obs = real_observations(env, model)
    fast = export_policy(model, case[1])
    fast_actions, confidence = fast.forward(obs)
    sb3_actions = np.stack([model.predict(o, deterministic=True)[0] for o in obs])
    if fast.kind == "discrete":
        assert np.array_equal(fast_actions, sb3_actions.reshape(-1))
    else:
        np.testing.assert_allclose(fast_actions, sb3_actions.reshape(fast_actions.shape), atol=1e-5)
    batch_actions, _ = model.predict(obs, deterministic=True)  # SB3's own batch path agrees too
    assert np.allclose(np.asarray(batch_actions).reshape(-1), np.asarray(fast_actions).reshape(-1), atol=1e-5)
    assert confidence.shape == (len(obs),) and np.all((confidence >= 0) & (confidence <= 1))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_fast_policy_confidence_follows_the_sb3_action_distribution(trained: dict, case: tuple) -> None:
    import torch
    from scipy.special import erf

    model, env = trained[case]
    obs = real_observations(env, model, n=50)
    _, confidence = export_policy(model, case[1]).forward(obs)
    with torch.no_grad():
        obs_t, _ = model.policy.obs_to_tensor(obs)
        if case[1] == "SAC":
            mean, log_std, _ = model.policy.actor.get_action_dist_params(obs_t)
            expected = erf(np.abs(mean.numpy()) / (np.exp(log_std.numpy()) * np.sqrt(2))).mean(axis=1)
        else:
            dist = model.policy.get_distribution(obs_t).distribution
            if hasattr(dist, "probs"):
                p = dist.probs.numpy()
                n = p.shape[1]
                expected = (p.max(axis=1) - 1 / n) / (1 - 1 / n)
            else:
                expected = erf(np.abs(dist.mean.numpy()) / (dist.stddev.numpy() * np.sqrt(2))).mean(axis=1)
    np.testing.assert_allclose(confidence, expected, atol=1e-5)


def test_action_to_exposure_maps_discrete_indices_like_the_envs() -> None:
    from envs.specialists import ACTION_MODES

    assert default_action_values(3) == ACTION_MODES["discrete3"]
    assert default_action_values(5) == ACTION_MODES["discrete5"]
    assert action_to_exposure("discrete", np.array([0, 2, 1]), default_action_values(3)).tolist() == [-1.0, 1.0, 0.0]
    assert action_to_exposure("squashed", np.array([[1.5], [-0.25]])).tolist() == [1.0, -0.25]


def test_export_refuses_what_it_cannot_reproduce(tmp_path: Path) -> None:
    import gymnasium as gym
    from stable_baselines3 import DQN

    model = DQN("MlpPolicy", gym.make("CartPole-v1"), device="cpu", learning_starts=0)
    with pytest.raises(UnsupportedPolicy, match="DQN"):
        export_policy(model, "DQN")


def test_fast_policy_rejects_an_observation_of_the_wrong_size(trained: dict) -> None:
    model, _ = trained[CASES[0]]
    fast = export_policy(model, "PPO")
    with pytest.raises(ValueError, match=f"expects {fast.obs_size}"):
        fast.forward(np.zeros(fast.obs_size + 1, np.float32))


ENSEMBLE = (("trend", "PPO"), ("mean_reversion", "A2C"), ("volatility", "SAC"))


def publish_ensemble(root: Path, data: Any, steps: int = 64) -> Path:
    """Train and publish the three default specialists under ``root/saved_models`` (the config's paths)."""
    _publish(root, data, steps)
    return root


def _publish(root: Path, data: Any, steps: int) -> dict[str, tuple[Any, Any]]:
    folder = root / "saved_models"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for specialist, algorithm in ENSEMBLE:
        model, env = train_specialist(specialist, algorithm, data, steps=steps)
        publish_specialist(model, env, folder / f"{specialist}.zip", specialist=specialist, algorithm=algorithm)
        out[specialist] = (model, env)
    return out


_SHARED: dict[str, tuple[Path, dict[str, tuple[Any, Any]]]] = {}


def shared_ensemble(timeframe: str) -> tuple[Path, dict[str, tuple[Any, Any]]]:
    """The three specialists trained once per test process on real BTCUSDT ``timeframe`` bars (1h: the last
    2500 bars; 1m: the first 4000) and published in a temporary root; returns (root, {name: (model, env)})."""
    if timeframe not in _SHARED:
        import atexit
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix=f"l2-specialists-{timeframe}-"))
        atexit.register(shutil.rmtree, root, True)
        if timeframe == "1h":
            data = btc_1h_tail(2500)
        else:
            candles = load_candles(BTC_1M)
            data = candles.slice(None, candles.frame.index[4000])
        _SHARED[timeframe] = (root, _publish(root, data, 64))
    return _SHARED[timeframe]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_single_observation_path_equals_the_batch_forward(trained: dict, case: tuple) -> None:
    model, env = trained[case]
    fast = export_policy(model, case[1])
    obs = real_observations(env, model, n=60)
    actions, confidence = fast.forward(obs)
    for i, o in enumerate(obs):
        action, conf = fast.act_one(o)
        expected = actions[i] if fast.kind == "discrete" else actions[i, 0]
        assert action == pytest.approx(float(expected), abs=1e-6)
        assert conf == pytest.approx(float(confidence[i]), abs=1e-6)
        sb3_action, _ = model.predict(o, deterministic=True)
        assert action == pytest.approx(float(np.asarray(sb3_action).reshape(-1)[0]), abs=1e-5)


def _shipped() -> list[str]:
    manifest = ROOT / "saved_models" / "manifest.json"
    if not manifest.is_file():
        return []
    from l2_tactical.finrl_models.model_card import read_manifest

    return sorted(read_manifest(manifest))


@pytest.mark.parametrize("file_name", _shipped() or ["<none shipped>"])
def test_shipped_specialists_numpy_forward_equals_sb3_predict(file_name: str) -> None:
    if file_name == "<none shipped>":
        pytest.skip("saved_models/manifest.json lists no model yet (the training issue ships them)")
    from l2_tactical.finrl_models.model_loader import load_model

    path = ROOT / "saved_models" / file_name
    loaded = load_model(path, manifest=ROOT / "saved_models" / "manifest.json")
    specialist = str(loaded.card["specialist"])
    env = make_env(specialist, btc_1h_tail(3000), action_mode=loaded.card.get("extra", {}).get("action_mode"))
    assert env.unwrapped.data.schema_hash == loaded.feature_schema_hash
    obs = real_observations(env, loaded.model, n=300)
    fast = export_policy(loaded.model, loaded.algorithm)
    actions, _ = fast.forward(obs)
    sb3_actions = np.asarray(loaded.model.predict(obs, deterministic=True)[0])
    if fast.kind == "discrete":
        assert np.array_equal(actions, sb3_actions.reshape(-1))
    else:
        np.testing.assert_allclose(actions, sb3_actions.reshape(actions.shape), atol=1e-5)


def _reference_act_one(fast: Any, obs: np.ndarray) -> tuple[float, float]:
    """act_one as first written (expression form, np.clip, the Dense layer's own call): the fast form's spec."""
    x = obs.astype(np.float32)
    for layer in fast.latent:
        x = layer(x)
    mu = fast.head(x)
    if fast.kind == "discrete":
        mass, n = float(np.exp(mu - mu.max()).sum()), mu.shape[0]
        return int(mu.argmax()), min(1.0, max(0.0, (1.0 / mass - 1.0 / n) / (1.0 - 1.0 / n)))
    if fast.kind == "gaussian":
        std, action = np.exp(fast.log_std), np.clip(mu, fast.low, fast.high)
    else:
        std = np.exp(np.clip(fast.log_std_head(x), LOG_STD_MIN, LOG_STD_MAX))
        action = fast.low + 0.5 * (np.tanh(mu) + 1.0) * (fast.high - fast.low)
    conf = [math.erf(abs(m) / (max(s, 1e-30) * math.sqrt(2.0))) for m, s in zip(mu.tolist(), std.tolist(), strict=True)]
    return float(action[0]), sum(conf) / len(conf)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_single_observation_path_equals_its_expression_form_bit_for_bit(trained: dict, case: tuple) -> None:
    # act_one / probs_one run the float32 operations in place and without Python scalars: same numbers exactly
    model, env = trained[case]
    fast = export_policy(model, case[1])
    for o in real_observations(env, model, n=80):
        action, conf = fast.act_one(o)
        ref_action, ref_conf = _reference_act_one(fast, o)
        assert (repr(action), repr(conf)) == (repr(ref_action), repr(ref_conf))
        if fast.kind == "discrete":
            x = o.astype(np.float32)
            for layer in fast.latent:
                x = layer(x)
            logits = fast.head(x)
            expected = np.exp(logits - logits.max())
            assert fast.probs_one(o).tobytes() == (expected / expected.sum()).tobytes()


def test_spot_discrete_policy_confidence_is_the_grouped_confidence(trained: dict) -> None:
    # a spot specialist's short and flat actions both mean flat: its confidence is their summed mass
    from l2_tactical.finrl_models.ensemble_manager import _numpy_policy

    model, env = trained[("mean_reversion", "A2C", None)]
    fast = export_policy(model, "A2C")
    values = default_action_values(fast.n_actions)
    clipped = tuple(max(0.0, v) for v in values)
    policy = _numpy_policy(fast, values, long_only=True)
    for o in real_observations(env, model, n=60):
        p = fast.probs_one(o)
        index = int(p.argmax())
        exposure, conf = policy(o)
        assert (exposure, repr(conf)) == (clipped[index], repr(grouped_confidence(p, clipped, index)))
