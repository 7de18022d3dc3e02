"""Messages: frozen, validated, schema-versioned, JSON round trip, deterministic ids."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l2_tactical.messages import (
    MESSAGE_TYPES,
    AlertSeverity,
    ExecutionReport,
    ExecutionStatus,
    MessageError,
    OrderIntent,
    ReasonCode,
    Regime,
    RiskAlert,
    Side,
    SignalDirection,
    SignalSource,
    StrategicDecision,
    TacticalSignal,
    order_id_for,
)

T0 = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
times = st.datetimes(min_value=datetime(2018, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(timezone.utc))
unit = st.floats(0, 1, allow_nan=False)
prices = st.floats(1e-6, 1e7, allow_nan=False, allow_infinity=False)
symbols = st.sampled_from(["BTCUSDT", "ETHUSDT", "SOLUSDT"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=6,
)


def signal(**kw):
    base = dict(
        symbol="BTCUSDT",
        direction=SignalDirection.LONG,
        strength=0.7,
        confidence=0.6,
        price=50_000.0,
        timestamp=T0,
        source=SignalSource.TECHNICAL,
        metadata={"rsi": 27.3},
    )
    base.update(kw)
    return TacticalSignal(**base)


@given(
    symbols,
    st.sampled_from(list(SignalDirection)),
    unit,
    unit,
    prices,
    times,
    st.sampled_from(list(SignalSource)),
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)
def test_tactical_signal_round_trips_through_json(sym, direction, strength, conf, price, ts, source, meta):
    s = TacticalSignal(
        symbol=sym,
        direction=direction,
        strength=strength,
        confidence=conf,
        price=price,
        timestamp=ts,
        source=source,
        metadata=meta,
        expires_at=ts + timedelta(minutes=15),
    )
    assert TacticalSignal.from_json(s.to_json()) == s


@given(symbols, st.sampled_from(list(Side)), st.floats(1e-6, 100), prices, st.floats(0.001, 0.5), times, unit)
def test_order_intent_round_trips_and_keeps_a_coherent_stop(sym, side, qty, price, gap, ts, conf):
    stop = price * (1 - gap) if side is Side.BUY else price * (1 + gap)
    o = OrderIntent(
        signal_id="sig-1",
        symbol=sym,
        side=side,
        qty=qty,
        price=price,
        stop_loss=stop,
        timestamp=ts,
        confidence=conf,
        reasoning="test",
    )
    back = OrderIntent.from_json(o.to_json())
    assert back == o and back.order_id == order_id_for("sig-1")


@given(st.sampled_from(list(Regime)), unit, unit, unit, st.lists(symbols, min_size=1, max_size=3), times)
def test_strategic_decision_round_trips(regime, strength, exposure, appetite, universe, ts):
    d = StrategicDecision(
        regime=regime,
        strength=strength,
        target_exposure=exposure,
        risk_appetite=appetite,
        universe=tuple(universe),
        timestamp=ts,
    )
    assert StrategicDecision.from_json(d.to_json()) == d


def test_every_message_type_round_trips_its_example():
    examples = [
        signal(),
        StrategicDecision(
            regime=Regime.TRENDING,
            strength=0.8,
            target_exposure=0.7,
            risk_appetite=0.5,
            universe=("BTCUSDT",),
            timestamp=T0,
        ),
        OrderIntent(
            signal_id="s",
            symbol="BTCUSDT",
            side=Side.BUY,
            qty=0.01,
            price=100.0,
            stop_loss=98.0,
            take_profit=104.0,
            timestamp=T0,
        ),
        ExecutionReport(
            order_id="o",
            symbol="BTCUSDT",
            side=Side.BUY,
            status=ExecutionStatus.REJECTED,
            requested_qty=1.0,
            executed_qty=0.0,
            avg_price=0.0,
            timestamp=T0,
            reason_code=ReasonCode.MIN_NOTIONAL,
        ),
        RiskAlert(
            severity=AlertSeverity.CRITICAL,
            code=ReasonCode.DAILY_LOSS_LIMIT,
            message="hit",
            timestamp=T0,
            value=0.06,
            limit=0.05,
        ),
    ]
    for msg in examples:
        cls = MESSAGE_TYPES[type(msg).__name__]
        assert cls.from_json(msg.to_json()) == msg


def test_messages_are_frozen():
    s = signal()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.strength = 0.1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.metadata["rsi"] = 1  # type: ignore[index]


def test_from_dict_rejects_unknown_keys_with_their_names():
    data = signal().to_dict() | {"colour": "red"}
    with pytest.raises(MessageError, match="unknown key.*colour"):
        TacticalSignal.from_dict(data)


def test_from_dict_rejects_unknown_schema_versions():
    data = signal().to_dict() | {"schema": 99}
    with pytest.raises(MessageError, match="schema=99"):
        TacticalSignal.from_dict(data)


def test_from_json_rejects_garbage_and_bad_enum_values():
    with pytest.raises(MessageError, match="not JSON"):
        TacticalSignal.from_json("{nope")
    bad = signal().to_dict() | {"direction": "sideways"}
    with pytest.raises(MessageError, match="direction='sideways'"):
        TacticalSignal.from_dict(bad)


@pytest.mark.parametrize(
    "field,value", [("strength", 1.5), ("confidence", -0.1), ("price", 0.0), ("price", float("nan")), ("symbol", "")]
)
def test_tactical_signal_validation_names_field_and_value(field, value):
    with pytest.raises(MessageError, match=f"TacticalSignal.{field}="):
        signal(**{field: value})


def test_naive_timestamps_are_refused():
    with pytest.raises(MessageError, match="timezone-aware"):
        signal(timestamp=datetime(2024, 1, 1))


@pytest.mark.parametrize("side,stop", [(Side.BUY, 101.0), (Side.BUY, 100.0), (Side.SELL, 99.0)])
def test_order_intent_refuses_an_incoherent_stop(side, stop):
    with pytest.raises(MessageError, match="stop_loss"):
        OrderIntent(signal_id="s", symbol="BTCUSDT", side=side, qty=1.0, price=100.0, stop_loss=stop, timestamp=T0)


def test_order_id_derives_from_signal_id_and_cannot_be_forged():
    o = OrderIntent(
        signal_id="abc", symbol="BTCUSDT", side=Side.BUY, qty=1.0, price=100.0, stop_loss=99.0, timestamp=T0
    )
    assert o.order_id == order_id_for("abc") != order_id_for("abd")
    with pytest.raises(MessageError, match="order_id"):
        OrderIntent(
            signal_id="abc",
            symbol="BTCUSDT",
            side=Side.BUY,
            qty=1.0,
            price=100.0,
            stop_loss=99.0,
            timestamp=T0,
            order_id="ord-forged",
        )


def test_signal_ids_are_deterministic():
    assert signal().signal_id == signal().signal_id
    assert signal().signal_id != signal(timestamp=T0 + timedelta(hours=1)).signal_id


def test_metadata_must_be_json_serialisable():
    with pytest.raises(MessageError, match="metadata"):
        signal(metadata={"x": object()})


def test_rejection_needs_a_reason_and_fill_cannot_exceed_request():
    with pytest.raises(MessageError, match="reason"):
        ExecutionReport(
            order_id="o",
            symbol="BTCUSDT",
            side=Side.BUY,
            status=ExecutionStatus.REJECTED,
            requested_qty=1.0,
            executed_qty=0.0,
            avg_price=0.0,
            timestamp=T0,
        )
    with pytest.raises(MessageError, match="executed_qty"):
        ExecutionReport(
            order_id="o",
            symbol="BTCUSDT",
            side=Side.BUY,
            status=ExecutionStatus.FILLED,
            requested_qty=1.0,
            executed_qty=2.0,
            avg_price=10.0,
            timestamp=T0,
        )


def test_json_is_plain_and_sorted():
    text = signal().to_json()
    assert json.loads(text)["direction"] == "long" and json.loads(text)["schema"] == 1
