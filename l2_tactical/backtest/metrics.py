"""Performance metrics: pure functions over an equity curve, its returns and its trades.

Conventions
    * ``equity[t]`` is the account marked to market at the **close** of bar ``t``;
      ``equity[0]`` is the starting capital (before any fill). Bar returns are
      ``equity[t] / equity[t-1] - 1`` (``n - 1`` of them).
    * Ratios are annualised with the number of bars per year of the timeframe.
      Crypto trades 24/7, so a year is 365 days of bars: 8,760 bars on 1h,
      525,600 on 1m (:func:`periods_per_year`). Missing bars (exchange outages)
      are not filled: a return across a gap counts as one bar.
    * Sharpe uses the sample standard deviation (``ddof=1``) and a zero risk-free
      rate; Sortino divides by the downside deviation ``sqrt(mean(min(r, 0)^2))``
      over *all* bars. A zero-variance curve has a ratio of 0 (no information).
    * Drawdowns are positive fractions (0.25 = 25 % below the running peak).
    * A *trade* is a round trip: from a flat position until it is flat again (or
      flips side). Its profit is the sum of its cash flows, fees included.

>>> import numpy as np
>>> max_drawdown(np.array([100.0, 120.0, 90.0, 95.0, 130.0]))
(0.25, 2)
>>> periods_per_year("1h")
8760.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from l2_tactical.data.candle_checks import TIMEFRAMES

_SECONDS_PER_YEAR = 365 * 24 * 3600
_EPS = 1e-12


def periods_per_year(timeframe: str) -> float:
    """Bars in a 365-day year for a timeframe label (``"1h"`` -> 8760)."""
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"timeframe={timeframe!r}: expected one of {', '.join(TIMEFRAMES)}")
    return _SECONDS_PER_YEAR / TIMEFRAMES[timeframe]


def _equity(equity: Any) -> np.ndarray:
    e = np.asarray(equity, dtype=np.float64)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"equity: need a 1-D curve with >= 2 points, got shape {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e <= 0):
        bad = int(np.flatnonzero(~np.isfinite(e) | (e <= 0))[0])
        raise ValueError(f"equity[{bad}]={float(e[bad])!r}: must be finite and > 0")
    return e


# ------------------------------------------------------------------ returns-based


def bar_returns(equity: Any) -> np.ndarray:
    """Simple returns per bar of an equity curve."""
    e = _equity(equity)
    return e[1:] / e[:-1] - 1.0


def total_return(equity: Any) -> float:
    e = _equity(equity)
    return float(e[-1] / e[0] - 1.0)


def annualised_return(equity: Any, periods: float) -> float:
    """Compound annual growth rate over ``len(equity) - 1`` bars."""
    e = _equity(equity)
    years = (e.size - 1) / periods
    return float((e[-1] / e[0]) ** (1.0 / years) - 1.0)


def annualised_volatility(returns: Any, periods: float) -> float:
    r = np.asarray(returns, dtype=np.float64)
    return float(r.std(ddof=1) * math.sqrt(periods)) if r.size > 1 else 0.0


def sharpe_ratio(returns: Any, periods: float = 1.0) -> float:
    """Annualised Sharpe ratio (risk-free 0); ``periods=1`` gives the per-bar ratio."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0
    sd = r.std(ddof=1)
    return 0.0 if sd < _EPS else float(r.mean() / sd * math.sqrt(periods))


