"""The two baselines every strategy is compared with: buy-and-hold and an SMA cross.

Both go through the one execution simulator (:func:`l2_tactical.execution.trade_to_target`,
stops through :func:`~l2_tactical.execution.stop_exit` / :func:`~l2_tactical.execution.exit_fill`):
a decision taken at the close of bar ``t`` fills at the open of bar ``t + 1`` with
fees, spread and slippage, exactly like the strategies they are compared with.
Costs are always on; pass ``Costs.zero()`` explicitly to switch them off.

``equity[t]`` is cash plus position marked at the close of bar ``t``; ``equity[0]``
is the starting cash (nothing can fill on the first bar: no decision precedes it).
The rebalancing is *event* based: the account trades only when the target exposure
changes, so a held position is not nudged back to 100 % every bar.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from l2_tactical.backtest.metrics import Trade, TradeFill, round_trips
from l2_tactical.execution import Costs, exit_fill, stop_exit, trade_to_target


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BaselineResult:
    """Outcome of one baseline run (arrays have one value per bar)."""

    name: str
    equity: np.ndarray  # cash + qty * close
    exposure: np.ndarray  # position value / equity at the close
    stops: np.ndarray  # active stop level per bar (NaN when none)
    targets: np.ndarray  # target exposure decided at each bar's close
    fills: tuple[TradeFill, ...]

    def trades(self, mark_price: float | None = None) -> list[Trade]:
        """Round trips; a position still open is included, marked at ``mark_price``, if given."""
        return round_trips(self.fills, mark_price)

    @property
    def fees_paid(self) -> float:
        return float(sum(f.fee for f in self.fills))


def _ohlc(open_: Any, high: Any, low: Any, close: Any) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.ascontiguousarray(a, dtype=np.float64) for a in (open_, high, low, close))
    n = arrays[0].size
    for name, a in zip(("open", "high", "low", "close"), arrays, strict=True):
        if a.ndim != 1 or a.size != n:
            raise ValueError(f"{name}: need 1-D arrays of equal length, got shape {a.shape} (open has {n})")
        if n < 2:
            raise ValueError(f"{name}: need at least 2 bars, got {n}")
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"{name}: prices must be finite and > 0")
    return arrays


def _check_cash(initial_cash: float) -> None:
    if not (math.isfinite(initial_cash) and initial_cash > 0):
        raise ValueError(f"initial_cash={initial_cash!r}: must be a finite number > 0")


def run_target_exposure(
    targets: Any,
    open_: Any,
    high: Any,
    low: Any,
    close: Any,
    costs: Costs,
    *,
    initial_cash: float = 10_000.0,
    stop_loss: float | None = None,
    lot_step: float = 0.0,
    min_notional: float = 0.0,
    name: str = "targets",
    source: str = "baseline",
) -> BaselineResult:
    """Trade a series of target exposures decided at each bar's close (filled next open).

    ``stop_loss`` (a fraction, e.g. 0.05) protects each long entry with a stop that
    far below its fill price; once stopped the account stays flat until the target
    changes again (a fresh signal).
    """
    o, h, lo, c = _ohlc(open_, high, low, close)
    tgt = np.asarray(targets, dtype=np.float64)
    if tgt.shape != o.shape or not np.all(np.isfinite(tgt)):
        raise ValueError(f"targets: need {o.size} finite values, got shape {tgt.shape}")
    if stop_loss is not None and not 0.0 < stop_loss < 1.0:
        raise ValueError(f"stop_loss={stop_loss!r}: must be a fraction in (0, 1)")
    _check_cash(initial_cash)
    n = o.size
    equity, exposure, stops = np.empty(n), np.zeros(n), np.full(n, np.nan)
    equity[0] = initial_cash
    cash, qty, stop, held = float(initial_cash), 0.0, math.nan, 0.0
    fills: list[TradeFill] = []
    for t in range(1, n):
        want = float(tgt[t - 1])
        if want != held:  # the decision of bar t-1 fills at bar t's open
            held = want
            cash, qty, price, paid, traded = trade_to_target(
                cash, qty, want, o[t], h[t], lo[t], costs, lot_step=lot_step, min_notional=min_notional
            )
            if traded != 0:
                fills.append(TradeFill(bar=t, qty=traded, price=price, fee=paid, source=source, reason="signal"))
                stop = price * (1.0 - stop_loss) if stop_loss is not None and qty > 0 else math.nan
        if qty > 0 and not math.isnan(stop):
            stops[t] = stop
            exit_ = _stop_fill(t, qty, stop, o[t], h[t], lo[t], costs, source)
            if exit_ is not None:
                fills.append(exit_)
                cash, qty, stop = cash - exit_.qty * exit_.price - exit_.fee, 0.0, math.nan
        equity[t] = cash + qty * c[t]
        exposure[t] = qty * c[t] / equity[t]
    return BaselineResult(name=name, equity=equity, exposure=exposure, stops=stops, targets=tgt, fills=tuple(fills))


def _stop_fill(
    bar: int, qty: float, stop: float, open_: float, high: float, low: float, costs: Costs, source: str
) -> TradeFill | None:
    """The exit fill of a long ``qty`` whose ``stop`` this bar reaches, else None."""
    hit = stop_exit(1.0, stop, None, open_, high, low)
    if hit is None:
        return None
    f = exit_fill(qty, hit[0], high, low, costs)
    return TradeFill(bar=bar, qty=f.qty, price=f.price, fee=f.fee, source=source, reason=hit[1].value)


def buy_and_hold(
    open_: Any,
    high: Any,
    low: Any,
    close: Any,
    costs: Costs,
    *,
    initial_cash: float = 10_000.0,
    lot_step: float = 0.0,
    min_notional: float = 0.0,
) -> BaselineResult:
    """Decide at the first close to be fully invested; fills at bar 1's open, then holds."""
    o = np.asarray(open_, dtype=np.float64)
    return run_target_exposure(
        np.ones(o.size),
        open_,
        high,
        low,
        close,
        costs,
        initial_cash=initial_cash,
        lot_step=lot_step,
        min_notional=min_notional,
        name="buy_and_hold",
        source="buy_and_hold",
    )


