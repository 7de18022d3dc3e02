"""PositionSizer: every method on real BTC/ETH candles; sizes are finite and never negative."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2_tactical.config import L2Config
from l2_tactical.messages import SignalDirection, SignalSource, TacticalSignal
from l2_tactical.position_sizer import (
    SizingInputs,
    bar_volatility,
    bars_per_year,
    combine_sizes,
    correlation_factor,
    fixed_risk_notional,
    kelly_risk_fraction,
    realised_volatility,
    return_correlation,
    risk_parity_weights,
    rolling_return_correlation,
    size_position,
    vol_target_notional,
    win_probability,
)

DATA = Path(__file__).resolve().parent.parent / "data"


@cache
def candles(symbol: str) -> pd.DataFrame:
    return pd.read_csv(DATA / f"{symbol}-1h.csv.gz", parse_dates=["timestamp"], index_col="timestamp")


CFG = L2Config.default()


def signal(strength: float = 0.8, confidence: float = 0.7, **metadata: float) -> TacticalSignal:
    return TacticalSignal(
        symbol="BTCUSDT",
        direction=SignalDirection.LONG,
        strength=strength,
        confidence=confidence,
        price=30000.0,
        source=SignalSource.COMPOSITE,
        timestamp=datetime(2023, 1, 1, tzinfo=timezone.utc),
        metadata=metadata,
    )


def inputs(**kw: object) -> SizingInputs:
    base: dict[str, object] = {
        "symbol": "BTCUSDT",
        "price": 30000.0,
        "stop_loss": 29400.0,
        "take_profit": 31200.0,
        "equity": 10000.0,
        "win_probability": 0.55,
        "volatility": 0.6,
    }
    base.update(kw)
    return SizingInputs(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------- Kelly


def test_kelly_risk_fraction_is_the_fraction_of_the_kelly_optimum():
    # p = 0.6, b = 2: optimum 0.6 - 0.4 / 2 = 0.4; a quarter of it is 0.1
    assert kelly_risk_fraction(0.6, 2.0, 0.25) == pytest.approx(0.1)


@pytest.mark.parametrize("p, b", [(0.3, 2.0), (0.5, 1.0), (0.2, 0.5)])
def test_kelly_risk_fraction_is_zero_without_an_edge(p: float, b: float):
    assert kelly_risk_fraction(p, b, 0.25) == 0.0


@pytest.mark.parametrize("p, b", [(math.nan, 2.0), (0.6, math.inf), (0.6, 0.0), (1.5, 2.0)])
def test_kelly_risk_fraction_rejects_unusable_inputs_with_zero(p: float, b: float):
    assert kelly_risk_fraction(p, b, 0.25) == 0.0


def test_win_probability_blends_confidence_with_a_coin_flip_by_strength():
    assert win_probability(signal(strength=0.0, confidence=0.9)) == pytest.approx(0.5)
    assert win_probability(signal(strength=1.0, confidence=0.9)) == pytest.approx(0.9)
    assert win_probability(signal(strength=0.5, confidence=0.3)) == pytest.approx(0.4)


def test_win_probability_prefers_the_sources_own_estimate():
    assert win_probability(signal(win_probability=0.42)) == pytest.approx(0.42)


# --------------------------------------------------------- volatility targeting


def test_realised_volatility_annualises_hourly_log_returns_like_pandas():
    close = candles("BTCUSDT")["close"].iloc[40000:40500]
    expected = np.log(close).diff().std() * math.sqrt(365 * 24)
    assert realised_volatility(close.to_numpy(), "1h") == pytest.approx(expected, rel=1e-12)


def test_vol_target_notional_scales_inversely_with_volatility():
    assert vol_target_notional(10000.0, 0.15, 0.30) == pytest.approx(5000.0)
    assert vol_target_notional(10000.0, 0.15, 0.60) == pytest.approx(2500.0)
    assert vol_target_notional(10000.0, 0.15, 0.0) == math.inf  # no constraint, never a number from 0-division


@pytest.mark.parametrize("tf, expected", [("1m", 525600.0), ("15m", 35040.0), ("1h", 8760.0), ("1d", 365.0)])
def test_bars_per_year_counts_a_round_the_clock_year(tf: str, expected: float):
    assert bars_per_year(tf) == expected


@pytest.mark.parametrize("tf", ["", "h", "0h", "1y", "one hour"])
def test_bars_per_year_names_a_bad_timeframe(tf: str):
    with pytest.raises(ValueError, match="timeframe"):
        bars_per_year(tf)


# ------------------------------------------------------ fixed risk, risk parity


def test_fixed_risk_notional_loses_max_loss_per_trade_at_the_stop():
    notional = fixed_risk_notional(10000.0, 0.02, 0.04)
    assert notional * 0.04 == pytest.approx(200.0)


def test_risk_parity_weights_equalise_volatility_contributions():
    vols = [0.8, 0.6, 1.2]
    w = risk_parity_weights(vols)
    assert w.sum() == pytest.approx(1.0)
    contributions = w * np.array(vols)
    assert np.allclose(contributions, contributions[0])


def test_risk_parity_weights_fall_back_to_equal_weights_when_a_vol_is_unknown():
    assert risk_parity_weights([0.5, math.nan]).tolist() == [0.5, 0.5]


def test_combine_sizes_takes_min_or_equal_weight_mean_of_finite_components():
    comps = {"a": 100.0, "b": 300.0, "c": math.inf}
    assert combine_sizes(comps, "min") == 100.0
    assert combine_sizes(comps, "weighted") == 200.0
    with pytest.raises(ValueError, match="position_sizing.method"):
        combine_sizes(comps, "max")


# ---------------------------------------------------------------- correlation


def test_rolling_correlation_of_btc_and_eth_hourly_returns_is_about_0_83():
    btc, eth = candles("BTCUSDT")["close"], candles("ETHUSDT")["close"]
    ra, rb = np.log(btc).diff(), np.log(eth).diff()
    full = ra.corr(rb)  # pandas, independent of the code under test
    assert full == pytest.approx(0.83, abs=0.01)
    n = len(btc) - 1
    assert return_correlation(btc.to_numpy(), eth.to_numpy(), n) == pytest.approx(full, abs=1e-9)
    ours = rolling_return_correlation(btc.to_numpy(), eth.to_numpy(), 720)
    theirs = ra.rolling(720).corr(rb).to_numpy()
    assert np.isnan(ours[:720]).all()
    assert np.allclose(ours[720:], theirs[720:], atol=1e-9)
    assert np.nanmean(ours) == pytest.approx(0.83, abs=0.02)


def test_correlation_factor_shrinks_size_for_correlated_open_positions():
    assert correlation_factor([]) == 1.0
    assert correlation_factor([0.83]) == pytest.approx(1 / 1.83)
    assert correlation_factor([-0.5, math.nan]) == 1.0  # hedges and unknowns do not shrink


def test_size_position_is_smaller_next_to_a_correlated_open_position():
    cfg = CFG.with_overrides(
        {"position_sizing.max_position_pct": 1.0, "symbols.BTCUSDT.max_qty": 100.0, "symbols.BTCUSDT.max_exposure": 1.0}
    )
    alone = size_position(inputs(), cfg.position_sizing, cfg.risk, cfg.symbols["BTCUSDT"])
    paired = size_position(
        inputs(correlations=(0.83,), other_volatilities=(0.7,)), cfg.position_sizing, cfg.risk, cfg.symbols["BTCUSDT"]
    )
    assert 0 < paired.notional < alone.notional
    assert paired.details["correlation_factor"] == pytest.approx(1 / 1.83)


# ------------------------------------------------------------ caps and filters


def test_size_position_caps_at_max_position_pct_of_equity_and_rounds_to_lot_step():
    size = size_position(inputs(win_probability=0.9), CFG.position_sizing, CFG.risk, CFG.symbols["BTCUSDT"])
    cap = CFG.position_sizing.max_position_pct * 10000.0
    step = CFG.symbols["BTCUSDT"].lot_step
    assert 0 < size.notional <= cap + 1e-9
    assert "max_position_pct" in size.details["capped_by"]
    assert size.qty / step == pytest.approx(round(size.qty / step), abs=1e-6)
    assert size.notional > cap - 30000.0 * step - 1e-9  # rounded down by less than one lot


def test_size_position_respects_the_portfolio_heat_left():
    heat = CFG.position_sizing.max_portfolio_heat * 10000.0
    size = size_position(inputs(other_risk=heat - 5.0), CFG.position_sizing, CFG.risk, CFG.symbols["BTCUSDT"])
    assert size.risk_amount <= 5.0 + 1e-9


def test_size_position_drops_below_min_notional_to_zero():
    size = size_position(inputs(equity=50.0), CFG.position_sizing, CFG.risk, CFG.symbols["BTCUSDT"])
    assert size.qty == 0.0 and size.notional == 0.0
    assert size.details["filter"] == "min_notional"


@pytest.mark.parametrize(
    "bad",
    [
        {"price": math.nan},
        {"price": -1.0},
        {"equity": -100.0},
        {"equity": math.inf},
        {"stop_loss": 30000.0},
        {"stop_loss": math.nan},
        {"volatility": math.nan},
        {"volatility": 0.0},
        {"win_probability": math.nan},
        {"correlations": (math.nan, 2.0)},
    ],
)
def test_size_position_is_finite_and_non_negative_for_unusable_inputs(bad: dict[str, object]):
    size = size_position(inputs(**bad), CFG.position_sizing, CFG.risk, CFG.symbols["BTCUSDT"])
    for v in (size.qty, size.notional, size.risk_amount):
        assert math.isfinite(v) and v >= 0


def test_size_position_weighted_method_is_at_least_the_min_method():
    cfg_w = CFG.with_overrides(
        {
            "position_sizing.method": "weighted",
            "position_sizing.max_position_pct": 1.0,
            "symbols.BTCUSDT.max_qty": 100.0,
            "symbols.BTCUSDT.max_exposure": 1.0,
        }
    )
    cfg_m = cfg_w.with_overrides({"position_sizing.method": "min"})
    w = size_position(inputs(), cfg_w.position_sizing, cfg_w.risk, cfg_w.symbols["BTCUSDT"])
    m = size_position(inputs(), cfg_m.position_sizing, cfg_m.risk, cfg_m.symbols["BTCUSDT"])
    assert w.notional >= m.notional > 0
    comps = [v for v in m.details["components"].values() if v is not None]
    assert m.notional <= min(comps) + 1e-6


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
def test_bar_volatility_equals_numpy_std_of_log_returns_bit_for_bit(symbol: str) -> None:
    # bar_volatility writes np.std out by hand (the per-bar path): every window length that the
    # pairwise sums treat differently, across the real file, must give the very same float
    close = candles(symbol)["close"].to_numpy(dtype=np.float64)
    for n in (3, 8, 9, 16, 17, 129, 130, 721):
        for start in range(0, close.size - n, (close.size - n) // 97):
            window = close[start:start + n]
            expected = float(np.std(np.diff(np.log(window)), ddof=1))
            assert bar_volatility(window).hex() == expected.hex()
    assert math.isnan(bar_volatility(close[:2])) and math.isnan(bar_volatility(np.array([1.0, -1.0, 2.0])))
