"""The MessageBus contract on Redis Streams, plus Redis going away and coming back.

Contract runs use the shared Redis at 127.0.0.1:6379 with a unique stream prefix per test and
delete their keys afterwards. Outage tests start their own redis-server on a free port (the shared
one must not be stopped), kill it, and restart it on the same port.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from l2_tactical.bus import DropReason, Topic
from l2_tactical.errors import TransientError
from tests.test_bus_memory import CONTRACT, BusMaker, Recorder, maker, real_orders, real_snapshot, wait_until

pytestmark = pytest.mark.service
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A fresh stream prefix on the shared Redis; its keys are deleted after the test."""
    import redis

    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.parametrize("check", CONTRACT, ids=lambda c: c.__name__.removeprefix("check_"))
def test_redis_bus_contract(check: Callable[[BusMaker], Awaitable[None]], redis_url: str, prefix: str) -> None:
    asyncio.run(asyncio.wait_for(check(maker(redis_url, prefix)), 30))


def test_redis_bus_dead_letter_stream_is_named_after_the_topic(redis_url: str, prefix: str) -> None:
    import redis

    async def run() -> None:
        bus = maker(redis_url, prefix)(consumer="c1")
        await bus.subscribe(Topic.L2_ORDERS, Recorder())
        await bus.publish_raw(Topic.L2_ORDERS, {"type": "OrderIntent", "payload": "[]"})
        await wait_until(lambda: sum(bus.stats.dead_lettered.values()) == 1, what="dead letter")
        await bus.close()

    asyncio.run(run())
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    [(_, fields)] = client.xrange(f"{prefix}:dead:l2.orders")
    client.close()
    assert fields["reason"] == DropReason.MALFORMED.value
    assert "missing field" in fields["detail"]


def _stream_entries(redis_url: str, stream: str) -> list[dict[str, str]]:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    entries = [fields for _, fields in client.xrange(stream)]
    client.close()
    return entries


def test_redis_account_snapshots_have_their_stream_and_each_group_reads_it(redis_url: str, prefix: str) -> None:
    """``l1.account`` is an ordinary topic stream: its own key, consumer groups created by subscribing,
    a group that subscribes later still reads the snapshots published before it existed."""
    import redis

    snaps = [real_snapshot(n, bar=n) for n in (1, 2)]

    async def run() -> None:
        pub = maker(redis_url, prefix)(consumer="l1-1")
        for snap in snaps:
            await pub.publish(Topic.L1_ACCOUNT, snap)
        late = maker(redis_url, prefix)(group="l2", consumer="l2-1")
        rec = Recorder()
        await late.subscribe(Topic.L1_ACCOUNT, rec)
        await wait_until(lambda: len(rec.got) == 2, what="the snapshots published before the group existed")
        assert rec.got == snaps
        await late.close(), await pub.close()

    asyncio.run(run())
    entries = _stream_entries(redis_url, f"{prefix}:l1.account")
    assert [(e["type"], e["payload"]) for e in entries] == [("AccountSnapshot", s.to_json()) for s in snaps]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    groups = {g["name"]: g for g in client.xinfo_groups(f"{prefix}:l1.account")}
    client.close()
    assert set(groups) == {"l2"} and groups["l2"]["pending"] == 0


@pytest.mark.parametrize("scripts", [True, False], ids=["batch-script", "pipeline-fallback"])
def test_redis_bus_concurrent_publishes_land_once_each_in_call_order(redis_url: str, prefix: str,
                                                                   scripts: bool) -> None:
    """Concurrent publishes share round trips (one in flight, the rest batched); where Redis refuses
    scripts the batch goes as a pipeline. Either way every message is appended once, in call order,
    with the envelope a lone publish writes."""
    from redis import exceptions as rex

    orders = real_orders(40)

    async def run() -> list[str]:
        bus = maker(redis_url, prefix)(consumer="pub")
        script, batches = bus._xadd_batch, []  # type: ignore[attr-defined]

        async def batch(**kw: Any) -> Any:
            batches.append(len(kw["keys"]))
            if not scripts:
                raise rex.ResponseError("ERR unknown command 'EVALSHA'")
            return await script(**kw)

        bus._xadd_batch = batch  # type: ignore[attr-defined]
        ids = await asyncio.gather(*(bus.publish(Topic.L2_ORDERS, o) for o in orders))
        ids += await bus.publish_many(Topic.L2_ORDERS, orders[:3])
        assert batches == ([1, 1] if scripts else [1])  # the 39 queued publishes as one batch, then the three
        assert bus._script_ok is scripts  # type: ignore[attr-defined]
        await bus.close()
        return ids

    ids = asyncio.run(run())
    entries = _stream_entries(redis_url, f"{prefix}:l2.orders")
    assert len(set(ids)) == len(ids) == len(entries) == 43
    assert [e["payload"] for e in entries] == [o.to_json() for o in [*orders, *orders[:3]]]
    assert {tuple(sorted(e)) for e in entries} == {("correlation_id", "payload", "published_at", "type")}


