"""Redis Streams adapter (redis-py's asyncio client; the only module that imports redis).

Mapping of the port's primitives:

* publish -> ``XADD stream MAXLEN ~ maxlen * type .. payload .. correlation_id .. published_at ..``;
  publish_many -> those XADDs in one pipeline (one round trip). Appends are coalesced: one writer
  task sends what was queued while its previous pipeline was in flight as the next pipeline, in
  call order (concurrent publishers share round trips and one connection instead of one each)
* new entries -> ``XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS stream >``
* own pending -> ``XREADGROUP ... STREAMS stream <after>`` pipelined with ``XPENDING`` for the delivery counts
* idle entries of a vanished consumer -> ``XAUTOCLAIM ... JUSTID`` (does not count as a delivery)
* settle -> ``XACK`` of the handled batch, pipelined with the consumer's next read (one round trip; flushed
  at close); with dead letters, one ``MULTI``: ``XADD`` each to ``{prefix}:dead:{topic}``, then ``XACK``

The client speaks RESP2 through :class:`BufferedRESP2Parser` (replies parsed from whole socket reads).

Connection failures, timeouts and a missing group (Redis restarted without its
data) surface as TransientError; the shared consumer loop backs off with jitter,
re-creates the group and re-reads pending entries before new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis._parsers import _AsyncRESP2Parser
from redis._parsers.socket import SERVER_CLOSED_CONNECTION_ERROR
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from l2_tactical.bus.gate import DeadLetter, RawEntry
from l2_tactical.bus.port import MessageBus
from l2_tactical.errors import TransientError


@contextlib.contextmanager
def _transient(what: str) -> Iterator[None]:
    """Turn Redis being unreachable (or having lost a group) into TransientError."""
    try:
        yield
    except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
        raise TransientError(f"redis {what}: {type(exc).__name__}: {exc}") from exc
    except rex.ResponseError as exc:
        if "NOGROUP" in str(exc):
            raise TransientError(f"redis {what}: consumer group missing ({exc})") from exc
        raise


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[bytes, bytes] | None) -> dict[str, str]:
    """Decode an entry's fields; undecodable bytes become a field that fails envelope decoding."""
    if not raw:
        return {}
    try:
        return {_text(k): _text(v) for k, v in raw.items()}
    except UnicodeDecodeError:
        return {"undecodable": repr(dict(raw))[:2000]}


def _entries(resp: Any) -> list[tuple[str, dict[str, str]]]:
    """Entries of the single stream in an XREADGROUP reply (RESP2 list or RESP3 dict)."""
    if not resp:
        return []
    streams = resp.items() if isinstance(resp, dict) else resp
    out = []
    for _name, items in streams:
        for item in items[0] if isinstance(items, list) and items and isinstance(items[0], list) else items:
            entry_id, raw = item
            out.append((_text(entry_id), _fields(raw)))
    return out


class _Incomplete(Exception):
    """The buffer ends inside the reply: read more."""


class BufferedRESP2Parser(_AsyncRESP2Parser):
    """redis-py's RESP2 parser, reading whole socket chunks and parsing replies from the buffer.

    The stock parser awaits the stream once per line and per bulk string (a dozen awaits per stream
    entry of an XREADGROUP reply); this one awaits only when the buffer holds no complete reply.
    Replies are the same values (bytes, int, None, lists, ResponseError instances; a connection-level
    error is raised), so redis-py's response callbacks apply unchanged. Bytes read past a reply stay
    buffered for the next one (pipeline replies arrive together).
    """

    async def read_response(self, disable_decoding: bool = False) -> Any:
        stream = self._stream
        if not self._connected or stream is None:
            raise rex.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
        if self._chunks:
            self._buffer += b"".join(self._chunks)
            self._chunks.clear()
        decode = not disable_decoding and self.encoder is not None and bool(self.encoder.decode_responses)
        while True:
            if self._buffer:
                try:
                    value, end = self._value(self._buffer, 0, decode)
                except _Incomplete:
                    pass
                else:
                    self._buffer = self._buffer[end:]
                    return value
            data = await stream.read(self._read_size)
            if not data:
                raise rex.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
            self._buffer += data

    def _value(self, buf: bytes, pos: int, decode: bool) -> tuple[Any, int]:
        """The reply starting at ``pos`` and the position after it; _Incomplete when ``buf`` ends first."""
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            raise _Incomplete
        kind = buf[pos]
        if kind == 36:  # $ bulk string
            n = int(buf[pos + 1:eol])
            if n < 0:
                return None, eol + 2
            start, stop = eol + 2, eol + 2 + n
            if len(buf) < stop + 2:
                raise _Incomplete
            return (self._decode(buf[start:stop]) if decode else buf[start:stop]), stop + 2
        if kind == 42:  # * array
            n = int(buf[pos + 1:eol])
            if n < 0:
                return None, eol + 2
            pos, out = eol + 2, []
            for _ in range(n):
                item, pos = self._value(buf, pos, decode)
                out.append(item)
            return out, pos
        if kind == 58:  # : integer
            return int(buf[pos + 1:eol]), eol + 2
        if kind == 43:  # + simple string
            return (self._decode(buf[pos + 1:eol]) if decode else buf[pos + 1:eol]), eol + 2
        if kind == 45:  # - error: returned (a pipeline reply), raised when it concerns the connection
            error = self.parse_error(buf[pos + 1:eol].decode("utf-8", errors="replace"))
            if isinstance(error, rex.ConnectionError):
                self._clear()
                raise error
            return error, eol + 2
        raise rex.InvalidResponse(f"Protocol Error: {buf[pos:eol]!r}")

    def _decode(self, value: bytes) -> Any:
        return self.encoder.decode(value) if self.encoder is not None else value


