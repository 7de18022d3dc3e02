"""Run L1 as its own process: ``python -m l1_operational --bus URL --journal URL --feed replay:FILE``.

Modes: PAPER (default) fills on the simulator. TESTNET / LIVE route orders to Binance through
python-binance (:class:`l1_operational.binance_executor.BinanceExecutor`) and need
``BINANCE_MODE=<mode>`` in the environment AND ``--confirm-live``, with the keys in
``BINANCE_API_KEY`` / ``BINANCE_API_SECRET``; ``--order-url`` points the orders at another
Binance-compatible REST base (e.g. the local replay exchange on 127.0.0.1).

Feeds: ``replay:data/BTCUSDT-1m.csv.gz[,data/ETHUSDT-1m.csv.gz]`` (``--speed N``, ``--start``,
``--end``) or ``binance:BTCUSDT[,ETHUSDT][@1m]`` (``--rest-url``/``--stream-url`` to point
python-binance elsewhere, e.g. the local replay server; ``--testnet-data`` for the spot testnet).
At the end (feed exhausted and ``--linger`` seconds passed, or Ctrl-C) it prints one JSON line
with the summary and the portfolio, and writes it to ``--summary-json`` when given.
Errors: one line on stderr and the error's exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from l2_tactical.errors import ConfigError, L2Error

log = logging.getLogger("l1_operational")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m l1_operational", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="L2Config YAML layered over the bundled defaults")
    p.add_argument("--bus", help="memory://, redis://127.0.0.1:6379/0 (default: bus.url)")
    p.add_argument("--prefix", help="stream prefix (default: bus.stream_prefix)")
    p.add_argument("--group", default="l1", help="consumer group on l2.orders")
    p.add_argument("--consumer", default="l1-1", help="consumer name (keep it across restarts)")
    p.add_argument("--journal", help="SQLAlchemy URL (default: l1.journal_url)")
    p.add_argument("--feed", required=True, help="replay:FILE[,FILE] or binance:SYMBOL[,SYMBOL][@INTERVAL]")
    p.add_argument("--speed", type=float, default=0.0, help="replay speed, x real time (0: as fast as possible)")
    p.add_argument("--start", help="first bar (ISO time) of a replay")
    p.add_argument("--end", help="end (exclusive, ISO time) of a replay")
    p.add_argument("--rest-url", help="python-binance REST base, e.g. http://127.0.0.1:8765")
    p.add_argument("--stream-url", help="python-binance websocket base, e.g. ws://127.0.0.1:8765/")
    p.add_argument("--testnet-data", action="store_true", help="Binance spot testnet market data")
    p.add_argument("--backfill", type=int, default=0, help="bars of REST backfill per symbol (binance feed)")
    p.add_argument("--metrics-csv", help="per-cycle metrics CSV (default: l1.metrics_csv)")
    p.add_argument("--heartbeat-seconds", type=float, help="default: bus.heartbeat_seconds")
    p.add_argument("--linger", type=float, default=2.0, help="seconds to keep serving orders after the feed ends")
    p.add_argument("--summary-json", help="also write the final summary here")
    p.add_argument("--mode", help="PAPER | TESTNET | LIVE (default: l1.mode)")
    p.add_argument("--confirm-live", action="store_true", help="explicit confirmation for TESTNET/LIVE")
    p.add_argument("--order-url", help="TESTNET/LIVE: REST base for orders (https Binance host or loopback)")
    p.add_argument("--log-level", default="WARNING")
    return p


def make_feed(spec: str, args: argparse.Namespace) -> tuple[Any, bool]:
    """(feed, is_replay) from ``--feed``."""
    from l1_operational.datafeed import BinanceFeed, ReplayFeed

    kind, _, rest = spec.partition(":")
    if kind == "replay" and rest:
        return ReplayFeed(rest.split(","), speed=args.speed, start=args.start, end=args.end), True
    if kind == "binance" and rest:
        symbols, _, interval = rest.partition("@")
        return BinanceFeed(symbols.split(","), interval or "1m", backfill=args.backfill, rest_url=args.rest_url,
                           stream_url=args.stream_url, testnet=args.testnet_data), False
    raise ConfigError(f"--feed={spec!r}: expected replay:FILE[,FILE] or binance:SYMBOL[,SYMBOL][@INTERVAL]")


def first_bar_time(feed: Any) -> Any:
    from l1_operational.datafeed import merged_bars

    bar = next(merged_bars(feed.sources, start=feed.start, end=feed.end, drop_last=feed.drop_last), None)
    if bar is None:
        raise ConfigError(f"--feed: no bars between --start={feed.start} and --end={feed.end}")
    return bar.open_time


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from l1_operational.bus_adapter import L1BusAdapter
    from l1_operational.executor import PaperExecutor
    from l1_operational.journal import Journal
    from l1_operational.live_gate import check_order_url, install_redaction, resolve_mode
    from l1_operational.metrics_log import MetricsLog
    from l2_tactical.bus import open_bus
    from l2_tactical.clock import SimulatedClock, SystemClock
    from l2_tactical.config import L2Config

    install_redaction()
    cfg = L2Config.from_file(args.config) if args.config else L2Config.from_env()
    mode = resolve_mode(args.mode or cfg.l1.mode, confirm=args.confirm_live)
    order_url = check_order_url(args.order_url) if args.order_url else None
    if order_url and mode == "PAPER":
        raise ConfigError("--order-url is for TESTNET/LIVE; PAPER fills on the simulator")
    feed, is_replay = make_feed(args.feed, args)
    clock: Any = SimulatedClock(first_bar_time(feed)) if is_replay else SystemClock()
    journal = Journal(args.journal or cfg.l1.journal_url)
    executor: Any
    if mode == "PAPER":
        executor, adapter_cls = PaperExecutor.from_config(cfg, journal=journal, clock=clock), L1BusAdapter
    else:
        from l1_operational.binance_executor import BinanceBusAdapter, BinanceExecutor

        executor = BinanceExecutor.from_config(cfg, mode=mode, journal=journal, clock=clock, rest_url=order_url)
        adapter_cls = BinanceBusAdapter
    bus = open_bus(args.bus or cfg.bus.url, prefix=args.prefix or cfg.bus.stream_prefix, group=args.group,
                   consumer=args.consumer, max_deliveries=cfg.bus.max_deliveries, clock=clock,
                   retry_base_seconds=cfg.bus.retry_base_seconds, retry_max_seconds=cfg.bus.retry_max_seconds)
    metrics = MetricsLog(args.metrics_csv or cfg.l1.metrics_csv)
    adapter = adapter_cls(bus, executor, metrics=metrics, advance_clock=is_replay,
                           heartbeat_seconds=args.heartbeat_seconds or cfg.bus.heartbeat_seconds)
    try:
        await adapter.start()
        await _until_done_or_signalled(adapter.run_feed(feed), args.linger)
    finally:
        await adapter.stop()
        await bus.close()
        metrics.close()
        journal.close()
    return {**executor.summary(), "bars": adapter.bars, "reports_published": adapter.published,
            "portfolio": executor.portfolio.snapshot()}


async def _until_done_or_signalled(work: Any, linger: float) -> None:
    """Run the feed, then linger; SIGINT/SIGTERM end it early and still let the summary print."""
    async def body() -> None:
        await work
        await asyncio.sleep(linger)

    task = asyncio.ensure_future(body())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = asyncio.run(run(args))
    except L2Error as exc:
        print(f"l1: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    text = json.dumps(summary, sort_keys=True, default=str)
    print(text, flush=True)
    if args.summary_json:
        with contextlib.suppress(OSError):
            Path(args.summary_json).write_text(text + "\n")
    return 0
