"""Benchmark: L2 -> L1 (the real PaperExecutor behind L1BusAdapter) -> ExecutionReport round trips.

    .venv/bin/python bench/bus_l1.py                        # memory and Redis (127.0.0.1:6379/0)
    .venv/bin/python bench/bus_l1.py --transport redis --n 2000 --seconds 10 --journal file

L2 (an L2BusAdapter whose loop applies each report) sends OrderIntents built from real BTCUSDT
1m bars (order k priced at bar k's close, alternately BUY and SELL 0.001 BTC). L1 is the real
L1BusAdapter + PaperExecutor + Journal: it validates and journals the order, then processes
bar k+1 (the order's fill bar: the fill at its open through the one simulator, journaled, its
report through the outbox) — one order, one real fill cycle. L2 stops the clock when the
order's report is applied. Latency: one order at a time (p50/p99). Throughput: up to
``--window`` orders in flight for ``--seconds``, completed round trips per second. Over Redis
L1 runs in its own process. The journal is in-memory SQLite (``--journal memory``) or a file
(``--journal file``, every order and fill committed to disk). Not a test: prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l1_operational.bus_adapter import L1BusAdapter  # noqa: E402
from l1_operational.datafeed import Bar, merged_bars, read_candle_arrays  # noqa: E402
from l1_operational.executor import PaperExecutor  # noqa: E402
from l1_operational.journal import Journal  # noqa: E402
from l2_tactical.bus import Topic, open_bus  # noqa: E402
from l2_tactical.bus_adapter import L2BusAdapter  # noqa: E402
from l2_tactical.clock import SimulatedClock  # noqa: E402
from l2_tactical.config import L2Config  # noqa: E402
from l2_tactical.messages import ExecutionReport, Message, OrderIntent, Side  # noqa: E402
from l2_tactical.tactical_loop import TacticalLoop  # noqa: E402

TARGET_P99_MS, TARGET_RATE = 5.0, 2000.0
DATA = ROOT / "data" / "BTCUSDT-1m.csv.gz"
QTY = 0.001


def real_bars(n: int) -> list[Bar]:
    return list(merged_bars([read_candle_arrays(DATA)], start="2025-06-01T00:00:00Z"))[: n + 2]


def order_for(bars: list[Bar], k: int, tag: str) -> OrderIntent:
    bar, buy = bars[k], k % 2 == 0
    stop = bar.close * (0.95 if buy else 1.05)
    return OrderIntent(signal_id=f"bench-{tag}-{k}", symbol="BTCUSDT", side=Side.BUY if buy else Side.SELL, qty=QTY,
                       price=bar.close, stop_loss=stop, timestamp=bar.close_time)


class BenchL1(L1BusAdapter):
    """The real L1 adapter; after handling order k it processes bar k+1 (the order's fill bar)."""

    def __init__(self, *args: Any, bars: list[Bar], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fill_bars = bars
        self.done = -1

    async def _on_order(self, message: Message) -> None:
        await super()._on_order(message)
        if isinstance(message, OrderIntent):
            k = int(message.signal_id.rsplit("-", 1)[1])
            if k + 1 > self.done:
                await self.on_bar(self.fill_bars[k + 1])
                self.done = k + 1


class _NoSignals:
    def on_bar(self, *args: Any, **kwargs: Any) -> tuple[()]:
        return ()


def journal_url(kind: str) -> str:
    if kind == "memory":
        return "sqlite://"
    return f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-l1-')) / 'journal.sqlite'}"


def make_l1(url: str, prefix: str, bars: list[Bar], journal: str) -> tuple[Any, BenchL1]:
    cfg = L2Config.default()
    clock = SimulatedClock(bars[0].open_time)
    bus = open_bus(url, prefix=prefix, group="l1", consumer="l1-1", max_deliveries=5, clock=clock,
                   block_seconds=1.0)
    executor = PaperExecutor.from_config(cfg, journal=Journal(journal), clock=clock,
                                         initial_balances={"USDT": 10_000_000.0})
    return bus, BenchL1(bus, executor, bars=bars, heartbeat_seconds=3600.0, advance_clock=True)


def _l1_child(url: str, prefix: str, n: int, journal: str, ready: Any, stop: Any) -> None:
    async def run() -> None:
        bus, l1 = make_l1(url, prefix, real_bars(n), journal)
        await l1.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await l1.stop()
        await bus.close()

    asyncio.run(run())


class L2Side:
    def __init__(self, url: str, prefix: str, bars: list[Bar]) -> None:
        cfg = L2Config.default()
        self.clock = SimulatedClock(bars[0].open_time)
        self.bus = open_bus(url, prefix=prefix, group="l2", consumer="l2-1", max_deliveries=5, clock=self.clock,
                            block_seconds=1.0)
        self.loop = TacticalLoop(cfg, _NoSignals(), clock=self.clock, initial_cash=10_000_000.0)
        self.adapter = L2BusAdapter(self.bus, self.loop)
        self.waiting: dict[str, asyncio.Future[float]] = {}
        original = self.adapter._on_report

        async def on_report(message: Message) -> None:
            await original(message)
            if isinstance(message, ExecutionReport):
                fut = self.waiting.pop(message.order_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(time.perf_counter())

        self.adapter._on_report = on_report  # type: ignore[method-assign]

    async def round_trip(self, order: OrderIntent) -> float:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[order.order_id] = fut
        t0 = time.perf_counter()
        await self.adapter.send(Topic.L2_ORDERS, order)
        return (await asyncio.wait_for(fut, 30.0)) - t0


async def measure(l2: L2Side, bars: list[Bar], n: int, seconds: float, window: int, tag: str) -> tuple[list, float]:
    lat = [await l2.round_trip(order_for(bars, k, tag)) for k in range(n)]
    sem = asyncio.Semaphore(window)
    done = 0
    pending: set[asyncio.Task[float]] = set()
    t0 = time.perf_counter()
    k = n
    while time.perf_counter() - t0 < seconds and k + 2 < len(bars):
        await sem.acquire()
        task = asyncio.ensure_future(l2.round_trip(order_for(bars, k, tag)))
        task.add_done_callback(lambda _: sem.release())
        pending.add(task)
        k += 1
        await asyncio.sleep(0)  # publish in order: one send at a time
    for task in pending:
        await task
        done += 1
    return lat, done / (time.perf_counter() - t0)


@dataclass
class Result:
    transport: str
    journal: str
    p50_ms: float
    p99_ms: float
    rate: float

    def row(self) -> str:
        met = self.p99_ms <= TARGET_P99_MS and self.rate >= TARGET_RATE
        return (f"| {self.transport} | {self.journal} | {self.p50_ms:.2f} | {self.p99_ms:.2f} | {self.rate:,.0f} | "
                f"{'yes' if met else 'no'} |")


def summarise(name: str, journal: str, lat: list[float], rate: float) -> Result:
    ms = sorted(x * 1e3 for x in lat)
    return Result(name, journal, statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))], rate)


