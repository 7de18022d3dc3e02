"""``l2 paper``: paper trading, L2 (TacticalLoop on the bus) + L1 (paper executor), with a live dashboard.

* ``--bus memory``: L2 and L1 in this process on the in-process bus. Every bar runs in the
  canonical order (L1 fills/exits -> reports reach L2 -> L2 decides -> orders reach L1), so a
  replay gives the same orders and fills as the backtest (:func:`l2_tactical.tactical_loop.drive_bar`).
* ``--bus redis://127.0.0.1:6379/0``: L2 here, L1 as a separate process
  (``python -m l1_operational``, spawned with the same feed, prefix and speed; ``--role l2``
  spawns nothing and talks to an L1 you started). L2 waits for L1's first heartbeat.
* ``--feed replay:FILE[,FILE]`` (``--speed`` x real time, ``--start``, ``--max-bars``; the
  ``--warmup-bars`` before the start warm up the features) or ``--feed binance:SYMBOL[@1m]``
  (python-binance; ``--rest-url``/``--stream-url`` point it at a local server).
* PAPER is the only mode this build trades in; ``--mode LIVE`` also needs ``BINANCE_MODE=LIVE``
  and ``--confirm-live`` and is then refused (no order routing to Binance here).

L2's risk state (kill switch, equity peak, the UTC day's loss budget, per-position tracking) survives a
restart in ``--state`` (``l2 risk --help``; one L2 per file); a kept kill switch clears by ``--reset-kill-switch``.

Ends with a summary: bars, signals, orders, fills, rejections by reason (L1 and L2), PnL, fees.
Exit codes: 0 ok, 3 bad configuration/arguments, 4 bad data or a risk state file that is bad or in use by another
L2, 6 bus or L1 unreachable (retry), 1 the L1 process failed.

L1 is reached through the ``l2_tactical.l1`` entry-point group (dependency inversion: this
package never imports ``l1_operational``; ``pyproject.toml`` registers its classes there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from l2_tactical.commands.common import load_config
from l2_tactical.commands.risk import add_state_arguments, open_paper_store, paper_state_path, redact_url
from l2_tactical.errors import ConfigError, TransientError

log = logging.getLogger("l2_tactical.paper")
L1_GROUP = "l2_tactical.l1"
L1_PARTS = ("journal", "paper_executor", "bus_adapter", "metrics_log", "replay_feed", "binance_feed",
            "resolve_mode", "install_redaction")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("paper", help="paper trading: L2 + L1 over the bus, live dashboard, summary",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feed", required=True, help="replay:FILE[,FILE] or binance:SYMBOL[,SYMBOL][@INTERVAL]")
    p.add_argument("--bus", default=None, help="memory (default: bus.url) or redis://127.0.0.1:6379/0")
    p.add_argument("--role", choices=("both", "l2"), default="both",
                   help="redis: both = spawn L1 as a process (default); l2 = L1 runs elsewhere")
    p.add_argument("--speed", type=float, default=600.0, help="replay speed, x real time (0: no waiting)")
    p.add_argument("--start", help="first traded bar of a replay (ISO time; default: after the warm-up)")
    p.add_argument("--max-bars", type=int, default=None, help="stop after N bars")
    p.add_argument("--warmup-bars", type=int, default=2100, help="replay bars before the start that warm up")
    p.add_argument("--prefix", help="stream prefix (default: a fresh one per run; --role l2: bus.stream_prefix)")
    p.add_argument("--journal", help="L1 journal URL (default: a fresh SQLite file under runs/)")
    add_state_arguments(p)
    p.add_argument("--rest-url", help="python-binance REST base (e.g. a local replay server)")
    p.add_argument("--stream-url", help="python-binance websocket base")
    p.add_argument("--backfill", type=int, default=0, help="binance: REST bars per symbol before the stream")
    p.add_argument("--mode", default="PAPER", help="PAPER (default); TESTNET/LIVE are refused in this build")
    p.add_argument("--confirm-live", action="store_true", help="explicit confirmation for TESTNET/LIVE")
    p.add_argument("--l1-wait", type=float, default=60.0, help="seconds to wait for L1's first heartbeat")
    p.add_argument("--linger", type=float, default=2.0, help="seconds to let reports arrive after the feed")
    p.add_argument("--no-dashboard", action="store_true", help="no live dashboard (summary only)")
    p.add_argument("--summary-json", help="also write the summary here")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------- L1 through entry points


def load_l1() -> SimpleNamespace:
    """L1's classes from the ``l2_tactical.l1`` entry points (ConfigError naming what is missing)."""
    from importlib.metadata import entry_points

    found = {e.name: e for e in entry_points(group=L1_GROUP)}
    missing = [n for n in L1_PARTS if n not in found]
    if missing:
        raise ConfigError(f"L1 is not installed for `l2 paper`: entry point group {L1_GROUP!r} lacks {missing} "
                          "(register them in pyproject.toml and reinstall with `pip install -e .`)")
    return SimpleNamespace(**{n: found[n].load() for n in L1_PARTS})


