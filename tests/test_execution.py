"""The one execution simulator: invariants on the real bundled candles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles
from l2_tactical.execution import (
    SCALAR,
    BatchTrader,
    Costs,
    bar_prices,
    check_filters,
    exit_fill,
    market_fill,
    round_to_step,
    stop_exit,
    trade_to_target,
)
from l2_tactical.messages import ReasonCode

COSTS = Costs.from_config(L2Config.default().execution)


@pytest.fixture(scope="module")
def btc(data_dir):
    return load_candles(data_dir / "BTCUSDT-1h.csv.gz")


def _ohlc(candles, start, n):
    f = candles.frame.iloc[start : start + n]
    return (f["open"].to_numpy(), f["high"].to_numpy(), f["low"].to_numpy(), f["close"].to_numpy())


def _random_play(o, h, low, c, costs, rng, lot_step=0.0, min_notional=0.0):
    """Decide on bar t's close, fill on bar t+1's open; record every invariant's inputs."""
    cash, qty = 10_000.0, 0.0
    rows = []
    for t in range(len(o) - 1):
        target = float(rng.choice([0.0, 0.25, 0.5, 1.0]))
        eq_open = cash + qty * o[t + 1]
        cash, qty, price, paid, traded = trade_to_target(
            cash, qty, target, o[t + 1], h[t + 1], low[t + 1], costs, lot_step=lot_step, min_notional=min_notional
        )
        rows.append((eq_open, cash + qty * o[t + 1], cash, qty, price, paid, traded, t + 1))
    return rows


def test_random_play_on_real_candles_keeps_every_invariant(btc):
    o, h, low, c = _ohlc(btc, 20_000, 3_000)
    rows = _random_play(o, h, low, c, COSTS, np.random.default_rng(7), lot_step=1e-5, min_notional=10.0)
    traded_rows = [r for r in rows if r[6] != 0]
    assert len(traded_rows) > 500  # the play really traded
    for eq_open, eq_after, cash, qty, price, paid, traded, i in rows:
        assert paid >= 0.0
        assert cash >= -1e-9 and qty >= -1e-12  # spot: no borrowing, no shorts
        if traded:
            assert low[i] <= price <= h[i], "fill outside its bar's range"
            assert abs(traded) * price >= 10.0 or abs(qty) < 1e-12
            assert abs(round(abs(traded) / 1e-5) * 1e-5 - abs(traded)) < 1e-9 or abs(qty) < 1e-12
        # equity = cash + position value, and trading never adds value: fees and spread only reduce it
        assert eq_after <= eq_open + 1e-9
        assert math.isclose(eq_after, cash + qty * o[i], rel_tol=1e-12)


def test_zero_costs_reproduce_the_price_path_return_exactly(btc):
    o, h, low, c = _ohlc(btc, 40_000, 2_000)
    cash, qty, *_ = trade_to_target(10_000.0, 0.0, 1.0, o[1], h[1], low[1], Costs.zero())
    assert cash == pytest.approx(0.0, abs=1e-9)
    final = cash + qty * c[-1]
    assert final / 10_000.0 == pytest.approx(c[-1] / o[1], rel=1e-12)


def test_costs_make_a_round_trip_lose_exactly_fees_and_spread(btc):
    o, h, low, _ = _ohlc(btc, 30_000, 3)
    cash, qty, p_buy, f1, _ = trade_to_target(10_000.0, 0.0, 1.0, o[1], h[1], low[1], COSTS)
    cash2, qty2, p_sell, f2, _ = trade_to_target(cash, qty, 0.0, o[2], h[2], low[2], COSTS)
    assert qty2 == 0.0 and f1 > 0 and f2 > 0
    assert cash2 == pytest.approx(10_000.0 + qty * (p_sell - p_buy) - f1 - f2, rel=1e-12)
    assert p_buy >= o[1] and p_sell <= o[2]


def test_scalar_and_batched_formulas_agree(btc):
    o, h, low, _ = _ohlc(btc, 10_000, 200)
    rng = np.random.default_rng(3)
    targets = rng.uniform(0, 1, size=o.size)
    cash, qty = np.full(o.size, 5_000.0), rng.uniform(0, 0.5, size=o.size)
    batched = trade_to_target(cash, qty, targets, o, h, low, COSTS, lot_step=1e-5, min_notional=10.0, ops=np)
    for i in range(o.size):
        single = trade_to_target(
            cash[i], qty[i], targets[i], o[i], h[i], low[i], COSTS, lot_step=1e-5, min_notional=10.0, ops=SCALAR
        )
        for a, b in zip(single, batched, strict=True):
            assert a == pytest.approx(float(b[i]), rel=1e-12, abs=1e-12)


