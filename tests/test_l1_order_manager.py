"""L1 order manager: every reason code, on intents priced from real BTC/ETH candles."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pytest

from l1_operational.order_manager import AccountView, check_order, intent_from_payload
from l2_tactical.config import L2Config
from l2_tactical.messages import ReasonCode, Side
from tests.l1_support import BTC_1H, ETH_1H, bar_at, intent_after

CFG = L2Config.default()
BTC_BAR = bar_at(BTC_1H, "2020-03-12T09:00:00Z")   # close 7354.21
ETH_BAR = bar_at(ETH_1H, "2020-03-12T09:00:00Z")
NOW = BTC_BAR.close_time


def account(quote: float = 10_000.0, btc: float = 0.0, eth: float = 0.0) -> AccountView:
    equity = quote + btc * BTC_BAR.close + eth * ETH_BAR.close
    return AccountView(quote_available=quote, base_available={"BTCUSDT": btc, "ETHUSDT": eth},
                       base_held={"BTCUSDT": btc, "ETHUSDT": eth}, equity=equity, fee_rate=CFG.execution.fee_bps * 1e-4)


def check(intent, acct=None, *, limits=None, seen=()):
    return check_order(intent, limits=limits or CFG.symbols, account=acct or account(), now=NOW, seen=set(seen))


def test_order_manager_accepts_a_valid_buy_and_rounds_to_the_lot_step():
    decision = check(intent_after(BTC_BAR, qty=0.0123456))
    assert decision.accepted and decision.reason is ReasonCode.OK
    assert decision.qty == pytest.approx(0.01234)   # BTCUSDT lot_step 0.00001, rounded down


def test_order_manager_rejects_duplicate_order_id():
    intent = intent_after(BTC_BAR)
    assert check(intent, seen={intent.order_id}).reason is ReasonCode.DUPLICATE_ORDER


def test_order_manager_rejects_expired_intent():
    intent = intent_after(BTC_BAR, expires_at=NOW - timedelta(seconds=1))
    assert check(intent).reason is ReasonCode.EXPIRED
    assert check(intent_after(BTC_BAR, expires_at=NOW + timedelta(minutes=5))).accepted


def test_order_manager_rejects_unknown_symbol():
    sol = dataclasses.replace(intent_after(BTC_BAR), symbol="SOLUSDT")
    decision = check(sol)
    assert decision.reason is ReasonCode.UNKNOWN_SYMBOL and "SOLUSDT" in decision.detail


def test_order_manager_rejects_qty_that_rounds_to_zero_as_invalid_qty():
    assert check(intent_after(BTC_BAR, qty=0.000004)).reason is ReasonCode.INVALID_QTY


@pytest.mark.parametrize(("bar", "qty", "limit"), [(BTC_BAR, 0.06, 0.05), (ETH_BAR, 1.5, 1.0)])
def test_order_manager_caps_quantity_per_symbol(bar, qty, limit):
    assert CFG.symbols[bar.symbol].max_qty == limit
    assert check(intent_after(bar, qty=qty)).reason is ReasonCode.MAX_SYMBOL_QTY
    assert check(intent_after(bar, qty=limit)).reason is not ReasonCode.MAX_SYMBOL_QTY


def test_order_manager_rejects_below_min_notional():
    intent = intent_after(BTC_BAR, qty=0.001)   # 7.35 USDT < min_notional 10
    assert intent.qty * intent.price < CFG.symbols["BTCUSDT"].min_notional
    assert check(intent).reason is ReasonCode.MIN_NOTIONAL


def test_order_manager_rejects_above_max_notional():
    limits = CFG.with_overrides({"symbols.BTCUSDT.max_notional": 100.0}).symbols
    assert check(intent_after(BTC_BAR, qty=0.02), limits=limits).reason is ReasonCode.MAX_NOTIONAL


def test_order_manager_rejects_buy_without_enough_quote():
    assert check(intent_after(BTC_BAR, qty=0.04), account(quote=100.0)).reason is ReasonCode.INSUFFICIENT_BALANCE


def test_order_manager_rejects_sell_of_more_base_than_held():
    sell = intent_after(BTC_BAR, side=Side.SELL, qty=0.02)
    assert check(sell, account(btc=0.01)).reason is ReasonCode.INSUFFICIENT_BALANCE
    assert check(sell, account(btc=0.02)).accepted


def test_order_manager_lets_a_closing_sell_below_min_notional_through():
    sell = intent_after(BTC_BAR, side=Side.SELL, qty=0.001)
    assert check(sell, account(btc=0.001)).accepted          # closes the whole position
    assert check(sell, account(btc=0.01)).reason is ReasonCode.MIN_NOTIONAL


@pytest.mark.parametrize(("bar", "cap"), [(BTC_BAR, 0.20), (ETH_BAR, 0.15)])
def test_order_manager_caps_exposure_per_asset(bar, cap):
    assert CFG.symbols[bar.symbol].max_exposure == cap
    equity = 1_000.0
    fits = round(cap * equity / bar.close * 0.99, 4)
    too_much = round(cap * equity / bar.close * 1.05, 4)
    assert check(intent_after(bar, qty=fits), account(quote=equity)).accepted
    assert check(intent_after(bar, qty=too_much), account(quote=equity)).reason is ReasonCode.ASSET_EXPOSURE


def test_order_manager_maps_undecodable_payloads_to_reason_codes():
    good = intent_after(BTC_BAR).to_dict()
    assert intent_from_payload(json.dumps(good))[1] is ReasonCode.OK
    assert intent_from_payload({**good, "qty": -1.0})[1] is ReasonCode.INVALID_QTY
    assert intent_from_payload({**good, "stop_loss": BTC_BAR.close * 1.1})[1] is ReasonCode.INCOHERENT_STOP
    assert intent_from_payload({k: v for k, v in good.items() if k != "stop_loss"})[1] is ReasonCode.MISSING_STOP
    assert intent_from_payload({**good, "side": "hold"})[1] is ReasonCode.MALFORMED_MESSAGE
    assert intent_from_payload(b"{not json")[1] is ReasonCode.MALFORMED_MESSAGE
