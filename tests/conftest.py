"""Shared fixtures: real bundled candles, services, markers.

Service tests (Redis, PostgreSQL) and browser tests skip with a message on a
machine without them, but in CI (``CI=true``) they must run: there a missing
service is a failure, not a skip.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests are reproducible run to run (a failure seen once is seen every time, and CI does not
# go red on a new random draw) and have no per-example deadline (the 2 cores are often busy).
# Modules that register their own profiles (tests/test_risk_properties.py) inherit both settings.
settings.register_profile("l2", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("l2")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str, port: int) -> None:
    """Skip (outside CI) or fail (in CI) when a local service is not answering."""
    if _port_open(port):
        return
    message = f"{name} is not answering on 127.0.0.1:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI must run service tests")
    pytest.skip(f"{message} (start it to run this test; CI runs it)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", 6379)
    return "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require_service("PostgreSQL", 5432)
    return "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def _no_l2_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the bundled config, not the developer's L2_* variables."""
    for key in list(os.environ):
        if key.startswith("L2_"):
            monkeypatch.delenv(key, raising=False)
