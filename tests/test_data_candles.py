"""Candles: loading, validation, gap / zero-volume reporting and segments, on the bundled data.

Expected counts, timestamps and gaps come from data/README.md (an independent
audit of the files), not from the code under test.
"""

from __future__ import annotations

import gzip
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2_tactical.data.candles import (
    CANDLE_COLUMNS,
    Candles,
    candles_from_frame,
    check_candles,
    load_candles,
    load_many,
)
from l2_tactical.errors import DataError

DATA = Path(__file__).resolve().parents[1] / "data"
HEADER = "timestamp,open,high,low,close,volume"

# data/README.md, "Files" table: file -> (symbol, timeframe, rows, first bar, last bar)
BUNDLED = {
    "BTCUSDT-1h.csv.gz": ("BTCUSDT", "1h", 67_078, "2018-01-01T00:00Z", "2025-08-31T23:00Z"),
    "ETHUSDT-1h.csv.gz": ("ETHUSDT", "1h", 67_078, "2018-01-01T00:00Z", "2025-08-31T23:00Z"),
    "SOLUSDT-1h.csv.gz": ("SOLUSDT", "1h", 44_302, "2020-08-11T06:00Z", "2025-08-31T23:00Z"),
    "BNBUSDT-1h.csv.gz": ("BNBUSDT", "1h", 43_348, "2020-09-20T00:00Z", "2025-08-31T23:00Z"),
    "BTCUSDT-1m.csv.gz": ("BTCUSDT", "1m", 130_708, "2025-05-20T00:00Z", "2025-08-18T18:27Z"),
    "ETHUSDT-1m.csv.gz": ("ETHUSDT", "1m", 130_708, "2025-05-20T00:00Z", "2025-08-18T18:27Z"),
}
# data/README.md, "Defects found" 1.: last bar present before each BTC/ETH 1h gap, missing hours
README_GAPS = [
    ("2018-01-04 03:00", 1), ("2018-02-08 00:00", 33), ("2018-06-26 01:00", 10), ("2018-06-27 12:00", 1),
    ("2018-07-04 00:00", 7), ("2018-10-19 05:00", 3), ("2018-11-14 01:00", 7), ("2019-03-12 01:00", 6),
    ("2019-05-15 02:00", 10), ("2019-08-15 01:00", 8), ("2019-11-13 01:00", 2), ("2019-11-25 01:00", 2),
    ("2020-02-09 01:00", 1), ("2020-02-19 11:00", 5), ("2020-03-04 09:00", 1), ("2020-04-25 01:00", 2),
    ("2020-06-28 01:00", 3), ("2020-11-30 05:00", 1), ("2020-12-21 13:00", 4), ("2020-12-25 01:00", 1),
    ("2021-02-11 03:00", 1), ("2021-03-06 01:00", 1), ("2021-04-20 01:00", 2), ("2021-04-25 04:00", 3),
    ("2021-08-13 01:00", 4), ("2021-09-29 06:00", 2), ("2023-03-24 12:00", 1),
]  # fmt: skip
ZERO_VOLUME_BTC_ETH = ["2019-06-07T21:00Z", "2021-02-11T03:00Z", "2023-03-24T12:00Z"]


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC") if pd.Timestamp(text).tzinfo else pd.Timestamp(text, tz="UTC")


@pytest.fixture(scope="module")
def btc_1h() -> Candles:
    return load_candles(DATA / "BTCUSDT-1h.csv.gz")


@pytest.fixture(scope="module")
def real_lines() -> list[str]:
    """Header plus the first six real BTCUSDT 1h rows."""
    with gzip.open(DATA / "BTCUSDT-1h.csv.gz", "rt", encoding="utf-8") as fh:
        return [next(fh).rstrip("\n") for _ in range(7)]