def sma(values: Any, window: int) -> np.ndarray:
    """Simple moving average; NaN for the first ``window - 1`` bars.

    >>> sma([1.0, 2.0, 3.0, 4.0], 2).tolist()
    [nan, 1.5, 2.5, 3.5]
    """
    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.size, np.nan)
    if x.size >= window:
        csum = np.cumsum(np.concatenate(([0.0], x)))
        out[window - 1 :] = (csum[window:] - csum[:-window]) / window
    return out


def sma_cross_targets(close: Any, fast: int, slow: int) -> np.ndarray:
    """1 while SMA(fast) > SMA(slow) at the close, else 0 (and 0 before both exist)."""
    if not (isinstance(fast, int) and isinstance(slow, int) and 1 <= fast < slow):
        raise ValueError(f"fast={fast!r}, slow={slow!r}: need integers with 1 <= fast < slow")
    f, s = sma(close, fast), sma(close, slow)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(s) & (f > s), 1.0, 0.0)


def sma_cross(
    open_: Any,
    high: Any,
    low: Any,
    close: Any,
    costs: Costs,
    *,
    fast: int = 24,
    slow: int = 168,
    initial_cash: float = 10_000.0,
    stop_loss: float | None = None,
    lot_step: float = 0.0,
    min_notional: float = 0.0,
) -> BaselineResult:
    """Long while the fast SMA of the close is above the slow one (spot: flat otherwise)."""
    targets = sma_cross_targets(close, fast, slow)
    return run_target_exposure(
        targets,
        open_,
        high,
        low,
        close,
        costs,
        initial_cash=initial_cash,
        stop_loss=stop_loss,
        lot_step=lot_step,
        min_notional=min_notional,
        name=f"sma_cross_{fast}_{slow}",
        source="sma_cross",
    )
