"""``l2 data check``: report on the bundled candles, exit codes, one-line errors, never a traceback."""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from l2_tactical.commands import data as data_command
from l2_tactical.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
BTC_1H = str(DATA / "BTCUSDT-1h.csv.gz")


def run_check(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="l2")
    data_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "check", *argv])
    return int(args.func(args))


@pytest.fixture()
def bad_file(tmp_path: Path) -> Path:
    """Real BTCUSDT rows with high below low in data row 3."""
    with gzip.open(DATA / "BTCUSDT-1h.csv.gz", "rt", encoding="utf-8") as fh:
        lines = [next(fh).rstrip("\n") for _ in range(6)]
    cells = lines[3].split(",")
    cells[2] = "1.0"
    lines[3] = ",".join(cells)
    path = tmp_path / "BTCUSDT-1h.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_data_check_reports_readme_gaps_and_zero_volume_bars(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(BTC_1H) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "symbol BTCUSDT, timeframe 1h, 67078 rows" in out
    assert "first bar 2018-01-01T00:00:00Z, last bar 2025-08-31T23:00:00Z" in out
    assert "gaps: 27 (122 missing bars)" in out
    assert "2018-02-08T00:00:00Z -> 2018-02-09T10:00:00Z: 33 missing" in out
    assert "zero-volume bars: 3 (2019-06-07T21:00:00Z, 2021-02-11T03:00:00Z, 2023-03-24T12:00:00Z)" in out


def test_data_check_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check("--json", BTC_1H, str(DATA / "ETHUSDT-1m.csv.gz")) == 0
    btc, eth = json.loads(capsys.readouterr().out)
    assert (btc["ok"], btc["gap_count"], btc["missing_bars"], btc["rows"]) == (True, 27, 122, 67_078)
    assert btc["zero_volume"] == ["2019-06-07T21:00:00Z", "2021-02-11T03:00:00Z", "2023-03-24T12:00:00Z"]
    assert {"before": "2018-02-08T00:00:00Z", "after": "2018-02-09T10:00:00Z", "missing": 33} in btc["gaps"]
    assert (eth["symbol"], eth["timeframe"], eth["gap_count"], eth["defects"]) == ("ETHUSDT", "1m", 0, [])


def test_unusable_file_exits_4_with_one_line_on_stderr(bad_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(BTC_1H, str(bad_file)) == DataError.exit_code == 4
    out, err = capsys.readouterr()
    assert "gaps: 27" in out  # the usable file is still reported
    assert err.count("\n") == 1
    assert err.startswith(f"error: {bad_file}: line 4, row 3, column high: high < low (high=1.0")


def test_json_output_marks_the_unusable_file(bad_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check("--json", str(bad_file)) == 4
    out, err = capsys.readouterr()
    (entry,) = json.loads(out)
    assert entry["ok"] is False and "high < low" in entry["error"]
    assert err.count("\n") == 1


@pytest.mark.parametrize("kind", ["missing", "directory", "truncated gzip"])
def test_unreadable_inputs_exit_4_without_traceback(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = {"missing": tmp_path / "nope.csv", "directory": tmp_path, "truncated gzip": tmp_path / "t.csv.gz"}[kind]
    if kind == "truncated gzip":
        path.write_bytes((DATA / "SOLUSDT-1h.csv.gz").read_bytes()[:20_000])
    assert run_check(str(path)) == 4
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"error: {path}: ")
    assert "Traceback" not in err


def test_unexpected_failure_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(path: str) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(data_command, "check_candles", explode)
    assert run_check(BTC_1H) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (RuntimeError: boom second line)" in err


def test_data_check_in_a_real_process_never_prints_a_traceback(tmp_path: Path, bad_file: Path) -> None:
    missing = tmp_path / "missing.csv.gz"
    cmd = [sys.executable, "-m", "l2_tactical.commands.data", "check", BTC_1H, str(bad_file), str(missing)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 4
    assert "Traceback" not in proc.stdout + proc.stderr
    bad_line, missing_line = proc.stderr.splitlines()
    assert bad_line.startswith(f"error: {bad_file}: line 4, row 3, column high: high < low")
    assert missing_line == f"error: {missing}: no such file"
    assert "gaps: 27 (122 missing bars)" in proc.stdout


@pytest.mark.skipif(not (ROOT / "l2_tactical" / "cli.py").exists(), reason="l2_tactical/cli.py not written yet")
def test_l2_cli_runs_data_check(bad_file: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "l2_tactical.cli", "data", "check", BTC_1H],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "gaps: 27 (122 missing bars)" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "l2_tactical.cli", "data", "check", str(bad_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 4
    assert len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr
