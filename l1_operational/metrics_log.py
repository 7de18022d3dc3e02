"""Per-cycle CSV metrics of L1 (seed 002: "Guarda métricas de órdenes y portfolio en CSV ... por ciclo y símbolo").

One row per cycle (a processed bar) for the bar's symbol: the bar, cumulative order counts
(received, filled, rejected, stop/take-profit exits), fees, average slippage, the symbol's
base balance and exposure, the quote balance, equity at marks, open positions and pending
orders. Appends to an existing file with the same header (a restarted process continues
the log); a different header is refused rather than mixed.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

COLUMNS = ("cycle", "bar_time", "symbol", "close", "orders_received", "orders_filled", "orders_rejected",
           "exits", "fees_total", "avg_slippage_bps", "base_balance", "quote_balance", "exposure", "equity",
           "open_positions", "pending_orders")


class MetricsLog:
    """``record(bar, executor)`` once per cycle; ``close()`` at the end (rows are flushed every ``flush_every``)."""

    def __init__(self, path: str | Path, *, flush_every: int = 100) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists:
            with self.path.open(newline="") as fh:
                header = next(csv.reader(fh), [])
            if tuple(header) != COLUMNS:
                raise ValueError(f"metrics_csv={str(self.path)!r}: existing header {header} is not {list(COLUMNS)}")
        self._fh: IO[str] = self.path.open("a", newline="")
        self._writer = csv.writer(self._fh)
        if not exists:
            self._writer.writerow(COLUMNS)
        self.flush_every, self.cycle, self._unflushed = flush_every, 0, 0

    def record(self, bar: Any, executor: Any) -> None:
        stats, portfolio = executor.stats, executor.portfolio
        self.cycle += 1
        self._writer.writerow((
            self.cycle, bar.open_time.isoformat(), bar.symbol, bar.close, stats.received, stats.filled,
            sum(stats.rejected.values()), stats.exits, round(stats.fees, 8), round(stats.avg_slippage_bps, 4),
            portfolio.base_qty(bar.symbol), round(portfolio.balance(portfolio.quote_asset), 8),
            round(portfolio.exposure(bar.symbol), 6), round(portfolio.equity(), 8), len(portfolio.positions),
            len(executor.pending()),
        ))
        self._unflushed += 1
        if self._unflushed >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        self._fh.flush()
        self._unflushed = 0

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
