"""FinRL interop (optional extra): FinRL's DRLAgent trains on L2Trend-v0 in its own virtual environment
(.venv-finrl, see bench/finrl_interop.py) and our safe loader serves the zip it saved, here, in the
project's own environment."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from l2_tactical.config import PACKAGE_ROOT
from l2_tactical.data.features import feature_set
from l2_tactical.finrl_models.model_loader import load_model

FINRL_PYTHON = PACKAGE_ROOT / ".venv-finrl" / "bin" / "python"
SCRIPT = PACKAGE_ROOT / "bench" / "finrl_interop.py"


def _finrl_python() -> Path:
    if FINRL_PYTHON.exists():
        return FINRL_PYTHON
    message = (
        f"FinRL interop needs the optional venv {FINRL_PYTHON.parent.parent} "
        "(build it with the commands in bench/finrl_interop.py)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must build it")
    pytest.skip(message)


@pytest.mark.slow
def test_finrl_drlagent_trains_on_l2trend_and_our_loader_serves_its_zip(tmp_path: Path) -> None:
    python = _finrl_python()
    done = subprocess.run(
        [str(python), str(SCRIPT), "--out", str(tmp_path), "--timesteps", "128"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PACKAGE_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["finrl_agent"].startswith("finrl.") and report["algorithm"] == "PPO"
    assert report["predictions_equal"] is True
    fs = feature_set("trend", "1h")
    loaded = load_model(
        tmp_path / "finrl_trend.zip",
        manifest=tmp_path / "manifest.json",
        expected_feature_hash=fs.schema_hash,
        expected_features=fs.names,
    )
    assert loaded.sha256 == report["sha256"] and loaded.algorithm == "PPO"
    obs = np.zeros(loaded.model.observation_space.shape, dtype=np.float32)
    action, confidence = loaded.predict(obs)
    assert int(action) in (0, 1, 2) and 0.0 <= confidence <= 1.0
