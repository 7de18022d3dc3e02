"""The L2 pipeline: signal -> stop -> size -> risk -> OrderIntent, on real BTC/ETH candles."""

from __future__ import annotations

import ast
import dataclasses
import math
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib

from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.messages import ReasonCode, Side, SignalDirection, SignalSource, TacticalSignal, TradingState
from l2_tactical.order_pipeline import Bars, MarketState, OrderDecision, build_order
from l2_tactical.risk_controls import RiskState, apply_fill, new_risk_state

ROOT = Path(__file__).resolve().parent.parent
CFG = L2Config.default()
CALM = "2023-09-20 09:00"  # an ordinary hour
CRASH = "2020-03-13 02:00"  # BTC bar range 39.5 %
ZERO_VOLUME = "2019-06-07 21:00"  # open = high = low = close, volume 0 (BTC and ETH)


@cache
def candles(symbol: str) -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / f"{symbol}-1h.csv.gz", parse_dates=["timestamp"], index_col="timestamp")


def market(last_bar: str, n: int = 800, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")) -> MarketState:
    out = {}
    for sym in symbols:
        df = candles(sym)
        end = df.index.get_loc(pd.Timestamp(last_bar, tz="UTC")) + 1
        out[sym] = Bars.from_frame(df.iloc[end - n : end], "1h")
    return MarketState(bars=out)


def at_close(last_bar: str) -> SimulatedClock:
    return SimulatedClock((pd.Timestamp(last_bar, tz="UTC") + pd.Timedelta(hours=1)).to_pydatetime())


def sig(
    last_bar: str, direction: SignalDirection = SignalDirection.LONG, symbol: str = "BTCUSDT", **metadata: Any
) -> TacticalSignal:
    price = float(candles(symbol).loc[pd.Timestamp(last_bar, tz="UTC"), "close"])
    return TacticalSignal(
        symbol=symbol,
        direction=direction,
        strength=0.8,
        confidence=0.7,
        price=price,
        source=SignalSource.COMPOSITE,
        timestamp=at_close(last_bar).now(),
        metadata=metadata,
    )


def run(
    signal: TacticalSignal, state: RiskState | None = None, cfg: L2Config = CFG, last_bar: str = CALM, **kw: Any
) -> OrderDecision:
    clock = at_close(last_bar)
    state = state or new_risk_state(10000.0, clock.now())
    return build_order(signal, state, kw.pop("mkt", None) or market(last_bar), cfg, clock, **kw)


def holding(
    symbol: str, notional: float, state: RiskState | None = None, price: float = 100.0, stop: float = 99.0
) -> RiskState:
    now = at_close(CALM).now()
    state = state or new_risk_state(10000.0, now)
    return apply_fill(state, symbol, notional / price, price, now=now, stop_loss=stop)


# --------------------------------------------------------------- a good order


def test_long_signal_becomes_a_buy_with_an_atr_stop_and_take_profit_at_r():
    s = sig(CALM)
    d = run(s)
    assert d.reason is ReasonCode.OK and d.order is not None
    o = d.order
    w = candles("BTCUSDT").loc[: pd.Timestamp(CALM, tz="UTC")].iloc[-800:]
    atr = talib.ATR(w.high.to_numpy(), w.low.to_numpy(), w.close.to_numpy(), timeperiod=CFG.technical.atr_period)[-1]
    assert o.side is Side.BUY and o.price == s.price and not o.reduce_only
    assert o.stop_loss == pytest.approx(s.price - CFG.risk.atr_multiplier * atr)
    assert o.take_profit == pytest.approx(s.price + CFG.risk.take_profit_r * (s.price - o.stop_loss))
    assert o.signal_id == s.signal_id and o.confidence == s.confidence
    assert o.timestamp == at_close(CALM).now()
    step = CFG.symbols["BTCUSDT"].lot_step
    assert o.qty / step == pytest.approx(round(o.qty / step), abs=1e-6)
    assert o.qty * o.price <= CFG.position_sizing.max_position_pct * 10000.0 + 1e-9
    assert d.size is not None and d.size.qty >= o.qty


def test_build_order_is_deterministic_and_order_id_derives_from_the_signal():
    a, b = run(sig(CALM)), run(sig(CALM))
    assert a == b and a.order is not None and a.order.order_id.startswith("ord-")


def test_correlated_open_position_shrinks_the_new_order_by_the_rolling_correlation():
    cfg = CFG.with_overrides(
        {
            "risk.max_correlation": 0.95,
            "position_sizing.max_position_pct": 1.0,
            "symbols.BTCUSDT.max_qty": 100.0,
            "symbols.BTCUSDT.max_exposure": 1.0,
            "symbols.BTCUSDT.max_notional": 1e9,
            "position_sizing.max_position_size": 1e9,
            "position_sizing.max_portfolio_heat": 1.0,
            "risk.exposure_limit": 10.0,
        }
    )
    alone = run(sig(CALM), cfg=cfg)
    eth_price = float(candles("ETHUSDT").loc[pd.Timestamp(CALM, tz="UTC"), "close"])
    with_eth = run(sig(CALM), holding("ETHUSDT", 500.0, price=eth_price, stop=eth_price * 0.98), cfg=cfg)
    assert alone.size is not None and with_eth.size is not None
    window = cfg.position_sizing.correlation_window
    end = candles("BTCUSDT").index.get_loc(pd.Timestamp(CALM, tz="UTC")) + 1
    rets = [np.log(candles(s)["close"].iloc[end - window - 1 : end]).diff() for s in ("BTCUSDT", "ETHUSDT")]
    rho = rets[0].corr(rets[1])
    assert rho > 0.5
    assert with_eth.size.details["correlation_factor"] == pytest.approx(1 / (1 + rho), rel=1e-9)
    assert with_eth.size.notional < alone.size.notional


# ------------------------------------------------------------ spot and margin


def test_spot_short_with_a_long_open_becomes_a_reduce_only_sell_with_a_stop_above():
    price = sig(CALM).price
    state = holding("BTCUSDT", 0.02 * price, price=price, stop=price * 0.98)
    for direction in (SignalDirection.SHORT, SignalDirection.CLOSE_LONG):
        d = run(sig(CALM, direction), state)
        assert d.order is not None and d.reason is ReasonCode.OK
        assert d.order.side is Side.SELL and d.order.reduce_only
        assert d.order.qty == pytest.approx(0.02)
        assert d.order.stop_loss > d.order.price


@pytest.mark.parametrize(
    "direction",
    [SignalDirection.SHORT, SignalDirection.NEUTRAL, SignalDirection.CLOSE_LONG, SignalDirection.CLOSE_SHORT],
)
def test_spot_signal_with_nothing_to_close_yields_no_order(direction: SignalDirection):
    d = run(sig(CALM, direction))
    assert d.order is None and d.reason is ReasonCode.SIZE_ZERO


def test_margin_short_opens_a_sell_with_the_stop_above_and_take_profit_below():
    d = run(sig(CALM, SignalDirection.SHORT), allow_short=True)
    assert d.order is not None and d.order.side is Side.SELL and not d.order.reduce_only
    assert d.order.stop_loss > d.order.price > (d.order.take_profit or 0.0) > 0


@pytest.mark.parametrize("trading", [TradingState.HALTED, TradingState.REDUCING])
def test_closing_order_passes_when_trading_is_not_active(trading: TradingState):
    price = sig(CALM).price
    state = dataclasses.replace(
        holding("BTCUSDT", 0.01 * price, price=price, stop=price * 0.98), trading_state=trading, daily_loss_hit=True
    )
    d = run(sig(CALM, SignalDirection.CLOSE_LONG), state)
    assert d.order is not None and d.order.reduce_only and d.order.side is Side.SELL


# -------------------------------------------------------- one row per reason


def _levels_none() -> L2Config:
    return CFG.with_overrides({"risk.stop_method": "support_resistance"})


PIPELINE_TABLE: dict[ReasonCode, dict[str, Any]] = {
    ReasonCode.MISSING_STOP: {"cfg": _levels_none()},
    ReasonCode.INCOHERENT_STOP: {"meta": {"stop_loss": 1e9}},
    ReasonCode.EXPOSURE_LIMIT: {"state": lambda: holding("SOLUSDT", 3800.0, holding("BNBUSDT", 3800.0))},
    ReasonCode.MAX_CONCURRENT_POSITIONS: {"state": lambda: holding("A", 50.0, holding("B", 50.0, holding("C", 50.0)))},
    ReasonCode.MAX_DAILY_TRADES: {
        "state": lambda: dataclasses.replace(holding("A", 1.0), trades_today=CFG.risk.max_daily_trades)
    },
    ReasonCode.CORRELATION_LIMIT: {"state": lambda: holding("ETHUSDT", 500.0, price=1600.0, stop=1500.0)},
    ReasonCode.DAILY_LOSS_LIMIT: {"state": lambda: dataclasses.replace(holding("A", 1.0), daily_loss_hit=True)},
    ReasonCode.DRAWDOWN_KILL_SWITCH: {
        "state": lambda: dataclasses.replace(holding("A", 1.0), trading_state=TradingState.HALTED)
    },
    ReasonCode.NOT_ACTIVE: {
        "state": lambda: dataclasses.replace(holding("A", 1.0), trading_state=TradingState.REDUCING)
    },
    ReasonCode.VOLATILITY_PAUSE: {"last_bar": CRASH},
    ReasonCode.SIZE_ZERO: {"state": lambda: new_risk_state(60.0, at_close(CALM).now())},
    ReasonCode.EXPIRED: {"expired": True},
    ReasonCode.UNKNOWN_SYMBOL: {"symbol": "DOGEUSDT"},
}


@pytest.mark.parametrize("code", list(PIPELINE_TABLE), ids=lambda c: c.value)
def test_build_order_reports_the_reason_code(code: ReasonCode):
    row = PIPELINE_TABLE[code]
    last_bar = row.get("last_bar", CALM)
    s = sig(last_bar, **row.get("meta", {}))
    if row.get("expired"):
        s = dataclasses.replace(s, expires_at=s.timestamp, signal_id="")
    if "symbol" in row:
        s = dataclasses.replace(s, symbol=row["symbol"], signal_id="")
    state = row["state"]() if "state" in row else None
    d = run(s, state, cfg=row.get("cfg", CFG), last_bar=last_bar)
    if code is ReasonCode.EXPOSURE_LIMIT:  # shrunk, still sent
        assert d.order is not None and d.reason is code
        assert 7600.0 + d.order.qty * d.order.price <= CFG.risk.exposure_limit * 10000.0 + 1e-9
    else:
        assert d.order is None and d.reason is code
    if code in (ReasonCode.DAILY_LOSS_LIMIT, ReasonCode.DRAWDOWN_KILL_SWITCH, ReasonCode.VOLATILITY_PAUSE):
        assert d.alerts and d.alerts[0].code is code


def test_max_position_is_enforced_by_the_sizer_before_risk_sees_it():
    """MAX_POSITION itself is the risk layer's shrink (table-tested in test_risk_controls); in the
    pipeline the sizer already caps the target, so the order never exceeds the position limit."""
    cfg = CFG.with_overrides({"position_sizing.max_position_pct": 0.02})
    d = run(sig(CALM), cfg=cfg)
    assert d.order is not None and d.order.qty * d.order.price <= 0.02 * 10000.0 + 1e-9
    assert d.size is not None and "max_position_pct" in d.size.details["capped_by"]


# ----------------------------------------------------------- real-data edges


def test_zero_volume_flat_bar_gives_finite_orders():
    d = run(sig(ZERO_VOLUME), last_bar=ZERO_VOLUME)
    assert d.size is not None and math.isfinite(d.size.qty) and d.size.qty >= 0
    if d.order is not None:
        assert d.order.stop_loss < d.order.price


def test_too_little_history_for_an_atr_means_missing_stop_not_a_guess():
    d = run(sig(CALM), mkt=market(CALM, n=5))
    assert d.order is None and d.reason is ReasonCode.MISSING_STOP


def test_no_code_in_l2_tactical_constructs_an_order_intent_outside_the_pipeline():
    offenders = []
    for path in (ROOT / "l2_tactical").rglob("*.py"):
        if path.name in ("order_pipeline.py", "messages.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "OrderIntent":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_build_order_takes_its_time_from_the_clock_only():
    clock = at_close(CALM)
    later = SimulatedClock(clock.now() + timedelta(minutes=7))
    s = sig(CALM)
    d = build_order(s, new_risk_state(10000.0, later.now()), market(CALM), CFG, later)
    assert d.order is not None and d.order.timestamp == datetime(2023, 9, 20, 10, 7, tzinfo=timezone.utc)


def test_measures_are_taken_once_per_bars_object_and_equal_a_fresh_measure() -> None:
    from l2_tactical.order_pipeline import measure, measure_atr

    bars = market(CALM, symbols=("BTCUSDT",)).bars["BTCUSDT"]
    first = measure(bars, 14)
    assert measure(bars, 14) is first and measure_atr(bars, 14) == (first.atr, first.prev_atr)
    fresh = Bars.from_frame(candles("BTCUSDT").loc[:CALM].iloc[-800:], "1h")
    assert measure(fresh, 14) == first  # the memo never changes a value
    df = candles("BTCUSDT").loc[:CALM].iloc[-800:]
    expected = talib.ATR(df["high"].to_numpy(), df["low"].to_numpy(), df["close"].to_numpy(), timeperiod=14)
    assert (first.atr, first.prev_atr) == (float(expected[-1]), float(expected[-2]))
    assert math.isnan(measure_atr(Bars.from_frame(df.iloc[-10:], "1h"), 14)[0])  # too short for the ATR
