"""Candles: load and validate OHLCV bars from CSV, CSV.gz, parquet and FinRL tables.

Formats
    * CSV / CSV.gz with the header ``timestamp,open,high,low,close,volume``
      (header names are matched case-insensitively). ``timestamp`` is the bar
      **open** time, ISO-8601 (``2021-03-01T00:00:00Z``) or integer epoch
      seconds / milliseconds / microseconds (Binance klines), told apart by
      magnitude. A headerless Binance klines CSV (12 numeric columns) is read too.
    * Parquet (and freqtrade feather) with the same columns; a DatetimeIndex
      is used as the timestamp column.
    * FinRL tables: ``date, tic, open, high, low, close, volume`` (plus FinRL's
      ``day``). With several tickers, pass ``symbol=`` to select one.

Time zone
    Everything is UTC. Timestamps carrying an offset (``+02:00``) are converted
    to UTC, never dropped. Naive timestamps are taken to be UTC already.

Validation
    Bad input raises :class:`~l2_tactical.errors.DataError` naming the file, the
    1-based data row (and physical line for CSV), the column and the value:
    NaN/inf, non-positive price, negative volume, high < low, open/close outside
    [low, high], duplicate or out-of-order timestamps, bars off the timeframe
    grid, missing or unknown columns, unparsable numbers or timestamps, corrupt
    or truncated gzip, empty files. Nothing is repaired.

Policy for gaps and zero-volume bars
    Missing bars (gaps on the timeframe grid) and zero-volume bars are
    *reported* (:meth:`Candles.gaps`, :meth:`Candles.zero_volume_bars`,
    :func:`check_candles`), never filled or dropped. Training and backtests
    split history into contiguous segments at gaps (:meth:`Candles.segments`)
    and never step, compute returns or carry indicator state across a gap.
    Zero-volume bars are kept as real bars (their prices are valid, usually
    open = high = low = close); code that divides by volume or by the bar range
    must guard against zero.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from l2_tactical.data.candle_checks import (
    CANDLE_COLUMNS,
    TIMEFRAMES,
    RowLocator,
    check_grid,
    check_order,
    check_values,
    format_ts,
    parse_numbers,
    parse_timestamps,
    resolve_columns,
    resolve_timeframe,
    timeframe_ns,
)
from l2_tactical.errors import DataError

__all__ = [
    "CANDLE_COLUMNS",
    "TIMEFRAMES",
    "CandleReport",
    "Candles",
    "Gap",
    "candles_from_frame",
    "check_candles",
    "load_candles",
    "load_many",
]

_BINANCE_KLINE_COLUMNS = (
    "timestamp", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trades", "taker_buy_base", "taker_buy_quote", "ignore",
)  # fmt: skip


@dataclass(frozen=True)
class Gap:
    """Missing bars between two bars that are present."""

    before: pd.Timestamp  # last bar present before the gap
    after: pd.Timestamp  # next bar present after the gap
    missing: int  # number of bars missing in between


@dataclass(frozen=True)
class Candles:
    """Validated OHLCV bars of one symbol on one timeframe. Treat ``frame`` as read-only.

    ``frame`` has a UTC DatetimeIndex named ``timestamp`` (bar open time, ns
    resolution, sorted, unique) and float64 columns open, high, low, close, volume.
    """

    symbol: str
    timeframe: str
    frame: pd.DataFrame
    source: str

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def timestamps_ns(self) -> np.ndarray:
        """Bar open times as int64 epoch nanoseconds."""
        return np.asarray(pd.DatetimeIndex(self.frame.index).as_unit("ns").asi8, dtype=np.int64)

    @property
    def step_ns(self) -> int:
        """Length of one bar in nanoseconds."""
        return timeframe_ns(self.timeframe)

    def _gap_rows(self) -> np.ndarray:
        """Row indices i such that a gap lies between row i and row i + 1."""
        return np.flatnonzero(np.diff(self.timestamps_ns) > self.step_ns)

    def gaps(self) -> list[Gap]:
        """Every gap on the timeframe grid, in time order."""
        ts, step = self.timestamps_ns, self.step_ns
        index = self.frame.index
        return [
            Gap(before=index[i], after=index[i + 1], missing=int((ts[i + 1] - ts[i]) // step) - 1)
            for i in self._gap_rows().tolist()
        ]

    def zero_volume_bars(self) -> pd.DatetimeIndex:
        """Open times of the bars whose volume is exactly zero."""
        return pd.DatetimeIndex(self.frame.index[self.frame["volume"].to_numpy() == 0])

    def segments(self, min_length: int = 1) -> list[tuple[int, int]]:
        """``[start, end)`` row ranges of gap-free runs with at least ``min_length`` bars."""
        cuts = (self._gap_rows() + 1).tolist()
        starts, ends = [0, *cuts], [*cuts, len(self)]
        return [(s, e) for s, e in zip(starts, ends, strict=True) if e - s >= max(min_length, 1)]

    def slice(self, start: str | pd.Timestamp | None = None, end: str | pd.Timestamp | None = None) -> Candles:
        """Bars with ``start <= timestamp < end`` (naive bounds are taken as UTC)."""
        index = self.frame.index
        lo = 0 if start is None else int(index.searchsorted(_utc(start), side="left"))
        hi = len(index) if end is None else int(index.searchsorted(_utc(end), side="left"))
        return Candles(self.symbol, self.timeframe, self.frame.iloc[lo : max(lo, hi)], self.source)


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class CandleReport:
    """What ``l2 data check`` says about one usable file."""

    path: str
    symbol: str
    timeframe: str
    rows: int
    first: pd.Timestamp
    last: pd.Timestamp
    gaps: list[Gap] = field(default_factory=list)
    missing_bars: int = 0
    zero_volume: list[pd.Timestamp] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    def largest_gaps(self, n: int = 5) -> list[Gap]:
        """The ``n`` largest gaps, largest first (earlier first on ties)."""
        return sorted(self.gaps, key=lambda g: (-g.missing, g.before))[:n]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (timestamps as ISO-8601 UTC text)."""
        return {
            "path": self.path,
            "ok": True,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "rows": self.rows,
            "first": _iso(self.first),
            "last": _iso(self.last),
            "gap_count": len(self.gaps),
            "missing_bars": self.missing_bars,
            "gaps": [{"before": _iso(g.before), "after": _iso(g.after), "missing": g.missing} for g in self.gaps],
            "zero_volume": [_iso(t) for t in self.zero_volume],
            "defects": list(self.defects),
        }