def _bits(values):
    """The exact bits of each float (float.hex): -0.0 and 0.0 differ, as they do in an array's bytes."""
    return tuple(float(v).hex() for v in values)


@pytest.mark.parametrize(
    "lot_step,min_notional,allow_short",
    [(1e-5, 10.0, False), (0.0, 0.0, False), (1e-3, 10.0, True), (0.0, 0.0, True), (1e-5, 0.0, True)],
)
def test_batch_trader_equals_the_scalar_formulas_bit_for_bit(btc, lot_step, min_notional, allow_short):
    """BatchTrader (the VecEnv's in-place fast path) is trade_to_target: the same bits (signed zeros
    included), not merely close numbers. So are trade_to_target's own three forms: inline floats
    (ops=SCALAR), the generic formula on floats (any other scalar ops object) and on arrays (ops=np).

    Accounts replay 400 real bars with random targets; every tenth starts near a closing trade
    (qty + delta ~ 0), some have too little cash, and state feeds back from the previous bar."""
    o, h, low, _ = _ohlc(btc, 50_000, 400)
    n, rng = 64, np.random.default_rng(11)
    trader = BatchTrader(n, COSTS, lot_step=lot_step, min_notional=min_notional, allow_short=allow_short)
    table = bar_prices(o, h, low, COSTS)
    cash, qty = rng.uniform(0.0, 20_000.0, n), rng.uniform(0.0, 0.3, n)
    cash[::10], qty[::7] = 0.0, 0.0
    kinds = {"buy": 0, "sell": 0, "closing": 0, "held back": 0}
    for t in range(o.size):
        target = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0], n) if t % 2 else rng.uniform(-1.2, 1.2, n)
        rows = table[:, np.full(n, t)]
        new_cash, new_qty = np.empty(n), np.empty(n)
        trader.trade(cash, qty, trader.clip_target(target), rows, new_cash, new_qty)
        kw = {"lot_step": lot_step, "min_notional": min_notional, "allow_short": allow_short}
        arrays = trade_to_target(cash, qty, target, np.full(n, o[t]), np.full(n, h[t]), np.full(n, low[t]), COSTS,
                                 ops=np, **kw)
        for i in range(n):
            expected = trade_to_target(cash[i], qty[i], target[i], o[t], h[t], low[t], COSTS, **kw)
            generic = trade_to_target(cash[i], qty[i], target[i], o[t], h[t], low[t], COSTS, ops=type(SCALAR)(), **kw)
            got = (new_cash[i], new_qty[i], trader.price[i], trader.fee[i], trader.traded[i])
            assert _bits(got) == _bits(expected), f"bar {t}, account {i}: {got} != {expected}"
            assert _bits(generic) == _bits(expected), f"bar {t}, account {i}"
            assert _bits(a[i] for a in arrays) == _bits(expected), f"bar {t}, account {i}"
            kinds["buy" if expected[4] > 0 else "sell" if expected[4] < 0 else "held back"] += 1
            kinds["closing"] += expected[1] == 0.0 and qty[i] != 0.0
        cash, qty = new_cash, new_qty
    assert min(kinds.values()) > 50, kinds  # every branch was exercised


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("allow_short", [False, True])
def test_clip_target_into_a_buffer_clips_as_trade_to_target_does(dtype, allow_short):
    """The VecEnv's per-step clip (into its buffer, bounds as arrays) gives the bits of the general path
    (numpy.maximum / minimum with scalar bounds, as trade_to_target's ops=np) and the scalar clip's values
    (numpy's maximum turns -0.0 into 0.0 at the spot bound, the scalar clip keeps -0.0: equal, not the same
    bits)."""
    targets = np.array([-1.5, -1.0, -0.5, -0.0, 0.0, 0.3, 1.0, 1.7], dtype=dtype)
    trader = BatchTrader(targets.size, COSTS, allow_short=allow_short)
    out = np.full(targets.size, np.nan)
    assert trader.clip_target(targets, out=out) is out
    assert _bits(out) == _bits(trader.clip_target(targets))
    lo = -1.0 if allow_short else 0.0
    assert out.tolist() == [SCALAR.clip(float(x), lo, 1.0) for x in targets]


