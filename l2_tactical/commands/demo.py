"""``l2 demo``: the whole product on the bundled real candles, in a few minutes on 2 cores.

1. check the bundled candles (gaps and zero-volume bars reported, never filled);
2. load the shipped specialists through the safe loader (sha256 against the manifest,
   FeatureSet hash against the current pipeline) and show their model cards;
3. baselines (buy-and-hold, SMA cross) on the held-out period through the one simulator;
4. the full pipeline (features, specialists, ensemble, technical and pattern sources,
   sizer, risk controls, L1 paper executor) backtested bar by bar on the held-out period,
   against the baselines, with the HTML report;
5. ``l2 evaluate``: each specialist alone, the ensemble and the baselines with the deflated
   Sharpe ratio and PBO, when the evaluate plugin is installed;
6. a short paper-trading replay of 1m candles through the message bus to L1, with the dashboard.

Every step runs the same code as the matching ``l2`` command; nothing here is demo-only logic.
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
SPECIALISTS = ("trend", "mean_reversion", "volatility")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="show the whole pipeline working on the bundled real data",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(PACKAGE_ROOT / "data"), help="folder with <SYMBOL>-1h.csv.gz files")
    p.add_argument("--models", default=str(PACKAGE_ROOT / "saved_models"), help="shipped specialists")
    p.add_argument("--out", default="runs/demo", help="folder for the report and logs (default: runs/demo)")
    p.add_argument("--paper-bars", type=int, default=1500, help="1m bars replayed through the bus (default 1500)")
    p.add_argument("--skip-evaluate", action="store_true", help="skip the l2 evaluate step")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"cfg": load_config(args), "args": args, "data_dir": Path(args.data_dir), "out": out,
                             "console": console, "models": Path(args.models)}
    steps: list[tuple[str, Callable[[dict[str, Any]], int]]] = [
        ("check the bundled candles", _step_check),
        ("load the shipped specialists through the safe loader", _step_models),
        ("baselines on the held-out period (costs on)", _step_baselines),
        ("the full pipeline, bar by bar, on the held-out period + HTML report", _step_backtest),
    ]
    if not args.skip_evaluate:
        steps.append(("l2 evaluate: ensemble vs each specialist alone vs baselines, DSR and PBO", _step_evaluate))
    steps.append(("paper trading: 1m replay through the bus to L1, with the dashboard", _step_paper))
    started = time.monotonic()
    for i, (title, fn) in enumerate(steps, 1):
        console.rule(f"[bold]step {i}/{len(steps)}: {title}")
        t0 = time.monotonic()
        rc = fn(state)
        console.print(f"[dim]({time.monotonic() - t0:.1f}s)")
        if rc:
            console.print(f"[red]step {i} failed with exit code {rc}")
            return rc
    console.rule(f"[bold green]demo finished in {time.monotonic() - started:.0f}s")
    console.print(f"HTML report: [bold]{(out / 'report.html').resolve()}[/bold]  (open it in a browser)")
    console.print(f"every number: {out / 'backtest.json'}, {out / 'evaluate.json'}, {out / 'paper.json'}")
    return 0


def _cli(argv: Sequence[str]) -> int:
    """Run an ``l2`` subcommand in this process, exactly as a user would type it."""
    from l2_tactical.cli import build_parser

    args = build_parser().parse_args(list(argv))
    return int(args.func(args) or 0)


def _config_args(state: dict[str, Any]) -> list[str]:
    cfg_path = getattr(state["args"], "config", None)
    return ["--config", cfg_path] if cfg_path else []


def _step_check(state: dict[str, Any]) -> int:
    from l2_tactical.data.candles import check_candles

    for symbol in DEMO_SYMBOLS:
        path = state["data_dir"] / f"{symbol}-1h.csv.gz"
        report = check_candles(path)
        state["console"].print(
            f"{path.name}: {report.rows:,} bars {report.first:%Y-%m-%d} → {report.last:%Y-%m-%d}, "
            f"{len(report.gaps)} gaps ({report.missing_bars} missing bars, reported, not filled), "
            f"{len(report.zero_volume)} zero-volume bars")
    return 0


def _step_models(state: dict[str, Any]) -> int:
    from rich.table import Table

    from l2_tactical.data.features import feature_set
    from l2_tactical.finrl_models.model_loader import load_model

    table = Table(title="shipped specialists: validation and test windows, after costs, vs buy-and-hold")
    for col in ("specialist", "algo", "sha256", "window", "period", "return", "Sharpe", "max DD", "B&H return",
                "B&H Sharpe"):
        table.add_column(col)
    models = state["models"]
    for name in SPECIALISTS:
        preset = feature_set(name, "1h")
        loaded = load_model(models / f"{name}.zip", manifest=models / "manifest.json",
                            expected_feature_hash=preset.schema_hash)
        card = dict(loaded.card)
        for window in ("validation", "test"):
            m = card[f"{window}_metrics"]
            period = card[window]
            table.add_row(name, loaded.algorithm, loaded.sha256[:12] + "…", window,
                          f"{period['start'][:10]} → {period['end'][:10]}",
                          f"{m['agent']['total_return']:+.1%}", f"{m['agent']['sharpe']:.2f}",
                          f"{m['agent']['max_drawdown']:.1%}", f"{m['buy_and_hold']['total_return']:+.1%}",
                          f"{m['buy_and_hold']['sharpe']:.2f}")
    state["console"].print(table)
    state["console"].print("[dim]each zip's sha256 was checked against saved_models/manifest.json before any byte "
                           "was unpickled; each FeatureSet hash matches the current feature pipeline")
    return 0


def holdout_start(cfg: L2Config, timeframe_hours: float = 1.0) -> Any:
    """First bar of the out-of-sample window: validation end plus the purge gap."""
    import pandas as pd

    return pd.Timestamp(cfg.walk_forward.validation_end, tz="UTC") + pd.Timedelta(
        hours=cfg.walk_forward.purge_bars * timeframe_hours)


def _step_baselines(state: dict[str, Any]) -> int:
    from rich.table import Table

    from l2_tactical.backtest.baselines import buy_and_hold, sma_cross
    from l2_tactical.backtest.metrics import compute_metrics
    from l2_tactical.data.candles import load_candles
    from l2_tactical.execution import Costs

    cfg: L2Config = state["cfg"]
    costs = Costs.from_config(cfg.execution)
    start = holdout_start(cfg)
    table = Table(title=f"baselines from {start:%Y-%m-%d}, fee {cfg.execution.fee_bps:g} bps + spread/slippage")
    for col in ("symbol", "strategy", "return", "Sharpe", "max DD", "trades", "fees paid"):
        table.add_column(col, justify="right" if col not in ("symbol", "strategy") else "left")
    for symbol in DEMO_SYMBOLS:
        candles = load_candles(state["data_dir"] / f"{symbol}-1h.csv.gz")
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
    return 0


def _data_arg(state: dict[str, Any], timeframe: str = "1h") -> str:
    return ",".join(str(state["data_dir"] / f"{s}-{timeframe}.csv.gz") for s in DEMO_SYMBOLS)


def _step_backtest(state: dict[str, Any]) -> int:
    out = state["out"]
    return _cli([*_config_args(state), "backtest", "--data", _data_arg(state), "--models", str(state["models"]),
                 "--report", str(out / "report.html"), "--json", str(out / "backtest.json")])


def _step_evaluate(state: dict[str, Any]) -> int:
    from importlib.metadata import entry_points

    if not any(e.name == "evaluate" for e in entry_points(group="l2_tactical.commands")):
        state["console"].print("l2 evaluate is not installed here (pip install -e .): step skipped")
        return 0
    return _cli([*_config_args(state), "evaluate", "--data", _data_arg(state), "--models", str(state["models"]),
                 "--json", str(state["out"] / "evaluate.json")])


def _step_paper(state: dict[str, Any]) -> int:
    """The replay starts on a fresh paper account each time: the demo's own journal and L2 risk state from an
    earlier ``make demo`` are removed first (a resumed account would replay the same bars on it)."""
    out = state["out"]
    for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm", "journal-l2state.sqlite",
                 "journal-l2state.sqlite-wal", "journal-l2state.sqlite-shm", "journal-l2state.sqlite.lock"):
        (out / name).unlink(missing_ok=True)
    feed = str(state["data_dir"] / "BTCUSDT-1m.csv.gz")
    return _cli([*_config_args(state), "paper", "--feed", f"replay:{feed}", "--bus", "memory", "--speed", "6000",
                 "--max-bars", str(state["args"].paper_bars), "--journal", f"sqlite:///{out / 'journal.sqlite'}",
                 "--summary-json", str(out / "paper.json")])
