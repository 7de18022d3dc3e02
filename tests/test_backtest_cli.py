"""``l2 backtest`` end to end on real candles: the metrics table next to the baselines, the JSON file, the
HTML report, files the project never trained on, and errors as one line with the right exit code."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml

from l2_tactical.backtest.baselines import buy_and_hold
from l2_tactical.cli import main
from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles
from l2_tactical.execution import Costs
from tests.l1_support import BTC_1H, ETH_1H

SOL_1H = BTC_1H.parent / "SOLUSDT-1h.csv.gz"


@pytest.fixture
def loose(tmp_path):
    """A config file with looser quality filters and no specialists, so a month of bars trades."""
    path = tmp_path / "loose.yaml"
    models = {n: {**dataclasses.asdict(m), "path": f"/nonexistent/{n}.zip"}
              for n, m in L2Config.default().ensemble.models.items()}
    path.write_text(yaml.safe_dump({"ensemble": {"confidence_threshold": 0.2, "models": models},
                                    "signals": {"min_signal_strength": 0.2}}))
    return path


def test_backtest_prints_the_table_and_writes_json_and_report(tmp_path, loose, capsys):
    out_json, out_html = tmp_path / "bt.json", tmp_path / "bt.html"
    code = main(["--config", str(loose), "backtest", "--data", f"{BTC_1H},{ETH_1H}", "--from", "2024-09-01",
                 "--to", "2024-10-01", "--json", str(out_json), "--report", str(out_html), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    for word in ("l2_ensemble", "buy_and_hold", "sma_cross_24_168", "Sharpe", "max drawdown", "fees paid"):
        assert word in out
    data = json.loads(out_json.read_text())
    assert data["strategy"]["orders"] > 0 and data["strategy"]["metrics"]["n_bars"] == 30 * 24
    assert set(data["benchmarks"]) == {"buy_and_hold", "sma_cross_24_168"}
    assert len(data["verdict"]) == 4
    page = out_html.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'id="chart-0"' in page and "buy_and_hold" in page


def test_buy_and_hold_in_the_table_is_the_simulator_s_buy_and_hold_on_the_same_bars(tmp_path, loose, capsys):
    out_json = tmp_path / "bt.json"
    assert main(["--config", str(loose), "backtest", "--data", str(BTC_1H), "--from", "2024-09-01", "--to",
                 "2024-10-01", "--json", str(out_json), "--no-progress"]) == 0
    capsys.readouterr()
    cfg = L2Config.default()
    f = load_candles(BTC_1H).slice("2024-09-01", "2024-10-01").frame
    limits = cfg.symbols["BTCUSDT"]
    bh = buy_and_hold(*(f[k].to_numpy() for k in ("open", "high", "low", "close")), Costs.from_config(cfg.execution),
                      initial_cash=cfg.execution.initial_cash, lot_step=limits.lot_step,
                      min_notional=limits.min_notional)
    got = json.loads(out_json.read_text())["benchmarks"]["buy_and_hold"]
    assert got["total_return"] == pytest.approx(bh.equity[-1] / bh.equity[0] - 1.0, rel=1e-12)
    assert got["fees_paid"] == pytest.approx(bh.fees_paid, rel=1e-12)


def test_backtest_runs_on_a_symbol_no_model_was_trained_on(tmp_path, loose, capsys):
    out_json = tmp_path / "sol.json"
    code = main(["--config", str(loose), "backtest", "--data", str(SOL_1H), "--from", "2025-05-01", "--to",
                 "2025-05-15", "--json", str(out_json), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "SOLUSDT" in out and "not configured" in out
    data = json.loads(out_json.read_text())
    assert data["strategy"]["symbols"] == ["SOLUSDT"]
    assert np.isfinite(data["benchmarks"]["buy_and_hold"]["sharpe"])


def test_default_from_is_the_held_out_test_window(tmp_path, loose, capsys):
    out_json = tmp_path / "bt.json"
    assert main(["--config", str(loose), "backtest", "--data", str(BTC_1H), "--to", "2024-07-20",
                 "--json", str(out_json), "--no-progress"]) == 0
    capsys.readouterr()
    start = json.loads(out_json.read_text())["strategy"]["start"]
    assert start.startswith("2024-07-08T00:00")  # walk_forward.validation_end 2024-07-01 + 168 purge bars


def test_a_missing_file_is_one_line_on_stderr_with_the_data_exit_code(tmp_path, capsys):
    code = main(["backtest", "--data", str(tmp_path / "NOPEUSDT-1h.csv.gz"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 4
    assert len(err.strip().splitlines()) == 1 and "NOPEUSDT-1h.csv.gz" in err


def test_a_bad_sma_argument_is_a_config_error(capsys):
    assert main(["backtest", "--data", str(BTC_1H), "--sma", "200,50", "--no-progress"]) == 3
    assert "--sma" in capsys.readouterr().err
