"""Validation of raw candle tables: columns, timestamps, numbers, OHLC rules, timeframe.

Every check works on whole columns (pandas/numpy), never with a Python loop per
row, and raises :class:`~l2_tactical.errors.DataError` at the first offending
row. The error names the file, the 1-based data row (and, for text files, the
physical line), the column as it is spelled in the input, and the offending
value; when more rows share the defect, the message says how many.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from l2_tactical.errors import DataError

CANDLE_COLUMNS = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
TIME_COLUMNS = ("timestamp", "date")
FINRL_COLUMNS = ("tic", "day")
KNOWN_COLUMNS = (*TIME_COLUMNS, *CANDLE_COLUMNS, *FINRL_COLUMNS)

#: Supported timeframes and their length in seconds.
TIMEFRAMES: dict[str, int] = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1_800,
    "1h": 3_600,
    "2h": 7_200,
    "4h": 14_400,
    "6h": 21_600,
    "8h": 28_800,
    "12h": 43_200,
    "1d": 86_400,
    "3d": 259_200,
    "1w": 604_800,
}
_NS_PER_S = 1_000_000_000
_MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none", "nat"})


@dataclass(frozen=True)
class RowLocator:
    """Maps positions in the table being checked back to rows and lines of the input.

    ``positions`` holds the original 0-based data-row position of every row still
    being checked (rows can be dropped, e.g. other tickers of a FinRL table);
    ``line_offset`` is the physical line of data row 1's position 0 (2 for a CSV
    with one header line) or ``None`` when the input has no lines.
    """

    file: str
    positions: np.ndarray
    line_offset: int | None = None

    def take(self, mask: np.ndarray) -> RowLocator:
        return RowLocator(self.file, self.positions[mask], self.line_offset)

    def error(self, message: str, index: int, column: str | None, mask: np.ndarray | None = None) -> DataError:
        pos = int(self.positions[index])
        count = int(mask.sum()) if mask is not None else 1
        if count > 1:
            message += f" ({count - 1} more row{'s' if count > 2 else ''} with this defect)"
        line = None if self.line_offset is None else pos + self.line_offset
        return DataError(message, file=self.file, row=pos + 1, line=line, column=column)


def first_bad(mask: np.ndarray) -> int | None:
    """Index of the first True in ``mask``, or None."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def format_ts(ns: int | np.integer) -> str:
    """ISO-8601 UTC text of an epoch-nanosecond timestamp."""
    return str(pd.Timestamp(int(ns), unit="ns", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"))


def timeframe_ns(timeframe: str) -> int:
    """Length of a timeframe label in nanoseconds; DataError for an unknown label."""
    if timeframe not in TIMEFRAMES:
        hint = difflib.get_close_matches(str(timeframe), list(TIMEFRAMES), n=1)
        tip = f"did you mean {hint[0]!r}? " if hint else ""
        raise DataError(f"unknown timeframe {timeframe!r}; {tip}expected one of {', '.join(TIMEFRAMES)}")
    return TIMEFRAMES[timeframe] * _NS_PER_S


def resolve_columns(names: Sequence[object], file: str) -> dict[str, str]:
    """Map canonical column names to the input's spelling (case and spaces ignored).

    Unknown columns fail with a "did you mean" hint; missing ones are named.
    """
    mapping: dict[str, str] = {}
    for name in names:
        key = str(name).strip().lower()
        if key not in KNOWN_COLUMNS:
            hint = difflib.get_close_matches(key, KNOWN_COLUMNS, n=1)
            tip = f"did you mean {hint[0]!r}?" if hint else f"expected {', '.join(('timestamp', *CANDLE_COLUMNS))}"
            raise DataError(f"unknown column {str(name)!r}; {tip}", file=file, column=str(name))
        if key in mapping:
            raise DataError(f"duplicate column {str(name)!r}", file=file, column=str(name))
        mapping[key] = str(name)
    if "timestamp" in mapping and "date" in mapping:
        raise DataError("both 'timestamp' and 'date' columns; keep one", file=file, column=mapping["date"])
    if "day" in mapping and "tic" not in mapping:
        raise DataError("unknown column 'day' (only allowed in FinRL tables with 'tic')", file=file, column="day")
    required = ("date" if "date" in mapping else "timestamp", *CANDLE_COLUMNS)
    missing = [c for c in required if c not in mapping]
    if missing:
        header = ", ".join(str(n) for n in names)
        raise DataError(f"missing column {missing[0]!r} (columns present: {header})", file=file, column=missing[0])
    return mapping


def _missing_tokens(raw: pd.Series) -> np.ndarray:
    """True where a raw cell is empty or spells a missing value ("", "nan", ...)."""
    text = raw.astype(object).map(lambda v: v if isinstance(v, str) else "")
    return np.asarray(raw.isna() | text.str.strip().str.lower().isin(_MISSING_TOKENS), dtype=bool)


def parse_timestamps(raw: pd.Series, where: RowLocator, column: str) -> np.ndarray:
    """Parse a timestamp column to int64 epoch nanoseconds, UTC.

    ISO-8601 text with an offset is converted to UTC; naive text or naive
    datetimes are taken as UTC. Integer columns are epoch seconds, milliseconds,
    microseconds or nanoseconds, told apart by magnitude (Binance klines use ms,
    its newer archives us).
    """
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        parsed = pd.to_datetime(raw, utc=True)
    elif pd.api.types.is_numeric_dtype(raw.dtype) or _looks_like_epoch(raw):
        parsed = _from_epoch(raw)
    else:
        parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna().to_numpy(dtype=bool)
    i = first_bad(bad)
    if i is not None:
        value = raw.iloc[i]
        what = "missing timestamp" if _missing_tokens(raw.iloc[[i]])[0] else f"unparsable timestamp {value!r}"
        raise where.error(what, i, column, bad)
    try:
        return np.asarray(pd.DatetimeIndex(parsed).as_unit("ns").asi8, dtype=np.int64)
    except (pd.errors.OutOfBoundsDatetime, OverflowError):
        raise DataError("timestamp outside the years 1677-2262", file=where.file, column=column) from None


def _looks_like_epoch(raw: pd.Series) -> bool:
    first = str(raw.iloc[0]).strip() if len(raw) else ""
    return first.lstrip("-").isdigit()


def _from_epoch(raw: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(raw, errors="coerce")
    if not pd.api.types.is_integer_dtype(numbers.dtype):
        floats = numbers.astype("float64")
        numbers = floats.where(np.isfinite(floats) & (floats == np.floor(floats)))
    magnitude = float(numbers.abs().max()) if numbers.notna().any() else 0.0
    unit = "s" if magnitude < 1e11 else "ms" if magnitude < 1e14 else "us" if magnitude < 1e17 else "ns"
    return pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")


def parse_numbers(raw: pd.Series, where: RowLocator, column: str) -> np.ndarray:
    """Parse a numeric column to float64; unparsable, missing and infinite cells fail."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        nan_at = np.flatnonzero(np.isnan(values))
        if nan_at.size:
            unparsable = np.zeros(values.size, dtype=bool)
            unparsable[nan_at] = ~_missing_tokens(raw.iloc[nan_at])
            i = first_bad(unparsable)
            if i is not None:
                raise where.error(f"unparsable number {raw.iloc[i]!r}", i, column, unparsable)
    missing = np.isnan(values)
    i = first_bad(missing)
    if i is not None:
        raise where.error(f"missing value (NaN): {raw.iloc[i]!r}", i, column, missing)
    infinite = np.isinf(values)
    i = first_bad(infinite)
    if i is not None:
        raise where.error(f"non-finite value {float(values[i])!r}", i, column, infinite)
    return np.asarray(values, dtype=np.float64)


def check_values(values: Mapping[str, np.ndarray], where: RowLocator, names: Mapping[str, str]) -> None:
    """Positive prices, non-negative volume, low <= open, close <= high."""
    for col in PRICE_COLUMNS:
        bad = values[col] <= 0
        i = first_bad(bad)
        if i is not None:
            raise where.error(f"non-positive price {col}={float(values[col][i])!r}", i, names[col], bad)
    bad = values["volume"] < 0
    i = first_bad(bad)
    if i is not None:
        raise where.error(f"negative volume {float(values['volume'][i])!r}", i, names["volume"], bad)
    high, low = values["high"], values["low"]
    bad = high < low
    i = first_bad(bad)
    if i is not None:
        raise where.error(f"high < low (high={float(high[i])!r}, low={float(low[i])!r})", i, names["high"], bad)
    for col in ("open", "close"):
        bad = (values[col] < low) | (values[col] > high)
        i = first_bad(bad)
        if i is not None:
            detail = f"{col}={float(values[col][i])!r} outside [low, high] = [{float(low[i])!r}, {float(high[i])!r}]"
            raise where.error(detail, i, names[col], bad)


def check_order(ts: np.ndarray, where: RowLocator, column: str) -> None:
    """Timestamps must be unique and strictly increasing."""
    dup = pd.Index(ts).duplicated()
    i = first_bad(dup)
    if i is not None:
        first = int(np.flatnonzero(ts == ts[i])[0])
        earlier = int(where.positions[first]) + 1
        raise where.error(f"duplicate timestamp {format_ts(ts[i])} (same as data row {earlier})", i, column, dup)
    back = np.zeros(ts.size, dtype=bool)
    back[1:] = ts[1:] < ts[:-1]
    i = first_bad(back)
    if i is not None:
        msg = f"timestamp {format_ts(ts[i])} is earlier than the previous row's {format_ts(ts[i - 1])} (out of order)"
        raise where.error(msg, i, column, back)


def resolve_timeframe(ts: np.ndarray, given: str | None, file: str) -> str:
    """The given timeframe (validated) or the one matching the median bar spacing."""
    if given is not None:
        try:
            timeframe_ns(given)
        except DataError as exc:
            raise DataError(exc.message, file=file) from None
        return given
    if ts.size < 2:
        raise DataError("cannot infer the timeframe from a single bar; pass timeframe=", file=file)
    median = int(np.quantile(np.diff(ts), 0.5, method="lower"))
    for label, seconds in TIMEFRAMES.items():
        if seconds * _NS_PER_S == median:
            return label
    raise DataError(
        f"cannot infer the timeframe: median bar spacing {pd.Timedelta(median, unit='ns')} "
        f"is none of {', '.join(TIMEFRAMES)}; pass timeframe=",
        file=file,
    )


def check_grid(ts: np.ndarray, timeframe: str, where: RowLocator, column: str) -> None:
    """Every spacing between bars must be a whole number of timeframe steps."""
    step = timeframe_ns(timeframe)
    off = np.zeros(ts.size, dtype=bool)
    off[1:] = np.diff(ts) % step != 0
    i = first_bad(off)
    if i is not None:
        delta = pd.Timedelta(int(ts[i] - ts[i - 1]), unit="ns")
        msg = f"timestamp {format_ts(ts[i])} is {delta} after the previous bar, off the {timeframe} grid"
        raise where.error(msg, i, column, off)
