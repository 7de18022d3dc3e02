"""The last step of a training run: evaluate the selected model, write the zip, card, config and manifest.

The test windows are built here, after training and model selection are over, and the selected
model is evaluated on them exactly once.
"""

from __future__ import annotations

import dataclasses
import math
import platform
from pathlib import Path
from typing import Any

from envs.specialists import get_specialist
from l2_tactical.config import L2Config
from l2_tactical.finrl_models.model_card import ModelCard, WindowMetrics, file_sha256, update_manifest, write_card
from training import walk_forward as wf
from training.evaluation import evaluate_window, sb3_predict


def write_outputs(settings: Any, cfg: L2Config, prepared: Any, run: dict[str, Any], best_path: Path) -> Any:
    """Evaluate ``best_path`` on validation and (once) on test; write ``<out>/<name>.{zip,json,yaml}``."""
    import stable_baselines3

    from training.shared import TrainResult, card_periods, copy_model, plain_hyperparameters

    spec = get_specialist(settings.specialist)
    name = settings.name or spec.name
    algorithm, env_kwargs = run["algorithm"], run["env_kwargs"]
    model = getattr(stable_baselines3, algorithm).load(best_path, device="cpu")
    kw = {"config": cfg, "specialist": spec.name, "env_kwargs": env_kwargs}
    validation, val_symbols = evaluate_window(prepared.validation, sb3_predict(model), **kw)
    check_replay(best_path, run["callback"], validation.agent.sharpe)
    test_mds = tuple(wf.test_window(c, prepared.feature_set, prepared.split, spec.window) for c in prepared.candles)
    test, test_symbols = evaluate_window(test_mds, sb3_predict(model), **kw)
    out = Path(settings.out)
    model_path = copy_model(best_path, out, name)
    config_path = out / f"{name}.yaml"
    train_p, val_p, test_p = card_periods(prepared, test_mds)
    callback = run["callback"]
    card = ModelCard(
        name=name,
        specialist=spec.name,
        algorithm=algorithm,
        env_id=spec.env_id,
        env_version=spec.env_id.rsplit("-", 1)[-1],
        feature_schema_hash=str(prepared.feature_set.schema_hash),
        feature_names=tuple(prepared.feature_set.names),
        data_files=prepared.data_files,
        train=train_p,
        validation=val_p,
        test=test_p,
        hyperparameters=plain_hyperparameters(run),
        seed=settings.seed,
        validation_metrics=validation,
        test_metrics=test,
        model_file=model_path.name,
        sha256=file_sha256(model_path),
        extra={
            "symbols": [c.symbol for c in prepared.candles],
            "timeframe": prepared.candles[0].timeframe,
            "env_kwargs": env_kwargs,
            "action_mode": env_kwargs.get("action_mode", spec.action_mode),
            "window": spec.window,
            "purge_bars": prepared.split.purge_bars,
            "per_symbol": {"validation": val_symbols, "test": test_symbols},
            "selection": {
                "metric": "validation Sharpe (deterministic policy, costs on)",
                "best_timestep": callback.best_timestep,
                "best_score": callback.best_score,
                "stopped_early": callback.stopped_early,
                "history": callback.history,
            },
            "trained_timesteps": run["trained_timesteps"],
            "train_seconds": round(run["seconds"], 1),
            "resolved_config": config_path.name,
            "versions": _versions(),
            "metrics_definition": "training.evaluation module docstring",
        },
    )
    write_card(out / f"{name}.json", card)
    _write_config(config_path, settings, cfg, prepared, run)
    update_manifest(out / "manifest.json", model_path)
    if settings.verbose:
        print(summary_table(name, validation, test))
    return TrainResult(model_path=model_path, card_path=out / f"{name}.json", config_path=config_path, card=card)


def check_replay(best_path: Path, callback: Any, replayed: float) -> None:
    """The saved best model must reproduce the validation Sharpe it was selected for (same process, same
    machine: exactly). Anything else means the file is not the selected model (e.g. overwritten)."""
    score = getattr(callback, "best_score", None)
    if not callback.history or score is None or not math.isfinite(score):
        return
    if not math.isclose(replayed, score, rel_tol=1e-9, abs_tol=1e-12):
        raise RuntimeError(
            f"{best_path}: replays a validation Sharpe of {replayed!r}, but the model selected at "
            f"step {callback.best_timestep} scored {score!r}; the checkpoint is not the selected model"
        )


def _versions() -> dict[str, str]:
    import gymnasium
    import numpy
    import stable_baselines3
    import torch

    return {
        "python": platform.python_version(),
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": numpy.__version__,
    }


def _write_config(path: Path, settings: Any, cfg: L2Config, prepared: Any, run: dict[str, Any]) -> None:
    """Everything that determined this run, resolved: settings, hyperparameters, split, the L2 config."""
    import yaml

    from training.shared import plain_hyperparameters

    resolved = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(settings).items()},
        "algorithm": run["algorithm"],
        "env_kwargs": run["env_kwargs"],
        "eval_freq": run["eval_freq"],
        "hyperparameters": plain_hyperparameters(run),
        "walk_forward": prepared.split.describe(),
        "data_files": [dataclasses.asdict(d) for d in prepared.data_files],
        "l2_config": _plain(cfg.to_dict()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(resolved, sort_keys=True), encoding="utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)


def summary_table(name: str, validation: WindowMetrics, test: WindowMetrics) -> str:
    """A plain-text table of the card's metrics (agent vs buy-and-hold, validation and test)."""
    rows = [f"{name}: window      who           return   Sharpe  Sortino   maxDD  hit   turnover"]
    for label, window in (("validation", validation), ("test", test)):
        for who, m in (("agent", window.agent), ("buy_and_hold", window.buy_and_hold)):
            rows.append(
                f"{'':{len(name) + 2}}{label:<11} {who:<12} {m.total_return:+8.1%} {m.sharpe:7.2f} "
                f"{m.sortino:8.2f} {m.max_drawdown:7.1%} {m.hit_rate:4.2f} {m.turnover:9.1f}"
            )
    return "\n".join(rows)
