"""The HTML report renders in headless Chromium: non-blank screenshot, every plotly chart drawn, no console error.

Chromium is driven through the DevTools protocol (aiohttp websocket): page errors come from
Runtime.exceptionThrown / console errors / Log entries, requests from Network events, the
screenshot from Page.captureScreenshot (decoded with Pillow).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from l2_tactical.backtest.baselines import buy_and_hold, sma_cross
from l2_tactical.backtest.metrics import hit_rate_per_source, summarise
from l2_tactical.backtest.report import write_report
from l2_tactical.execution import Costs

DATA = Path(__file__).resolve().parents[1] / "data"
N_CHARTS = 5  # price, equity, drawdown, exposure, hit rate
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--proxy-server=127.0.0.1:9", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed; CI must install Debian's `chromium` package")
        pytest.skip("chromium not installed (apt-get install -y chromium); browser test skipped outside CI")
    return path


@dataclass
class PageRun:
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)
    png: bytes = b""


@contextlib.contextmanager
def _browser(binary: str, profile: Path) -> Iterator[int]:
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start its DevTools endpoint (exit code {proc.poll()})")
            time.sleep(0.1)
        yield int(port_file.read_text().split()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Cdp:
    """Minimal DevTools client: numbered commands, events collected as they come."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id, self.pending, self.events = ws, 0, {}, []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")


CHARTS_JS = """Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ({
  id: d.id, svgs: d.querySelectorAll('.main-svg').length, traces: d.querySelectorAll('.trace').length,
  height: d.getBoundingClientRect().height}))"""


async def _until(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"page did not load within {timeout_s} s")
        await asyncio.sleep(0.1)


async def _drive(port: int, url: str, n_charts: int, chart_wait_s: float) -> PageRun:
    import aiohttp

    run = PageRun()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with session.ws_connect(ws_url, max_msg_size=0) as ws:
            cdp = _Cdp(ws)
            for domain in ("Runtime", "Log", "Network", "Page"):
                await cdp.send(f"{domain}.enable")
            await cdp.send("Emulation.setDeviceMetricsOverride", width=1400, height=2400, deviceScaleFactor=1,
                           mobile=False)  # fmt: skip
            await cdp.send("Page.navigate", url=url)
            await _until(lambda: any(e["method"] == "Page.loadEventFired" for e in cdp.events), 60)
            deadline = time.monotonic() + chart_wait_s
            while True:  # plotly draws after the load event
                run.charts = await cdp.evaluate(CHARTS_JS) or []
                drawn = len(run.charts) >= n_charts and all(c["svgs"] > 0 for c in run.charts)
                if drawn or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(0.5)  # let plotly finish its last layout pass
            shot = await cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
            run.png = base64.b64decode(shot["data"])
            cdp.reader.cancel()
    run.errors, run.requests = _page_errors(cdp.events), _requests(cdp.events)
    return run


def _page_errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            out.append(f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}")
        elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(
                "console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
            )
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
    return out


def _requests(events: list[dict[str, Any]]) -> list[str]:
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


