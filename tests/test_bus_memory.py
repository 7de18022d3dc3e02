"""MessageBus contract, run here on the in-process adapter and in test_bus_redis.py on Redis Streams.

Each ``check_*`` coroutine is one clause of the contract; it takes a ``BusMaker`` that opens a
bus on the transport under test (same streams for every call within one test).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from l2_tactical.bus import DropReason, MessageBus, Topic, open_bus
from l2_tactical.bus.memory import broker
from l2_tactical.clock import SimulatedClock, SystemClock
from l2_tactical.data.candles import load_candles
from l2_tactical.errors import ConfigError, TransientError
from l2_tactical.messages import (
    AccountPosition,
    AccountSnapshot,
    Heartbeat,
    Message,
    OrderIntent,
    Regime,
    Side,
    StrategicDecision,
)

DATA = Path(__file__).resolve().parent.parent / "data"
BusMaker = Callable[..., MessageBus]
FAST = {"retry_base_seconds": 0.01, "retry_max_seconds": 0.05, "block_seconds": 0.02}


# ------------------------------------------------------------------ helpers


def real_orders(n: int, *, start: int = 0, expires_in: timedelta | None = None) -> list[OrderIntent]:
    """Buy orders at real BTCUSDT 1m closes, stop under the bar's low (bars from ``start``)."""
    frame = load_candles(DATA / "BTCUSDT-1m.csv.gz").frame.iloc[start:start + n]
    orders = []
    for ts, row in frame.iterrows():
        t = ts.to_pydatetime() + timedelta(minutes=1)
        orders.append(OrderIntent(signal_id=f"sig-{ts.isoformat()}", symbol="BTCUSDT", side=Side.BUY, qty=0.001,
                                  price=float(row.close), stop_loss=round(float(row.low) * 0.99, 2), timestamp=t,
                                  expires_at=None if expires_in is None else t + expires_in))
    return orders


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


class Recorder:
    """A handler that records what it got and can fail on chosen ids."""

    def __init__(self, fail: Callable[[Message], bool] = lambda m: False) -> None:
        self.got: list[Message] = []
        self.calls: Counter[str] = Counter()
        self.fail = fail

    async def __call__(self, message: Message) -> None:
        self.calls[_id(message)] += 1
        if self.fail(message):
            raise RuntimeError(f"refusing {_id(message)}")
        self.got.append(message)

    def ids(self) -> list[str]:
        return [_id(m) for m in self.got]


def _id(m: Message) -> str:
    return getattr(m, "order_id", None) or getattr(m, "decision_id", None) or f"hb{getattr(m, 'sequence', '?')}"


# ----------------------------------------------------------- contract checks


async def check_round_trip_delivers_each_message_once_in_order(make: BusMaker) -> None:
    pub, sub = make(consumer="pub"), make(consumer="c1")
    rec = Recorder()
    await sub.subscribe(Topic.L2_ORDERS, rec)
    orders = real_orders(20)
    for o in orders:
        await pub.publish(Topic.L2_ORDERS, o)
    await wait_until(lambda: len(rec.got) == len(orders), what="20 orders")
    assert rec.got == orders
    await sub.close()
    again = make(consumer="c1")  # a restart finds nothing pending: every entry was acknowledged
    rec2 = Recorder()
    await again.subscribe(Topic.L2_ORDERS, rec2)
    await asyncio.sleep(0.2)
    assert rec2.got == []
    await pub.close(), await again.close()


async def check_failed_handler_gets_message_again(make: BusMaker) -> None:
    bus = make(consumer="c1")
    orders = real_orders(3)
    tries: Counter[str] = Counter()

    def flaky(m: Message) -> bool:
        tries[_id(m)] += 1
        return _id(m) == orders[1].order_id and tries[_id(m)] < 3

    rec = Recorder(flaky)
    await bus.subscribe(Topic.L2_ORDERS, rec)
    for o in orders:
        await bus.publish(Topic.L2_ORDERS, o)
    await wait_until(lambda: len(rec.got) == 3, what="all three handled")
    assert sorted(rec.ids()) == sorted(o.order_id for o in orders)
    assert rec.calls[orders[1].order_id] == 3
    assert await bus.dead_letters(Topic.L2_ORDERS) == []
    await bus.close()


