"""MessageBus port and adapters (in-process default, Redis Streams).

Typical use::

    bus = open_bus_from_config(cfg.bus, group="l1", consumer="l1-1", clock=SystemClock())
    await bus.subscribe(Topic.L2_ORDERS, on_order)          # async def on_order(order: OrderIntent)
    await bus.publish(Topic.L1_REPORTS, report)
    ...
    await bus.close()

See :mod:`l2_tactical.bus.port` for the delivery guarantees.
"""

from l2_tactical.bus.factory import open_bus, open_bus_from_config
from l2_tactical.bus.gate import Backoff, BusStats, DeadLetter, DropReason, Envelope, message_key
from l2_tactical.bus.port import TOPIC_MESSAGE, DropHandler, Handler, MessageBus, Subscription, Topic, topic_name

__all__ = [
    "TOPIC_MESSAGE",
    "Backoff",
    "BusStats",
    "DeadLetter",
    "DropHandler",
    "DropReason",
    "Envelope",
    "Handler",
    "MessageBus",
    "Subscription",
    "Topic",
    "message_key",
    "open_bus",
    "open_bus_from_config",
    "topic_name",
]
