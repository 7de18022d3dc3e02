"""Fault test, L1 half of issue 8 item 6: kill -9 of the L1 process mid-stream over the real Redis, restart.

L1 runs as its own process (``python -m l1_operational``) on Redis Streams, replaying real BTC/ETH
1h candles through the March 2020 crash while this test, standing in for L2, publishes order intents.
L1 is killed with SIGKILL after some fills; intents keep arriving while it is dead; it is restarted
with the same consumer name and journal. Then: no order is lost, none is filled twice, every report
reaches the bus, and the portfolio equals the journal.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from l1_operational.journal import Journal
from l2_tactical.messages import ExecutionStatus, ReasonCode, Side
from tests.l1_support import BTC_1H, ETH_1H, bars, intent_after, require_service

REPO = Path(__file__).resolve().parent.parent
REDIS = "redis://127.0.0.1:6379/0"
START, END = "2020-03-08T00:00:00Z", "2020-03-15T00:00:00Z"
SPEED = 90_000   # one 1h bar every 0.04 s
pytestmark = [pytest.mark.service, pytest.mark.slow, pytest.mark.timeout(300)]


def intents():
    """BTC and ETH buys every 5th bar (4-5 % stops: the crash stops many), ETH sells in between."""
    btc, eth = bars(BTC_1H, START, END), bars(ETH_1H, START, END)
    out = []
    for i in range(0, len(btc) - 12, 5):
        out.append(intent_after(btc[i], qty=0.003, stop_pct=0.04))
        out.append(intent_after(eth[i], qty=0.15, stop_pct=0.05))
        if i % 15 == 10:
            out.append(intent_after(eth[i + 2], side=Side.SELL, qty=0.15))
    return out


def l1_command(tmp_path: Path, prefix: str) -> list[str]:
    return [sys.executable, "-m", "l1_operational", "--bus", REDIS, "--prefix", prefix, "--consumer", "l1-a",
            "--journal", f"sqlite:///{tmp_path / 'journal.sqlite'}", "--feed", f"replay:{BTC_1H},{ETH_1H}",
            "--start", START, "--end", END, "--speed", str(SPEED), "--linger", "3", "--heartbeat-seconds", "0.5",
            "--metrics-csv", str(tmp_path / "metrics.csv"), "--summary-json", str(tmp_path / "summary.json")]


def spawn(cmd: list[str], tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BINANCE_MODE", None)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(tmp_path / f"{name}.out", "wb"),
                            stderr=subprocess.STDOUT)


def journal_fill_count(url: str) -> int:
    try:
        journal = Journal(url)
        try:
            return len(journal.fills())
        finally:
            journal.close()
    except Exception:   # the process may be creating the tables right now
        return 0


async def publish_all(prefix: str, tmp_path: Path, proc_holder: dict) -> dict:
    """Publish the intents; SIGKILL L1 once it has some fills; keep publishing while it is dead."""
    from l2_tactical.bus import Topic, open_bus
    from l2_tactical.clock import SystemClock

    bus = open_bus(REDIS, prefix=prefix, group="l2-test", consumer="l2-test", max_deliveries=5, clock=SystemClock())
    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    sent, killed_at_fills = [], None
    try:
        for n, intent in enumerate(intents()):
            await bus.publish(Topic.L2_ORDERS, intent)
            sent.append(intent)
            if n % 7 == 3:
                await bus.publish(Topic.L2_ORDERS, sent[n // 2])     # a duplicate of an earlier intent
            await asyncio.sleep(0.05)
            if killed_at_fills is None and n >= 10 and journal_fill_count(url) >= 3:
                proc_holder["p1"].send_signal(signal.SIGKILL)
                proc_holder["p1"].wait(timeout=10)
                killed_at_fills = journal_fill_count(url)
    finally:
        await bus.close()
    return {"sent": sent, "killed_at_fills": killed_at_fills}


def read_reports(prefix: str) -> list:
    import redis

    from l2_tactical.bus.gate import Envelope

    client = redis.Redis.from_url(REDIS)
    try:
        entries = client.xrange(f"{prefix}:l1.reports")
    finally:
        client.close()
    return [Envelope.from_fields({k.decode(): v.decode() for k, v in fields.items()}).open() for _, fields in entries]


def drop_streams(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_l1_killed_mid_stream_restarts_with_portfolio_equal_to_journal_no_order_lost_none_filled_twice(tmp_path):
    require_service("Redis", "127.0.0.1", 6379)
    prefix = f"l1fault-{uuid.uuid4().hex[:8]}"
    cmd = l1_command(tmp_path, prefix)
    try:
        holder = {"p1": spawn(cmd, tmp_path, "run1")}
        time.sleep(1.0)   # let it subscribe (entries published before that are read anyway)
        outcome = asyncio.run(publish_all(prefix, tmp_path, holder))
        p1 = holder["p1"]
        log1 = (tmp_path / "run1.out").read_text()
        assert outcome["killed_at_fills"] is not None, f"L1 never filled 3 orders: {log1}"
        assert p1.returncode == -signal.SIGKILL
        assert not (tmp_path / "summary.json").exists()                       # it really died mid-stream
        p2 = spawn(cmd, tmp_path, "run2")
        assert p2.wait(timeout=120) == 0, (tmp_path / "run2.out").read_text()
        summary = json.loads((tmp_path / "summary.json").read_text())
        reports = read_reports(prefix)
    finally:
        drop_streams(prefix)

    journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    statuses = journal.order_statuses()
    sent_ids = {i.order_id for i in outcome["sent"]}
    # no order lost: every intent reached the journal and ended filled or rejected
    assert sent_ids <= set(statuses)
    assert [o for o, (s, _) in statuses.items() if s == "accepted"] == []
    # none filled twice: one market fill per filled order, in the journal and on the bus
    fills = journal.fills()
    market = Counter(f.order_id for f in fills if f.kind == "market")
    assert max(market.values()) == 1 and set(market) == {o for o, (s, _) in statuses.items() if s == "filled"}
    filled_on_bus = Counter(r.order_id for r in reports
                            if r.status is ExecutionStatus.FILLED and r.reason_code is ReasonCode.OK)
    assert filled_on_bus == market
    assert any(f.kind == "stop_loss" for f in fills) and outcome["killed_at_fills"] < len(fills)
    # every journaled report reached the bus (the outbox survived the kill)
    assert {r.report_id for r in journal.reports()} <= {r.report_id for r in reports}
    assert journal.reports(unpublished_only=True) == []
    # the restarted process's portfolio equals the journal, and the journal adds up
    rebuilt = journal.rebuild_portfolio({"USDT": 0.0}, quote_asset="USDT").snapshot()
    assert summary["portfolio"] == json.loads(json.dumps(rebuilt, default=str))
    usdt = 10_000.0 - sum(f.qty * f.price + f.fee for f in fills)
    assert rebuilt["balances"]["USDT"] == pytest.approx(usdt, abs=1e-6)
    for asset, symbol in (("BTC", "BTCUSDT"), ("ETH", "ETHUSDT")):
        held = sum(f.qty for f in fills if f.symbol == symbol)
        assert rebuilt["balances"].get(asset, 0.0) == pytest.approx(held if abs(held) > 1e-12 else 0.0, abs=1e-9)
