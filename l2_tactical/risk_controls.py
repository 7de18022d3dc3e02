"""RiskControls: the account's risk state and the pre-trade checks that may shrink or deny an order.

Nothing here raises on a risky order: every check returns a
:class:`~l2_tactical.messages.ReasonCode` (``OK`` when it passes), and
:func:`check_order` returns a :class:`RiskDecision` — the approved quantity (maybe
shrunk), the reason, and the :class:`~l2_tactical.messages.RiskAlert` s raised.

The account's state is an immutable :class:`RiskState`; pure functions return the
next state (:func:`mark_to_market`, :func:`record_order`, :func:`apply_fill`).

Trading state (drawdown from the equity peak, ``risk.drawdown_reduce`` /
``risk.drawdown_halt``)::

    ACTIVE --dd >= drawdown_reduce--> REDUCING --dd >= drawdown_halt--> HALTED (kill switch)
    REDUCING --dd < drawdown_reduce--> ACTIVE        HALTED stays until reset_kill_switch()

When not ACTIVE, and for the rest of the UTC day once the day's loss reached
``risk.daily_loss_limit`` of the start-of-day equity, only exposure-reducing
(``reduce_only``) orders pass. Exits are never blocked by a limit.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from l2_tactical.execution import check_filters, round_to_step
from l2_tactical.messages import AlertSeverity, ReasonCode, RiskAlert, RiskMetrics, Side, TradingState
from l2_tactical.position_monitor import Position, add_to_position, open_position
from l2_tactical.stops import is_coherent_stop

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}
_EPS = 1e-12  # a limit counts as reached at its value, despite float rounding (1 - 0.9 < 0.1)


# --------------------------------------------------------------------- risk state


@dataclasses.dataclass(**_FROZEN)
class RiskState:
    """Account-level risk state; derive new states with the functions below."""

    equity: float
    peak_equity: float
    day_start_equity: float
    day: date
    trades_today: int = 0
    trading_state: TradingState = TradingState.ACTIVE
    daily_loss_hit: bool = False
    positions: Mapping[str, Position] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("equity", "peak_equity", "day_start_equity"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"RiskState.{name}={v!r}: must be a finite number")
        object.__setattr__(self, "positions", types.MappingProxyType(dict(self.positions)))

    @property
    def drawdown(self) -> float:
        """Fractional drop of equity from its peak (0 at a new peak)."""
        return max(0.0, 1.0 - self.equity / self.peak_equity) if self.peak_equity > 0 else 0.0

    @property
    def daily_loss(self) -> float:
        """Fraction of the start-of-day equity lost today (0 when up)."""
        if self.day_start_equity <= 0:
            return 0.0
        return max(0.0, 1.0 - self.equity / self.day_start_equity)

    def gross_exposure(self, prices: Mapping[str, float] | None = None) -> float:
        """Sum of absolute position values (quote), at ``prices`` where given, else last prices."""
        prices = prices or {}
        return sum(p.notional(prices.get(s)) for s, p in self.positions.items())

    def open_risk(self, exclude: str = "") -> float:
        """Quote lost if every stop (except ``exclude``'s) is hit from the last price."""
        return sum(p.risk_to_stop() for s, p in self.positions.items() if s != exclude)


def new_risk_state(equity: float, now: datetime) -> RiskState:
    return RiskState(equity=equity, peak_equity=equity, day_start_equity=equity, day=now.date())


def _alert(
    severity: AlertSeverity,
    code: ReasonCode,
    message: str,
    now: datetime,
    *,
    symbol: str = "",
    value: float | None = None,
    limit: float | None = None,
) -> RiskAlert:
    return RiskAlert(
        severity=severity, code=code, message=message, timestamp=now, symbol=symbol, value=value, limit=limit
    )


def _next_trading_state(state: RiskState, risk: Any) -> TradingState:
    dd = state.drawdown
    if state.trading_state is TradingState.HALTED or dd >= risk.drawdown_halt - _EPS:
        return TradingState.HALTED
    return TradingState.REDUCING if dd >= risk.drawdown_reduce - _EPS else TradingState.ACTIVE


def mark_to_market(
    state: RiskState, equity: float, now: datetime, risk: Any, *, positions: Mapping[str, Position] | None = None
) -> tuple[RiskState, tuple[RiskAlert, ...]]:
    """The state with a new equity reading at ``now`` (UTC day rollover, drawdown, daily loss);
    ``positions``: the positions it holds now (default: the state's)."""
    if not math.isfinite(equity):
        raise ValueError(f"equity={equity!r}: must be a finite number")
    s = state
    if now.date() != s.day:  # a new UTC day: fresh loss budget and trade count
        s = dataclasses.replace(s, day=now.date(), day_start_equity=equity, trades_today=0, daily_loss_hit=False)
    s = dataclasses.replace(s, equity=equity, peak_equity=max(s.peak_equity, equity),
                            positions=s.positions if positions is None else positions)
    alerts: list[RiskAlert] = []
    new_trading = _next_trading_state(s, risk)
    if new_trading is not s.trading_state:
        code = ReasonCode.DRAWDOWN_KILL_SWITCH if new_trading is TradingState.HALTED else ReasonCode.NOT_ACTIVE
        sev = {TradingState.HALTED: AlertSeverity.CRITICAL, TradingState.REDUCING: AlertSeverity.WARNING}
        limit = risk.drawdown_halt if new_trading is TradingState.HALTED else risk.drawdown_reduce
        alerts.append(
            _alert(
                sev.get(new_trading, AlertSeverity.INFO),
                code,
                f"trading {s.trading_state.value} -> {new_trading.value} at drawdown {s.drawdown:.2%}",
                now,
                value=s.drawdown,
                limit=limit,
            )
        )
        s = dataclasses.replace(s, trading_state=new_trading)
    if not s.daily_loss_hit and s.daily_loss >= risk.daily_loss_limit - _EPS:
        alerts.append(
            _alert(
                AlertSeverity.CRITICAL,
                ReasonCode.DAILY_LOSS_LIMIT,
                f"daily loss {s.daily_loss:.2%} reached the limit; no new risk until the next UTC day",
                now,
                value=s.daily_loss,
                limit=risk.daily_loss_limit,
            )
        )
        s = dataclasses.replace(s, daily_loss_hit=True)
    return s, tuple(alerts)


def reset_kill_switch(state: RiskState) -> RiskState:
    """Manual restart after a halt: ACTIVE again, the peak reset to the current equity."""
    return dataclasses.replace(state, trading_state=TradingState.ACTIVE, peak_equity=state.equity)


def record_order(state: RiskState, *, reduce_only: bool) -> RiskState:
    """Count an emitted order against ``risk.max_daily_trades`` (exits are not counted)."""
    return state if reduce_only else dataclasses.replace(state, trades_today=state.trades_today + 1)


def apply_fill(
    state: RiskState,
    symbol: str,
    signed_qty: float,
    price: float,
    *,
    now: datetime,
    stop_loss: float | None = None,
    take_profit: float | None = None,
) -> RiskState:
    """Positions after a fill (opening a position needs its stop)."""
    positions = dict(state.positions)
    current = positions.get(symbol)
    if current is None:
        if stop_loss is None:
            raise ValueError(f"apply_fill({symbol}): opening a position needs a stop_loss")
        positions[symbol] = open_position(
            symbol, signed_qty, price, stop_loss=stop_loss, take_profit=take_profit, opened_at=now
        )
    else:
        after = add_to_position(current, signed_qty, price)
        if after is None:
            del positions[symbol]
        else:
            positions[symbol] = after
    return dataclasses.replace(state, positions=positions)


def replace_position(state: RiskState, symbol: str, position: Position | None) -> RiskState:
    positions = dict(state.positions)
    if position is None:
        positions.pop(symbol, None)
    else:
        positions[symbol] = position
    return dataclasses.replace(state, positions=positions)


def risk_metrics(state: RiskState, now: datetime) -> RiskMetrics:
    eq = max(state.equity, 1e-12)
    return RiskMetrics(
        timestamp=now,
        equity=max(state.equity, 0.0),
        exposure=state.gross_exposure() / eq,
        portfolio_heat=state.open_risk() / eq,
        daily_pnl=state.equity - state.day_start_equity,
        drawdown=state.drawdown,
        open_positions=len(state.positions),
        trades_today=state.trades_today,
        trading_state=state.trading_state,
    )


# -------------------------------------------------------------- pre-trade checks


@dataclasses.dataclass(**_FROZEN)
class ProposedOrder:
    """An order before risk: ``qty`` > 0 in base asset, ``side`` BUY/SELL."""

    symbol: str
    side: Side
    qty: float
    price: float
    stop_loss: float | None
    reduce_only: bool = False


@dataclasses.dataclass(**_FROZEN)
class RiskDecision:
    """``qty`` approved (0 when denied), why, and the alerts raised."""

    qty: float
    reason: ReasonCode
    alerts: tuple[RiskAlert, ...] = ()

    @property
    def approved(self) -> bool:
        return self.qty > 0


def check_stop(side: Side, price: float, stop: float | None) -> ReasonCode:
    """MISSING_STOP without a finite stop; INCOHERENT_STOP when a buy's stop is not below
    the price or a sell's not above it."""
    if stop is None or not math.isfinite(stop) or stop <= 0:
        return ReasonCode.MISSING_STOP
    return ReasonCode.OK if is_coherent_stop(1 if side is Side.BUY else -1, price, stop) else ReasonCode.INCOHERENT_STOP


def check_trading_state(state: RiskState) -> ReasonCode:
    """Whether risk-increasing orders may pass: HALTED -> DRAWDOWN_KILL_SWITCH,
    REDUCING -> NOT_ACTIVE, daily loss hit today -> DAILY_LOSS_LIMIT."""
    if state.trading_state is TradingState.HALTED:
        return ReasonCode.DRAWDOWN_KILL_SWITCH
    if state.trading_state is not TradingState.ACTIVE:
        return ReasonCode.NOT_ACTIVE
    return ReasonCode.DAILY_LOSS_LIMIT if state.daily_loss_hit else ReasonCode.OK


def check_volatility_spike(bar_range: float, atr: float, multiple: float) -> ReasonCode:
    """VOLATILITY_PAUSE when the last bar's range exceeds ``multiple`` ATRs (ATR of the bars before it)."""
    if math.isfinite(bar_range) and math.isfinite(atr) and atr > 0 and bar_range > multiple * atr:
        return ReasonCode.VOLATILITY_PAUSE
    return ReasonCode.OK


def check_concurrent_positions(state: RiskState, symbol: str, max_positions: int) -> ReasonCode:
    """A new symbol may open only while fewer than ``max_positions`` are open."""
    if symbol in state.positions or len(state.positions) < max_positions:
        return ReasonCode.OK
    return ReasonCode.MAX_CONCURRENT_POSITIONS


def check_daily_trades(state: RiskState, max_trades: int) -> ReasonCode:
    return ReasonCode.OK if state.trades_today < max_trades else ReasonCode.MAX_DAILY_TRADES


def check_correlation(correlations: Mapping[str, float], max_correlation: float) -> ReasonCode:
    """CORRELATION_LIMIT when the order's direction-signed return correlation with an open
    position exceeds ``max_correlation`` (nan: unknown, passes)."""
    worst = max((c for c in correlations.values() if math.isfinite(c)), default=-1.0)
    return ReasonCode.CORRELATION_LIMIT if worst > max_correlation else ReasonCode.OK


def max_position_notional(equity: float, price: float, sizing: Any, limits: Any) -> float:
    """Largest allowed position value: ``max_position_pct`` of equity, ``max_position_size``, and
    the symbol's ``max_notional``, ``max_qty`` and ``max_exposure`` of equity."""
    return max(
        0.0,
        min(
            sizing.max_position_pct * equity,
            sizing.max_position_size,
            limits.max_notional,
            limits.max_qty * price,
            limits.max_exposure * equity,
        ),
    )


def cap_quantity(qty: float, price: float, headroom: float) -> float:
    """``qty`` shrunk so that its value stays within ``headroom`` (quote)."""
    return max(0.0, min(qty, headroom / price))


def _deny(
    reason: ReasonCode, order: ProposedOrder, now: datetime, severity: AlertSeverity, message: str
) -> RiskDecision:
    return RiskDecision(qty=0.0, reason=reason, alerts=(_alert(severity, reason, message, now, symbol=order.symbol),))


def _gates(
    order: ProposedOrder, state: RiskState, risk: Any, correlations: Mapping[str, float], bar_range: float, atr: float
) -> ReasonCode:
    for code in (
        check_trading_state(state),
        check_volatility_spike(bar_range, atr, risk.volatility_spike_multiple),
        check_concurrent_positions(state, order.symbol, risk.max_concurrent_positions),
        check_daily_trades(state, risk.max_daily_trades),
        check_correlation(correlations, risk.max_correlation),
    ):
        if code is not ReasonCode.OK:
            return code
    return ReasonCode.OK


def _shrink(order: ProposedOrder, state: RiskState, risk: Any, sizing: Any, limits: Any) -> tuple[float, ReasonCode]:
    """Cap a risk-increasing order to the position limit, then the gross exposure limit."""
    current = state.positions.get(order.symbol)
    held = current.notional(order.price) if current is not None else 0.0
    qty, reason = order.qty, ReasonCode.OK
    pos_room = max_position_notional(state.equity, order.price, sizing, limits) - held
    if qty * order.price > pos_room:
        qty, reason = cap_quantity(qty, order.price, pos_room), ReasonCode.MAX_POSITION
    prices = {order.symbol: order.price}
    exp_room = risk.exposure_limit * state.equity - state.gross_exposure(prices)
    if qty * order.price > exp_room:
        qty, reason = cap_quantity(qty, order.price, exp_room), ReasonCode.EXPOSURE_LIMIT
    return qty, reason


def check_order(
    order: ProposedOrder,
    state: RiskState,
    *,
    risk: Any,
    sizing: Any,
    limits: Any,
    now: datetime,
    correlations: Mapping[str, float] | None = None,
    bar_range: float = math.nan,
    atr: float = math.nan,
) -> RiskDecision:
    """All pre-trade checks for one order.

    Every order needs a coherent stop. A ``reduce_only`` order then always passes,
    capped at the open position. A risk-increasing order must pass the gates
    (trading state, daily loss, volatility pause, concurrency, daily trades,
    correlation) and is shrunk to the position and exposure limits, re-rounded to
    the lot step and re-checked against the exchange minimums.
    """
    stop_code = check_stop(order.side, order.price, order.stop_loss)
    if stop_code is not ReasonCode.OK:
        return _deny(stop_code, order, now, AlertSeverity.WARNING, f"order without a coherent stop ({order.stop_loss})")
    if not (math.isfinite(order.qty) and order.qty > 0):
        return RiskDecision(qty=0.0, reason=ReasonCode.SIZE_ZERO)
    if order.reduce_only:
        held = state.positions.get(order.symbol)
        qty = min(order.qty, abs(held.qty)) if held is not None else 0.0
        return RiskDecision(qty=qty, reason=ReasonCode.OK if qty > 0 else ReasonCode.SIZE_ZERO)
    gate = _gates(order, state, risk, correlations or {}, bar_range, atr)
    if gate is not ReasonCode.OK:
        sev = AlertSeverity.WARNING if gate in _STATE_CODES else AlertSeverity.INFO
        return _deny(gate, order, now, sev, f"risk-increasing {order.side.value} denied: {gate.value}")
    qty, reason = _shrink(order, state, risk, sizing, limits)
    qty = float(round_to_step(qty, limits.lot_step))
    ok = (
        check_filters(
            qty, order.price, min_qty=limits.min_qty, min_notional=limits.min_notional, max_notional=limits.max_notional
        )
        is ReasonCode.OK
    )
    if not ok:
        return _deny(
            reason if reason is not ReasonCode.OK else ReasonCode.SIZE_ZERO,
            order,
            now,
            AlertSeverity.INFO,
            f"order too small after risk limits ({qty} @ {order.price})",
        )
    if reason is not ReasonCode.OK:
        msg = f"order shrunk from {order.qty} to {qty} by {reason.value}"
        return RiskDecision(
            qty=qty, reason=reason, alerts=(_alert(AlertSeverity.INFO, reason, msg, now, symbol=order.symbol),)
        )
    return RiskDecision(qty=qty, reason=ReasonCode.OK)


_STATE_CODES = (
    ReasonCode.DRAWDOWN_KILL_SWITCH,
    ReasonCode.NOT_ACTIVE,
    ReasonCode.DAILY_LOSS_LIMIT,
    ReasonCode.VOLATILITY_PAUSE,
)
