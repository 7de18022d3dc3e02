"""Terminal dashboard of a paper-trading run: a rich Live table on a TTY, plain lines otherwise.

Shows, from :meth:`l2_tactical.tactical_loop.TacticalLoop.snapshot` plus the run's own counters:
signals per hour (of replayed/market time), average confidence, consensus, open positions,
portfolio heat, decision latency p95, and equity, orders, fills, the liveness gate.

>>> import io
>>> out = io.StringIO()
>>> d = Dashboard(stream=out, every_s=0.0)
>>> d.update({"bars": 10, "signals": 2, "signals_per_hour": 12.0, "avg_confidence": 0.7, "avg_consensus": 0.9,
...           "open_positions": 1, "portfolio_heat": 0.01, "latency_p95_ms": 0.5, "equity": 10000.0,
...           "orders": 1, "fills": 1, "gate": "ok"})
>>> d.close()
>>> "signals/h 12.0" in out.getvalue()
True
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

ROWS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("bars", "bars", lambda v: f"{int(v):,}"),
    ("signals_per_hour", "signals / hour", lambda v: f"{v:.1f}"),
    ("avg_confidence", "avg confidence", lambda v: f"{v:.2f}"),
    ("avg_consensus", "consensus", lambda v: "n/a" if v is None or math.isnan(v) else f"{v:.2f}"),
    ("open_positions", "open positions", lambda v: f"{int(v)}"),
    ("portfolio_heat", "portfolio heat", lambda v: f"{v:.2%}"),
    ("latency_p95_ms", "decision latency p95", lambda v: "n/a" if math.isnan(v) else f"{v:.2f} ms"),
    ("equity", "equity (L2 view)", lambda v: f"{v:,.2f}"),
    ("orders", "orders sent", lambda v: f"{int(v)}"),
    ("fills", "fills", lambda v: f"{int(v)}"),
    ("gate", "liveness gate", str),
)

_PLAIN = (("bars", "bars {}"), ("signals_per_hour", "signals/h {:.1f}"), ("avg_confidence", "conf {:.2f}"),
          ("avg_consensus", "consensus {:.2f}"), ("open_positions", "open {}"), ("portfolio_heat", "heat {:.2%}"),
          ("latency_p95_ms", "p95 {:.2f} ms"), ("equity", "equity {:,.2f}"), ("orders", "orders {}"),
          ("fills", "fills {}"), ("gate", "gate {}"))


def plain_line(snapshot: Mapping[str, Any]) -> str:
    """One line of the numbers the dashboard shows (the non-TTY form)."""
    parts = []
    for key, fmt in _PLAIN:
        if key in snapshot:
            value = snapshot[key]
            parts.append(fmt.format(value) if not (isinstance(value, float) and math.isnan(value))
                         else fmt.split(" ")[0] + " n/a")
    return " | ".join(parts)


def _table(snapshot: Mapping[str, Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=False, expand=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, label, fmt in ROWS:
        if key in snapshot:
            table.add_row(label, fmt(snapshot[key]))
    return table


class Dashboard:
    """``update(snapshot)`` as often as you like; it redraws at most every ``every_s`` seconds."""

    def __init__(self, *, title: str = "l2 paper", stream: IO[str] | None = None, every_s: float | None = None,
                 live: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stdout
        self.title, self.clock = title, clock
        self.live = self.stream.isatty() if live is None else live
        self.every_s = every_s if every_s is not None else (0.25 if self.live else 5.0)
        self._last = -math.inf
        self._latest: Mapping[str, Any] = {}
        self._live: Any = None
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(_table({}, title), console=Console(file=self.stream), auto_refresh=False,
                              transient=False)
            self._live.start()

    def update(self, snapshot: Mapping[str, Any], *, force: bool = False) -> None:
        self._latest = snapshot
        now = self.clock()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        if self._live is not None:
            self._live.update(_table(snapshot, self.title), refresh=True)
        else:
            print(f"{self.title}: {plain_line(snapshot)}", file=self.stream, flush=True)

    def close(self) -> None:
        """Draw the last snapshot and release the terminal."""
        if self._latest:
            self.update(self._latest, force=True)
        if self._live is not None:
            self._live.stop()
            self._live = None
