"""TradingVecEnv: batched numpy stepping equals N single TradingEnvs with the same seeds and actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import VecEnv

from envs.market_data import as_market_data
from envs.specialists import SPECIALISTS
from envs.vec_env import TradingVecEnv

CASES = [
    ("trend", "discrete3", False),
    ("mean_reversion", "discrete5", True),
    ("volatility", "continuous", True),
    ("trend", "continuous", False),
]


@pytest.fixture(scope="module")
def data(data_dir):
    path = data_dir / "BTCUSDT-1h.csv.gz"
    return {name: as_market_data(path, spec.feature_set) for name, spec in SPECIALISTS.items()}


def _actions(space: gym.Space, n_envs: int, steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if isinstance(space, gym.spaces.Discrete):
        return [rng.integers(0, space.n, n_envs) for _ in range(steps)]
    return [rng.uniform(-1, 1, (n_envs, 1)).astype(np.float32) for _ in range(steps)]


@pytest.mark.parametrize("specialist,mode,margin", CASES)
def test_vec_env_trajectories_equal_single_envs_with_the_same_seeds_and_actions(data, specialist, mode, margin):
    n, seed, steps, horizon = 6, 123, 700, 60
    md = data[specialist]
    env_id = SPECIALISTS[specialist].env_id
    venv = TradingVecEnv(
        md, num_envs=n, specialist=specialist, action_mode=mode, margin=margin, max_episode_steps=horizon
    )
    seg_end = md.segments[4][1]
    venv.seed(seed)
    venv.set_options([{"start": seg_end - 5}] + [{}] * (n - 1))  # env 0 runs into the end of its segment
    singles = [gym.make(env_id, data=md, action_mode=mode, margin=margin, max_episode_steps=horizon) for _ in range(n)]
    obs_v = venv.reset()
    obs_s = np.stack(
        [e.reset(seed=seed + i, options={"start": seg_end - 5} if i == 0 else None)[0] for i, e in enumerate(singles)]
    )
    np.testing.assert_array_equal(obs_v, obs_s)
    ends = {"terminated": 0, "truncated": 0}
    for actions in _actions(venv.action_space, n, steps, seed):
        obs_v, rew_v, done_v, info_v = venv.step(actions)
        for i, env in enumerate(singles):
            obs, rew, terminated, truncated, _ = env.step(actions[i])
            assert bool(done_v[i]) == (terminated or truncated)
            if terminated or truncated:
                ends["terminated" if terminated else "truncated"] += 1
                np.testing.assert_array_equal(info_v[i]["terminal_observation"], obs)
                assert info_v[i]["TimeLimit.truncated"] == (truncated and not terminated)
                obs, _ = env.reset()
            else:
                assert info_v[i] == {}
            np.testing.assert_array_equal(obs_v[i], obs)
            # numpy's vectorised log may differ from libm's in the last bit of a float64
            assert rew_v[i] == pytest.approx(np.float32(rew), rel=1e-6, abs=1e-12)
            assert venv.get_attr("equity", [i])[0] == env.unwrapped.equity
            assert venv.get_attr("qty", [i])[0] == env.unwrapped.qty
    assert ends["truncated"] >= steps // horizon * n - n  # auto-reset was exercised


def test_vec_env_is_an_sb3_vec_env_with_the_specialist_spaces(data):
    venv = TradingVecEnv(data["volatility"], num_envs=4, specialist="volatility")
    single = gym.make("L2Volatility-v0", data=data["volatility"])
    assert isinstance(venv, VecEnv)
    assert venv.observation_space == single.observation_space
    assert venv.action_space == single.action_space
    assert venv.max_episode_steps == gym.registry["L2Volatility-v0"].max_episode_steps
    obs = venv.reset()
    assert obs.shape == (4, *single.observation_space.shape) and obs.dtype == np.float32
    assert all(o in venv.observation_space for o in obs)


def test_vec_env_seeds_each_env_differently_and_reproducibly(data):
    def starts(seed):
        venv = TradingVecEnv(data["trend"], num_envs=8, seed=seed)
        venv.reset()
        return venv.t.tolist()

    assert starts(5) == starts(5)
    assert len(set(starts(5))) == 8
    assert starts(5) != starts(6)


@pytest.mark.parametrize(
    "mode,bad,match",
    [
        ("discrete3", np.array([0, 1, 3, 0]), "env 2: action 3 is outside"),
        ("discrete3", np.array([0, -1, 2, 0]), "env 1: action -1 is outside"),
        ("discrete3", np.array([0.0, 1.0, 2.0, 0.0]), "env 0: action 0.0 is outside"),
        ("continuous", np.array([[0.0], [0.5], [np.nan], [1.0]], np.float32), "env 2: action .* is NaN"),
        ("continuous", np.array([[0.0], [1.5], [0.0], [1.0]], np.float32), "env 1: action .* is outside"),
        ("continuous", np.zeros((3, 1), np.float32), "expected 4 elements"),
    ],
)
def test_vec_env_rejects_bad_actions_naming_the_env_and_value(data, mode, bad, match):
    venv = TradingVecEnv(data["trend"], num_envs=4, action_mode=mode, seed=0)
    venv.reset()
    equity = venv.equity
    with pytest.raises(ValueError, match=match):
        venv.step(bad)
    np.testing.assert_array_equal(venv.equity, equity)


def test_sb3_ppo_trains_on_the_vec_env(data):
    from stable_baselines3 import PPO

    venv = TradingVecEnv(data["trend"], num_envs=4, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256


@pytest.mark.parametrize(
    "specialist,mode,margin", [("mean_reversion", "discrete5", True), ("trend", "discrete3", False)]
)
def test_vec_env_in_place_step_equals_the_reference_account_step(data, specialist, mode, margin):
    """The VecEnv's in-place accounting is trading_env.account_step (the reference form) on arrays."""
    from envs.specialists import ACTION_MODES
    from envs.trading_env import NUMPY_OPS, account_step

    md = data[specialist]
    venv = TradingVecEnv(md, num_envs=16, specialist=specialist, action_mode=mode, margin=margin, seed=9)
    venv.reset()
    table = np.asarray(ACTION_MODES[mode])
    compared = 0
    for actions in _actions(venv.action_space, 16, 150, 4):
        before = [np.array(x) for x in (venv._cash, venv._qty, venv._bars, venv._entry, venv._peak, venv._equity,
                                        venv._state[3], venv._mean, venv._second)]
        t = venv.t + 1
        expected = account_step(venv.params, *before, table[actions], md.open[t], md.high[t], md.low[t],
                                 md.close[t], ops=NUMPY_OPS, rops=NUMPY_OPS)
        _, rewards, dones, _ = venv.step(actions)
        live = ~dones
        compared += int(live.sum())
        for got, want in ((venv._cash, expected[0]), (venv._qty, expected[1]), (venv._equity, expected[8])):
            np.testing.assert_array_equal(got[live], want[live])
        np.testing.assert_array_equal(rewards[live], expected[10][live].astype(np.float32))
    assert compared > 16 * 140