# ---------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if args.max_bars is not None and args.max_bars < 1:
        raise ConfigError(f"--max-bars={args.max_bars}: must be >= 1")
    if args.speed < 0:
        raise ConfigError(f"--speed={args.speed}: must be >= 0")
    l1 = load_l1()
    l1.install_redaction()
    mode = l1.resolve_mode(args.mode, confirm=args.confirm_live)
    if mode != "PAPER":
        raise ConfigError(f"mode {mode}: order routing to Binance is not part of this build; run PAPER")
    summary = asyncio.run(_run(args, cfg, l1))
    _print_summary(summary)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, sort_keys=True, default=str, indent=1) + "\n")
    return int(summary.get("exit_code", 0))


def _feed_spec(spec: str) -> tuple[str, list[str], str]:
    kind, _, rest = spec.partition(":")
    if kind == "replay" and rest:
        return kind, rest.split(","), ""
    if kind == "binance" and rest:
        symbols, _, interval = rest.partition("@")
        return kind, symbols.split(","), interval or "1m"
    raise ConfigError(f"--feed={spec!r}: expected replay:FILE[,FILE] or binance:SYMBOL[,SYMBOL][@INTERVAL]")


def _is_memory(url: str) -> bool:
    return url == "memory" or url.startswith("memory://")