def sortino_ratio(returns: Any, periods: float = 1.0) -> float:
    """Annualised Sortino ratio: mean return over the downside deviation (target 0)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    return 0.0 if downside < _EPS else float(r.mean() / downside * math.sqrt(periods))


def drawdown_series(equity: Any) -> np.ndarray:
    """Drawdown at every bar as a positive fraction below the running peak."""
    e = _equity(equity)
    return 1.0 - e / np.maximum.accumulate(e)


def max_drawdown(equity: Any) -> tuple[float, int]:
    """``(depth, duration)``: deepest drawdown and the longest run of consecutive bars below the running peak."""
    dd = drawdown_series(equity)
    under = dd > _EPS
    # length of each run of consecutive True values in ``under``
    edges = np.diff(np.concatenate(([0], under.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    longest = int((ends - starts).max()) if starts.size else 0
    return float(dd.max()), longest


def calmar_ratio(equity: Any, periods: float) -> float:
    """Annualised return over maximum drawdown (0 when there is no drawdown)."""
    depth, _ = max_drawdown(equity)
    return 0.0 if depth < _EPS else annualised_return(equity, periods) / depth


def time_in_market(exposure: Any) -> float:
    """Fraction of bars with a non-zero position (``exposure`` = position value / equity)."""
    x = np.asarray(exposure, dtype=np.float64)
    return float(np.mean(np.abs(x) > 1e-9)) if x.size else 0.0


# --------------------------------------------------------------------- fills, trades


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TradeFill:
    """One executed fill on bar ``bar`` (signed ``qty``: + bought), with who asked for it."""

    bar: int
    qty: float
    price: float
    fee: float
    source: str = ""
    reason: str = ""

    @property
    def notional(self) -> float:
        return abs(self.qty) * self.price


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Trade:
    """A round trip from flat to flat (``exit_bar`` is None while still open, marked to market)."""

    entry_bar: int
    exit_bar: int | None
    side: int  # +1 long, -1 short
    entry_price: float  # volume-weighted price of the fills that built the position
    exit_price: float  # volume-weighted price of the fills that reduced it (or the mark)
    pnl: float  # cash flows of all its fills, fees included (plus the mark if open)
    fees: float
    source: str = ""  # source of the opening fill
    exit_reason: str = ""

    @property
    def return_pct(self) -> float:
        return self.side * (self.exit_price / self.entry_price - 1.0)


def round_trips(fills: Sequence[TradeFill], mark_price: float | None = None) -> list[Trade]:
    """Group fills into round trips; an open position is marked at ``mark_price`` if given."""
    trades: list[Trade] = []
    open_fills: list[TradeFill] = []
    qty = 0.0
    for f in fills:
        if open_fills and qty * (qty + f.qty) < 0:  # flips: split into close + open
            ratio = -qty / f.qty
            close = dataclasses.replace(f, qty=-qty, fee=f.fee * ratio)
            trades.append(_make_trade([*open_fills, close], None))
            f = dataclasses.replace(f, qty=f.qty + qty, fee=f.fee * (1.0 - ratio))
            open_fills, qty = [], 0.0
        open_fills.append(f)
        qty += f.qty
        if abs(qty) <= _EPS * max(1.0, abs(f.qty)):
            trades.append(_make_trade(open_fills, None))
            open_fills, qty = [], 0.0
    if open_fills and mark_price is not None:
        trades.append(_make_trade(open_fills, mark_price))
    return trades


def _make_trade(fills: list[TradeFill], mark: float | None) -> Trade:
    side = 1 if fills[0].qty > 0 else -1
    build = [f for f in fills if f.qty * side > 0]
    reduce = [f for f in fills if f.qty * side < 0]
    left = sum(f.qty for f in fills)
    cash = -sum(f.qty * f.price for f in fills) - sum(f.fee for f in fills)
    if mark is not None:
        cash += left * mark
        reduce = [*reduce, TradeFill(bar=fills[-1].bar, qty=-left, price=mark, fee=0.0)]
    return Trade(
        entry_bar=fills[0].bar,
        exit_bar=None if mark is not None else fills[-1].bar,
        side=side,
        entry_price=_vwap(build),
        exit_price=_vwap(reduce) if reduce else _vwap(build),
        pnl=cash,
        fees=sum(f.fee for f in fills),
        source=fills[0].source,
        exit_reason=fills[-1].reason if mark is None else "open",
    )


def _vwap(fills: list[TradeFill]) -> float:
    q = sum(abs(f.qty) for f in fills)
    return sum(abs(f.qty) * f.price for f in fills) / q if q > 0 else float("nan")


def profit_factor(pnls: Any) -> float:
    """Gross profit over gross loss (inf with no loss, 0 with no trade)."""
    p = np.asarray(pnls, dtype=np.float64)
    gain, loss = p[p > 0].sum(), -p[p < 0].sum()
    if loss <= 0:
        return math.inf if gain > 0 else 0.0
    return float(gain / loss)


def win_rate(pnls: Any) -> float:
    p = np.asarray(pnls, dtype=np.float64)
    return float(np.mean(p > 0)) if p.size else 0.0


def turnover(fills: Sequence[TradeFill], equity: Any) -> float:
    """Traded notional over mean equity (2.0 = bought and sold the whole account once)."""
    return float(sum(f.notional for f in fills) / np.mean(_equity(equity)))


# ------------------------------------------------------------ sources, specialists


def hit_rate_per_source(signals: Mapping[str, Any], forward_returns: Any) -> dict[str, float]:
    """Share of each source's non-zero calls whose sign matched the next bar's return.

    ``signals[name][t]`` is the direction or target exposure the source gave at the
    close of bar ``t``; ``forward_returns[t]`` is the asset's return over the bar the
    call was acted on. Bars where the source was flat (0) or the price did not move
    are not counted; a source with no counted call gets NaN.
    """
    fwd = np.asarray(forward_returns, dtype=np.float64)
    out: dict[str, float] = {}
    for name, sig in signals.items():
        s = np.asarray(sig, dtype=np.float64)
        if s.shape != fwd.shape:
            raise ValueError(f"signals[{name!r}]: shape {s.shape} != forward_returns shape {fwd.shape}")
        called = (s != 0) & (fwd != 0) & np.isfinite(s) & np.isfinite(fwd)
        hits = np.sign(s[called]) == np.sign(fwd[called])
        out[name] = float(hits.mean()) if hits.size else math.nan
    return out


def attribution_per_specialist(contributions: Mapping[str, Any], asset_returns: Any) -> dict[str, float]:
    """Additive return attributed to each specialist.

    ``contributions[name][t]`` is the part of the exposure held over bar ``t`` that
    the specialist asked for (its weight x its target exposure); ``asset_returns[t]``
    is the asset's return over that bar. The attribution is ``sum_t c[t] * r[t]``:
    gross of costs, sizing and risk cuts (those stay in the residual against the
    strategy's own sum of bar returns).
    """
    r = np.asarray(asset_returns, dtype=np.float64)
    out = {}
    for name, c in contributions.items():
        arr = np.asarray(c, dtype=np.float64)
        if arr.shape != r.shape:
            raise ValueError(f"contributions[{name!r}]: shape {arr.shape} != asset_returns shape {r.shape}")
        out[name] = float(np.nansum(arr * r))
    return out


# ------------------------------------------------------------------------- summary


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Metrics:
    """Every headline number of one run (see the module docstring for conventions)."""

    n_bars: int
    periods_per_year: float
    initial_equity: float
    final_equity: float
    total_return: float
    annual_return: float
    annual_volatility: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_bars: int
    n_trades: int
    win_rate: float
    profit_factor: float
    avg_win: float
    avg_loss: float
    turnover: float
    time_in_market: float
    fees_paid: float
    hit_rate_per_source: Mapping[str, float] = dataclasses.field(default_factory=dict)
    attribution: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hit_rate_per_source", MappingProxyType(dict(self.hit_rate_per_source)))
        object.__setattr__(self, "attribution", MappingProxyType(dict(self.attribution)))

    def to_dict(self, *, json_safe: bool = False) -> dict[str, Any]:
        """Plain dict; ``json_safe`` turns inf/NaN (e.g. the profit factor without a loss) into None."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["hit_rate_per_source"] = dict(self.hit_rate_per_source)
        d["attribution"] = dict(self.attribution)
        return _finite_or_none(d) if json_safe else d


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def compute_metrics(
    equity: Any,
    *,
    timeframe: str = "1h",
    fills: Sequence[TradeFill] = (),
    exposure: Any = None,
    mark_price: float | None = None,
    signals: Mapping[str, Any] | None = None,
    forward_returns: Any = None,
    contributions: Mapping[str, Any] | None = None,
    asset_returns: Any = None,
) -> Metrics:
    """All metrics of one run.

    ``fills`` give the trade statistics, turnover and fees; ``exposure`` (position
    value / equity per bar) the time in market; ``signals`` + ``forward_returns``
    the hit rate per source; ``contributions`` + ``asset_returns`` the attribution.
    Parts whose inputs are missing are 0 / empty.
    """
    e = _equity(equity)
    ppy = periods_per_year(timeframe)
    r = e[1:] / e[:-1] - 1.0
    pnls = np.array([t.pnl for t in round_trips(fills, mark_price)], dtype=np.float64)
    depth, duration = max_drawdown(e)
    return Metrics(
        n_bars=int(e.size),
        periods_per_year=ppy,
        initial_equity=float(e[0]),
        final_equity=float(e[-1]),
        total_return=total_return(e),
        annual_return=annualised_return(e, ppy),
        annual_volatility=annualised_volatility(r, ppy),
        sharpe=sharpe_ratio(r, ppy),
        sortino=sortino_ratio(r, ppy),
        calmar=calmar_ratio(e, ppy),
        max_drawdown=depth,
        max_drawdown_bars=duration,
        n_trades=int(pnls.size),
        win_rate=win_rate(pnls),
        profit_factor=profit_factor(pnls),
        avg_win=float(pnls[pnls > 0].mean()) if np.any(pnls > 0) else 0.0,
        avg_loss=float(pnls[pnls < 0].mean()) if np.any(pnls < 0) else 0.0,
        turnover=turnover(fills, e),
        time_in_market=time_in_market(exposure) if exposure is not None else 0.0,
        fees_paid=float(sum(f.fee for f in fills)),
        hit_rate_per_source=hit_rate_per_source(signals, forward_returns) if signals else {},
        attribution=attribution_per_specialist(contributions, asset_returns) if contributions else {},
    )


def summarise(equity: Any, *, json_safe: bool = False, **kwargs: Any) -> dict[str, Any]:
    """:func:`compute_metrics` as a plain dict (``json_safe``: inf/NaN become None)."""
    return compute_metrics(equity, **kwargs).to_dict(json_safe=json_safe)
