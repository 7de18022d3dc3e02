"""Typed, immutable messages at every boundary (DESIGN.md rule 4).

Every message is a frozen, slotted, keyword-only dataclass with a ``schema``
version, validation in ``__post_init__`` that names the bad field and value,
and a JSON round trip (``to_dict``/``from_dict``, ``to_json``/``from_json``)
that rejects unknown keys and unknown schema versions.

Ids are deterministic so every consumer can drop duplicates: a signal's id is
derived from its symbol, source, direction and timestamp, and an order's id is
derived from the signal that caused it (:func:`order_id_for`).

This module is the one import path for every message name. The parts live in
:mod:`l2_tactical.message_types` (the enums), :mod:`l2_tactical.message_codec`
(the :class:`Message` base and its JSON codec, ids, field checks) and
:mod:`l2_tactical.message_account` (L1's :class:`AccountSnapshot`); their public
names are re-exported here.

>>> from datetime import datetime, timezone
>>> s = TacticalSignal(symbol="BTCUSDT", direction=SignalDirection.LONG, strength=0.7,
...                    confidence=0.6, price=50000.0, source=SignalSource.TECHNICAL,
...                    timestamp=datetime(2024, 1, 1, tzinfo=timezone.utc))
>>> TacticalSignal.from_json(s.to_json()) == s
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from l2_tactical.message_account import AccountPosition, AccountSnapshot
from l2_tactical.message_codec import (
    SCHEMA_VERSION,
    Message,
    MessageError,
    check_finite,
    check_text,
    check_time,
    check_unit,
    fail,
    freeze_mapping,
    order_id_for,
    stable_id,
    utc_now,
)
from l2_tactical.message_types import (
    AlertSeverity,
    ExecutionStatus,
    ReasonCode,
    Regime,
    Side,
    SignalDirection,
    SignalSource,
    TradingState,
)

__all__ = [
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "AccountPosition",
    "AccountSnapshot",
    "AlertSeverity",
    "ExecutionReport",
    "ExecutionStatus",
    "Heartbeat",
    "L2State",
    "Message",
    "MessageError",
    "OrderIntent",
    "PositionSize",
    "ReasonCode",
    "Regime",
    "RiskAlert",
    "RiskMetrics",
    "Side",
    "SignalDirection",
    "SignalSource",
    "StrategicDecision",
    "TacticalSignal",
    "TradingState",
    "order_id_for",
    "stable_id",
    "utc_now",
]


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
        check_text(self, "symbol")
        if not isinstance(self.direction, SignalDirection):
            fail("TacticalSignal", "direction", self.direction, "must be a SignalDirection")
        if not isinstance(self.source, SignalSource):
            fail("TacticalSignal", "source", self.source, "must be a SignalSource")
        check_unit(self, "strength", "confidence")
        check_finite(self, "price", positive=True)
        check_time(self, "timestamp", "expires_at")
        if self.expires_at is not None and self.expires_at < self.timestamp:
            fail("TacticalSignal", "expires_at", self.expires_at, "is before timestamp")
        freeze_mapping(self, "metadata")
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
            fail("StrategicDecision", "regime", self.regime, "must be trending, ranging or volatile")
        check_unit(self, "strength", "target_exposure", "risk_appetite")
        if not isinstance(self.universe, tuple) or not all(isinstance(s, str) and s for s in self.universe):
            fail("StrategicDecision", "universe", self.universe, "must be a tuple of symbols")
        check_time(self, "timestamp", "expires_at")
        check_text(self, "preferred_timeframe")
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
        check_text(self, "signal_id", "symbol")
        if not isinstance(self.side, Side):
            fail("OrderIntent", "side", self.side, "must be buy or sell")
        check_finite(self, "qty", "price", "stop_loss", positive=True)
        check_finite(self, "take_profit", positive=True)
        check_unit(self, "confidence")
        check_time(self, "timestamp", "expires_at")
        buy = self.side is Side.BUY
        if (buy and self.stop_loss >= self.price) or (not buy and self.stop_loss <= self.price):
            where = "below" if buy else "above"
            fail(
                "OrderIntent",
                "stop_loss",
                self.stop_loss,
                f"a {self.side.value}'s stop must be {where} price {self.price}",
            )
        tp = self.take_profit
        if tp is not None and ((buy and tp <= self.price) or (not buy and tp >= self.price)):
            where = "above" if buy else "below"
            fail(
                "OrderIntent",
                "take_profit",
                tp,
                f"a {self.side.value}'s take-profit must be {where} price {self.price}",
            )
        expected = order_id_for(self.signal_id)
        if not self.order_id:
            object.__setattr__(self, "order_id", expected)
        elif self.order_id != expected:
            fail("OrderIntent", "order_id", self.order_id, f"must derive from signal_id (expected {expected})")
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
        check_text(self, "order_id", "symbol")
        if not isinstance(self.status, ExecutionStatus):
            fail("ExecutionReport", "status", self.status, "must be an ExecutionStatus")
        if not isinstance(self.reason_code, ReasonCode):
            fail("ExecutionReport", "reason_code", self.reason_code, "must be a ReasonCode")
        check_finite(self, "requested_qty", "executed_qty", "avg_price", "fees", nonneg=True)
        check_finite(self, "slippage_bps")
        check_time(self, "timestamp")
        if self.executed_qty > self.requested_qty * (1 + 1e-9):
            fail("ExecutionReport", "executed_qty", self.executed_qty, f"exceeds requested_qty {self.requested_qty}")
        if self.status is ExecutionStatus.REJECTED and self.reason_code is ReasonCode.OK:
            fail("ExecutionReport", "reason_code", self.reason_code.value, "a rejection needs a reason code")
        if self.status is not ExecutionStatus.REJECTED and (self.executed_qty <= 0 or self.avg_price <= 0):
            fail(
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
            fail("RiskAlert", "severity", self.severity, "must be an AlertSeverity")
        if not isinstance(self.code, ReasonCode):
            fail("RiskAlert", "code", self.code, "must be a ReasonCode")
        check_text(self, "message")
        check_finite(self, "value", "limit")
        check_time(self, "timestamp")
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
        check_text(self, "symbol", "method")
        check_finite(self, "qty", "notional", "risk_amount", nonneg=True)
        check_finite(self, "stop_loss", positive=True)
        freeze_mapping(self, "details")


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
        check_time(self, "timestamp")
        check_finite(self, "equity", "exposure", "portfolio_heat", "drawdown", nonneg=True)
        check_finite(self, "daily_pnl")
        if not isinstance(self.trading_state, TradingState):
            fail("RiskMetrics", "trading_state", self.trading_state, "must be a TradingState")


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
        check_time(self, "timestamp")
        if not isinstance(self.trading_state, TradingState):
            fail("L2State", "trading_state", self.trading_state, "must be a TradingState")
        freeze_mapping(self, "positions")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(Message):
    sender: str
    timestamp: datetime
    sequence: int = 0
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_text(self, "sender")
        check_time(self, "timestamp")


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
        AccountSnapshot,
    )
}
