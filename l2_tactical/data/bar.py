"""One closed OHLCV bar: the shape the tactical loop, the backtest and L1's feeds and executor share."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from l2_tactical.data.candle_checks import TIMEFRAMES


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One closed OHLCV bar; ``open_time`` is the bar's open (UTC), ``interval`` its timeframe ("1m", "1h", ...)."""

    symbol: str
    interval: str
    open_time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def close_time(self) -> datetime:
        """The instant the bar closes (= the next bar's open time)."""
        return self.open_time + timedelta(seconds=TIMEFRAMES[self.interval])
