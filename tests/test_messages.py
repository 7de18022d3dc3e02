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
    AccountPosition,
    AccountSnapshot,
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
        snapshot(),
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


def test_direction_sign_is_plus_one_long_minus_one_short_else_zero():
    expected = {"long": 1, "short": -1, "neutral": 0, "close_long": 0, "close_short": 0}
    assert {d.value: d.sign for d in SignalDirection} == expected
    assert signal(direction=SignalDirection.SHORT, strength=0.25).exposure == -0.25
    assert signal(direction=SignalDirection.CLOSE_LONG, strength=0.25).exposure == 0.0


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


# ------------------------------------------------------------------ AccountSnapshot (L1 -> L2)


def held(**kw):
    base = dict(symbol="BTCUSDT", qty=0.01, avg_price=104_000.0, stop_loss=102_000.0, take_profit=None,
                opened_at=T0, mark=104_500.0)
    base.update(kw)
    return AccountPosition(**base)


def snapshot(**kw):
    base = dict(sender="l1", timestamp=T0, quote_asset="USDT", cash=8_959.6, positions=(held(),), reports=5,
                recent_report_ids=("rep-1", "rep-2", "rep-3"), sequence=7)
    base.update(kw)
    return AccountSnapshot(**base)


@given(
    st.lists(st.tuples(symbols, st.floats(1e-8, 1e3), prices, st.none() | prices, st.none() | times),
             max_size=3, unique_by=lambda t: t[0]),
    st.floats(-1e-6, 1e9),
    st.integers(0, 10**6),
    times,
)
def test_account_snapshot_round_trips_through_json(rows, cash, reports, ts):
    positions = tuple(AccountPosition(symbol=sym, qty=qty, avg_price=price, stop_loss=stop, opened_at=opened)
                      for sym, qty, price, stop, opened in rows)
    ids = tuple(f"rep-{i}" for i in range(min(reports, 3)))
    s = AccountSnapshot(sender="l1", timestamp=ts, quote_asset="USDT", cash=cash, positions=positions,
                        reports=reports, recent_report_ids=ids)
    back = AccountSnapshot.from_json(s.to_json())
    assert back == s and back.snapshot_id == s.snapshot_id
    assert all(type(p) is AccountPosition for p in back.positions)


def test_account_snapshot_names_its_last_report_and_positions():
    s = snapshot()
    assert s.last_report_id == "rep-3" and snapshot(reports=0, recent_report_ids=()).last_report_id == ""
    assert s.position("BTCUSDT") == held() and s.position("ETHUSDT") is None
    assert s.equity() == pytest.approx(8_959.6 + 0.01 * 104_500.0)
    assert json.loads(s.to_json())["positions"][0]["stop_loss"] == 102_000.0
    assert snapshot(sequence=8).snapshot_id != s.snapshot_id


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("sender", "", "AccountSnapshot.sender=''"),
        ("cash", float("nan"), "AccountSnapshot.cash=nan"),
        ("reports", -1, "AccountSnapshot.reports=-1"),
        ("sequence", 1.5, "AccountSnapshot.sequence=1.5"),
        ("reports", 2, "AccountSnapshot.recent_report_ids=.*more reports than reports=2"),
        ("recent_report_ids", (), "AccountSnapshot.recent_report_ids=\\(\\): must name the last of reports=5"),
        ("recent_report_ids", ("rep-1", "rep-1"), "recent_report_ids=.*names a report twice"),
        ("recent_report_ids", ["rep-1"], "recent_report_ids=.*must be a tuple"),
        ("positions", (held(), held(qty=0.02)), "AccountSnapshot.positions=.*holds a symbol twice"),
        ("positions", ({"symbol": "BTCUSDT"},), "AccountSnapshot.positions=.*tuple of AccountPosition"),
        ("timestamp", datetime(2024, 1, 1), "AccountSnapshot.timestamp=.*timezone-aware"),
    ],
)
def test_account_snapshot_validation_names_field_and_value(field, value, match):
    with pytest.raises(MessageError, match=match):
        snapshot(**{field: value})


@pytest.mark.parametrize(
    "field,value",
    [("qty", 0.0), ("avg_price", -1.0), ("stop_loss", 0.0), ("mark", float("inf")), ("symbol", "")],
)
def test_account_position_validation_names_field_and_value(field, value):
    with pytest.raises(MessageError, match=f"AccountPosition.{field}="):
        held(**{field: value})


def test_account_snapshot_decoding_names_the_bad_nested_position():
    data = json.loads(snapshot().to_json())
    data["positions"][0]["qty"] = 0
    with pytest.raises(MessageError, match=r"AccountSnapshot.positions\[0\]: AccountPosition.qty=0"):
        AccountSnapshot.from_dict(data)
    data["positions"] = [{"symbol": "BTCUSDT", "qty": 1.0, "avg_price": 1.0, "colour": "red"}]
    with pytest.raises(MessageError, match=r"positions\[0\]: AccountPosition: unknown key.*colour"):
        AccountSnapshot.from_dict(data)
    data["positions"] = {"BTCUSDT": 1.0}
    with pytest.raises(MessageError, match="AccountSnapshot.positions=.*must be a list"):
        AccountSnapshot.from_dict(data)


def test_message_types_holds_the_account_snapshot():
    assert MESSAGE_TYPES["AccountSnapshot"] is AccountSnapshot
    assert "AccountPosition" not in MESSAGE_TYPES  # it only travels inside a snapshot