def test_redis_bus_batched_publish_fails_only_the_entry_redis_refuses(redis_url: str, prefix: str) -> None:
    """One entry of a batch Redis refuses (its key is not a stream) fails that caller alone."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set(f"{prefix}:broken", "not a stream")
    client.close()
    orders = real_orders(6)

    async def run() -> list[Any]:
        bus = maker(redis_url, prefix)(consumer="pub")
        calls = [bus.publish(Topic.L2_ORDERS, o) for o in orders[:3]]
        calls.append(bus.publish_raw("broken", {"type": "OrderIntent", "payload": "{}"}))
        calls += [bus.publish(Topic.L2_ORDERS, o) for o in orders[3:]]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await bus.close()
        return results

    results = asyncio.run(run())
    assert isinstance(results[3], redis.exceptions.ResponseError) and "WRONGTYPE" in str(results[3])
    assert all(isinstance(r, str) for i, r in enumerate(results) if i != 3)
    assert [e["payload"] for e in _stream_entries(redis_url, f"{prefix}:l2.orders")] == [o.to_json() for o in orders]


# ---------------------------------------------------------------- own server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A private redis-server; ``persistent`` keeps an fsync-always append-only file across restarts."""

    def __init__(self, workdir: Path, persistent: bool) -> None:
        self.port, self.workdir, self.persistent = _free_port(), workdir, persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *aof,
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def own_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server binary not found; CI must run the Redis outage tests")
        pytest.skip("redis-server binary not found (install redis-server to run the outage tests)")
    server = RedisProcess(tmp_path, persistent=getattr(request, "param", True))
    server.start()
    yield server
    server.kill()


async def _publish_all(bus: object, orders: list, sent: list[str]) -> None:
    """Publish like L2 does: a publish that fails for the bus being down is retried, never skipped."""
    for o in orders:
        while True:
            try:
                await bus.publish(Topic.L2_ORDERS, o)  # type: ignore[attr-defined]
                break
            except TransientError:
                await asyncio.sleep(0.05)
        sent.append(o.order_id)
        await asyncio.sleep(0.01)


async def _outage(server: RedisProcess, down_seconds: float) -> None:
    make = maker(server.url, "fault")
    pub = make(consumer="l2", retry_base_seconds=0.05, retry_max_seconds=0.5)
    con = make(consumer="l1-a", retry_base_seconds=0.05, retry_max_seconds=0.5)
    rec = Recorder()
    await con.subscribe(Topic.L2_ORDERS, rec)
    orders = real_orders(160)
    sent: list[str] = []
    publisher = asyncio.create_task(_publish_all(pub, orders, sent))
    await wait_until(lambda: len(rec.got) >= 40, what="traffic before the outage")
    server.kill()
    with pytest.raises(TransientError):
        await con.ping()
    await asyncio.sleep(down_seconds)
    assert not publisher.done()  # it was held back, not skipping orders
    server.start()
    await asyncio.wait_for(publisher, 60)
    await wait_until(lambda: len(set(rec.ids())) == len(orders), timeout=30, what="every order after restart")
    assert sorted(rec.ids()) == sorted(o.order_id for o in orders)
    assert max(Counter(rec.ids()).values()) == 1  # redelivered entries were dropped as duplicates
    assert con.stats.reconnects >= 1
    await pub.close(), await con.close()


@pytest.mark.timeout(120)
def test_redis_bus_loses_nothing_when_redis_is_down_3s(own_redis: RedisProcess) -> None:
    asyncio.run(_outage(own_redis, 3.0))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_redis_bus_loses_nothing_when_redis_is_down_10s(own_redis: RedisProcess) -> None:
    asyncio.run(_outage(own_redis, 10.0))


@pytest.mark.parametrize("own_redis", [False], indirect=True, ids=["no-persistence"])
@pytest.mark.timeout(120)
def test_redis_bus_resumes_after_redis_restarts_without_its_data(own_redis: RedisProcess) -> None:
    async def run() -> None:
        make = maker(own_redis.url, "fault")
        pub, con = make(consumer="l2"), make(consumer="l1-a", retry_base_seconds=0.05, retry_max_seconds=0.5)
        rec = Recorder()
        await con.subscribe(Topic.L2_ORDERS, rec)
        before, after = real_orders(5), real_orders(5, start=5)
        for o in before:
            await pub.publish(Topic.L2_ORDERS, o)
        await wait_until(lambda: len(rec.got) == 5)
        own_redis.kill()
        await asyncio.sleep(1.0)
        own_redis.start()  # empty: the stream and the consumer group are gone
        for o in after:
            await _publish_all(pub, [o], [])
        await wait_until(lambda: len(rec.got) == 10, timeout=20, what="orders after an empty restart")
        assert rec.got == before + after
        await pub.close(), await con.close()

    asyncio.run(run())
