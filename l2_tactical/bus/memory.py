"""In-process asyncio adapter (the default): Redis Streams semantics without a server.

Streams, consumer groups, pending entries with delivery counts, claims and dead
letters live in a :class:`MemoryBroker`. Buses opened on the same broker talk to
each other: ``memory://`` is the process-wide default broker, ``memory://NAME`` a
named one (tests use a fresh name each). :meth:`MemoryBroker.set_available`
simulates an outage: every operation then raises TransientError.

>>> import asyncio
>>> from datetime import datetime, timezone
>>> from l2_tactical.clock import SystemClock
>>> from l2_tactical.messages import Heartbeat
>>> async def demo():
...     bus = MemoryBus(broker=MemoryBroker(), prefix="doc", group="g", consumer="c",
...                     max_deliveries=3, clock=SystemClock())
...     got = asyncio.Queue()
...     await bus.subscribe("heartbeats", got.put)
...     await bus.publish("heartbeats", Heartbeat(sender="l1", timestamp=datetime(2024, 1, 1, tzinfo=timezone.utc)))
...     message = await asyncio.wait_for(got.get(), 1)
...     await bus.close()
...     return message.sender
>>> asyncio.run(demo())
'l1'
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from l2_tactical.bus.gate import DeadLetter, RawEntry
from l2_tactical.bus.port import MessageBus
from l2_tactical.errors import TransientError


@dataclasses.dataclass(slots=True)
class _Pending:
    consumer: str
    deliveries: int
    delivered_at: float


@dataclasses.dataclass(slots=True)
class _Group:
    next_seq: int
    pending: dict[int, _Pending] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class _Stream:
    entries: dict[int, dict[str, str]] = dataclasses.field(default_factory=dict)
    last_seq: int = 0
    groups: dict[str, _Group] = dataclasses.field(default_factory=dict)
    waiters: set[asyncio.Future[None]] = dataclasses.field(default_factory=set)

    @property
    def first_seq(self) -> int:
        return next(iter(self.entries), self.last_seq + 1)


def _seq(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


class MemoryBroker:
    """The shared in-process store behind :class:`MemoryBus` instances."""

    def __init__(self, maxlen: int = 100_000) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen={maxlen!r}: must be >= 1")
        self.maxlen = maxlen
        self.available = True
        self._streams: dict[str, _Stream] = {}

    def set_available(self, available: bool) -> None:
        """False simulates an unreachable transport (every call raises TransientError)."""
        self.available = available

    def check(self) -> None:
        if not self.available:
            raise TransientError("in-process bus unavailable (simulated outage)")

    def stream(self, name: str) -> _Stream:
        return self._streams.setdefault(name, _Stream())

    def append(self, name: str, fields: dict[str, str]) -> str:
        self.check()
        s = self.stream(name)
        s.last_seq += 1
        s.entries[s.last_seq] = dict(fields)
        while len(s.entries) > self.maxlen:
            del s.entries[next(iter(s.entries))]
        for fut in s.waiters:
            if not fut.done() and not fut.get_loop().is_closed():
                fut.set_result(None)
        s.waiters.clear()
        return f"{s.last_seq}-0"

    def length(self, name: str) -> int:
        return len(self._streams[name].entries) if name in self._streams else 0


_BROKERS: dict[str, MemoryBroker] = {}


def broker(name: str = "") -> MemoryBroker:
    """The process-wide broker called ``name`` (created on first use)."""
    return _BROKERS.setdefault(name, MemoryBroker())


class MemoryBus(MessageBus):
    """:class:`MessageBus` over a :class:`MemoryBroker` (default: the process-wide one)."""

    def __init__(self, *, broker: MemoryBroker | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broker = broker if broker is not None else _BROKERS.setdefault("", MemoryBroker())

    async def ping(self) -> None:
        self._check_open()
        self.broker.check()

    async def _append(self, stream: str, fields: dict[str, str]) -> str:
        return self.broker.append(stream, fields)

    async def _ensure_group(self, stream: str, group: str) -> None:
        self.broker.check()
        s = self.broker.stream(stream)
        s.groups.setdefault(group, _Group(next_seq=s.first_seq))

    def _group(self, stream: str, group: str) -> tuple[_Stream, _Group]:
        self.broker.check()
        s = self.broker.stream(stream)
        return s, s.groups.setdefault(group, _Group(next_seq=s.first_seq))

    async def _read_new(self, stream: str, group: str, consumer: str, count: int, block: float) -> list[RawEntry]:
        s, g = self._group(stream, group)
        if g.next_seq > s.last_seq and block > 0:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            s.waiters.add(fut)
            try:
                await asyncio.wait_for(fut, block)
            except TimeoutError:
                s.waiters.discard(fut)
            s, g = self._group(stream, group)
        out: list[RawEntry] = []
        now = time.monotonic()
        seq = max(g.next_seq, s.first_seq)
        while seq <= s.last_seq and len(out) < count:
            g.pending[seq] = _Pending(consumer, 1, now)
            out.append(RawEntry(f"{seq}-0", s.entries.get(seq, {}), 1))
            seq += 1
        g.next_seq = seq
        return out

    async def _read_pending(self, stream: str, group: str, consumer: str, after: str, count: int) -> list[RawEntry]:
        s, g = self._group(stream, group)
        start = _seq(after)
        mine = sorted(q for q, p in g.pending.items() if p.consumer == consumer and q > start)[:count]
        now = time.monotonic()
        out = []
        for q in mine:
            p = g.pending[q]
            p.deliveries += 1
            p.delivered_at = now
            out.append(RawEntry(f"{q}-0", s.entries.get(q, {}), p.deliveries))
        return out

    async def _claim_idle(self, stream: str, group: str, consumer: str, idle: float) -> int:
        _, g = self._group(stream, group)
        now = time.monotonic()
        claimed = 0
        for p in g.pending.values():
            if p.consumer != consumer and now - p.delivered_at >= idle:
                p.consumer, p.delivered_at = consumer, now
                claimed += 1
        return claimed

    async def _settle(self, stream: str, group: str, ack: Sequence[str], dead: Sequence[DeadLetter],
                      dead_stream: str) -> None:
        _, g = self._group(stream, group)
        for d in dead:
            self.broker.append(dead_stream, d.to_fields())
        for entry_id in ack:
            g.pending.pop(_seq(entry_id), None)

    async def _read_dead(self, dead_stream: str, count: int) -> list[DeadLetter]:
        self.broker.check()
        entries = list(self.broker.stream(dead_stream).entries.values())[:count]
        return [DeadLetter.from_fields(f) for f in entries]

    async def _close_transport(self) -> None:
        return None
