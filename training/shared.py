"""Shared training pipeline of the specialists: data -> walk-forward windows -> SB3 -> selection -> card.

:func:`train_specialist` is what ``training/train_*.py`` and ``l2 train`` call:

1. load the candle files (default: BTCUSDT + ETHUSDT 1h, bundled) and split each by time
   (:mod:`training.walk_forward`, boundaries from ``L2Config.walk_forward``);
2. train on the *train* windows of all symbols together: one :class:`~envs.vec_env.TradingVecEnv`
   per symbol, side by side in a :class:`~training.multi_symbol_env.ConcatVecEnv` (``n_envs``
   split across symbols), so every rollout holds every symbol;
3. every ``eval_freq`` steps, play the deterministic policy on the *validation* windows
   (:mod:`training.evaluation`, costs on) and keep the best model by validation Sharpe; stop
   after ``patience`` evaluations without improvement (:class:`~training.callbacks.ValidationCallback`);
4. only then build the *test* windows and evaluate the selected model once, for the card;
5. write ``<out>/<name>.zip``, ``<name>.json`` (model card), ``<name>.yaml`` (the resolved
   configuration) and pin the zip in ``<out>/manifest.json``.

Reproducibility: :func:`set_determinism` seeds Python, numpy and torch (SB3's ``set_random_seed``),
turns on torch's deterministic algorithms and fixes the torch thread count (default 1: the MLPs
are small, and two trainings side by side use a 2-core machine better than one with 2 threads).
The same seed on the same machine gives byte-identical policy parameters.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from envs.specialists import get_specialist
from l2_tactical.config import PACKAGE_ROOT, L2Config
from l2_tactical.errors import ConfigError
from l2_tactical.finrl_models.model_card import (
    DataFile,
    ModelCard,
    Period,
    file_sha256,
)
from training import walk_forward as wf
from training.evaluation import evaluate_window, sb3_predict
from training.zoo_format import load_hyperparams, split_hyperparams, to_plain

DEFAULT_DATA = ("data/BTCUSDT-1h.csv.gz", "data/ETHUSDT-1h.csv.gz")
SPECIALIST_NAMES = ("trend", "mean_reversion", "volatility")
CONTINUOUS_ONLY = ("SAC", "TD3", "DDPG")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrainSettings:
    """One training run. ``None`` means: take it from the hyperparameter file / config."""

    specialist: str
    data: tuple[str, ...] = DEFAULT_DATA
    timesteps: int | None = None
    seed: int = 0
    out: str = "saved_models"
    name: str | None = None
    n_envs: int | None = None
    device: str = "cpu"
    algorithm: str | None = None
    tensorboard_log: str | None = "runs/tb"
    work_dir: str = "runs/train"
    eval_freq: int | None = None
    patience: int = 4
    min_evals: int = 3
    threads: int = 1
    progress_bar: bool = True
    hyperparams_dir: str | None = None
    verbose: int = 1

    def __post_init__(self) -> None:
        get_specialist(self.specialist)
        for name in ("timesteps", "n_envs", "eval_freq"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name}={value!r}: must be a positive integer")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r}: must be a non-negative integer")
        if not self.data:
            raise ConfigError("data: at least one candle file is needed")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TrainResult:
    """Where the outputs went and the card that describes them."""

    model_path: Path
    card_path: Path
    config_path: Path
    card: ModelCard


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PreparedData:
    """Candles and the train / validation windows (the test windows are built only after selection)."""

    candles: tuple[Any, ...]
    feature_set: Any
    split: wf.WalkForwardSplit
    train: tuple[Any, ...]
    validation: tuple[Any, ...]
    data_files: tuple[DataFile, ...]


def set_determinism(seed: int, threads: int = 1) -> None:
    """Seed everything SB3 and torch use, fix the thread count, prefer deterministic kernels."""
    import torch
    from stable_baselines3.common.utils import set_random_seed

    torch.set_num_threads(max(1, int(threads)))
    torch.use_deterministic_algorithms(True, warn_only=True)
    set_random_seed(seed)


def resolve_algorithm(config: L2Config, specialist: str, override: str | None = None) -> str:
    """The specialist's algorithm: ``override``, else ``config.ensemble.models[specialist].algorithm``."""
    if override:
        return override.upper()
    model = config.ensemble.models.get(specialist)
    if model is None:
        raise ConfigError(f"ensemble.models has no entry {specialist!r}; pass --algorithm")
    return str(model.algorithm).upper()


