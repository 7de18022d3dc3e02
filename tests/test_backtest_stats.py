"""Deflated Sharpe ratio, PBO (CSCV) and purged CV splits on cases whose answers follow from the papers."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from l2_tactical.backtest import stats

DATA = Path(__file__).resolve().parents[1] / "data"


def test_dsr_reproduces_the_numerical_example_of_bailey_and_lopez_de_prado_2014() -> None:
    # Section "A numerical example": 100 trials, best annualised SR 2.5 over 5 years of daily
    # returns (T = 1250), variance of the annualised SRs 1/2, skew -3, kurtosis 10.
    # The paper finds E[max SR] ~ 0.1132 per day and DSR ~ 0.9004.
    sr = 2.5 / math.sqrt(250)
    variance_per_day = 0.5 / 250
    assert stats.expected_max_sharpe(100, variance_per_day) == pytest.approx(0.1132, abs=5e-5)
    dsr = stats.deflated_sharpe_ratio(sr, 100, variance_per_day, 1250, skew=-3.0, kurtosis=10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-4)


def test_psr_of_normal_returns_is_the_normal_cdf_of_the_sharpe_t_statistic() -> None:
    sr, n = 0.05, 400
    expected = NormalDist().cdf(sr * math.sqrt(n - 1) / math.sqrt(1 + sr**2 / 2))
    assert stats.probabilistic_sharpe_ratio(sr, 0.0, n) == pytest.approx(expected, rel=1e-12)
    assert stats.probabilistic_sharpe_ratio(0.0, 0.0, n) == pytest.approx(0.5)


def test_negative_skew_and_fat_tails_lower_the_psr_of_a_positive_sharpe() -> None:
    normal = stats.probabilistic_sharpe_ratio(0.05, 0.0, 500)
    assert stats.probabilistic_sharpe_ratio(0.05, 0.0, 500, skew=-2.0, kurtosis=3.0) < normal
    assert stats.probabilistic_sharpe_ratio(0.05, 0.0, 500, skew=0.0, kurtosis=20.0) < normal


def test_dsr_equals_psr_for_one_trial_and_falls_below_it_with_more() -> None:
    sr, var, n = 0.04, 0.0004, 2000
    psr = stats.probabilistic_sharpe_ratio(sr, 0.0, n)
    assert stats.deflated_sharpe_ratio(sr, 1, var, n) == pytest.approx(psr)
    dsrs = [stats.deflated_sharpe_ratio(sr, k, var, n) for k in (2, 5, 10, 100, 1000)]
    assert all(d < psr for d in dsrs)
    assert all(a > b for a, b in itertools.pairwise(dsrs))  # more trials, more deflation


def test_expected_max_sharpe_approximates_the_expected_maximum_of_standard_normals() -> None:
    # The paper's approximation of E[max of N iid N(0, 1)] against the exact order-statistic
    # expectations (tabulated: 1.53875, 2.50759, 3.24144), and scaled by sqrt(V).
    for n, exact in ((10, 1.53875), (100, 2.50759), (1000, 3.24144)):
        assert stats.expected_max_sharpe(n, 1.0) == pytest.approx(exact, rel=0.03)
        assert stats.expected_max_sharpe(n, 0.04) == pytest.approx(0.2 * stats.expected_max_sharpe(n, 1.0))


def test_sharpe_moments_of_real_btc_returns_show_fat_tails() -> None:
    close = pd.read_csv(DATA / "BTCUSDT-1h.csv.gz", usecols=["close"])["close"].to_numpy()
    r = close[1:] / close[:-1] - 1.0
    sr, skew, kurt, n = stats.sharpe_moments(r)
    assert n == r.size
    assert sr == pytest.approx(r.mean() / r.std(ddof=1))
    assert skew == pytest.approx(pd.Series(r).skew(), rel=1e-3)  # pandas uses the adjusted estimator
    assert kurt == pytest.approx(pd.Series(r).kurt() + 3.0, rel=1e-2)
    assert kurt > 10  # hourly crypto returns are far from normal


def test_bad_dsr_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="n_trials=0"):
        stats.expected_max_sharpe(0, 1.0)
    with pytest.raises(ValueError, match="n_obs=1"):
        stats.probabilistic_sharpe_ratio(0.1, 0.0, 1)
    with pytest.raises(ValueError, match="sr_variance=-1"):
        stats.deflated_sharpe_ratio(0.1, 3, -1.0, 100)


# ----------------------------------------------------------------------------- PBO


def _noise(t: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, size=(t, n))


def test_pbo_is_zero_when_one_strategy_dominates_in_every_split() -> None:
    m = _noise(1600, 20, seed=1)
    m[:, 7] = m.max(axis=1) + 0.001  # earns more than every other strategy on every bar
    result = stats.pbo_cscv(m, n_splits=8)
    assert result.n_combinations == math.comb(8, 4)
    assert result.pbo == 0.0
    assert np.all(result.logits == pytest.approx(math.log(20 / 1)))  # rank N of N: w = N / (N + 1)


def test_pbo_of_pure_noise_strategies_is_about_one_half() -> None:
    pbos = [stats.pbo_cscv(_noise(1000, 30, seed=s), n_splits=10).pbo for s in range(8)]
    assert 0.35 < float(np.mean(pbos)) < 0.75


def test_pbo_is_one_when_the_in_sample_winner_always_reverses() -> None:
    # two regimes per block: strategy A earns in the first half of every block, B in the second;
    # with 2 splits the in-sample winner is always the out-of-sample loser.
    m = np.zeros((400, 2))
    m[:200, 0], m[200:, 1] = 0.01, 0.01
    m += _noise(400, 2, seed=3) * 0.1
    result = stats.pbo_cscv(m, n_splits=2)
    assert result.pbo == 1.0
    assert np.all(result.oos_performance < result.is_best_performance)


def test_pbo_with_a_custom_metric_matches_the_default_sharpe_path() -> None:
    m = _noise(600, 6, seed=11) + np.linspace(-2e-4, 3e-4, 6)

    def sharpe(rows: np.ndarray) -> np.ndarray:
        return rows.mean(axis=0) / rows.std(axis=0, ddof=1)

    for embargo in (0, 5):
        fast = stats.pbo_cscv(m, n_splits=6, embargo=embargo)
        slow = stats.pbo_cscv(m, n_splits=6, embargo=embargo, metric=sharpe)
        np.testing.assert_allclose(fast.logits, slow.logits)
        np.testing.assert_allclose(fast.oos_performance, slow.oos_performance, rtol=1e-9)
        assert fast.pbo == slow.pbo


def test_pbo_on_real_sma_variants_is_a_probability_with_its_logits() -> None:
    close = pd.read_csv(DATA / "ETHUSDT-1h.csv.gz", usecols=["close"])["close"].to_numpy()[-8000:]
    r = close[1:] / close[:-1] - 1.0
    cols = []
    for fast, slow in [(6, 24), (12, 48), (24, 96), (24, 168), (48, 240), (72, 336)]:
        f = pd.Series(close).rolling(fast).mean().to_numpy()
        s = pd.Series(close).rolling(slow).mean().to_numpy()
        cols.append(np.nan_to_num((f > s).astype(float))[:-1] * r)  # long over the next bar
    result = stats.pbo_cscv(np.column_stack(cols), n_splits=10)
    assert 0.0 <= result.pbo <= 1.0
    assert result.pbo == pytest.approx(np.mean(result.logits <= 0))
    assert set(result.to_dict()) >= {"pbo", "logits", "prob_oos_loss", "n_combinations"}


def test_pbo_rejects_odd_splits_and_single_strategies() -> None:
    with pytest.raises(ValueError, match="n_splits=5"):
        stats.pbo_cscv(_noise(100, 3, 0), n_splits=5)
    with pytest.raises(ValueError, match=r"N >= 2 strategies, got \(100, 1\)"):
        stats.pbo_cscv(_noise(100, 1, 0), n_splits=4)


# ---------------------------------------------------------------------------- CPCV


def test_cpcv_splits_purge_overlapping_labels_and_embargo_after_the_test_block() -> None:
    splits = stats.cpcv_splits(120, 6, 2, label_horizon=3, embargo=2)
    assert len(splits) == math.comb(6, 2)
    for train, test in splits:
        assert np.intersect1d(train, test).size == 0
        test_set = set(test.tolist())
        for i in train.tolist():  # no train label window [i, i+3] touches a test label window
            assert not any(j in test_set for j in range(i - 3, i + 4))
            assert not any(j in test_set for j in range(i - 5, i))  # embargo of 2 after label reach


def test_cpcv_without_purge_partitions_the_rows_and_counts_backtest_paths() -> None:
    splits = stats.cpcv_splits(60, 6, 2)
    for train, test in splits:
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(60))
    tested = np.zeros(60, dtype=int)
    for _, test in splits:
        tested[test] += 1
    assert np.all(tested == stats.n_backtest_paths(6, 2))  # each row is tested once per path