class Setup:
    """What both bus modes share: feed, clock, L2 (generator, loop, adapter), run id, paths."""

    def __init__(self, args: argparse.Namespace, cfg: Any, l1: SimpleNamespace) -> None:
        from l2_tactical.clock import SimulatedClock, SystemClock

        self.args, self.cfg, self.l1 = args, cfg, l1
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.kind, self.sources, interval = _feed_spec(args.feed)
        self.url = args.bus or cfg.bus.url
        self.runs = Path("runs")
        self.start: datetime | None = None
        self.end: datetime | None = None
        self.history: dict[str, Any] = {}
        self.store: Any = None                    # L2's RiskStore: open_store()
        self.interval = interval
        if self.kind == "replay":
            self._plan_replay()
            self.clock: Any = SimulatedClock(self.start)  # type: ignore[arg-type]
        else:
            self.clock = SystemClock()

    def _plan_replay(self) -> None:
        """Start after ``--warmup-bars`` (or at ``--start``); the end covers ``--max-bars`` bars."""
        import math

        import numpy as np

        from l2_tactical.data.candles import load_candles

        args = self.args
        candles = [load_candles(p) for p in self.sources]
        self.interval = candles[0].timeframe
        times = np.unique(np.concatenate([c.timestamps_ns for c in candles]))
        if args.start is None:
            start_ns = int(times[min(max(args.warmup_bars, 0), len(times) - 1)])
        else:
            start_ns = int(datetime.fromisoformat(args.start.replace("Z", "+00:00")).timestamp() * 1e9)
        self.start = datetime.fromtimestamp(start_ns / 1e9, tz=timezone.utc)
        after = times[times >= start_ns]
        if not after.size:
            raise ConfigError(f"--feed {args.feed}: no bars at or after {self.start.isoformat()}")
        if args.max_bars is not None:
            k = math.ceil(args.max_bars / len(candles))
            if after.size > k:
                self.end = datetime.fromtimestamp(int(after[k]) / 1e9, tz=timezone.utc)
        for c in candles:
            before = c.frame[c.frame.index < self.start]
            self.history[c.symbol] = before.iloc[len(before) - min(len(before), max(args.warmup_bars, 0)):]

    def feed(self, *, paced: bool = False) -> Any:
        """The bars. ``paced``: a replay read at full speed and released on an absolute schedule
        (``start + bar offset / speed`` wall time), so L2's processing time never accumulates into a
        lag behind an L1 process replaying the same file."""
        a = self.args
        if self.kind == "replay":
            if paced and a.speed > 0:
                return _paced(self.l1.replay_feed(self.sources, speed=0, start=self.start, end=self.end), a.speed)
            return self.l1.replay_feed(self.sources, speed=a.speed, start=self.start, end=self.end)
        return self.l1.binance_feed(self.sources, self.interval, backfill=a.backfill, rest_url=a.rest_url,
                                    stream_url=a.stream_url, max_bars=a.max_bars)

    def journal_url(self) -> str:
        if self.args.journal:
            return str(self.args.journal)
        self.runs.mkdir(exist_ok=True)
        return f"sqlite:///{self.runs / f'paper-{self.run_id}.sqlite'}"

    def open_store(self, prefix: str) -> None:
        """L2's risk state store (see ``l2 risk``), with the journal L2 knows (``--role l2``: none)."""
        journal = self.journal_url() if _is_memory(self.url) or self.args.role == "both" else None
        self.store = open_paper_store(paper_state_path(self.args.state, journal, prefix, self.runs),
                                      reset=self.args.reset_kill_switch)

    def l2(self, bus: Any) -> tuple[Any, Any]:
        from l2_tactical.bus_adapter import L2BusAdapter
        from l2_tactical.signal_generator import SignalGenerator
        from l2_tactical.tactical_loop import TacticalLoop

        generator = SignalGenerator(self.cfg, clock=self.clock, timeframe=self.interval)
        loop = TacticalLoop(self.cfg, generator, clock=self.clock, timeframe=self.interval)
        for symbol, frame in self.history.items():
            if len(frame):
                loop.warm_up(symbol, frame)
        adapter = L2BusAdapter(bus, loop, advance_clock=self.kind == "replay", store=self.store)
        return loop, adapter

    def open_bus(self, url: str, prefix: str, group: str) -> Any:
        from l2_tactical.bus import open_bus

        b = self.cfg.bus
        return open_bus(url, prefix=prefix, group=group, consumer=f"{group}-1", max_deliveries=b.max_deliveries,
                        clock=self.clock, retry_base_seconds=b.retry_base_seconds,
                        retry_max_seconds=b.retry_max_seconds)


async def _paced(feed: Any, speed: float) -> Any:
    loop = asyncio.get_running_loop()
    first: datetime | None = None
    anchor = loop.time()
    async for bar in feed:
        first = first or bar.open_time
        due = anchor + (bar.open_time - first).total_seconds() / speed
        await asyncio.sleep(max(0.0, due - loop.time()))
        yield bar


async def _until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    spins = 0
    while not predicate():
        if loop.time() > deadline:
            return False
        spins += 1
        await asyncio.sleep(0 if spins < 200 else 0.0005)  # let the bus consumers run first
    return True


def _dashboard(args: argparse.Namespace) -> Any:
    from l2_tactical.dashboard import Dashboard

    return None if args.no_dashboard else Dashboard(title=f"l2 paper {args.feed}")


