"""``l2 backtest``: the live pipeline, bar by bar, on candle files — next to buy-and-hold and an SMA cross.

    l2 backtest --data data/BTCUSDT-1h.csv.gz[,data/ETHUSDT-1h.csv.gz] [--from DATE] [--to DATE]
                [--models saved_models/] [--report out.html] [--json out.json]

The bars go through the same TacticalLoop (features, specialists, ensemble, technical and
pattern sources, composite, sizer, risk controls) and the same L1 paper executor as
``l2 paper``; a decision at a bar's close fills at the next bar's open with fees, spread and
slippage (config ``execution``; costs are always on). Default ``--from``: the first bar of the
held-out test window (``walk_forward.validation_end`` + ``purge_bars`` bars), which the shipped
models never saw in training or model selection; the bars before it only warm up the features.
A result that loses to buy-and-hold is printed as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2_tactical.commands.common import load_config, split_files
from l2_tactical.config import PACKAGE_ROOT, L2Config

TABLE_ROWS = (
    ("total return", "total_return", "{:+.2%}"), ("annual return", "annual_return", "{:+.2%}"),
    ("Sharpe", "sharpe", "{:.2f}"), ("Sortino", "sortino", "{:.2f}"), ("Calmar", "calmar", "{:.2f}"),
    ("max drawdown", "max_drawdown", "{:.2%}"), ("trades", "n_trades", "{:d}"), ("win rate", "win_rate", "{:.1%}"),
    ("profit factor", "profit_factor", "{:.2f}"), ("avg win", "avg_win", "{:,.2f}"),
    ("avg loss", "avg_loss", "{:,.2f}"),
    ("turnover", "turnover", "{:.2f}"), ("time in market", "time_in_market", "{:.1%}"),
    ("fees paid", "fees_paid", "{:,.2f}"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backtest", help="backtest the live pipeline on candle files (vs buy-and-hold, SMA cross)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=split_files, required=True, metavar="FILE[,FILE]",
                   help="candle files (one symbol each, one timeframe), e.g. data/BTCUSDT-1h.csv.gz")
    p.add_argument("--from", dest="start", help="first evaluated bar (ISO date/time, UTC; default: the test "
                   "window start, walk_forward.validation_end + purge)")
    p.add_argument("--to", dest="end", help="end of the evaluated period, exclusive (default: the last bar)")
    p.add_argument("--models", help="folder with the specialists (<name>.zip + manifest.json; default: the "
                   "config's ensemble.models paths, saved_models/)")
    p.add_argument("--report", help="write the HTML report here (self-contained, plotly inline)")
    p.add_argument("--json", dest="json_out", help="write every number to this JSON file")
    p.add_argument("--warmup", type=int, help="bars before --from that warm up the features (default: enough "
                   "for the longest feature and specialist window)")
    p.add_argument("--sma", default="24,168", help="SMA cross baseline fast,slow in bars (default 24,168)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def resolve_path(path: str) -> Path:
    """A path as given, or relative to the project root when it does not exist from here."""
    p = Path(path)
    return PACKAGE_ROOT / p if not p.exists() and not p.is_absolute() and (PACKAGE_ROOT / p).exists() else p


def load_files(files: Sequence[str]) -> list[Any]:
    from l2_tactical.data.candles import load_candles

    return [load_candles(resolve_path(f)) for f in files]


def test_window_start(config: L2Config, timeframe: str) -> Any:
    """First bar of the out-of-sample window: ``validation_end`` + ``purge_bars`` bars of ``timeframe``."""
    import pandas as pd

    from l2_tactical.data.resample import TIMEFRAME_SECONDS

    seconds = TIMEFRAME_SECONDS[timeframe] * config.walk_forward.purge_bars
    return pd.Timestamp(config.walk_forward.validation_end, tz="UTC") + pd.Timedelta(seconds=seconds)


test_window_start.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def parse_sma(value: str) -> tuple[int, int]:
    from l2_tactical.errors import ConfigError

    try:
        fast, slow = (int(x) for x in value.split(","))
    except ValueError:
        raise ConfigError(f"--sma {value!r}: expected FAST,SLOW in bars, e.g. 24,168") from None
    if not 1 <= fast < slow:
        raise ConfigError(f"--sma {value!r}: need 1 <= FAST < SLOW")
    return fast, slow


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from l2_tactical.backtest.benchmarks import benchmark_runs, verdict
    from l2_tactical.backtest.engine import Backtester, config_for_symbols, config_with_models

    console = Console()
    fast, slow = parse_sma(args.sma)
    cfg = config_with_models(load_config(args), args.models)
    candles = load_files(args.data)
    tf = candles[0].timeframe
    result = Backtester(cfg, progress=not args.no_progress).run(
        candles, start=args.start or test_window_start(cfg, tf), end=args.end, warmup_bars=args.warmup)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    bench_cfg, _ = config_for_symbols(cfg, {c.symbol: float(c.frame["close"].median()) for c in candles})
    benches = benchmark_runs(candles, result.timestamps.astype(np.int64), bench_cfg, fast=fast, slow=slow)
    print_summary(console, result, benches)
    lines = verdict(result.metrics, benches)
    for line in lines:
        console.print(("[red]" if "LOST" in line else "[green]") + line)
    if args.report:
        path = write_backtest_report(args.report, result, benches, cfg)
        console.print(f"report: {path.resolve()}")
    if args.json_out:
        write_json(args.json_out, result, benches, lines, args)
        console.print(f"json: {Path(args.json_out).resolve()}")
    return 0


def print_summary(console: Any, result: Any, benches: Mapping[str, Any]) -> None:
    from rich.table import Table

    start, end = (str(x)[:16] for x in (result.timestamps[0], result.timestamps[-1]))
    table = Table(title=f"{', '.join(result.symbols)} {result.timeframe}, {start} → {end} (costs on)")
    table.add_column("metric")
    for name in ("l2_ensemble", *benches):
        table.add_column(name, justify="right")
    columns = [result.metrics, *(b.metrics for b in benches.values())]
    for label, key, fmt in TABLE_ROWS:
        table.add_row(label, *(_cell(fmt, getattr(m, key)) for m in columns))
    console.print(table)
    m = result.metrics
    console.print("hit rate per source: " + ", ".join(f"{k} {_cell('{:.1%}', v)}"
                                                      for k, v in m.hit_rate_per_source.items()))
    console.print("attribution per specialist (gross, weight x call x next-bar return): "
                  + (", ".join(f"{k} {v:+.4f}" for k, v in m.attribution.items()) or "none"))
    s = result.summary()
    console.print(f"orders {s['orders']}, fills {s['fills']}, L1 rejections {s['rejections'] or 'none'}, "
                  f"L2 no-order reasons {s['l2_reasons'] or 'none'}")
    for name, why in result.unavailable.items():
        console.print(f"[yellow]specialist {name} unavailable:[/] {why}")
    console.print(f"{result.bars_processed:,} bars in {result.seconds:.1f} s ({result.bars_per_second:,.0f} bars/s)")


def _cell(fmt: str, value: Any) -> str:
    if isinstance(value, float) and not np.isfinite(value):
        return "n/a" if np.isnan(value) else "inf"
    return fmt.format(value)


def write_backtest_report(path: str, result: Any, benches: Mapping[str, Any], config: L2Config) -> Path:
    """The HTML report of a run: the first symbol's price and fills, the portfolio's equity and exposure."""
    from l2_tactical.backtest.report import write_report

    trace = result.traces[result.symbols[0]]
    rows = np.flatnonzero(np.isfinite(trace.close))
    index = np.full(result.timestamps.size, -1)
    index[rows] = np.arange(rows.size)
    fills = [dataclasses.replace(f, bar=int(index[f.bar])) for f in trace.fills if index[f.bar] >= 0]
    bh = benches.get("buy_and_hold")
    metrics = {"l2_ensemble": result.metrics.to_dict(json_safe=True),
               **{n: b.metrics.to_dict(json_safe=True) for n, b in benches.items()}}
    ex = config.execution
    subtitle = (f"{', '.join(result.symbols)} {result.timeframe}, {str(result.timestamps[0])[:16]} → "
                f"{str(result.timestamps[-1])[:16]} UTC; fees {ex.fee_bps:g} bps/side, half-spread "
                f"{ex.half_spread_bps:g} bps, slippage {ex.slippage_bps:g} bps + {ex.volatility_slippage:g} x range; "
                f"decisions at the close fill at the next open (L1 paper executor)")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_report(out, title=f"l2 backtest: {', '.join(result.symbols)}", timestamps=result.timestamps[rows],
                        open_=trace.open[rows], high=trace.high[rows], low=trace.low[rows], close=trace.close[rows],
                        equity=result.equity[rows], metrics=metrics,
                        benchmark_equity=None if bh is None else bh.equity[rows], fills=fills,
                        stops=trace.stops[rows], exposure=result.exposure[rows],
                        hit_rate_per_source=dict(result.metrics.hit_rate_per_source), subtitle=subtitle)


def write_json(path: str, result: Any, benches: Mapping[str, Any], lines: Sequence[str],
               args: argparse.Namespace) -> None:
    payload = {"command": "backtest", "data": list(args.data), "models": args.models,
               "strategy": result.summary(), "executor": _plain(result.executor_summary),
               "benchmarks": {n: b.metrics.to_dict(json_safe=True) for n, b in benches.items()},
               "verdict": list(lines), "report": args.report}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str, allow_nan=False), encoding="utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
