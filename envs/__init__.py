"""Gymnasium trading environments of the L2 specialists; importing this package registers their ids.

``TradingVecEnv`` (stable-baselines3) lives in :mod:`envs.vec_env`, imported on demand so
that importing the envs does not import stable-baselines3.
"""

from __future__ import annotations

from envs.market_data import MarketData
from envs.registration import ENV_IDS
from envs.rewards import RewardSpec
from envs.specialists import ACTION_MODES, SPECIALISTS, Specialist
from envs.trading_env import TradingEnv

__all__ = ["ACTION_MODES", "ENV_IDS", "SPECIALISTS", "MarketData", "RewardSpec", "Specialist", "TradingEnv"]
