"""L2BusAdapter against the real L1 (PaperExecutor + L1BusAdapter) over the in-process bus and Redis.

Fault tests (L2's half): no new risk while the bus is unreachable or L1's heartbeat is stale;
exits queued during an outage are delivered after it, in order; nothing risk-increasing from the
outage ever reaches L1.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from l1_operational.bus_adapter import L1BusAdapter
from l1_operational.executor import PaperExecutor
from l1_operational.journal import Journal
from l2_tactical.bus import Backoff, Topic, open_bus
from l2_tactical.bus.memory import broker
from l2_tactical.bus_adapter import L2BusAdapter
from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.messages import ReasonCode, Regime, RiskAlert, Side, SignalDirection, StrategicDecision
from l2_tactical.tactical_loop import TacticalLoop
from tests.test_tactical_loop import Scripted, day

CFG = L2Config.default().with_overrides({"bus.retry_base_seconds": 0.01, "bus.retry_max_seconds": 0.05})


class FakeLiveness:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def run(scenario, seconds: float = 120.0) -> None:
    """Run a scenario with a deadline: a hang fails in ``seconds`` with the stuck await in the traceback
    (``asyncio.wait_for`` cancels it there), not after pytest's 600 s timeout with the event loop's wait."""
    async def bounded():
        try:
            await asyncio.wait_for(scenario, seconds)
        except TimeoutError as exc:
            raise AssertionError(f"scenario still running after {seconds:.0f} s (hung; see the await above)") from exc

    asyncio.run(bounded())


async def until(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


class Rig:
    """L2 and L1 on one bus URL, one simulated clock; bars are driven in the canonical order."""

    def __init__(self, url: str, plan: dict, *, prefix: str, l2_url: str | None = None) -> None:
        self.clock = SimulatedClock(day()[0].open_time)
        common = dict(prefix=prefix, max_deliveries=3, clock=self.clock, retry_base_seconds=0.01,
                      retry_max_seconds=0.05)
        self.l1_bus = open_bus(url, group="l1", consumer="l1-1", **common)
        self.l2_bus = open_bus(l2_url or url, group="l2", consumer="l2-1", **common)
        self.executor = PaperExecutor.from_config(CFG, journal=Journal("sqlite://"), clock=self.clock)
        self.l1 = L1BusAdapter(self.l1_bus, self.executor, heartbeat_seconds=0.05)
        self.liveness = FakeLiveness()
        self.loop = TacticalLoop(CFG, Scripted(plan), clock=self.clock)
        self.l2 = L2BusAdapter(self.l2_bus, self.loop, liveness=self.liveness, probe_timeout_s=0.3,
                               backoff=Backoff(0.01, 0.05, rng=random.Random(7)))
        self.alerts: list[RiskAlert] = []
        self.index = 0

    async def __aenter__(self) -> Rig:
        await self.l1.start()
        await self.l2.start()
        self._alert_sub = await self.l1_bus.subscribe(Topic.L2_ALERTS, self._alert, group="watch", consumer="w")
        assert await self.l2.wait_for_l1(5.0)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._alert_sub.stop()
        await self.l2.stop(flush_timeout_s=0.5)
        await self.l1.stop()
        await self.l2_bus.close()
        await self.l1_bus.close()

    async def _alert(self, alert) -> None:
        self.alerts.append(alert)

    async def bars(self, n: int):
        """Next ``n`` real bars: L1 first (fills/exits -> reports), L2 hears them, decides, L1 gets the orders."""
        out = []
        for bar in day()[self.index:self.index + n]:
            self.clock.set(bar.close_time)
            await self.l1.on_bar(bar)
            await until(lambda: self.l2.stats.reports_received >= self.l1.published, what="reports at L2")
            decision = await self.l2.on_bar(bar, bar.close_time)
            sent = self.l2.stats.orders_published
            await until(lambda s=sent: self.executor.stats.received >= s, what="orders at L1")
            await until(lambda: self.l2.stats.reports_received >= self.l1.published, what="rejections at L2")
            out.append(decision)
        self.index += n
        return out


def memory_url() -> str:
    return f"memory://adapter-{uuid.uuid4().hex[:8]}"


def test_orders_reach_l1_and_fills_come_back_with_the_correlation_id():
    async def scenario():
        async with Rig(memory_url(), {35: SignalDirection.LONG}, prefix="t") as rig:
            decisions = await rig.bars(37)
            (order,) = [o for d in decisions for o in d.orders]
            await until(lambda: rig.loop.stats.fills == 1, what="the fill at L2")
            (fill,) = [r for r in rig.executor.journal.reports() if r.order_id == order.order_id]
            assert fill.correlation_id == order.correlation_id == order.signal_id
            assert rig.loop.state.positions["BTCUSDT"].qty == pytest.approx(fill.executed_qty)
            assert rig.loop.cash == pytest.approx(rig.executor.portfolio.balance("USDT"), rel=1e-12)

    run(scenario())


def test_l3_decisions_from_the_bus_rule_and_their_id_travels_to_l1():
    async def scenario():
        async with Rig(memory_url(), {35: SignalDirection.LONG}, prefix="t") as rig:
            decision = StrategicDecision(regime=Regime.TRENDING, strength=0.7, target_exposure=0.8,
                                         risk_appetite=0.5, universe=("BTCUSDT",), timestamp=day()[0].open_time)
            await rig.l1_bus.publish(Topic.L3_DECISIONS, decision)
            await until(lambda: rig.loop.decision == decision, what="the decision at L2")
            (order,) = [o for d in await rig.bars(37) for o in d.orders]
            assert order.correlation_id.startswith(decision.decision_id + "/")
            (report,) = [r for r in rig.executor.journal.reports() if r.order_id == order.order_id]
            assert report.correlation_id == order.correlation_id

    run(scenario())


def test_no_new_risk_while_the_bus_is_down_and_the_queued_exit_arrives_after_it():
    plan = {32: SignalDirection.LONG, 36: SignalDirection.CLOSE_LONG, 37: SignalDirection.LONG}
    url = memory_url()

    async def scenario():
        async with Rig(url, plan, prefix="t") as rig:
            await rig.bars(35)  # the first LONG is filled
            await until(lambda: "BTCUSDT" in rig.loop.state.positions, what="the position")
            received = rig.executor.stats.received
            broker(url.removeprefix("memory://")).set_available(False)
            outage = []
            for bar in day()[35:38]:
                rig.clock.set(bar.close_time)
                outage.append(await rig.l2.on_bar(bar, bar.close_time))
            reasons = [r for d in outage for _, r in d.reasons]
            assert ReasonCode.BUS_UNAVAILABLE in reasons
            queued = [m for t, m in rig.l2.outbox if t is Topic.L2_ORDERS]
            assert len(queued) == 1 and queued[0].reduce_only and queued[0].side is Side.SELL
            assert rig.executor.stats.received == received
            await until(lambda: rig.l2.stats.outbox_retries >= 2, what="retries with backoff during the outage")
            assert rig.executor.stats.received == received and rig.l2.outbox
            broker(url.removeprefix("memory://")).set_available(True)
            await until(lambda: not rig.l2.outbox, what="the outbox to drain")
            await until(lambda: rig.executor.stats.received == received + 1, what="the exit at L1")
            await until(lambda: any(a.code is ReasonCode.BUS_UNAVAILABLE for a in rig.alerts), what="the alert")
            intents = [p.intent for p in rig.executor.pending()]
            assert [i.order_id for i in intents] == [queued[0].order_id]

    run(scenario())


def test_stale_l1_heartbeat_blocks_entries_until_l1_is_heard_again():
    plan = {35: SignalDirection.LONG, 40: SignalDirection.LONG}

    async def scenario():
        async with Rig(memory_url(), plan, prefix="t") as rig:
            await rig.l1.stop()  # L1 falls silent (no heartbeats), orders still reach the bus
            rig.liveness.t += CFG.bus.heartbeat_timeout_seconds + 1.0
            decisions = [await rig.l2.on_bar(bar, bar.close_time) for bar in day()[:36]]
            assert not [o for d in decisions for o in d.orders]
            assert decisions[-1].reasons[-1][1] is ReasonCode.STALE_HEARTBEAT
            await until(lambda: any(a.code is ReasonCode.STALE_HEARTBEAT for a in rig.alerts), what="alert")
            await rig.l1.start()  # L1 is back: a heartbeat refreshes the age
            await until(lambda: rig.l2.l1_heartbeat_age() == 0.0, what="a fresh heartbeat")
            decisions = [await rig.l2.on_bar(bar, bar.close_time) for bar in day()[36:41]]
            (order,) = [o for d in decisions for o in d.orders]
            assert not order.reduce_only and rig.loop.gate.ok

    run(scenario())


def test_heartbeats_are_sent_by_l2():
    async def scenario():
        async with Rig(memory_url(), {}, prefix="t") as rig:
            seen = []

            async def beat(message):
                seen.append(message)

            sub = await rig.l1_bus.subscribe(Topic.HEARTBEATS, beat, group="hb-watch", consumer="w")
            await until(lambda: any(m.sender == "l2" for m in seen), what="an L2 heartbeat")
            await sub.stop()

    run(scenario())


# ------------------------------------------------------------------------- Redis


class Proxy:
    """A TCP proxy to Redis that the test can cut and restore: the bus 'goes away' for L2 only."""

    def __init__(self, port: int = 6379) -> None:
        self.target, self.server, self.conns = port, None, []
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        self.conns += [writer, up_w]

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def cut(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        for w in self.conns:
            w.close()
        self.conns.clear()

    async def restore(self) -> None:
        await self.start()


def _cleanup_redis(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.mark.service
def test_over_redis_no_new_risk_while_l2_cannot_reach_it_and_queued_exits_follow(redis_url):
    prefix = f"test-l2-adapter-{uuid.uuid4().hex[:8]}"
    plan = {32: SignalDirection.LONG, 36: SignalDirection.CLOSE_LONG, 37: SignalDirection.LONG}

    async def scenario():
        proxy = Proxy()
        await proxy.start()
        l2_url = f"redis://127.0.0.1:{proxy.port}/0"
        async with Rig(redis_url, plan, prefix=prefix, l2_url=l2_url) as rig:
            await rig.bars(35)
            await until(lambda: "BTCUSDT" in rig.loop.state.positions, what="the position")
            received = rig.executor.stats.received
            await proxy.cut()
            outage = []
            for bar in day()[35:38]:
                rig.clock.set(bar.close_time)
                outage.append(await rig.l2.on_bar(bar, bar.close_time))
            reasons = [r for d in outage for _, r in d.reasons]
            assert ReasonCode.BUS_UNAVAILABLE in reasons
            assert [m.reduce_only for t, m in rig.l2.outbox if t is Topic.L2_ORDERS] == [True]
            await asyncio.sleep(0.2)
            assert rig.executor.stats.received == received
            await proxy.restore()
            await until(lambda: not rig.l2.outbox, timeout=15.0, what="the outbox to drain")
            await until(lambda: rig.executor.stats.received == received + 1, timeout=10.0, what="the exit")
            new = [p.intent for p in rig.executor.pending()]
            assert len(new) == 1 and new[0].reduce_only
            rig.index = 38
            more = await rig.bars(3)  # the bus is back and L1 alive: L2 may trade again
            assert rig.loop.gate.ok, [d.reasons for d in more]
        await proxy.cut()

    try:
        run(scenario())
    finally:
        _cleanup_redis(redis_url, prefix)


def test_proxy_helper_counts_nothing_by_itself():
    """The Redis fault test's proxy refuses connections once cut (guards a vacuous outage)."""

    async def scenario():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = Proxy(port)
        await proxy.start()
        await proxy.cut()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        server.close()
        await server.wait_closed()

    run(scenario())

