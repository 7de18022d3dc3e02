"""Deterministic evaluation of a policy on a window, next to buy-and-hold on the same bars.

How a window is played (one :class:`~envs.trading_env.TradingEnv` per symbol, so every fill,
fee, spread and slippage comes from the one execution simulator, costs on):

* each gap-free segment of the window is one episode, started at its first valid row
  (``options={"start": row}``) and run until the segment ends; the symbols advance in
  lockstep so the policy is asked once per bar for all of them (one batched ``predict``);
* a symbol's equity curve chains the bar-to-bar equity ratios of its episodes, so it is a
  normalised curve (1.0 at the start) over the rows of the window; rows the agent cannot
  trade (the first ``window - 1`` rows, feature warm-up after a gap) are flat;
* the portfolio is an equal-weight sum of the symbols' sub-accounts, never rebalanced,
  aligned on the union of their bar times (a missing bar carries the last equity).

Card metrics (:class:`~l2_tactical.finrl_models.model_card.Metrics`): total return, Sharpe,
Sortino and max drawdown of the portfolio curve (:func:`~l2_tactical.backtest.metrics.compute_metrics`,
annualised on the timeframe); hit rate = fraction of round trips (fees included, open ones
marked at the segment's last close) with a positive profit, pooled over symbols; turnover =
sum over fills of traded notional / the account's equity before the fill, averaged over the
symbols (2.0 = the whole account bought and sold once).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from envs.market_data import MarketData
from envs.trading_env import TradingEnv
from l2_tactical.backtest.baselines import buy_and_hold
from l2_tactical.backtest.metrics import TradeFill, compute_metrics, round_trips
from l2_tactical.execution import Costs
from l2_tactical.finrl_models.model_card import Metrics, WindowMetrics

Predict = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SymbolRun:
    """One symbol's account over the rows of a window."""

    symbol: str
    timestamps: np.ndarray  # int64 ns, one per row
    equity: np.ndarray  # normalised (1.0 before the first fill), one per row
    turnover: float
    trade_pnls: np.ndarray
    first_decision: int  # row of the first decision (episodes start here)


@dataclasses.dataclass
class _Recorder:
    n: int
    growth: np.ndarray = dataclasses.field(init=False)
    turnover: float = 0.0
    pnls: list[float] = dataclasses.field(default_factory=list)
    fills: list[TradeFill] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.growth = np.ones(self.n)

    def record(self, info: dict[str, Any], prev_equity: float) -> None:
        t = int(info["t"])
        self.growth[t] = max(float(info["equity"]), 1e-12) / prev_equity
        traded = float(info["traded"])
        if traded != 0.0:
            self.turnover += abs(traded) * float(info["price"]) / prev_equity
            self.fills.append(TradeFill(bar=t, qty=traded, price=float(info["price"]), fee=float(info["fee"])))

    def close_segment(self, mark: float) -> None:
        self.pnls.extend(trade.pnl for trade in round_trips(self.fills, mark))
        self.fills = []


def segment_starts(env: TradingEnv) -> list[int]:
    """The first valid episode start of every segment of the env's MarketData, in time order."""
    starts = env.data.episode_starts(env.params.window, env.params.min_episode_steps)
    firsts = []
    for s, e in env.data.segments:
        i = int(np.searchsorted(starts, s))
        if i < len(starts) and starts[i] < e:
            firsts.append(int(starts[i]))
    return firsts


def _env_action(action: np.ndarray, discrete: bool) -> Any:
    if discrete:
        return int(np.asarray(action).reshape(-1)[0])
    return np.asarray(action, dtype=np.float64).reshape(1)


def run_policy(
    mds: Sequence[MarketData],
    predict: Predict,
    *,
    config: Any,
    specialist: str,
    env_kwargs: dict[str, Any] | None = None,
) -> list[SymbolRun]:
    """Play ``predict`` (batch of observations -> batch of actions) on every symbol's window."""
    envs = [TradingEnv(md, config, specialist=specialist, **(env_kwargs or {})) for md in mds]
    discrete = envs[0].action_space.shape == ()
    pending = [segment_starts(env) for env in envs]
    recs = [_Recorder(len(md)) for md in mds]
    firsts = [p[0] if p else len(md) for p, md in zip(pending, mds, strict=True)]
    obs: dict[int, np.ndarray] = {}
    for i in range(len(envs)):
        _next_episode(envs[i], pending[i], obs, i)
    while obs:
        idx = sorted(obs)
        actions = predict(np.stack([obs[i] for i in idx]))
        for k, i in enumerate(idx):
            env, prev = envs[i], envs[i].equity
            o, _, terminated, truncated, info = env.step(_env_action(actions[k], discrete))
            recs[i].record(info, prev)
            if terminated or truncated:
                recs[i].close_segment(float(env.data.close[env.t]))
                del obs[i]
                _next_episode(env, pending[i], obs, i)
            else:
                obs[i] = o
    return [
        SymbolRun(
            symbol=md.symbol,
            timestamps=np.asarray(md.timestamps),
            equity=np.cumprod(rec.growth),
            turnover=rec.turnover,
            trade_pnls=np.asarray(rec.pnls, dtype=np.float64),
            first_decision=f,
        )
        for md, rec, f in zip(mds, recs, firsts, strict=True)
    ]


