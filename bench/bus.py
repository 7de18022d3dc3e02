"""Bus benchmark: OrderIntent L2 -> L1 -> ExecutionReport round trips over the in-process bus and Redis.

    .venv/bin/python bench/bus.py                       # both transports, Redis at 127.0.0.1:6379/0
    .venv/bin/python bench/bus.py --transport redis --n 5000 --seconds 10

L2 publishes an OrderIntent (built from real BTCUSDT 1m bars) on ``l2.orders``; a trivial L1
responder answers each with a FILLED ExecutionReport on ``l1.reports``; L2's report handler
stops the clock. Latency is measured one order at a time (p50/p99 of publish -> report
handled); throughput keeps ``--window`` orders in flight for ``--seconds`` and counts completed
round trips per second. Over Redis the responder runs in its own process by default (as L1
would). ``responder()`` is the piece to swap for the real L1 executor. Not a test: it prints a
markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l2_tactical.bus import MessageBus, Topic, open_bus  # noqa: E402
from l2_tactical.clock import SystemClock  # noqa: E402
from l2_tactical.data.candles import load_candles  # noqa: E402
from l2_tactical.messages import ExecutionReport, ExecutionStatus, Message, OrderIntent, Side  # noqa: E402

TARGET_P99_MS, TARGET_RATE = 5.0, 2000.0


@dataclass
class Result:
    transport: str
    p50_ms: float
    p99_ms: float
    rate: float
    cpu_us: float  # this process's CPU time per sequential round trip

    def row(self) -> str:
        met = self.p99_ms <= TARGET_P99_MS and self.rate >= TARGET_RATE
        return (f"| {self.transport} | {self.p50_ms:.2f} | {self.p99_ms:.2f} | {self.rate:,.0f} | "
                f"p99 ≤ {TARGET_P99_MS:g} ms, ≥ {TARGET_RATE:,.0f}/s | {'yes' if met else 'no'} | {self.cpu_us:,.0f} |")


def make_orders(n: int, tag: str) -> list[OrderIntent]:
    """``n`` distinct buy orders at real BTCUSDT closes (cycling through the bundled bars)."""
    frame = load_candles(ROOT / "data" / "BTCUSDT-1m.csv.gz").frame
    closes, lows = frame["close"].to_numpy(), frame["low"].to_numpy()
    stamps = frame.index.to_pydatetime()
    out = []
    for i in range(n):
        j = i % len(frame)
        out.append(OrderIntent(signal_id=f"bench-{tag}-{i}", symbol="BTCUSDT", side=Side.BUY, qty=0.001,
                               price=float(closes[j]), stop_loss=round(float(lows[j]) * 0.99, 2),
                               timestamp=stamps[j] + timedelta(minutes=1)))
    return out


def open_side(url: str, prefix: str, group: str) -> MessageBus:
    return open_bus(url, prefix=prefix, group=group, consumer=f"{group}-1", max_deliveries=5, clock=SystemClock(),
                    block_seconds=0.5, batch=256)


async def responder(bus: MessageBus) -> None:
    """Trivial L1: fill every order at its price and report back."""
    clock = bus.clock

    async def on_order(message: Message) -> None:
        assert isinstance(message, OrderIntent)
        report = ExecutionReport(order_id=message.order_id, symbol=message.symbol, side=message.side,
                                 status=ExecutionStatus.FILLED, requested_qty=message.qty, executed_qty=message.qty,
                                 avg_price=message.price, timestamp=clock.now(), correlation_id=message.correlation_id)
        await bus.publish(Topic.L1_REPORTS, report)

    await bus.subscribe(Topic.L2_ORDERS, on_order)


def _responder_process(url: str, prefix: str, stop: Callable[[], bool]) -> None:
    async def run() -> None:
        bus = open_side(url, prefix, "l1")
        await responder(bus)
        while not stop():
            await asyncio.sleep(0.05)
        await bus.close()

    asyncio.run(run())


def _child(url: str, prefix: str, stop_event: mp.synchronize.Event, preview: bool) -> None:
    if preview:
        preview_hint_cache()
    _responder_process(url, prefix, stop_event.is_set)


def preview_hint_cache() -> None:
    """Preview of a requested messages.py change: cache ``typing.get_type_hints`` per message class.

    ``Message.from_dict`` re-evaluates the string annotations on every decode (~0.5 ms of a
    ~0.7 ms OrderIntent decode). This patches only this benchmark process.
    """
    import functools
    import types
    import typing

    import l2_tactical.messages as msgs

    names = {k: getattr(typing, k) for k in dir(typing) if not k.startswith("__")}
    msgs.typing = types.SimpleNamespace(**dict(names, get_type_hints=functools.cache(typing.get_type_hints)))  # type: ignore[assignment]


async def measure(l2: MessageBus, n: int, seconds: float, window: int, warmup: int) -> tuple[list[float], float, float]:
    waiting: dict[str, asyncio.Future[float]] = {}

    async def on_report(message: Message) -> None:
        fut = waiting.pop(getattr(message, "order_id", ""), None)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())

    await l2.subscribe(Topic.L1_REPORTS, on_report)
    loop = asyncio.get_running_loop()

    async def round_trip(order: OrderIntent) -> float:
        fut = loop.create_future()
        waiting[order.order_id] = fut
        t0 = time.perf_counter()
        await l2.publish(Topic.L2_ORDERS, order)
        return (await asyncio.wait_for(fut, 10.0)) - t0

    orders = make_orders(warmup + n, uuid.uuid4().hex[:6])
    for o in orders[:warmup]:
        await round_trip(o)
    cpu0 = time.process_time()
    latencies = [await round_trip(o) for o in orders[warmup:]]
    cpu_us = (time.process_time() - cpu0) / max(1, n) * 1e6

    stream = make_orders(int(seconds * 20_000) + window, uuid.uuid4().hex[:6])
    it = iter(stream)
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        for order in it:
            if time.perf_counter() >= end:
                return
            await round_trip(order)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    return latencies, done / (time.perf_counter() - start), cpu_us


def summarise(name: str, measured: tuple[list[float], float, float]) -> Result:
    latencies, rate, cpu_us = measured
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return Result(name, statistics.median(ms), p99, rate, cpu_us)


async def bench_memory(args: argparse.Namespace) -> Result:
    url, prefix = f"memory://bench-{uuid.uuid4().hex[:6]}", "bench"
    l1, l2 = open_side(url, prefix, "l1"), open_side(url, prefix, "l2")
    await responder(l1)
    measured = await measure(l2, args.n, args.seconds, args.window, args.warmup)
    await l1.close(), await l2.close()
    return summarise("in-process (asyncio)", measured)


async def bench_redis(args: argparse.Namespace) -> Result:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    l2 = open_side(args.redis_url, prefix, "l2")
    await l2.ping()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    child = None
    l1 = None
    if args.inproc_responder:
        l1 = open_side(args.redis_url, prefix, "l1")
        await responder(l1)
    else:
        child = ctx.Process(target=_child, args=(args.redis_url, prefix, stop, args.preview_hint_cache), daemon=True)
        child.start()
    try:
        measured = await measure(l2, args.n, args.seconds, args.window, args.warmup)
    finally:
        stop.set()
        if child is not None:
            await asyncio.to_thread(child.join, 10)
        if l1 is not None:
            await l1.close()
        await l2.close()
        await _delete_prefix(args.redis_url, prefix)
    where = "same process" if args.inproc_responder else "L1 in its own process"
    return summarise(f"Redis Streams, loopback ({where})", measured)


async def _delete_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transport", choices=("memory", "redis", "both"), default="both")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--n", type=int, default=3000, help="sequential round trips for the latency percentiles")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0, help="duration of the throughput run")
    p.add_argument("--window", type=int, default=64, help="orders in flight during the throughput run")
    p.add_argument("--inproc-responder", action="store_true", help="Redis: run the L1 responder in this process")
    p.add_argument("--preview-hint-cache", action="store_true",
                   help="patch messages.py's per-decode get_type_hints with a cache (preview of a requested change)")
    args = p.parse_args(argv)
    if args.preview_hint_cache:
        preview_hint_cache()
    results = []
    if args.transport in ("memory", "both"):
        results.append(asyncio.run(bench_memory(args)))
    if args.transport in ("redis", "both"):
        results.append(asyncio.run(bench_redis(args)))
    print(f"\nround trip L2 -> L1 -> report: {args.n} sequential orders; throughput over {args.seconds:g} s "
          f"with {args.window} in flight (msgs/s = completed order round trips per second); "
          f"python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
          f"{'; messages.py hint cache PREVIEW' if args.preview_hint_cache else ''}\n")
    print("| transport | p50 ms | p99 ms | msgs/s | target | met? | CPU µs/round trip (this process) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(r.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
