"""Ensemble validation: voting maths, consensus, confidence and adaptive weights on hand-made cases.

Expected values are worked out by hand in the comments, not produced by the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from l2_tactical.ensemble.confidence_calc import (
    composite_confidence,
    coverage,
    discrete_confidence,
    gaussian_confidence,
)
from l2_tactical.ensemble.consensus_builder import agreement, build_consensus, consensus_and_confidence
from l2_tactical.ensemble.performance import (
    PerformanceTracker,
    adaptive_weights,
    floor_weights,
    performance_score,
    regime_multipliers,
)
from l2_tactical.ensemble.voting_strategy import (
    combine_votes,
    confidence_weighted_vote,
    majority_vote,
    weighted_vote,
)


def test_weighted_vote_is_the_weight_average_of_exposures() -> None:
    # 0.4*1 + 0.35*(-0.5) + 0.25*0 = 0.225, total weight 1
    assert weighted_vote([1.0, -0.5, 0.0], [0.4, 0.35, 0.25]) == pytest.approx(0.225)
    # weights need not sum to 1: (2*1 + 1*(-1)) / 3
    assert weighted_vote([1.0, -1.0], [2.0, 1.0]) == pytest.approx(1 / 3)


def test_confidence_weighted_vote_lets_the_sure_voter_dominate() -> None:
    # weights equal; (0.9*1 + 0.1*(-1)) / (0.9 + 0.1) = 0.8, while the plain weighted vote is 0
    assert confidence_weighted_vote([1.0, -1.0], [0.9, 0.1], [1.0, 1.0]) == pytest.approx(0.8)
    assert weighted_vote([1.0, -1.0], [1.0, 1.0]) == pytest.approx(0.0)


def test_confidence_weighted_vote_with_no_confidence_is_flat() -> None:
    assert confidence_weighted_vote([1.0, -0.4], [0.0, 0.0], [0.5, 0.5]) == 0.0


def test_majority_vote_counts_heads_not_weights() -> None:
    # two longs (0.8, 0.4) outvote one heavy short; result = mean of the longs = 0.6
    assert majority_vote([0.8, 0.4, -1.0], [0.1, 0.1, 10.0]) == pytest.approx(0.6)


def test_majority_vote_tie_and_flat_majority_give_flat() -> None:
    assert majority_vote([1.0, -1.0], [1.0, 1.0]) == 0.0
    assert majority_vote([0.0, 0.01, 1.0], [1.0, 1.0, 1.0]) == 0.0  # two flat votes beat one long
    assert majority_vote([1.0, 0.5, -1.0], [1.0, 0.0, 1.0]) == 0.0  # zero weight does not vote -> tie


def test_combine_votes_dispatches_and_names_an_unknown_strategy() -> None:
    e, c, w = [1.0, -1.0, 0.5], [0.5, 0.5, 1.0], [1.0, 1.0, 1.0]
    assert combine_votes("weighted", e, c, w) == pytest.approx(0.5 / 3)
    # (0.5 - 0.5 + 0.5) / 2
    assert combine_votes("confidence_weighted", e, c, w) == pytest.approx(0.25)
    assert combine_votes("majority", e, c, w) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="ensemble.voting='avg'"):
        combine_votes("avg", e, c, w)


def test_votes_reject_out_of_range_inputs_naming_them() -> None:
    with pytest.raises(ValueError, match="exposures"):
        weighted_vote([1.5], [1.0])
    with pytest.raises(ValueError, match="weights"):
        weighted_vote([0.5], [-1.0])
    with pytest.raises(ValueError, match="confidences"):
        confidence_weighted_vote([0.5], [1.2], [1.0])
    with pytest.raises(ValueError, match="differ in length"):
        weighted_vote([0.5, 0.1], [1.0])


@given(st.lists(st.tuples(st.floats(-1, 1), st.floats(0, 1), st.floats(0.01, 5)), min_size=1, max_size=6))
def test_every_strategy_stays_within_the_range_of_the_votes(votes: list[tuple[float, float, float]]) -> None:
    e, c, w = (np.array(x) for x in zip(*votes, strict=True))
    for strategy in ("weighted", "confidence_weighted", "majority"):
        out = combine_votes(strategy, e, c, w)
        assert min(e.min(), 0.0) - 1e-12 <= out <= max(e.max(), 0.0) + 1e-12


def test_consensus_is_the_weighted_share_backing_the_result() -> None:
    # weighted vote: 0.4*1 + 0.35*0.6 - 0.25*1 = 0.36 (long). Agreement 1, 1, 0 -> 0.75
    result = build_consensus([1.0, 0.6, -1.0], [0.9, 0.9, 0.9], [0.4, 0.35, 0.25], "weighted")
    assert result.exposure == pytest.approx(0.36)
    assert result.agreement == (1.0, 1.0, 0.0)
    assert result.consensus == pytest.approx(0.75)


def test_unanimous_ensemble_has_full_consensus_and_a_flat_voter_counts_half() -> None:
    assert build_consensus([0.5, 1.0], [1, 1], [1, 1], "weighted").consensus == 1.0
    assert agreement([1.0, 0.0, -1.0], 0.5).tolist() == [1.0, 0.5, 0.0]
    # flat result: flat voters agree, directional ones are half
    assert agreement([0.0, 1.0], 0.0).tolist() == [1.0, 0.5]


def test_discrete_confidence_is_zero_for_a_uniform_policy_and_one_for_a_certain_one() -> None:
    assert discrete_confidence([1 / 3] * 3) == pytest.approx(0.0)
    assert discrete_confidence([0.0, 1.0, 0.0]) == pytest.approx(1.0)
    # p=0.6 of 5 actions: (0.6 - 0.2) / 0.8 = 0.5
    assert discrete_confidence([0.1, 0.1, 0.6, 0.1, 0.1]) == pytest.approx(0.5)


def test_gaussian_confidence_is_the_rescaled_probability_of_keeping_the_sign() -> None:
    # P(N(1, 1) > 0) = Phi(1) = 0.841345; rescaled 2*0.841345 - 1 = 0.682689
    assert gaussian_confidence(1.0, 1.0) == pytest.approx(0.682689, abs=1e-6)
    assert gaussian_confidence(-1.0, 1.0) == pytest.approx(0.682689, abs=1e-6)
    assert gaussian_confidence(0.0, 0.3) == 0.0
    assert gaussian_confidence(0.2, 0.01) > gaussian_confidence(0.2, 0.5)


def test_composite_confidence_drops_opposed_conviction_and_missing_weight() -> None:
    # all agree, full coverage: weighted mean confidence (0.4*0.8 + 0.6*0.5) / 1 = 0.62
    assert composite_confidence([0.8, 0.5], [1, 1], [0.4, 0.6], coverage=1.0) == pytest.approx(0.62)
    # second voter opposes: only 0.4*0.8 = 0.32 remains
    assert composite_confidence([0.8, 0.5], [1, 0], [0.4, 0.6], coverage=1.0) == pytest.approx(0.32)
    # a third voter (weight 0.25 of 1.0 configured) missing: coverage 0.75
    assert coverage([0.4, 0.35], [0.4, 0.35, 0.25]) == pytest.approx(0.75)
    assert composite_confidence([0.8, 0.5], [1, 1], [0.4, 0.6], coverage=0.75) == pytest.approx(0.465)


def test_floor_weights_keeps_every_share_above_the_floor_and_sums_to_one() -> None:
    w = floor_weights([1.0, 0.0, 0.0], 0.05)
    assert w.tolist() == pytest.approx([0.9, 0.05, 0.05])
    assert floor_weights([1.0, 1.0, 1.0], 0.5).tolist() == pytest.approx([1 / 3] * 3)


@given(st.lists(st.floats(0, 10), min_size=1, max_size=6), st.floats(0, 0.3))
def test_floored_weights_are_a_distribution_respecting_the_floor(weights: list[float], floor: float) -> None:
    w = floor_weights(weights, floor)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w >= min(floor, 1.0 / len(weights)) - 1e-12)


def test_performance_score_sign_follows_realised_returns() -> None:
    assert performance_score([0.01, 0.012, 0.008, 0.011]) > 0.9
    assert performance_score([-0.01, -0.012, -0.008, -0.011]) < -0.9
    assert performance_score([0.01]) == 0.0  # too few bars
    # t = mean/std*sqrt(n): mean 0.001, std(ddof=1) of [0, .002, 0, .002] = 0.0011547, n=4 -> t=1.732
    assert performance_score([0.0, 0.002, 0.0, 0.002]) == pytest.approx(math.tanh(1.7320508 / 2), rel=1e-6)


def test_weights_move_toward_the_specialist_that_made_money() -> None:
    tracker = PerformanceTracker(["trend", "mean_reversion"], window=50)
    rng = np.random.default_rng(7)
    for _ in range(50):
        bar = float(rng.normal(0.001, 0.01))
        # trend was long, mean reversion short: trend earns the bar, mean reversion loses it
        tracker.record({"trend": 1.0, "mean_reversion": -1.0}, abs(bar))
    scores = tracker.scores()
    assert scores["trend"] > 0 > scores["mean_reversion"]
    base = [0.5, 0.5]
    w = adaptive_weights(base, [scores["trend"], scores["mean_reversion"]], [1.0, 1.0],
                         sensitivity=2.0, min_weight=0.05)
    assert w[0] > 0.5 > w[1] >= 0.05


def test_performance_multiplier_is_bounded_by_sensitivity() -> None:
    # best possible vs worst possible score: ratio of multipliers at most e^(2*s)
    w = adaptive_weights([0.5, 0.5], [1.0, -1.0], [1.0, 1.0], sensitivity=1.0, min_weight=0.0)
    assert w[0] / w[1] == pytest.approx(math.e**2)
    w = adaptive_weights([0.5, 0.5], [5.0, -5.0], [1.0, 1.0], sensitivity=1.0, min_weight=0.0)  # clipped
    assert w[0] / w[1] == pytest.approx(math.e**2)


def test_performance_window_forgets_old_bars() -> None:
    tracker = PerformanceTracker(["a"], window=3)
    for r in (1.0, 2.0, 3.0, 4.0):
        tracker.record({"a": 0.5}, r)
    assert tracker.returns("a") == (1.0, 1.5, 2.0)


@pytest.mark.parametrize(("regime", "favoured"), [("trending", 0), ("ranging", 1), ("volatile", 2)])
def test_regime_boosts_the_specialist_it_favours(regime: str, favoured: int) -> None:
    specs = ["trend_following", "mean_reversion", "volatility_breakout"]
    m = regime_multipliers(specs, regime, boost=1.5)
    assert m[favoured] == 1.5 and sum(m) == pytest.approx(3.5)
    half = regime_multipliers(specs, regime, boost=1.5, strength=0.5)
    assert half[favoured] == pytest.approx(1.25)
    assert regime_multipliers(specs, None, boost=1.5).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="regime='bull'"):
        regime_multipliers(specs, "bull", boost=1.5)


@given(st.lists(st.floats(-0.05, 0.05), min_size=0, max_size=40), st.integers(2, 10))
def test_tracker_running_score_equals_the_score_of_its_window(returns: list[float], window: int) -> None:
    tracker = PerformanceTracker(["a"], window=window)
    for r in returns:
        tracker.record({"a": 1.0}, r)
    assert tracker.scores()["a"] == pytest.approx(performance_score(list(tracker.returns("a"))), abs=1e-6)


@given(st.lists(st.tuples(st.sampled_from([0.0, 0.0, 1.0, 0.5]), st.floats(-0.05, 0.05)), max_size=60),
       st.integers(2, 10))
def test_tracker_score_is_exactly_the_score_of_its_window(bars: list[tuple[float, float]], window: int) -> None:
    # windows of zeros (a flat specialist) take a shortcut; every window must score what its returns score
    tracker = PerformanceTracker(["a"], window=window)
    for exposure, r in bars:
        tracker.record({"a": exposure}, r)
        assert tracker.scores()["a"] == performance_score(list(tracker.returns("a")))


_UNIT = st.floats(0.0, 1.0)


@given(st.lists(st.tuples(st.floats(-1.0, 1.0), _UNIT, st.floats(0.0, 5.0)), min_size=1, max_size=5),
       st.sampled_from(["weighted", "confidence_weighted", "majority"]))
def test_consensus_of_plain_lists_equals_the_general_path(votes: list[tuple[float, float, float]],
                                                          strategy: str) -> None:
    # plain float lists take an inlined path; numpy arrays take the general one: bit for bit equal
    e, c, w = (list(x) for x in zip(*votes, strict=True))
    fast = build_consensus(e, c, w, strategy)
    general = build_consensus(np.array(e), np.array(c), np.array(w), strategy)
    assert repr(fast) == repr(general)  # repr: 0.0 and -0.0 differ too
    assert repr(composite_confidence(c, fast.agreement, w, coverage=0.5)) == repr(composite_confidence(
        np.array(c), np.array(fast.agreement), np.array(w), coverage=0.5))


@pytest.mark.parametrize("strategy", ["weighted", "confidence_weighted"])
@pytest.mark.parametrize(("e", "c", "w", "match"), [
    ([1.5, 0.0], [0.5, 0.5], [1.0, 1.0], r"exposures=\[1.5, 0.0\] must be in \[-1, 1\]"),
    ([0.5, float("nan")], [0.5, 0.5], [1.0, 1.0], "exposures=.* must be finite"),
    ([0.5, 0.0], [0.5, 0.5], [1.0, -1.0], r"weights=\[1.0, -1.0\] must be >= 0"),
    ([0.5, 0.0], [0.5, 0.5], [1.0, float("inf")], "weights=.* must be finite"),
    ([0.5], [0.5], [1.0, 1.0], r"exposures \(1\), weights \(2\)"),
])
def test_consensus_rejects_bad_votes_naming_them(e: list[float], c: list[float], w: list[float], match: str,
                                                 strategy: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_consensus(e, c, w, strategy)


def test_confidence_weighted_consensus_rejects_a_confidence_outside_unit() -> None:
    with pytest.raises(ValueError, match=r"confidences=\[1.5, 0.5\] must be in \[0, 1\]"):
        build_consensus([0.5, 0.0], [1.5, 0.5], [1.0, 1.0], "confidence_weighted")


@given(st.lists(st.tuples(st.floats(-1.0, 1.0), _UNIT, st.floats(0.0, 5.0)), min_size=1, max_size=5),
       st.lists(st.floats(0.0, 5.0), max_size=3),
       st.sampled_from(["weighted", "confidence_weighted", "majority"]))
def test_ensemble_vote_in_one_call_equals_the_three_functions(votes: list[tuple[float, float, float]],
                                                              silent: list[float], strategy: str) -> None:
    # the voters' weights plus those of specialists that did not answer make the configured weights
    e, c, w = (list(x) for x in zip(*votes, strict=True))
    cons, cover, conf = consensus_and_confidence(e, c, w, w + silent, strategy)
    general = build_consensus(np.array(e), np.array(c), np.array(w), strategy)
    general_cover = coverage(np.array(w), np.array(w + silent))
    general_conf = composite_confidence(np.array(c), np.array(general.agreement), np.array(w), coverage=general_cover)
    assert repr((cons, cover, conf)) == repr((general, general_cover, general_conf))
