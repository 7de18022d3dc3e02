"""``l2 train``, registered through the entry-point group
``l2_tactical.commands`` (pyproject.toml), so l2_tactical never imports training.

``l2 train {trend,mean_reversion,volatility,all} [--data FILE[,FILE...]] [--timesteps N] [--seed S]
[--out saved_models/] [--n-envs 8] [--device cpu]`` trains on the given 1h candle files (default:
BTCUSDT + ETHUSDT 1h, bundled; several symbols are trained together, one vectorised env per symbol),
split by time into train / validation / test (``walk_forward`` in the config), keeps the best model
by validation Sharpe, evaluates it once on the test window and writes ``<out>/<name>.zip`` with its
model card, resolved config and manifest entry. Progress bar with ETA; TensorBoard logs in runs/tb/.
"""

from __future__ import annotations

import argparse
import types
from typing import Any

SPECIALIST_CHOICES = ("trend", "mean_reversion", "volatility", "all")


def add_train_arguments(p: argparse.ArgumentParser, *, with_specialist: bool = True) -> None:
    """The training options shared by ``l2 train`` and ``training/train_*.py``."""
    from training.shared import DEFAULT_DATA

    if with_specialist:
        p.add_argument("specialist", choices=SPECIALIST_CHOICES, help="which specialist to train (all: the three)")
    p.add_argument(
        "--data",
        type=_split_files,
        default=list(DEFAULT_DATA),
        metavar="FILE[,FILE...]",
        help=f"candle files trained together (default: {','.join(DEFAULT_DATA)})",
    )
    p.add_argument(
        "--timesteps", type=int, default=None, help="total env steps (default: n_timesteps of the hyperparameter file)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same machine, same model")
    p.add_argument("--out", default="saved_models", help="output folder (default: saved_models/)")
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs, split across symbols (default: file)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--algorithm", default=None, help="override the config's algorithm (PPO, A2C, SAC, ...)")
    p.add_argument(
        "--eval-freq", type=int, default=None, help="timesteps between validation evaluations (default: timesteps / 8)"
    )
    p.add_argument(
        "--patience",
        type=int,
        default=4,
        help="stop after this many evaluations without a better validation Sharpe (default 4)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1)")
    p.add_argument("--tensorboard-log", default="runs/tb", help="TensorBoard folder (default runs/tb; '' = off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. when logging to a file)")


def _split_files(value: str) -> list[str]:
    files = [v.strip() for v in value.split(",") if v.strip()]
    if not files:
        raise argparse.ArgumentTypeError("expected FILE[,FILE...]")
    return files


def settings_from_args(args: argparse.Namespace, specialist: str) -> Any:
    from training.shared import TrainSettings

    return TrainSettings(
        specialist=specialist,
        data=tuple(args.data),
        timesteps=args.timesteps,
        seed=args.seed,
        out=args.out,
        n_envs=args.n_envs,
        device=args.device,
        algorithm=args.algorithm,
        eval_freq=args.eval_freq,
        patience=args.patience,
        threads=args.threads,
        tensorboard_log=args.tensorboard_log or None,
        progress_bar=not args.no_progress,
        verbose=0 if getattr(args, "quiet", False) else 1,
    )


def run_train(args: argparse.Namespace) -> int:
    """Train the chosen specialist(s); L2Error reaches the CLI boundary (one line, its exit code)."""
    from l2_tactical.config import L2Config
    from training.shared import SPECIALIST_NAMES, train_specialist

    path = getattr(args, "config", None)
    cfg = L2Config.from_file(path) if path else L2Config.from_env()
    names = SPECIALIST_NAMES if args.specialist == "all" else (args.specialist,)
    for name in names:
        result = train_specialist(settings_from_args(args, name), cfg)
        print(f"wrote {result.model_path} (card {result.card_path.name}, config {result.config_path.name})")
    return 0


def _register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the RL specialists on real candles (walk-forward, model cards)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(p)
    p.set_defaults(func=run_train)


train = types.SimpleNamespace(register=_register_train)