async def check_poison_message_is_dead_lettered_after_max_deliveries(make: BusMaker) -> None:
    bus = make(consumer="c1", max_deliveries=4)
    orders = real_orders(5)
    poison = orders[2].order_id
    rec = Recorder(lambda m: _id(m) == poison)
    await bus.subscribe(Topic.L2_ORDERS, rec)
    for o in orders:
        await bus.publish(Topic.L2_ORDERS, o)
    await wait_until(lambda: bus.stats.dead_lettered[("l2.orders", DropReason.MAX_DELIVERIES)] == 1, what="dead letter")
    assert sorted(rec.ids()) == sorted(o.order_id for o in orders if o.order_id != poison)
    assert rec.calls[poison] == 4
    [dead] = await bus.dead_letters(Topic.L2_ORDERS)
    assert dead.reason is DropReason.MAX_DELIVERIES and dead.deliveries == 4
    assert f"refusing {poison}" in dead.detail
    assert OrderIntent.from_json(dead.payload) == orders[2]
    await asyncio.sleep(0.1)
    assert rec.calls[poison] == 4  # acknowledged: never delivered again
    await bus.close()


async def check_malformed_payloads_are_dead_lettered_and_consumer_goes_on(make: BusMaker) -> None:
    bus = make(consumer="c1")
    rec = Recorder()
    await bus.subscribe(Topic.L2_ORDERS, rec)
    good = real_orders(1)[0]
    envelope = {"type": "OrderIntent", "correlation_id": "x", "published_at": "2025-05-20T00:01:00+00:00"}
    bad_stop = dict(good.to_dict(), stop_loss=good.price * 1.01)  # a buy's stop above its price
    poison = [
        dict(envelope, payload="{not json"),
        dict(envelope, type="Mystery", payload=good.to_json()),
        dict(envelope, payload=OrderIntent.to_json(good).replace('"qty"', '"quantity"')),
        dict(envelope, payload=__import__("json").dumps(bad_stop)),
        {"payload": good.to_json()},
    ]
    for fields in poison:
        await bus.publish_raw(Topic.L2_ORDERS, fields)
    await bus.publish(Topic.L2_ORDERS, good)
    await wait_until(lambda: len(rec.got) == 1, what="the valid order after the poison")
    assert rec.got == [good]
    dead = await bus.dead_letters(Topic.L2_ORDERS)
    assert [d.reason for d in dead] == [DropReason.MALFORMED] * 5
    assert all(d.deliveries == 1 for d in dead)
    details = [d.detail for d in dead]
    assert "not JSON" in details[0]
    assert "'Mystery'" in details[1]
    assert "quantity" in details[2]
    assert "stop_loss" in details[3]
    assert "missing field" in details[4]
    assert [d.fields for d in dead] == poison
    await bus.close()


async def check_duplicates_are_dropped_with_a_reason(make: BusMaker) -> None:
    bus = make(consumer="c1")
    drops: list[tuple[str, DropReason]] = []

    async def on_drop(m: Message, reason: DropReason) -> None:
        drops.append((_id(m), reason))

    rec = Recorder()
    await bus.subscribe(Topic.L2_ORDERS, rec, on_drop=on_drop)
    a, b = real_orders(2)
    for o in (a, b, a, dataclasses.replace(a, reasoning="resent")):
        await bus.publish(Topic.L2_ORDERS, o)
    await wait_until(lambda: len(drops) == 2, what="two duplicate drops")
    assert rec.ids() == [a.order_id, b.order_id]
    assert drops == [(a.order_id, DropReason.DUPLICATE)] * 2
    assert bus.stats.dropped[("l2.orders", DropReason.DUPLICATE)] == 2
    await bus.close()


async def check_expired_messages_are_dropped_with_a_reason(make: BusMaker) -> None:
    orders = real_orders(3, expires_in=timedelta(minutes=2))
    clock = SimulatedClock(orders[0].timestamp)
    bus = make(consumer="c1", clock=clock)
    drops: list[tuple[str, DropReason]] = []

    async def on_drop(m: Message, reason: DropReason) -> None:
        drops.append((_id(m), reason))

    rec = Recorder()
    await bus.subscribe(Topic.L2_ORDERS, rec, on_drop=on_drop)
    clock.set(orders[0].timestamp + timedelta(minutes=2))  # order 0 expires now; 1 and 2 later
    for o in orders:
        await bus.publish(Topic.L2_ORDERS, o)
    await wait_until(lambda: len(rec.got) + len(drops) == 3, what="three outcomes")
    assert drops == [(orders[0].order_id, DropReason.EXPIRED)]
    assert rec.got == orders[1:]
    await bus.close()


