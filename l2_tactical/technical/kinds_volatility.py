"""Feature kinds for volatility and mean reversion: Bollinger, ATR, realised vol, z-score, ranges."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from itertools import islice

import numpy as np

from l2_tactical.technical import indicators as ind
from l2_tactical.technical import streaming as st
from l2_tactical.technical.bars import BatchBars, StreamBars
from l2_tactical.technical.feature_kinds import Params, register, safe_ratio

NAN = math.nan
Reader = Callable[[], float]
_BB = {"period": 20, "nbdev": 2.0}


def _bbands(sb: StreamBars, p: Params) -> st.BBands:
    return sb.indicator(
        ("bbands", p["period"], p["nbdev"]),
        lambda: st.BBands(p["period"], p["nbdev"]),
        lambda b: lambda o, h, lo, c, v: b.update(c),
    )


def _bb_batch(b: BatchBars, p: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return b.cached(("bbands", p["period"], p["nbdev"]), lambda: ind.bollinger(b.close, p["period"], p["nbdev"]))


def _pctb_bounds(p: Params) -> tuple[float, float]:
    # |close - mean| <= sqrt(n - 1) * population std, so %b stays within these
    half = math.sqrt(p["period"] - 1) / (2 * p["nbdev"])
    return 0.5 - half, 0.5 + half


@register(
    "bb_pctb",
    _BB,
    lookback=lambda p: p["period"],
    bounds=_pctb_bounds,
    neutral=0.5,
    normalisation="Bollinger %b = (close - lower) / (upper - lower); 0.5 when the bands touch",
)
def _pctb_b(b: BatchBars, p: Params) -> np.ndarray:
    upper, _, lower = _bb_batch(b, p)
    return safe_ratio(b.close - lower, upper - lower, 0.5)


@_pctb_b
def _pctb_s(sb: StreamBars, p: Params) -> Reader:
    bb = _bbands(sb, p)

    def read() -> float:
        width = bb.upper - bb.lower
        if width != width:
            return NAN
        return (sb.close - bb.lower) / width if width > 0 else 0.5

    return read


@register(
    "bb_width", _BB, lookback=lambda p: p["period"], bounds=(0, 200), normalisation="(upper - lower) / middle band, %"
)
def _width_b(b: BatchBars, p: Params) -> np.ndarray:
    upper, middle, lower = _bb_batch(b, p)
    return 100 * (upper - lower) / middle


@_width_b
def _width_s(sb: StreamBars, p: Params) -> Reader:
    bb = _bbands(sb, p)
    return lambda: 100 * (bb.upper - bb.lower) / bb.middle


@register("atr", {"period": 14}, lookback=lambda p: p["period"] + 1, bounds=(0, 100), normalisation="ATR, %")
def _atr_b(b: BatchBars, p: Params) -> np.ndarray:
    a = b.cached(("atr", p["period"]), lambda: ind.atr(b.high, b.low, b.close, p["period"]))
    return 100 * a / b.close


@_atr_b
def _atr_s(sb: StreamBars, p: Params) -> Reader:
    a = sb.indicator(
        ("atr", p["period"]), lambda: st.Atr(p["period"]), lambda a: lambda o, h, lo, c, v: a.update(h, lo, c)
    )
    return lambda: 100 * a.value / sb.close


def _two_pass(values: Iterable[float], n: int, ddof: int) -> tuple[float, float]:
    """Mean and std of ``n`` values (two passes; the batch twin sums per window too)."""
    mean = sum(values) / n
    devs = [x - mean for x in values]
    return mean, math.sqrt(sum([d * d for d in devs]) / (n - ddof))


@register(
    "realized_vol",
    {"period": 20},
    lookback=lambda p: p["period"] + 1,
    bounds=(0, 50),
    normalisation="sample std of 1-bar log returns over `period` bars, % per bar",
)
def _rv_b(b: BatchBars, p: Params) -> np.ndarray:
    return 100 * ind.realized_volatility(b.close, p["period"])


@_rv_b
def _rv_s(sb: StreamBars, p: Params) -> Reader:
    n = p["period"]
    closes = sb.window("close", 2)
    rets: deque[float] = sb.indicator(
        ("log_returns", n),
        lambda: deque(maxlen=n),
        lambda d: lambda o, h, lo, c, v: d.append(math.log(c / closes[0])) if len(closes) == 2 else None,
    )
    return lambda: 100 * _two_pass(rets, n, 1)[1] if len(rets) == n else NAN


@register(
    "zscore",
    {"period": 20},
    lookback=lambda p: p["period"],
    bounds=lambda p: (-math.sqrt(p["period"] - 1), math.sqrt(p["period"] - 1)),
    normalisation="(close - rolling mean) / rolling std (population); 0 on a flat window",
)
def _z_b(b: BatchBars, p: Params) -> np.ndarray:
    return ind.zscore(b.close, p["period"])


@_z_b
def _z_s(sb: StreamBars, p: Params) -> Reader:
    n = p["period"]
    d = sb.window("close", n)

    def read() -> float:
        if len(d) < n:
            return NAN
        mean, std = _two_pass(d, n, 0)
        return (sb.close - mean) / std if std > 1e-9 * abs(mean) else 0.0

    return read


@register(
    "range_pos",
    {"period": 20},
    lookback=lambda p: p["period"],
    bounds=(0, 1),
    neutral=0.5,
    normalisation="(close - lowest low) / (highest high - lowest low) over `period` bars",
)
def _rpos_b(b: BatchBars, p: Params) -> np.ndarray:
    hh, ll = ind.rolling_max(b.high, p["period"]), ind.rolling_min(b.low, p["period"])
    return safe_ratio(b.close - ll, hh - ll, 0.5)


@_rpos_b
def _rpos_s(sb: StreamBars, p: Params) -> Reader:
    highs, lows = sb.window("high", p["period"]), sb.window("low", p["period"])

    def read() -> float:
        if len(highs) < p["period"]:
            return NAN
        hh, ll = max(highs), min(lows)
        return (sb.close - ll) / (hh - ll) if hh - ll > 0 else 0.5

    return read


@register(
    "range_break",
    {"period": 20},
    lookback=lambda p: p["period"] + 1,
    bounds=(-1, 1),
    normalisation="+1 close above the previous `period` bars' high, -1 below their low, else 0",
)
def _rbreak_b(b: BatchBars, p: Params) -> np.ndarray:
    n = p["period"]
    out = np.full(len(b), np.nan)
    hh, ll = ind.rolling_max(b.high, n), ind.rolling_min(b.low, n)
    c = b.close[1:]
    out[1:] = (c > hh[:-1]).astype(float) - (c < ll[:-1]).astype(float)
    out[:n] = np.nan
    return out


@_rbreak_b
def _rbreak_s(sb: StreamBars, p: Params) -> Reader:
    n = p["period"]
    highs, lows = sb.window("high", n + 1), sb.window("low", n + 1)

    def read() -> float:
        if len(highs) <= n:
            return NAN
        c = sb.close
        return float(c > max(islice(highs, n))) - float(c < min(islice(lows, n)))

    return read


@register("range_pct", {}, lookback=lambda p: 1, bounds=(0, 100), normalisation="(high - low), %")
def _range_b(b: BatchBars, p: Params) -> np.ndarray:
    return 100 * (b.high - b.low) / b.close


@_range_b
def _range_s(sb: StreamBars, p: Params) -> Reader:
    return lambda: 100 * (sb.high - sb.low) / sb.close
