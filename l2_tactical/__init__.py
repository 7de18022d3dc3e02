"""l2_tactical: the tactical layer (L2) of a three-level crypto trading system.

Seed 000's entry points are importable from the package (lazily, so ``import l2_tactical``
stays light)::

    from l2_tactical import L2Config, SignalGenerator
    config = L2Config.from_file("config/l2_config.yaml")
    signals = SignalGenerator(config).generate_signals(market_data=df, symbol="BTCUSDT",
                                                       regime_context={"regime": "trending"})
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "L2Config": "l2_tactical.config",
    "SignalGenerator": "l2_tactical.signal_generator",
    "TacticalSignal": "l2_tactical.messages",
    "SignalDirection": "l2_tactical.messages",
    "SignalSource": "l2_tactical.messages",
    "PositionSize": "l2_tactical.messages",
    "RiskMetrics": "l2_tactical.messages",
    "L2State": "l2_tactical.messages",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'l2_tactical' has no attribute {name!r}")
