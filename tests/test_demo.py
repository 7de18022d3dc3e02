"""``l2 demo`` (what ``make demo`` runs) end to end on the bundled data, twice in one folder."""

from __future__ import annotations

import json

import pytest

from l2_tactical.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end_and_a_second_run_replays_on_a_fresh_account(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--paper-bars", "600", "--skip-evaluate"]
    assert main(argv) == 0
    first = json.loads((out / "paper.json").read_text())
    report = (out / "report.html").read_text()
    assert "plotly" in report.lower() and len(report) > 100_000  # self-contained: plotly.js inlined
    assert json.loads((out / "backtest.json").read_text())
    assert first["bars"] == 600 and first["orders"] > 0 and first["fills"] > 0
    assert first["exit_code"] == 0 and first["open_positions"] >= 0

    # a second `make demo` in the same folder: the replay starts again on a fresh paper account, not on the
    # account (and L2 risk state) the first run left behind, so it tells the same story
    assert main(argv) == 0
    second = json.loads((out / "paper.json").read_text())
    for key in ("orders", "fills", "exits", "pnl", "fees", "equity", "l2_no_order_reasons"):
        assert second[key] == first[key], key
    assert "restored from" not in capsys.readouterr().err
