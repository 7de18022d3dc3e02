"""TradingEnv: one account trading one symbol over precomputed MarketData.

Timing (DESIGN.md rule 2)
    The agent observes bar ``t`` (features computed from candles closed at or before
    ``t``). Its action is a target exposure; the order fills on bar ``t + 1`` at the
    open through :func:`l2_tactical.execution.trade_to_target` (fees, spread, slippage,
    lot step, min notional: all there, none here). Equity is then marked at bar
    ``t + 1``'s close, which is the next observation.

Observation (flat float32 Box, bounds from the FeatureSet)
    ``window`` FeatureSet rows ending at ``t`` (oldest first), then the position
    state: exposure (position value / equity, clipped to [-3, 3]), unrealised PnL of
    the open position (equity / equity when it was opened - 1, clipped to [-1, 5]),
    bars in position scaled to ``b / (b + holding_scale_bars)`` in [0, 1), drawdown
    from the episode's equity peak in [0, 1].

Actions
    ``discrete3`` Discrete(3) short/flat/long, ``discrete5`` Discrete(5) adds half
    positions, ``continuous`` Box(-1, 1) target exposure. Spot mode (default) treats
    short as flat; ``margin=True`` allows shorts and charges
    :func:`l2_tactical.execution.borrow_cost` every bar a short is held. A NaN or
    out-of-space action raises ValueError; nothing is clipped silently.

Episodes
    Start at a seeded random row of a contiguous segment (``self.np_random`` only)
    or at ``options={"start": row}``; terminate when equity <= 0; truncate when the
    segment ends (the next bar is missing). The episode length is the registered
    ``max_episode_steps`` (gymnasium's TimeLimit), not the env's business.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np

from envs.market_data import MarketData, as_market_data
from envs.rewards import SCALAR_MATH, RewardSpec, step_reward
from envs.specialists import ACTION_MODES, check_action_mode, get_specialist
from l2_tactical.config import L2Config
from l2_tactical.execution import SCALAR, Costs, borrow_cost, trade_to_target

#: annual borrow rate of the base asset for shorts in margin mode (request: config execution.borrow_rate_annual)
DEFAULT_BORROW_RATE_ANNUAL = 0.05
STATE_NAMES = ("exposure", "unrealised_pnl", "bars_in_position", "drawdown")
STATE_LOW = (-3.0, -1.0, 0.0, 0.0)
STATE_HIGH = (3.0, 5.0, 1.0, 1.0)
_YEAR_SECONDS = 365.0 * 86400.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnvParams:
    """Everything the accounting needs; shared by TradingEnv and TradingVecEnv."""

    costs: Costs
    initial_cash: float
    lot_step: float
    min_notional: float
    allow_short: bool
    borrow_rate: float        # per bar
    window: int
    holding_scale_bars: float
    reward: RewardSpec
    action_mode: str
    min_episode_steps: int = 2


def make_params(data: MarketData, config: L2Config | None, *, action_mode: str, margin: bool, window: int,
                reward: RewardSpec, borrow_rate_annual: float = DEFAULT_BORROW_RATE_ANNUAL,
                holding_scale_bars: float = 24.0) -> EnvParams:
    """EnvParams from the config's execution section and the symbol's exchange filters."""
    cfg = config if config is not None else L2Config.default()
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window={window!r}: must be an int >= 1")
    if not (math.isfinite(borrow_rate_annual) and borrow_rate_annual >= 0):
        raise ValueError(f"borrow_rate_annual={borrow_rate_annual!r}: must be a finite number >= 0")
    if not (math.isfinite(holding_scale_bars) and holding_scale_bars > 0):
        raise ValueError(f"holding_scale_bars={holding_scale_bars!r}: must be a finite number > 0")
    limits = cfg.symbols.get(data.symbol)
    return EnvParams(
        costs=Costs.from_config(cfg.execution), initial_cash=float(cfg.execution.initial_cash),
        lot_step=float(limits.lot_step) if limits else 0.0, min_notional=float(limits.min_notional) if limits else 0.0,
        allow_short=bool(margin), borrow_rate=borrow_rate_annual * data.bar_seconds / _YEAR_SECONDS,
        window=window, holding_scale_bars=float(holding_scale_bars), reward=reward,
        action_mode=check_action_mode(action_mode),
    )


def account_step(p: EnvParams, cash: Any, qty: Any, bars: Any, entry: Any, peak: Any, prev_equity: Any,
                 prev_dd: Any, mean: Any, second: Any, target: Any, o: Any, h: Any, lo: Any, c: Any,
                 ops: Any = SCALAR, rops: Any = SCALAR_MATH) -> tuple[Any, ...]:
    """One bar of accounting: fill at ``o/h/lo`` (the next bar), mark at ``c``, reward. Pure.

    The reference form, on floats or (``ops=np``-like) arrays. ``TradingEnv.step`` writes the same
    lines out on floats and ``TradingVecEnv._account`` with in-place ``out=`` ufuncs (fills through
    :class:`l2_tactical.execution.BatchTrader`), both for speed; the VecEnv equality test holds
    the two together.

    Returns ``(cash, qty, price, fee, traded, bars, entry, peak, equity, drawdown, reward, mean, second)``.
    """
    cash, new_qty, price, paid, traded = trade_to_target(cash, qty, target, o, h, lo, p.costs, lot_step=p.lot_step,
                                                    min_notional=p.min_notional, allow_short=p.allow_short, ops=ops)
    if p.allow_short and p.borrow_rate:
        cash = cash - borrow_cost(new_qty, c, p.borrow_rate, ops)
    equity = cash + new_qty * c
    held = new_qty * qty > 0.0
    bars = ops.where(new_qty == 0.0, 0.0, ops.where(held, bars + 1.0, 1.0))
    entry = ops.where(held, entry, prev_equity)
    peak = ops.maximum(peak, equity)
    dd = 1.0 - equity / peak
    reward, mean, second = step_reward(p.reward, prev_equity, equity, prev_dd, dd, bars, mean, second, rops)
    return cash, new_qty, price, paid, traded, bars, entry, peak, equity, dd, reward, mean, second


def position_state(qty: float, c: float, equity: float, entry: float, bars: float, dd: float,
                   holding_scale_bars: float) -> tuple[float, float, float, float]:
    """The four position-state observations of one account (see the module docstring), clipped
    into their bounds. TradingVecEnv computes the same numbers on arrays (``_observe``)."""
    lo, hi = STATE_LOW, STATE_HIGH
    exposure = qty * c / equity if equity > 0.0 else 0.0
    upnl = equity / entry - 1.0 if bars > 0.0 else 0.0
    return (lo[0] if exposure < lo[0] else hi[0] if exposure > hi[0] else exposure,
            lo[1] if upnl < lo[1] else hi[1] if upnl > hi[1] else upnl,
            bars / (bars + holding_scale_bars),
            lo[3] if dd < lo[3] else hi[3] if dd > hi[3] else dd)


def padded_features(data: MarketData, window: int) -> np.ndarray:
    """The feature rows as one flat float32 buffer with ``window - 1`` zero rows in front and 4 zeros behind,
    so that ``buffer[t * k : t * k + window * k + 4]`` is the observation of bar ``t`` (its feature window,
    oldest first) followed by 4 spare floats for the position state: one slice, one copy."""
    k = data.n_features
    return np.concatenate([np.zeros((window - 1) * k, np.float32), data.features.reshape(-1), np.zeros(4, np.float32)])


def action_space_for(mode: str) -> gym.spaces.Space[Any]:
    table = ACTION_MODES[check_action_mode(mode)]
    if table is None:
        return gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    return gym.spaces.Discrete(len(table))


def observation_space_for(data: MarketData, window: int) -> gym.spaces.Box:
    low = np.concatenate([np.tile(data.feature_low, window), np.asarray(STATE_LOW, np.float32)])
    high = np.concatenate([np.tile(data.feature_high, window), np.asarray(STATE_HIGH, np.float32)])
    return gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)


def bad_action(action: Any, space: gym.spaces.Space[Any]) -> ValueError:
    """The error for an action outside ``space`` (NaN named as such)."""
    arr = np.asarray(action) if not isinstance(action, (str, bytes)) else None
    if arr is not None and arr.dtype.kind == "f" and np.isnan(arr).any():
        return ValueError(f"action {action!r} is NaN; expected an element of {space}")
    return ValueError(f"action {action!r} is outside the action space {space}")


class TradingEnv(gym.Env[np.ndarray, Any]):
    """See the module docstring. ``gymnasium.make("L2Trend-v0", data=..., config=...)`` builds one."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)
    _t: int
    _cash: float
    _qty: float
    _equity: float
    _peak: float
    _entry: float
    _bars: float
    _dd: float
    _mean: float
    _second: float

    def __init__(self, data: Any, config: L2Config | None = None, *, specialist: str = "trend",
                 action_mode: str | None = None, margin: bool = False, window: int | None = None,
                 reward: RewardSpec | None = None, borrow_rate_annual: float = DEFAULT_BORROW_RATE_ANNUAL,
                 holding_scale_bars: float = 24.0, render_mode: str | None = None) -> None:
        spec = get_specialist(specialist)
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r}: this env does not render (render_modes=[])")
        self.data = as_market_data(data, spec.feature_set)
        self.params = make_params(self.data, config, action_mode=action_mode or spec.action_mode,
                                  margin=margin, window=window or spec.window, reward=reward or spec.reward,
                                  borrow_rate_annual=borrow_rate_annual, holding_scale_bars=holding_scale_bars)
        self.specialist = spec.name
        self.action_space = action_space_for(self.params.action_mode)
        self.observation_space = observation_space_for(self.data, self.params.window)
        self._table = ACTION_MODES[self.params.action_mode]
        self._starts = self.data.episode_starts(self.params.window, self.params.min_episode_steps)
        self._seg_end = self.data.segment_end().tolist()
        self._o, self._h, self._l, self._c = (a.tolist() for a in (self.data.open, self.data.high,
                                                                     self.data.low, self.data.close))
        self._padded = padded_features(self.data, self.params.window)
        self._k = self.data.n_features
        self._n_obs = int(self.observation_space.shape[0])
        self._wk = self.params.window * self._k
        self._set_account(int(self._starts[0]))

    # ----------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        start = None if options is None else options.get("start")
        if start is None:
            start = int(self._starts[int(self.np_random.integers(len(self._starts)))])
        else:
            start = self._checked_start(start)
        self._set_account(start)
        return self._observation(), {"t": start, "equity": self._equity}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # account_step() written out on floats (same formulas; TradingVecEnv writes them in place on
        # arrays and tests/test_envs_vec.py proves the two agree): this is the hot path.
        target = self._target(action)
        p, t, qty = self.params, self._t + 1, self._qty
        c, prev_equity = self._c[t], self._equity
        cash, new_qty, price, paid, traded = trade_to_target(
            self._cash, qty, target, self._o[t], self._h[t], self._l[t], p.costs, lot_step=p.lot_step,
            min_notional=p.min_notional, allow_short=p.allow_short)
        if p.allow_short and p.borrow_rate:
            cash -= borrow_cost(new_qty, c, p.borrow_rate)
        equity = cash + new_qty * c
        if new_qty * qty > 0.0:
            self._bars += 1.0
        else:
            self._bars, self._entry = (0.0 if new_qty == 0.0 else 1.0), prev_equity
        peak = self._peak = equity if equity > self._peak else self._peak
        prev_dd, self._dd = self._dd, 1.0 - equity / peak
        reward, self._mean, self._second = step_reward(p.reward, prev_equity, equity, prev_dd, self._dd, self._bars,
                                                       self._mean, self._second)
        self._cash, self._qty, self._equity, self._t = cash, new_qty, equity, t
        info = {"t": t, "equity": equity, "cash": cash, "qty": new_qty, "price": price, "fee": paid, "traded": traded}
        return self._observation(), reward, equity <= 0.0, t + 1 >= self._seg_end[t], info

    # ----------------------------------------------------------------- state access
    @property
    def t(self) -> int:
        """Row of the bar just closed (the last row of the observation's window)."""
        return self._t

    @property
    def cash(self) -> float:
        return self._cash

    @property
    def qty(self) -> float:
        return self._qty

    @property
    def equity(self) -> float:
        """Cash plus position value marked at bar ``t``'s close."""
        return self._equity

    # ----------------------------------------------------------------- internals
    def _set_account(self, start: int) -> None:
        cash = self.params.initial_cash
        self._t, self._cash, self._qty, self._equity, self._peak, self._entry = start, cash, 0.0, cash, cash, cash
        self._bars = self._dd = self._mean = self._second = 0.0

    def _checked_start(self, start: Any) -> int:
        i = int(np.searchsorted(self._starts, start))
        if isinstance(start, bool) or i >= len(self._starts) or self._starts[i] != start:
            lo, hi = int(self._starts[0]), int(self._starts[-1])
            raise ValueError(f"options['start']={start!r}: not a valid episode start (a segment row with "
                             f"{self.params.window} ready rows before it and a next bar; range {lo}..{hi})")
        return int(start)

    def _target(self, action: Any) -> float:
        table = self._table
        if table is not None:
            if isinstance(action, (int, np.integer)) and not isinstance(action, bool) and 0 <= action < len(table):
                return table[action]
            if isinstance(action, np.ndarray) and action.shape in ((), (1,)) and action.dtype.kind in "iu":
                return self._target(action.reshape(-1)[0])
            raise bad_action(action, self.action_space)
        if type(action) is np.ndarray and action.shape == (1,):
            v = float(action[0])
        elif isinstance(action, (float, int, np.floating)) and not isinstance(action, bool):
            v = float(action)
        else:
            raise bad_action(action, self.action_space)
        if -1.0 <= v <= 1.0:
            return v
        raise bad_action(action, self.action_space)

    def _observation(self) -> np.ndarray:
        t, k, wk = self._t, self._k, self._wk
        start = t * k
        obs = self._padded[start:start + self._n_obs].copy()  # the window, then 4 floats overwritten below
        e, u, b, d = position_state(self._qty, self._c[t], self._equity, self._entry, self._bars, self._dd,
                                    self.params.holding_scale_bars)
        obs[wk], obs[wk + 1], obs[wk + 2], obs[wk + 3] = e, u, b, d
        return obs


class _NumpyOps:
    """numpy's ufuncs under the names :mod:`l2_tactical.execution` and :mod:`envs.rewards` use.

    Identical results to passing ``ops=np``; only ``clip`` is spelled ``minimum(maximum(x, lo), hi)``
    (its definition for ``lo <= hi``), which skips ``np.clip``'s Python-level dispatch (~2 us a call).
    """

    where = staticmethod(np.where)
    abs = staticmethod(np.abs)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    floor = staticmethod(np.floor)
    logical_and = staticmethod(np.logical_and)
    logical_not = staticmethod(np.logical_not)
    log = staticmethod(np.log)
    sqrt = staticmethod(np.sqrt)

    @staticmethod
    def clip(x: Any, lo: Any, hi: Any) -> Any:
        return np.minimum(np.maximum(x, lo), hi)


NUMPY_OPS = _NumpyOps()
