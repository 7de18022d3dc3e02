"""``l2 evaluate``: walk-forward evaluation of the ensemble against buy-and-hold, an SMA cross and each
specialist alone, after fees and slippage, with the deflated Sharpe ratio and PBO.

    l2 evaluate --data FILE[,FILE...] [--from DATE] [--to DATE] [--folds K] [--json out.json]
                [--models saved_models/ | --seeds 5 --timesteps N]

``--models DIR`` evaluates the shipped specialists as they are (no retraining); the default
``--from`` is then the first bar of their test window (``walk_forward.validation_end`` + purge),
never seen in training or model selection, and a period that overlaps a model's training or
validation window on one of its symbols is flagged as NOT out-of-sample. Without ``--models`` the
specialists are retrained for every fold on the data before it, over ``--seeds`` seeds, and
results are reported as mean ± std across seeds. Works on any candle file in the documented
format (data/README.md), including symbols, timeframes and periods no model has seen.
Registered as an ``l2`` subcommand through the ``l2_tactical.commands`` entry points.
"""

from __future__ import annotations

import argparse
import json
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _register(sub: argparse._SubParsersAction) -> None:
    from l2_tactical.commands.common import split_files

    p = sub.add_parser(
        "evaluate",
        help="walk-forward evaluation vs buy-and-hold, SMA cross and each specialist alone (deflated Sharpe, PBO)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=split_files, required=True, metavar="FILE[,FILE...]", help="candle files")
    p.add_argument("--from", dest="start", help="start of the evaluated period (default: the test window start)")
    p.add_argument("--to", dest="end", help="end of the evaluated period, exclusive (default: the last bar)")
    p.add_argument("--models", help="evaluate these shipped specialists without retraining (e.g. saved_models/)")
    p.add_argument("--seeds", type=int, default=5, help="retraining: seeds per fold (default 5)")
    p.add_argument(
        "--timesteps",
        type=int,
        default=None,
        help="retraining: steps per specialist (default: the hyperparameter file's n_timesteps)",
    )
    p.add_argument("--folds", type=int, default=3, help="walk-forward folds (default 3)")
    p.add_argument("--sma", default="24,168", help="SMA cross baseline fast,slow in bars (default 24,168)")
    p.add_argument("--json", dest="json_out", help="write every number to this JSON file")
    p.add_argument("--work-dir", help="retraining: keep the per-fold models here (default: a temporary folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


evaluate = types.SimpleNamespace(register=_register)


def sample_overlap(models_dir: str, symbols: Sequence[str], start: Any, end: Any) -> list[str]:
    """Why the period is NOT out-of-sample for a shipped model: it overlaps the model's training or
    validation window on one of the symbols it was trained on (read from its model card)."""
    import pandas as pd

    notes = []
    for card_path in sorted(Path(models_dir).glob("*.json")):
        try:
            card = json.loads(card_path.read_text())
            lo, hi = pd.Timestamp(card["train"]["start"]), pd.Timestamp(card["validation"]["end"])
            trained_on = {Path(f["path"]).name.split("-")[0] for f in card.get("data_files", [])}
        except (KeyError, TypeError, ValueError):
            continue
        shared = sorted(set(symbols) & trained_on)
        if shared and start < hi and end > lo:
            notes.append(
                f"{card_path.stem}: trained/validated on {', '.join(shared)} from {lo:%Y-%m-%d} to "
                f"{hi:%Y-%m-%d}, which overlaps the evaluated period"
            )
    return notes


def run(args: argparse.Namespace) -> int:
    from l2_tactical.commands.backtest import load_files, parse_sma, test_window_start
    from l2_tactical.commands.common import load_config
    from l2_tactical.errors import ConfigError
    from training import evaluate as ev

    if args.models is None and args.seeds < 1:
        raise ConfigError(f"--seeds={args.seeds}: retraining needs at least 1 seed (5 or more recommended)")
    sma = parse_sma(args.sma)
    config = load_config(args)
    candles = load_files(args.data)
    tf = candles[0].timeframe
    # both modes start at the shipped split's test window by default: with --models it is the models' unseen
    # period; when retraining, it leaves the years before it to train the first fold on
    start = args.start or test_window_start(config, tf)
    folds = ev.make_folds(candles, start, args.end, args.folds)
    notes = (
        sample_overlap(args.models, [c.symbol for c in candles], folds[0].start, folds[-1].end)
        if args.models is not None
        else []
    )
    with _progress(args, candles, folds) as bar:
        result = ev.evaluate(
            candles,
            args.data,
            config,
            start=folds[0].start,
            end=folds[-1].end,
            folds=args.folds,
            models_dir=args.models,
            seeds=args.seeds,
            timesteps=args.timesteps or 0,
            sma=sma,
            progress=bar.update,
            on_stage=lambda s: bar.set_description_str(s[:70]),
            work_dir=args.work_dir,
        )
    report = summarise(result, config, notes)
    print_report(report)
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = json_safe({"command": "evaluate", "data": list(args.data), "models": args.models, **report})
        out.write_text(json.dumps(payload, indent=2, default=str, allow_nan=False), encoding="utf-8")
        print(f"json: {out.resolve()}")
    return 0


def json_safe(value: Any) -> Any:
    """Plain JSON values: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _progress(args: argparse.Namespace, candles: Sequence[Any], folds: Sequence[Any]) -> Any:
    from tqdm import tqdm

    bars = sum(int(((c.frame.index >= f.start) & (c.frame.index < f.end)).sum()) for c in candles for f in folds)
    per_fold = 4 * (1 if args.models is not None else max(1, args.seeds))  # ensemble + up to 3 alone
    return tqdm(total=bars * per_fold, unit="bar", disable=args.no_progress, mininterval=1.0, smoothing=0.05)


# ------------------------------------------------------------------------ summary


def summarise(result: Any, config: Any, notes: Sequence[str]) -> dict[str, Any]:
    """Every number of the evaluation: per run and fold, the stitched paths, per family mean ± std, DSR, PBO."""
    from training import evaluate as ev

    paths = ev.stitched(result.runs)
    cash = float(config.execution.initial_cash)
    per_name = {name: ev.path_metrics(r, result.timeframe, cash) for name, r in paths.items()}
    trials = [r.name for r in result.runs if not r.baseline and r.fold == 0]
    dsr = ev.deflated_sharpes(paths, trials)
    families: dict[str, list[str]] = {}
    for r in result.runs:
        if r.fold == 0:
            families.setdefault(r.family, []).append(r.name)
    table = {fam: _family_row(names, per_name, result.runs, dsr) for fam, names in families.items()}
    embargo = int(config.walk_forward.purge_bars)
    ex = config.execution
    return {
        "mode": result.mode,
        "timeframe": result.timeframe,
        "folds": [{"index": f.index, "start": str(f.start), "end": str(f.end)} for f in result.folds],
        "costs": {
            "fee_bps": ex.fee_bps,
            "half_spread_bps": ex.half_spread_bps,
            "slippage_bps": ex.slippage_bps,
            "volatility_slippage": ex.volatility_slippage,
        },
        "out_of_sample": not notes,
        "not_out_of_sample_because": list(notes),
        "families": table,
        "paths": per_name,
        "deflated_sharpe": dsr,
        "pbo": ev.pbo(paths, embargo),
        "runs": [
            {
                "name": r.name,
                "family": r.family,
                "seed": r.seed,
                "fold": r.fold,
                "baseline": r.baseline,
                "metrics": r.metrics,
            }
            for r in result.runs
        ],
        "unavailable": dict(result.unavailable),
        "verdict": verdict(table),
    }


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if not v.size:
        return {"mean": None, "std": None}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def _family_row(
    names: Sequence[str], per_name: Mapping[str, Any], runs: Sequence[Any], dsr: Mapping[str, Any]
) -> dict[str, Any]:
    row: dict[str, Any] = {"runs": len(names)}
    for key in ("total_return", "sharpe", "sortino", "max_drawdown"):
        row[key] = _stats([per_name[n][key] for n in names])
    for key in ("n_trades", "fees_paid", "turnover", "time_in_market"):
        row[key] = _stats([sum(r.metrics.get(key) or 0.0 for r in runs if r.name == n) for n in names])
    row["dsr"] = _stats([dsr[n]["dsr"] for n in names if n in dsr and np.isfinite(dsr[n]["dsr"])])
    return row


def verdict(table: Mapping[str, Any]) -> list[str]:
    """Plain sentences: how each L2 candidate did against buy-and-hold, losses included."""
    bh = table.get("buy_and_hold")
    if bh is None:
        return []
    lines = []
    for fam, row in table.items():
        if fam == "buy_and_hold" or fam.startswith("sma_cross"):
            continue
        for key, label, fmt in (("sharpe", "Sharpe", "{:.2f}"), ("total_return", "total return", "{:+.2%}")):
            ours, theirs = row[key]["mean"], bh[key]["mean"]
            if ours is None or theirs is None:
                continue
            word = "beat" if ours > theirs else "LOST to"
            lines.append(f"{fam}: {label} {fmt.format(ours)} {word} buy-and-hold ({fmt.format(theirs)})")
    return lines


def print_report(report: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 132))  # the table never truncates candidate names
    folds = report["folds"]
    table = Table(
        title=f"Walk-forward evaluation ({report['mode']} models, {len(folds)} folds, "
        f"{folds[0]['start'][:10]} → {folds[-1]['end'][:10]}, {report['timeframe']}, costs on)"
    )
    for col in ("candidate", "runs", "total return", "Sharpe", "Sortino", "max DD", "trades", "fees", "DSR"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for fam, row in report["families"].items():
        table.add_row(
            fam,
            str(row["runs"]),
            _pm(row["total_return"], "{:+.2%}"),
            _pm(row["sharpe"], "{:.2f}"),
            _pm(row["sortino"], "{:.2f}"),
            _pm(row["max_drawdown"], "{:.1%}"),
            _pm(row["n_trades"], "{:.0f}"),
            _pm(row["fees_paid"], "{:,.0f}"),
            _pm(row["dsr"], "{:.2f}"),
        )
    console.print(table)
    p = report["pbo"]
    if p.get("pbo") is not None:
        console.print(
            f"PBO (CSCV, {p['n_splits']} blocks, {p['n_combinations']} splits, {p['n_strategies']} "
            f"candidates): {p['pbo']:.2f}; in-sample winner lost money out of sample in "
            f"{p['prob_oos_loss']:.0%} of splits"
        )
    else:
        console.print(f"PBO not computed: {p.get('reason')}")
    for line in report["verdict"]:
        console.print(("[red]" if "LOST" in line else "[green]") + line)
    for why in report["not_out_of_sample_because"]:
        console.print(f"[bold red]NOT out-of-sample:[/] {why}")
    for name, why in report["unavailable"].items():
        console.print(f"[yellow]{name} unavailable:[/] {why}")


def _pm(stats: Mapping[str, Any], fmt: str) -> str:
    if stats["mean"] is None:
        return "n/a"
    text = fmt.format(stats["mean"])
    return text if not stats["std"] else f"{text} ± {fmt.format(stats['std']).lstrip('+')}"
