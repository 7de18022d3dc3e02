"""Walk-forward windows, the multi-symbol VecEnv, evaluation through the simulator and the rl-zoo3 files."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from envs.specialists import ACTION_MODES, SPECIALISTS, get_specialist
from l2_tactical.config import PACKAGE_ROOT, L2Config
from l2_tactical.data.candles import load_candles
from l2_tactical.data.features import feature_set
from l2_tactical.errors import ConfigError

pytest.importorskip("stable_baselines3")

from training import walk_forward as wf
from training.evaluation import evaluate_window
from training.zoo_format import HYPERPARAMS_DIR, load_hyperparams, parse_policy_kwargs, split_hyperparams

HOUR_NS = 3600 * 10**9


@pytest.fixture(scope="module")
def btc():
    return load_candles(PACKAGE_ROOT / "data" / "BTCUSDT-1h.csv.gz")


@pytest.fixture(scope="module")
def eth():
    return load_candles(PACKAGE_ROOT / "data" / "ETHUSDT-1h.csv.gz")


@pytest.fixture(scope="module")
def trend_fs():
    return feature_set("trend", "1h")


def test_walk_forward_split_follows_the_config_with_a_purge_gap_after_each_boundary() -> None:
    cfg = L2Config.default().walk_forward
    split = wf.split_from_config(cfg, 3600)
    assert split.train_end == wf.to_ns(cfg.train_end)
    assert split.validation_start - split.train_end == cfg.purge_bars * HOUR_NS
    assert split.validation_end == wf.to_ns(cfg.validation_end)
    assert split.test_start - split.validation_end == cfg.purge_bars * HOUR_NS


def test_walk_forward_windows_on_real_candles_do_not_overlap_and_keep_the_purge(btc, trend_fs) -> None:
    split = wf.split_from_config(L2Config.default().walk_forward, 3600)
    window = get_specialist("trend").window
    train = wf.train_window(btc, trend_fs, split)
    validation = wf.validation_window(btc, trend_fs, split, window)
    test = wf.test_window(btc, trend_fs, split, window)
    assert train.timestamps[-1] < split.train_end
    assert validation.timestamps[0] >= split.train_end + split.purge_bars * HOUR_NS
    assert validation.timestamps[-1] < split.validation_end
    assert test.timestamps[0] >= split.validation_end + split.purge_bars * HOUR_NS
    assert test.timestamps[-1] == btc.timestamps_ns[-1]
    # the windows hold every bar of their range (nothing else lost than the purge gaps)
    n_val = np.count_nonzero((btc.timestamps_ns >= split.validation_start) & (btc.timestamps_ns < split.validation_end))
    assert len(validation) == n_val
    # thanks to the warm-up, features are ready from the first validation and test bar on
    assert validation.segments[0][0] == 0 and test.segments[0][0] == 0


def test_walk_forward_window_features_equal_the_full_history_features(btc, trend_fs) -> None:
    """A window built with warm-up sees exactly the features the full history has on those bars (no
    look-ahead from cutting the candles at the window's end, no loss from cutting at its start)."""
    from envs.market_data import MarketData

    split = wf.split_from_config(L2Config.default().walk_forward, 3600)
    validation = wf.validation_window(btc, trend_fs, split, 16)
    full = MarketData.from_candles(btc, trend_fs)
    lo = int(np.searchsorted(full.timestamps, validation.timestamps[0]))
    s, e = validation.segments[-1]
    np.testing.assert_allclose(validation.features[s:e], full.features[lo + s : lo + e], rtol=1e-5, atol=1e-5)


def test_walk_forward_slice_rows_clips_segments_to_the_slice(btc, trend_fs) -> None:
    split = wf.split_from_config(L2Config.default().walk_forward, 3600)
    md = wf.validation_window(btc, trend_fs, split, 16)
    part = wf.slice_rows(md, 100, 400)
    assert len(part) == 300 and part.timestamps[0] == md.timestamps[100]
    assert all(0 <= s < e <= 300 for s, e in part.segments)
    with pytest.raises(ValueError, match="slice_rows"):
        wf.slice_rows(md, 10, len(md) + 1)


def test_concat_vec_env_steps_each_symbol_like_its_own_trading_vec_env(btc, eth, trend_fs) -> None:
    from envs.vec_env import TradingVecEnv
    from training.multi_symbol_env import ConcatVecEnv

    split = wf.split_from_config(L2Config.default().walk_forward, 3600)
    mds = [wf.train_window(c, trend_fs, split) for c in (btc, eth)]
    both = ConcatVecEnv([TradingVecEnv(md, num_envs=2, specialist="trend") for md in mds])
    alone = [TradingVecEnv(md, num_envs=2, specialist="trend") for md in mds]
    both.seed(5)
    alone[0].seed(5)
    alone[1].seed(7)  # global env 2 of the concatenation is env 0 of the second child
    np.testing.assert_array_equal(both.reset(), np.concatenate([v.reset() for v in alone]))
    actions = np.array([2, 0, 1, 2])
    for _ in range(30):
        obs, rewards, dones, _ = both.step(actions)
        parts = [v.step(actions[2 * i : 2 * i + 2]) for i, v in enumerate(alone)]
        np.testing.assert_array_equal(obs, np.concatenate([p[0] for p in parts]))
        np.testing.assert_array_equal(rewards, np.concatenate([p[1] for p in parts]))
        np.testing.assert_array_equal(dones, np.concatenate([p[2] for p in parts]))


def test_evaluation_of_an_always_long_policy_equals_buy_and_hold_through_the_simulator(btc, trend_fs) -> None:
    """Played through the env, "always long" is buy-and-hold: the evaluation and the baseline share
    the one execution simulator (the test window has no gap, so the episode is one run)."""
    split = wf.split_from_config(L2Config.default().walk_forward, 3600)
    test = wf.test_window(btc, trend_fs, split, 16)
    assert len(test.segments) == 1
    long_index = ACTION_MODES[SPECIALISTS["trend"].action_mode].index(1.0)
    window, per_symbol = evaluate_window(
        [test], lambda obs: np.full(len(obs), long_index), config=L2Config.default(), specialist="trend"
    )
    agent, bh = window.agent, window.buy_and_hold
    assert agent.total_return == pytest.approx(bh.total_return, abs=1e-9)
    assert agent.sharpe == pytest.approx(bh.sharpe, abs=1e-9)
    assert agent.max_drawdown == pytest.approx(bh.max_drawdown, abs=1e-9)
    assert agent.turnover == pytest.approx(bh.turnover, rel=1e-9)
    assert per_symbol["BTCUSDT"]["agent"]["total_return"] == agent.total_return


def test_evaluation_of_a_flat_policy_has_zero_return_and_no_trades(btc, trend_fs) -> None:
    split = wf.split_from_config(L2Config.default().walk_forward, 3600)
    validation = wf.validation_window(btc, trend_fs, split, 16)
    flat_index = ACTION_MODES[SPECIALISTS["trend"].action_mode].index(0.0)
    window, _ = evaluate_window(
        [validation], lambda obs: np.full(len(obs), flat_index), config=L2Config.default(), specialist="trend"
    )
    assert window.agent.total_return == 0.0 and window.agent.turnover == 0.0 and window.agent.sharpe == 0.0
    assert window.buy_and_hold.turnover > 0.0


@pytest.mark.parametrize("algo", ["ppo", "a2c", "sac"])
def test_hyperparameter_files_are_rl_zoo3_entries_for_every_env_id(algo: str) -> None:
    table = yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text())
    assert set(table) == {spec.env_id for spec in SPECIALISTS.values()}
    for env_id in table:
        zoo, kwargs = split_hyperparams(load_hyperparams(algo, env_id))
        assert zoo["policy"] == "MlpPolicy" and zoo["n_timesteps"] > 0 and zoo["n_envs"] >= 1
        assert kwargs["policy_kwargs"] == {"net_arch": [64, 64]}


