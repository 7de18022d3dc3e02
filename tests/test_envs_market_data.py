"""MarketData: the precomputed arrays behind the envs, on the real BTCUSDT-1h candles."""

from __future__ import annotations

import numpy as np
import pytest

from envs.market_data import MarketData, as_market_data
from l2_tactical.data.candles import load_candles
from l2_tactical.data.features import feature_set
from l2_tactical.errors import DataError


@pytest.fixture(scope="module")
def candles(data_dir):
    return load_candles(data_dir / "BTCUSDT-1h.csv.gz")


@pytest.fixture(scope="module")
def md(candles) -> MarketData:
    return MarketData.from_candles(candles, feature_set("trend", "1h"))


def test_features_are_c_contiguous_float32_and_read_only(md):
    assert md.features.dtype == np.float32 and md.features.flags.c_contiguous
    with pytest.raises(ValueError):
        md.features[0, 0] = 1.0
    with pytest.raises(ValueError):
        md.close[0] = 1.0


def test_segments_never_cross_a_gap_in_the_candles(md, candles):
    step = candles.step_ns
    assert len(md.segments) >= len(candles.gaps()) - 5  # short gap-free runs may be dropped, never merged
    for s, e in md.segments:
        assert np.all(np.diff(md.timestamps[s:e]) == step)


def test_segment_rows_are_ready_finite_and_inside_the_documented_bounds(md, candles):
    fs = feature_set("trend", "1h")
    for s, e in md.segments:
        block = md.features[s:e]
        assert np.isfinite(block).all()
        assert (block >= fs.lower).all() and (block <= fs.upper).all()


def test_features_of_a_segment_do_not_depend_on_bars_before_its_gap(md, candles):
    fs = feature_set("trend", "1h")
    gap_free = candles.segments()
    s, e = gap_free[5]
    alone = fs.build(candles.frame.iloc[s:e])
    ready_rows = [(a, b) for a, b in md.segments if s <= a < e]
    assert ready_rows, "this real segment is long enough to be used"
    a, b = ready_rows[0]
    np.testing.assert_array_equal(md.features[a:b], alone.values[a - s : b - s])
    assert a - s == alone.valid_from


def test_prices_and_timestamps_are_the_candles(md, candles):
    np.testing.assert_array_equal(md.open, candles.frame["open"].to_numpy())
    np.testing.assert_array_equal(md.low, candles.frame["low"].to_numpy())
    np.testing.assert_array_equal(md.timestamps, candles.timestamps_ns)


def test_episode_starts_leave_a_full_window_and_a_next_bar_in_the_segment(md):
    window = 16
    starts = md.episode_starts(window, min_steps=2)
    end = md.segment_end()
    seg_start = {e: s for s, e in md.segments}
    for t in starts[:: max(1, len(starts) // 500)]:
        assert t + 2 < end[t] + 1 and t + 2 <= end[t]
        assert t - window + 1 >= seg_start[end[t]]


def test_from_arrays_excludes_not_ready_rows_and_rejects_out_of_bound_features():
    n = 50
    feats = np.zeros((n, 2), np.float32)
    feats[:5] = np.nan
    feats[30] = np.nan
    prices = np.linspace(100, 110, n)
    md = MarketData.from_arrays(
        features=feats,
        feature_names=("a", "b"),
        feature_low=[-1, -1],
        feature_high=[1, 1],
        open_=prices,
        high=prices + 1,
        low=prices - 1,
        close=prices,
        timestamps=np.arange(n) * 3_600_000_000_000,
    )
    assert md.segments == ((5, 30), (31, 50))
    feats[10, 1] = 2.0
    with pytest.raises(DataError, match="feature b=2.0 is outside its bounds"):
        MarketData.from_arrays(
            features=feats,
            feature_names=("a", "b"),
            feature_low=[-1, -1],
            feature_high=[1, 1],
            open_=prices,
            high=prices + 1,
            low=prices - 1,
            close=prices,
            timestamps=np.arange(n) * 3_600_000_000_000,
        )


def test_as_market_data_rejects_a_missing_file_and_a_wrong_type(tmp_path):
    with pytest.raises(DataError, match="no such candle file"):
        as_market_data(tmp_path / "nope.csv.gz", "trend")
    with pytest.raises(TypeError, match="expected MarketData, Candles or a path"):
        as_market_data(42, "trend")


def test_feature_set_on_another_timeframe_is_refused(candles):
    with pytest.raises(DataError, match="does not match"):
        MarketData.from_candles(candles, feature_set("trend", "1m"))
