"""The :class:`Message` base (JSON round trip), deterministic ids and the field checks of ``__post_init__``.

:mod:`l2_tactical.messages` defines the messages on top of this and re-exports every public
name here. The codec was tuned for the bus benchmark: field decoders are resolved once per
class, plain values are encoded as themselves, and a message's JSON is computed once per object.

A field typed ``tuple[SomeMessage, ...]`` (a nested message without a schema of its own, e.g.
:class:`l2_tactical.message_account.AccountPosition`) travels as a list of objects.

>>> stable_id("sig", "BTCUSDT", 1) == stable_id("sig", "BTCUSDT", 1)
True
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import functools
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar

SCHEMA_VERSION = 1

M = TypeVar("M", bound="Message")


class MessageError(ValueError):
    """A message field is invalid, or a payload does not decode to a message."""


# ------------------------------------------------------------------------ ids and time


def utc_now() -> datetime:
    """Only for defaults at the edges; core code takes time from a Clock."""
    return datetime.now(timezone.utc)


def stable_id(prefix: str, *parts: object) -> str:
    """Deterministic id from parts.

    >>> stable_id("sig", "BTCUSDT", 1) == stable_id("sig", "BTCUSDT", 1)
    True
    """
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return f"{prefix}-{digest[:20]}"


def order_id_for(signal_id: str) -> str:
    """The order id that a signal id yields; the same signal never makes two orders."""
    return stable_id("ord", signal_id)


# ------------------------------------------------------------------------ field checks


def fail(cls_name: str, name: str, value: object, why: str) -> typing.NoReturn:
    """Raise the MessageError naming ``cls_name.name=value`` and why it is refused."""
    raise MessageError(f"{cls_name}.{name}={value!r}: {why}")


def check_unit(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            fail(type(obj).__name__, name, v, "must be a number in [0, 1]")


def check_finite(obj: object, *names: str, positive: bool = False, nonneg: bool = False) -> None:
    for name in names:
        v = getattr(obj, name)
        if v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            fail(type(obj).__name__, name, v, "must be a finite number")
        if positive and v <= 0:
            fail(type(obj).__name__, name, v, "must be > 0")
        if nonneg and v < 0:
            fail(type(obj).__name__, name, v, "must be >= 0")


def check_count(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            fail(type(obj).__name__, name, v, "must be an integer >= 0")


def check_time(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if v is None:
            continue
        if not isinstance(v, datetime) or v.tzinfo is None:
            fail(type(obj).__name__, name, v, "must be a timezone-aware datetime")


def check_text(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, str) or not v:
            fail(type(obj).__name__, name, v, "must be a non-empty string")


def freeze_mapping(obj: object, name: str) -> None:
    """Freeze the mapping field ``name`` as a read-only copy of what its JSON round trip gives."""
    v = getattr(obj, name)
    if not isinstance(v, Mapping):
        fail(type(obj).__name__, name, v, "must be a mapping")
    try:
        frozen = json_copy(dict(v))
    except (TypeError, ValueError) as exc:
        fail(type(obj).__name__, name, v, f"must be JSON-serialisable ({exc})")
    object.__setattr__(obj, name, types.MappingProxyType(frozen))


class _NotPlain(Exception):
    """A value the plain copy does not reproduce exactly: the JSON round trip handles it."""


_PLAIN_DEPTH = 32       # deeper (or circular) values take the JSON path
_PLAIN_INT = 1 << 63    # larger ints take the JSON path (its digit limit, its errors)


def json_copy(value: dict[str, Any]) -> Any:
    """``json.loads(json.dumps(value, allow_nan=False))``, the same values, types, key order and errors.

    Plain values (dicts of exact ``str`` keys, lists, tuples, exact str / bool / int / finite float,
    None) are copied directly: a tuple becomes a list, each container a new one, like the round trip.
    Anything else (non-finite floats, subclasses, non-str keys, strings the round trip would change:
    lone or split surrogates) goes through the round trip itself, which gives its result or error.

    >>> json_copy({"a": (1, 2.5, None), "b": {"c": [True, "x"]}})
    {'a': [1, 2.5, None], 'b': {'c': [True, 'x']}}
    """
    try:
        return _plain_dict(value, 0)
    except _NotPlain:
        return json.loads(json.dumps(value, allow_nan=False))


def _plain_str(s: Any) -> str:
    if type(s) is not str:
        raise _NotPlain
    if not s.isascii():
        try:
            s.encode("utf-8")  # refuses surrogates, which the round trip may join into one character
        except UnicodeEncodeError:
            raise _NotPlain from None
    return s


def _plain(v: Any, depth: int) -> Any:
    t = type(v)
    if t is float:
        if _isfinite(v):
            return v
        raise _NotPlain
    if t is str:
        return _plain_str(v)
    if v is None or t is bool:
        return v
    if t is int:
        if -_PLAIN_INT < v < _PLAIN_INT:
            return v
        raise _NotPlain
    if t is dict:
        return _plain_dict(v, depth + 1)
    if (t is list or t is tuple) and depth < _PLAIN_DEPTH:
        return [_plain(x, depth + 1) for x in v]
    raise _NotPlain


def _plain_dict(d: dict[str, Any], depth: int) -> dict[str, Any]:
    if depth >= _PLAIN_DEPTH:
        raise _NotPlain
    out = {}
    for k, v in d.items():
        if type(k) is not str or not k.isascii():
            k = _plain_str(k)
        t = type(v)
        # the common leaves inline: finite floats, ASCII strings, None, bools
        if (t is float and _isfinite(v)) or (t is str and v.isascii()) or v is None or t is bool:
            out[k] = v
        else:
            out[k] = _plain(v, depth)
    return out


_isfinite = math.isfinite


# ------------------------------------------------------------------------------ codec


_PLAIN = frozenset({str, int, float, bool, type(None)})  # encoded as themselves (exact types: not subclasses)


def _encode(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, Message):
        return value.to_dict()
    return value


Decoder = typing.Callable[[Any, str], Any]


def _identity(value: Any, where: str) -> Any:
    return value


def _to_float(value: Any, where: str) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _to_datetime(value: Any, where: str) -> Any:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise MessageError(f"{where}={value!r}: not an ISO-8601 timestamp") from None


def _to_tuple(value: Any, where: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise MessageError(f"{where}={value!r}: must be a list")
    return tuple(value)


def _to_messages(tp: type[Message]) -> Decoder:
    def decode(value: Any, where: str) -> Any:
        items = _to_tuple(value, where)
        out = []
        for i, item in enumerate(items):
            try:
                out.append(tp.from_dict(item))
            except MessageError as exc:
                raise MessageError(f"{where}[{i}]: {exc}") from None
        return tuple(out)

    return decode


def _to_enum(tp: type[enum.Enum]) -> Decoder:
    def decode(value: Any, where: str) -> Any:
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise MessageError(f"{where}={value!r}: not one of {allowed}") from None

    return decode


def _decoder_for(tp: Any) -> Decoder:
    """The decoder of one field type, built once per message class."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = _decoder_for(next(a for a in typing.get_args(tp) if a is not type(None)))
        return lambda value, where: None if value is None else inner(value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _to_enum(tp)
    if tp is datetime:
        return _to_datetime
    if origin is tuple:
        item = next(iter(typing.get_args(tp)), None)
        if isinstance(item, type) and issubclass(item, Message):
            return _to_messages(item)
        return _to_tuple
    if tp is float:
        return _to_float
    return _identity


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_JSON = json.JSONEncoder(sort_keys=True, allow_nan=False)  # what json.dumps(sort_keys=True, allow_nan=False) builds
_JSON_MEMO: collections.OrderedDict[int, tuple[Message, str]] = collections.OrderedDict()
"""id(message) -> (message, its JSON): messages are immutable, so a message encoded twice (journal, then
bus envelope) is encoded once. Holding the message keeps its id from being reused while it is here."""
_JSON_MEMO_SIZE = 4096


def _remember_json(message: Message, text: str) -> None:
    memo = _JSON_MEMO
    if len(memo) >= _JSON_MEMO_SIZE:
        with contextlib.suppress(KeyError):  # KeyError: another thread emptied it
            memo.popitem(last=False)  # the oldest
    memo[id(message)] = (message, text)


@functools.cache
def _decoders(cls: type) -> dict[str, tuple[Decoder, str]]:
    """Per field: its decoder and the name used in error messages (resolving types is slow: cached)."""
    return {name: (_decoder_for(tp), f"{cls.__name__}.{name}") for name, tp in typing.get_type_hints(cls).items()
            if name != "SCHEMA"}


class Message:
    """Mixin giving frozen dataclass messages their JSON round trip."""

    __slots__ = ()
    SCHEMA: ClassVar[int] = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = {}
        plain = _PLAIN
        for name in _field_names(typing.cast(type, type(self))):
            value = getattr(self, name)
            out[name] = value if type(value) in plain else _encode(value)
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no NaN); computed once per message object (see ``_JSON_MEMO``)."""
        hit = _JSON_MEMO.get(id(self))
        if hit is not None and hit[0] is self:
            return hit[1]
        text = _JSON.encode(self.to_dict())
        _remember_json(self, text)
        return text

    @classmethod
    def from_dict(cls: type[M], data: Mapping[str, Any]) -> M:
        if not isinstance(data, Mapping):
            raise MessageError(f"{cls.__name__}: payload must be an object, got {type(data).__name__}")
        decoders = _decoders(typing.cast(type, cls))
        if not data.keys() <= decoders.keys():
            raise MessageError(f"{cls.__name__}: unknown key(s) {sorted(set(data) - set(decoders))}")
        schema = data.get("schema", cls.SCHEMA)
        if schema != cls.SCHEMA:
            raise MessageError(f"{cls.__name__}.schema={schema!r}: unsupported version (this build reads {cls.SCHEMA})")
        kwargs = {}
        for key, value in data.items():
            decode, where = decoders[key]
            kwargs[key] = decode(value, where)
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise MessageError(f"{cls.__name__}: {exc}") from None

    @classmethod
    def from_json(cls: type[M], text: str | bytes) -> M:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageError(f"{cls.__name__}: payload is not JSON ({exc})") from None
        return cls.from_dict(data)
