"""The MessageBus port: topics, the envelope on the wire, and the consumer loop.

A bus carries ``messages.py`` messages between the layers on named topics. Each
published message travels in an :class:`Envelope` (its type name, its JSON, a
correlation id and the publish time). Subscribers belong to a *group*; every
group sees every message of a topic, and the consumers of one group share them.

Delivery is at-least-once, with the guarantees both adapters give alike (the
consumer loop lives here, the adapters only move entries):

* an entry is acknowledged only after its handler returned;
* a handler that raises leaves the entry pending; it is re-delivered after a
  backoff, and after ``max_deliveries`` tries it goes to the dead-letter stream
  ``f"{prefix}:dead:{topic}"`` with the reason;
* an entry that does not decode (bad JSON, unknown type, invalid field) is
  dead-lettered at once with the reason; it never stops the consumer;
* a (re)started consumer reads its own pending entries before new ones, and
  claims entries left idle by a consumer of its group that went away;
* when the transport is unreachable the loop backs off with jitter and resumes.

Before the handler runs, a subscription drops (acknowledges without handling,
counting the :class:`DropReason`) duplicates by message id, expired messages and
out-of-order decisions/heartbeats; ``on_drop`` lets a consumer answer them, e.g.
L1 reporting an expired order as rejected.

Time for messages (``published_at``, expiry) comes from the ``clock``; the
loop's own waits use the event loop's monotonic time.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
import logging
import re
from collections.abc import Awaitable, Callable, Sequence

from l2_tactical.bus.gate import Backoff, BusStats, DeadLetter, DropReason, Envelope, Gate, RawEntry
from l2_tactical.clock import Clock
from l2_tactical.errors import TransientError
from l2_tactical.messages import (
    AccountSnapshot,
    ExecutionReport,
    Heartbeat,
    Message,
    MessageError,
    OrderIntent,
    RiskAlert,
    StrategicDecision,
)

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[None]]
"""``async def handler(message) -> None``; raising means "not handled, deliver again"."""
DropHandler = Callable[[Message, DropReason], Awaitable[None]]
BatchHandler = Callable[[], Awaitable[None]]
"""``async def after_batch() -> None``: runs once the handlers of one read batch returned, before the
batch is acknowledged (e.g. one commit for the batch); raising leaves the batch's handled entries pending."""

_TOPIC_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class Topic(enum.StrEnum):
    """The system's topics; the stream of a topic is ``f"{prefix}:{topic}"``."""

    L3_DECISIONS = "l3.decisions"
    L2_ORDERS = "l2.orders"
    L1_REPORTS = "l1.reports"
    L2_ALERTS = "l2.alerts"
    HEARTBEATS = "heartbeats"
    L1_ACCOUNT = "l1.account"


TOPIC_MESSAGE: dict[str, type[Message]] = {
    Topic.L3_DECISIONS.value: StrategicDecision,
    Topic.L2_ORDERS.value: OrderIntent,
    Topic.L1_REPORTS.value: ExecutionReport,
    Topic.L2_ALERTS.value: RiskAlert,
    Topic.HEARTBEATS.value: Heartbeat,
    Topic.L1_ACCOUNT.value: AccountSnapshot,
}
"""The one message type each system topic carries; other topic names carry any type."""


_VALID_TOPICS: dict[str, str] = {}  # topic (str or Topic) -> its validated name


def topic_name(topic: Topic | str) -> str:
    """Validate a topic and return its name.

    >>> topic_name(Topic.L2_ORDERS), topic_name("bench.echo")
    ('l2.orders', 'bench.echo')
    """
    try:
        return _VALID_TOPICS[topic]
    except (KeyError, TypeError):
        pass
    name = topic.value if isinstance(topic, Topic) else topic
    if not isinstance(name, str) or not _TOPIC_RE.match(name):
        raise ValueError(f"topic={topic!r}: must be lowercase letters, digits, '.', '_' or '-'")
    if len(_VALID_TOPICS) < 10_000:
        _VALID_TOPICS[topic] = name
    return name


@dataclasses.dataclass(slots=True, eq=False)
class Subscription:
    """A running consumer; ``await sub.stop()`` ends it (pending entries stay pending)."""

    topic: str
    group: str
    consumer: str
    handler: Handler
    gate: Gate
    on_drop: DropHandler | None = None
    after_batch: BatchHandler | None = None
    task: asyncio.Task[None] | None = None
    stopping: bool = False

    async def stop(self) -> None:
        # The flag ends the loop even when a client library swallows the cancellation
        # (redis-py's read timeout can, on Python 3.11); asyncio.wait never swallows ours.
        self.stopping = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait([self.task])


