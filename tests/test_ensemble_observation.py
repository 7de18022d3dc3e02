"""Live observations (incremental FeatureSet rows + PositionState) equal the training env's observations.

l2_tactical must not import envs, so the layout lives in
``l2_tactical.finrl_models.feature_processor``; this test holds the two sides together on real
BTCUSDT 1h bars, for the same bar and the same position state.
"""

from __future__ import annotations

import numpy as np
import pytest

from l2_tactical.data.features import feature_set
from l2_tactical.finrl_models.feature_processor import (
    STATE_HIGH,
    STATE_LOW,
    MatrixWindow,
    ObservationWindow,
    PositionState,
    infer_window,
    observation_bounds,
    position_state,
    ready_runs,
    window_observations,
)
from l2_tactical.technical.feature_updater import MatrixFeed, ohlcv_arrays
from tests.test_fast_policy import btc_1h_tail, make_env


@pytest.mark.parametrize("specialist", ["trend", "mean_reversion", "volatility"])
def test_live_observation_equals_the_env_observation_for_the_same_bar_and_position(specialist: str) -> None:
    candles = btc_1h_tail(1500)
    env = make_env(specialist, candles, action_mode="continuous")
    raw = env.unwrapped
    fs = feature_set(specialist, "1h")
    assert raw.data.feature_names == fs.names and raw.data.schema_hash == fs.schema_hash
    window = infer_window(env.observation_space.shape[0], len(fs))
    obs, _ = env.reset(options={"start": 1200})
    rng = np.random.default_rng(5)
    for _ in range(40):  # trade so the position state is not trivial
        obs, *_ = env.step(rng.uniform(-1, 1, size=1).astype(np.float32))
    t = raw.t
    updater = fs.incremental()
    live = ObservationWindow(np.arange(len(fs)), window)
    frame = candles.frame
    for ts, o, h, lo, c, v in zip(frame.index[: t + 1], *(frame[k].to_numpy()[: t + 1] for k in
                                                           ("open", "high", "low", "close", "volume")), strict=True):
        live.push(updater.update((ts, o, h, lo, c, v)), updater.ready)
    close = float(frame["close"].iloc[t])
    state = np.array(position_state(raw.qty, close, raw.equity, raw._entry, raw._bars, raw._dd,
                                    raw.params.holding_scale_bars), dtype=np.float32)
    np.testing.assert_array_equal(live.observation(state), obs)
    batch = window_observations(fs.build(frame).values, np.array([t]), window, state)
    np.testing.assert_array_equal(batch[0], obs)
    low, high = observation_bounds(fs.lower, fs.upper, window)
    np.testing.assert_array_equal(low, env.observation_space.low)
    np.testing.assert_array_equal(high, env.observation_space.high)


def test_position_state_vector_scales_like_the_env() -> None:
    # exposure 4 clips to 3; pnl 0.1 with 12 bars held -> 12 / (12 + 24); drawdown 1.5 clips to 1
    v = PositionState(exposure=4.0, unrealised_pnl=0.1, bars_in_position=12, drawdown=1.5).vector()
    assert v.tolist() == pytest.approx([3.0, 0.1, 1 / 3, 1.0])
    # flat: unrealised pnl is 0 whatever is passed
    assert PositionState(unrealised_pnl=0.3).vector().tolist() == [0.0, 0.0, 0.0, 0.0]
    assert (STATE_LOW, STATE_HIGH) == ((-3.0, -1.0, 0.0, 0.0), (3.0, 5.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="PositionState.exposure=nan"):
        PositionState(exposure=float("nan"))


def test_infer_window_refuses_a_size_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match="not window"):
        infer_window(100, 19)


@pytest.mark.parametrize("specialist", ["trend", "volatility"])
def test_matrix_window_gives_the_observations_of_a_pushed_window(specialist: str) -> None:
    # a backtest reads its windows out of the precomputed matrix: same readiness runs, same observations,
    # from the first (not yet ready) rows on
    candles = btc_1h_tail(700)
    fs = feature_set(specialist, "1h")
    matrix = fs.build(candles)
    _, ts, cols = ohlcv_arrays(candles, "1h")
    feed = MatrixFeed(matrix.values, matrix.ready, fs.names, "1h", ts, cols)
    columns = np.arange(0, len(fs), 2)  # a subset, as a specialist's columns in a larger plan
    pushed, sliced = ObservationWindow(columns, 16), MatrixWindow(feed, matrix.values, matrix.ready, columns, 16)
    state = PositionState(exposure=0.3, unrealised_pnl=-0.01, bars_in_position=5, drawdown=0.02).vector()
    compared = 0
    for bar in zip(ts.tolist(), *(c.tolist() for c in cols), strict=True):
        feed.advance(*bar)
        pushed.push(feed.row(), feed.ready)
        sliced.push(feed.row(), feed.ready)
        assert sliced.run == pushed.run
        if pushed.run >= 16:
            assert sliced.observation(state).tobytes() == pushed.observation(state).tobytes()
            compared += 1
    assert compared > 400 and sliced.full


def test_ready_runs_count_consecutive_ready_rows() -> None:
    rng = np.random.default_rng(3)
    for p in (0.0, 0.3, 0.9, 1.0):
        ready = rng.random(200) < p
        expected, run = [], 0
        for ok in ready.tolist():  # the definition, row by row
            run = run + 1 if ok else 0
            expected.append(run)
        assert ready_runs(ready).tolist() == expected
    assert ready_runs(np.zeros(0, dtype=bool)).tolist() == []
