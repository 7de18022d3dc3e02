"""TradingVecEnv: N trading accounts advanced by one set of batched numpy operations.

A stable-baselines3 ``VecEnv`` (the only module of :mod:`envs` that imports SB3). Every
step runs :func:`envs.trading_env.account_step` once on arrays of N accounts with numpy's
ufuncs (``NUMPY_OPS``, the same results as ``ops=np``): the formulas of the single
:class:`~envs.trading_env.TradingEnv` and of :mod:`l2_tactical.execution`, not N Python
envs in a loop. Only the
envs whose episode ended this step are touched one by one (their reset draws a new
start from their own generator).

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

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.specialists import get_specialist
from envs.trading_env import NUMPY_OPS, STATE_HIGH, STATE_LOW, TradingEnv, account_step


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
        self._setup_arrays(num_envs)
        if seed is not None:
            self.seed(seed)

    def _setup_arrays(self, n: int) -> None:
        d, w, k = self.data, self.params.window, self.data.n_features
        self._open, self._high, self._low, self._close = d.open, d.high, d.low, d.close
        self._windows = np.lib.stride_tricks.sliding_window_view(d.features, (w, k))[:, 0].reshape(-1, w * k)
        self._seg_end = d.segment_end()
        self._starts = d.episode_starts(w, self.params.min_episode_steps)
        self._wk = w * k
        table = self.proto._table
        self._table = None if table is None else np.asarray(table, dtype=np.float64)
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._t = np.zeros(n, dtype=np.int64)
        # last row of each env's episode: max_episode_steps after its start, or its segment's last bar
        self._deadline = np.zeros(n, dtype=np.int64)
        cash = self.params.initial_cash
        self._acct = {name: np.full(n, value) for name, value in (
            ("cash", cash), ("qty", 0.0), ("bars", 0.0), ("entry", cash), ("peak", cash), ("equity", cash),
            ("dd", 0.0), ("mean", 0.0), ("second", 0.0))}
        self._actions: np.ndarray | None = None

    # ----------------------------------------------------------------- VecEnv API
    def reset(self) -> VecEnvObs:
        for i in range(self.num_envs):
            if self._seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(self._seeds[i])
            self._reset_env(i, self._options[i].get("start"))
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{"t": int(self._t[i]), "equity": float(self._acct["equity"][i])}
                            for i in range(self.num_envs)]
        return self._observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        target = self._targets(self._actions)
        self._actions = None
        a = self._acct
        t = self._t + 1
        c = self._close.take(t)
        (a["cash"], a["qty"], _, _, _, a["bars"], a["entry"], a["peak"], equity, a["dd"], reward, a["mean"],
         a["second"]) = account_step(self.params, a["cash"], a["qty"], a["bars"], a["entry"], a["peak"], a["equity"],
                                     a["dd"], a["mean"], a["second"], target, self._open.take(t),
                                     self._high.take(t), self._low.take(t), c, ops=self.ops, rops=self.ops)
        a["equity"] = equity
        self._t = t
        terminated = equity <= 0.0
        truncated = t >= self._deadline
        dones = terminated | truncated
        obs = self._observe()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            for i in np.flatnonzero(dones).tolist():
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                self._reset_env(i, None)
            obs[dones] = self._observe()[dones]
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.proto.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        idx = list(self._get_indices(indices))
        if attr_name in ("cash", "qty", "equity"):
            return [float(self._acct[attr_name][i]) for i in idx]
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
        return self._acct["equity"].copy()

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
        for name, value in (("cash", cash), ("qty", 0.0), ("bars", 0.0), ("entry", cash), ("peak", cash),
                            ("equity", cash), ("dd", 0.0), ("mean", 0.0), ("second", 0.0)):
            self._acct[name][i] = value

    def _observe(self) -> np.ndarray:
        """Observations of all envs: the feature windows, then trading_env.position_state on arrays
        (same formulas and clipping), written straight into the float32 columns."""
        a, t, wk, n = self._acct, self._t, self._wk, self.num_envs
        obs = np.empty((n, wk + 4), dtype=np.float32)
        obs[:, :wk] = self._windows[t - (self.params.window - 1)]
        equity, bars = a["equity"], a["bars"]
        exposure = np.divide(a["qty"] * self._close.take(t), equity, out=np.zeros(n), where=equity > 0.0)
        upnl = np.divide(equity, a["entry"], out=np.ones(n), where=bars > 0.0) - 1.0
        for j, value in ((0, exposure), (1, upnl), (3, a["dd"])):
            np.minimum(np.maximum(value, STATE_LOW[j]), STATE_HIGH[j], out=obs[:, wk + j])
        np.divide(bars, bars + self.params.holding_scale_bars, out=obs[:, wk + 2])
        return obs

    def _targets(self, actions: Any) -> np.ndarray:
        """Validated target exposures, float64 [N]; ValueError naming the first bad action."""
        n, table = self.num_envs, self._table
        arr = np.asarray(actions)
        if table is not None:
            if arr.dtype == np.int64 and arr.shape == (n,) and arr.view(np.uint64).max() < len(table):
                return table[arr]  # (a negative int64 is a huge uint64: one reduction checks both ends)
            flat = arr.reshape(-1) if arr.shape in ((n,), (n, 1)) else None
            if flat is None or flat.dtype.kind not in "iu" or ((flat < 0) | (flat >= len(table))).any():
                raise self._bad(arr)
            return table[flat]
        flat = arr.reshape(-1) if arr.shape in ((n,), (n, 1)) and arr.dtype.kind == "f" else None
        if flat is None or not (flat.min() >= -1.0 and flat.max() <= 1.0):
            raise self._bad(arr)
        return flat.astype(np.float64)

    def _bad(self, arr: np.ndarray) -> ValueError:
        if arr.ndim >= 1 and arr.shape[0] == self.num_envs:
            for i in range(self.num_envs):
                try:
                    self.proto._target(arr[i] if arr.ndim > 1 or self._table is None else arr[i].item())
                except ValueError as exc:
                    return ValueError(f"env {i}: {exc}")
        return ValueError(f"actions of shape {arr.shape} and dtype {arr.dtype}: expected {self.num_envs} "
                          f"elements of {self.action_space}")
