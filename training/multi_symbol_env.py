"""Several symbols trained together: one :class:`~envs.vec_env.TradingVecEnv` per symbol, side by side.

``ConcatVecEnv([venv_btc, venv_eth])`` is one stable-baselines3 VecEnv whose envs are the
children's envs in order (env ``j`` of the whole = env ``j - offset`` of its child). Every
step advances every child once, so each symbol gets its share of the experience in every
rollout (no round-robin over time). Each child keeps its own MarketData, so its exchange
filters (lot step, min notional) and its segments are the symbol's own; an episode never
mixes symbols. ``seed(s)`` seeds global env ``j`` with ``s + j``, as in SB3's DummyVecEnv.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn


class ConcatVecEnv(VecEnv):
    """The envs of several VecEnvs with identical spaces, stepped together as one VecEnv."""

    def __init__(self, children: Sequence[VecEnv]) -> None:
        if not children:
            raise ValueError("ConcatVecEnv: needs at least one child VecEnv")
        first = children[0]
        for i, child in enumerate(children[1:], 1):
            if child.observation_space != first.observation_space or child.action_space != first.action_space:
                raise ValueError(
                    f"ConcatVecEnv: child {i} has spaces {child.observation_space} / "
                    f"{child.action_space}, child 0 has {first.observation_space} / {first.action_space}"
                )
        self.children = list(children)
        bounds = np.cumsum([0] + [c.num_envs for c in children])
        self._slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        super().__init__(int(bounds[-1]), first.observation_space, first.action_space)

    def reset(self) -> VecEnvObs:
        for child, part in zip(self.children, self._slices, strict=True):
            child._seeds = list(self._seeds[part])
            child._options = list(self._options[part])
        obs = np.concatenate([child.reset() for child in self.children])
        self.reset_infos = [info for child in self.children for info in child.reset_infos]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        for child, part in zip(self.children, self._slices, strict=True):
            child.step_async(actions[part])

    def step_wait(self) -> VecEnvStepReturn:
        results = [child.step_wait() for child in self.children]
        obs = np.concatenate([r[0] for r in results])
        rewards = np.concatenate([r[1] for r in results])
        dones = np.concatenate([r[2] for r in results])
        infos = [info for r in results for info in r[3]]
        return obs, rewards, dones, infos

    def close(self) -> None:
        for child in self.children:
            child.close()

    def _child_calls(self, indices: VecEnvIndices) -> list[tuple[VecEnv, list[int]]]:
        wanted = list(self._get_indices(indices))
        calls = []
        for child, part in zip(self.children, self._slices, strict=True):
            local = [j - part.start for j in wanted if part.start <= j < part.stop]
            if local:
                calls.append((child, local))
        return calls

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [v for child, local in self._child_calls(indices) for v in child.get_attr(attr_name, local)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for child, local in self._child_calls(indices):
            child.set_attr(attr_name, value, local)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        return [
            v
            for child, local in self._child_calls(indices)
            for v in child.env_method(method_name, *method_args, indices=local, **method_kwargs)
        ]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [v for child, local in self._child_calls(indices) for v in child.env_is_wrapped(wrapper_class, local)]
