"""Benchmark: L2 -> L1 (the real PaperExecutor and its journal) -> ExecutionReport round trips over the bus.

    .venv/bin/python bench/bus.py                              # memory and Redis (127.0.0.1:6379/0)
    .venv/bin/python bench/bus.py --transport redis --n 3000 --seconds 10 --journal-sync full
    .venv/bin/python bench/bus.py --l1 echo                    # the bus alone: a trivial L1 that echoes

L2 is an L2BusAdapter whose TacticalLoop applies each report; it sends OrderIntents built from
real BTCUSDT 1m bars (order k priced at bar k's close, alternately BUY and SELL 0.001 BTC).
L1 is the real L1BusAdapter + PaperExecutor + Journal: it validates and journals the order, then
processes bar k+1 (the order's fill bar: the fill at its open through the one simulator, journaled,
its report through the outbox) -- one order, one real fill cycle. The journal commits before a
report is published (group commit: one transaction per bus read batch). L2 stops the clock when
the order's report is applied.

Latency: one order at a time (p50/p99 of ``--n`` round trips after ``--warmup``). Throughput: up to
``--window`` orders in flight for ``--seconds``, completed round trips per second. Over Redis L1
runs in its own process. CPU: process CPU time per order of L2 and of L1 (one number in-process),
so results on a loaded machine can be judged (the load average is printed). Not a test: it prints
a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
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
from l2_tactical.bus import MessageBus, Topic, open_bus  # noqa: E402
from l2_tactical.bus_adapter import L2BusAdapter  # noqa: E402
from l2_tactical.clock import SimulatedClock  # noqa: E402
from l2_tactical.config import L2Config  # noqa: E402
from l2_tactical.messages import (  # noqa: E402
    AccountSnapshot,
    ExecutionReport,
    ExecutionStatus,
    Message,
    OrderIntent,
    Side,
)
from l2_tactical.tactical_loop import TacticalLoop  # noqa: E402

TARGET_P99_MS, TARGET_RATE = 5.0, 2000.0
DATA = ROOT / "data" / "BTCUSDT-1m.csv.gz"
QTY = 0.001
L1_CASH = 10_000_000.0


def real_bars(n: int) -> list[Bar]:
    return list(merged_bars([read_candle_arrays(DATA)], start="2025-06-01T00:00:00Z"))[: n + 2]


def order_for(bars: list[Bar], k: int, tag: str) -> OrderIntent:
    bar, buy = bars[k], k % 2 == 0
    stop = bar.close * (0.95 if buy else 1.05)
    return OrderIntent(signal_id=f"bench-{tag}-{k}", symbol="BTCUSDT", side=Side.BUY if buy else Side.SELL, qty=QTY,
                       price=bar.close, stop_loss=stop, timestamp=bar.close_time)


def bar_index(order: OrderIntent) -> int:
    return int(order.signal_id.rsplit("-", 1)[1])


class BenchL1(L1BusAdapter):
    """The real L1 adapter; after order k it processes bar k+1 (the fill bar) in the same batch."""

    def __init__(self, *args: Any, bars: list[Bar], cpu: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fill_bars, self.done, self.cpu = bars, -1, cpu

    async def _on_order(self, message: Message) -> None:
        await super()._on_order(message)
        if isinstance(message, OrderIntent) and bar_index(message) + 1 > self.done:
            self.done = bar_index(message) + 1
            self.apply_bar(self.fill_bars[self.done])   # journaled now, committed by the batch's flush

    async def flush(self) -> None:
        await super().flush()
        if self.cpu is not None:
            self.cpu.value = time.process_time()


class EchoL1:
    """``--l1 echo``: answers every order with a FILLED report at its price (the bus alone). At start it
    publishes one empty AccountSnapshot, as a real L1 does, so that L2 syncs and applies the reports."""

    def __init__(self, bus: MessageBus, cpu: Any = None, *, when: Any, cash: float) -> None:
        self.bus, self.cpu, self.when, self.cash = bus, cpu, when, cash

    async def start(self) -> None:
        await self.bus.subscribe(Topic.L2_ORDERS, self._on_order, dedup=False, drop_expired=False)
        await self.bus.publish(Topic.L1_ACCOUNT, AccountSnapshot(sender="l1", timestamp=self.when, quote_asset="USDT",
                                                                 cash=self.cash))

    async def _on_order(self, m: Message) -> None:
        assert isinstance(m, OrderIntent)
        await self.bus.publish(Topic.L1_REPORTS, ExecutionReport(
            order_id=m.order_id, symbol=m.symbol, side=m.side, status=ExecutionStatus.FILLED, requested_qty=m.qty,
            executed_qty=m.qty, avg_price=m.price, timestamp=m.timestamp, correlation_id=m.correlation_id))
        if self.cpu is not None:
            self.cpu.value = time.process_time()

    async def stop(self) -> None:
        return None


@dataclass(frozen=True)
class JournalSpec:
    kind: str   # "file" | "memory"
    sync: str   # "normal" | "full"

    def url(self) -> str:
        if self.kind == "memory":
            return "sqlite://"
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-l1-')) / 'journal.sqlite'}"

    def label(self, l1: str) -> str:
        if l1 == "echo":
            return "none (echo L1)"
        return "SQLite in memory" if self.kind == "memory" else f"SQLite file, WAL, synchronous={self.sync.upper()}"


def make_l1(url: str, prefix: str, bars: list[Bar], l1: str, journal: JournalSpec, cpu: Any = None) -> tuple[Any, Any]:
    clock = SimulatedClock(bars[0].open_time)
    bus = open_bus(url, prefix=prefix, group="l1", consumer="l1-1", max_deliveries=5, clock=clock,
                   block_seconds=1.0, batch=256)
    if l1 == "echo":
        return bus, EchoL1(bus, cpu, when=bars[0].open_time, cash=L1_CASH)
    executor = PaperExecutor.from_config(L2Config.default(), journal=Journal(journal.url(), sync=journal.sync),
                                         clock=clock, initial_balances={"USDT": L1_CASH})
    return bus, BenchL1(bus, executor, bars=bars, cpu=cpu, heartbeat_seconds=3600.0, advance_clock=True)


def _l1_child(url: str, prefix: str, n: int, l1: str, journal: JournalSpec, ready: Any, stop: Any, cpu: Any) -> None:
    async def run() -> None:
        bus, adapter = make_l1(url, prefix, real_bars(n), l1, journal, cpu)
        await adapter.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await adapter.stop()
        await bus.close()

    asyncio.run(run())


class _NoSignals:
    def on_bar(self, *args: Any, **kwargs: Any) -> tuple[()]:
        return ()


class L2Side:
    """L2: an L2BusAdapter (its loop applies the reports) that times each order until its report is applied."""

    def __init__(self, url: str, prefix: str, bars: list[Bar]) -> None:
        cfg = L2Config.default()
        self.clock = SimulatedClock(bars[0].open_time)
        self.bus = open_bus(url, prefix=prefix, group="l2", consumer="l2-1", max_deliveries=5, clock=self.clock,
                            block_seconds=1.0, batch=256)
        self.adapter = L2BusAdapter(self.bus, TacticalLoop(cfg, _NoSignals(), clock=self.clock,
                                                           initial_cash=L1_CASH))
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


@dataclass
class Measured:
    latencies: list[float]
    rate: float
    cpu_seq: tuple[float, float]   # CPU µs per order (L2 process, L1 process) in the latency run
    cpu_tput: tuple[float, float]  # ... in the throughput run


class CpuProbe:
    """CPU seconds of this process and, when L1 runs elsewhere, of L1 (its last flush)."""

    def __init__(self, l1_cpu: Any) -> None:
        self.l1_cpu = l1_cpu

    def read(self) -> tuple[float, float]:
        return time.process_time(), (self.l1_cpu.value if self.l1_cpu is not None else 0.0)

    @staticmethod
    def per_order(a: tuple[float, float], b: tuple[float, float], n: int) -> tuple[float, float]:
        return ((b[0] - a[0]) / max(1, n) * 1e6, (b[1] - a[1]) / max(1, n) * 1e6)


async def measure(l2: L2Side, bars: list[Bar], args: argparse.Namespace, tag: str, probe: CpuProbe) -> Measured:
    for k in range(args.warmup):
        await l2.round_trip(order_for(bars, k, tag))
    k0 = args.warmup
    c0 = probe.read()
    lat = [await l2.round_trip(order_for(bars, k, tag)) for k in range(k0, k0 + args.n)]
    c1 = probe.read()
    sem = asyncio.Semaphore(args.window)
    pending: list[asyncio.Task[float]] = []
    k = k0 + args.n
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds and k + 2 < len(bars):
        await sem.acquire()
        task = asyncio.ensure_future(l2.round_trip(order_for(bars, k, tag)))
        task.add_done_callback(lambda _: sem.release())
        pending.append(task)
        k += 1
        await asyncio.sleep(0)  # publish in order: one send at a time
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(0.1)    # let L1 record its CPU after its last flush
    c2 = probe.read()
    return Measured(lat, len(pending) / elapsed, probe.per_order(c0, c1, args.n), probe.per_order(c1, c2, len(pending)))


@dataclass
class Result:
    transport: str
    journal: str
    p50_ms: float
    p99_ms: float
    rate: float
    cpu_seq: str
    cpu_tput: str

    def row(self) -> str:
        met = self.p99_ms <= TARGET_P99_MS and self.rate >= TARGET_RATE
        return (f"| {self.transport} | {self.journal} | {self.p50_ms:.2f} | {self.p99_ms:.2f} | {self.rate:,.0f} | "
                f"p99 ≤ {TARGET_P99_MS:g} ms, ≥ {TARGET_RATE:,.0f}/s | {'yes' if met else 'no'} | "
                f"{self.cpu_seq} | {self.cpu_tput} |")


def summarise(name: str, journal: str, m: Measured, split: bool) -> Result:
    ms = sorted(x * 1e3 for x in m.latencies)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]

    def cpu(c: tuple[float, float]) -> str:
        return f"{c[0]:,.0f} + {c[1]:,.0f}" if split else f"{c[0]:,.0f}"

    return Result(name, journal, statistics.median(ms), p99, m.rate, cpu(m.cpu_seq), cpu(m.cpu_tput))


async def bench_memory(args: argparse.Namespace, bars: list[Bar]) -> Result:
    url, prefix = f"memory://bench-{uuid.uuid4().hex[:6]}", "bench"
    l1_bus, l1 = make_l1(url, prefix, bars, args.l1, args.journal_spec)
    l2 = L2Side(url, prefix, bars)
    await l1.start()
    await l2.adapter.start()
    try:
        measured = await measure(l2, bars, args, "m", CpuProbe(None))
    finally:
        await l2.adapter.stop()
        await l1.stop()
        await l2.bus.close()
        await l1_bus.close()
    return summarise("in-process (asyncio)", args.journal_spec.label(args.l1), measured, split=False)


async def bench_redis(args: argparse.Namespace, bars: list[Bar]) -> Result:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    ready, stop, cpu = ctx.Event(), ctx.Event(), ctx.Value("d", 0.0, lock=False)
    child = ctx.Process(target=_l1_child, args=(args.redis, prefix, len(bars) - 2, args.l1, args.journal_spec,
                                                ready, stop, cpu), daemon=True)
    child.start()
    l2 = L2Side(args.redis, prefix, bars)
    try:
        if not await asyncio.to_thread(ready.wait, 60):
            raise RuntimeError("the L1 process did not start")
        await l2.adapter.start()
        measured = await measure(l2, bars, args, "r", CpuProbe(cpu))
    finally:
        stop.set()
        await l2.adapter.stop()
        await l2.bus.close()
        await asyncio.to_thread(child.join, 10)
        await _delete_prefix(args.redis, prefix)
    return summarise("Redis Streams, loopback (L1 in its own process)", args.journal_spec.label(args.l1), measured,
                     split=True)


async def _delete_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transport", choices=("memory", "redis", "both"), default="both")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--l1", choices=("paper", "echo"), default="paper",
                   help="paper: the real PaperExecutor + journal (default); echo: a trivial responder (bus only)")
    p.add_argument("--n", type=int, default=2000, help="sequential round trips for the latency percentiles")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0, help="duration of the throughput run")
    p.add_argument("--window", type=int, default=64, help="orders in flight in the throughput run")
    p.add_argument("--journal", choices=("file", "memory"), default="file",
                   help="file: a durable SQLite file in a temp dir (default); memory: in-memory SQLite")
    p.add_argument("--journal-sync", choices=("normal", "full"), default="normal",
                   help="SQLite synchronous mode of the file journal (full: fsync at every commit)")
    args = p.parse_args(argv)
    args.journal_spec = JournalSpec(args.journal, args.journal_sync)
    bars = real_bars(args.warmup + args.n + int(args.seconds * 20_000))
    load_before = os.getloadavg()[0]
    results = []
    if args.transport in ("memory", "both"):
        results.append(asyncio.run(bench_memory(args, bars)))
    if args.transport in ("redis", "both"):
        results.append(asyncio.run(bench_redis(args, bars)))
    print(f"\nL2 -> L1 ({'PaperExecutor + journal' if args.l1 == 'paper' else 'echo'}) -> ExecutionReport: "
          f"{args.n} sequential round trips; throughput over {args.seconds:g} s with {args.window} in flight; "
          f"python {sys.version.split()[0]}; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores\n")
    print("| transport | journal | p50 ms | p99 ms | orders/s | target | met? | CPU µs/order sequential "
          "(L2 + L1) | CPU µs/order at throughput (L2 + L1) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(r.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
