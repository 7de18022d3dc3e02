"""Value types of the bus and the per-subscription gate (duplicates, expiry, order).

>>> from datetime import datetime, timezone
>>> from l2_tactical.messages import Heartbeat
>>> t = datetime(2024, 1, 1, tzinfo=timezone.utc)
>>> env = Envelope.wrap(Heartbeat(sender="l1", timestamp=t, sequence=3), t)
>>> Envelope.from_fields(env.to_fields()).open() == Heartbeat(sender="l1", timestamp=t, sequence=3)
True
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from l2_tactical.messages import MESSAGE_TYPES, Heartbeat, Message, MessageError, StrategicDecision

ENVELOPE_FIELDS = ("type", "payload", "correlation_id", "published_at")


class DropReason(enum.StrEnum):
    """Why an entry was not handed to the handler (dropped) or was dead-lettered."""

    DUPLICATE = "duplicate"            # dropped: this subscription already handled that message id
    EXPIRED = "expired"                # dropped: expires_at has passed
    OUT_OF_ORDER = "out_of_order"      # dropped: older than the last decision / heartbeat handled
    MALFORMED = "malformed_message"    # dead-lettered at once: does not decode
    MAX_DELIVERIES = "max_deliveries"  # dead-lettered: handler failed max_deliveries times


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """What travels on a stream: the message's type name, its JSON, a correlation id, the publish time."""

    type: str
    payload: str
    correlation_id: str
    published_at: datetime

    @classmethod
    def wrap(cls, message: Message, now: datetime) -> Envelope:
        corr = getattr(message, "correlation_id", "") or message_key(message) or ""
        return cls(type=type(message).__name__, payload=message.to_json(), correlation_id=corr, published_at=now)

    def to_fields(self) -> dict[str, str]:
        return {"type": self.type, "payload": self.payload, "correlation_id": self.correlation_id,
                "published_at": self.published_at.isoformat()}

    @staticmethod
    def fields_of(message: Message, published_at: str) -> dict[str, str]:
        """``Envelope.wrap(message, now).to_fields()`` with ``published_at = now.isoformat()`` given (the hot path)."""
        corr = getattr(message, "correlation_id", "") or message_key(message) or ""
        return {"type": type(message).__name__, "payload": message.to_json(), "correlation_id": corr,
                "published_at": published_at}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Envelope:
        missing = [k for k in ENVELOPE_FIELDS if k not in fields]
        if missing:
            raise MessageError(f"envelope: missing field(s) {missing} (got {sorted(fields)})")
        try:
            published = datetime.fromisoformat(fields["published_at"])
        except (TypeError, ValueError):
            raise MessageError(f"envelope.published_at={fields['published_at']!r}: not an ISO-8601 timestamp") from None
        return cls(type=fields["type"], payload=fields["payload"], correlation_id=fields["correlation_id"],
                   published_at=published)

    def open(self) -> Message:
        """Decode the payload into its message type; MessageError names what is wrong."""
        return _open(self.type, self.payload)

    @staticmethod
    def open_fields(fields: Mapping[str, str]) -> Message:
        """``Envelope.from_fields(fields).open()`` (the same checks and errors) without building the Envelope."""
        published = fields.get("published_at")
        if type(published) is not str or "type" not in fields or "payload" not in fields \
                or "correlation_id" not in fields:
            return Envelope.from_fields(fields).open()  # its error names what is missing or wrong
        try:
            datetime.fromisoformat(published)
        except ValueError:
            return Envelope.from_fields(fields).open()
        return _open(fields["type"], fields["payload"])


def _open(type_name: str, payload: str) -> Message:
    cls = MESSAGE_TYPES.get(type_name)
    if cls is None:
        raise MessageError(f"envelope.type={type_name!r}: unknown message type (known: {sorted(MESSAGE_TYPES)})")
    return cls.from_json(payload)


@dataclasses.dataclass(frozen=True, slots=True)
class RawEntry:
    """One stream entry as an adapter read it; ``deliveries`` counts this delivery."""

    id: str
    fields: Mapping[str, str]
    deliveries: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """An entry given up on, with the reason and the raw fields it arrived with."""

    topic: str
    entry_id: str
    reason: DropReason
    detail: str
    deliveries: int
    fields: Mapping[str, str]
    dead_at: datetime

    @property
    def payload(self) -> str:
        return self.fields.get("payload", "")

    def to_fields(self) -> dict[str, str]:
        return {"topic": self.topic, "entry_id": self.entry_id, "reason": self.reason.value, "detail": self.detail,
                "deliveries": str(self.deliveries), "payload": self.payload,
                "raw": json.dumps(dict(self.fields), sort_keys=True), "dead_at": self.dead_at.isoformat()}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> DeadLetter:
        try:
            return cls(topic=fields["topic"], entry_id=fields["entry_id"], reason=DropReason(fields["reason"]),
                       detail=fields["detail"], deliveries=int(fields["deliveries"]),
                       fields=json.loads(fields["raw"]), dead_at=datetime.fromisoformat(fields["dead_at"]))
        except (KeyError, ValueError) as exc:
            raise MessageError(f"dead letter {dict(fields)!r}: {exc}") from None


