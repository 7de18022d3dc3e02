"""``main(specialist, argv)`` of the thin ``training/train_*.py`` scripts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(specialist: str, argv: Sequence[str] | None = None) -> int:
    """Parse the training options, train ``specialist``; an L2Error prints one line and exits with its code."""
    from l2_tactical.errors import L2Error
    from training.commands import add_train_arguments, run_train

    parser = argparse.ArgumentParser(
        prog=f"train_{specialist}.py", description=f"Train the {specialist} specialist (as `l2 train {specialist}`)."
    )
    parser.add_argument("--config", metavar="PATH", help="YAML config layered over config/l2_config.yaml")
    add_train_arguments(parser, with_specialist=False)
    args = parser.parse_args(argv)
    args.specialist = specialist
    try:
        return run_train(args)
    except L2Error as exc:
        print(f"train_{specialist}: error: {exc}", file=sys.stderr)
        return exc.exit_code
