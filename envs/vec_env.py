"""TradingVecEnv: N trading accounts advanced by one set of batched numpy operations.

A stable-baselines3 ``VecEnv`` (the only module of :mod:`envs` that imports SB3). Every
step advances the N accounts with one set of numpy operations on preallocated arrays,
not N Python envs in a loop: the fill through
:class:`l2_tactical.execution.BatchTrader` (``trade_to_target``'s formulas, operation for
operation, with the per-bar fill prices of :func:`~l2_tactical.execution.bar_prices`
computed once), then :func:`envs.trading_env.account_step`'s marking and bookkeeping
written out with ``out=`` ufuncs, the reward of :func:`envs.rewards.step_reward` (as
:class:`envs.rewards.BatchReward`) and the observations (one gather of each env's feature
window from a strided view, then the position state of
:func:`envs.trading_env.position_state` on arrays). Only the envs whose episode ended this
step are touched one by one (their reset draws a new start from their own generator).

Speed notes (the batched step is ~45 numpy calls besides the fill's ~30, so the cost is the
number of calls, not the arithmetic): every per-env float lives in one row of one
preallocated block (few cache lines), constants are arrays (a Python scalar operand costs a
conversion per call), no call allocates except the returned arrays, no ``np.where``, and
whether any episode ends is a Python countdown instead of a comparison per step. Inside
SB3's ``learn`` every numpy call of the step runs with caches that torch's update has just
evicted (~1 µs a call instead of ~0.3), which is why fewer and plainer calls matter twice.

Semantics, per env ``i``, equal those of ``gymnasium.make(id, ...)`` reset with
``seed + i`` and then auto-reset by SB3's DummyVecEnv:

* ``dones[i] = terminated or truncated`` (truncated: the segment ends, or the
  episode reached ``max_episode_steps``);
* a done env's ``infos[i]`` holds ``terminal_observation`` and ``TimeLimit.truncated``,
  and the returned observation is the first of its next episode;
* ``seed(s)`` seeds env ``i`` with ``s + i`` at the next ``reset()``; reset options
  (``set_options``) accept ``{"start": row}``.

Rewards are float32 (as in DummyVecEnv); infos of envs that did not finish are empty
dicts (the per-step accounting of env ``i`` is in ``cash``, ``qty``, ``equity``, ``t``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.rewards import BatchReward
from envs.specialists import get_specialist
from envs.trading_env import NUMPY_OPS, STATE_HIGH, STATE_LOW, TradingEnv, position_state
from l2_tactical.execution import BatchTrader, bar_prices, borrow_cost

_add, _sub, _mul, _div, _copyto = np.add, np.subtract, np.multiply, np.divide, np.copyto


class TradingVecEnv(VecEnv):
    """``num_envs`` TradingEnvs of one specialist on one MarketData, stepped in batch.

    Takes the TradingEnv keyword arguments (``specialist``, ``action_mode``, ``margin``,
    ``window``, ``reward``, ...) plus ``num_envs`` and ``max_episode_steps`` (default:
    the specialist's registered length).
    """

    #: the array namespace handed to the shared formulas (numpy's ufuncs; see trading_env.NUMPY_OPS)
    ops: Any = NUMPY_OPS

    def __init__(self, data: Any, config: Any = None, *, num_envs: int = 8, max_episode_steps: int | None = None,
                 seed: int | None = None, **env_kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}: must be an int >= 1")
        self.proto = TradingEnv(data, config, **env_kwargs)
        spec = get_specialist(self.proto.specialist)
        self.max_episode_steps = int(max_episode_steps or spec.max_episode_steps)
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={max_episode_steps!r}: must be >= 1")
        self.params = self.proto.params
        self.data = self.proto.data
        super().__init__(num_envs, self.proto.observation_space, self.proto.action_space)
        self._setup_market(num_envs)
        self._setup_accounts(num_envs)
        if seed is not None:
            self.seed(seed)

    def _setup_market(self, n: int) -> None:
        d, p, k = self.data, self.params, self.data.n_features
        self._wk = p.window * k
        # row t of this view: the window of feature rows t-window+1..t, then 4 spare floats that the
        # position state overwrites (trading_env.padded_features: every row inside the buffer)
        padded = self.proto._padded
        self._windows = np.lib.stride_tricks.sliding_window_view(padded, self._wk + 4)[::k]
        # the same rows as single opaque items (overlapping, 4 * k bytes apart): numpy gathers each with one
        # memcpy, faster than indexing the strided view element by element; bounds checked by np.ndarray
        self._window_items = np.ndarray(shape=(len(d),), dtype=np.dtype((np.void, 4 * (self._wk + 4))),
                                        buffer=padded, strides=(4 * k,))
        self._seg_end = d.segment_end()
        self._starts = d.episode_starts(p.window, p.min_episode_steps)
        self._trader = BatchTrader(n, p.costs, lot_step=p.lot_step, min_notional=p.min_notional,
                                   allow_short=p.allow_short)
        # per bar: open, buy cost per unit, buy / sell fill prices (execution.bar_prices), then the close
        self._bar_table = np.ascontiguousarray(np.vstack([bar_prices(d.open, d.high, d.low, p.costs), d.close]))
        # one observation row per gathered item, as float32 [window * k + 4] (a view, no copy)
        self._obs_dtype = np.dtype((np.float32, (self._wk + 4,)))
        table = self.proto._table
        self._table = None if table is None else self._trader.clip_target(np.asarray(table, dtype=np.float64))
        self._n_table = np.full(n, 0 if table is None else len(table), dtype=np.uint64)

    def _setup_accounts(self, n: int) -> None:
        p = self.params
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._t = np.zeros(n, dtype=np.int64)
        self._one_i = np.ones(n, dtype=np.int64)
        # last row of each env's episode: max_episode_steps after its start, or its segment's last bar
        self._deadline = np.zeros(n, dtype=np.int64)
        # steps until the first env reaches its deadline (min(deadline - t)): no per-step comparison while > 0
        self._left = 0
        # every float64 per-env quantity is one row of one zeroed block; qty, equity and the state are
        # double-buffered (the step needs this bar's and the previous bar's values; swapped, never copied)
        block = np.zeros((34, n))
        (self._cash, self._qty, self._qty_next, self._equity, self._equity_next, self._entry, self._peak,
         self._bars, self._mean, self._second, self._zero, self._one, self._holding, self._qc, self._tmp,
         self._target, self._reward_out) = block[:17]
        # per bar of each env: open, buy cost per unit, buy / sell fill prices, close (from _bar_table)
        self._rows, self._close_row = block[17:22], block[21]
        # the observed position state: exposure, unrealised PnL, bars held (scaled), drawdown; row 3 is also the
        # drawdown carried to the next step. Each buffer with its first two rows (the clipped ones) and its rows
        self._st, self._st_next = ((s, s[:2], tuple(s)) for s in (block[22:26], block[26:30]))
        self._state_low, self._state_high = block[30:32], block[32:34]
        for rows, bounds in ((self._state_low, STATE_LOW), (self._state_high, STATE_HIGH)):
            rows[0], rows[1] = bounds[0], bounds[1]
        for row, value in ((self._one, 1.0), (self._holding, p.holding_scale_bars), (self._cash, p.initial_cash),
                           (self._equity, p.initial_cash), (self._equity_next, p.initial_cash),
                           (self._entry, p.initial_cash), (self._peak, p.initial_cash)):
            row.fill(value)
        self._reward = BatchReward(p.reward, n)
        self._borrow = p.allow_short and bool(p.borrow_rate)
        self._mask = [np.empty(n, dtype=bool) for _ in range(2)]
        self._actions: np.ndarray | None = None
        # n fresh empty info dicts per step; a list display of n "{}" builds them ~25 % faster than a loop
        self._new_infos: Callable[[], list[dict[str, Any]]] = eval("lambda: [" + "{}, " * n + "]")

    # ----------------------------------------------------------------- VecEnv API
    def reset(self) -> VecEnvObs:
        for i in range(self.num_envs):
            if self._seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(self._seeds[i])
            self._reset_env(i, self._options[i].get("start"))
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{"t": int(self._t[i]), "equity": float(self._equity[i])} for i in range(self.num_envs)]
        self._left = int(np.min(self._deadline - self._t))
        self._qc.fill(0.0)  # position value qty * close: no position after a reset
        return self._observe(0, np.equal(self._bars, self._zero, self._mask[1]))

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        actions, self._actions = self._actions, None
        return self.step(actions)

    def step(self, actions: np.ndarray) -> VecEnvStepReturn:
        """step_async + step_wait in one call (what SB3's algorithms call)."""
        reward = self._account(self._targets(actions))
        ruined = int(np.count_nonzero(np.less_equal(self._equity, self._zero, self._mask[0])))
        self._left -= 1
        ended = self._left <= 0  # then some env is at its deadline
        dones = np.greater_equal(self._t, self._deadline) if ended else np.zeros(self.num_envs, dtype=bool)
        obs = self._observe(ruined, self._mask[1])  # (the flat envs, from _account)
        infos = self._new_infos()
        if ruined or ended:
            self._end_episodes(obs, dones, infos)
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.proto.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        idx = list(self._get_indices(indices))
        if attr_name in ("cash", "qty", "equity"):
            values = getattr(self, "_" + attr_name)
            return [float(values[i]) for i in idx]
        if attr_name == "t":
            return [int(self._t[i]) for i in idx]
        return [getattr(self.proto, attr_name)] * len(idx)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"set_attr({attr_name!r}): the envs of a TradingVecEnv share one configuration; "
                             "build a new TradingVecEnv instead")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        raise AttributeError(f"env_method({method_name!r}): a TradingVecEnv has no per-env Python objects")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))

    # ----------------------------------------------------------------- state access
    @property
    def t(self) -> np.ndarray:
        return self._t.copy()

    @property
    def equity(self) -> np.ndarray:
        return self._equity.copy()

    @property
    def _state(self) -> np.ndarray:
        """The position state [4, n] of the last observation (row 3: the drawdown the next reward compares to)."""
        return self._st[0]  # type: ignore[no-any-return]

    # ----------------------------------------------------------------- internals
    def _reset_env(self, i: int, start: Any) -> None:
        rng = self._rngs[i]
        if rng is None:
            rng = self._rngs[i] = seeding.np_random(None)[0]
        if start is None:
            start = int(self._starts[int(rng.integers(len(self._starts)))])
        else:
            start = self.proto._checked_start(start)
        self._t[i] = start
        self._deadline[i] = min(start + self.max_episode_steps, int(self._seg_end[start]) - 1)
        cash = self.params.initial_cash
        for values, value in ((self._cash, cash), (self._qty, 0.0), (self._bars, 0.0), (self._entry, cash),
                              (self._peak, cash), (self._equity, cash), (self._st[2][3], 0.0), (self._mean, 0.0),
                              (self._second, 0.0)):
            values[i] = value

    def _account(self, target: np.ndarray) -> np.ndarray:
        """One bar for every env: account_step's formulas on arrays, in place. Returns the rewards (float64)."""
        t, rows, zero, one = self._t, self._rows, self._zero, self._one
        _add(t, self._one_i, t)
        self._bar_table.take(t, axis=1, out=rows, mode="clip")  # (t < len(data) by construction: no check)
        cash, qty, new_qty, c, qc = self._cash, self._qty, self._qty_next, self._close_row, self._qc
        self._trader.trade(cash, qty, target, rows, cash, new_qty)
        if self._borrow:
            _sub(cash, borrow_cost(new_qty, c, self.params.borrow_rate, NUMPY_OPS), cash)
        prev_equity, equity = self._equity, self._equity_next
        _add(cash, _mul(new_qty, c, qc), equity)  # qc = the position value, kept for the exposure
        not_held = np.less_equal(_mul(new_qty, qty, self._tmp), zero, self._mask[0])
        bars = self._bars
        _add(bars, one, bars)
        _copyto(bars, one, where=not_held)
        _copyto(bars, zero, where=np.equal(new_qty, zero, self._mask[1]))
        _copyto(self._entry, prev_equity, where=not_held)
        peak, st = self._peak, self._st_next
        dd = st[2][3]
        np.maximum(peak, equity, out=peak)
        _sub(one, _div(equity, peak, dd), dd)
        reward = self._reward(prev_equity, equity, self._st[2][3], dd, bars, self._mean, self._second,
                              self._reward_out)
        self._qty, self._qty_next, self._equity, self._equity_next = new_qty, qty, equity, prev_equity
        self._st, self._st_next = st, self._st
        return reward

    def _observe(self, ruined: int, flat: np.ndarray) -> np.ndarray:
        """Observations of all envs: trading_env.position_state on arrays (same formulas and clipping)
        after each env's feature window. ``ruined``: how many envs have equity <= 0 (their exposure is 0);
        ``flat``: the envs without a position (bars held == 0). The exposure's numerator is ``_qc``."""
        # a fresh [n, window*k + 4] float32 array: the windows, then 4 columns the position state overwrites
        obs = self._window_items[self._t].view(self._obs_dtype)
        s, head, (exposure, upnl, held, dd) = self._st
        equity, bars = self._equity, self._bars
        if ruined:
            positive = equity > 0.0
            np.divide(self._qc, equity, out=exposure, where=positive)
            _copyto(exposure, 0.0, where=~positive)
        else:
            _div(self._qc, equity, exposure)
        _sub(_div(equity, self._entry, upnl), self._one, upnl)
        _copyto(upnl, self._zero, where=flat)
        _div(bars, _add(bars, self._holding, held), held)
        np.minimum(np.maximum(head, self._state_low, out=head), self._state_high, out=head)
        if ruined:  # a drawdown is >= 0 by construction and <= 1 while equity >= 0
            np.minimum(dd, STATE_HIGH[3], out=dd)
        obs[:, self._wk:] = s.T
        return obs  # type: ignore[no-any-return]

    def _end_episodes(self, obs: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """Auto-reset the envs whose episode ended (ruined or truncated): terminal observation in their
        info, the first observation of their next episode in ``obs``."""
        terminated = self._mask[0].copy()
        truncated = dones.copy()
        dones |= terminated
        p = self.params
        for i in np.flatnonzero(dones).tolist():
            infos[i]["terminal_observation"] = obs[i].copy()
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            self._reset_env(i, None)
            t = int(self._t[i])
            obs[i] = self._windows[t]
            obs[i, self._wk:] = position_state(float(self._qty[i]), float(self.data.close[t]),
                                               float(self._equity[i]), float(self._entry[i]), float(self._bars[i]),
                                               float(self._st[2][3][i]), p.holding_scale_bars)
        self._left = int(np.min(self._deadline - self._t))

    def _targets(self, actions: Any) -> np.ndarray:
        """Validated target exposures in range, float64 [N] (a reused buffer); ValueError naming the first bad
        action. Discrete: the action table, clipped once as trade_to_target clips; continuous: clipped here."""
        n, table = self.num_envs, self._table
        arr = actions if type(actions) is np.ndarray else np.asarray(actions)
        if table is not None:
            # a negative int64 is a huge uint64: one comparison checks both ends
            if arr.dtype == np.int64 and arr.shape == (n,) and np.count_nonzero(
                    np.less(arr.view(np.uint64), self._n_table, self._mask[1])) == n:
                return table.take(arr, out=self._target, mode="clip")
            flat = arr.reshape(-1) if arr.shape in ((n,), (n, 1)) else None
            if flat is None or flat.dtype.kind not in "iu" or ((flat < 0) | (flat >= len(table))).any():
                raise self._bad(arr)
            return table.take(flat, out=self._target)
        flat = arr.reshape(-1) if arr.shape in ((n,), (n, 1)) and arr.dtype.kind == "f" else None
        if flat is None or np.count_nonzero(np.abs(flat) <= 1.0) != n:  # (NaN fails the comparison)
            raise self._bad(arr)
        return self._trader.clip_target(flat, out=self._target)

    def _bad(self, arr: np.ndarray) -> ValueError:
        if arr.ndim >= 1 and arr.shape[0] == self.num_envs:
            for i in range(self.num_envs):
                try:
                    self.proto._target(arr[i] if arr.ndim > 1 or self._table is None else arr[i].item())
                except ValueError as exc:
                    return ValueError(f"env {i}: {exc}")
        return ValueError(f"actions of shape {arr.shape} and dtype {arr.dtype}: expected {self.num_envs} "
                          f"elements of {self.action_space}")
