"""Feature kinds from volume, candlestick patterns and support/resistance levels."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np

from l2_tactical.technical import indicators as ind
from l2_tactical.technical import streaming as st
from l2_tactical.technical.bars import BatchBars, StreamBars
from l2_tactical.technical.feature_kinds import Params, register, safe_ratio
from l2_tactical.technical.patterns import PATTERNS, PatternWindow, detect_pattern, pattern_lookback
from l2_tactical.technical.support_resistance import (
    SwingLevels,
    breakouts,
    nearest_levels,
    swing_levels,
)

NAN = math.nan
Reader = Callable[[], float]
_PATTERN_WINDOW = max(pattern_lookback(name) for name in PATTERNS) + 1
SR_DIST_CAP = 20.0  # % of close; also the value when there is no level on that side


# --- volume -------------------------------------------------------------------------------


@register(
    "obv_flow",
    {"period": 20},
    lookback=lambda p: p["period"] + 1,
    bounds=(-1, 1),
    normalisation="OBV change over `period` bars / volume of those bars; 0 without volume",
)
def _obv_b(b: BatchBars, p: Params) -> np.ndarray:
    n = p["period"]
    obv = ind.obv(b.close, b.volume)
    change = np.full(len(b), np.nan)
    change[n:] = obv[n:] - obv[:-n]
    return safe_ratio(change, ind.rolling_sum(b.volume, n), 0.0)


@_obv_b
def _obv_s(sb: StreamBars, p: Params) -> Reader:
    n = p["period"]
    obv = sb.indicator(("obv",), st.Obv, lambda o_: lambda o, h, lo, c, v: o_.update(c, v))
    hist: deque[float] = sb.indicator(
        ("history", "obv", n + 1), lambda: deque(maxlen=n + 1), lambda d: lambda o, h, lo, c, v: d.append(obv.value)
    )
    vols = sb.window("volume", n)

    def read() -> float:
        if len(hist) <= n:
            return NAN
        total = sum(vols)
        return (hist[-1] - hist[0]) / total if total > 0 else 0.0

    return read


@register(
    "rel_volume",
    {"period": 20},
    lookback=lambda p: p["period"],
    bounds=lambda p: (0.0, float(p["period"])),
    neutral=1.0,
    normalisation="volume / mean volume of the last `period` bars (incl. this one); 1 without volume",
)
def _relvol_b(b: BatchBars, p: Params) -> np.ndarray:
    n = p["period"]
    return safe_ratio(b.volume, ind.rolling_sum(b.volume, n) / n, 1.0)


@_relvol_b
def _relvol_s(sb: StreamBars, p: Params) -> Reader:
    n = p["period"]
    vols = sb.window("volume", n)

    def read() -> float:
        if len(vols) < n:
            return NAN
        mean = sum(vols) / n
        return sb.volume / mean if mean > 0 else 1.0

    return read


# --- candlestick patterns -----------------------------------------------------------------


@register(
    "cdl",
    {"pattern": "hammer"},
    lookback=lambda p: pattern_lookback(p["pattern"]) + 1,
    bounds=(-2, 2),
    normalisation="TA-Lib CDL output / 100 (+1 bullish, -1 bearish, 0 none)",
)
def _cdl_b(b: BatchBars, p: Params) -> np.ndarray:
    out = detect_pattern(p["pattern"], b.open, b.high, b.low, b.close) / 100.0
    out[: pattern_lookback(p["pattern"])] = np.nan
    return out


@_cdl_b
def _cdl_s(sb: StreamBars, p: Params) -> Reader:
    w = sb.indicator(
        ("patterns",), lambda: PatternWindow(_PATTERN_WINDOW), lambda w: lambda o, h, lo, c, v: w.update(o, h, lo, c)
    )
    name = p["pattern"]
    return lambda: w.value(name) / 100.0


# --- support / resistance -----------------------------------------------------------------

_SR = {"swing": 5, "levels": 8}


def _levels_b(b: BatchBars, p: Params) -> tuple[np.ndarray, np.ndarray]:
    key = ("sr", p["swing"], p["levels"])
    return b.cached(key, lambda: nearest_levels(swing_levels(b.high, b.low, p["swing"], p["levels"]), b.close))


def _levels_s(sb: StreamBars, p: Params) -> SwingLevels:
    return sb.indicator(
        ("sr", p["swing"], p["levels"]),
        lambda: SwingLevels(p["swing"], p["levels"]),
        lambda s: lambda o, h, lo, c, v: s.update(h, lo),
    )


def _sr_lookback(p: Params) -> int:
    return 2 * p["swing"] + 1


def _distance_b(level: np.ndarray, close: np.ndarray, sign: float, warm: int) -> np.ndarray:
    out = np.where(np.isnan(level), SR_DIST_CAP, sign * 100 * (level - close) / close)
    out[:warm] = np.nan
    return out


@register(
    "sr_res_dist",
    _SR,
    lookback=_sr_lookback,
    bounds=(0, SR_DIST_CAP),
    neutral=SR_DIST_CAP,
    normalisation="(nearest resistance - close), %; the cap when there is none",
)
def _res_b(b: BatchBars, p: Params) -> np.ndarray:
    res, _ = _levels_b(b, p)
    return _distance_b(res, b.close, 1.0, _sr_lookback(p) - 1)


@_res_b
def _res_s(sb: StreamBars, p: Params) -> Reader:
    lv, warm = _levels_s(sb, p), _sr_lookback(p)

    def read() -> float:
        if sb.count < warm:
            return NAN
        res, _ = lv.nearest(sb.close)
        return SR_DIST_CAP if res != res else 100 * (res - sb.close) / sb.close

    return read


@register(
    "sr_sup_dist",
    _SR,
    lookback=_sr_lookback,
    bounds=(0, SR_DIST_CAP),
    neutral=SR_DIST_CAP,
    normalisation="(close - nearest support), %; the cap when there is none",
)
def _sup_b(b: BatchBars, p: Params) -> np.ndarray:
    _, sup = _levels_b(b, p)
    return _distance_b(sup, b.close, -1.0, _sr_lookback(p) - 1)


@_sup_b
def _sup_s(sb: StreamBars, p: Params) -> Reader:
    lv, warm = _levels_s(sb, p), _sr_lookback(p)

    def read() -> float:
        if sb.count < warm:
            return NAN
        _, sup = lv.nearest(sb.close)
        return SR_DIST_CAP if sup != sup else -100 * (sup - sb.close) / sb.close

    return read


def _breakout_lookback(p: Params) -> int:
    return max(_sr_lookback(p), p["vol_period"]) + 1


@register(
    "sr_breakout",
    {**_SR, "vol_period": 20, "vol_mult": 1.5},
    lookback=_breakout_lookback,
    bounds=(-1, 1),
    normalisation="+1 close above the previous bar's resistance on volume >= "
    "vol_mult x mean volume, -1 below its support, else 0",
)
def _brk_b(b: BatchBars, p: Params) -> np.ndarray:
    res, sup = _levels_b(b, p)
    mean = ind.rolling_sum(b.volume, p["vol_period"]) / p["vol_period"]
    out = breakouts(b.close, b.volume, res, sup, mean, p["vol_mult"])
    out[: _breakout_lookback(p) - 1] = np.nan
    return out


@_brk_b
def _brk_s(sb: StreamBars, p: Params) -> Reader:
    lv, warm = _levels_s(sb, p), _breakout_lookback(p)
    vols, n, mult = sb.window("volume", p["vol_period"]), p["vol_period"], p["vol_mult"]
    prev = [NAN, NAN]

    def read() -> float:
        c = sb.close
        res_prev, sup_prev = prev
        prev[0], prev[1] = lv.nearest(c)
        if sb.count < warm:
            return NAN
        if not sb.volume >= mult * (sum(vols) / n):
            return 0.0
        return float(c > res_prev) - float(c < sup_prev)

    return read
