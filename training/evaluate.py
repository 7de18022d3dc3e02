"""Walk-forward evaluation: the ensemble against buy-and-hold, an SMA cross and each specialist alone.

The period ``[start, end)`` is cut into ``folds`` consecutive windows of equal duration. On each
window every candidate is backtested on the live code path
(:class:`l2_tactical.backtest.engine.Backtester`: TacticalLoop -> L1 paper executor, decisions at a
close filled at the next open, fees + spread + slippage always on):

* ``l2_ensemble`` — the configured specialists voting, plus technical and pattern sources (the
  composite that ``l2 paper`` trades);
* ``<name>_alone`` — one specialist: a one-model ensemble whose AI_MODEL signals are traded
  through the same sizer, risk controls and L1;
* ``buy_and_hold`` and ``sma_cross_<fast>_<slow>`` — through the same execution simulator.

Two ways to get the specialists:

* **shipped models** (``models_dir``): evaluated as they are, never retrained;
* **retrained per fold** (``seeds`` >= 1): for each fold and seed, the three specialists are trained
  with the shared training code (:func:`training.shared.train_specialist`) on the data *before* the
  fold only — train, then validation (model selection), a purge gap, then the fold — so a fold is
  never seen by training or selection. Results are given per seed and as mean ± std across seeds.

Every candidate's per-bar returns are stitched across the folds (the walk-forward out-of-sample
path). The deflated Sharpe ratio deflates each L2 run's Sharpe for the number of L2 runs tried
(configurations x seeds) and the variance of their Sharpe ratios; PBO comes from combinatorially
symmetric cross-validation (:func:`l2_tactical.backtest.stats.pbo_cscv`, with an embargo) over the
per-bar returns of all candidates, baselines included.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2_tactical.backtest.benchmarks import benchmark_runs
from l2_tactical.backtest.engine import Backtester, FrozenClock, config_for_symbols, config_with_models
from l2_tactical.backtest.metrics import compute_metrics
from l2_tactical.backtest.stats import deflated_sharpe_ratio, pbo_cscv, sharpe_moments
from l2_tactical.config import L2Config
from l2_tactical.data.resample import TIMEFRAME_SECONDS
from l2_tactical.errors import ConfigError, DataError
from l2_tactical.messages import SignalSource

ENSEMBLE = "l2_ensemble"
Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Fold:
    index: int
    start: Any  # pandas Timestamp (UTC), inclusive
    end: Any  # exclusive


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CandidateRun:
    """One candidate on one fold: its per-bar returns on the fold's timeline and its metrics."""

    name: str
    family: str  # the candidate without its seed (l2_ensemble, trend_alone, buy_and_hold, ...)
    seed: int | None  # None: shipped models or a baseline
    fold: int
    baseline: bool
    returns: np.ndarray
    metrics: dict[str, Any]


def make_folds(candles: Sequence[Any], start: Any, end: Any, folds: int) -> list[Fold]:
    """``folds`` consecutive windows of equal duration over ``[start, end)`` (clipped to the data)."""
    import pandas as pd

    if folds < 1:
        raise ConfigError(f"--folds={folds}: must be >= 1")
    first = max(c.frame.index[0] for c in candles)
    last = min(c.frame.index[-1] for c in candles) + pd.Timedelta(seconds=TIMEFRAME_SECONDS[candles[0].timeframe])
    lo = max(_utc(start), first) if start is not None else first
    hi = min(_utc(end), last) if end is not None else last
    if hi <= lo:
        raise DataError(f"no bars of every file between {lo} and {hi} (files cover {first} to {last})")
    edges = [lo + (hi - lo) * i / folds for i in range(folds + 1)]
    step = pd.Timedelta(seconds=TIMEFRAME_SECONDS[candles[0].timeframe])
    edges = [e.ceil(step) if 0 < i < folds else e for i, e in enumerate(edges)]
    return [Fold(index=i, start=edges[i], end=edges[i + 1]) for i in range(folds)]


def _utc(value: Any) -> Any:
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _metrics_dict(m: Any) -> dict[str, Any]:
    return m.to_dict(json_safe=True)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------ one fold


def load_ensemble(config: L2Config) -> Any:
    """The configured specialists, loaded once through the safe loader, on a clock frozen in time."""
    from l2_tactical.finrl_models.ensemble_manager import EnsembleManager

    return EnsembleManager.from_config(config, clock=FrozenClock())


def alone(config: L2Config, ensemble: Any, name: str) -> tuple[L2Config, Any]:
    """A config and a one-model ensemble with only the specialist ``name`` (already loaded)."""
    from l2_tactical.finrl_models.ensemble_manager import EnsembleManager

    entry = dataclasses.asdict(config.ensemble.models[name])
    one = config.with_overrides({"ensemble.models": {name: entry}})
    return one, EnsembleManager(
        one.ensemble, {name: ensemble.specialists[name]}, clock=FrozenClock(), timeout_ms=config.ai_model.timeout_ms
    )


