"""Incremental (one closed bar at a time) versions of the TA-Lib indicators we use.

Each class keeps a few floats (and, where TA-Lib uses a running window sum, a
ring buffer as long as that window) and reproduces TA-Lib's own arithmetic:
the same seed (TA-Lib seeds EMA, RSI, ATR and ADX from a simple average of the
first ``period`` values), the same running sums for SMA and standard deviation
and the same order of floating-point operations. On x86-64 (IEEE doubles, no
fused multiply-add in the TA-Lib wheel) the values are therefore the numbers
``talib`` returns on the whole history, not approximations that converge to
them; ``tests/test_technical_streaming.py`` checks every row of the bundled
real data against ``talib``.

``value`` is ``nan`` until the indicator has seen as many bars as TA-Lib's
lookback + 1, exactly where TA-Lib's batch output stops being NaN. Nothing
here allocates per bar.
"""

from __future__ import annotations

import math
from collections import deque

NAN = math.nan
_ZERO_EPS = 1e-8  # TA-Lib's TA_IS_ZERO / TA_IS_ZERO_OR_NEG threshold


def _seq_sum(values: deque[float] | list[float]) -> float:
    """Left-to-right sum starting at 0.0, as TA-Lib's seed loops add."""
    total = 0.0
    for v in values:
        total += v
    return total


class Ema:
    """``talib.EMA`` (k = 2 / (period + 1), seeded with the SMA of the first ``period``)."""

    __slots__ = ("_n", "_sum", "k", "period", "value")

    def __init__(self, period: int, k: float | None = None) -> None:
        self.period = period
        self.k = 2.0 / (period + 1) if k is None else k
        self.value = NAN
        self._n = 0
        self._sum = 0.0

    def update(self, x: float) -> float:
        self._n += 1
        if self._n > self.period:
            self.value = (x - self.value) * self.k + self.value
        else:
            self._sum += x
            if self._n == self.period:
                self.value = self._sum / self.period
        return self.value

    def seed(self, value: float) -> None:
        """Start the recursion from ``value`` (used by MACD's aligned seeds)."""
        self.value = value
        self._n = self.period


class Sma:
    """``talib.SMA``: a running window sum, updated add-then-subtract like TA-Lib."""

    __slots__ = ("_buf", "_total", "period", "value")

    def __init__(self, period: int) -> None:
        self.period = period
        self.value = NAN
        self._buf: deque[float] = deque(maxlen=period)
        self._total = 0.0

    def update(self, x: float) -> float:
        buf = self._buf
        buf.append(x)
        self._total += x
        if len(buf) == self.period:
            self.value = self._total / self.period
            self._total -= buf[0]
        return self.value


class BBands:
    """``talib.BBANDS(period, nbdev, nbdev, matype=SMA)``: upper, middle, lower.

    TA-Lib 0.8 computes the deviation accurately (within ~1e-11 of a two-pass
    deviation), so this keeps the window and does the two-pass sum around
    TA-Lib's running SMA: O(period) per bar, ``period`` = 20 floats.
    """

    __slots__ = ("_buf", "_sma", "lower", "middle", "nbdev", "period", "upper")

    def __init__(self, period: int, nbdev: float) -> None:
        self.period = period
        self.nbdev = nbdev
        self.upper = self.middle = self.lower = NAN
        self._sma = Sma(period)
        self._buf: deque[float] = deque(maxlen=period)

    def update(self, x: float) -> None:
        mid = self._sma.update(x)
        self._buf.append(x)
        if len(self._buf) < self.period:
            return
        acc = 0.0
        for v in self._buf:
            d = v - mid
            acc += d * d
        var = acc / self.period
        dev = math.sqrt(var) * self.nbdev if var >= _ZERO_EPS else 0.0
        self.middle = mid
        self.upper = mid + dev
        self.lower = mid - dev


class Rsi:
    """``talib.RSI`` (Wilder smoothing; 0 when average gain + loss is ~0)."""

    __slots__ = ("_gain", "_loss", "_n", "_prev", "period", "value")

    def __init__(self, period: int) -> None:
        self.period = period
        self.value = NAN
        self._n = 0
        self._prev = NAN
        self._gain = 0.0
        self._loss = 0.0

    def update(self, x: float) -> float:
        n, p = self._n, self.period
        self._n = n + 1
        if n == 0:
            self._prev = x
            return self.value
        diff = x - self._prev
        self._prev = x
        if n > p:
            self._loss *= p - 1
            self._gain *= p - 1
        if diff < 0:
            self._loss -= diff
        else:
            self._gain += diff
        if n < p:
            return self.value
        self._loss /= p
        self._gain /= p
        total = self._gain + self._loss
        self.value = 100.0 * (self._gain / total) if abs(total) >= _ZERO_EPS else 0.0
        return self.value


def true_range(high: float, low: float, prev_close: float) -> float:
    """TA-Lib's TRANGE for one bar."""
    greatest = high - low
    v = abs(prev_close - high)
    if v > greatest:
        greatest = v
    v = abs(prev_close - low)
    if v > greatest:
        greatest = v
    return greatest


class Atr:
    """``talib.ATR`` (Wilder; seed = mean of the first ``period`` true ranges)."""

    __slots__ = ("_n", "_prev_close", "_sum", "period", "value")

    def __init__(self, period: int) -> None:
        self.period = period
        self.value = NAN
        self._n = 0
        self._prev_close = NAN
        self._sum = 0.0

    def update(self, high: float, low: float, close: float) -> float:
        n, p = self._n, self.period
        self._n = n + 1
        if n > 0:
            tr = true_range(high, low, self._prev_close)
            if n > p:
                v = self.value * (p - 1)
                v += tr
                self.value = v / p
            else:
                self._sum += tr
                if n == p:
                    self.value = self._sum / p
        self._prev_close = close
        return self.value