def _next_episode(env: TradingEnv, pending: list[int], obs: dict[int, np.ndarray], i: int) -> None:
    if pending:
        obs[i], _ = env.reset(options={"start": pending.pop(0)})


def buy_and_hold_runs(mds: Sequence[MarketData], config: Any, first_decisions: Sequence[int]) -> list[SymbolRun]:
    """Buy-and-hold through the execution simulator, deciding at the agent's first decision row."""
    costs = Costs.from_config(config.execution)
    runs = []
    for md, first in zip(mds, first_decisions, strict=True):
        limits = config.symbols.get(md.symbol)
        lo = min(first, len(md) - 2)
        result = buy_and_hold(
            md.open[lo:],
            md.high[lo:],
            md.low[lo:],
            md.close[lo:],
            costs,
            initial_cash=float(config.execution.initial_cash),
            lot_step=float(limits.lot_step) if limits else 0.0,
            min_notional=float(limits.min_notional) if limits else 0.0,
        )
        equity = np.ones(len(md))
        equity[lo:] = result.equity / result.equity[0]
        cash = result.equity
        turnover = sum(abs(f.qty) * f.price / cash[f.bar - 1] for f in result.fills)
        pnls = np.asarray([t.pnl for t in result.trades(float(md.close[-1]))], dtype=np.float64)
        runs.append(
            SymbolRun(
                symbol=md.symbol,
                timestamps=np.asarray(md.timestamps),
                equity=equity,
                turnover=float(turnover),
                trade_pnls=pnls,
                first_decision=lo,
            )
        )
    return runs


def portfolio_equity(runs: Sequence[SymbolRun]) -> tuple[np.ndarray, np.ndarray]:
    """``(timestamps, equity)`` of the equal-weight sum of the runs on the union of their bar times."""
    union = np.unique(np.concatenate([r.timestamps for r in runs]))
    curves = []
    for r in runs:
        j = np.searchsorted(r.timestamps, union, side="right") - 1
        curves.append(np.where(j >= 0, r.equity[np.clip(j, 0, None)], 1.0))
    return union, np.mean(curves, axis=0)


def card_metrics(runs: Sequence[SymbolRun], timeframe: str) -> Metrics:
    """The model card's metrics of the equal-weight portfolio of ``runs`` (see the module docstring)."""
    _, equity = portfolio_equity(runs)
    m = compute_metrics(equity, timeframe=timeframe)
    pnls = np.concatenate([r.trade_pnls for r in runs])
    hit = float(np.mean(pnls > 0)) if pnls.size else 0.0
    return Metrics(
        total_return=m.total_return,
        sharpe=m.sharpe,
        sortino=m.sortino,
        max_drawdown=m.max_drawdown,
        hit_rate=hit,
        turnover=float(np.mean([r.turnover for r in runs])),
    )


def evaluate_window(
    mds: Sequence[MarketData],
    predict: Predict,
    *,
    config: Any,
    specialist: str,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[WindowMetrics, dict[str, Any]]:
    """The agent next to buy-and-hold on one window: portfolio metrics and per-symbol ones."""
    agent = run_policy(mds, predict, config=config, specialist=specialist, env_kwargs=env_kwargs)
    bh = buy_and_hold_runs(mds, config, [r.first_decision for r in agent])
    timeframe = mds[0].timeframe
    per_symbol = {
        a.symbol: {
            "agent": dataclasses.asdict(card_metrics([a], timeframe)),
            "buy_and_hold": dataclasses.asdict(card_metrics([b], timeframe)),
        }
        for a, b in zip(agent, bh, strict=True)
    }
    return WindowMetrics(agent=card_metrics(agent, timeframe), buy_and_hold=card_metrics(bh, timeframe)), per_symbol


def sb3_predict(model: Any) -> Predict:
    """A deterministic batch predict of an SB3 model."""

    def predict(obs: np.ndarray) -> np.ndarray:
        action, _ = model.predict(obs, deterministic=True)
        return np.asarray(action)

    return predict
