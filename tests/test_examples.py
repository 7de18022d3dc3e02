"""The README's seed 000 example runs as written on the bundled data with the shipped models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_seed000_example_prints_the_signals_of_the_chosen_bar():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "seed000_usage.py"), "--until", "2025-08-19T13:00"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "signal(s) for the bar opening 2025-08-19 13:00 UTC" in out.stdout
    # the 13:00 bar is a real bearish engulfing candle (open above the prior close, close below the prior open)
    assert "Source: pattern" in out.stdout and "engulfing" in out.stdout
    assert "Traceback" not in out.stderr