def env_kwargs_for(specialist: str, algorithm: str) -> dict[str, Any]:
    """Env keyword arguments: SAC/TD3/DDPG act continuously, so a discrete preset is switched over."""
    if algorithm in CONTINUOUS_ONLY and get_specialist(specialist).action_mode != "continuous":
        return {"action_mode": "continuous"}
    return {}


def relative_path(path: str | Path) -> str:
    """``data/BTCUSDT-1h.csv.gz`` for a file inside the project, else the absolute path."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(PACKAGE_ROOT).as_posix()
    except ValueError:
        return resolved.as_posix()


def resolve_data_path(path: str) -> Path:
    """A data path as given, or relative to the project root when it does not exist from here."""
    candidate = Path(path)
    if not candidate.exists() and not candidate.is_absolute() and (PACKAGE_ROOT / candidate).exists():
        return PACKAGE_ROOT / candidate
    return candidate


def prepare_data(files: tuple[str, ...], specialist: str, config: L2Config) -> PreparedData:
    """Load the candles and build the train and validation windows of every symbol."""
    from l2_tactical.data.candles import load_many
    from l2_tactical.data.features import feature_set

    paths = [resolve_data_path(f) for f in files]
    candles = tuple(load_many(paths).values())
    timeframes = sorted({c.timeframe for c in candles})
    if len(timeframes) != 1:
        raise ConfigError(f"data: all files must share one timeframe, got {timeframes}")
    spec = get_specialist(specialist)
    fs = feature_set(spec.feature_set, timeframes[0])
    split = wf.split_from_config(config.walk_forward, int(candles[0].step_ns // 1_000_000_000))
    train = tuple(wf.train_window(c, fs, split) for c in candles)
    validation = tuple(wf.validation_window(c, fs, split, spec.window) for c in candles)
    data_files = tuple(DataFile(path=relative_path(p), sha256=file_sha256(p)) for p in paths)
    return PreparedData(
        candles=candles, feature_set=fs, split=split, train=train, validation=validation, data_files=data_files
    )


def build_train_env(
    train_mds: tuple[Any, ...], config: L2Config, specialist: str, env_kwargs: dict[str, Any], n_envs: int, seed: int
) -> Any:
    """A VecMonitor over one TradingVecEnv per symbol (``n_envs`` split across them, at least one each)."""
    from stable_baselines3.common.vec_env import VecMonitor

    from envs.vec_env import TradingVecEnv
    from training.multi_symbol_env import ConcatVecEnv

    k = len(train_mds)
    counts = [n_envs // k + (1 if i < n_envs % k else 0) for i in range(k)]
    children = [
        TradingVecEnv(md, config, num_envs=max(1, c), specialist=specialist, **env_kwargs)
        for md, c in zip(train_mds, counts, strict=True)
    ]
    env = VecMonitor(ConcatVecEnv(children))
    env.seed(seed)
    return env


def make_model(
    algorithm: str,
    env: Any,
    kwargs: dict[str, Any],
    policy: str,
    *,
    seed: int,
    device: str,
    tensorboard_log: str | None,
) -> Any:
    import stable_baselines3

    algo_cls = getattr(stable_baselines3, algorithm, None)
    if algo_cls is None:
        raise ConfigError(f"algorithm={algorithm!r}: not a stable-baselines3 algorithm")
    try:
        return algo_cls(policy, env, seed=seed, device=device, tensorboard_log=tensorboard_log, verbose=0, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{algorithm} hyperparameters: {exc}") from None


def _validation_evaluator(prepared: PreparedData, config: L2Config, specialist: str, env_kwargs: dict[str, Any]) -> Any:
    def evaluate(model: Any) -> tuple[float, dict[str, Any]]:
        window, _ = evaluate_window(
            prepared.validation, sb3_predict(model), config=config, specialist=specialist, env_kwargs=env_kwargs
        )
        a = window.agent
        return a.sharpe, {"total_return": a.total_return, "max_drawdown": a.max_drawdown, "turnover": a.turnover}

    return evaluate


def train_specialist(settings: TrainSettings, config: L2Config | None = None) -> TrainResult:
    """Run the whole pipeline of the module docstring for one specialist; returns where it wrote."""
    from training.callbacks import ValidationCallback

    cfg = config if config is not None else L2Config.default()
    spec = get_specialist(settings.specialist)
    name = settings.name or spec.name
    algorithm = resolve_algorithm(cfg, spec.name, settings.algorithm)
    env_kwargs = env_kwargs_for(spec.name, algorithm)
    zoo, algo_kwargs = split_hyperparams(load_hyperparams(algorithm, spec.env_id, settings.hyperparams_dir))
    timesteps = settings.timesteps or int(zoo.get("n_timesteps", 100_000))
    n_envs = settings.n_envs or int(zoo.get("n_envs", 8))
    eval_freq = settings.eval_freq or max(timesteps // 8, 1)
    set_determinism(settings.seed, settings.threads)
    prepared = prepare_data(tuple(settings.data), spec.name, cfg)
    check_no_test_leak(prepared)
    env = build_train_env(prepared.train, cfg, spec.name, env_kwargs, n_envs, settings.seed)
    model = make_model(
        algorithm,
        env,
        algo_kwargs,
        str(zoo.get("policy", "MlpPolicy")),
        seed=settings.seed,
        device=settings.device,
        tensorboard_log=settings.tensorboard_log,
    )
    work = run_dir(settings.work_dir, f"{name}-seed{settings.seed}")
    callback = ValidationCallback(
        _validation_evaluator(prepared, cfg, spec.name, env_kwargs),
        eval_freq=eval_freq,
        best_path=work / "best_model.zip",
        patience=settings.patience,
        min_evals=settings.min_evals,
        verbose=settings.verbose,
    )
    started = time.monotonic()
    model.learn(total_timesteps=timesteps, callback=callback, progress_bar=settings.progress_bar, tb_log_name=name)
    seconds = time.monotonic() - started
    env.close()
    run = {
        "algorithm": algorithm,
        "env_kwargs": env_kwargs,
        "timesteps": timesteps,
        "n_envs": n_envs,
        "eval_freq": eval_freq,
        "policy": str(zoo.get("policy", "MlpPolicy")),
        "hyperparameters": algo_kwargs,
        "seconds": seconds,
        "trained_timesteps": int(model.num_timesteps),
        "callback": callback,
    }
    from training.outputs import write_outputs

    return write_outputs(settings, cfg, prepared, run, work / "best_model.zip")


def run_dir(parent: str, prefix: str) -> Path:
    """A fresh folder ``<parent>/<prefix>-<unique>`` for this run's checkpoints: two runs of the same
    specialist and seed (e.g. two users, or a test and a real run) never overwrite each other's best model."""
    import tempfile

    Path(parent).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=parent))