def _iso(ts: pd.Timestamp) -> str:
    return format_ts(ts.value if ts.unit == "ns" else ts.as_unit("ns").value)


def load_candles(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
) -> Candles:
    """Load and validate candles from a file or a DataFrame (see the module docstring)."""
    if isinstance(source, pd.DataFrame):
        return _build(source, symbol=symbol, timeframe=timeframe, label="<DataFrame>")
    label = os.fspath(source)
    path = Path(label)
    _check_readable(path, label)
    raw, line_offset = _read_table(path, label)
    return _build(
        raw, symbol=symbol, timeframe=timeframe, label=label, line_offset=line_offset, fallback=_name_parts(path)[0]
    )


def candles_from_frame(
    df: pd.DataFrame, *, symbol: str, timeframe: str | None = None, source: str = "<DataFrame>"
) -> Candles:
    """Validate an in-memory table (own format or FinRL) into :class:`Candles`."""
    return _build(df, symbol=symbol, timeframe=timeframe, label=source)


def load_many(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Candles]:
    """Load several files, keyed by symbol; two files of one symbol are an error."""
    loaded: dict[str, Candles] = {}
    for path in paths:
        candles = load_candles(path)
        if candles.symbol in loaded:
            other = loaded[candles.symbol].source
            raise DataError(f"symbol {candles.symbol} was already loaded from {other}", file=os.fspath(path))
        loaded[candles.symbol] = candles
    return loaded


def check_candles(path: str | os.PathLike[str]) -> CandleReport:
    """Load ``path`` (DataError if unusable) and report its gaps, zero-volume bars and defects."""
    candles = load_candles(path)
    gaps = candles.gaps()
    missing = sum(g.missing for g in gaps)
    zero = list(candles.zero_volume_bars())
    defects: list[str] = []
    if gaps:
        worst = max(gaps, key=lambda g: g.missing)
        largest = f"largest {worst.missing} after {_iso(worst.before)}"
        defects.append(f"{missing} missing bars in {len(gaps)} gaps ({largest})")
    if zero:
        defects.append(f"{len(zero)} zero-volume bars")
    named_tf = _name_parts(Path(os.fspath(path)))[1]
    if named_tf is not None and named_tf != candles.timeframe:
        defects.append(f"file name says {named_tf} but the bars are {candles.timeframe} apart")
    index = candles.frame.index
    return CandleReport(
        path=os.fspath(path),
        symbol=candles.symbol,
        timeframe=candles.timeframe,
        rows=len(candles),
        first=index[0],
        last=index[-1],
        gaps=gaps,
        missing_bars=missing,
        zero_volume=zero,
        defects=defects,
    )


def _name_parts(path: Path) -> tuple[str, str | None]:
    """Symbol and timeframe from names like ``BTCUSDT-1h.csv.gz`` or ``BTC_USDT-1h.feather``."""
    stem = path.name.split(".")[0]
    parts = stem.split("-")
    symbol = parts[0].replace("_", "").upper()
    timeframe = parts[1] if len(parts) > 1 and parts[1] in TIMEFRAMES else None
    return symbol, timeframe


def _check_readable(path: Path, label: str) -> None:
    if not path.exists():
        raise DataError("no such file", file=label)
    if path.is_dir():
        raise DataError("is a directory, not a candle file", file=label)
    if not os.access(path, os.R_OK):
        raise DataError("permission denied", file=label)