class Macd:
    """``talib.MACD(fast, slow, signal)``: ``macd``, ``signal``, ``hist``.

    TA-Lib aligns the two EMAs: both are seeded on bar ``slow - 1``, the slow
    one with the mean of the first ``slow`` closes and the fast one with the
    mean of the last ``fast`` of them; the signal EMA is seeded with the mean
    of the first ``signal`` MACD values.
    """

    __slots__ = ("_ef", "_es", "_n", "_sig", "_warm", "fast", "hist", "macd", "signal", "slow")

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        self.fast, self.slow = fast, slow
        self.macd = self.signal = self.hist = NAN
        self._n = 0
        self._warm: list[float] = []
        self._ef = Ema(fast)
        self._es = Ema(slow)
        self._sig = Ema(signal)

    def update(self, x: float) -> None:
        self._n += 1
        if self._n < self.slow:
            self._warm.append(x)
            return
        if self._n == self.slow:
            self._warm.append(x)
            self._es.seed(_seq_sum(self._warm) / self.slow)
            self._ef.seed(_seq_sum(self._warm[-self.fast :]) / self.fast)
            self._warm = []
        else:
            self._es.update(x)
            self._ef.update(x)
        macd = self._ef.value - self._es.value
        sig = self._sig.update(macd)
        if sig == sig:
            self.macd, self.signal, self.hist = macd, sig, macd - sig


class Adx:
    """``talib.ADX``, ``PLUS_DI`` and ``MINUS_DI`` (Wilder sums of DM and TR).

    ``plus_di``/``minus_di`` become finite after ``period + 1`` bars, ``adx``
    after ``2 * period``, as in TA-Lib.
    """

    __slots__ = (
        "_dx_sum",
        "_mdm",
        "_n",
        "_pc",
        "_pdm",
        "_ph",
        "_pl",
        "_tr",
        "adx",
        "minus_di",
        "period",
        "plus_di",
    )

    def __init__(self, period: int) -> None:
        self.period = period
        self.adx = self.plus_di = self.minus_di = NAN
        self._n = 0
        self._ph = self._pl = self._pc = NAN
        self._pdm = self._mdm = self._tr = self._dx_sum = 0.0

    def update(self, high: float, low: float, close: float) -> None:
        n, p = self._n, self.period
        self._n = n + 1
        if n == 0:
            self._ph, self._pl, self._pc = high, low, close
            return
        diff_p = high - self._ph
        diff_m = self._pl - low
        pdm = diff_p if (diff_p > 0 and diff_p > diff_m) else 0.0
        mdm = diff_m if (diff_m > 0 and diff_p < diff_m) else 0.0
        tr = true_range(high, low, self._pc)
        self._ph, self._pl, self._pc = high, low, close
        if n < p:
            self._pdm += pdm
            self._mdm += mdm
            self._tr += tr
            return
        self._pdm = self._pdm - self._pdm / p + pdm
        self._mdm = self._mdm - self._mdm / p + mdm
        self._tr = self._tr - self._tr / p + tr
        self._directional(n)

    def _directional(self, n: int) -> None:
        p = self.period
        if abs(self._tr) < _ZERO_EPS:
            self.plus_di = self.minus_di = 0.0
            dx = NAN
        else:
            self.minus_di = 100.0 * (self._mdm / self._tr)
            self.plus_di = 100.0 * (self._pdm / self._tr)
            total = self.minus_di + self.plus_di
            dx = 100.0 * (abs(self.minus_di - self.plus_di) / total) if abs(total) >= _ZERO_EPS else NAN
        if n < 2 * p:
            if dx == dx:
                self._dx_sum += dx
            if n == 2 * p - 1:
                self.adx = self._dx_sum / p
        elif dx == dx:
            self.adx = (self.adx * (p - 1) + dx) / p


class Stoch:
    """``talib.STOCH(fastk, slowk, SMA, slowd, SMA)``: ``k`` and ``d`` (0..100)."""

    __slots__ = ("_highs", "_lows", "_sd", "_sk", "d", "fastk", "k")

    def __init__(self, fastk: int, slowk: int, slowd: int) -> None:
        self.fastk = fastk
        self.k = self.d = NAN
        self._highs: deque[float] = deque(maxlen=fastk)
        self._lows: deque[float] = deque(maxlen=fastk)
        self._sk = Sma(slowk)
        self._sd = Sma(slowd)

    def update(self, high: float, low: float, close: float) -> None:
        self._highs.append(high)
        self._lows.append(low)
        if len(self._highs) < self.fastk:
            return
        lowest = min(self._lows)
        diff = (max(self._highs) - lowest) / 100.0
        fast_k = (close - lowest) / diff if diff != 0.0 else 0.0
        k = self._sk.update(fast_k)
        if k == k:
            d = self._sd.update(k)
            if d == d:
                self.k, self.d = k, d


class Obv:
    """``talib.OBV``: starts at the first bar's volume, then +/- volume by close direction."""

    __slots__ = ("_prev", "value")

    def __init__(self) -> None:
        self.value = NAN
        self._prev = NAN

    def update(self, close: float, volume: float) -> float:
        if self.value != self.value:
            self.value = volume
        elif close > self._prev:
            self.value += volume
        elif close < self._prev:
            self.value -= volume
        self._prev = close
        return self.value
