"""Batch indicators: TA-Lib where TA-Lib has the indicator, vectorised numpy where it has not.

Every function is pure: float64 arrays in, float64 arrays of the same length
out, ``nan`` where the indicator is still warming up (exactly where TA-Lib
puts its ``nan``). No Python loop over history.

The incremental twins of the TA-Lib indicators live in
:mod:`l2_tactical.technical.streaming`; the windowed helpers here have
incremental twins in :mod:`l2_tactical.technical.feature_kinds`.

>>> import numpy as np
>>> log_returns(np.array([100.0, 110.0, 99.0]), 1).round(4).tolist()
[nan, 0.0953, -0.1054]
>>> zscore(np.array([1.0, 2.0, 3.0]), 3).round(4).tolist()
[nan, nan, 1.2247]
"""

from __future__ import annotations

import numpy as np
import talib
from numpy.lib.stride_tricks import sliding_window_view

FloatArray = np.ndarray


def _padded(values: FloatArray, lookback: int) -> FloatArray:
    """Prefix ``lookback`` nans so a window result lines up with its last bar."""
    out = np.full(values.shape[0] + lookback, np.nan)
    out[lookback:] = values
    return out


def _windows(x: FloatArray, window: int) -> FloatArray:
    """``[n - window + 1, window]`` view of the trailing windows of ``x``."""
    return sliding_window_view(x, window)


# --- TA-Lib ---------------------------------------------------------------------------


def ema(close: FloatArray, period: int) -> FloatArray:
    return talib.EMA(close, timeperiod=period)


def sma(close: FloatArray, period: int) -> FloatArray:
    return talib.SMA(close, timeperiod=period)


def rsi(close: FloatArray, period: int = 14) -> FloatArray:
    return talib.RSI(close, timeperiod=period)


def macd(
    close: FloatArray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD line, signal line and histogram."""
    return talib.MACD(close, fastperiod=fast, slowperiod=slow, signalperiod=signal)


def bollinger(close: FloatArray, period: int = 20, nbdev: float = 2.0) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Upper, middle (SMA) and lower Bollinger band."""
    return talib.BBANDS(close, timeperiod=period, nbdevup=nbdev, nbdevdn=nbdev, matype=talib.MA_Type.SMA)


def atr(high: FloatArray, low: FloatArray, close: FloatArray, period: int = 14) -> FloatArray:
    return talib.ATR(high, low, close, timeperiod=period)


def adx(high: FloatArray, low: FloatArray, close: FloatArray, period: int = 14) -> FloatArray:
    return talib.ADX(high, low, close, timeperiod=period)


def directional_indicators(
    high: FloatArray, low: FloatArray, close: FloatArray, period: int = 14
) -> tuple[FloatArray, FloatArray]:
    """+DI and -DI (0..100)."""
    plus = talib.PLUS_DI(high, low, close, timeperiod=period)
    minus = talib.MINUS_DI(high, low, close, timeperiod=period)
    return plus, minus


def stochastic(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    fastk: int = 5,
    slowk: int = 3,
    slowd: int = 3,
) -> tuple[FloatArray, FloatArray]:
    """Slow %K and %D (0..100), SMA smoothing."""
    return talib.STOCH(
        high,
        low,
        close,
        fastk_period=fastk,
        slowk_period=slowk,
        slowk_matype=talib.MA_Type.SMA,
        slowd_period=slowd,
        slowd_matype=talib.MA_Type.SMA,
    )


def obv(close: FloatArray, volume: FloatArray) -> FloatArray:
    return talib.OBV(close, volume)


# --- what TA-Lib lacks ------------------------------------------------------------------


def log_returns(close: FloatArray, period: int = 1) -> FloatArray:
    """``log(close[t] / close[t - period])``; the first ``period`` values are nan."""
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] > period:
        out[period:] = np.log(close[period:] / close[:-period])
    return out


def rolling_sum(x: FloatArray, window: int) -> FloatArray:
    """Sum over the trailing ``window`` values, computed per window (no running-sum drift)."""
    if x.shape[0] < window:
        return np.full(x.shape[0], np.nan)
    return _padded(_windows(x, window).sum(axis=1), window - 1)


def rolling_max(x: FloatArray, window: int) -> FloatArray:
    if x.shape[0] < window:
        return np.full(x.shape[0], np.nan)
    return _padded(_windows(x, window).max(axis=1), window - 1)


def rolling_min(x: FloatArray, window: int) -> FloatArray:
    if x.shape[0] < window:
        return np.full(x.shape[0], np.nan)
    return _padded(_windows(x, window).min(axis=1), window - 1)


def rolling_mean_std(x: FloatArray, window: int, ddof: int = 0) -> tuple[FloatArray, FloatArray]:
    """Two-pass mean and standard deviation over each trailing window."""
    if x.shape[0] < window:
        nan = np.full(x.shape[0], np.nan)
        return nan, nan.copy()
    w = _windows(x, window)
    mean = w.sum(axis=1) / window
    dev = w - mean[:, None]
    var = (dev * dev).sum(axis=1) / (window - ddof)
    return _padded(mean, window - 1), _padded(np.sqrt(var), window - 1)


def realized_volatility(close: FloatArray, window: int = 20) -> FloatArray:
    """Sample standard deviation of the last ``window`` one-bar log returns (per bar, not annualised)."""
    r = log_returns(close, 1)
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] > window:
        _, std = rolling_mean_std(r[1:], window, ddof=1)
        out[1:] = std
    return out


def zscore(close: FloatArray, window: int = 20) -> FloatArray:
    """``(close - mean) / std`` over the trailing window (population std); 0 when the window is flat."""
    mean, std = rolling_mean_std(close, window)
    out = np.zeros_like(close)
    flat = ~(std > 1e-9 * np.abs(mean))
    np.divide(close - mean, std, out=out, where=~flat)
    out[np.isnan(mean)] = np.nan
    return out


def rolling_correlation(a: FloatArray, b: FloatArray, window: int = 50) -> FloatArray:
    """Pearson correlation of two aligned series (e.g. two symbols' log returns) per window.

    A window in which either series is constant has no correlation: 0.
    """
    if a.shape != b.shape:
        raise ValueError(f"series lengths differ: {a.shape[0]} and {b.shape[0]}")
    if a.shape[0] < window:
        return np.full(a.shape[0], np.nan)
    wa, wb = _windows(a, window), _windows(b, window)
    da = wa - wa.mean(axis=1)[:, None]
    db = wb - wb.mean(axis=1)[:, None]
    den = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
    cov = (da * db).sum(axis=1)
    out = np.zeros_like(cov)
    np.divide(cov, den, out=out, where=den > 0)
    return _padded(np.clip(out, -1.0, 1.0), window - 1)
