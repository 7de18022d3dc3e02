"""PositionSizer: turns direction and conviction into a finite, non-negative quantity.

Signals say *direction and conviction*; only this module turns that into a size
(DESIGN.md rule 3). Every function is pure: numbers and arrays in, numbers out.
All sizes are target position sizes for one symbol (base-asset ``qty`` plus
``notional`` in quote currency); they are never negative, ``nan`` or infinite.

Methods (``position_sizing`` section of ``config/l2_config.yaml``)

* **fractional Kelly** — win probability ``p`` from the signal (see
  :func:`win_probability`), pay-off ratio ``b`` = take-profit distance / stop
  distance; the Kelly optimum ``p - (1 - p) / b`` is the fraction of equity to put
  *at risk* (lost if the stop is hit). Risked: ``kelly_fraction`` x that, clipped
  at 0; notional = risked amount / stop distance (as a fraction of price).
* **volatility targeting** — notional = ``equity * target_volatility / sigma``,
  sigma the realised annualised volatility of the symbol.
* **fixed risk** — notional such that hitting the stop loses
  ``risk.max_loss_per_trade`` of equity.
* **risk parity** — inverse-volatility share of the gross exposure budget
  (``risk.exposure_limit`` x equity) among the open positions and the new one.
* **ensemble** — ``method: min`` takes the smallest component, ``weighted`` their
  equal-weight mean (components that do not apply, e.g. no volatility, are left out).
* **correlation adjustment** (``correlation_adjustment``) — the result is divided
  by ``1 + sum(max(rho_j, 0))`` over open positions, ``rho_j`` the rolling
  correlation of log returns over ``correlation_window`` bars, signed by the two
  positions' directions.
* **caps** — ``max_position_pct`` of equity, ``max_position_size`` (quote),
  the symbol's ``max_notional``, ``max_qty`` and ``max_exposure`` of equity, and the
  portfolio heat left under ``max_portfolio_heat``; then the quantity is rounded
  down to the symbol's ``lot_step`` and dropped to 0 below ``min_qty`` / ``min_notional``.

>>> round(kelly_risk_fraction(0.6, 2.0, 0.25), 4)
0.1
>>> vol_target_notional(10000.0, 0.15, 0.60)
2500.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from l2_tactical.execution import check_filters, round_to_step
from l2_tactical.messages import PositionSize, ReasonCode, TacticalSignal

_TF_MINUTES = {"m": 1, "h": 60, "d": 1440, "w": 10080}
MINUTES_PER_YEAR = 365.0 * 24 * 60  # crypto trades around the clock
_add_reduce = np.add.reduce
_BARS_PER_YEAR: dict[str, float] = {}  # timeframes already parsed


# --------------------------------------------------------------- market statistics


def bars_per_year(timeframe: str) -> float:
    """Number of bars of ``timeframe`` in a 365-day year.

    >>> bars_per_year("1h")
    8760.0
    """
    known = _BARS_PER_YEAR.get(timeframe) if type(timeframe) is str else None
    if known is not None:
        return known
    unit = timeframe[-1:]
    if unit not in _TF_MINUTES or not timeframe[:-1].isdigit() or int(timeframe[:-1]) <= 0:
        raise ValueError(f"timeframe={timeframe!r}: expected e.g. '1m', '15m', '1h', '1d'")
    bars = _BARS_PER_YEAR[timeframe] = MINUTES_PER_YEAR / (int(timeframe[:-1]) * _TF_MINUTES[unit])
    return bars


def bar_volatility(close: np.ndarray) -> float:
    """Sample standard deviation of one-bar log returns of ``close`` (nan with < 3 closes)."""
    c = np.asarray(close, dtype=np.float64)
    if c.shape[0] < 3 or not (c > 0).all():
        return math.nan
    # np.std(np.diff(np.log(c)), ddof=1) written out: the same ufunc calls in the same order (pairwise
    # sums of the same arrays), without np.std's generic bookkeeping; a test checks it bit for bit
    lc = np.log(c)
    r = lc[1:] - lc[:-1]
    n = r.shape[0]
    x = r - _add_reduce(r) / n
    np.multiply(x, x, out=x)
    return float(np.sqrt(_add_reduce(x) / (n - 1)))


def realised_volatility(close: np.ndarray, timeframe: str) -> float:
    """Annualised realised volatility from the log returns of the given closes."""
    return bar_volatility(close) * math.sqrt(bars_per_year(timeframe))


def atr_volatility(atr: float, price: float, timeframe: str) -> float:
    """Annualised volatility proxy from an ATR: ``atr / price * sqrt(bars per year)``."""
    if not (math.isfinite(atr) and math.isfinite(price) and price > 0):
        return math.nan
    return atr / price * math.sqrt(bars_per_year(timeframe))


def rolling_return_correlation(close_a: np.ndarray, close_b: np.ndarray, window: int) -> np.ndarray:
    """Pearson correlation of the two series' log returns over each trailing ``window`` returns.

    Element ``i`` belongs to close ``i`` (returns ``i - window + 1 .. i``); the first
    ``window`` elements are nan; a window where either series is flat gives 0.
    """
    a, b = np.asarray(close_a, dtype=np.float64), np.asarray(close_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"close series lengths differ: {a.shape[0]} and {b.shape[0]}")
    if window < 2:
        raise ValueError(f"window={window!r}: must be >= 2")
    out = np.full(a.shape[0], np.nan)
    if a.shape[0] <= window:
        return out
    x, y = np.diff(np.log(a)), np.diff(np.log(b))
    x, y = x - x.mean(), y - y.mean()

    def wsum(v: np.ndarray) -> np.ndarray:
        c = np.concatenate(([0.0], np.cumsum(v)))
        return c[window:] - c[:-window]

    sx, sy = wsum(x), wsum(y)
    cov = wsum(x * y) - sx * sy / window
    vx, vy = wsum(x * x) - sx * sx / window, wsum(y * y) - sy * sy / window
    den = np.sqrt(np.clip(vx, 0, None) * np.clip(vy, 0, None))
    corr = np.zeros_like(cov)
    np.divide(cov, den, out=corr, where=den > 1e-18)
    out[window:] = np.clip(corr, -1.0, 1.0)
    return out


def return_correlation(close_a: np.ndarray, close_b: np.ndarray, window: int) -> float:
    """Correlation of log returns over the last ``window`` returns (nan if too short)."""
    a, b = np.asarray(close_a, dtype=np.float64), np.asarray(close_b, dtype=np.float64)
    n = min(a.shape[0], b.shape[0], window + 1)
    if n < 3:
        return math.nan
    return float(rolling_return_correlation(a[-n:], b[-n:], n - 1)[-1])


# ------------------------------------------------------------------ size components


def win_probability(signal: TacticalSignal) -> float:
    """Probability that the trade reaches its take-profit before its stop.

    ``metadata["win_probability"]`` when the source gives one; otherwise
    ``0.5 + strength * (confidence - 0.5)``: a signal with no strength is a coin
    flip, a full-strength signal's confidence is read as its hit rate.

    >>> from datetime import datetime, timezone
    >>> from l2_tactical.messages import SignalDirection, SignalSource
    >>> s = TacticalSignal(symbol="BTCUSDT", direction=SignalDirection.LONG, strength=0.5, confidence=0.7,
    ...                    price=1.0, source=SignalSource.TECHNICAL,
    ...                    timestamp=datetime(2024, 1, 1, tzinfo=timezone.utc))
    >>> round(win_probability(s), 6)
    0.6
    """
    given = signal.metadata.get("win_probability")
    if isinstance(given, (int, float)) and not isinstance(given, bool) and 0.0 <= given <= 1.0:
        return float(given)
    return 0.5 + signal.strength * (signal.confidence - 0.5)


def kelly_risk_fraction(p: float, payoff: float, kelly_fraction: float) -> float:
    """``kelly_fraction * (p - (1 - p) / payoff)``, clipped at 0: the share of equity to risk."""
    if not (math.isfinite(p) and math.isfinite(payoff) and payoff > 0 and 0.0 <= p <= 1.0):
        return 0.0
    return max(0.0, kelly_fraction * (p - (1.0 - p) / payoff))


def vol_target_notional(equity: float, target_volatility: float, realised_vol: float) -> float:
    """Notional whose volatility is ``target_volatility`` of equity (inf when vol is unknown/0)."""
    if not (math.isfinite(realised_vol) and realised_vol > 0):
        return math.inf
    return max(0.0, equity * target_volatility / realised_vol)


def fixed_risk_notional(equity: float, max_loss: float, stop_fraction: float) -> float:
    """Notional that loses ``max_loss`` of equity when the stop, ``stop_fraction`` away, is hit."""
    return max(0.0, equity * max_loss / stop_fraction)


def risk_parity_weights(vols: Sequence[float]) -> np.ndarray:
    """Inverse-volatility weights summing to 1 (equal weights if any vol is unusable).

    >>> risk_parity_weights([0.5, 1.0]).round(4).tolist()
    [0.6667, 0.3333]
    """
    v = np.asarray(vols, dtype=np.float64)
    if v.size == 0:
        return v
    if not np.all(np.isfinite(v) & (v > 0)):
        return np.full(v.size, 1.0 / v.size)
    rel = v.min() / v  # inverse vols scaled into (0, 1]: no overflow for tiny vols
    return rel / rel.sum()


def correlation_factor(correlations: Sequence[float]) -> float:
    """``1 / (1 + sum of positive correlations)`` with the open positions (nan counts as 0).

    >>> round(correlation_factor([0.83]), 4)
    0.5464
    """
    pos = sum(max(c, 0.0) for c in correlations if math.isfinite(c))
    return 1.0 / (1.0 + pos)


def combine_sizes(components: dict[str, float], method: str) -> float:
    """Combine component notionals: ``min`` or equal-weight mean of the finite ones."""
    finite = [v for v in components.values() if math.isfinite(v)]
    if not finite:
        return 0.0
    if method == "min":
        return max(0.0, min(finite))
    if method == "weighted":
        return max(0.0, sum(finite) / len(finite))
    raise ValueError(f"position_sizing.method={method!r}: must be min or weighted")


# ----------------------------------------------------------------------- the sizer


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SizingInputs:
    """Everything the sizer needs about one prospective position, as plain numbers.

    ``correlations`` are with the *other* open positions, already signed by the two
    positions' directions; ``other_volatilities`` their annualised vols;
    ``other_risk`` the quote currency they lose if all their stops are hit.
    """

    symbol: str
    price: float
    stop_loss: float
    equity: float
    win_probability: float
    take_profit: float | None = None
    volatility: float = math.nan
    other_volatilities: tuple[float, ...] = ()
    correlations: tuple[float, ...] = ()
    other_risk: float = 0.0


def _json_number(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _zero(inputs: SizingInputs, method: str, why: str) -> PositionSize:
    stop = inputs.stop_loss if math.isfinite(inputs.stop_loss) and inputs.stop_loss > 0 else None
    return PositionSize(
        symbol=inputs.symbol,
        qty=0.0,
        notional=0.0,
        risk_amount=0.0,
        method=method,
        stop_loss=stop,
        details={"zero_because": why},
    )


def size_components(inputs: SizingInputs, sizing: Any, risk: Any) -> dict[str, float]:
    """Notional proposed by each method (``inf`` when a method does not constrain)."""
    stop_frac = abs(inputs.price - inputs.stop_loss) / inputs.price
    tp = inputs.take_profit
    payoff = abs(tp - inputs.price) / abs(inputs.price - inputs.stop_loss) if tp else risk.take_profit_r
    kelly = kelly_risk_fraction(inputs.win_probability, payoff, sizing.kelly_fraction) * inputs.equity / stop_frac
    parity = math.inf
    if math.isfinite(inputs.volatility) and inputs.volatility > 0:
        # alone, the new position's inverse-volatility share is vol / vol = 1 exactly
        share = float(risk_parity_weights([*inputs.other_volatilities, inputs.volatility])[-1]) \
            if inputs.other_volatilities else 1.0
        parity = risk.exposure_limit * inputs.equity * share
    return {
        "kelly": kelly,
        "vol_target": vol_target_notional(inputs.equity, sizing.target_volatility, inputs.volatility),
        "fixed_risk": fixed_risk_notional(inputs.equity, risk.max_loss_per_trade, stop_frac),
        "risk_parity": parity,
    }


def size_caps(inputs: SizingInputs, sizing: Any, limits: Any) -> dict[str, float]:
    """Upper bounds on the position's notional (quote currency)."""
    stop_frac = abs(inputs.price - inputs.stop_loss) / inputs.price
    heat_left = max(sizing.max_portfolio_heat * inputs.equity - inputs.other_risk, 0.0)
    return {
        "max_position_pct": sizing.max_position_pct * inputs.equity,
        "max_position_size": sizing.max_position_size,
        "symbol_max_notional": limits.max_notional,
        "symbol_max_qty": limits.max_qty * inputs.price,
        "symbol_max_exposure": limits.max_exposure * inputs.equity,
        "portfolio_heat": heat_left / stop_frac,
    }


