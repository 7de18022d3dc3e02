"""Open a bus from a URL: ``memory://[NAME]`` (in-process, the default) or ``redis://host:port/db``.

>>> from l2_tactical.clock import SystemClock
>>> bus = open_bus("memory://doc", prefix="l2", group="l1", consumer="l1-1", max_deliveries=5, clock=SystemClock())
>>> type(bus).__name__, bus.stream("l2.orders")
('MemoryBus', 'l2:l2.orders')
>>> open_bus("kafka://x", prefix="l2", group="g", consumer="c", max_deliveries=5, clock=SystemClock())
Traceback (most recent call last):
...
l2_tactical.errors.ConfigError: bus.url='kafka://x': scheme must be memory:// or redis:// (or rediss://)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from l2_tactical.bus.port import MessageBus
from l2_tactical.clock import Clock
from l2_tactical.config import BusConfig
from l2_tactical.errors import ConfigError


def open_bus(url: str, *, prefix: str, group: str, consumer: str, max_deliveries: int, clock: Clock,
             retry_base_seconds: float = 0.2, retry_max_seconds: float = 5.0, **tuning: Any) -> MessageBus:
    """Create the bus for ``url`` (no I/O yet: Redis connects on first use).

    ``prefix`` names the streams (``f"{prefix}:{topic}"``); ``group``/``consumer`` are this
    process's defaults for :meth:`MessageBus.subscribe`; ``tuning`` passes ``batch``,
    ``block_seconds``, ``claim_idle_seconds``, ``sweep_seconds`` (and ``maxlen`` for Redis).
    """
    kwargs: dict[str, Any] = dict(prefix=prefix, group=group, consumer=consumer, max_deliveries=max_deliveries,
                                  clock=clock, retry_base_seconds=retry_base_seconds,
                                  retry_max_seconds=retry_max_seconds, **tuning)
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    try:
        if scheme == "memory":
            from l2_tactical.bus.memory import MemoryBus, broker

            return MemoryBus(broker=broker(url[len("memory://"):].strip("/")), **kwargs)
        if scheme in ("redis", "rediss"):
            from l2_tactical.bus.redis_streams import RedisStreamsBus

            return RedisStreamsBus.from_url(url, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"bus {url!r}: {exc}") from None
    raise ConfigError(f"bus.url={url!r}: scheme must be memory:// or redis:// (or rediss://)")


def open_bus_from_config(cfg: BusConfig, *, group: str, consumer: str, clock: Clock, **tuning: Any) -> MessageBus:
    """:func:`open_bus` with ``url``, prefix, max_deliveries and retry settings from the ``bus`` config section."""
    return open_bus(cfg.url, prefix=cfg.stream_prefix, group=group, consumer=consumer,
                    max_deliveries=cfg.max_deliveries, clock=clock, retry_base_seconds=cfg.retry_base_seconds,
                    retry_max_seconds=cfg.retry_max_seconds, **tuning)
