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
    ObservationWindow,
    PositionState,
    infer_window,
    observation_bounds,
    position_state,
    window_observations,
)
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
        live.push(updater.update((ts, o, h, lo, c, v)))
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
