"""TacticalAccount marking: a held position marked in one step equals holding it (bar counted, position
replaced), then mark_to_market()."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles
from l2_tactical.loop_stats import LoopStats
from l2_tactical.messages import TradingState
from l2_tactical.position_monitor import monitor_position
from l2_tactical.risk_controls import apply_fill, replace_position
from l2_tactical.stops import Bar
from l2_tactical.tactical_account import TacticalAccount

DATA = Path(__file__).resolve().parent.parent / "data"
CFG = L2Config.default()


def opened(frame, qty: float) -> TacticalAccount:
    first = frame.index[0].to_pydatetime()
    price = float(frame.close.iloc[0])
    account = TacticalAccount(100_000.0, first, default_stop_pct=CFG.risk.default_stop_pct, stats=LoopStats())
    account.state = apply_fill(account.state, "BTCUSDT", qty, price, now=first, stop_loss=price * 0.5)
    account.cash -= qty * price
    account.bars_held["BTCUSDT"] = 0
    return account


def hold(account: TacticalAccount, symbol: str, moved) -> None:
    """The two-step reference: one more bar held, the position replaced by its moved self (no marking)."""
    account.bars_held[symbol] = account.bars_held.get(symbol, 0) + 1
    account.state = replace_position(account.state, symbol, moved)


def test_marking_a_moved_position_equals_hold_then_mark_on_the_march_2020_crash():
    # a large long through the crash: drawdown alerts (REDUCING, then the kill switch), UTC day rollovers
    frame = load_candles(DATA / "BTCUSDT-1h.csv.gz").frame.loc["2020-03-08":"2020-03-16"]
    stepwise, at_once = opened(frame, 12.0), opened(frame, 12.0)
    seen_alerts = 0
    for when, row in frame.iloc[1:].iterrows():
        now = when.to_pydatetime() + timedelta(hours=1)
        pos = stepwise.state.positions["BTCUSDT"]
        moved, _ = monitor_position(pos, Bar(open=row.open, high=row.high, low=row.low, close=row.close),
                                    CFG.risk)  # held on through its stop: the marking is what is compared
        trailed = dataclasses.replace(pos, stop_loss=pos.stop_loss + 1.0)  # a new stop, the same equity
        for same in (pos, trailed, moved):  # equity unchanged on the same day for the first two
            hold(stepwise, "BTCUSDT", same)
            expected = stepwise.mark_to_market(now, CFG.risk)
            assert at_once.mark_to_market(now, CFG.risk, moved=same) == expected
            assert at_once.state == stepwise.state and at_once.bars_held == stepwise.bars_held
            seen_alerts += len(expected)
    assert seen_alerts >= 2 and at_once.state.trading_state is TradingState.HALTED
    assert at_once.bars_held["BTCUSDT"] > 100