async def bench_memory(args: argparse.Namespace, bars: list[Bar]) -> Result:
    url, prefix = f"memory://bench-{uuid.uuid4().hex[:6]}", "bench"
    l1_bus, l1 = make_l1(url, prefix, bars, journal_url(args.journal))
    l2 = L2Side(url, prefix, bars)
    await l1.start()
    await l2.adapter.start()
    try:
        lat, rate = await measure(l2, bars, args.n, args.seconds, args.window, "m")
    finally:
        await l2.adapter.stop()
        await l1.stop()
        await l2.bus.close()
        await l1_bus.close()
    return summarise("in-process", args.journal, lat, rate)


async def bench_redis(args: argparse.Namespace, bars: list[Bar]) -> Result:
    prefix = f"bench-l1-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_l1_child, args=(args.redis, prefix, len(bars) - 2, journal_url(args.journal),
                                                ready, stop), daemon=True)
    child.start()
    l2 = L2Side(args.redis, prefix, bars)
    try:
        if not await asyncio.to_thread(ready.wait, 60):
            raise RuntimeError("the L1 process did not start")
        await l2.adapter.start()
        lat, rate = await measure(l2, bars, args.n, args.seconds, args.window, "r")
    finally:
        stop.set()
        await l2.adapter.stop()
        await l2.bus.close()
        child.join(10)
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(args.redis)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    return summarise("Redis Streams (loopback, L1 in its own process)", args.journal, lat, rate)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transport", choices=("memory", "redis", "both"), default="both")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--n", type=int, default=1000, help="sequential round trips for the latency percentiles")
    p.add_argument("--seconds", type=float, default=5.0, help="duration of the throughput run")
    p.add_argument("--window", type=int, default=64, help="orders in flight in the throughput run")
    p.add_argument("--journal", choices=("memory", "file"), default="memory")
    args = p.parse_args(argv)
    bars = real_bars(args.n + int(args.seconds * 20_000))
    results = []
    if args.transport in ("memory", "both"):
        results.append(asyncio.run(bench_memory(args, bars)))
    if args.transport in ("redis", "both"):
        results.append(asyncio.run(bench_redis(args, bars)))
    print(f"\nL2 -> L1 (PaperExecutor, journal: {args.journal} SQLite) -> ExecutionReport, "
          f"{args.n} sequential round trips, throughput over {args.seconds:g} s with {args.window} in flight\n")
    print(f"| transport | journal | p50 ms | p99 ms | orders/s | meets p99 ≤ {TARGET_P99_MS:g} ms "
          f"and ≥ {TARGET_RATE:,.0f}/s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(r.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
