"""Streaming indicators reproduce TA-Lib's batch output on every bar of real data.

Tolerance: relative 1e-9, absolute 1e-9 (indicator units, e.g. 0..100 for the
stochastic, whose TA-Lib running SMA leaves ~1e-12 residues where the value is 0).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import talib

from l2_tactical.data.candles import load_candles
from l2_tactical.technical import streaming as st
from tests.conftest import DATA


@lru_cache(maxsize=4)
def _ohlcv(name: str, rows: int | None) -> tuple[np.ndarray, ...]:
    frame = load_candles(DATA / name).frame.iloc[:rows]
    return tuple(frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume"))


def _run(make, feed, outputs, bars):
    obj = make()
    out = np.empty((bars[0].shape[0], len(outputs)))
    for i, bar in enumerate(zip(*bars, strict=True)):
        feed(obj, *bar)
        out[i] = [getattr(obj, name) for name in outputs]
    return out


CASES = {
    "ema10": (lambda: st.Ema(10), lambda o, *b: o.update(b[3]), ["value"], lambda o, h, lo, c, v: [talib.EMA(c, 10)]),
    "ema200": (
        lambda: st.Ema(200),
        lambda o, *b: o.update(b[3]),
        ["value"],
        lambda o, h, lo, c, v: [talib.EMA(c, 200)],
    ),
    "sma50": (lambda: st.Sma(50), lambda o, *b: o.update(b[3]), ["value"], lambda o, h, lo, c, v: [talib.SMA(c, 50)]),
    "rsi14": (lambda: st.Rsi(14), lambda o, *b: o.update(b[3]), ["value"], lambda o, h, lo, c, v: [talib.RSI(c, 14)]),
    "rsi21": (lambda: st.Rsi(21), lambda o, *b: o.update(b[3]), ["value"], lambda o, h, lo, c, v: [talib.RSI(c, 21)]),
    "atr14": (
        lambda: st.Atr(14),
        lambda o, *b: o.update(b[1], b[2], b[3]),
        ["value"],
        lambda o, h, lo, c, v: [talib.ATR(h, lo, c, 14)],
    ),
    "macd": (
        lambda: st.Macd(12, 26, 9),
        lambda o, *b: o.update(b[3]),
        ["macd", "signal", "hist"],
        lambda o, h, lo, c, v: list(talib.MACD(c, 12, 26, 9)),
    ),
    "bbands": (
        lambda: st.BBands(20, 2.0),
        lambda o, *b: o.update(b[3]),
        ["upper", "middle", "lower"],
        lambda o, h, lo, c, v: list(talib.BBANDS(c, 20, 2.0, 2.0, talib.MA_Type.SMA)),
    ),
    "adx": (
        lambda: st.Adx(14),
        lambda o, *b: o.update(b[1], b[2], b[3]),
        ["adx", "plus_di", "minus_di"],
        lambda o, h, lo, c, v: [talib.ADX(h, lo, c, 14), talib.PLUS_DI(h, lo, c, 14), talib.MINUS_DI(h, lo, c, 14)],
    ),
    "stoch": (
        lambda: st.Stoch(5, 3, 3),
        lambda o, *b: o.update(b[1], b[2], b[3]),
        ["k", "d"],
        lambda o, h, lo, c, v: list(talib.STOCH(h, lo, c, 5, 3, talib.MA_Type.SMA, 3, talib.MA_Type.SMA)),
    ),
    "obv": (lambda: st.Obv(), lambda o, *b: o.update(b[3], b[4]), ["value"], lambda o, h, lo, c, v: [talib.OBV(c, v)]),
}


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("BTCUSDT-1h.csv.gz", 30_000),
        ("BTCUSDT-1m.csv.gz", 10_000),
        pytest.param("BTCUSDT-1h.csv.gz", None, marks=pytest.mark.slow),
        pytest.param("BTCUSDT-1m.csv.gz", None, marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("case", sorted(CASES))
def test_streaming_indicator_equals_talib_on_every_real_bar(case: str, name: str, rows: int | None) -> None:
    make, feed, outputs, reference = CASES[case]
    bars = _ohlcv(name, rows)
    got = _run(make, feed, outputs, bars)
    for k, want in enumerate(reference(*bars)):
        np.testing.assert_array_equal(np.isnan(got[:, k]), np.isnan(want), err_msg=f"{case}.{outputs[k]} warm-up")
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok, k], want[ok], rtol=1e-9, atol=1e-9, err_msg=f"{case}.{outputs[k]}")


def test_streaming_indicators_stay_finite_and_match_talib_on_flat_zero_volume_bars() -> None:
    cols = tuple(np.full(300, x) for x in (100.0, 100.0, 100.0, 100.0, 0.0))
    for case, (make, feed, outputs, reference) in CASES.items():
        got = _run(make, feed, outputs, cols)
        assert np.isfinite(got[-1]).all(), case
        np.testing.assert_allclose(got[-1], [w[-1] for w in reference(*cols)], err_msg=case)
