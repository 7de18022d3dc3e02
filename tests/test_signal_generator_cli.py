"""``l2 signals``: seed 000's example from the command line, on real candles, with one-line errors."""

from __future__ import annotations

import json

import pytest

from l2_tactical.cli import main
from tests.test_fast_policy import BTC_1H, shared_ensemble


def test_l2_signals_prints_the_seed_example_with_loaded_specialists(capsys: pytest.CaptureFixture[str]) -> None:
    root = shared_ensemble("1h")[0]
    code = main(["signals", "--data", str(BTC_1H), "--symbol", "BTCUSDT", "--regime", "trending",
                 "--strength", "0.8", "--last", "150", "--models", str(root)])
    out = capsys.readouterr().out
    assert code == 0
    assert "specialist trend: PPO" in out and "specialist volatility: SAC" in out
    assert out.count("bar closing") == 150
    assert "Signal: " in out and "Strength: " in out and "Source: " in out and "Metadata: " in out


def test_l2_signals_json_lines_are_tactical_signals(capsys: pytest.CaptureFixture[str]) -> None:
    from l2_tactical.messages import TacticalSignal

    code = main(["signals", "--data", str(BTC_1H), "--last", "100", "--json", "--models", str(BTC_1H.parent)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines
    signals = [TacticalSignal.from_json(line) for line in lines]
    assert {s.symbol for s in signals} == {"BTCUSDT"}
    assert all(json.loads(line)["metadata"].get("ai_status", "").startswith("unavailable")
               for line in lines if json.loads(line)["source"] == "composite")


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["--data", "no/such.csv.gz"], 4, "no such file"),
    (["--data", str(BTC_1H), "--last", "0"], 3, "--last=0"),
    (["--data", str(BTC_1H), "--strength", "2"], 3, "--strength=2.0"),
])
def test_l2_signals_reports_bad_input_in_one_line(argv: list[str], code: int, message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["signals", *argv]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
