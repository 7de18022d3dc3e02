"""message_codec.json_copy: the same result (or error) as the JSON round trip it replaces on plain values."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2_tactical.message_codec import MessageError, json_copy
from l2_tactical.messages import PositionSize

# every code point, surrogates included (a split pair is joined by the round trip, a lone one kept)
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=6)
plain_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()                                                # nan and infinities included
    | any_text
    | st.text(max_size=6)
)
odd_leaves = (
    st.sampled_from([2**63 - 1, 2**63, -(2**63)])                # around the plain path's int bound
    | st.integers(4300, 4301).map(lambda n: 10**n)               # past JSON's digit limit
    | st.sampled_from([object(), b"x", {1, 2}])                  # not JSON
)
keys = st.text(max_size=4) | any_text | st.integers(-3, 3) | st.booleans() | st.none() | st.floats(-2, 2)


def nested(leaves, keys):
    return st.recursive(
        leaves,
        lambda kids: (st.lists(kids, max_size=3) | st.lists(kids, max_size=3).map(tuple)
                      | st.dictionaries(keys, kids, max_size=3)),
        max_leaves=10,
    )


def strict(x):
    """``x`` with every type and float bit pattern spelled out (``==`` says 1 == 1.0 == True, 0.0 == -0.0)."""
    if isinstance(x, dict):
        return ("dict", [(strict(k), strict(v)) for k, v in x.items()])
    if isinstance(x, list):
        return ("list", [strict(v) for v in x])
    if isinstance(x, float):
        return ("float", x.hex())
    return (type(x).__name__, x)


def outcome(f, value):
    try:
        return "ok", strict(f(value))
    except Exception as exc:  # the error's type and text must match too
        return type(exc).__name__, str(exc)


def round_trip(value):
    return json.loads(json.dumps(value, allow_nan=False))


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=4), nested(plain_leaves, st.text(max_size=4)), max_size=5))
def test_json_copy_equals_the_json_round_trip(value):
    assert outcome(json_copy, value) == outcome(round_trip, value)


@settings(max_examples=300)
@given(st.dictionaries(keys, nested(plain_leaves | odd_leaves, keys), max_size=5))
def test_json_copy_equals_the_json_round_trip_with_any_keys_and_values(value):
    assert outcome(json_copy, value) == outcome(round_trip, value)


def test_json_copy_makes_new_containers_and_lists_of_tuples():
    shared = [1.5, "a"]
    value = {"x": shared, "y": shared, "t": (1, (2, 3)), "d": {"k": shared}}
    out = json_copy(value)
    assert out == round_trip(value) == {"x": [1.5, "a"], "y": [1.5, "a"], "t": [1, [2, 3]], "d": {"k": [1.5, "a"]}}
    assert out["x"] is not shared and out["y"] is not shared and out["x"] is not out["y"]
    assert out["d"] is not value["d"]


def test_json_copy_joins_a_split_surrogate_pair_like_json():
    value = {"s": "\ud83d\ude00", "\ud83d\ude00": 1}
    assert json_copy(value) == {"s": "\U0001F600", "\U0001F600": 1}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_details_are_refused_with_the_json_error(bad):
    with pytest.raises(MessageError, match=r"PositionSize\.details=.*Out of range float values are not JSON"):
        PositionSize(symbol="BTCUSDT", qty=1.0, notional=1.0, risk_amount=0.1, method="m",
                     details={"components": {"kelly": bad}})


def test_circular_details_are_refused_with_the_json_error():
    loop: list = []
    loop.append(loop)
    with pytest.raises(MessageError, match="Circular reference detected"):
        PositionSize(symbol="BTCUSDT", qty=1.0, notional=1.0, risk_amount=0.1, method="m", details={"x": loop})