def _render(binary: str, html_path: Path, tmp: Path, n_charts: int, chart_wait_s: float = 60.0) -> PageRun:
    with _browser(binary, tmp / "profile") as port:
        return asyncio.run(_drive(port, html_path.resolve().as_uri(), n_charts, chart_wait_s))


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report from a real baseline run: SMA cross with stops vs buy-and-hold, BTCUSDT 1h since 2024."""
    df = pd.read_csv(DATA / "BTCUSDT-1h.csv.gz", parse_dates=["timestamp"], index_col="timestamp").loc["2024-01-01":]
    o, h, lo, c = (df[k].to_numpy() for k in ("open", "high", "low", "close"))
    costs = Costs(fee_bps=10.0, half_spread_bps=1.0, slippage_bps=2.0, volatility_slippage=0.05)
    strat = sma_cross(o, h, lo, c, costs, fast=24, slow=168, stop_loss=0.04)
    bench = buy_and_hold(o, h, lo, c, costs)
    fwd = np.append(c[1:] / c[:-1] - 1.0, np.nan)
    momentum = np.sign(np.append(0.0, c[1:] / c[:-1] - 1.0))
    hits = hit_rate_per_source({"sma_cross": strat.targets, "momentum_1h": momentum, "always_long": np.ones(c.size)},
                               fwd)  # fmt: skip
    metrics = {
        "sma_cross_24_168": summarise(strat.equity, fills=strat.fills, exposure=strat.exposure, mark_price=c[-1]),
        "buy_and_hold": summarise(bench.equity, fills=bench.fills, exposure=bench.exposure, mark_price=c[-1]),
    }
    return write_report(
        tmp_path_factory.mktemp("report") / "report.html", title="SMA cross 24/168 (4 % stop) vs buy & hold",
        subtitle=f"BTCUSDT 1h {df.index[0]:%Y-%m-%d} to {df.index[-1]:%Y-%m-%d}, costs on", timestamps=df.index,
        open_=o, high=h, low=lo, close=c, equity=strat.equity, benchmark_equity=bench.equity, fills=strat.fills,
        stops=strat.stops, exposure=strat.exposure, hit_rate_per_source=hits, metrics=metrics,
    )  # fmt: skip


def test_report_is_one_self_contained_file_without_network_references(report: Path) -> None:
    import plotly.offline

    text = report.read_text(encoding="utf-8")
    assert plotly.offline.get_plotlyjs() in text  # plotly.js inline
    outside_bundle = text.replace(plotly.offline.get_plotlyjs(), "")
    for needle in ("http://", "https://", "<script src", "<link", "@import", "url("):
        assert needle not in outside_bundle, needle
    assert outside_bundle.count('class="plotly-graph-div"') == N_CHARTS


def test_write_report_names_a_series_of_the_wrong_length(tmp_path: Path) -> None:
    ts = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    prices = np.array([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=r"exposure: expected 4 values \(one per bar\), got shape \(3,\)"):
        write_report(tmp_path / "r.html", title="t", timestamps=ts, open_=prices, high=prices, low=prices,
                     close=prices, equity=prices, exposure=prices[:3], metrics={})  # fmt: skip
    assert not (tmp_path / "r.html").exists()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_report_renders_every_chart_in_headless_chromium_without_errors(
    chromium: str, report: Path, tmp_path: Path
) -> None:
    run = _render(chromium, report, tmp_path, N_CHARTS)
    (tmp_path / "report.png").write_bytes(run.png)
    assert run.errors == [], run.errors
    assert [u for u in run.requests if not u.startswith(("file:", "data:", "blob:", "about:"))] == []
    assert len(run.charts) == N_CHARTS
    for chart in run.charts:  # each div holds plotly's SVG layers with drawn traces
        assert chart["svgs"] >= 1 and chart["traces"] >= 1 and chart["height"] > 100, chart
    pixels = _pixels(run.png)
    assert pixels.shape == (2400, 1400, 3)
    assert pixels.std() > 20.0  # not a blank page
    assert np.mean(pixels.sum(axis=2) < 600) > 0.03  # a good share of non-white (drawn) pixels
    # the candle colours are on the page: green (up) and red (down) pixels
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert np.sum((g > 120) & (r < 90) & (b < 110)) > 500
    assert np.sum((r > 160) & (g < 80) & (b < 80)) > 500


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_the_browser_check_catches_a_broken_page(chromium: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><body><div class='plotly-graph-div'></div>"
        "<script>console.error('chart failed'); undefinedPlotly.newPlot('x');</script></body></html>"
    )
    run = _render(chromium, broken, tmp_path, 1, chart_wait_s=1.0)
    assert any("chart failed" in e for e in run.errors)
    assert any("undefinedPlotly" in e for e in run.errors)
    assert run.charts[0]["svgs"] == 0
    assert _pixels(run.png).std() < 1.0  # blank white page
