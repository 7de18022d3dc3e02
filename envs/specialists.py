"""The three specialists as presets: which FeatureSet they see, how they are rewarded, how they act.

Following DESIGN.md's table:

=============== =========== ======================== ========================================
specialist      feature set default action mode      reward
=============== =========== ======================== ========================================
trend           ``trend``   ``discrete3``            log growth net of costs - drawdown penalty - entry penalty
mean_reversion  ``mean_reversion`` ``discrete5``     log growth net of costs - drawdown penalty - holding-time penalty
volatility      ``volatility`` ``continuous``        differential Sharpe ratio of log growth net of costs
=============== =========== ======================== ========================================

Training history of these weights (details in the model cards and the README):
the trend preset's first weights (drawdown 1.0, no entry penalty, unscaled) trained a policy that
stayed flat; a 0.1 drawdown weight alone churned (turnover ~430x on validation); adding a 0.002
entry penalty per opened/flipped position (on top of the costs) and a x100 scale (log growth per
1h bar is ~1e-3) made it trade a few times with a small positive validation Sharpe. The volatility
preset keeps the differential Sharpe ratio; with SAC's automatic entropy coefficient it re-sized
its position every bar (turnover ~90x on validation) and lost after costs, with a fixed small
entropy coefficient (0.005) and learning rate 1e-4 (training/hyperparams/sac.yml) it learned to
stay mostly long (validation Sharpe 1.91, the same as buy-and-hold's).

Every preset accepts any action mode (``action_mode=`` on the env); the algorithm
that trains it (PPO, A2C, SAC) is configuration (``ensemble.models``), not code.
The weights below are starting points for training, kept visible here.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping

from envs.rewards import RewardSpec

ACTION_MODES: dict[str, tuple[float, ...] | None] = {
    "discrete3": (-1.0, 0.0, 1.0),            # short / flat / long
    "discrete5": (-1.0, -0.5, 0.0, 0.5, 1.0),  # adds half positions
    "continuous": None,                        # Box(-1, 1): the target exposure itself
}

#: bars per episode registered with gymnasium (30 days of 1h bars)
MAX_EPISODE_STEPS = 720


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Specialist:
    """One specialist preset."""

    name: str
    env_id: str
    feature_set: str
    action_mode: str
    reward: RewardSpec
    window: int = 16
    max_episode_steps: int = MAX_EPISODE_STEPS


SPECIALISTS: dict[str, Specialist] = {
    "trend": Specialist(
        name="trend", env_id="L2Trend-v0", feature_set="trend", action_mode="discrete3",
        reward=RewardSpec(drawdown_weight=0.1, entry_weight=0.002, scale=100.0),
    ),
    "mean_reversion": Specialist(
        name="mean_reversion", env_id="L2MeanReversion-v0", feature_set="mean_reversion",
        action_mode="discrete5",
        reward=RewardSpec(drawdown_weight=1.0, holding_weight=5e-5, holding_free_bars=12.0),
    ),
    "volatility": Specialist(
        name="volatility", env_id="L2Volatility-v0", feature_set="volatility", action_mode="continuous",
        reward=RewardSpec(sharpe=True, sharpe_eta=0.01),
    ),
}


def get_specialist(name: str) -> Specialist:
    """The preset called ``name``; a ValueError with a "did you mean" hint otherwise."""
    try:
        return SPECIALISTS[name]
    except KeyError:
        raise ValueError(f"specialist={name!r}: unknown{_hint(name, SPECIALISTS)}; "
                         f"known: {sorted(SPECIALISTS)}") from None


def check_action_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`ACTION_MODES`, else a ValueError naming it."""
    if mode not in ACTION_MODES:
        raise ValueError(f"action_mode={mode!r}: unknown{_hint(mode, ACTION_MODES)}; known: {sorted(ACTION_MODES)}")
    return mode


def _hint(word: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(str(word), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
