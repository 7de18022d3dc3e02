"""Closed-bar resampling: real 1m bars rebuild the real 1h file; streaming equals batch."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from l2_tactical.data.candles import load_candles
from l2_tactical.data.resample import BarAggregator, resample_arrays, resample_ohlcv, timeframe_ns
from tests.conftest import DATA

AGG = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}


@lru_cache(maxsize=4)
def _frame(name: str) -> pd.DataFrame:
    return load_candles(DATA / name).frame


def _closed_1m() -> pd.DataFrame:
    return _frame("BTCUSDT-1m.csv.gz").iloc[:-1]  # the last 1m bar may have been forming


def test_resampling_real_1m_reproduces_real_1h_on_every_complete_hour() -> None:
    hourly = resample_ohlcv(_closed_1m(), "1h", base="1m")
    reference = _frame("BTCUSDT-1h.csv.gz")
    counts = _closed_1m()["close"].resample("1h").count()
    complete = counts.index[counts == 60]
    assert len(complete) == 2178  # data/README.md
    got, want = hourly.loc[complete], reference.loc[complete]
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)
    np.testing.assert_allclose(got["volume"].to_numpy(), want["volume"].to_numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h"])
def test_resampling_matches_pandas_on_complete_buckets(timeframe: str) -> None:
    frame = _closed_1m().iloc[:50_000]
    got = resample_ohlcv(frame, timeframe, base="1m")
    rule = pd.Timedelta(timeframe_ns(timeframe), unit="ns")
    want = frame.resample(rule).agg(AGG)
    counts = frame["close"].resample(rule).count()
    complete = counts.index[counts == timeframe_ns(timeframe) // timeframe_ns("1m")]
    assert got.index.equals(complete)  # only closed buckets, none forming
    pd.testing.assert_frame_equal(got, want.loc[complete], check_freq=False, rtol=1e-12)


def _stream(frame: pd.DataFrame, base: str, timeframe: str) -> tuple[list[tuple], list[int]]:
    agg = BarAggregator(base, timeframe)
    bars, rows = [], []
    ts = frame.index.as_unit("ns").asi8
    cols = [frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    for i, bar in enumerate(zip(ts.tolist(), *(c.tolist() for c in cols), strict=True)):
        for closed in agg.push(*bar):
            bars.append(closed)
            rows.append(i)
    return bars, rows


@pytest.mark.parametrize(
    ("name", "base", "timeframe"), [("BTCUSDT-1m.csv.gz", "1m", "1h"), ("BTCUSDT-1h.csv.gz", "1h", "4h")]
)
def test_streaming_aggregator_emits_the_batch_bars_on_the_batch_rows(name: str, base: str, timeframe: str) -> None:
    frame = _frame(name).iloc[:-1]
    bars, rows = _stream(frame, base, timeframe)
    ts = frame.index.as_unit("ns").asi8
    cols = [frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    r = resample_arrays(ts, *cols, base=base, timeframe=timeframe)
    assert rows == r.visible_row.tolist()
    got = np.array([b[1:] for b in bars])
    np.testing.assert_array_equal(got, np.column_stack([r.open, r.high, r.low, r.close, r.volume]))
    assert [b[0] for b in bars] == r.timestamp.tolist()


def test_hour_is_visible_on_the_row_of_its_hh59_minute_bar() -> None:
    frame = _closed_1m().iloc[:10_000]
    ts = frame.index.as_unit("ns").asi8
    cols = [frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    r = resample_arrays(ts, *cols, base="1m", timeframe="1h")
    visible_at = frame.index[r.visible_row]
    assert (visible_at.minute == 59).all()
    assert (visible_at - pd.to_datetime(r.timestamp, utc=True) == pd.Timedelta(minutes=59)).all()


def test_bucket_missing_its_last_bar_closes_on_the_next_bucket_first_row() -> None:
    frame = _frame("BTCUSDT-1h.csv.gz")
    ts = frame.index.as_unit("ns").asi8
    cols = [frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    r = resample_arrays(ts, *cols, base="1h", timeframe="4h")
    four_h = timeframe_ns("4h")
    last_bar_of_bucket = ts[r.visible_row] + timeframe_ns("1h") == r.timestamp + four_h
    late = ~last_bar_of_bucket
    assert late.any()  # the real gaps of 2018-2023 produce such buckets
    # a late bucket becomes visible on a bar that opened after the bucket ended, and
    # the bar just before that row belonged to the bucket itself (nothing skipped)
    assert (ts[r.visible_row[late]] >= r.timestamp[late] + four_h).all()
    assert (ts[r.visible_row[late] - 1] // four_h == r.timestamp[late] // four_h).all()
    # no bucket shows before its last existing bar has closed
    assert (ts[r.visible_row] + timeframe_ns("1h") >= r.timestamp + four_h).all()


def test_unknown_timeframe_names_it() -> None:
    with pytest.raises(ValueError, match="'7m'"):
        timeframe_ns("7m")
