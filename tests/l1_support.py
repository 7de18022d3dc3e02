"""Shared helpers of the L1 tests: real bundled candles, intents priced from them, service probes."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import pytest

from l1_operational.datafeed import Bar, CandleArrays, merged_bars, read_candle_arrays
from l2_tactical.messages import OrderIntent, Side

DATA = Path(__file__).resolve().parent.parent / "data"
BTC_1H = DATA / "BTCUSDT-1h.csv.gz"
ETH_1H = DATA / "ETHUSDT-1h.csv.gz"
BTC_1M = DATA / "BTCUSDT-1m.csv.gz"
ETH_1M = DATA / "ETHUSDT-1m.csv.gz"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


@lru_cache(maxsize=8)
def arrays(path: Path) -> CandleArrays:
    return read_candle_arrays(path)


def bars(path: Path, start: str, end: str) -> list[Bar]:
    """Real bars of one file with open time in [start, end)."""
    return list(merged_bars([arrays(path)], start=start, end=end))


def bar_at(path: Path, when: str) -> Bar:
    got = bars(path, when, (utc(when) + timedelta(seconds=1)).isoformat())
    assert got and got[0].open_time == utc(when), f"no bar at {when} in {path.name}"
    return got[0]


def intent_after(bar: Bar, *, side: Side = Side.BUY, qty: float = 0.01, stop_pct: float = 0.05,
                 take_profit: float | None = None, tag: str = "", **kw: object) -> OrderIntent:
    """The intent L2 would send once ``bar`` has closed: priced at its close, timestamped at its close."""
    stop = bar.close * (1 - stop_pct) if side is Side.BUY else bar.close * (1 + stop_pct)
    return OrderIntent(signal_id=f"sig-{bar.symbol}-{bar.open_time.isoformat()}-{side.value}{tag}",
                       symbol=bar.symbol, side=side, qty=qty, price=bar.close, stop_loss=stop,
                       take_profit=take_profit, timestamp=bar.close_time, **kw)  # type: ignore[arg-type]


def service_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip with a clear message when a service is down, except in CI where the test must fail."""
    if service_reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: service tests must run)")
    pytest.skip(f"{message}; start it to run this test")
