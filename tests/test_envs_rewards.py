"""Reward functions: table tests, the differential Sharpe ratio's definition, scalar == numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from envs.rewards import (
    BatchReward,
    RewardSpec,
    differential_sharpe,
    drawdown_penalty,
    entry_penalty,
    holding_penalty,
    log_growth,
    step_reward,
)
from envs.trading_env import NUMPY_OPS


def test_log_growth_is_the_log_of_the_equity_ratio():
    assert log_growth(100.0, 110.0) == pytest.approx(math.log(1.1))
    assert log_growth(100.0, 100.0) == 0.0
    assert log_growth(200.0, 100.0) == pytest.approx(-math.log(2.0))


def test_log_growth_stays_finite_when_equity_is_wiped_out():
    assert math.isfinite(log_growth(100.0, 0.0))
    assert math.isfinite(log_growth(100.0, -5.0))
    assert log_growth(100.0, -5.0) == log_growth(100.0, 0.0) < log_growth(100.0, 1.0)


def test_drawdown_penalty_charges_only_a_deepening_drawdown():
    assert drawdown_penalty(0.10, 0.15, 2.0) == pytest.approx(0.10)
    assert drawdown_penalty(0.15, 0.10, 2.0) == 0.0
    assert drawdown_penalty(0.0, 0.0, 2.0) == 0.0


def test_holding_penalty_starts_after_the_free_bars():
    assert holding_penalty(10.0, 0.01, 12.0) == 0.0
    assert holding_penalty(12.0, 0.01, 12.0) == 0.0
    assert holding_penalty(15.0, 0.01, 12.0) == pytest.approx(0.03)


def test_entry_penalty_charges_only_the_bar_a_position_is_opened_or_flipped():
    assert entry_penalty(1.0, 0.002) == pytest.approx(0.002)
    assert entry_penalty(0.0, 0.002) == 0.0  # flat
    assert entry_penalty(2.0, 0.002) == 0.0  # still holding


def test_step_reward_subtracts_the_entry_penalty_before_scaling():
    spec = RewardSpec(entry_weight=0.002, scale=100.0)
    opened, _, _ = step_reward(spec, 100.0, 100.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    held, _, _ = step_reward(spec, 100.0, 100.0, 0.0, 0.0, 2.0, 0.0, 0.0)
    assert (opened, held) == (pytest.approx(-0.2), 0.0)


def _ema_sharpe(mean: float, second: float) -> float:
    return mean / math.sqrt(second - mean * mean)


@given(ret=st.floats(-0.05, 0.05), mean=st.floats(-0.01, 0.01), spread=st.floats(1e-4, 1e-3))
def test_differential_sharpe_is_the_derivative_of_the_moving_sharpe_ratio(ret, mean, spread):
    # Moody & Saffell: D_t = dS_t/d(eta) at eta = 0, with A, B exponential moving moments.
    second = mean * mean + spread
    d, _, _ = differential_sharpe(ret, mean, second, 0.0)
    eta = 1e-7
    _, a1, b1 = differential_sharpe(ret, mean, second, eta)
    numeric = (_ema_sharpe(a1, b1) - _ema_sharpe(mean, second)) / eta
    assert d == pytest.approx(numeric, rel=1e-3, abs=1e-3)


def test_differential_sharpe_updates_the_moments_and_is_zero_without_variance():
    d, a, b = differential_sharpe(0.02, 0.0, 0.0, 0.5)
    assert d == 0.0
    assert (a, b) == (pytest.approx(0.01), pytest.approx(0.0002))


def test_reward_functions_give_the_same_numbers_on_floats_and_arrays():
    # equal up to float64 rounding: numpy's vectorised log may differ from libm's in the last bit
    rng = np.random.default_rng(0)
    prev = rng.uniform(50, 150, 32)
    eq = prev * rng.uniform(0.9, 1.1, 32)
    dd0, dd1 = rng.uniform(0, 0.3, 32), rng.uniform(0, 0.3, 32)
    bars = rng.integers(0, 50, 32).astype(float)
    mean, second = rng.uniform(-1e-3, 1e-3, 32), rng.uniform(1e-5, 1e-4, 32)
    for spec in (
        RewardSpec(drawdown_weight=1.0),
        RewardSpec(holding_weight=1e-3, holding_free_bars=5),
        RewardSpec(entry_weight=2e-3, drawdown_weight=0.1, scale=100.0),
        RewardSpec(sharpe=True, sharpe_eta=0.05, drawdown_weight=0.5),
    ):
        vec = step_reward(spec, prev, eq, dd0, dd1, bars, mean, second, NUMPY_OPS)
        for i in range(32):
            one = step_reward(spec, prev[i], eq[i], dd0[i], dd1[i], bars[i], mean[i], second[i])
            assert [float(v[i]) for v in vec] == pytest.approx([float(v) for v in one], rel=1e-13, abs=1e-300)


@pytest.mark.parametrize(
    "spec",
    [
        RewardSpec(drawdown_weight=1.0),
        RewardSpec(holding_weight=1e-3, holding_free_bars=5),
        RewardSpec(entry_weight=2e-3, drawdown_weight=0.1, scale=100.0),
        RewardSpec(sharpe=True, sharpe_eta=0.05, drawdown_weight=0.5),
        RewardSpec(sharpe=True, sharpe_clip=0.5, holding_weight=1e-4, entry_weight=1e-3, scale=3.0),
        RewardSpec(),
    ],
)
def test_batch_reward_equals_step_reward_on_arrays_bit_for_bit(spec):
    rng = np.random.default_rng(1)
    n = 64
    prev = rng.uniform(50, 150, n)
    eq = prev * rng.uniform(0.9, 1.1, n)
    eq[:4] = [0.0, -5.0, 1e-9, prev[3]]  # ruin, a floored ratio, no change
    dd0, dd1 = rng.uniform(0, 0.3, n), rng.uniform(0, 0.3, n)
    dd1[4:8] = dd0[4:8]  # an unchanged drawdown
    bars = rng.integers(0, 4, n).astype(float)  # 0 (flat), 1 (entry) and more
    mean, second = rng.uniform(-1e-3, 1e-3, n), rng.uniform(1e-5, 1e-4, n)
    second[8:12] = mean[8:12] ** 2  # no variance: the differential Sharpe ratio is 0 there
    batch = BatchReward(spec, n)
    for _ in range(3):  # the moments carry over from call to call
        want, want_mean, want_second = step_reward(spec, prev, eq, dd0, dd1, bars, mean, second, NUMPY_OPS)
        out, got_mean, got_second = np.empty(n), mean.copy(), second.copy()
        assert batch(prev, eq, dd0, dd1, bars, got_mean, got_second, out) is out
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(got_mean, want_mean)
        np.testing.assert_array_equal(got_second, want_second)
        assert out.tobytes() == np.asarray(want, dtype=np.float64).tobytes()  # -0.0 vs 0.0 too
        mean, second = want_mean, want_second
        eq = eq[::-1].copy()


def test_step_reward_combines_the_terms_of_the_spec():
    spec = RewardSpec(drawdown_weight=2.0, holding_weight=0.001, holding_free_bars=1.0, scale=10.0)
    r, _, _ = step_reward(spec, 100.0, 99.0, 0.0, 0.01, 3.0, 0.0, 0.0)
    assert r == pytest.approx(10.0 * (math.log(0.99) - 2.0 * 0.01 - 0.001 * 2.0))


@pytest.mark.parametrize("field,value", [("drawdown_weight", -1.0), ("scale", math.nan), ("holding_weight", math.inf)])
def test_reward_spec_rejects_bad_weights_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        RewardSpec(**{field: value})
