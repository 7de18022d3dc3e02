"""PaperExecutor on real candles: next-bar-open fills through the simulator, stops, idempotency, restarts."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pandas as pd
import pytest

from l1_operational.executor import PaperExecutor
from l1_operational.journal import Journal
from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.execution import Costs, exit_fill_price, fee, fill_price
from l2_tactical.messages import ExecutionStatus, ReasonCode, Side
from tests.l1_support import BTC_1H, ETH_1H, bar_at, bars, intent_after, utc

CFG = L2Config.default()
COSTS = Costs.from_config(CFG.execution)


def make_executor(tmp_path, start: str, cash: float = 10_000.0, name: str = "j.sqlite") -> PaperExecutor:
    journal = Journal(f"sqlite:///{tmp_path / name}")
    return PaperExecutor.from_config(CFG, journal=journal, clock=SimulatedClock(utc(start)),
                                     initial_balances={"USDT": cash})


def run_bars(ex: PaperExecutor, bar_list):
    reports = []
    for bar in bar_list:
        ex.clock.set(max(ex.clock.now(), bar.close_time))
        reports += ex.on_bar(bar)
    return reports


def test_executor_fills_at_next_bar_open_through_the_simulator(tmp_path):
    decided, nxt = bar_at(BTC_1H, "2020-03-12T08:00:00Z"), bar_at(BTC_1H, "2020-03-12T09:00:00Z")
    ex = make_executor(tmp_path, "2020-03-12T09:00:00Z")
    run_bars(ex, [decided])
    intent = intent_after(decided, qty=0.05)
    assert ex.submit(intent) is None                     # accepted, waits for its fill bar
    (report,) = run_bars(ex, [nxt])
    price = fill_price(1.0, nxt.open, nxt.high, nxt.low, COSTS)
    assert report.status is ExecutionStatus.FILLED and report.order_id == intent.order_id
    assert report.avg_price == pytest.approx(price) and nxt.low <= report.avg_price <= nxt.high
    assert report.avg_price > nxt.open and report.slippage_bps > 0   # a buy pays spread and slippage
    assert report.fees == pytest.approx(fee(0.05 * price, COSTS))
    assert ex.portfolio.balance("BTC") == pytest.approx(0.05)
    assert ex.portfolio.balance("USDT") == pytest.approx(10_000 - 0.05 * price - report.fees)


def test_executor_never_fills_on_the_bar_the_decision_saw(tmp_path):
    decided = bar_at(BTC_1H, "2020-03-12T08:00:00Z")
    ex = make_executor(tmp_path, "2020-03-12T09:00:00Z")
    run_bars(ex, [decided])
    ex.submit(intent_after(decided, qty=0.05))
    assert run_bars(ex, [decided]) == [] and len(ex.pending()) == 1


def test_executor_stop_loss_in_the_march_2020_crash(tmp_path):
    """Bought at 2020-03-12 03:00 open; the 6,800 stop is hit by the 10:00 crash bar (low 5,550)."""
    window = bars(BTC_1H, "2020-03-12T02:00:00Z", "2020-03-12T14:00:00Z")
    ex = make_executor(tmp_path, "2020-03-12T03:00:00Z")
    run_bars(ex, window[:1])
    intent = intent_after(window[0], qty=0.02)
    intent = replace(intent, stop_loss=6800.0)
    assert ex.submit(intent) is None
    reports = run_bars(ex, window[1:])
    fills = [r for r in reports if r.reason_code is ReasonCode.STOP_LOSS_HIT]
    df = pd.read_csv(BTC_1H, parse_dates=["timestamp"], index_col="timestamp").loc["2020-03-12T03:00":]
    first_hit = df.index[(df["low"] <= 6800.0)][0]
    (stop,) = fills
    assert stop.timestamp == first_hit.to_pydatetime() == utc("2020-03-12T10:00:00Z")
    hit_bar = bar_at(BTC_1H, "2020-03-12T10:00:00Z")
    assert stop.avg_price == pytest.approx(exit_fill_price(1.0, 6800.0, hit_bar.high, hit_bar.low, COSTS))
    assert stop.avg_price < 6800.0 and stop.side is Side.SELL and stop.executed_qty == pytest.approx(0.02)
    assert ex.portfolio.balance("BTC") == 0.0 and ex.portfolio.position("BTCUSDT") is None


def test_executor_take_profit_on_the_march_2020_rebound(tmp_path):
    """Bought at the 2020-03-13 03:00 open (4,848.70): take-profit 5,200 is touched on the 05:00 bar."""
    window = bars(BTC_1H, "2020-03-13T02:00:00Z", "2020-03-13T12:00:00Z")
    ex = make_executor(tmp_path, "2020-03-13T03:00:00Z")
    run_bars(ex, window[:1])
    intent = replace(intent_after(window[0], qty=0.05), stop_loss=3000.0, take_profit=5200.0)
    ex.submit(intent)
    reports = run_bars(ex, window[1:])
    df = pd.read_csv(BTC_1H, parse_dates=["timestamp"], index_col="timestamp").loc["2020-03-13T03:00":]
    expected = df.index[df["high"] >= 5200.0][0].to_pydatetime()
    (tp,) = [r for r in reports if r.reason_code is ReasonCode.TAKE_PROFIT_HIT]
    assert tp.timestamp == expected
    assert ex.portfolio.position("BTCUSDT") is None
    assert ex.portfolio.balance("USDT") > 10_000.0   # 4,848.70 -> ~5,200 on 0.05 BTC beats the fees


def test_executor_same_intent_twice_fills_once(tmp_path):
    decided, nxt = bar_at(ETH_1H, "2020-03-12T08:00:00Z"), bar_at(ETH_1H, "2020-03-12T09:00:00Z")
    ex = make_executor(tmp_path, "2020-03-12T09:00:00Z")
    run_bars(ex, [decided])
    intent = intent_after(decided, qty=0.5)
    assert ex.submit(intent) is None
    dup = ex.submit(intent)
    assert dup.status is ExecutionStatus.REJECTED and dup.reason_code is ReasonCode.DUPLICATE_ORDER
    fills = run_bars(ex, [nxt])
    assert [r.order_id for r in fills] == [intent.order_id]
    assert ex.submit(intent).reason_code is ReasonCode.DUPLICATE_ORDER       # after the fill, too
    assert len(ex.journal.fills()) == 1 and ex.portfolio.balance("ETH") == pytest.approx(0.5)


def test_executor_rejects_at_fill_time_when_the_intent_expired(tmp_path):
    decided = bar_at(BTC_1H, "2020-03-12T08:00:00Z")
    ex = make_executor(tmp_path, "2020-03-12T09:00:00Z")
    run_bars(ex, [decided])
    intent = intent_after(decided, qty=0.01, expires_at=decided.close_time + timedelta(minutes=30))
    assert ex.submit(intent) is None
    (report,) = run_bars(ex, bars(BTC_1H, "2020-03-12T10:00:00Z", "2020-03-12T11:00:00Z"))  # 09:00 bar missed
    assert report.reason_code is ReasonCode.EXPIRED and report.status is ExecutionStatus.REJECTED
    assert ex.journal.order_statuses()[intent.order_id] == ("rejected", "expired")


def test_executor_reserves_cash_for_accepted_orders(tmp_path):
    """BTC 30,270.76 and ETH 965.05 at the 2021-01-04 10:00 close; exposure caps lifted to isolate the balance."""
    cfg = CFG.with_overrides({"symbols.BTCUSDT.max_exposure": 1.0, "symbols.ETHUSDT.max_exposure": 1.0})
    btc, eth = bar_at(BTC_1H, "2021-01-04T10:00:00Z"), bar_at(ETH_1H, "2021-01-04T10:00:00Z")

    def fresh(name):
        ex = PaperExecutor.from_config(cfg, journal=Journal(f"sqlite:///{tmp_path / name}"),
                                       clock=SimulatedClock(btc.close_time), initial_balances={"USDT": 1_500.0})
        run_bars(ex, [btc, eth])
        return ex

    ex = fresh("a.sqlite")
    assert ex.submit(intent_after(btc, qty=0.03)) is None      # ~908 USDT reserved
    assert ex.submit(intent_after(eth, qty=0.5)) is None       # ~483 USDT reserved
    third = intent_after(eth, qty=0.2, tag="b")                # ~193 USDT > the ~108 left
    assert ex.submit(third).reason_code is ReasonCode.INSUFFICIENT_BALANCE
    assert fresh("b.sqlite").submit(third) is None             # alone it would have been fine


def test_executor_sell_closes_the_position_and_clears_its_stop(tmp_path):
    window = bars(ETH_1H, "2021-01-04T10:00:00Z", "2021-01-04T14:00:00Z")
    ex = make_executor(tmp_path, "2021-01-04T11:00:00Z")
    run_bars(ex, window[:1])
    ex.submit(intent_after(window[0], qty=0.3, stop_pct=0.2))
    run_bars(ex, window[1:2])
    assert ex.portfolio.position("ETHUSDT").stop_loss == pytest.approx(window[0].close * 0.8)
    ex.submit(intent_after(window[1], side=Side.SELL, qty=0.3))
    (sell,) = run_bars(ex, window[2:3])
    assert sell.side is Side.SELL and sell.avg_price < window[2].open     # a sell also pays costs
    assert ex.portfolio.position("ETHUSDT") is None and ex.portfolio.balance("ETH") == 0.0


def test_executor_restart_rebuilds_identical_portfolio_and_replays_nothing_twice(tmp_path):
    window = bars(BTC_1H, "2020-03-11T20:00:00Z", "2020-03-13T06:00:00Z")
    eth = bars(ETH_1H, "2020-03-11T20:00:00Z", "2020-03-13T06:00:00Z")
    ex = make_executor(tmp_path, "2020-03-11T21:00:00Z")
    for i, (b, e) in enumerate(zip(window, eth, strict=True)):
        run_bars(ex, [b, e])
        if i % 6 == 0:
            ex.submit(intent_after(b, qty=0.01, stop_pct=0.04))
            ex.submit(intent_after(e, qty=0.2, stop_pct=0.06))
    half = len(window) // 2
    before, n_fills = ex.portfolio.snapshot(), len(ex.journal.fills())
    assert n_fills >= 4 and any(f.kind == "stop_loss" for f in ex.journal.fills())
    again = PaperExecutor.from_config(CFG, journal=Journal(ex.journal.url), clock=SimulatedClock(ex.clock.now()),
                                      initial_balances={"USDT": 10_000.0})
    assert again.portfolio.snapshot() == before
    assert [p.intent.order_id for p in again.pending()] == [p.intent.order_id for p in ex.pending()]
    for b, e in zip(window[half:], eth[half:], strict=True):   # a restarted replay re-reads old bars
        again.on_bar(b)
        again.on_bar(e)
    assert len(again.journal.fills()) == n_fills and again.portfolio.snapshot() == before


def test_executor_rejects_undecodable_payloads_by_reason_or_refuses_them(tmp_path):
    decided = bar_at(BTC_1H, "2020-03-12T08:00:00Z")
    ex = make_executor(tmp_path, "2020-03-12T09:00:00Z")
    good = intent_after(decided, qty=0.01).to_dict()
    bad_stop = ex.submit_payload({**good, "stop_loss": decided.close * 1.02})
    assert bad_stop.status is ExecutionStatus.REJECTED and bad_stop.reason_code is ReasonCode.INCOHERENT_STOP
    assert bad_stop.order_id == good["order_id"]
    assert ex.submit_payload({**good, "qty": 0}).reason_code is ReasonCode.INVALID_QTY
    with pytest.raises(ValueError, match="undecodable"):
        ex.submit_payload(b"\x00 not an order")
    assert ex.submit_payload(good) is None        # the well-formed one is accepted
