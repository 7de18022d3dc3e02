"""No look-ahead: changing every candle after t changes no feature at or before t.

For many t on real data, every candle after t is replaced (prices scaled by a
random factor per bar, volumes redrawn) and the whole FeatureSet rebuilt; all
rows <= t must be bit-identical, for every feature on every timeframe.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from l2_tactical.data.candles import load_candles
from l2_tactical.data.features import feature_set
from tests.conftest import DATA


def _perturb_after(frame: pd.DataFrame, t: int, rng: np.random.Generator) -> pd.DataFrame:
    out = frame.copy()
    n = len(frame) - t - 1
    scale = rng.uniform(0.7, 1.4, n)
    for col in ("open", "high", "low", "close"):
        out.iloc[t + 1 :, out.columns.get_loc(col)] = frame[col].to_numpy()[t + 1 :] * scale
    out.iloc[t + 1 :, out.columns.get_loc("volume")] = rng.uniform(0.0, 3.0, n) * frame["volume"].mean()
    return out


@pytest.mark.parametrize(
    ("name", "base", "rows"), [("BTCUSDT-1m.csv.gz", "1m", 6_000), ("BTCUSDT-1h.csv.gz", "1h", 6_000)]
)
def test_no_feature_at_or_before_t_sees_candles_after_t(name: str, base: str, rows: int) -> None:
    frame = load_candles(DATA / name).frame.iloc[:rows]
    fs = feature_set("full", base)
    original = fs.build(frame).values
    rng = np.random.default_rng(7)
    start = fs.lookback_bars + 10
    points = sorted(rng.choice(np.arange(start, rows - 1), size=20, replace=False).tolist())
    # include the bars just before and at an hour / 4h boundary
    boundary = 240 * (start // 240 + 2)
    points += [boundary - 2, boundary - 1, boundary]
    for t in points:
        changed = fs.build(_perturb_after(frame, t, rng)).values
        np.testing.assert_array_equal(changed[: t + 1], original[: t + 1], err_msg=f"t={t}")
        assert not np.array_equal(changed[t + 1 :], original[t + 1 :])  # the perturbation did something
