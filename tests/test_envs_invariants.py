"""Accounting invariants under random play on the real BTCUSDT-1h candles."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs.market_data import as_market_data

STEPS = 4000


@pytest.fixture(scope="module")
def md(data_dir):
    return as_market_data(data_dir / "BTCUSDT-1h.csv.gz", "trend")


def _random_play(md, mode: str, margin: bool, seed: int = 0):
    env = gym.make("L2Trend-v0", data=md, action_mode=mode, margin=margin, max_episode_steps=300)
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    raw = env.unwrapped
    prev = {"cash": raw.cash, "qty": raw.qty, "t": raw.t, "equity": raw.equity}
    for _ in range(STEPS):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        yield raw, prev, obs, reward, info
        prev = {"cash": raw.cash, "qty": raw.qty, "t": raw.t, "equity": raw.equity}
        if terminated or truncated:
            env.reset()
            prev = {"cash": raw.cash, "qty": raw.qty, "t": raw.t, "equity": raw.equity}


MODES = [("discrete3", False), ("discrete5", True), ("continuous", False), ("continuous", True)]


@pytest.mark.parametrize("mode,margin", MODES)
def test_equity_is_cash_plus_position_value_at_the_close(md, mode, margin):
    for raw, _, _, _, info in _random_play(md, mode, margin):
        t = info["t"]
        assert info["equity"] == pytest.approx(info["cash"] + info["qty"] * md.close[t], rel=1e-12)
        assert raw.equity == info["equity"]


@pytest.mark.parametrize("mode,margin", MODES)
def test_cash_moves_only_by_the_traded_notional_fee_and_borrow_cost(md, mode, margin):
    for raw, prev, _, _, info in _random_play(md, mode, margin):
        assert info["qty"] == pytest.approx(prev["qty"] + info["traded"], abs=1e-12)
        borrow = max(-info["qty"], 0.0) * md.close[info["t"]] * raw.params.borrow_rate
        expected = prev["cash"] - info["traded"] * info["price"] - info["fee"] - borrow
        assert info["cash"] == pytest.approx(expected, rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("mode,margin", MODES)
def test_fees_are_never_negative_and_fills_stay_inside_the_next_bar(md, mode, margin):
    traded = 0
    for raw, prev, _, _, info in _random_play(md, mode, margin):
        t = info["t"]
        assert t == prev["t"] + 1  # the decision of bar t-1 fills on bar t
        assert info["fee"] >= 0.0
        if info["traded"] != 0.0:
            traded += 1
            assert md.low[t] <= info["price"] <= md.high[t]
            costs = raw.params.costs
            worst = costs.fixed_impact + costs.volatility_slippage * (md.high[t] - md.low[t]) / md.open[t]
            assert abs(info["price"] / md.open[t] - 1.0) <= worst + 1e-12  # at the open, not the close just seen
            assert info["fee"] == pytest.approx(abs(info["traded"]) * info["price"] * costs.fee_rate, rel=1e-12)
    assert traded > STEPS // 10


def test_spot_mode_never_shorts_nor_borrows_cash(md):
    for _, _, obs, _, info in _random_play(md, "discrete3", False):
        assert info["qty"] >= 0.0
        assert info["cash"] >= -1e-9
        assert 0.0 <= obs[-4] <= 1.0 + 1e-6


def test_margin_mode_shorts_and_pays_borrow_cost(md):
    shorts = 0
    for _raw, prev, _, _, info in _random_play(md, "discrete3", True):
        if info["qty"] < 0:
            shorts += 1
            paid = prev["cash"] - info["traded"] * info["price"] - info["fee"] - info["cash"]
            assert paid > 0.0
    assert shorts > STEPS // 10


def test_observation_is_the_window_of_feature_rows_ending_at_the_bar_just_closed(md):
    for raw, _, obs, _, info in _random_play(md, "discrete3", False):
        t, w, k = info["t"], raw.params.window, md.n_features
        np.testing.assert_array_equal(obs[: w * k], md.features[t - w + 1 : t + 1].ravel())
        assert obs in raw.observation_space


def test_episodes_never_step_across_a_gap(md):
    step = np.int64(3_600_000_000_000)
    for _, prev, _, _, info in _random_play(md, "continuous", True):
        assert md.timestamps[info["t"]] - md.timestamps[prev["t"]] == step


def test_an_episode_truncates_at_the_end_of_its_segment(md):
    env = gym.make("L2Trend-v0", data=md)
    _s, e = md.segments[3]
    env.reset(options={"start": e - 3})
    results = [env.step(1)[2:4] for _ in range(2)]
    assert results == [(False, False), (False, True)]
    assert env.unwrapped.t == e - 1