async def check_out_of_order_decisions_and_heartbeats_are_dropped(make: BusMaker) -> None:
    bus = make(consumer="c1")
    rec = Recorder()
    await bus.subscribe(Topic.L3_DECISIONS, rec)
    t = datetime(2025, 5, 20, 1, tzinfo=timezone.utc)
    d = [StrategicDecision(regime=r, strength=0.5, target_exposure=0.3, risk_appetite=0.5, universe=("BTCUSDT",),
                           timestamp=t + timedelta(hours=h)) for r, h in
         ((Regime.TRENDING, 0), (Regime.RANGING, 2), (Regime.VOLATILE, 1), (Regime.TRENDING, 3))]
    for x in d:
        await bus.publish(Topic.L3_DECISIONS, x)
    hb = Recorder()
    await bus.subscribe(Topic.HEARTBEATS, hb)
    for seq in (1, 3, 2, 4):
        await bus.publish(Topic.HEARTBEATS, Heartbeat(sender="l1", timestamp=t, sequence=seq))
    await wait_until(lambda: len(rec.got) == 3 and len(hb.got) == 3, what="in-order messages")
    assert rec.got == [d[0], d[1], d[3]]
    assert [h.sequence for h in hb.got] == [1, 3, 4]  # type: ignore[attr-defined]
    assert bus.stats.dropped[("l3.decisions", DropReason.OUT_OF_ORDER)] == 1
    assert bus.stats.dropped[("heartbeats", DropReason.OUT_OF_ORDER)] == 1
    await bus.close()


async def check_restarted_consumer_reads_its_pending_entries_first(make: BusMaker) -> None:
    pub, first = make(consumer="pub"), make(consumer="l1-a")
    orders = real_orders(8)
    stuck = asyncio.Event()

    async def crashes_on_third(m: Message) -> None:
        if _id(m) == orders[2].order_id:
            stuck.set()
            await asyncio.Event().wait()  # hangs until the "process" dies

    await first.subscribe(Topic.L2_ORDERS, crashes_on_third)
    for o in orders[:5]:
        await pub.publish(Topic.L2_ORDERS, o)
    await asyncio.wait_for(stuck.wait(), 5)
    await first.close()  # dies mid-batch: its entries stay pending, unacknowledged
    for o in orders[5:]:
        await pub.publish(Topic.L2_ORDERS, o)
    restarted = make(consumer="l1-a")
    rec = Recorder()
    await restarted.subscribe(Topic.L2_ORDERS, rec)
    await wait_until(lambda: len(rec.got) == 8, what="all eight orders after restart")
    assert rec.got == orders  # the pending ones (0-4) first, then the new ones
    await pub.close(), await restarted.close()


async def check_idle_entries_of_a_vanished_consumer_are_claimed(make: BusMaker) -> None:
    pub, gone = make(consumer="pub"), make(consumer="l1-gone")
    orders = real_orders(4)
    started = asyncio.Event()

    async def hang(m: Message) -> None:
        started.set()
        await asyncio.Event().wait()

    await gone.subscribe(Topic.L2_ORDERS, hang)
    for o in orders:
        await pub.publish(Topic.L2_ORDERS, o)
    await asyncio.wait_for(started.wait(), 5)
    await gone.close()
    other = make(consumer="l1-other", claim_idle_seconds=0.2, sweep_seconds=0.1)
    rec = Recorder()
    await other.subscribe(Topic.L2_ORDERS, rec)
    await wait_until(lambda: len(rec.got) == 4, what="claimed orders")
    assert rec.got == orders
    await pub.close(), await other.close()


async def check_groups_each_see_all_and_consumers_of_a_group_share(make: BusMaker) -> None:
    pub = make(consumer="pub")
    l2 = make(group="l2", consumer="l2-1")
    w1, w2 = make(group="l1", consumer="w1", batch=1), make(group="l1", consumer="w2", batch=1)
    audit, r1, r2 = Recorder(), Recorder(), Recorder()
    await l2.subscribe(Topic.L2_ORDERS, audit)
    await w1.subscribe(Topic.L2_ORDERS, r1)
    await w2.subscribe(Topic.L2_ORDERS, r2)
    orders = real_orders(30)
    for o in orders:
        await pub.publish(Topic.L2_ORDERS, o)
    await wait_until(lambda: len(audit.got) == 30 and len(r1.got) + len(r2.got) == 30, what="both groups")
    assert audit.got == orders
    assert sorted(r1.ids() + r2.ids()) == sorted(o.order_id for o in orders)
    for b in (pub, l2, w1, w2):
        await b.close()


