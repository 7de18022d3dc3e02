"""Clocks: every read of the time goes through one, so tests never sleep.

>>> from datetime import datetime, timezone, timedelta
>>> c = SimulatedClock(datetime(2024, 1, 1, tzinfo=timezone.utc))
>>> c.advance(timedelta(minutes=5)); c.now().isoformat()
'2024-01-01T00:05:00+00:00'
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """Wall-clock UTC time."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class SimulatedClock:
    """Time that moves only when told to: backtests set it to each bar's close."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"SimulatedClock start={start!r}: must be timezone-aware")
        self._now = start
        self._origin = start

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return (self._now - self._origin).total_seconds()

    def set(self, when: datetime) -> None:
        if when < self._now:
            raise ValueError(
                f"SimulatedClock.set({when.isoformat()}): time cannot go back from {self._now.isoformat()}"
            )
        self._now = when

    def advance(self, delta: timedelta) -> None:
        self.set(self._now + delta)