def test_hyperparameters_refuse_unknown_env_ids_and_code_in_policy_kwargs() -> None:
    with pytest.raises(ConfigError, match="did you mean 'L2Trend-v0'"):
        load_hyperparams("ppo", "L2Trend-v1")
    with pytest.raises(ConfigError, match="unsupported element"):
        parse_policy_kwargs("dict(net_arch=__import__('os').system('true'))")
    import torch

    assert parse_policy_kwargs("dict(activation_fn=nn.Tanh)") == {"activation_fn": torch.nn.Tanh}


def test_train_settings_reject_bad_values_with_the_field_named() -> None:
    from training.shared import TrainSettings

    with pytest.raises(ConfigError, match="timesteps=0"):
        TrainSettings(specialist="trend", timesteps=0)
    with pytest.raises(ValueError, match="did you mean 'trend'"):
        TrainSettings(specialist="trnd")


def test_l2_train_and_the_scripts_offer_the_documented_options(capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    from l2_tactical.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--data", "--timesteps", "--seed", "--out", "--n-envs", "--device", "mean_reversion", "all"):
        assert option in text
    script = subprocess.run(
        [sys.executable, str(PACKAGE_ROOT / "training" / "train_trend.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert script.returncode == 0 and "--timesteps" in script.stdout
