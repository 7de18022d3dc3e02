"""`l2 paper` end to end on real candles: in one process (memory bus), with L1 as its own process
(Redis), on python-binance against the local Binance-compatible server; parity with drive_bar."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from types import SimpleNamespace

import pytest

import l2_tactical.commands.paper as paper
from l2_tactical.cli import main
from l2_tactical.config import L2Config
from tests.l1_support import BTC_1M

FEED = f"replay:{BTC_1M}"


def direct_l1() -> SimpleNamespace:
    """L1's classes, as the `l2_tactical.l1` entry points name them (tests may import L1 directly)."""
    from l1_operational.bus_adapter import L1BusAdapter
    from l1_operational.datafeed import BinanceFeed, ReplayFeed
    from l1_operational.executor import PaperExecutor
    from l1_operational.journal import Journal
    from l1_operational.live_gate import install_redaction, resolve_mode
    from l1_operational.metrics_log import MetricsLog

    return SimpleNamespace(journal=Journal, paper_executor=PaperExecutor, bus_adapter=L1BusAdapter,
                           metrics_log=MetricsLog, replay_feed=ReplayFeed, binance_feed=BinanceFeed,
                           resolve_mode=resolve_mode, install_redaction=install_redaction)


@pytest.fixture
def l1_installed(monkeypatch, tmp_path):
    """Resolve L1 like the entry points will, and keep run files in a temporary directory."""
    try:
        paper.load_l1()
    except Exception:
        monkeypatch.setattr(paper, "load_l1", direct_l1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BINANCE_MODE", "PAPER")
    return tmp_path


def paper_run(tmp_path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / f"summary-{uuid.uuid4().hex[:6]}.json"
    code = main(["paper", "--no-dashboard", "--summary-json", str(out), *extra])
    return code, (json.loads(out.read_text()) if out.exists() else {})


def test_paper_memory_runs_l2_and_l1_in_one_process_and_prints_the_summary(l1_installed, capsys):
    journal = f"sqlite:///{l1_installed / 'j.sqlite'}"
    code, summary = paper_run(l1_installed, "--feed", FEED, "--bus", "memory", "--speed", "0",
                              "--max-bars", "400", "--journal", journal)
    out = capsys.readouterr().out
    assert code == 0
    assert summary["bars"] == 400 and summary["orders"] > 0 and summary["l1_summary_available"]
    for line in ("orders", "fills", "L1 rejections by reason", "PnL", "fees"):
        assert line in out
    from l1_operational.journal import Journal

    reports = Journal(journal).reports()
    market_fills = [r for r in reports if r.status.value == "filled" and r.order_id.startswith("ord-")]
    assert summary["fills"] == len(market_fills)
    assert summary["pnl"] == pytest.approx(summary["equity"] - L2Config.default().execution.initial_cash)
    assert summary["fees"] == pytest.approx(sum(r.fees for r in reports))


def test_paper_memory_gives_the_same_orders_and_fills_as_drive_bar(l1_installed):
    """The parity the backtest relies on: the bus path and the direct path decide identically."""
    from l1_operational.datafeed import merged_bars, read_candle_arrays
    from l1_operational.executor import PaperExecutor
    from l1_operational.journal import Journal
    from l2_tactical.clock import SimulatedClock
    from l2_tactical.data.candles import load_candles
    from l2_tactical.signal_generator import SignalGenerator
    from l2_tactical.tactical_loop import TacticalLoop, drive_bar

    journal = f"sqlite:///{l1_installed / 'parity.sqlite'}"
    code, summary = paper_run(l1_installed, "--feed", FEED, "--bus", "memory", "--speed", "0", "--max-bars", "300",
                              "--warmup-bars", "2100", "--journal", journal)
    assert code == 0 and summary["orders"] > 0

    cfg = L2Config.default()
    candles = load_candles(BTC_1M)
    start = candles.frame.index[2100]
    bars = list(merged_bars([read_candle_arrays(BTC_1M)], start=start.isoformat()))[:300]
    clock = SimulatedClock(bars[0].open_time)
    loop = TacticalLoop(cfg, SignalGenerator(cfg, clock=clock, timeframe="1m"), clock=clock)
    loop.warm_up("BTCUSDT", candles.frame.iloc[:2100])
    loop.risk_gate(True, 0.0)
    executor = PaperExecutor.from_config(cfg, journal=Journal("sqlite://"), clock=clock)
    for bar in bars:
        clock.set(bar.close_time)
        drive_bar(loop, executor, bar, bar.close_time)
    via_bus = [r.to_dict() for r in Journal(journal).reports()]
    direct = [r.to_dict() for r in executor.journal.reports()]
    key = lambda r: (r["timestamp"], r["order_id"])  # noqa: E731
    assert sorted(via_bus, key=key) == sorted(direct, key=key)
    assert Journal(journal).order_statuses() == executor.journal.order_statuses()


def test_paper_rejects_a_bad_feed_with_one_line_and_the_config_exit_code(l1_installed, capsys):
    code = main(["paper", "--feed", "kafka:nowhere", "--bus", "memory"])
    err = capsys.readouterr().err
    assert code == 3 and "--feed" in err and "Traceback" not in err


def test_paper_without_l1_entry_points_says_how_to_install_them(monkeypatch, capsys):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [])
    code = main(["paper", "--feed", FEED, "--bus", "memory"])
    err = capsys.readouterr().err
    assert code == 3 and "l2_tactical.l1" in err


def test_paper_refuses_live_mode_without_environment_and_confirmation(l1_installed, monkeypatch, capsys):
    assert main(["paper", "--feed", FEED, "--mode", "LIVE"]) == 3
    assert "BINANCE_MODE=LIVE" in capsys.readouterr().err
    monkeypatch.setenv("BINANCE_MODE", "LIVE")
    assert main(["paper", "--feed", FEED, "--mode", "LIVE"]) == 3
    assert "--confirm-live" in capsys.readouterr().err
    monkeypatch.setenv("BINANCE_API_KEY", "k" * 16)
    monkeypatch.setenv("BINANCE_API_SECRET", "s" * 16)
    assert main(["paper", "--feed", FEED, "--mode", "LIVE", "--confirm-live"]) == 3
    err = capsys.readouterr().err
    assert "not part of this build" in err and "s" * 16 not in err and "k" * 16 not in err


class ServerThread:
    """The local Binance-compatible server on its own event loop, for a CLI that runs asyncio.run()."""

    def __init__(self, **kwargs) -> None:
        from l1_operational.binance_replay_server import BinanceReplayServer

        self.server = BinanceReplayServer([BTC_1M], **kwargs)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self.server

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_paper_on_python_binance_against_the_local_server(l1_installed):
    cfg = L2Config.default()
    with ServerThread(limits=cfg.symbols, start="2025-06-01T00:00:00Z", ws_max_bars=40) as server:
        code, summary = paper_run(l1_installed, "--feed", "binance:BTCUSDT@1m", "--bus", "memory", "--max-bars",
                                  "40", "--backfill", "20", "--rest-url", server.rest_url, "--stream-url",
                                  server.stream_url, "--l1-wait", "20")
    assert code == 0
    assert summary["bars"] == 40 and summary["feed"] == "binance:BTCUSDT@1m"


@pytest.mark.service
def test_paper_over_redis_runs_l1_as_its_own_process(l1_installed, redis_url):
    prefix = f"test-paper-{uuid.uuid4().hex[:8]}"
    try:
        code, summary = paper_run(l1_installed, "--feed", FEED, "--bus", redis_url, "--prefix", prefix,
                                  "--speed", "1500", "--max-bars", "200", "--linger", "1",
                                  "--journal", f"sqlite:///{l1_installed / 'split.sqlite'}")
        assert code == 0
        assert summary["l1_summary_available"], "the L1 process wrote no summary"
        assert summary["bars"] == 200 and summary["orders"] > 0
        from l1_operational.journal import Journal

        statuses = Journal(f"sqlite:///{l1_installed / 'split.sqlite'}").order_statuses()
        assert len(statuses) == summary["orders"]  # every order L2 sent reached the L1 process once
    finally:
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_dashboard_draws_a_live_table_on_a_terminal_and_plain_lines_otherwise():
    import io
    import math

    from l2_tactical.dashboard import Dashboard

    snap = {"bars": 7, "signals_per_hour": 2.5, "avg_confidence": 0.61, "avg_consensus": math.nan,
            "open_positions": 1, "portfolio_heat": 0.015, "latency_p95_ms": 1.25, "equity": 10_012.5,
            "orders": 3, "fills": 2, "gate": "stale_heartbeat"}
    tty = io.StringIO()
    board = Dashboard(stream=tty, live=True, every_s=0.0)
    board.update(snap)
    board.close()
    drawn = tty.getvalue()
    for text in ("signals / hour", "2.5", "consensus", "n/a", "portfolio heat", "1.50%", "1.25 ms", "stale_heartbeat"):
        assert text in drawn
    plain = io.StringIO()
    board = Dashboard(stream=plain, every_s=3600.0)  # a StringIO is not a TTY: plain lines, throttled
    board.update(snap)
    board.update({**snap, "bars": 8})
    assert plain.getvalue().count("\n") == 1 and "bars 7" in plain.getvalue()
    board.close()  # the last snapshot is always drawn
    assert "bars 8" in plain.getvalue()


def test_paper_keeps_l2s_kill_switch_across_runs_on_the_same_account_until_reset_kill_switch(l1_installed, capsys,
                                                                                           caplog):
    """Three `l2 paper` runs on one journal: the first trips the kill switch (tight limits), the second
    (later bars, same account) starts HALTED and sends no order, the third resets it and trades."""
    import logging

    from l2_tactical.messages import TradingState
    from l2_tactical.risk_store import RiskStore

    caplog.set_level(logging.INFO, logger="l2_tactical")

    tight = l1_installed / "tight.yaml"
    tight.write_text("risk:\n  drawdown_reduce: 0.0005\n  drawdown_halt: 0.0005\n")
    journal = f"sqlite:///{l1_installed / 'acct.sqlite'}"
    common = ("--config", str(tight), "paper", "--feed", FEED, "--bus", "memory", "--speed", "0", "--journal", journal)

    def run(*extra: str) -> tuple[int, dict, str]:
        out = l1_installed / f"summary-{uuid.uuid4().hex[:6]}.json"
        code = main([*common, "--no-dashboard", "--summary-json", str(out), *extra])
        return code, json.loads(out.read_text()), capsys.readouterr().out

    code, first, _ = run("--max-bars", "400")
    state = l1_installed / "acct-l2state.sqlite"
    assert code == 0 and first["orders"] > 0 and first["risk_state"] == str(state)
    assert f"L2 risk state: {state} (nothing stored yet: L2 starts fresh)" in caplog.messages
    assert any(m.startswith(f"l2: [warning] state_restored: no stored risk state in {state}") for m in caplog.messages)
    store = RiskStore.existing(state)
    assert store.load().trading_state is TradingState.HALTED
    store.close()

    code, second, _ = run("--start", "2025-05-21T18:00:00Z", "--max-bars", "300")
    assert code == 0 and second["l2_no_order_reasons"].get("drawdown_kill_switch", 0) > 0   # halted from the start
    assert set(second["l2_no_order_reasons"]) <= {"drawdown_kill_switch", "size_zero"}
    assert second["orders"] == 0                                         # without the stored state: it trades

    code, third, out = run("--start", "2025-05-22T00:00:00Z", "--max-bars", "300", "--reset-kill-switch")
    assert code == 0 and f"kill switch reset in {state}" in out and third["orders"] > 0


def test_paper_keeps_a_non_sqlite_journals_risk_state_in_one_file_whatever_the_runs_prefix(l1_installed, monkeypatch,
                                                                                           caplog):
    """`--bus redis --role both`, a PostgreSQL journal, no `--prefix`: each run gets its own stream prefix,
    but the risk state belongs to the account (the journal), so every run opens the same file, named
    without the journal's password (which may change between runs) and logged by its absolute path."""
    import logging

    from l2_tactical.errors import TransientError

    caplog.set_level(logging.INFO, logger="l2_tactical")
    seen: list[tuple[str, str]] = []

    def no_bus(self, url, prefix, group):   # stop each run where L2 would connect, its store open
        seen.append((prefix, self.store.name))
        raise TransientError("test: no bus")

    monkeypatch.setattr(paper.Setup, "open_bus", no_bus)
    for password in ("s3cret-one", "s3cret-two"):
        journal = f"postgresql+psycopg2://l2:{password}@127.0.0.1:5432/l2_account"
        assert main(["paper", "--feed", "binance:BTCUSDT", "--bus", "redis://127.0.0.1:6379/0", "--journal", journal,
                     "--no-dashboard"]) == 6
    (first_prefix, first_state), (second_prefix, second_state) = seen
    assert first_prefix != second_prefix                                # a fresh stream prefix per run
    assert first_state == second_state and first_state.startswith(str(l1_installed / "runs" / "l2-state-postgresql-"))
    assert f"L2 risk state: {first_state} (nothing stored yet: L2 starts fresh)" in caplog.messages
    assert not any("s3cret" in m for m in caplog.messages) and "s3cret" not in first_state
    other = paper.paper_state_path(None, "postgresql://l2@127.0.0.1:5432/other_account", second_prefix,
                                   l1_installed / "runs")
    assert str(other) != first_state                                    # another account, another file