def test_batch_trader_updates_accounts_in_place_and_refuses_bad_parameters(btc):
    o, h, low, _ = _ohlc(btc, 12_000, 3)
    trader = BatchTrader(2, COSTS, lot_step=1e-5, min_notional=10.0)
    cash, qty = np.array([10_000.0, 10_000.0]), np.array([0.0, 0.0])
    expected = trade_to_target(10_000.0, 0.0, 1.0, o[1], h[1], low[1], COSTS, lot_step=1e-5, min_notional=10.0)
    trader.trade(cash, qty, np.array([1.0, 0.0]), bar_prices(o, h, low, COSTS)[:, [1, 1]], cash, qty)
    assert (cash[0], qty[0]) == expected[:2] and (cash[1], qty[1]) == (10_000.0, 0.0)
    with pytest.raises(ValueError, match="n=0"):
        BatchTrader(0, COSTS)
    with pytest.raises(ValueError, match="lot_step=-1"):
        BatchTrader(4, COSTS, lot_step=-1.0)


def test_zero_volume_flat_bar_fills_at_its_only_price(btc):
    bar = btc.frame.loc["2019-06-07T21:00:00Z"]
    assert bar["volume"] == 0 and bar["high"] == bar["low"]
    fill = market_fill(0.1, bar["open"], bar["high"], bar["low"], COSTS)
    assert fill.price == bar["open"] and fill.fee > 0


def test_march_2020_crash_triggers_a_long_stop_inside_the_bar(btc):
    bar = btc.frame.loc["2020-03-12T10:00:00Z"]
    prev_close = btc.frame["close"].shift(1).loc["2020-03-12T10:00:00Z"]
    stop = prev_close * 0.95
    assert bar["low"] < stop  # the crash hour went through a 5 % stop
    level, reason = stop_exit(1, stop, None, bar["open"], bar["high"], bar["low"])
    assert reason is ReasonCode.STOP_LOSS_HIT
    fill = exit_fill(0.5, level, bar["high"], bar["low"], COSTS)
    assert bar["low"] <= fill.price <= level and fill.qty == -0.5 and fill.slippage_bps >= 0


def test_bar_touching_stop_and_take_profit_assumes_the_stop_first():
    assert stop_exit(1, 95.0, 105.0, 100.0, 106.0, 94.0) == (95.0, ReasonCode.STOP_LOSS_HIT)
    assert stop_exit(-1, 105.0, 95.0, 100.0, 106.0, 94.0) == (105.0, ReasonCode.STOP_LOSS_HIT)
    assert stop_exit(-1, 105.0, 95.0, 100.0, 101.0, 94.0) == (95.0, ReasonCode.TAKE_PROFIT_HIT)
    assert stop_exit(1, 95.0, 105.0, 100.0, 101.0, 99.0) is None


@pytest.mark.parametrize(
    "qty,price,expected",
    [
        (0.0, 100.0, ReasonCode.INVALID_QTY),
        (float("nan"), 100.0, ReasonCode.INVALID_QTY),
        (0.05, 100.0, ReasonCode.MIN_NOTIONAL),
        (1.0, 100.0, ReasonCode.OK),
        (1000.0, 100.0, ReasonCode.MAX_NOTIONAL),
    ],
)
def test_exchange_filters(qty, price, expected):
    assert check_filters(qty, price, min_qty=1e-5, min_notional=10.0, max_notional=50_000.0) is expected


def test_lot_step_rounds_magnitude_down():
    assert round_to_step(0.123456, 0.001) == pytest.approx(0.123)
    assert round_to_step(-0.123456, 0.001) == pytest.approx(-0.123)
    assert round_to_step(0.3, 0.1) == pytest.approx(0.3)  # float noise does not lose a step


def test_costs_refuse_negative_or_nan_values():
    with pytest.raises(ValueError, match="fee_bps"):
        Costs(fee_bps=-1, half_spread_bps=0, slippage_bps=0, volatility_slippage=0)
    with pytest.raises(ValueError, match="slippage_bps"):
        Costs(fee_bps=1, half_spread_bps=0, slippage_bps=float("nan"), volatility_slippage=0)