async def check_publish_rejects_wrong_type_and_bad_topic(make: BusMaker) -> None:
    bus = make(consumer="c1")
    hb = Heartbeat(sender="l2", timestamp=datetime(2025, 5, 20, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match=r"topic 'l2.orders' carries OrderIntent"):
        await bus.publish(Topic.L2_ORDERS, hb)
    with pytest.raises(ValueError, match="topic='L2 Orders'"):
        await bus.publish("L2 Orders", hb)
    await bus.close()
    with pytest.raises(TransientError, match="closed"):
        await bus.publish(Topic.HEARTBEATS, hb)


async def check_publish_many_appends_in_order_and_each_is_delivered_once(make: BusMaker) -> None:
    pub, sub = make(consumer="pub"), make(consumer="c1")
    rec = Recorder()
    await sub.subscribe(Topic.L2_ORDERS, rec)
    orders = real_orders(30)
    ids = await pub.publish_many(Topic.L2_ORDERS, orders)
    assert len(set(ids)) == len(orders)
    await wait_until(lambda: len(rec.got) == len(orders), what="30 orders")
    assert rec.got == orders and pub.stats.published["l2.orders"] == len(orders)
    with pytest.raises(ValueError, match=r"topic 'l2.orders' carries OrderIntent"):
        await pub.publish_many(Topic.L2_ORDERS, [orders[0], Heartbeat(sender="x", timestamp=orders[0].timestamp)])
    await pub.close(), await sub.close()


async def check_failed_after_batch_leaves_the_batch_pending_and_delivers_it_again(make: BusMaker) -> None:
    """after_batch is the batch's commit: until it succeeds nothing handled in the batch is acknowledged."""
    bus = make(consumer="c1")
    orders = real_orders(6)
    rec = Recorder()
    commits: list[list[str]] = []
    failures = {"left": 1}

    async def after_batch() -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("commit failed")
        commits.append(rec.ids())

    await bus.subscribe(Topic.L2_ORDERS, rec, after_batch=after_batch)
    await bus.publish_many(Topic.L2_ORDERS, orders)
    await wait_until(lambda: bool(commits) and commits[-1].count(orders[-1].order_id) >= 1, what="a good commit")
    want = [o.order_id for o in orders]
    assert set(rec.ids()) == set(want)
    assert all(rec.calls[i] == 2 for i in rec.ids()[:1])          # the failed batch came again (not dropped as dup)
    assert bus.stats.failed["l2.orders"] >= 1
    await bus.close()
    again = make(consumer="c1")                                     # all acknowledged once the commit succeeded
    rec2 = Recorder()
    await again.subscribe(Topic.L2_ORDERS, rec2)
    await asyncio.sleep(0.2)
    assert rec2.got == []
    await again.close()


def real_snapshot(sequence: int, *, bar: int = 0) -> AccountSnapshot:
    """L1's account holding 0.01 BTC bought at a real 1m close (stop under the bar's low), marked at it."""
    order = real_orders(1, start=bar)[0]
    held = AccountPosition(symbol="BTCUSDT", qty=0.01, avg_price=order.price, stop_loss=order.stop_loss,
                           opened_at=order.timestamp, mark=order.price)
    return AccountSnapshot(sender="l1", timestamp=order.timestamp, quote_asset="USDT",
                           cash=10_000.0 - 0.01 * order.price, positions=(held,), reports=sequence,
                           recent_report_ids=(f"rep-{sequence}",), sequence=sequence)


async def check_account_snapshots_travel_on_their_own_topic(make: BusMaker) -> None:
    pub, l2 = make(consumer="l1-1"), make(group="l2", consumer="l2-1")
    rec = Recorder()
    await l2.subscribe(Topic.L1_ACCOUNT, rec)
    snaps = [real_snapshot(n, bar=n) for n in (1, 2, 3)]
    for snap in (*snaps, snaps[1]):                                   # the last one again: a duplicate
        await pub.publish(Topic.L1_ACCOUNT, snap)
    await wait_until(lambda: l2.stats.dropped[("l1.account", DropReason.DUPLICATE)] == 1, what="the duplicate")
    assert rec.got == snaps and pub.stream(Topic.L1_ACCOUNT) == f"{pub.prefix}:l1.account"
    with pytest.raises(ValueError, match=r"topic 'l1.account' carries AccountSnapshot"):
        await pub.publish(Topic.L1_ACCOUNT, Heartbeat(sender="l1", timestamp=snaps[0].timestamp))
    with pytest.raises(ValueError, match=r"topic 'l1.reports' carries ExecutionReport"):
        await pub.publish(Topic.L1_REPORTS, snaps[0])
    await pub.close(), await l2.close()


CONTRACT: list[Callable[[BusMaker], Awaitable[None]]] = [
    check_round_trip_delivers_each_message_once_in_order,
    check_failed_handler_gets_message_again,
    check_poison_message_is_dead_lettered_after_max_deliveries,
    check_malformed_payloads_are_dead_lettered_and_consumer_goes_on,
    check_duplicates_are_dropped_with_a_reason,
    check_expired_messages_are_dropped_with_a_reason,
    check_out_of_order_decisions_and_heartbeats_are_dropped,
    check_restarted_consumer_reads_its_pending_entries_first,
    check_idle_entries_of_a_vanished_consumer_are_claimed,
    check_groups_each_see_all_and_consumers_of_a_group_share,
    check_publish_rejects_wrong_type_and_bad_topic,
    check_publish_many_appends_in_order_and_each_is_delivered_once,
    check_failed_after_batch_leaves_the_batch_pending_and_delivers_it_again,
    check_account_snapshots_travel_on_their_own_topic,
]


def maker(url: str, prefix: str) -> BusMaker:
    def make(**kw: Any) -> MessageBus:
        args: dict[str, Any] = dict(FAST, prefix=prefix, group="l1", consumer="c", max_deliveries=3,
                                    clock=SystemClock())
        args.update(kw)
        return open_bus(url, **args)

    return make


# ----------------------------------------------------------- in-process runs


@pytest.mark.parametrize("check", CONTRACT, ids=lambda c: c.__name__.removeprefix("check_"))
def test_memory_bus_contract(check: Callable[[BusMaker], Awaitable[None]]) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    asyncio.run(asyncio.wait_for(check(maker(f"memory://{name}", "t")), 20))


def test_memory_bus_survives_outage_and_resumes() -> None:
    async def run() -> None:
        name = f"test-{uuid.uuid4().hex[:8]}"
        make = maker(f"memory://{name}", "t")
        pub, bus = make(consumer="pub"), make(consumer="c1")
        rec = Recorder()
        await bus.subscribe(Topic.L2_ORDERS, rec)
        orders = real_orders(6)
        for o in orders[:3]:
            await pub.publish(Topic.L2_ORDERS, o)
        await wait_until(lambda: len(rec.got) == 3)
        broker(name).set_available(False)
        with pytest.raises(TransientError):
            await pub.publish(Topic.L2_ORDERS, orders[3])
        with pytest.raises(TransientError):
            await bus.ping()
        await wait_until(lambda: bus.stats.reconnects >= 2, what="reconnect attempts")
        broker(name).set_available(True)
        await bus.ping()
        for o in orders[3:]:
            await pub.publish(Topic.L2_ORDERS, o)
        await wait_until(lambda: len(rec.got) == 6, what="orders after the outage")
        assert rec.got == orders
        await pub.close(), await bus.close()

    asyncio.run(asyncio.wait_for(run(), 20))


def test_memory_buses_on_the_same_url_share_streams_and_others_do_not() -> None:
    async def run() -> None:
        name = f"test-{uuid.uuid4().hex[:8]}"
        a, b = maker(f"memory://{name}", "t")(consumer="a"), maker(f"memory://{name}", "t")(consumer="b")
        elsewhere = maker(f"memory://{name}-other", "t")(consumer="c")
        ra, rc = Recorder(), Recorder()
        await a.subscribe(Topic.L2_ORDERS, ra)
        await elsewhere.subscribe(Topic.L2_ORDERS, rc)
        order = real_orders(1)[0]
        await b.publish(Topic.L2_ORDERS, order)
        await wait_until(lambda: ra.got == [order])
        await asyncio.sleep(0.05)
        assert rc.got == []
        for x in (a, b, elsewhere):
            await x.close()

    asyncio.run(run())


def test_open_bus_rejects_unknown_scheme_and_bad_settings() -> None:
    with pytest.raises(ConfigError, match="kafka://x"):
        open_bus("kafka://x", prefix="t", group="g", consumer="c", max_deliveries=3, clock=SystemClock())
    with pytest.raises(ConfigError, match="max_deliveries=0"):
        open_bus("memory://", prefix="t", group="g", consumer="c", max_deliveries=0, clock=SystemClock())
    with pytest.raises(ConfigError, match="consumer='a b'"):
        open_bus("memory://", prefix="t", group="g", consumer="a b", max_deliveries=3, clock=SystemClock())
