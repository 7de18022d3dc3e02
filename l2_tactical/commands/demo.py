"""``l2 demo``: the whole product on the bundled real candles, in a few minutes.

Steps: check the data; run the baselines (buy-and-hold, SMA cross) through the one
execution simulator on the held-out period, costs on; print the metrics table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from l2_tactical.commands.common import load_config
from l2_tactical.config import PACKAGE_ROOT, L2Config

DEMO_SYMBOLS = ("BTCUSDT", "ETHUSDT")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="show the whole pipeline working on the bundled real data",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(PACKAGE_ROOT / "data"), help="folder with <SYMBOL>-1h.csv.gz files")
    p.add_argument("--out", default="runs/demo", help="folder for the report and logs (default: runs/demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=False)
    cfg = load_config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir)
    steps: Sequence[tuple[str, Callable[..., Any]]] = [
        ("check the bundled candles", _step_check),
        ("baselines on the held-out period (costs on)", _step_baselines),
    ]
    state: dict[str, Any] = {"cfg": cfg, "data_dir": data_dir, "out": out, "console": console}
    started = time.monotonic()
    for i, (title, fn) in enumerate(steps, 1):
        console.rule(f"[bold]step {i}/{len(steps)}: {title}")
        t0 = time.monotonic()
        fn(state)
        console.print(f"[dim]({time.monotonic() - t0:.1f}s)")
    console.rule(f"[bold green]demo finished in {time.monotonic() - started:.0f}s")
    return 0


def _step_check(state: dict[str, Any]) -> None:
    from l2_tactical.data.candles import check_candles, load_candles

    console = state["console"]
    candles = {}
    for symbol in DEMO_SYMBOLS:
        path = state["data_dir"] / f"{symbol}-1h.csv.gz"
        report = check_candles(path)
        console.print(f"{path.name}: {report.rows:,} bars {report.first:%Y-%m-%d} → {report.last:%Y-%m-%d}, "
                      f"{len(report.gaps)} gaps ({report.missing_bars} missing bars, reported, not filled), "
                      f"{len(report.zero_volume)} zero-volume bars")
        candles[symbol] = load_candles(path)
    state["candles"] = candles


def holdout_start(cfg: L2Config, timeframe_hours: float = 1.0) -> Any:
    """First bar of the out-of-sample window: validation end plus the purge gap."""
    import pandas as pd

    return pd.Timestamp(cfg.walk_forward.validation_end, tz="UTC") + pd.Timedelta(
        hours=cfg.walk_forward.purge_bars * timeframe_hours)


def _step_baselines(state: dict[str, Any]) -> None:
    from rich.table import Table

    from l2_tactical.backtest.baselines import buy_and_hold, sma_cross
    from l2_tactical.backtest.metrics import compute_metrics
    from l2_tactical.execution import Costs

    cfg: L2Config = state["cfg"]
    costs = Costs.from_config(cfg.execution)
    start = holdout_start(cfg)
    table = Table(title=f"Baselines, held-out period from {start:%Y-%m-%d}, fees {cfg.execution.fee_bps:g} bps + "
                        f"spread/slippage")
    for col in ("symbol", "strategy", "return", "Sharpe", "max DD", "trades", "fees paid"):
        table.add_column(col, justify="right" if col not in ("symbol", "strategy") else "left")
    for symbol, candles in state["candles"].items():
        f = candles.slice(start=start).frame
        ohlc = (f["open"].to_numpy(), f["high"].to_numpy(), f["low"].to_numpy(), f["close"].to_numpy())
        limits = cfg.symbols.get(symbol)
        lot_step = limits.lot_step if limits else 0.0
        min_notional = limits.min_notional if limits else 0.0
        cash = cfg.execution.initial_cash
        results = (
            buy_and_hold(*ohlc, costs, initial_cash=cash, lot_step=lot_step, min_notional=min_notional),
            sma_cross(*ohlc, costs, initial_cash=cash, lot_step=lot_step, min_notional=min_notional),
        )
        for result in results:
            m = compute_metrics(result.equity, timeframe=candles.timeframe, fills=result.fills,
                                exposure=result.exposure, mark_price=float(ohlc[3][-1]))
            table.add_row(symbol, result.name, f"{m.total_return:+.1%}", f"{m.sharpe:.2f}", f"{m.max_drawdown:.1%}",
                          str(m.n_trades), f"{m.fees_paid:,.2f}")
    state["console"].print(table)
