"""Parity: backtesting a file and replaying it through ``l2 paper --bus memory`` give the same orders and fills.

Same bars (real BTCUSDT + ETHUSDT 1m candles), same configuration, same warm-up: the two L1
journals (every order with its status and reason, every fill with its price and fee) must be
equal, and the backtest's own record of orders and fills must match them.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
import yaml

import l2_tactical.commands.paper as paper
from l1_operational.journal import Journal
from l2_tactical.backtest.engine import Backtester, paper_executor_factory
from l2_tactical.cli import main
from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles
from tests.l1_support import BTC_1M, ETH_1M

START = "2025-06-02T00:00:00+00:00"
BARS_PER_SYMBOL = 300
WARMUP = 2100
# Looser quality filters than the defaults, so that a few hundred bars make orders to compare.
LOOSE = {"ensemble": {"confidence_threshold": 0.2}, "signals": {"min_signal_strength": 0.2}}


def direct_l1() -> SimpleNamespace:
    """L1's classes as the ``l2_tactical.l1`` entry points name them (tests may import L1 directly)."""
    from l1_operational.bus_adapter import L1BusAdapter
    from l1_operational.datafeed import BinanceFeed, ReplayFeed
    from l1_operational.executor import PaperExecutor
    from l1_operational.live_gate import install_redaction, resolve_mode
    from l1_operational.metrics_log import MetricsLog

    return SimpleNamespace(journal=Journal, paper_executor=PaperExecutor, bus_adapter=L1BusAdapter,
                           metrics_log=MetricsLog, replay_feed=ReplayFeed, binance_feed=BinanceFeed,
                           resolve_mode=resolve_mode, install_redaction=install_redaction)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    config_path = tmp / "loose.yaml"
    config_path.write_text(yaml.safe_dump(LOOSE))
    with pytest.MonkeyPatch.context() as mp:
        try:
            paper.load_l1()
        except Exception:
            mp.setattr(paper, "load_l1", direct_l1)
        mp.chdir(tmp)
        mp.setenv("BINANCE_MODE", "PAPER")
        paper_url = f"sqlite:///{tmp / 'paper.sqlite'}"
        code = main(["--config", str(config_path), "paper", "--no-dashboard", "--feed", f"replay:{BTC_1M},{ETH_1M}",
                     "--bus", "memory", "--speed", "0", "--start", START, "--max-bars", str(2 * BARS_PER_SYMBOL),
                     "--warmup-bars", str(WARMUP), "--journal", paper_url, "--summary-json", str(tmp / "s.json")])
    assert code == 0
    summary = json.loads((tmp / "s.json").read_text())
    config = L2Config.from_file(config_path, env={})
    backtest_url = f"sqlite:///{tmp / 'backtest.sqlite'}"
    end = datetime.fromisoformat(START) + timedelta(minutes=BARS_PER_SYMBOL)
    result = Backtester(config, executor_factory=paper_executor_factory(backtest_url)).run(
        [load_candles(BTC_1M), load_candles(ETH_1M)], start=START, end=end, warmup_bars=WARMUP)
    return summary, Journal(paper_url), Journal(backtest_url), result


def _fills(journal: Journal) -> list[dict]:
    return [dataclasses.asdict(f) for f in journal.fills()]


def test_paper_and_backtest_processed_the_same_bars_and_made_orders(runs):
    summary, _, _, result = runs
    assert summary["bars"] == result.bars_processed == 2 * BARS_PER_SYMBOL
    assert summary["orders"] > 0 and len(result.orders) == summary["orders"]


def test_backtest_gives_the_same_orders_with_the_same_outcome_as_paper(runs):
    _, paper_journal, backtest_journal, result = runs
    statuses = paper_journal.order_statuses()
    assert statuses and backtest_journal.order_statuses() == statuses
    assert {o.order_id for o in result.orders} == set(statuses)


def test_backtest_gives_the_same_fills_at_the_same_prices_and_fees_as_paper(runs):
    _, paper_journal, backtest_journal, result = runs
    fills = _fills(paper_journal)
    assert fills, "the replay made no fill: nothing would be compared"
    assert _fills(backtest_journal) == fills
    recorded = sorted((abs(f.qty), f.price, f.fee) for t in result.traces.values() for f in t.fills)
    assert recorded == sorted((abs(f["qty"]), f["price"], f["fee"]) for f in fills)
