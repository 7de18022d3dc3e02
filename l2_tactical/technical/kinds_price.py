"""Feature kinds from prices: returns, trend, momentum, volatility, ranges.

Each kind is a batch function (arrays, TA-Lib) followed by its stream twin;
see :mod:`l2_tactical.technical.feature_kinds` for the contract.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np

from l2_tactical.technical import indicators as ind
from l2_tactical.technical import streaming as st
from l2_tactical.technical.bars import BatchBars, StreamBars
from l2_tactical.technical.feature_kinds import Params, register, safe_ratio, shifted_ratio

NAN = math.nan
Reader = Callable[[], float]


# --- shared indicator objects -------------------------------------------------------------


def _ema(sb: StreamBars, period: int) -> st.Ema:
    return sb.indicator(("ema", period), lambda: st.Ema(period), lambda e: lambda o, h, lo, c, v: e.update(c))


def _sma(sb: StreamBars, period: int) -> st.Sma:
    return sb.indicator(("sma", period), lambda: st.Sma(period), lambda e: lambda o, h, lo, c, v: e.update(c))


def _atr(sb: StreamBars, period: int) -> st.Atr:
    return sb.indicator(("atr", period), lambda: st.Atr(period), lambda a: lambda o, h, lo, c, v: a.update(h, lo, c))


def _macd(sb: StreamBars, p: Params) -> st.Macd:
    key = ("macd", p["fast"], p["slow"], p["signal"])
    return sb.indicator(
        key, lambda: st.Macd(p["fast"], p["slow"], p["signal"]), lambda m: lambda o, h, lo, c, v: m.update(c)
    )


def _adx(sb: StreamBars, period: int) -> st.Adx:
    return sb.indicator(("adx", period), lambda: st.Adx(period), lambda a: lambda o, h, lo, c, v: a.update(h, lo, c))


def _stoch(sb: StreamBars, p: Params) -> st.Stoch:
    return sb.indicator(
        ("stoch", p["fastk"], p["slowk"], p["slowd"]),
        lambda: st.Stoch(p["fastk"], p["slowk"], p["slowd"]),
        lambda s: lambda o, h, lo, c, v: s.update(h, lo, c),
    )


def _history(sb: StreamBars, key: tuple, size: int, source: Callable[[], float]) -> deque[float]:
    """Ring buffer of the last ``size`` values of an indicator, appended after it updates."""
    return sb.indicator(
        ("history", *key, size), lambda: deque(maxlen=size), lambda d: lambda o, h, lo, c, v: d.append(source())
    )


# --- returns ------------------------------------------------------------------------------


@register(
    "ret",
    {"period": 1},
    lookback=lambda p: p["period"] + 1,
    bounds=(-100, 100),
    normalisation="log return over `period` bars, in %",
)
def _ret_b(b: BatchBars, p: Params) -> np.ndarray:
    return 100 * ind.log_returns(b.close, p["period"])


@_ret_b
def _ret_s(sb: StreamBars, p: Params) -> Reader:
    d = sb.window("close", p["period"] + 1)
    return lambda: 100 * math.log(d[-1] / d[0]) if len(d) == d.maxlen else NAN


# --- momentum -----------------------------------------------------------------------------


@register(
    "rsi", {"period": 14}, lookback=lambda p: p["period"] + 1, bounds=(0, 1), neutral=0.5, normalisation="RSI / 100"
)
def _rsi_b(b: BatchBars, p: Params) -> np.ndarray:
    return ind.rsi(b.close, p["period"]) / 100


@_rsi_b
def _rsi_s(sb: StreamBars, p: Params) -> Reader:
    r = sb.indicator(("rsi", p["period"]), lambda: st.Rsi(p["period"]), lambda r: lambda o, h, lo, c, v: r.update(c))
    return lambda: r.value / 100


_MACD = {"fast": 12, "slow": 26, "signal": 9}


def _macd_lookback(p: Params) -> int:
    return p["slow"] + p["signal"] - 1


@register("macd", _MACD, lookback=_macd_lookback, bounds=(-20, 20), normalisation="MACD line, %")
def _macd_b(b: BatchBars, p: Params) -> np.ndarray:
    line, _, _ = b.cached(("macd", *p.values()), lambda: ind.macd(b.close, **p))
    return 100 * line / b.close


@_macd_b
def _macd_s(sb: StreamBars, p: Params) -> Reader:
    m = _macd(sb, p)
    return lambda: 100 * m.macd / sb.close


@register(
    "macd_hist", _MACD, lookback=_macd_lookback, bounds=(-20, 20), normalisation="MACD histogram (line - signal), %"
)
def _macd_hist_b(b: BatchBars, p: Params) -> np.ndarray:
    _, _, hist = b.cached(("macd", *p.values()), lambda: ind.macd(b.close, **p))
    return 100 * hist / b.close


@_macd_hist_b
def _macd_hist_s(sb: StreamBars, p: Params) -> Reader:
    m = _macd(sb, p)
    return lambda: 100 * m.hist / sb.close


_STOCH = {"fastk": 5, "slowk": 3, "slowd": 3}


def _stoch_lookback(p: Params) -> int:
    return p["fastk"] + p["slowk"] + p["slowd"] - 2


@register("stoch_k", _STOCH, lookback=_stoch_lookback, bounds=(0, 1), neutral=0.5, normalisation="slow %K / 100")
def _stoch_k_b(b: BatchBars, p: Params) -> np.ndarray:
    k, _ = b.cached(("stoch", *p.values()), lambda: ind.stochastic(b.high, b.low, b.close, **p))
    return k / 100


@_stoch_k_b
def _stoch_k_s(sb: StreamBars, p: Params) -> Reader:
    s = _stoch(sb, p)
    return lambda: s.k / 100


@register("stoch_d", _STOCH, lookback=_stoch_lookback, bounds=(0, 1), neutral=0.5, normalisation="slow %D / 100")
def _stoch_d_b(b: BatchBars, p: Params) -> np.ndarray:
    _, d = b.cached(("stoch", *p.values()), lambda: ind.stochastic(b.high, b.low, b.close, **p))
    return d / 100


@_stoch_d_b
def _stoch_d_s(sb: StreamBars, p: Params) -> Reader:
    s = _stoch(sb, p)
    return lambda: s.d / 100


# --- trend --------------------------------------------------------------------------------


def _slope_b(values: np.ndarray, lag: int) -> np.ndarray:
    return 100 * (shifted_ratio(values, lag) - 1) / lag


def _slope_s(d: deque[float], lag: int) -> Reader:
    return lambda: 100 * (d[-1] / d[0] - 1) / lag if len(d) == d.maxlen else NAN


@register(
    "ema_slope",
    {"period": 20, "lag": 5},
    lookback=lambda p: p["period"] + p["lag"],
    bounds=(-10, 10),
    normalisation="EMA change over `lag` bars, % per bar",
)
def _ema_slope_b(b: BatchBars, p: Params) -> np.ndarray:
    e = b.cached(("ema", p["period"]), lambda: ind.ema(b.close, p["period"]))
    return _slope_b(e, p["lag"])


@_ema_slope_b
def _ema_slope_s(sb: StreamBars, p: Params) -> Reader:
    e = _ema(sb, p["period"])
    return _slope_s(_history(sb, ("ema", p["period"]), p["lag"] + 1, lambda: e.value), p["lag"])


@register(
    "sma_slope",
    {"period": 20, "lag": 5},
    lookback=lambda p: p["period"] + p["lag"],
    bounds=(-10, 10),
    normalisation="SMA change over `lag` bars, % per bar",
)
def _sma_slope_b(b: BatchBars, p: Params) -> np.ndarray:
    s = b.cached(("sma", p["period"]), lambda: ind.sma(b.close, p["period"]))
    return _slope_b(s, p["lag"])


@_sma_slope_b
def _sma_slope_s(sb: StreamBars, p: Params) -> Reader:
    s = _sma(sb, p["period"])
    return _slope_s(_history(sb, ("sma", p["period"]), p["lag"] + 1, lambda: s.value), p["lag"])


@register(
    "ema_dist",
    {"period": 50, "atr_period": 14},
    lookback=lambda p: max(p["period"], p["atr_period"] + 1),
    bounds=(-20, 20),
    normalisation="(close - EMA) / ATR; 0 when ATR is 0",
)
def _ema_dist_b(b: BatchBars, p: Params) -> np.ndarray:
    e = b.cached(("ema", p["period"]), lambda: ind.ema(b.close, p["period"]))
    a = b.cached(("atr", p["atr_period"]), lambda: ind.atr(b.high, b.low, b.close, p["atr_period"]))
    return safe_ratio(b.close - e, a, 0.0)


@_ema_dist_b
def _ema_dist_s(sb: StreamBars, p: Params) -> Reader:
    e, a = _ema(sb, p["period"]), _atr(sb, p["atr_period"])

    def read() -> float:
        if e.value != e.value or a.value != a.value:
            return NAN
        return (sb.close - e.value) / a.value if a.value > 0 else 0.0

    return read


@register(
    "ema_spread",
    {"fast": 10, "slow": 50},
    lookback=lambda p: max(p["fast"], p["slow"]),
    bounds=(-50, 50),
    normalisation="(EMA fast - EMA slow), %",
)
def _ema_spread_b(b: BatchBars, p: Params) -> np.ndarray:
    f = b.cached(("ema", p["fast"]), lambda: ind.ema(b.close, p["fast"]))
    s = b.cached(("ema", p["slow"]), lambda: ind.ema(b.close, p["slow"]))
    return 100 * (f - s) / b.close


@_ema_spread_b
def _ema_spread_s(sb: StreamBars, p: Params) -> Reader:
    f, s = _ema(sb, p["fast"]), _ema(sb, p["slow"])
    return lambda: 100 * (f.value - s.value) / sb.close


@register("adx", {"period": 14}, lookback=lambda p: 2 * p["period"], bounds=(0, 1), normalisation="ADX / 100")
def _adx_b(b: BatchBars, p: Params) -> np.ndarray:
    return ind.adx(b.high, b.low, b.close, p["period"]) / 100


@_adx_b
def _adx_s(sb: StreamBars, p: Params) -> Reader:
    a = _adx(sb, p["period"])
    return lambda: a.adx / 100


@register(
    "di_diff", {"period": 14}, lookback=lambda p: p["period"] + 1, bounds=(-1, 1), normalisation="(+DI - -DI) / 100"
)
def _di_b(b: BatchBars, p: Params) -> np.ndarray:
    plus, minus = ind.directional_indicators(b.high, b.low, b.close, p["period"])
    return (plus - minus) / 100


@_di_b
def _di_s(sb: StreamBars, p: Params) -> Reader:
    a = _adx(sb, p["period"])
    return lambda: (a.plus_di - a.minus_di) / 100