def _read_table(path: Path, label: str) -> tuple[pd.DataFrame, int | None]:
    """The raw table and the physical line of data row 1 (None for binary formats)."""
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path), None
        if name.endswith(".feather"):
            return pd.read_feather(path), None
        return _read_csv(path, label)
    except DataError:
        raise
    except PermissionError:
        raise DataError("permission denied", file=label) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"corrupt or truncated gzip: {_one_line(exc)}", file=label) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start}): is it compressed or binary?", file=label) from None
    except (OSError, ValueError) as exc:  # pyarrow errors derive from these
        raise DataError(f"unreadable file: {_one_line(exc)}", file=label) from None


def _read_csv(path: Path, label: str) -> tuple[pd.DataFrame, int]:
    try:
        raw = pd.read_csv(path, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise DataError("empty file: no header line", file=label) from None
    except pd.errors.ParserError as exc:
        raise _parser_error(exc, label) from None
    line_offset = 2
    if len(raw.columns) == len(_BINANCE_KLINE_COLUMNS) and str(raw.columns[0]).strip().isdigit():
        raw = pd.read_csv(path, header=None, names=list(_BINANCE_KLINE_COLUMNS), skip_blank_lines=False)
        raw, line_offset = raw.iloc[:, :6], 1
    end = len(raw)
    while end > 0 and raw.iloc[end - 1].isna().all():
        end -= 1  # trailing blank lines
    if end == 0:
        raise DataError("empty file: header only, no data rows", file=label)
    return raw.iloc[:end], line_offset


def _parser_error(exc: pd.errors.ParserError, label: str) -> DataError:
    text = _one_line(exc)
    marker = " in line "
    if marker in text:
        digits = text.split(marker, 1)[1].split(",")[0].strip()
        if digits.isdigit():
            line = int(digits)
            return DataError(f"malformed CSV row: {text.split('C error: ')[-1]}", file=label, row=line - 1, line=line)
    return DataError(f"malformed CSV: {text}", file=label)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _build(
    raw: pd.DataFrame,
    *,
    symbol: str | None,
    timeframe: str | None,
    label: str,
    line_offset: int | None = None,
    fallback: str | None = None,
) -> Candles:
    """Validate a raw table into Candles (the one code path for every format)."""
    if len(raw) == 0:
        raise DataError("no data rows", file=label)
    raw = _index_as_column(raw)
    names = resolve_columns(list(raw.columns), label)
    where = RowLocator(label, np.arange(len(raw)), line_offset)
    raw, where, symbol = _select_symbol(raw, names, where, symbol or None, fallback, label)
    time_col = names.get("timestamp", names.get("date", "timestamp"))
    ts = parse_timestamps(raw[time_col], where, time_col)
    values = {c: parse_numbers(raw[names[c]], where, names[c]) for c in CANDLE_COLUMNS}
    check_values(values, where, names)
    check_order(ts, where, time_col)
    tf = resolve_timeframe(ts, timeframe, label)
    check_grid(ts, tf, where, time_col)
    index = pd.DatetimeIndex(ts.view("datetime64[ns]"), name="timestamp").tz_localize("UTC")
    frame = pd.DataFrame({c: values[c] for c in CANDLE_COLUMNS}, index=index)
    return Candles(symbol=symbol, timeframe=tf, frame=frame, source=label)


def _index_as_column(raw: pd.DataFrame) -> pd.DataFrame:
    """Turn a DatetimeIndex (e.g. of a saved Candles.frame) into the timestamp column."""
    if not isinstance(raw.index, pd.DatetimeIndex):
        return raw
    lowered = {str(c).strip().lower() for c in raw.columns}
    if lowered & {"timestamp", "date"}:
        return raw.reset_index(drop=True)
    return raw.rename_axis("timestamp").reset_index()


def _select_symbol(
    raw: pd.DataFrame,
    names: dict[str, str],
    where: RowLocator,
    symbol: str | None,
    fallback: str | None,
    label: str,
) -> tuple[pd.DataFrame, RowLocator, str]:
    """Pick one ticker of a FinRL table; otherwise use ``symbol`` or the file-name symbol."""
    if "tic" not in names:
        chosen = symbol or fallback
        if not chosen:
            raise DataError("no symbol: pass symbol= (the table has no 'tic' column)", file=label)
        return raw, where, chosen
    tics = raw[names["tic"]].astype(str).str.strip()
    present = sorted(set(tics.unique().tolist()))
    shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "")
    if symbol is None:
        if len(present) == 1:
            return raw, where, present[0]
        raise DataError(f"several tickers ({shown}); pass symbol= to choose one", file=label, column=names["tic"])
    mask = (tics == symbol).to_numpy(dtype=bool)
    if not mask.any():
        raise DataError(f"no rows for symbol {symbol!r}; tickers present: {shown}", file=label, column=names["tic"])
    return raw.iloc[np.flatnonzero(mask)], where.take(mask), symbol