def write(tmp_path: Path, lines: list[str], name: str = "BTCUSDT-1h.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def with_cell(lines: list[str], row: int, column: str, value: str) -> list[str]:
    """Copy of ``lines`` with data row ``row`` (1-based), ``column`` set to ``value``."""
    out = list(lines)
    cells = out[row].split(",")
    cells[HEADER.split(",").index(column)] = value
    out[row] = ",".join(cells)
    return out


# ---------------------------------------------------------------- the bundled files


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_load_candles_reads_every_bundled_file(name: str) -> None:
    symbol, timeframe, rows, first, last = BUNDLED[name]
    candles = load_candles(DATA / name)
    assert (candles.symbol, candles.timeframe, len(candles)) == (symbol, timeframe, rows)
    assert candles.frame.index[0] == utc(first)
    assert candles.frame.index[-1] == utc(last)
    assert candles.source == str(DATA / name)


def test_candles_frame_has_the_documented_layout(btc_1h: Candles) -> None:
    frame = btc_1h.frame
    assert tuple(frame.columns) == CANDLE_COLUMNS
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert str(frame.index.tz) == "UTC" and frame.index.name == "timestamp"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert btc_1h.timestamps_ns.dtype == np.int64
    assert btc_1h.timestamps_ns[0] == utc("2018-01-01T00:00Z").value
    assert btc_1h.step_ns == 3_600 * 10**9
    # first real row of the file, read independently
    assert frame.iloc[0].tolist() == [13715.65, 13715.65, 13400.01, 13529.01, 443.356199]


@pytest.mark.parametrize("name", ["BTCUSDT-1h.csv.gz", "ETHUSDT-1h.csv.gz"])
def test_check_candles_reports_readme_gaps_and_zero_volume_bars(name: str) -> None:
    report = check_candles(DATA / name)
    assert len(report.gaps) == 27
    assert report.missing_bars == 122
    assert [(g.before, g.missing) for g in report.gaps] == [(utc(t), n) for t, n in README_GAPS]
    largest = report.largest_gaps(1)[0]
    assert (largest.before, largest.after, largest.missing) == (utc("2018-02-08"), utc("2018-02-09T10:00"), 33)
    assert report.zero_volume == [utc(t) for t in ZERO_VOLUME_BTC_ETH]
    assert report.rows == 67_078 and report.timeframe == "1h"
    assert report.defects  # gaps and zero-volume bars are reported as defects


@pytest.mark.parametrize("name", ["SOLUSDT-1h.csv.gz", "BNBUSDT-1h.csv.gz"])
def test_check_candles_reports_gaps_of_later_listed_pairs(name: str) -> None:
    report = check_candles(DATA / name)
    assert (len(report.gaps), report.missing_bars) == (10, 20)
    assert report.zero_volume == [utc("2021-02-11T03:00Z"), utc("2023-03-24T12:00Z")]


@pytest.mark.parametrize("name", ["BTCUSDT-1m.csv.gz", "ETHUSDT-1m.csv.gz"])
def test_minute_files_have_no_gaps_and_no_defects(name: str) -> None:
    report = check_candles(DATA / name)
    assert report.gaps == [] and report.missing_bars == 0 and report.zero_volume == []
    assert report.defects == []


def test_zero_volume_bars_are_kept_not_dropped(btc_1h: Candles) -> None:
    bars = btc_1h.frame.loc[btc_1h.zero_volume_bars()]
    assert len(bars) == 3
    assert (bars["volume"] == 0).all()
    assert (bars["open"] == bars["close"]).all() and (bars["high"] == bars["low"]).all()


def test_loading_the_largest_file_is_fast() -> None:
    start = time.perf_counter()
    load_candles(DATA / "BTCUSDT-1m.csv.gz")
    assert time.perf_counter() - start < 2.0


def test_segments_split_btc_1h_at_its_27_gaps(btc_1h: Candles) -> None:
    segments = btc_1h.segments()
    assert len(segments) == 28
    assert sum(end - start for start, end in segments) == len(btc_1h)
    assert segments[0][0] == 0 and segments[-1][1] == len(btc_1h)
    ts = btc_1h.timestamps_ns
    for (start, end), (next_start, _) in itertools.pairwise(segments):
        assert end == next_start
        assert (np.diff(ts[start:end]) == btc_1h.step_ns).all()
        assert ts[end] - ts[end - 1] > btc_1h.step_ns


def test_segments_min_length_drops_short_runs(btc_1h: Candles) -> None:
    long_runs = btc_1h.segments(min_length=2_000)
    assert long_runs and all(end - start >= 2_000 for start, end in long_runs)
    assert len(long_runs) < 28


def test_slice_is_inclusive_start_exclusive_end_in_utc(btc_1h: Candles) -> None:
    part = btc_1h.slice("2018-01-01T01:00Z", "2018-01-01T03:00Z")
    assert list(part.frame.index) == [utc("2018-01-01T01:00Z"), utc("2018-01-01T02:00Z")]
    assert part.symbol == "BTCUSDT" and part.timeframe == "1h"
    # an offset bound is converted: 04:00+02:00 is 02:00 UTC
    assert len(btc_1h.slice("2018-01-01T01:00Z", pd.Timestamp("2018-01-01T04:00+02:00"))) == 1
    around_gap = btc_1h.slice("2018-02-08", "2018-02-10")
    assert len(around_gap) == 48 - 33
    assert len(around_gap.gaps()) == 1
    assert len(btc_1h.slice(end="2018-01-01")) == 0


def test_load_many_keys_by_symbol_and_refuses_two_files_of_one_symbol() -> None:
    loaded = load_many([str(DATA / "BTCUSDT-1h.csv.gz"), str(DATA / "SOLUSDT-1h.csv.gz")])
    assert sorted(loaded) == ["BTCUSDT", "SOLUSDT"]
    with pytest.raises(DataError, match="BTCUSDT"):
        load_many([str(DATA / "BTCUSDT-1h.csv.gz"), str(DATA / "BTCUSDT-1m.csv.gz")])


# ---------------------------------------------------------------- other formats


def test_utc_offsets_are_converted_not_dropped(tmp_path: Path, real_lines: list[str]) -> None:
    shifted = [HEADER]
    for line in real_lines[1:]:
        stamp, rest = line.split(",", 1)
        local = (utc(stamp) + pd.Timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
        shifted.append(f"{local},{rest}")
    loaded = load_candles(write(tmp_path, shifted))
    expected = load_candles(write(tmp_path, real_lines, "reference.csv"), symbol="BTCUSDT")
    pd.testing.assert_frame_equal(loaded.frame, expected.frame)
    assert loaded.frame.index[0] == utc("2018-01-01T00:00Z")


def test_naive_timestamps_are_taken_as_utc(tmp_path: Path, real_lines: list[str]) -> None:
    naive = [HEADER] + [line.replace("Z,", ",", 1) for line in real_lines[1:]]
    loaded = load_candles(write(tmp_path, naive))
    assert loaded.frame.index[0] == utc("2018-01-01T00:00Z")
    assert str(loaded.frame.index.tz) == "UTC"


def test_epoch_milliseconds_and_headerless_binance_klines(tmp_path: Path, real_lines: list[str]) -> None:
    millis, klines = [HEADER], []
    for line in real_lines[1:]:
        stamp, rest = line.split(",", 1)
        ms = utc(stamp).value // 1_000_000
        millis.append(f"{ms},{rest}")
        klines.append(f"{ms},{rest},{ms + 3_599_999},1.0,10,0.5,0.5,0")
    expected = load_candles(write(tmp_path, real_lines)).frame
    pd.testing.assert_frame_equal(load_candles(write(tmp_path, millis, "ms.csv"), symbol="BTCUSDT").frame, expected)
    binance = load_candles(write(tmp_path, klines, "BTCUSDT-1h-2018-01.csv"))
    pd.testing.assert_frame_equal(binance.frame, expected)
    assert binance.symbol == "BTCUSDT"


def test_parquet_round_trip(tmp_path: Path, btc_1h: Candles) -> None:
    path = tmp_path / "BTCUSDT-1h.parquet"
    btc_1h.frame.to_parquet(path)
    again = load_candles(path)
    assert (again.symbol, again.timeframe) == ("BTCUSDT", "1h")
    pd.testing.assert_frame_equal(again.frame, btc_1h.frame)
    assert len(again.gaps()) == 27


def finrl_frame(rows: int = 50) -> pd.DataFrame:
    parts = []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        frame = load_candles(DATA / f"{symbol}-1h.csv.gz").frame.iloc[:rows]
        part = frame.reset_index().rename(columns={"timestamp": "date"})
        part["date"] = part["date"].dt.strftime("%Y-%m-%d %H:%M:%S")
        part.insert(1, "tic", symbol)
        part["day"] = 0
        parts.append(part)
    return pd.concat(parts).sort_values(["date", "tic"], kind="stable").reset_index(drop=True)


def test_finrl_dataframe_selects_one_ticker() -> None:
    table = finrl_frame()
    eth = load_candles(table, symbol="ETHUSDT")
    assert eth.symbol == "ETHUSDT" and eth.timeframe == "1h" and eth.source == "<DataFrame>"
    pd.testing.assert_frame_equal(eth.frame, load_candles(DATA / "ETHUSDT-1h.csv.gz").frame.iloc[:50])
    single = candles_from_frame(table[table["tic"] == "BTCUSDT"], symbol="BTCUSDT")
    assert len(single) == 50


def test_finrl_dataframe_with_several_tickers_needs_symbol() -> None:
    with pytest.raises(DataError, match="BTCUSDT, ETHUSDT") as err:
        load_candles(finrl_frame())
    assert err.value.column == "tic"
    with pytest.raises(DataError, match="SOLUSDT"):
        load_candles(finrl_frame(), symbol="SOLUSDT")


def test_finrl_row_numbers_refer_to_the_whole_table() -> None:
    table = finrl_frame()
    bad_row = int(table.index[table["tic"] == "ETHUSDT"][3])
    table.loc[bad_row, "high"] = -1.0
    with pytest.raises(DataError) as err:
        load_candles(table, symbol="ETHUSDT")
    assert err.value.row == bad_row + 1 and err.value.column == "high" and err.value.line is None


def test_dataframe_with_a_non_utc_index_is_converted() -> None:
    frame = load_candles(DATA / "SOLUSDT-1h.csv.gz").frame.iloc[:24]
    local = frame.tz_convert("Asia/Tokyo")
    again = candles_from_frame(local, symbol="SOLUSDT")
    pd.testing.assert_frame_equal(again.frame, frame)


# ---------------------------------------------------------------- bad input: one test per kind

CELL_DEFECTS = [
    # (column, value, message fragment)
    ("open", "nan", "missing value (NaN): "),
    ("close", "", "missing value (NaN)"),
    ("high", "inf", "non-finite value inf"),
    ("low", "0", "non-positive price low=0.0"),
    ("close", "-13529.01", "non-positive price close=-13529.01"),
    ("volume", "-1.5", "negative volume -1.5"),
    ("high", "13000.0", "high < low (high=13000.0"),
    ("open", "20000.5", "open=20000.5 outside [low, high]"),
    ("close", "13000.25", "close=13000.25 outside [low, high]"),
    ("volume", "12.5x", "unparsable number '12.5x'"),
    ("timestamp", "2018-13-01T03:00:00Z", "unparsable timestamp '2018-13-01T03:00:00Z'"),
    ("timestamp", "2018-01-01T02:30:00Z", "off the 1h grid"),
]


@pytest.mark.parametrize(("column", "value", "fragment"), CELL_DEFECTS)
def test_bad_cell_error_names_file_row_line_column_and_value(
    tmp_path: Path, real_lines: list[str], column: str, value: str, fragment: str
) -> None:
    path = write(tmp_path, with_cell(real_lines, 4, column, value))
    with pytest.raises(DataError) as err:
        load_candles(path)
    assert (err.value.file, err.value.row, err.value.line, err.value.column) == (str(path), 4, 5, column)
    assert fragment in str(err.value)
    assert f"{path}: line 5, row 4, column {column}: " in str(err.value)


def test_duplicate_timestamp_names_both_rows(tmp_path: Path, real_lines: list[str]) -> None:
    lines = with_cell(real_lines, 4, "timestamp", real_lines[3].split(",")[0])
    with pytest.raises(DataError) as err:
        load_candles(write(tmp_path, lines))
    assert (err.value.row, err.value.line, err.value.column) == (4, 5, "timestamp")
    assert "duplicate timestamp 2018-01-01T02:00:00Z (same as data row 3)" in str(err.value)


def test_out_of_order_timestamp(tmp_path: Path, real_lines: list[str]) -> None:
    lines = [*real_lines[:3], real_lines[4], real_lines[3], *real_lines[5:]]
    with pytest.raises(DataError) as err:
        load_candles(write(tmp_path, lines))
    assert (err.value.row, err.value.line, err.value.column) == (4, 5, "timestamp")
    assert "2018-01-01T02:00:00Z is earlier than the previous row's 2018-01-01T03:00:00Z" in str(err.value)


def test_several_bad_rows_are_counted(tmp_path: Path, real_lines: list[str]) -> None:
    lines = with_cell(with_cell(real_lines, 2, "volume", "-1"), 5, "volume", "-2")
    with pytest.raises(DataError, match=r"row 2, column volume: negative volume -1.0 \(1 more row"):
        load_candles(write(tmp_path, lines))


def test_missing_column_is_named(tmp_path: Path, real_lines: list[str]) -> None:
    lines = [line.rsplit(",", 1)[0] for line in real_lines]
    with pytest.raises(DataError, match="missing column 'volume'") as err:
        load_candles(write(tmp_path, lines))
    assert err.value.column == "volume"


def test_unknown_column_gets_a_did_you_mean_hint(tmp_path: Path, real_lines: list[str]) -> None:
    lines = [real_lines[0].replace("close", "clsoe"), *real_lines[1:]]
    with pytest.raises(DataError, match="unknown column 'clsoe'; did you mean 'close'") as err:
        load_candles(write(tmp_path, lines))
    assert err.value.column == "clsoe"


def test_malformed_row_names_its_line(tmp_path: Path, real_lines: list[str]) -> None:
    lines = [*real_lines[:3], real_lines[3] + ",7", *real_lines[4:]]
    with pytest.raises(DataError) as err:
        load_candles(write(tmp_path, lines))
    assert (err.value.row, err.value.line) == (3, 4)
    assert "Expected 6 fields in line 4, saw 7" in str(err.value)


def test_blank_line_inside_the_data_is_an_error_but_trailing_ones_are_not(
    tmp_path: Path, real_lines: list[str]
) -> None:
    assert len(load_candles(write(tmp_path, [*real_lines, "", ""]))) == 6
    with pytest.raises(DataError, match="missing timestamp") as err:
        load_candles(write(tmp_path, [*real_lines[:3], "", *real_lines[3:]]))
    assert (err.value.row, err.value.line) == (3, 4)


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    data = (DATA / "BTCUSDT-1h.csv.gz").read_bytes()
    path = tmp_path / "BTCUSDT-1h.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as err:
        load_candles(path)
    assert err.value.file == str(path)


def test_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    data = bytearray((DATA / "ETHUSDT-1h.csv.gz").read_bytes())
    data[5_000:5_064] = bytes(64)
    path = tmp_path / "ETHUSDT-1h.csv.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        load_candles(path)


def test_plain_text_named_gz_is_refused(tmp_path: Path, real_lines: list[str]) -> None:
    path = write(tmp_path, real_lines, "BTCUSDT-1h.csv.gz")
    with pytest.raises(DataError, match="gzip"):
        load_candles(path)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"", "empty file: no header line"), (HEADER.encode() + b"\n", "empty file: header only")],
)
@pytest.mark.parametrize("compressed", [False, True])
def test_empty_files_are_refused(tmp_path: Path, content: bytes, fragment: str, compressed: bool) -> None:
    path = tmp_path / ("BTCUSDT-1h.csv.gz" if compressed else "BTCUSDT-1h.csv")
    path.write_bytes(gzip.compress(content) if compressed else content)
    with pytest.raises(DataError, match=fragment):
        load_candles(path)


def test_missing_file_and_directory_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_candles(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_candles(tmp_path)


def test_timeframe_argument_is_validated(tmp_path: Path, real_lines: list[str]) -> None:
    path = write(tmp_path, real_lines)
    with pytest.raises(DataError, match="unknown timeframe '1hr'; did you mean '1h'"):
        load_candles(path, timeframe="1hr")
    with pytest.raises(DataError, match="off the 4h grid"):
        load_candles(path, timeframe="4h")
    assert load_candles(path, timeframe="1h").timeframe == "1h"


def test_single_bar_needs_an_explicit_timeframe(tmp_path: Path, real_lines: list[str]) -> None:
    path = write(tmp_path, real_lines[:2])
    with pytest.raises(DataError, match="pass timeframe="):
        load_candles(path)
    assert len(load_candles(path, timeframe="1h")) == 1


def test_dataframe_without_symbol_is_refused(btc_1h: Candles) -> None:
    with pytest.raises(DataError, match="symbol="):
        load_candles(btc_1h.frame.iloc[:10])
