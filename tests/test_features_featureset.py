"""FeatureSet contract: declarations, errors, bounds, warm-up, closed-bar visibility, presets."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from l2_tactical.data.candles import load_candles
from l2_tactical.data.features import FeatureError, FeatureSet, feature, feature_set, parse_feature
from l2_tactical.errors import DataError
from l2_tactical.technical.feature_kinds import KINDS
from tests.conftest import DATA

ZERO_VOLUME_BARS = ["2019-06-07T21:00Z", "2021-02-11T03:00Z", "2023-03-24T12:00Z"]  # data/README.md


@lru_cache(maxsize=2)
def _frame(name: str) -> pd.DataFrame:
    return load_candles(DATA / name).frame


@lru_cache(maxsize=2)
def _full_1h():
    return feature_set("full", "1h").build(_frame("BTCUSDT-1h.csv.gz"))


def test_unknown_feature_fails_with_a_did_you_mean() -> None:
    with pytest.raises(FeatureError, match="unknown feature 'rsl'; did you mean 'rsi'"):
        feature("rsl", "1h")
    with pytest.raises(FeatureError, match="'macd_hst_12_26_9@1h'.*did you mean 'macd_hist'"):
        FeatureSet(["macd_hst_12_26_9@1h"], "1h")
    with pytest.raises(FeatureError, match="no parameter 'perod'; did you mean 'period'"):
        feature("rsi", "1h", perod=14)


def test_history_shorter_than_lookback_names_the_feature_and_bars_needed() -> None:
    fs = FeatureSet([feature("rsi", "1h"), feature("ema_slope", "1h", period=200, lag=10)], "1h")
    with pytest.raises(DataError, match=r"'ema_slope_200_10@1h' needs at least 210 closed 1h bars") as err:
        fs.build(_frame("BTCUSDT-1h.csv.gz").iloc[:150])
    assert "has 150 1h bars" in str(err.value)
    hourly = FeatureSet([feature("adx", "1h")], "1m")
    with pytest.raises(DataError, match=r"'adx_14@1h' needs at least 28 closed 1h bars \(about 1680 1m bars\)"):
        hourly.build(_frame("BTCUSDT-1m.csv.gz").iloc[:600])
    with pytest.raises(DataError, match="ema_slope_200_10@1h"):
        fs.incremental(history=_frame("BTCUSDT-1h.csv.gz").iloc[:150])


def test_feature_names_round_trip_through_parse() -> None:
    for spec in feature_set("full", "1m").features:
        assert parse_feature(spec.column) == spec


def test_schema_hash_covers_names_parameters_order_and_base() -> None:
    a = FeatureSet([feature("rsi", "1h"), feature("atr", "1h")], "1h")
    assert a.schema_hash == FeatureSet(["rsi_14@1h", "atr_14@1h"], "1h").schema_hash
    assert a.schema_hash != FeatureSet([feature("atr", "1h"), feature("rsi", "1h")], "1h").schema_hash
    assert a.schema_hash != FeatureSet([feature("rsi", "1h", period=21), feature("atr", "1h")], "1h").schema_hash
    assert a.schema_hash != FeatureSet([feature("rsi", "1h"), feature("atr", "1h")], "1m").schema_hash
    assert a.compare(["rsi_14@1h", "adx_14@1h"]) == (["atr_14@1h"], ["adx_14@1h"])


def test_timeframe_must_be_a_multiple_of_the_base() -> None:
    with pytest.raises(FeatureError, match="5m cannot be built from 1h bars"):
        FeatureSet([feature("rsi", "5m")], "1h")
    with pytest.raises(FeatureError, match="declared twice"):
        FeatureSet(["rsi_14@1h", "rsi_14@1h"], "1h")


def test_matrix_is_c_contiguous_float32_finite_and_within_documented_bounds() -> None:
    fs, fm = feature_set("full", "1h"), _full_1h()
    assert fm.values.dtype == np.float32 and fm.values.flags.c_contiguous
    assert fm.values.shape == (len(_frame("BTCUSDT-1h.csv.gz")), len(fs))
    assert np.isfinite(fm.values).all()
    assert (fm.values >= fs.lower).all() and (fm.values <= fs.upper).all()
    assert np.isfinite(fs.lower).all() and np.isfinite(fs.upper).all()


def test_warm_up_is_explicit_neutral_then_ready_for_good() -> None:
    fs, fm = feature_set("full", "1h"), _full_1h()
    for j, spec in enumerate(fs.features):
        ready = fm.ready[:, j]
        first = int(np.argmax(ready))
        assert ready[first:].all(), spec.column  # once ready, always ready (gaps, flat bars included)
        assert (fm.values[:first, j] == np.float32(spec.neutral)).all(), spec.column
        if spec.timeframe == "1h":
            assert first == spec.lookback - 1, spec.column  # the declared lookback is the real one
    assert fm.valid_from == max(int(np.argmax(fm.ready[:, j])) for j in range(len(fs)))
    assert fm.ready[fm.valid_from :].all()


def test_zero_volume_flat_real_bars_give_finite_ready_features() -> None:
    fm = _full_1h()
    rows = fm.index.get_indexer(pd.DatetimeIndex(ZERO_VOLUME_BARS))
    assert (rows >= 0).all()
    assert (_frame("BTCUSDT-1h.csv.gz")["volume"].to_numpy()[rows] == 0).all()
    for r in rows:
        assert np.isfinite(fm.values[r - 1 : r + 2]).all() and fm.ready[r - 1 : r + 2].all()


def test_hourly_feature_on_minute_bars_changes_only_on_the_hh59_row() -> None:
    frame = _frame("BTCUSDT-1m.csv.gz").iloc[:8_000]
    fs = FeatureSet([feature("rsi", "1h"), feature("atr", "1h"), feature("rsi", "1m")], "1m")
    fm = fs.build(frame)
    hourly = fm.values[:, :2]
    changed = np.flatnonzero((np.diff(hourly, axis=0) != 0).any(axis=1)) + 1
    assert changed.size > 50
    assert (fm.index[changed].minute == 59).all()
    # the value shown from hh:59 is the RSI of the hour that just closed, computed on closed hours only
    hours = frame.resample("1h").agg({"close": "last"}).iloc[:-1]  # the last hour of the slice is incomplete
    import talib

    rsi_hours = pd.Series(talib.RSI(hours["close"].to_numpy(), 14) / 100, index=hours.index)
    at = fm.index[changed[-1]]
    assert hourly[changed[-1], 0] == pytest.approx(rsi_hours[at.floor("1h")], rel=1e-6)


def test_presets_have_ten_to_twenty_features_and_build_on_both_bases() -> None:
    for name in ("trend", "mean_reversion", "volatility"):
        for base in ("1m", "1h"):
            fs = feature_set(name, base)
            assert 10 <= len(fs) <= 20, (name, base, len(fs))
    full = feature_set("full", "1m")
    assert set(full.timeframes) == {"1m", "5m", "15m", "1h"}
    assert {s.name for s in full.features} == set(KINDS)  # every kind is exercised by the full preset
    with pytest.raises(FeatureError, match="did you mean 'trend'"):
        feature_set("trnd")


def test_builds_from_candles_and_rejects_bad_input() -> None:
    candles = load_candles(DATA / "BTCUSDT-1h.csv.gz").slice("2024-01-01", "2024-03-01")
    fs = feature_set("trend", "1h")
    assert fs.build(candles).values.shape[0] == len(candles)
    bad = candles.frame.copy()
    bad.iloc[500, bad.columns.get_loc("close")] = np.nan
    with pytest.raises(DataError, match="close"):
        fs.build(bad)
    updater = fs.incremental()
    ts = candles.frame.index[10]
    updater.update((ts, 1.0, 1.0, 1.0, 1.0, 0.0))
    with pytest.raises(DataError, match="not after the previous bar"):
        updater.update((ts, 1.0, 1.0, 1.0, 1.0, 0.0))
    with pytest.raises(DataError, match="invalid prices"):
        updater.update((ts + pd.Timedelta(hours=1), 1.0, float("inf"), 1.0, 1.0, 0.0))
