"""Buy-and-hold and SMA-cross baselines on real candles, through the one execution simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2_tactical.backtest.baselines import buy_and_hold, sma_cross, sma_cross_targets
from l2_tactical.execution import Costs

DATA = Path(__file__).resolve().parents[1] / "data"
COSTS = Costs(fee_bps=10.0, half_spread_bps=1.0, slippage_bps=2.0, volatility_slippage=0.05)


@pytest.fixture(scope="module", params=["BTCUSDT-1h", "ETHUSDT-1h"])
def candles(request: pytest.FixtureRequest) -> pd.DataFrame:
    return pd.read_csv(DATA / f"{request.param}.csv.gz", parse_dates=["timestamp"], index_col="timestamp")


def _ohlc(df: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return tuple(df[k].to_numpy() for k in ("open", "high", "low", "close"))


def test_zero_cost_buy_and_hold_returns_exactly_the_price_move_from_the_first_fill(candles: pd.DataFrame) -> None:
    o, h, lo, c = _ohlc(candles)
    run = buy_and_hold(o, h, lo, c, Costs.zero(), initial_cash=10_000.0)
    assert run.equity[-1] / run.equity[0] == pytest.approx(c[-1] / o[1], rel=1e-12)
    assert run.equity[0] == 10_000.0  # nothing fills on the first bar
    assert [f.bar for f in run.fills] == [1]


def test_buy_and_hold_with_costs_pays_spread_slippage_and_fee_on_entry(candles: pd.DataFrame) -> None:
    o, h, lo, c = _ohlc(candles)
    run = buy_and_hold(o, h, lo, c, COSTS, initial_cash=10_000.0)
    # the documented cost model, written out: impact = spread + slippage + 5 % of the bar's range
    impact = (1.0 + 2.0) * 1e-4 + 0.05 * (h[1] - lo[1]) / o[1]
    price = min(o[1] * (1.0 + impact), h[1])
    qty = 10_000.0 / (price * 1.001)
    assert run.fills[0].price == pytest.approx(price, rel=1e-12)
    assert run.equity[-1] == pytest.approx(qty * c[-1] + (10_000.0 - qty * price * 1.001), rel=1e-9)
    assert run.equity[-1] < buy_and_hold(o, h, lo, c, Costs.zero()).equity[-1]


def test_sma_cross_targets_match_a_pandas_rolling_mean(candles: pd.DataFrame) -> None:
    close = candles["close"]
    fast, slow = close.rolling(24).mean(), close.rolling(168).mean()
    expected = ((fast > slow) & slow.notna()).astype(float).to_numpy()
    np.testing.assert_array_equal(sma_cross_targets(close.to_numpy(), 24, 168), expected)


def test_sma_cross_fills_at_the_open_after_the_decision_with_costs_against_the_trader(candles: pd.DataFrame) -> None:
    o, h, lo, c = _ohlc(candles.iloc[:15_000])
    run = sma_cross(o, h, lo, c, COSTS, fast=24, slow=168)
    targets = sma_cross_targets(c, 24, 168)
    assert len(run.fills) > 20
    for f in run.fills:
        assert targets[f.bar - 1] != targets[f.bar - 2]  # the signal changed at the previous close
        assert lo[f.bar] <= f.price <= h[f.bar]
        assert (f.price >= o[f.bar]) if f.qty > 0 else (f.price <= o[f.bar])
        assert f.fee == pytest.approx(abs(f.qty) * f.price * 1e-3)


def test_zero_cost_sma_cross_compounds_open_to_open_moves_while_long(candles: pd.DataFrame) -> None:
    o, h, lo, c = _ohlc(candles.iloc[:20_000])
    run = sma_cross(o, h, lo, c, Costs.zero(), fast=12, slow=48)
    held = pd.Series(sma_cross_targets(c, 12, 48)).shift(1).fillna(0.0).to_numpy()  # position during bar t
    entries = np.flatnonzero(np.diff(np.concatenate(([0.0], held))) > 0)
    exits = np.flatnonzero(np.diff(np.concatenate(([0.0], held))) < 0)
    growth = np.prod(o[exits] / o[entries[: exits.size]])
    if entries.size > exits.size:
        growth *= c[-1] / o[entries[-1]]
    assert run.equity[-1] / run.equity[0] == pytest.approx(growth, rel=1e-10)


def test_sma_cross_never_looks_ahead(candles: pd.DataFrame) -> None:
    o, h, lo, c = _ohlc(candles.iloc[:6000])
    full = sma_cross(o, h, lo, c, COSTS, fast=24, slow=168, stop_loss=0.03)
    cut = 4000
    shocked = [a.copy() for a in (o, h, lo, c)]
    for a in shocked:
        a[cut:] *= 0.5  # the future changes completely
    altered = sma_cross(*shocked, COSTS, fast=24, slow=168, stop_loss=0.03)
    np.testing.assert_array_equal(full.equity[:cut], altered.equity[:cut])


def test_stop_loss_exits_only_on_bars_that_reach_it_and_waits_for_a_fresh_cross(candles: pd.DataFrame) -> None:
    o, h, lo, c = _ohlc(candles.iloc[:20_000])
    run = sma_cross(o, h, lo, c, COSTS, fast=24, slow=168, stop_loss=0.02)
    targets = sma_cross_targets(c, 24, 168)
    stopped = [f for f in run.fills if f.reason == "stop_loss_hit"]
    assert stopped, "a 2 % stop on BTC/ETH 1h must trigger at least once"
    for f in stopped:
        level = run.stops[f.bar]
        assert lo[f.bar] <= level and f.price <= max(level, o[f.bar])
        nxt = [g for g in run.fills if g.bar > f.bar]
        if nxt:  # re-entry needs the target to drop to 0 and come back
            assert np.any(targets[f.bar : nxt[0].bar - 1] == 0)
    assert run.equity[-1] != sma_cross(o, h, lo, c, COSTS, fast=24, slow=168).equity[-1]


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="fast=48, slow=24"):
        sma_cross_targets(np.ones(10), 48, 24)
    with pytest.raises(ValueError, match="high"):
        buy_and_hold(np.ones(5), np.ones(4), np.ones(5), np.ones(5), COSTS)
    with pytest.raises(ValueError, match="initial_cash=-1"):
        buy_and_hold(np.ones(5), np.ones(5), np.ones(5), np.ones(5), COSTS, initial_cash=-1)