_XADD_BATCH = """
local batch = cjson.decode(ARGV[2])
local ids = {}
for k = 1, #batch do
  local e = batch[k]
  ids[k] = redis.pcall('XADD', KEYS[e[1]], 'MAXLEN', '~', ARGV[1], '*', unpack(e, 2))
end
return ids
"""
"""XADD of a batch: ARGV[1] maxlen, ARGV[2] JSON ``[[key index, field, value, ...], ...]``; per entry its
id, or its error (pcall: one bad entry does not stop the others, as in a pipeline)."""
_JSON = json.JSONEncoder()


def _script_rows(items: Sequence[_Append]) -> tuple[list[str], str] | None:
    """The streams (KEYS) and the JSON argument of :data:`_XADD_BATCH`; None unless every field is text."""
    keys: dict[str, int] = {}
    rows: list[list[Any]] = []
    for item in items:
        index = keys.setdefault(item.stream, len(keys) + 1)
        for fields in item.fields:
            row: list[Any] = [index]
            for name, value in fields.items():
                if type(name) is not str or type(value) is not str:
                    return None
                row += (name, value)
            rows.append(row)
    return list(keys), _JSON.encode(rows)


class _Append:
    """Entries of one publish call waiting for the writer, and the future its caller awaits."""

    __slots__ = ("done", "fields", "stream")

    def __init__(self, stream: str, fields: list[dict[str, str]], done: asyncio.Future[list[str]] | None) -> None:
        self.stream, self.fields, self.done = stream, fields, done

    def fail(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    def answer(self, replies: Sequence[Any]) -> None:
        errors = [r for r in replies if isinstance(r, BaseException)]
        if errors:
            self.fail(errors[0])
        elif self.done is not None and not self.done.done():
            self.done.set_result([_text(r) for r in replies])


class RedisStreamsBus(MessageBus):
    """:class:`MessageBus` over Redis Streams consumer groups."""

    def __init__(self, client: aioredis.Redis, *, maxlen: int = 100_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if maxlen < 1:
            raise ValueError(f"maxlen={maxlen!r}: must be >= 1")
        self._r = client
        self.maxlen = maxlen
        self._acks: dict[tuple[str, str], list[str]] = {}  # settled ids whose XACK rides on the next read
        self._queue: list[_Append] = []                    # appends waiting for the writer's next pipeline
        self._writer: asyncio.Task[None] | None = None
        self._busy = False                                 # an append is in flight
        self._script_ok = True                             # batches go through _XADD_BATCH
        self._xadd_batch = client.register_script(_XADD_BATCH)

    @classmethod
    def from_url(cls, url: str, *, maxlen: int = 100_000, **kwargs: Any) -> RedisStreamsBus:
        block = float(kwargs.get("block_seconds", 0.1))
        client = aioredis.Redis.from_url(
            url, decode_responses=False, socket_connect_timeout=1.0, socket_timeout=block + 5.0,
            retry=Retry(NoBackoff(), 1), health_check_interval=0, protocol=2, parser_class=BufferedRESP2Parser)
        return cls(client, maxlen=maxlen, **kwargs)

    async def ping(self) -> None:
        self._check_open()
        with _transient("ping"):
            await self._r.ping()

    async def _append(self, stream: str, fields: dict[str, str]) -> str:
        return (await self._enqueue(stream, [fields]))[0]

    async def _append_many(self, stream: str, fields: Sequence[dict[str, str]]) -> list[str]:
        return await self._enqueue(stream, list(fields))

    async def _enqueue(self, stream: str, fields: list[dict[str, str]]) -> list[str]:
        """Append now, or, while another append is in flight, queue for the writer's next pipeline.

        Raises TransientError when Redis is unreachable (then any prefix of ``fields`` may be appended).
        """
        if self._busy:
            done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
            self._queue.append(_Append(stream, fields, done))
            return await done
        self._busy = True
        try:
            with _transient("XADD"):
                if len(fields) == 1:
                    return [_text(await self._r.xadd(stream, fields[0], maxlen=self.maxlen,  # type: ignore[arg-type]
                                                      approximate=True))]
                replies = await self._send([_Append(stream, fields, None)])
            errors = [r for r in replies if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            return [_text(i) for i in replies]
        finally:
            if self._queue:  # what queued meanwhile goes next, in order, before any later call
                self._writer = asyncio.get_running_loop().create_task(self._write_queued(), name="redis-bus-writer")
            else:
                self._busy = False

    async def _send(self, items: Sequence[_Append]) -> list[Any]:
        """Append every entry of ``items`` in one round trip: per entry its id or its ResponseError.

        One EVALSHA of :data:`_XADD_BATCH` (the entries as one JSON argument: a single command to pack and
        a single reply to read, instead of one per entry); a pipeline of XADDs where scripts are refused.
        """
        rows = _script_rows(items) if self._script_ok else None
        if rows is not None:
            keys, blob = rows
            try:
                return list(await self._xadd_batch(keys=keys, args=[self.maxlen, blob]))
            except rex.NoScriptError:
                raise
            except rex.ResponseError:  # the script did not run (scripting unavailable): pipeline from now on
                self._script_ok = False
        pipe = self._r.pipeline(transaction=False)
        for item in items:
            for f in item.fields:
                pipe.xadd(item.stream, f, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        return list(await pipe.execute(raise_on_error=False))

    async def _write_queued(self) -> None:
        """Send the queue, one round trip per batch, until it is empty; each caller gets its ids or the error."""
        batch: list[_Append] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    with _transient("XADD"):
                        replies = await self._send(batch)
                except Exception as exc:
                    for item in batch:
                        item.fail(exc)
                else:
                    start = 0
                    for item in batch:
                        item.answer(replies[start:start + len(item.fields)])
                        start += len(item.fields)
                batch = []
        finally:  # also when cancelled (loop shutting down): nobody is left waiting
            gone = TransientError("redis XADD: bus writer stopped")
            for item in (*batch, *self._queue):
                item.fail(gone)
            self._queue = []
            self._busy = False

    async def _ensure_group(self, stream: str, group: str) -> None:
        with _transient("XGROUP CREATE"):
            try:
                await self._r.xgroup_create(stream, group, id="0", mkstream=True)
            except rex.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _pipe_with_acks(self, stream: str, group: str) -> tuple[Any, int]:
        """A pipeline that first acknowledges the entries settled since the last read (one round trip)."""
        pipe = self._r.pipeline(transaction=False)
        ids = self._acks.get((stream, group))
        if ids:
            pipe.xack(stream, group, *ids)
        return pipe, 1 if ids else 0

    async def _read_new(self, stream: str, group: str, consumer: str, count: int, block: float) -> list[RawEntry]:
        ms = int(block * 1000)
        with _transient("XREADGROUP"):
            pipe, skip = self._pipe_with_acks(stream, group)
            pipe.xreadgroup(group, consumer, {stream: ">"}, count=count, block=ms if ms > 0 else None)
            resp = (await pipe.execute())[skip]
        self._acks.pop((stream, group), None)
        return [RawEntry(i, f, 1) for i, f in _entries(resp)]

    async def _read_pending(self, stream: str, group: str, consumer: str, after: str, count: int) -> list[RawEntry]:
        with _transient("XREADGROUP pending"):
            pipe, skip = self._pipe_with_acks(stream, group)
            pipe.xreadgroup(group, consumer, {stream: after}, count=count)
            pipe.xpending_range(stream, group, min="-" if after == "0" else f"({after}", max="+", count=count,
                                consumername=consumer)
            resp, pending = (await pipe.execute())[skip:]
        self._acks.pop((stream, group), None)
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [RawEntry(i, f, counts.get(i, 1)) for i, f in _entries(resp)]

    async def _claim_idle(self, stream: str, group: str, consumer: str, idle: float) -> int:
        with _transient("XAUTOCLAIM"):
            resp = await self._r.xautoclaim(stream, group, consumer, min_idle_time=int(idle * 1000),
                                            start_id="0-0", count=self.batch, justid=True)
        return len(resp[1]) if isinstance(resp, list | tuple) and len(resp) > 1 else 0

    async def _settle(self, stream: str, group: str, ack: Sequence[str], dead: Sequence[DeadLetter],
                      dead_stream: str) -> None:
        if not dead:  # acknowledged together with the next read of this stream (or at close)
            self._acks.setdefault((stream, group), []).extend(ack)
            return
        with _transient("XACK"):
            pipe = self._r.pipeline(transaction=True)
            for d in dead:
                pipe.xadd(dead_stream, d.to_fields(), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
            pipe.xack(stream, group, *ack)
            await pipe.execute()

    async def _read_dead(self, dead_stream: str, count: int) -> list[DeadLetter]:
        with _transient("XRANGE"):
            items: Any = await self._r.xrange(dead_stream, count=count)
        return [DeadLetter.from_fields(_fields(raw)) for _, raw in items]

    async def _close_transport(self) -> None:
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await self._writer
        with contextlib.suppress(Exception):
            for (stream, group), ids in self._acks.items():
                await self._r.xack(stream, group, *ids)
        self._acks.clear()
        with contextlib.suppress(Exception):
            await self._r.aclose()
