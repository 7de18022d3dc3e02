"""The L2 pipeline's output stage: signal -> stop -> size -> risk -> OrderIntent.

:func:`build_order` is the only code in L2 that constructs an
:class:`~l2_tactical.messages.OrderIntent`, and it does so only after
:func:`~l2_tactical.risk_controls.check_order` accepted a coherent stop, so no
path emits an order without one. It is pure: the time comes from the ``clock``
argument, market data from ``market`` (closed bars only), the account from
``state``; it returns an :class:`OrderDecision` and changes nothing. The caller
records an emitted order (:func:`~l2_tactical.risk_controls.record_order`) and
its fill (:func:`~l2_tactical.risk_controls.apply_fill`).

Direction handling (spot by default):

* ``LONG`` opens or adds to a long (a BUY with a stop below the price);
  with a short open (margin only) it closes the short (reduce-only BUY).
* ``SHORT`` / ``CLOSE_LONG`` with a long open: a reduce-only SELL of the whole
  position. Its stop must still be coherent for a sell (above the price):
  ``risk.default_stop_pct`` above. ``SHORT`` with nothing open opens a short only
  when ``allow_short`` (margin); in spot it yields no order (``SIZE_ZERO``).
* ``NEUTRAL`` and a close with nothing to close yield no order (``SIZE_ZERO``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from l2_tactical.clock import Clock
from l2_tactical.messages import (
    OrderIntent,
    PositionSize,
    ReasonCode,
    RiskAlert,
    Side,
    SignalDirection,
    TacticalSignal,
)
from l2_tactical.position_sizer import (
    SizingInputs,
    bar_volatility,
    bars_per_year,
    realised_volatility,
    return_correlation,
    size_position,
    win_probability,
)
from l2_tactical.risk_controls import ProposedOrder, RiskState, check_order, check_stop
from l2_tactical.stops import fixed_stop, initial_stop, take_profit
from l2_tactical.technical.indicators import atr as atr_series

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}


@dataclasses.dataclass(**_FROZEN)
class Bars:
    """Recent closed bars of one symbol (oldest first): the lookback the pipeline measures on.

    Realised volatility uses the log returns of all given closes; the ATR uses
    ``technical.atr_period``; correlations use the last ``correlation_window`` returns
    on the timestamps both symbols share.
    """

    timeframe: str
    timestamps: np.ndarray  # int64 epoch ns of bar open
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    # measures already taken on these bars (:func:`measure`): the pipeline and the position monitor
    # read the same bars on one decision; the arrays must not change after construction
    memo: dict[tuple[str, int], Any] = dataclasses.field(default_factory=dict, init=False, repr=False,
                                                         compare=False)

    def __post_init__(self) -> None:
        bars_per_year(self.timeframe)  # validates the timeframe
        n = len(self.timestamps)
        for name in ("open", "high", "low", "close"):
            arr = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (n,):
                raise ValueError(f"Bars.{name}: length {arr.shape} differs from timestamps ({n})")
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "timestamps", np.asarray(self.timestamps, dtype=np.int64))

    @classmethod
    def from_frame(cls, frame: Any, timeframe: str) -> Bars:
        """From a candles frame (UTC DatetimeIndex, float columns open/high/low/close)."""
        ts = np.asarray(frame.index.as_unit("ns").asi8, dtype=np.int64)
        return cls(
            timeframe=timeframe,
            timestamps=ts,
            open=frame["open"].to_numpy(),
            high=frame["high"].to_numpy(),
            low=frame["low"].to_numpy(),
            close=frame["close"].to_numpy(),
        )


@dataclasses.dataclass(**_FROZEN)
class MarketState:
    """Bars per symbol, and optional support/resistance levels per symbol."""

    bars: Mapping[str, Bars]
    levels: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(**_FROZEN)
class OrderDecision:
    order: OrderIntent | None
    reason: ReasonCode
    alerts: tuple[RiskAlert, ...] = ()
    size: PositionSize | None = None


@dataclasses.dataclass(**_FROZEN)
class _Measures:
    atr: float = math.nan
    prev_atr: float = math.nan
    bar_range: float = math.nan
    sigma: float = math.nan  # per-bar std of log returns
    annual_vol: float = math.nan


def measure(bars: Bars | None, atr_period: int) -> _Measures:
    """ATR (now and one bar earlier), last bar range and realised volatility of ``bars``
    (taken once per Bars object: see :attr:`Bars.memo`)."""
    if bars is None or len(bars.close) < 2:
        return _Measures()
    m: _Measures | None = bars.memo.get(("measure", atr_period))
    if m is None:
        atr, prev_atr = measure_atr(bars, atr_period)
        sigma = bar_volatility(bars.close)
        m = bars.memo[("measure", atr_period)] = _Measures(
            atr=atr, prev_atr=prev_atr, bar_range=float(bars.high[-1] - bars.low[-1]), sigma=sigma,
            annual_vol=sigma * math.sqrt(bars_per_year(bars.timeframe)))
    return m


def measure_atr(bars: Bars, atr_period: int) -> tuple[float, float]:
    """``(ATR now, ATR one bar earlier)`` of ``bars`` (nan with fewer than 2 or ``atr_period`` bars),
    taken once per Bars object."""
    got: tuple[float, float] | None = bars.memo.get(("atr", atr_period))
    if got is None:
        if len(bars.close) >= 2 and len(bars.close) > atr_period:
            a = atr_series(bars.high, bars.low, bars.close, atr_period)
            got = (float(a[-1]), float(a[-2]))
        else:
            got = (math.nan, math.nan)
        bars.memo[("atr", atr_period)] = got
    return got


def aligned_correlation(a: Bars, b: Bars, window: int) -> float:
    """Return correlation over the last ``window`` returns on the timestamps both have."""
    ta, tb = a.timestamps[-(window + 1) :], b.timestamps[-(window + 1) :]
    common, ia, ib = np.intersect1d(ta, tb, assume_unique=True, return_indices=True)
    if common.shape[0] < 3:
        return math.nan
    return return_correlation(a.close[-(window + 1) :][ia], b.close[-(window + 1) :][ib], window)


def _no_order(
    reason: ReasonCode, alerts: tuple[RiskAlert, ...] = (), size: PositionSize | None = None
) -> OrderDecision:
    return OrderDecision(order=None, reason=reason, alerts=alerts, size=size)


def _intent(
    signal: TacticalSignal,
    side: Side,
    qty: float,
    stop: float,
    tp: float | None,
    *,
    reduce_only: bool,
    now: Any,
    reasoning: str,
) -> OrderIntent:
    return OrderIntent(
        signal_id=signal.signal_id,
        symbol=signal.symbol,
        side=side,
        qty=qty,
        price=signal.price,
        stop_loss=stop,
        take_profit=tp,
        confidence=signal.confidence,
        reasoning=reasoning,
        reduce_only=reduce_only,
        timestamp=now,
        expires_at=signal.expires_at,
    )


def _metadata_level(signal: TacticalSignal, key: str) -> float | None:
    v = signal.metadata.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _exit_order(signal: TacticalSignal, state: RiskState, config: Any, now: Any) -> OrderDecision:
    """Reduce-only order closing the whole open position in ``signal.symbol``."""
    pos = state.positions[signal.symbol]
    side = Side.SELL if pos.qty > 0 else Side.BUY
    stop = fixed_stop(signal.price, -pos.side, config.risk.default_stop_pct)
    limits = config.symbols[signal.symbol]
    decision = check_order(
        ProposedOrder(
            symbol=signal.symbol, side=side, qty=abs(pos.qty), price=signal.price, stop_loss=stop, reduce_only=True
        ),
        state,
        risk=config.risk,
        sizing=config.position_sizing,
        limits=limits,
        now=now,
    )
    if not decision.approved or stop is None:
        return _no_order(decision.reason, decision.alerts)
    why = f"{signal.direction.value} from {signal.source.value}: close {pos.qty:g} {signal.symbol} (reduce-only)"
    order = _intent(signal, side, decision.qty, stop, None, reduce_only=True, now=now, reasoning=why)
    return OrderDecision(order=order, reason=ReasonCode.OK, alerts=decision.alerts)


def _entry_stop(
    signal: TacticalSignal, side: int, m: _Measures, market: MarketState, risk: Any
) -> tuple[float | None, float | None]:
    """Stop (the signal's own ``metadata["stop_loss"]`` or ``risk.stop_method``) and take-profit."""
    stop = _metadata_level(signal, "stop_loss")
    if stop is None:
        stop = initial_stop(
            risk.stop_method,
            signal.price,
            side,
            risk,
            atr=m.atr,
            sigma=m.sigma,
            levels=market.levels.get(signal.symbol, ()),
        )
    if stop is None or not math.isfinite(stop):
        return stop, None
    tp = _metadata_level(signal, "take_profit") or take_profit(signal.price, stop, risk.take_profit_r)
    if tp is not None and (tp - signal.price) * side <= 0:
        tp = None
    return stop, tp


def _others(
    signal: TacticalSignal, side: int, state: RiskState, market: MarketState, window: int
) -> tuple[dict[str, float], list[float]]:
    """Direction-signed correlations with, and annualised vols of, the other open positions."""
    mine = market.bars.get(signal.symbol)
    corrs: dict[str, float] = {}
    vols: list[float] = []
    for sym, pos in state.positions.items():
        other = market.bars.get(sym)
        if sym == signal.symbol or other is None:
            continue
        vols.append(realised_volatility(other.close, other.timeframe))
        if mine is not None:
            corrs[sym] = aligned_correlation(mine, other, window) * side * pos.side
    return corrs, vols


def _entry_order(
    signal: TacticalSignal, side: int, state: RiskState, market: MarketState, config: Any, now: Any
) -> OrderDecision:
    risk, sizing, limits = config.risk, config.position_sizing, config.symbols[signal.symbol]
    m = measure(market.bars.get(signal.symbol), config.technical.atr_period)
    order_side = Side.BUY if side > 0 else Side.SELL
    stop, tp = _entry_stop(signal, side, m, market, risk)
    stop_code = check_stop(order_side, signal.price, stop)
    if stop is None or stop_code is not ReasonCode.OK:
        return _no_order(stop_code)
    corrs, vols = _others(signal, side, state, market, sizing.correlation_window)
    size = size_position(
        SizingInputs(
            symbol=signal.symbol,
            price=signal.price,
            stop_loss=stop,
            take_profit=tp,
            equity=state.equity,
            win_probability=win_probability(signal),
            volatility=m.annual_vol,
            other_volatilities=tuple(vols),
            correlations=tuple(corrs.values()),
            other_risk=state.open_risk(signal.symbol),
        ),
        sizing,
        risk,
        limits,
    )
    pos = state.positions.get(signal.symbol)
    held = abs(pos.qty) if pos is not None else 0.0
    qty = max(size.qty - held, 0.0)
    if qty <= 0:
        return _no_order(ReasonCode.SIZE_ZERO, size=size)
    proposed = ProposedOrder(symbol=signal.symbol, side=order_side, qty=qty, price=signal.price, stop_loss=stop)
    decision = check_order(
        proposed,
        state,
        risk=risk,
        sizing=sizing,
        limits=limits,
        now=now,
        correlations=corrs,
        bar_range=m.bar_range,
        atr=m.prev_atr,
    )
    if not decision.approved:
        return _no_order(decision.reason, decision.alerts, size)
    why = (
        f"{signal.direction.value} from {signal.source.value} (strength {signal.strength:.2f}, confidence "
        f"{signal.confidence:.2f}); size {size.method} {size.notional:.2f}; stop {stop:.8g}; "
        f"risk {decision.reason.value}"
    )
    order = _intent(signal, order_side, decision.qty, stop, tp, reduce_only=False, now=now, reasoning=why)
    return OrderDecision(order=order, reason=decision.reason, alerts=decision.alerts, size=size)


def build_order(
    signal: TacticalSignal,
    state: RiskState,
    market: MarketState,
    config: Any,
    clock: Clock,
    *,
    allow_short: bool = False,
) -> OrderDecision:
    """Turn one signal into at most one OrderIntent (``config`` is an ``L2Config``).

    ``allow_short`` (margin) lets a SHORT with nothing open open a short position.
    """
    now = clock.now()
    if signal.is_expired(now):
        return _no_order(ReasonCode.EXPIRED)
    if signal.symbol not in config.symbols:
        return _no_order(ReasonCode.UNKNOWN_SYMBOL)
    pos = state.positions.get(signal.symbol)
    d = signal.direction
    held = 0 if pos is None else pos.side
    if (held > 0 and d in (SignalDirection.SHORT, SignalDirection.CLOSE_LONG)) or (
        held < 0 and d in (SignalDirection.LONG, SignalDirection.CLOSE_SHORT)
    ):
        return _exit_order(signal, state, config, now)
    if d is SignalDirection.LONG or (d is SignalDirection.SHORT and allow_short):
        return _entry_order(signal, d.sign, state, market, config, now)
    return _no_order(ReasonCode.SIZE_ZERO)
