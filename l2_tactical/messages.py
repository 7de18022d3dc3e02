"""Typed, immutable messages at every boundary (DESIGN.md rule 4).

Every message is a frozen, slotted, keyword-only dataclass with a ``schema``
version, validation in ``__post_init__`` that names the bad field and value,
and a JSON round trip (``to_dict``/``from_dict``, ``to_json``/``from_json``)
that rejects unknown keys and unknown schema versions.

Ids are deterministic so every consumer can drop duplicates: a signal's id is
derived from its symbol, source, direction and timestamp, and an order's id is
derived from the signal that caused it (:func:`order_id_for`).

>>> from datetime import datetime, timezone
>>> s = TacticalSignal(symbol="BTCUSDT", direction=SignalDirection.LONG, strength=0.7,
...                    confidence=0.6, price=50000.0, source=SignalSource.TECHNICAL,
...                    timestamp=datetime(2024, 1, 1, tzinfo=timezone.utc))
>>> TacticalSignal.from_json(s.to_json()) == s
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


# --------------------------------------------------------------------------- enums


class SignalDirection(enum.Enum):
    LONG = "long"
    SHORT = "short"
    NEUTRAL = "neutral"
    CLOSE_LONG = "close_long"
    CLOSE_SHORT = "close_short"

    @property
    def sign(self) -> int:
        """+1 for exposure-increasing long, -1 for short, 0 otherwise."""
        return {SignalDirection.LONG: 1, SignalDirection.SHORT: -1}.get(self, 0)


class SignalSource(enum.Enum):
    AI_MODEL = "ai_model"
    TECHNICAL = "technical"
    PATTERN = "pattern"
    COMPOSITE = "composite"


class Regime(enum.Enum):
    TRENDING = "trending"
    RANGING = "ranging"
    VOLATILE = "volatile"


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class ExecutionStatus(enum.Enum):
    FILLED = "filled"
    PARTIALLY_FILLED = "partially_filled"
    REJECTED = "rejected"


class AlertSeverity(enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class TradingState(enum.Enum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


class ReasonCode(enum.Enum):
    """Why an order was shrunk, denied, rejected or closed. Shared by L2 and L1."""

    OK = "ok"
    # L2 risk controls
    MISSING_STOP = "missing_stop"
    INCOHERENT_STOP = "incoherent_stop"
    MAX_POSITION = "max_position"
    EXPOSURE_LIMIT = "exposure_limit"
    MAX_CONCURRENT_POSITIONS = "max_concurrent_positions"
    MAX_DAILY_TRADES = "max_daily_trades"
    CORRELATION_LIMIT = "correlation_limit"
    DAILY_LOSS_LIMIT = "daily_loss_limit"
    DRAWDOWN_KILL_SWITCH = "drawdown_kill_switch"
    NOT_ACTIVE = "trading_not_active"
    VOLATILITY_PAUSE = "volatility_pause"
    SIZE_ZERO = "size_zero"
    # L1 order manager / executor
    UNKNOWN_SYMBOL = "unknown_symbol"
    INVALID_QTY = "invalid_qty"
    MIN_NOTIONAL = "min_notional"
    MAX_NOTIONAL = "max_notional"
    MAX_SYMBOL_QTY = "max_symbol_qty"
    ASSET_EXPOSURE = "asset_exposure"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    DUPLICATE_ORDER = "duplicate_order"
    EXPIRED = "expired"
    STOP_LOSS_HIT = "stop_loss_hit"
    EXCHANGE_REJECTED = "exchange_rejected"
    STOP_REFUSED = "stop_refused"  # the exchange refused the protective stop: position closed at market
    TAKE_PROFIT_HIT = "take_profit_hit"
    # bus / liveness
    STALE_HEARTBEAT = "stale_heartbeat"
    BUS_UNAVAILABLE = "bus_unavailable"
    MALFORMED_MESSAGE = "malformed_message"


# ------------------------------------------------------------------------ helpers


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


def _fail(cls_name: str, name: str, value: object, why: str) -> typing.NoReturn:
    raise MessageError(f"{cls_name}.{name}={value!r}: {why}")


def _check_unit(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            _fail(type(obj).__name__, name, v, "must be a number in [0, 1]")


def _check_finite(obj: object, *names: str, positive: bool = False, nonneg: bool = False) -> None:
    for name in names:
        v = getattr(obj, name)
        if v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            _fail(type(obj).__name__, name, v, "must be a finite number")
        if positive and v <= 0:
            _fail(type(obj).__name__, name, v, "must be > 0")
        if nonneg and v < 0:
            _fail(type(obj).__name__, name, v, "must be >= 0")


def _check_time(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if v is None:
            continue
        if not isinstance(v, datetime) or v.tzinfo is None:
            _fail(type(obj).__name__, name, v, "must be a timezone-aware datetime")


def _check_text(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, str) or not v:
            _fail(type(obj).__name__, name, v, "must be a non-empty string")


def _freeze_mapping(obj: object, name: str) -> None:
    v = getattr(obj, name)
    if not isinstance(v, Mapping):
        _fail(type(obj).__name__, name, v, "must be a mapping")
    try:
        frozen = json.loads(json.dumps(dict(v), allow_nan=False))
    except (TypeError, ValueError) as exc:
        _fail(type(obj).__name__, name, v, f"must be JSON-serialisable ({exc})")
    object.__setattr__(obj, name, types.MappingProxyType(frozen))


# ------------------------------------------------------------------------ codec


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




# ---------------------------------------------------------------------- messages


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TacticalSignal(Message):
    """Direction and conviction from one source (never a size: DESIGN.md rule 3)."""

    symbol: str
    direction: SignalDirection
    strength: float
    confidence: float
    price: float
    timestamp: datetime
    source: SignalSource
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    expires_at: datetime | None = None
    signal_id: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_text(self, "symbol")
        if not isinstance(self.direction, SignalDirection):
            _fail("TacticalSignal", "direction", self.direction, "must be a SignalDirection")
        if not isinstance(self.source, SignalSource):
            _fail("TacticalSignal", "source", self.source, "must be a SignalSource")
        _check_unit(self, "strength", "confidence")
        _check_finite(self, "price", positive=True)
        _check_time(self, "timestamp", "expires_at")
        if self.expires_at is not None and self.expires_at < self.timestamp:
            _fail("TacticalSignal", "expires_at", self.expires_at, "is before timestamp")
        _freeze_mapping(self, "metadata")
        if not self.signal_id:
            sid = stable_id("sig", self.symbol, self.source.value, self.direction.value, self.timestamp.isoformat())
            object.__setattr__(self, "signal_id", sid)

    @property
    def exposure(self) -> float:
        """Signed target exposure in [-1, 1] implied by direction and strength."""
        return self.direction.sign * self.strength

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StrategicDecision(Message):
    """L3 -> L2: regime and exposure budget."""

    regime: Regime
    strength: float
    target_exposure: float
    risk_appetite: float
    universe: tuple[str, ...]
    timestamp: datetime
    preferred_timeframe: str = "1h"
    expires_at: datetime | None = None
    decision_id: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.regime, Regime):
            _fail("StrategicDecision", "regime", self.regime, "must be trending, ranging or volatile")
        _check_unit(self, "strength", "target_exposure", "risk_appetite")
        if not isinstance(self.universe, tuple) or not all(isinstance(s, str) and s for s in self.universe):
            _fail("StrategicDecision", "universe", self.universe, "must be a tuple of symbols")
        _check_time(self, "timestamp", "expires_at")
        _check_text(self, "preferred_timeframe")
        if not self.decision_id:
            object.__setattr__(self, "decision_id", stable_id("dec", self.regime.value, self.timestamp.isoformat()))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OrderIntent(Message):
    """L2 -> L1: a sized market order that always carries a coherent stop."""

    signal_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    stop_loss: float
    timestamp: datetime
    take_profit: float | None = None
    confidence: float = 0.0
    reasoning: str = ""
    reduce_only: bool = False
    expires_at: datetime | None = None
    correlation_id: str = ""
    order_id: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_text(self, "signal_id", "symbol")
        if not isinstance(self.side, Side):
            _fail("OrderIntent", "side", self.side, "must be buy or sell")
        _check_finite(self, "qty", "price", "stop_loss", positive=True)
        _check_finite(self, "take_profit", positive=True)
        _check_unit(self, "confidence")
        _check_time(self, "timestamp", "expires_at")
        buy = self.side is Side.BUY
        if (buy and self.stop_loss >= self.price) or (not buy and self.stop_loss <= self.price):
            where = "below" if buy else "above"
            _fail(
                "OrderIntent",
                "stop_loss",
                self.stop_loss,
                f"a {self.side.value}'s stop must be {where} price {self.price}",
            )
        tp = self.take_profit
        if tp is not None and ((buy and tp <= self.price) or (not buy and tp >= self.price)):
            where = "above" if buy else "below"
            _fail(
                "OrderIntent",
                "take_profit",
                tp,
                f"a {self.side.value}'s take-profit must be {where} price {self.price}",
            )
        expected = order_id_for(self.signal_id)
        if not self.order_id:
            object.__setattr__(self, "order_id", expected)
        elif self.order_id != expected:
            _fail("OrderIntent", "order_id", self.order_id, f"must derive from signal_id (expected {expected})")
        if not self.correlation_id:
            object.__setattr__(self, "correlation_id", self.signal_id)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionReport(Message):
    """L1 -> L2: what happened to an order."""

    order_id: str
    symbol: str
    side: Side
    status: ExecutionStatus
    requested_qty: float
    executed_qty: float
    avg_price: float
    timestamp: datetime
    slippage_bps: float = 0.0
    fees: float = 0.0
    reason_code: ReasonCode = ReasonCode.OK
    correlation_id: str = ""
    report_id: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_text(self, "order_id", "symbol")
        if not isinstance(self.status, ExecutionStatus):
            _fail("ExecutionReport", "status", self.status, "must be an ExecutionStatus")
        if not isinstance(self.reason_code, ReasonCode):
            _fail("ExecutionReport", "reason_code", self.reason_code, "must be a ReasonCode")
        _check_finite(self, "requested_qty", "executed_qty", "avg_price", "fees", nonneg=True)
        _check_finite(self, "slippage_bps")
        _check_time(self, "timestamp")
        if self.executed_qty > self.requested_qty * (1 + 1e-9):
            _fail("ExecutionReport", "executed_qty", self.executed_qty, f"exceeds requested_qty {self.requested_qty}")
        if self.status is ExecutionStatus.REJECTED and self.reason_code is ReasonCode.OK:
            _fail("ExecutionReport", "reason_code", self.reason_code.value, "a rejection needs a reason code")
        if self.status is not ExecutionStatus.REJECTED and (self.executed_qty <= 0 or self.avg_price <= 0):
            _fail(
                "ExecutionReport", "executed_qty", self.executed_qty, "a fill needs executed_qty > 0 and avg_price > 0"
            )
        if not self.report_id:
            rid = stable_id("rep", self.order_id, self.status.value, self.timestamp.isoformat(), self.reason_code.value)
            object.__setattr__(self, "report_id", rid)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RiskAlert(Message):
    severity: AlertSeverity
    code: ReasonCode
    message: str
    timestamp: datetime
    symbol: str = ""
    value: float | None = None
    limit: float | None = None
    alert_id: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.severity, AlertSeverity):
            _fail("RiskAlert", "severity", self.severity, "must be an AlertSeverity")
        if not isinstance(self.code, ReasonCode):
            _fail("RiskAlert", "code", self.code, "must be a ReasonCode")
        _check_text(self, "message")
        _check_finite(self, "value", "limit")
        _check_time(self, "timestamp")
        if not self.alert_id:
            aid = stable_id("alr", self.code.value, self.symbol, self.timestamp.isoformat())
            object.__setattr__(self, "alert_id", aid)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PositionSize(Message):
    """The sizer's answer: a finite, non-negative quantity and how it was reached."""

    symbol: str
    qty: float
    notional: float
    risk_amount: float
    method: str
    stop_loss: float | None = None
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_text(self, "symbol", "method")
        _check_finite(self, "qty", "notional", "risk_amount", nonneg=True)
        _check_finite(self, "stop_loss", positive=True)
        _freeze_mapping(self, "details")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RiskMetrics(Message):
    timestamp: datetime
    equity: float
    exposure: float
    portfolio_heat: float
    daily_pnl: float
    drawdown: float
    open_positions: int
    trades_today: int
    trading_state: TradingState = TradingState.ACTIVE
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_time(self, "timestamp")
        _check_finite(self, "equity", "exposure", "portfolio_heat", "drawdown", nonneg=True)
        _check_finite(self, "daily_pnl")
        if not isinstance(self.trading_state, TradingState):
            _fail("RiskMetrics", "trading_state", self.trading_state, "must be a TradingState")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class L2State(Message):
    """Snapshot of the tactical layer, for dashboards and restarts."""

    timestamp: datetime
    trading_state: TradingState
    positions: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    last_decision_id: str = ""
    signals_emitted: int = 0
    orders_emitted: int = 0
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_time(self, "timestamp")
        if not isinstance(self.trading_state, TradingState):
            _fail("L2State", "trading_state", self.trading_state, "must be a TradingState")
        _freeze_mapping(self, "positions")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(Message):
    sender: str
    timestamp: datetime
    sequence: int = 0
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_text(self, "sender")
        _check_time(self, "timestamp")


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.__name__: cls
    for cls in (
        TacticalSignal,
        StrategicDecision,
        OrderIntent,
        ExecutionReport,
        RiskAlert,
        PositionSize,
        RiskMetrics,
        L2State,
        Heartbeat,
    )
}
