"""One pipeline: every incremental row equals the batch row, on real 1h and 1m data.

Comparison: relative 1e-6, plus an absolute 1e-12 for values that are zero up
to float rounding (TA-Lib's running sums leave ~1e-16 residues where the
streaming twin has an exact 0). The ``ready`` masks must be identical.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from l2_tactical.data.candles import load_candles
from l2_tactical.data.features import FeatureSet, feature_set
from tests.conftest import DATA


@lru_cache(maxsize=4)
def _frame(name: str) -> pd.DataFrame:
    frame = load_candles(DATA / name).frame
    return frame.iloc[:-1] if name.endswith("-1m.csv.gz") else frame  # last 1m bar may be forming


def _incremental(fs: FeatureSet, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    updater = fs.incremental()
    rows = np.empty((len(frame), len(fs)), dtype=np.float32)
    ready = np.empty((len(frame), len(fs)), dtype=bool)
    ts = frame.index.as_unit("ns").asi8.tolist()
    cols = [frame[c].to_numpy().tolist() for c in ("open", "high", "low", "close", "volume")]
    for i, bar in enumerate(zip(ts, *cols, strict=True)):
        rows[i] = updater.update(bar)
        ready[i] = updater.ready
    return rows, ready


def _assert_same(fs: FeatureSet, frame: pd.DataFrame) -> None:
    batch = fs.build(frame)
    rows, ready = _incremental(fs, frame)
    np.testing.assert_array_equal(ready, batch.ready)
    for j, name in enumerate(fs.names):
        np.testing.assert_allclose(rows[:, j], batch.values[:, j], rtol=1e-6, atol=1e-12, err_msg=name)


def test_full_feature_set_incremental_equals_batch_on_every_real_1h_bar() -> None:
    _assert_same(feature_set("full", "1h"), _frame("BTCUSDT-1h.csv.gz"))


def test_full_feature_set_incremental_equals_batch_on_real_1m_bars_four_timeframes() -> None:
    fs = feature_set("full", "1m")
    assert fs.timeframes == ("1m", "5m", "15m", "1h")
    _assert_same(fs, _frame("BTCUSDT-1m.csv.gz").iloc[:10_000])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("BTCUSDT-1m.csv.gz", "1m"),
        ("ETHUSDT-1m.csv.gz", "1m"),
        ("ETHUSDT-1h.csv.gz", "1h"),
        ("SOLUSDT-1h.csv.gz", "1h"),
    ],
)
def test_full_feature_set_incremental_equals_batch_on_whole_files(name: str, base: str) -> None:
    _assert_same(feature_set("full", base), _frame(name))


def test_incremental_warmed_on_history_continues_like_batch() -> None:
    frame = _frame("BTCUSDT-1h.csv.gz").iloc[:3_000]
    fs = feature_set("full", "1h")
    batch = fs.build(frame)
    updater = fs.incremental(history=frame.iloc[:2_500])
    tail = frame.iloc[2_500:]
    for i, (ts, bar) in enumerate(zip(tail.index, tail.itertuples(index=False), strict=True)):
        row = updater.update((ts, *bar))
        np.testing.assert_allclose(row, batch.values[2_500 + i], rtol=1e-6, atol=1e-12)
