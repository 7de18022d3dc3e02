"""Candlestick patterns and support/resistance: streaming equals batch, no look-ahead, breakouts."""

from __future__ import annotations

import numpy as np
import pytest

from l2_tactical.data.candles import load_candles
from l2_tactical.technical.patterns import PATTERNS, PatternWindow, detect_pattern
from l2_tactical.technical.support_resistance import SwingLevels, breakouts, nearest_levels, swing_levels
from tests.conftest import DATA


def _ohlc(rows: int) -> tuple[np.ndarray, ...]:
    frame = load_candles(DATA / "BTCUSDT-1h.csv.gz").frame.iloc[:rows]
    return tuple(frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume"))


def test_pattern_window_equals_talib_batch_on_real_bars() -> None:
    o, h, lo, c, _ = _ohlc(8_000)
    window = PatternWindow(14)
    got = {name: np.zeros(len(c)) for name in PATTERNS}
    for i, bar in enumerate(zip(o, h, lo, c, strict=True)):
        window.update(*bar)
        for name in PATTERNS:
            got[name][i] = np.nan_to_num(window.value(name))
    for name in PATTERNS:
        want = detect_pattern(name, o, h, lo, c)
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        assert name == "morning_star" or np.count_nonzero(want) > 0  # real data shows every pattern but the rarest


def test_swing_levels_stream_equals_batch_and_ignores_the_future() -> None:
    _, h, lo, c, _ = _ohlc(10_000)
    levels = swing_levels(h, lo, swing=5, n_levels=8)
    res, sup = nearest_levels(levels, c)
    stream = SwingLevels(5, 8)
    for t in range(len(c)):
        stream.update(h[t], lo[t])
        np.testing.assert_array_equal(np.array(stream.levels), levels[t][~np.isnan(levels[t])])
        np.testing.assert_array_equal(stream.nearest(c[t]), (res[t], sup[t]))
    # levels at t depend only on bars <= t
    t = 6_000
    changed = swing_levels(np.r_[h[: t + 1], h[t + 1 :] * 3], np.r_[lo[: t + 1], lo[t + 1 :] / 3], 5, 8)
    np.testing.assert_array_equal(changed[: t + 1], levels[: t + 1])
    assert ((res > c) | np.isnan(res)).all() and ((sup < c) | np.isnan(sup)).all()


@pytest.mark.parametrize(
    ("close", "volume", "want"),
    [
        ([100, 106], [1, 3], 1.0),  # closes above the 105 resistance on 3x volume
        ([100, 106], [1, 1], 0.0),  # no volume confirmation
        ([100, 94], [1, 3], -1.0),  # breakdown below the 95 support
        ([100, 104], [1, 3], 0.0),  # still below resistance
    ],
)
def test_breakout_needs_a_close_beyond_the_level_and_volume(close, volume, want) -> None:
    close, volume = np.array(close, float), np.array(volume, float)
    res, sup = np.array([105.0, 105.0]), np.array([95.0, 95.0])
    out = breakouts(close, volume, res, sup, volume_mean=np.array([1.0, 1.5]), vol_mult=1.5)
    assert out[1] == want