def size_position(inputs: SizingInputs, sizing: Any, risk: Any, limits: Any) -> PositionSize:
    """Target size of the position in ``inputs.symbol`` (``sizing`` = ``L2Config.position_sizing``,
    ``risk`` = ``L2Config.risk``, ``limits`` = ``L2Config.symbols[symbol]``).

    Never raises on market numbers: an unusable price, equity or stop gives a zero
    size whose ``details["zero_because"]`` says why.
    """
    method = f"ensemble_{sizing.method}"
    p, eq, stop = inputs.price, inputs.equity, inputs.stop_loss
    if not (math.isfinite(p) and p > 0):
        return _zero(inputs, method, f"price={p!r} is not a positive number")
    if not (math.isfinite(eq) and eq > 0):
        return _zero(inputs, method, f"equity={eq!r} is not positive")
    if not (math.isfinite(stop) and stop > 0 and stop != p):
        return _zero(inputs, method, f"stop_loss={stop!r} gives no stop distance")
    components = size_components(inputs, sizing, risk)
    notional = combine_sizes(components, sizing.method)
    factor = correlation_factor(inputs.correlations) if sizing.correlation_adjustment else 1.0
    notional *= factor
    caps = size_caps(inputs, sizing, limits)
    capped_by = [k for k, v in caps.items() if v < notional]
    notional = max(0.0, min(notional, *caps.values()))
    qty = float(round_to_step(notional / p, limits.lot_step))
    filt = check_filters(
        qty, p, min_qty=limits.min_qty, min_notional=limits.min_notional, max_notional=limits.max_notional
    )
    if filt is not ReasonCode.OK:
        qty = 0.0
    details = {
        "components": {k: _json_number(v) for k, v in components.items()},
        "correlation_factor": factor,
        "capped_by": capped_by,
        "filter": filt.value,
    }
    return PositionSize(
        symbol=inputs.symbol,
        qty=qty,
        notional=qty * p,
        risk_amount=qty * abs(p - stop),
        method=method,
        stop_loss=stop,
        details=details,
    )
