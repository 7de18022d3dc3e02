"""Gymnasium ids of the specialists: ``L2Trend-v0``, ``L2MeanReversion-v0``, ``L2Volatility-v0``.

Importing :mod:`envs` registers them, so ``gymnasium.make("L2Trend-v0", data=..., config=...)``
works; ``data`` is a :class:`~envs.market_data.MarketData`, a Candles object or a candle
file path. The episode length is ``max_episode_steps`` (gymnasium's TimeLimit).
"""

from __future__ import annotations

import gymnasium as gym

from envs.specialists import SPECIALISTS

ENTRY_POINT = "envs.trading_env:TradingEnv"


def register_envs() -> list[str]:
    """Register every specialist id not registered yet; returns all the ids."""
    for spec in SPECIALISTS.values():
        if spec.env_id not in gym.registry:
            gym.register(id=spec.env_id, entry_point=ENTRY_POINT, kwargs={"specialist": spec.name},
                         max_episode_steps=spec.max_episode_steps)
    return [spec.env_id for spec in SPECIALISTS.values()]


ENV_IDS: tuple[str, ...] = tuple(register_envs())