def evaluate_fold(
    candles: Sequence[Any],
    fold: Fold,
    config: L2Config,
    ensemble: Any,
    *,
    seed: int | None,
    sma: tuple[int, int],
    with_baselines: bool,
    progress: Progress | None = None,
) -> tuple[list[CandidateRun], dict[str, str]]:
    """Every L2 candidate (and, once per fold, the baselines) on one fold."""
    suffix = "" if seed is None else f"_seed{seed}"
    jobs: list[tuple[str, L2Config, Any, tuple[SignalSource, ...]]] = [
        (ENSEMBLE, config, ensemble, (SignalSource.COMPOSITE,))
    ]
    usable, excluded = usable_specialists(ensemble, candles[0].timeframe)
    for spec in usable:
        cfg1, ens1 = alone(config, ensemble, spec.name)
        jobs.append((f"{spec.name}_alone", cfg1, ens1, (SignalSource.AI_MODEL,)))
    runs, timeline = [], None
    for family, cfg, ens, sources in jobs:
        bt = Backtester(cfg, ensemble=ens, trade_sources=sources, on_progress=progress)
        result = bt.run(candles, start=fold.start, end=fold.end)
        timeline = result.timestamps.astype(np.int64)
        runs.append(
            CandidateRun(
                name=family + suffix,
                family=family,
                seed=seed,
                fold=fold.index,
                baseline=False,
                returns=result.equity[1:] / result.equity[:-1] - 1.0,
                metrics={
                    **_metrics_dict(result.metrics),
                    "orders": len(result.orders),
                    "bars_per_second": result.bars_per_second,
                },
            )
        )
    if with_baselines and timeline is not None:
        bench_cfg, _ = config_for_symbols(config, {c.symbol: float(c.frame["close"].median()) for c in candles})
        for name, b in benchmark_runs(candles, timeline, bench_cfg, fast=sma[0], slow=sma[1]).items():
            runs.append(
                CandidateRun(
                    name=name,
                    family=name,
                    seed=None,
                    fold=fold.index,
                    baseline=True,
                    returns=b.returns,
                    metrics=_metrics_dict(b.metrics),
                )
            )
    loaded_missing = {k: v for k, v in ensemble.unavailable.items() if "@" not in k}  # name@tf: the generator's
    return runs, {**loaded_missing, **excluded}


def usable_specialists(ensemble: Any, timeframe: str) -> tuple[list[Any], dict[str, str]]:
    """The loaded specialists whose features exist on ``timeframe`` bars (as the signal generator decides),
    and why the others cannot vote there (e.g. trained on 1h features, given 5m bars)."""
    from l2_tactical.data.features import feature_set
    from l2_tactical.finrl_models.feature_processor import plan_features

    plan = plan_features(feature_set("full", timeframe), ensemble.available)
    return [s for s in ensemble.available if s.name in plan.columns], dict(plan.excluded)


# --------------------------------------------------------------- retraining per fold


def fold_walk_forward(config: L2Config, candles: Sequence[Any], fold: Fold) -> L2Config:
    """The config whose walk-forward split ends exactly at ``fold.start``: train, validation (at most the
    configured length, at most a third of the history), purge, then the fold as the test window."""
    import pandas as pd

    wf = config.walk_forward
    bar = pd.Timedelta(seconds=TIMEFRAME_SECONDS[candles[0].timeframe])
    validation_end = fold.start - bar * wf.purge_bars
    history = validation_end - max(c.frame.index[0] for c in candles)
    span = min(_utc(wf.validation_end) - _utc(wf.train_end), history / 3)
    if span < bar * 10:
        raise DataError(
            f"fold {fold.index} starts at {fold.start}: too little history before it to train and "
            f"validate (need more than {wf.purge_bars} purge bars plus a validation window); pass a later "
            "--from, or --models to evaluate trained models without retraining"
        )
    train_end = validation_end - span
    return config.with_overrides(
        {"walk_forward.train_end": train_end.isoformat(), "walk_forward.validation_end": validation_end.isoformat()}
    )


def train_fold(files: Sequence[str], config: L2Config, seed: int, timesteps: int, out: Path) -> L2Config:
    """Train the configured specialists on the data before the fold (``config``'s split); returns the config
    pointing at the models it wrote."""
    from training.shared import TrainSettings, train_specialist

    for name in config.ensemble.models:
        settings = TrainSettings(
            specialist=name,
            data=tuple(files),
            timesteps=timesteps,
            seed=seed,
            out=str(out),
            tensorboard_log=None,
            progress_bar=False,
            verbose=0,
            min_evals=1,
            work_dir=str(out / "work"),
        )
        train_specialist(settings, config)
    return config_with_models(config, out)


# ---------------------------------------------------------------------- the whole


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    folds: tuple[Fold, ...]
    runs: tuple[CandidateRun, ...]
    unavailable: Mapping[str, str]
    timeframe: str
    mode: str  # "shipped" | "retrained"


