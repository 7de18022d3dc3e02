"""The enumerations carried by the messages (:mod:`l2_tactical.messages` re-exports every name).

Each member's value is its JSON form; :class:`ReasonCode` is shared by L2 and L1.

>>> SignalDirection("close_long").sign, SignalDirection.LONG.sign
(0, 1)
"""

from __future__ import annotations

import enum


class SignalDirection(enum.Enum):
    LONG = "long"
    SHORT = "short"
    NEUTRAL = "neutral"
    CLOSE_LONG = "close_long"
    CLOSE_SHORT = "close_short"

    @property
    def sign(self) -> int:
        """+1 for exposure-increasing long, -1 for short, 0 otherwise."""
        value = self._value_
        return 1 if value == "long" else -1 if value == "short" else 0


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
    # account recovery (L2's mirror of L1's book, see l2_tactical.tactical_account)
    ACCOUNT_NOT_SYNCED = "account_not_synced"  # no AccountSnapshot from L1 adopted yet: no new risk
    ACCOUNT_MISMATCH = "account_mismatch"      # L1's snapshot disagrees with L2's mirror: L1's book adopted
    STATE_RESTORED = "state_restored"          # L2's risk state restored from its store after a restart