class MessageBus(abc.ABC):
    """The port. Adapters implement the underscore primitives; the loop is shared.

    Public API: :meth:`publish`, :meth:`subscribe`, :meth:`dead_letters`,
    :meth:`ping`, :meth:`close`, and :attr:`stats`.
    """

    def __init__(self, *, prefix: str, group: str, consumer: str, max_deliveries: int, clock: Clock,
                 retry_base_seconds: float = 0.2, retry_max_seconds: float = 5.0, batch: int = 64,
                 block_seconds: float = 0.1, claim_idle_seconds: float = 30.0, sweep_seconds: float = 5.0) -> None:
        for name, value in (("prefix", prefix), ("group", group), ("consumer", consumer)):
            if not isinstance(value, str) or not value or any(c in value for c in " \t\n"):
                raise ValueError(f"{name}={value!r}: must be a non-empty string without spaces")
        if not isinstance(max_deliveries, int) or max_deliveries < 1:
            raise ValueError(f"max_deliveries={max_deliveries!r}: must be an integer >= 1")
        if not 0 < retry_base_seconds <= retry_max_seconds:
            raise ValueError(f"retry_base_seconds={retry_base_seconds!r}, retry_max_seconds={retry_max_seconds!r}: "
                             "need 0 < base <= max")
        self.prefix, self.group, self.consumer = prefix, group, consumer
        self.max_deliveries = max_deliveries
        self.clock = clock
        self.retry_base_seconds, self.retry_max_seconds = retry_base_seconds, retry_max_seconds
        self.batch, self.block_seconds = batch, block_seconds
        self.claim_idle_seconds, self.sweep_seconds = claim_idle_seconds, sweep_seconds
        self.stats = BusStats()
        self._subs: list[Subscription] = []
        self._closed = False

    # ----------------------------------------------------------------- public API
    def stream(self, topic: Topic | str) -> str:
        return f"{self.prefix}:{topic_name(topic)}"

    def dead_stream(self, topic: Topic | str) -> str:
        return f"{self.prefix}:dead:{topic_name(topic)}"

    async def publish(self, topic: Topic | str, message: Message) -> str:
        """Append ``message`` to ``topic``; returns the entry id. Raises TransientError when unreachable."""
        name = topic_name(topic)
        expected = TOPIC_MESSAGE.get(name)
        if not isinstance(message, Message) or (expected is not None and not isinstance(message, expected)):
            want = expected.__name__ if expected else "a messages.py message"
            raise ValueError(f"publish({name!r}, {type(message).__name__}): topic {name!r} carries {want}")
        self._check_open()
        entry_id = await self._append(self.stream(name), Envelope.fields_of(message, self.clock.now().isoformat()))
        self.stats.published[name] += 1
        return entry_id

    async def publish_many(self, topic: Topic | str, messages: Sequence[Message]) -> list[str]:
        """Append ``messages`` in order in one transport round trip where the adapter can (Redis: a pipeline).

        Raises TransientError when unreachable; then any prefix of them may have been appended
        (at-least-once: re-publishing them is what the caller's outbox does, consumers drop duplicates).
        """
        if len(messages) == 1:
            return [await self.publish(topic, messages[0])]
        name = topic_name(topic)
        expected = TOPIC_MESSAGE.get(name)
        for message in messages:
            if not isinstance(message, Message) or (expected is not None and not isinstance(message, expected)):
                want = expected.__name__ if expected else "a messages.py message"
                raise ValueError(f"publish_many({name!r}, {type(message).__name__}): topic {name!r} carries {want}")
        self._check_open()
        now = self.clock.now().isoformat()
        ids = await self._append_many(self.stream(name), [Envelope.fields_of(m, now) for m in messages])
        self.stats.published[name] += len(ids)
        return ids

    async def publish_raw(self, topic: Topic | str, fields: dict[str, str]) -> str:
        """Append unchecked envelope fields (tools and fault tests: this is how poison gets in)."""
        self._check_open()
        return await self._append(self.stream(topic), dict(fields))

    async def subscribe(self, topic: Topic | str, handler: Handler, *, group: str | None = None,
                        consumer: str | None = None, dedup: bool = True, drop_expired: bool = True,
                        ordered: bool = True, dedup_size: int = 100_000,
                        on_drop: DropHandler | None = None, after_batch: BatchHandler | None = None) -> Subscription:
        """Start consuming ``topic`` as ``consumer`` of ``group`` (defaults: the bus's own) in a task.

        ``dedup`` drops a message whose id (order_id, report_id, ...) this subscription already
        handled (bounded to ``dedup_size`` ids); ``drop_expired`` drops messages whose
        ``expires_at`` has passed on the bus clock; ``ordered`` drops a StrategicDecision or a
        Heartbeat older than the last one handled. Dropped messages are acknowledged, counted in
        ``stats.dropped`` and passed to ``on_drop``. ``after_batch`` runs after the handlers of each
        read batch (when at least one was handled) and before the batch is acknowledged: one commit
        per batch; if it raises, every entry handled in the batch stays pending and is delivered again.
        """
        self._check_open()
        gate = Gate(dedup=dedup, drop_expired=drop_expired, ordered=ordered, dedup_size=dedup_size)
        sub = Subscription(topic_name(topic), group or self.group, consumer or self.consumer, handler, gate, on_drop,
                           after_batch)
        sub.task = asyncio.get_running_loop().create_task(self._consume(sub), name=f"bus:{sub.topic}:{sub.consumer}")
        self._subs.append(sub)
        return sub

    async def dead_letters(self, topic: Topic | str, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters of ``topic``."""
        return await self._read_dead(self.dead_stream(topic), count)

    async def close(self) -> None:
        """Stop every subscription of this bus and release the transport."""
        self._closed = True
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()
        await self._close_transport()

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return when the transport answers; raise TransientError when it does not."""

    # ------------------------------------------------------- adapter primitives
    @abc.abstractmethod
    async def _append(self, stream: str, fields: dict[str, str]) -> str: ...

    async def _append_many(self, stream: str, fields: Sequence[dict[str, str]]) -> list[str]:
        """Append several entries in order (adapters override it to use one round trip)."""
        return [await self._append(stream, f) for f in fields]

    @abc.abstractmethod
    async def _ensure_group(self, stream: str, group: str) -> None: ...

    @abc.abstractmethod
    async def _read_new(self, stream: str, group: str, consumer: str, count: int, block: float) -> list[RawEntry]:
        """Entries never delivered to the group (deliveries=1), waiting up to ``block`` seconds."""

    @abc.abstractmethod
    async def _read_pending(self, stream: str, group: str, consumer: str, after: str, count: int) -> list[RawEntry]:
        """This consumer's pending entries with id > ``after``, delivered once more (count included)."""

    @abc.abstractmethod
    async def _claim_idle(self, stream: str, group: str, consumer: str, idle: float) -> int:
        """Move entries pending longer than ``idle`` seconds at other consumers to this one."""

    @abc.abstractmethod
    async def _settle(self, stream: str, group: str, ack: Sequence[str], dead: Sequence[DeadLetter],
                      dead_stream: str) -> None:
        """Append ``dead`` to ``dead_stream`` and acknowledge ``ack`` (which includes the dead ids)."""

    @abc.abstractmethod
    async def _read_dead(self, dead_stream: str, count: int) -> list[DeadLetter]: ...

    @abc.abstractmethod
    async def _close_transport(self) -> None: ...

    # --------------------------------------------------------------- the loop
    def _check_open(self) -> None:
        if self._closed:
            raise TransientError("bus is closed")

    async def _consume(self, sub: Subscription) -> None:
        loop = asyncio.get_running_loop()
        conn_backoff = Backoff(self.retry_base_seconds, self.retry_max_seconds)
        retry_backoff = Backoff(self.retry_base_seconds, self.retry_max_seconds)
        state = _LoopState()
        while not sub.stopping:
            try:
                if not state.group_ready:
                    await self._ensure_group(self.stream(sub.topic), sub.group)
                    state.group_ready = True
                await self._step(sub, state, loop.time(), retry_backoff)
                conn_backoff.reset()
            except asyncio.CancelledError:
                raise
            except TransientError as exc:
                self.stats.reconnects += 1
                delay = conn_backoff.next()
                log.warning("bus %s consumer %s: %s; retrying in %.2fs", sub.topic, sub.consumer, exc, delay)
                state.restart()
                await asyncio.sleep(delay)
            except Exception:  # a bug in the loop must not silently end consumption
                log.exception("bus %s consumer %s: unexpected error", sub.topic, sub.consumer)
                state.restart()
                await asyncio.sleep(conn_backoff.next())

    async def _step(self, sub: Subscription, state: _LoopState, now: float, retry_backoff: Backoff) -> None:
        stream = self.stream(sub.topic)
        if state.sweep_at is not None and now >= state.sweep_at:
            if state.cursor == "0":
                await self._claim_idle(stream, sub.group, sub.consumer, self.claim_idle_seconds)
            entries = await self._read_pending(stream, sub.group, sub.consumer, state.cursor, self.batch)
            if not entries:
                state.end_sweep(now, retry_backoff, self.sweep_seconds)
                return
            state.cursor = entries[-1].id
            state.failed_in_sweep |= await self._handle(sub, entries)
            return
        wait = self.block_seconds if state.sweep_at is None else max(0.0, min(self.block_seconds, state.sweep_at - now))
        entries = await self._read_new(stream, sub.group, sub.consumer, self.batch, wait)
        retry = await self._handle(sub, entries)
        if retry and (state.sweep_at is None or state.sweep_at > now + self.retry_base_seconds):
            state.sweep_at = now + retry_backoff.next()

    async def _handle(self, sub: Subscription, entries: list[RawEntry]) -> bool:
        """Process a batch; settle acks and dead letters in one call. True when some entry must be retried."""
        if not entries:
            return False
        ack: list[str] = []
        dead: list[DeadLetter] = []
        handled: list[tuple[str, Message]] = []
        retry = False
        latest = sub.gate.latest() if sub.after_batch is not None else {}
        for entry in entries:
            outcome = await self._process(sub, entry)
            if outcome is None:
                retry = True
                continue
            if isinstance(outcome, Message):
                sub.gate.record(outcome)
                handled.append((entry.id, outcome))
                continue
            ack.append(entry.id)
            if isinstance(outcome, DeadLetter):
                dead.append(outcome)
        if handled and not await self._after_batch(sub, len(handled)):
            sub.gate.undo([m for _, m in handled], latest)
            handled, retry = [], True
        ack.extend(entry_id for entry_id, _ in handled)
        if ack:
            await self._settle(self.stream(sub.topic), sub.group, ack, dead, self.dead_stream(sub.topic))
            for d in dead:
                self.stats.dead_lettered[(sub.topic, d.reason)] += 1
        self.stats.handled[sub.topic] += len(handled)
        return retry

    async def _after_batch(self, sub: Subscription, handled: int) -> bool:
        if sub.after_batch is None:
            return True
        try:
            await sub.after_batch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.failed[sub.topic] += handled
            log.warning("bus %s: after_batch failed, %d handled entries stay pending: %s: %s", sub.topic, handled,
                        type(exc).__name__, exc)
            return False
        return True

    async def _process(self, sub: Subscription, entry: RawEntry) -> DeadLetter | Message | bool | None:
        """Message: handled (ack after the batch). True: dropped (ack). DeadLetter: dead-letter it.
        None: leave pending for a retry."""
        try:
            message = Envelope.open_fields(entry.fields)
        except MessageError as exc:
            return self._dead(sub, entry, DropReason.MALFORMED, str(exc))
        if entry.deliveries > self.max_deliveries:
            return self._dead(sub, entry, DropReason.MAX_DELIVERIES,
                              f"delivered {entry.deliveries} times (max_deliveries={self.max_deliveries})")
        reason = sub.gate.check(message, self.clock.now())
        if reason is not None:
            self.stats.dropped[(sub.topic, reason)] += 1
            await self._notify_drop(sub, message, reason)
            return True
        try:
            await sub.handler(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            self.stats.failed[sub.topic] += 1
            if entry.deliveries >= self.max_deliveries:
                return self._dead(sub, entry, DropReason.MAX_DELIVERIES,
                                  f"handler failed {entry.deliveries} times; last: {why}")
            log.warning("bus %s entry %s: handler failed (delivery %d): %s", sub.topic, entry.id, entry.deliveries, why)
            return None
        return message

    def _dead(self, sub: Subscription, entry: RawEntry, reason: DropReason, detail: str) -> DeadLetter:
        log.warning("bus %s entry %s dead-lettered: %s: %s", sub.topic, entry.id, reason.value, detail)
        return DeadLetter(topic=sub.topic, entry_id=entry.id, reason=reason, detail=detail,
                          deliveries=entry.deliveries, fields=dict(entry.fields), dead_at=self.clock.now())

    async def _notify_drop(self, sub: Subscription, message: Message, reason: DropReason) -> None:
        if sub.on_drop is None:
            return
        try:
            await sub.on_drop(message, reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing drop hook must not re-deliver a message we decided to drop
            log.warning("bus %s on_drop(%s) failed: %s: %s", sub.topic, reason.value, type(exc).__name__, exc)


@dataclasses.dataclass(slots=True)
class _LoopState:
    """Where a consumer is: sweeping its pending entries (from ``cursor``) or reading new ones."""

    sweep_at: float | None = 0.0  # read own pending entries first
    cursor: str = "0"
    failed_in_sweep: bool = False
    group_ready: bool = False

    def restart(self) -> None:
        self.sweep_at, self.cursor, self.failed_in_sweep, self.group_ready = 0.0, "0", False, False

    def end_sweep(self, now: float, retry_backoff: Backoff, sweep_seconds: float) -> None:
        self.cursor = "0"
        if self.failed_in_sweep:
            self.sweep_at = now + retry_backoff.next()
        else:
            retry_backoff.reset()
            self.sweep_at = now + sweep_seconds
        self.failed_in_sweep = False

