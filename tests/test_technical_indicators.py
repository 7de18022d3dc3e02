"""What TA-Lib lacks, written as vectorised functions, checked against pandas on real data."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from l2_tactical.data.candles import load_candles
from l2_tactical.technical import indicators as ind
from tests.conftest import DATA


@lru_cache(maxsize=2)
def _close(name: str) -> pd.Series:
    return load_candles(DATA / name).frame["close"]


@pytest.mark.parametrize("period", [1, 5, 10, 20])
def test_log_returns_match_pandas(period: int) -> None:
    close = _close("BTCUSDT-1h.csv.gz")
    want = np.log(close / close.shift(period)).to_numpy()
    np.testing.assert_allclose(ind.log_returns(close.to_numpy(), period), want, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("window", [20, 50])
def test_realized_volatility_matches_pandas_rolling_std(window: int) -> None:
    close = _close("BTCUSDT-1h.csv.gz")
    want = np.log(close).diff().rolling(window).std(ddof=1).to_numpy()
    np.testing.assert_allclose(ind.realized_volatility(close.to_numpy(), window), want, rtol=1e-7, equal_nan=True)


@pytest.mark.parametrize("window", [20, 50])
def test_zscore_matches_pandas(window: int) -> None:
    close = _close("BTCUSDT-1h.csv.gz")
    roll = close.rolling(window)
    want = ((close - roll.mean()) / roll.std(ddof=0)).to_numpy()
    np.testing.assert_allclose(ind.zscore(close.to_numpy(), window), want, rtol=1e-6, atol=1e-9, equal_nan=True)


def test_rolling_correlation_of_two_real_symbols_matches_pandas() -> None:
    btc, eth = _close("BTCUSDT-1h.csv.gz"), _close("ETHUSDT-1h.csv.gz")
    assert btc.index.equals(eth.index)  # data/README.md: same timestamps
    rb, re = np.log(btc).diff().iloc[1:], np.log(eth).diff().iloc[1:]
    want = rb.rolling(168).corr(re).to_numpy()
    got = ind.rolling_correlation(rb.to_numpy(), re.to_numpy(), 168)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10, equal_nan=True)
    assert 0.6 < np.nanmean(got) < 0.95  # README: hourly log-return correlation 0.835


def test_flat_windows_give_zero_not_nan_or_inf() -> None:
    flat = np.full(60, 100.0)
    assert (ind.zscore(flat, 20)[19:] == 0).all()
    assert (ind.realized_volatility(flat, 20)[20:] == 0).all()
    assert (ind.rolling_correlation(flat, np.arange(60.0), 20)[19:] == 0).all()
    with pytest.raises(ValueError, match="lengths differ"):
        ind.rolling_correlation(flat, flat[:10], 5)


def test_rolling_windows_match_pandas() -> None:
    volume = load_candles(DATA / "BTCUSDT-1h.csv.gz").frame["volume"]
    for fn, ref in ((ind.rolling_sum, "sum"), (ind.rolling_max, "max"), (ind.rolling_min, "min")):
        want = getattr(volume.rolling(20), ref)().to_numpy()
        np.testing.assert_allclose(fn(volume.to_numpy(), 20), want, rtol=1e-9, equal_nan=True)