@dataclasses.dataclass(slots=True)
class BusStats:
    """Counters of one bus instance, by topic (and reason)."""

    published: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    handled: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    dropped: collections.Counter[tuple[str, DropReason]] = dataclasses.field(default_factory=collections.Counter)
    dead_lettered: collections.Counter[tuple[str, DropReason]] = dataclasses.field(
        default_factory=collections.Counter)
    reconnects: int = 0

    def as_dict(self) -> dict[str, Any]:
        def by_reason(c: collections.Counter[tuple[str, DropReason]]) -> dict[str, int]:
            return {f"{t}:{r.value}": n for (t, r), n in sorted(c.items())}

        return {"published": dict(self.published), "handled": dict(self.handled), "failed": dict(self.failed),
                "dropped": by_reason(self.dropped), "dead_lettered": by_reason(self.dead_lettered),
                "reconnects": self.reconnects}


class Backoff:
    """Exponential backoff with equal jitter: the n-th delay is in [d/2, d], d = min(cap, base * 2**n).

    >>> b = Backoff(0.1, 1.0, rng=random.Random(0))
    >>> [0.05 <= b.next() <= 0.1, 0.1 <= b.next() <= 0.2]
    [True, True]
    >>> _ = [b.next() for _ in range(2)]  # 0.4, 0.8
    >>> all(0.5 <= b.next() <= 1.0 for _ in range(10))  # capped at 1.0
    True
    """

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"Backoff(base={base!r}, cap={cap!r}): need 0 < base <= cap")
        self.base, self.cap = base, cap
        self._rng = rng or random.Random()
        self._n = 0

    def next(self) -> float:
        d = min(self.cap, self.base * 2.0 ** min(self._n, 60))
        self._n += 1
        return d / 2 + self._rng.uniform(0.0, d / 2)

    def reset(self) -> None:
        self._n = 0


def message_key(message: Message) -> str | None:
    """The id by which duplicates of a message are recognised (None: the type has no id)."""
    for attr in ("order_id", "report_id", "alert_id", "decision_id", "signal_id", "snapshot_id"):
        value = getattr(message, attr, None)
        if value:
            return f"{type(message).__name__}:{value}"
    if isinstance(message, Heartbeat):
        return f"Heartbeat:{message.sender}:{message.sequence}:{message.timestamp.isoformat()}"
    return None


def _order_key(message: Message) -> tuple[str, tuple[Any, ...]] | None:
    if isinstance(message, StrategicDecision):
        return "StrategicDecision", (message.timestamp,)
    if isinstance(message, Heartbeat):
        return f"Heartbeat:{message.sender}", (message.timestamp, message.sequence)
    return None


class Gate:
    """Decides, before the handler runs, whether a message is a duplicate, expired or out of order."""

    def __init__(self, *, dedup: bool, drop_expired: bool, ordered: bool, dedup_size: int = 100_000) -> None:
        if dedup_size < 1:
            raise ValueError(f"dedup_size={dedup_size!r}: must be >= 1")
        self.dedup, self.drop_expired, self.ordered = dedup, drop_expired, ordered
        self._size = dedup_size
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._latest: dict[str, tuple[Any, ...]] = {}

    def check(self, message: Message, now: datetime) -> DropReason | None:
        key = message_key(message)
        if self.dedup and key is not None and key in self._seen:
            return DropReason.DUPLICATE
        expires_at = getattr(message, "expires_at", None)
        if self.drop_expired and expires_at is not None and now >= expires_at:
            return DropReason.EXPIRED
        order = _order_key(message) if self.ordered else None
        if order is not None and order[0] in self._latest and order[1] < self._latest[order[0]]:
            return DropReason.OUT_OF_ORDER
        return None

    def record(self, message: Message) -> None:
        """Remember a handled message (call only after its handler succeeded)."""
        key = message_key(message)
        if self.dedup and key is not None:
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
        order = _order_key(message) if self.ordered else None
        if order is not None and (order[0] not in self._latest or order[1] > self._latest[order[0]]):
            self._latest[order[0]] = order[1]

    def latest(self) -> dict[str, tuple[Any, ...]]:
        """The ordering state, to :meth:`undo` a batch with."""
        return dict(self._latest)

    def undo(self, messages: list[Message], latest: dict[str, tuple[Any, ...]]) -> None:
        """Forget recorded ``messages`` whose batch was not acknowledged after all (they come again)."""
        for message in messages:
            key = message_key(message)
            if key is not None:
                self._seen.pop(key, None)
        self._latest = latest