def evaluate(
    candles: Sequence[Any],
    files: Sequence[str],
    config: L2Config,
    *,
    start: Any,
    end: Any,
    folds: int,
    models_dir: str | None,
    seeds: int,
    timesteps: int,
    sma: tuple[int, int] = (24, 168),
    progress: Progress | None = None,
    on_stage: Callable[[str], None] | None = None,
    work_dir: str | None = None,
) -> Evaluation:
    """Run the evaluation of the module docstring."""
    plan = make_folds(candles, start, end, folds)
    runs: list[CandidateRun] = []
    unavailable: dict[str, str] = {}
    stage = on_stage or (lambda _: None)
    if models_dir is not None or seeds < 1:
        ensemble = load_ensemble(config_with_models(config, models_dir))
        cfg = config_with_models(config, models_dir)
        for fold in plan:
            stage(f"fold {fold.index + 1}/{len(plan)}: shipped models")
            got, why = evaluate_fold(
                candles, fold, cfg, ensemble, seed=None, sma=sma, with_baselines=True, progress=progress
            )
            runs += got
            unavailable.update(why)
        return Evaluation(
            folds=tuple(plan), runs=tuple(runs), unavailable=unavailable, timeframe=candles[0].timeframe, mode="shipped"
        )
    root = Path(work_dir or tempfile.mkdtemp(prefix="l2-evaluate-"))
    for fold in plan:
        fold_cfg = fold_walk_forward(config, candles, fold)
        for seed in range(seeds):
            stage(
                f"fold {fold.index + 1}/{len(plan)}, seed {seed}: training {len(config.ensemble.models)} "
                f"specialists ({timesteps:,} steps each) on data before {fold.start:%Y-%m-%d %H:%M}"
            )
            cfg = train_fold(files, fold_cfg, seed, timesteps, root / f"fold{fold.index}" / f"seed{seed}")
            stage(f"fold {fold.index + 1}/{len(plan)}, seed {seed}: backtesting")
            got, why = evaluate_fold(
                candles, fold, cfg, load_ensemble(cfg), seed=seed, sma=sma, with_baselines=seed == 0, progress=progress
            )
            runs += got
            unavailable.update({f"{k} (fold {fold.index}, seed {seed})": v for k, v in why.items()})
    return Evaluation(
        folds=tuple(plan), runs=tuple(runs), unavailable=unavailable, timeframe=candles[0].timeframe, mode="retrained"
    )


# ------------------------------------------------------------------- statistics


def stitched(runs: Sequence[CandidateRun]) -> dict[str, np.ndarray]:
    """Per candidate name, its per-bar returns over all folds in order."""
    out: dict[str, list[np.ndarray]] = {}
    for r in sorted(runs, key=lambda r: r.fold):
        out.setdefault(r.name, []).append(r.returns)
    return {k: np.concatenate(v) for k, v in out.items()}


def path_metrics(returns: np.ndarray, timeframe: str, initial: float) -> dict[str, Any]:
    """Metrics of the stitched walk-forward equity path."""
    equity = initial * np.concatenate(([1.0], np.cumprod(1.0 + returns)))
    m = compute_metrics(equity, timeframe=timeframe).to_dict(json_safe=True)
    return {
        k: m[k]
        for k in ("total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "calmar", "max_drawdown")
    }


def deflated_sharpes(paths: Mapping[str, np.ndarray], trials: Sequence[str]) -> dict[str, dict[str, float]]:
    """DSR of every L2 run, deflated for ``len(trials)`` trials and the variance of their per-bar Sharpes."""
    moments = {k: sharpe_moments(paths[k]) for k in trials if paths[k].size >= 3}
    srs = np.array([m[0] for m in moments.values()])
    variance = float(np.var(srs, ddof=1)) if srs.size > 1 else 0.0
    out = {}
    for name, (sr, skew, kurt, n) in moments.items():
        if not np.any(paths[name] != 0):  # never in the market: no information, not a coin flip
            out[name] = {"sharpe_per_bar": 0.0, "dsr": math.nan, "n_trials": len(moments), "sr_variance": variance}
            continue
        try:
            dsr = deflated_sharpe_ratio(sr, len(moments), variance, n, skew, kurt)
        except ValueError:
            dsr = math.nan
        out[name] = {"sharpe_per_bar": sr, "dsr": dsr, "n_trials": len(moments), "sr_variance": variance}
    return out


def pbo(paths: Mapping[str, np.ndarray], embargo: int) -> dict[str, Any]:
    """PBO over all candidates' per-bar returns: CSCV with 16 blocks (fewer on short paths, blocks of at least
    20 bars), the embargo capped at a quarter of a block."""
    names = sorted(paths)
    n = min(p.size for p in paths.values())
    splits = min(16, n // 20 // 2 * 2)
    if len(names) < 2 or splits < 2:
        return {"pbo": None, "reason": f"need >= 2 candidates and >= 40 bars (have {len(names)}, {n} bars)"}
    matrix = np.stack([paths[k][:n] for k in names], axis=1)
    used = min(int(embargo), n // splits // 4)
    result = pbo_cscv(matrix, n_splits=splits, embargo=used)
    summary = {k: v for k, v in result.to_dict().items() if k != "logits"}  # 12,870 of them: summarised
    return {**summary, "candidates": names, "embargo": used,
            "logit_quantiles": np.quantile(result.logits, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist()}