async def _run(args: argparse.Namespace, cfg: Any, l1: SimpleNamespace) -> dict[str, Any]:
    setup = Setup(args, cfg, l1)
    try:
        return await (_run_memory(setup) if _is_memory(setup.url) else _run_split(setup))
    finally:
        if setup.store is not None:
            setup.store.close()  # after L2 stopped (its last write); releases the writer's lock


async def _run_memory(s: Setup) -> dict[str, Any]:
    """L2 + L1 in one process, bar by bar in the canonical order."""
    url = f"memory://paper-{s.run_id}"
    prefix = s.args.prefix or s.cfg.bus.stream_prefix
    s.open_store(prefix)
    l1_bus, l2_bus = s.open_bus(url, prefix, "l1"), s.open_bus(url, prefix, "l2")
    journal = s.l1.journal(s.journal_url())
    executor = s.l1.paper_executor.from_config(s.cfg, journal=journal, clock=s.clock)
    s.runs.mkdir(exist_ok=True)
    metrics = s.l1.metrics_log(s.runs / f"paper-{s.run_id}-l1_metrics.csv")
    l1 = s.l1.bus_adapter(l1_bus, executor, metrics=metrics, advance_clock=s.kind == "replay",
                          heartbeat_seconds=s.cfg.bus.heartbeat_seconds)
    loop, l2 = s.l2(l2_bus)
    board = _dashboard(s.args)
    try:
        await l1.start()
        await l2.start()
        if not await l2.wait_for_l1(s.args.l1_wait):
            raise TransientError("L1 sent no heartbeat or no account snapshot on the in-process bus")
        async for bar in s.feed():
            await l1.on_bar(bar)
            await _until(lambda: l2.stats.reports_received >= l1.published, 5.0)
            await l2.on_bar(bar)
            await _until(lambda: executor.stats.received >= l2.stats.orders_published, 5.0)
            await _until(lambda: l2.stats.reports_received >= l1.published, 5.0)
            if board is not None:
                board.update({**loop.snapshot(), "orders": l2.stats.orders_published})
    finally:
        if board is not None:
            board.close()
        await l2.stop()
        await l1.stop()
        await l2_bus.close()
        await l1_bus.close()
        metrics.close()
        journal.close()
    return _summary(s, loop, l2, {**executor.summary(), "bars": l1.bars,
                                  "portfolio": executor.portfolio.snapshot()}, 0)


def _l1_command(s: Setup, prefix: str, summary_path: str) -> list[str]:
    a = s.args
    cmd = [sys.executable, "-m", "l1_operational", "--bus", s.url, "--prefix", prefix, "--journal",
           s.journal_url(), "--feed", a.feed, "--speed", str(a.speed), "--summary-json", summary_path,
           "--linger", str(a.linger + 1.0), "--metrics-csv", str(s.runs / f"paper-{s.run_id}-l1_metrics.csv"),
           "--heartbeat-seconds", str(s.cfg.bus.heartbeat_seconds)]
    if s.kind == "replay":
        cmd += ["--start", s.start.isoformat()]  # type: ignore[union-attr]
        if s.end is not None:
            cmd += ["--end", s.end.isoformat()]
    else:
        cmd += [x for k, v in (("--rest-url", a.rest_url), ("--stream-url", a.stream_url)) if v for x in (k, v)]
        cmd += ["--backfill", str(a.backfill)]
    if a.config:
        cmd += ["--config", a.config]
    return cmd


