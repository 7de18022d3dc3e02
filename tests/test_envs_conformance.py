"""Gymnasium / stable-baselines3 conformance of the specialist envs, actions and determinism."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.market_data import MarketData, as_market_data
from envs.specialists import ACTION_MODES, SPECIALISTS
from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles

IDS = [s.env_id for s in SPECIALISTS.values()]


@pytest.fixture(scope="module")
def btc_path(data_dir) -> str:
    return str(data_dir / "BTCUSDT-1h.csv.gz")


def test_importing_envs_registers_the_three_specialist_ids():
    assert set(envs.ENV_IDS) == {"L2Trend-v0", "L2MeanReversion-v0", "L2Volatility-v0"}
    for env_id in envs.ENV_IDS:
        assert env_id in gym.registry
        assert gym.registry[env_id].max_episode_steps is not None


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("action_mode", sorted(ACTION_MODES))
@pytest.mark.parametrize("margin", [False, True], ids=["spot", "margin"])
def test_env_passes_gymnasium_and_sb3_check_env_with_warnings_as_errors(btc_path, env_id, action_mode, margin):
    env = gym.make(env_id, data=btc_path, action_mode=action_mode, margin=margin)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
    env.close()


def test_make_accepts_a_path_candles_or_market_data_and_a_config(btc_path):
    candles = load_candles(btc_path)
    md = as_market_data(btc_path, "trend")
    cfg = L2Config.default().with_overrides({"execution.fee_bps": 5.0})
    for data in (btc_path, candles, md):
        env = gym.make("L2Trend-v0", data=data, config=cfg)
        obs, _ = env.reset(seed=3)
        assert obs.shape == env.observation_space.shape
        assert env.unwrapped.params.costs.fee_bps == 5.0
    assert isinstance(env.unwrapped.data, MarketData)


@pytest.mark.parametrize("specialist", sorted(SPECIALISTS))
def test_each_specialist_observes_its_own_feature_preset(btc_path, specialist):
    from l2_tactical.data.features import feature_set

    env = gym.make(SPECIALISTS[specialist].env_id, data=btc_path)
    fs = feature_set(SPECIALISTS[specialist].feature_set, "1h")
    assert env.unwrapped.data.feature_names == fs.names
    assert env.unwrapped.data.schema_hash == fs.schema_hash
    window = env.unwrapped.params.window
    assert env.observation_space.shape == (window * len(fs) + 4,)
    np.testing.assert_array_equal(env.observation_space.low[: len(fs)], fs.lower)
    np.testing.assert_array_equal(env.observation_space.high[: len(fs)], fs.upper)


def _trajectory(env_id: str, data: MarketData, seed: int, actions: list, **kw) -> list[tuple]:
    env = gym.make(env_id, data=data, **kw)
    out = [tuple(env.reset(seed=seed)[0].tolist())]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((tuple(obs.tolist()), reward, terminated, truncated, info["equity"], info["fee"]))
        if terminated or truncated:
            out.append(tuple(env.reset()[0].tolist()))
    return out


@pytest.mark.parametrize(
    "env_id,mode", [("L2Trend-v0", "discrete3"), ("L2MeanReversion-v0", "discrete5"), ("L2Volatility-v0", "continuous")]
)
def test_same_seed_and_actions_give_identical_trajectories(btc_path, env_id, mode):
    md = as_market_data(
        btc_path,
        SPECIALISTS[
            {"L2Trend-v0": "trend", "L2MeanReversion-v0": "mean_reversion", "L2Volatility-v0": "volatility"}[env_id]
        ].feature_set,
    )
    space = gym.make(env_id, data=md, action_mode=mode).action_space
    space.seed(11)
    actions = [space.sample() for _ in range(600)]
    kw = {"action_mode": mode, "margin": True, "max_episode_steps": 100}
    first = _trajectory(env_id, md, 42, actions, **kw)
    assert first == _trajectory(env_id, md, 42, actions, **kw)
    assert first[0] != _trajectory(env_id, md, 43, actions, **kw)[0]  # another seed, another start


@pytest.mark.parametrize(
    "mode,bad",
    [
        ("discrete3", 3),
        ("discrete3", -1),
        ("discrete3", 1.0),
        ("discrete3", "1"),
        ("discrete3", np.array([0, 1])),
        ("discrete5", 5),
        ("discrete5", True),
        ("continuous", np.array([1.5], np.float32)),
        ("continuous", np.array([-1.01], np.float32)),
        ("continuous", np.array([0.1, 0.2], np.float32)),
        ("continuous", math.inf),
    ],
)
def test_out_of_space_action_raises_a_value_error_naming_it(btc_path, mode, bad):
    env = gym.make("L2Trend-v0", data=btc_path, action_mode=mode).unwrapped
    env.reset(seed=0)
    equity = env.equity
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(bad)
    assert env.equity == equity  # nothing happened


@pytest.mark.parametrize("bad", [np.array([np.nan], np.float32), math.nan, np.float64("nan")])
def test_nan_action_raises_instead_of_being_clipped(btc_path, bad):
    env = gym.make("L2Volatility-v0", data=btc_path).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(bad)


def test_in_space_actions_of_every_accepted_type_are_taken(btc_path):
    env = gym.make("L2Trend-v0", data=btc_path).unwrapped
    env.reset(seed=0)
    for a in (2, np.int64(2), np.array(2), np.array([2])):
        env.step(a)
    assert env.qty > 0
    cont = gym.make("L2Volatility-v0", data=btc_path).unwrapped
    cont.reset(seed=0)
    for a in (np.array([1.0], np.float32), 0.5, np.float32(-1.0)):
        cont.step(a)


def test_unknown_specialist_or_action_mode_fails_with_a_hint(btc_path):
    with pytest.raises(ValueError, match="did you mean 'continuous'"):
        gym.make("L2Trend-v0", data=btc_path, action_mode="continous")
    with pytest.raises(ValueError, match="did you mean 'trend'"):
        envs.TradingEnv(btc_path, specialist="trnd")


def test_reset_start_option_must_be_a_valid_episode_start(btc_path):
    env = gym.make("L2Trend-v0", data=btc_path).unwrapped
    first_start = int(env.data.segments[0][0]) + env.params.window - 1
    _obs, info = env.reset(options={"start": first_start})
    assert info["t"] == first_start == env.t
    with pytest.raises(ValueError, match="not a valid episode start"):
        env.reset(options={"start": 0})


def test_importing_envs_does_not_import_stable_baselines3_or_torch():
    import subprocess
    import sys

    code = "import sys, envs; print(sorted(m for m in ('stable_baselines3', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