def check_no_test_leak(prepared: PreparedData) -> None:
    """Refuse to train when a train or validation window reaches into the test window (a bug, not user input)."""
    for md in (*prepared.train, *prepared.validation):
        if len(md) and int(md.timestamps[-1]) >= prepared.split.test_start:
            raise RuntimeError(
                f"{md.symbol}: a training/validation window reaches the test window "
                f"({wf.iso(int(md.timestamps[-1]))} >= {wf.iso(prepared.split.test_start)})"
            )


def copy_model(best: Path, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.zip"
    shutil.copyfile(best, target)
    return target


def plain_hyperparameters(run: dict[str, Any]) -> dict[str, Any]:
    """The card's hyperparameters: the algorithm kwargs plus rl-zoo3's n_timesteps / n_envs / policy."""
    return {
        "policy": run["policy"],
        "n_timesteps": run["timesteps"],
        "n_envs": run["n_envs"],
        **to_plain(run["hyperparameters"]),
    }


def card_periods(prepared: PreparedData, test_mds: tuple[Any, ...]) -> tuple[Period, Period, Period]:
    split = prepared.split
    train = Period(start=wf.period_of(list(prepared.train))[0], end=wf.iso(split.train_end))
    validation = Period(start=wf.iso(split.validation_start), end=wf.iso(split.validation_end))
    test = Period(start=wf.iso(split.test_start), end=wf.period_of(list(test_mds))[1])
    return train, validation, test