async def _run_split(s: Setup) -> dict[str, Any]:
    """L2 here, L1 as its own process on the same Redis streams."""
    a = s.args
    prefix = a.prefix or (s.cfg.bus.stream_prefix if a.role == "l2" else f"{s.cfg.bus.stream_prefix}-{s.run_id}")
    s.open_store(prefix)
    bus = s.open_bus(s.url, prefix, "l2")
    loop, l2 = s.l2(bus)
    child: subprocess.Popen[bytes] | None = None
    summary_path = os.path.join(tempfile.mkdtemp(prefix="l2-paper-"), "l1-summary.json")
    s.runs.mkdir(exist_ok=True)
    board = _dashboard(a)
    l1_summary: dict[str, Any] = {}
    code = 0
    try:
        await bus.ping()
        await l2.start()
        if a.role == "both":
            child = subprocess.Popen(_l1_command(s, prefix, summary_path), stdout=subprocess.DEVNULL)
        if not await l2.wait_for_l1(a.l1_wait):
            raise TransientError(f"no heartbeat or no account snapshot from L1 on {s.url} prefix {prefix!r} "
                                 f"within {a.l1_wait:g} s")

        def show(_: Any) -> None:
            if board is not None:
                board.update({**loop.snapshot(), "orders": l2.stats.orders_published})

        await l2.run_feed(s.feed(paced=True), on_decision=show)
        await asyncio.sleep(a.linger)
        if child is not None:
            code = await asyncio.to_thread(child.wait, a.linger + 60.0)
            with contextlib.suppress(OSError, ValueError):
                l1_summary = json.loads(Path(summary_path).read_text())
    finally:
        if board is not None:
            board.close()
        if child is not None and child.poll() is None:
            child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(10)
        await l2.stop()
        await bus.close()
    return _summary(s, loop, l2, l1_summary, 1 if code else 0, prefix=prefix)


def _summary(s: Setup, loop: Any, l2: Any, l1: dict[str, Any], exit_code: int, *, prefix: str = "") -> dict[str, Any]:
    snap = loop.snapshot()
    initial = s.cfg.execution.initial_cash
    equity = l1.get("equity", snap["equity"])
    return {
        "bus": s.url if not _is_memory(s.url) else "memory", "prefix": prefix or None, "feed": s.args.feed,
        "bars": snap["bars"], "signals": snap["signals"], "orders": l2.stats.orders_published,
        "fills": l1.get("filled", snap["fills"]), "exits": l1.get("exits"),
        "l1_rejections": l1.get("rejected", snap["l1_rejections"]), "l2_no_order_reasons": snap["l2_reasons"],
        "pnl": equity - initial, "realised_pnl_l2_view": snap["realised_pnl"], "fees": l1.get("fees", snap["fees"]),
        "equity": equity, "open_positions": l1.get("open_positions", snap["open_positions"]),
        "latency_p95_ms": snap["latency_p95_ms"], "l1_summary_available": bool(l1), "exit_code": exit_code,
        "journal": redact_url(s.args.journal) if s.args.journal else f"runs/paper-{s.run_id}.sqlite",
        "risk_state": str(s.store.path) if s.store is not None else None,
    }


def _print_summary(summary: dict[str, Any]) -> None:
    rej = ", ".join(f"{k} {v}" for k, v in sorted((summary["l1_rejections"] or {}).items())) or "none"
    l2r = ", ".join(f"{k} {v}" for k, v in sorted(summary["l2_no_order_reasons"].items())) or "none"
    lines = [
        "── l2 paper summary " + "─" * 40,
        f"feed {summary['feed']}  bus {summary['bus']}  bars {summary['bars']}  signals {summary['signals']}",
        f"orders {summary['orders']}  fills {summary['fills']}  exits {summary['exits']}",
        f"L1 rejections by reason: {rej}",
        f"L2 signals without order, by reason: {l2r}",
        f"PnL {summary['pnl']:+,.2f}  fees {summary['fees']:,.2f}  equity {summary['equity']:,.2f}  "
        f"open positions {summary['open_positions']}",
        f"journal {summary['journal']}  L2 risk state {summary['risk_state'] or 'not kept (--state none)'}",
    ]
    if not summary["l1_summary_available"]:
        lines.append("(L1's own summary was not available: fills/fees/PnL are L2's view of L1's reports)")
    print("\n".join(lines), flush=True)
