"""The ``l2`` command.

Each subcommand lives in ``l2_tactical/commands/<name>.py`` with ``register(subparsers)``
and ``run(args) -> int``. Errors the user can act on (:class:`L2Error`) print one line
on stderr and exit with the error's code; nothing prints a traceback unless ``--debug``.

Exit codes: 0 ok, 1 failure, 2 usage, 3 config, 4 data, 5 model integrity,
6 transient (retry later), 70 internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from l2_tactical.errors import L2Error

COMMANDS = ("data", "demo", "signals", "backtest", "paper", "risk")
# Commands that live in packages l2_tactical must not import (training -> envs -> l2_tactical)
# register themselves through this entry-point group (see pyproject.toml): dependency inversion,
# not an import against DESIGN.md's arrows.
PLUGIN_GROUP = "l2_tactical.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2",
        description="l2_tactical: RL specialists + technical consensus -> sized, stop-protected orders "
        "(paper by default).",
    )
    parser.add_argument("--config", metavar="PATH", help="YAML config layered over config/l2_config.yaml")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"l2_tactical.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"l2_tactical.commands.{name}":
                raise
            continue
        module.register(sub)
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            entry.load().register(sub)
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            _register_unavailable(sub, entry.name, f"{type(exc).__name__}: {exc}")
    return parser


def _register_unavailable(sub: argparse._SubParsersAction, name: str, why: str) -> None:
    """A placeholder for a command whose module failed to load: it says why when run."""

    def run(_: argparse.Namespace) -> int:
        print(f"l2 {name}: unavailable in this installation ({why})", file=sys.stderr)
        return 1

    parser = sub.add_parser(name, help=f"(unavailable: {why})")
    parser.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except L2Error as exc:
        if args.debug:
            raise
        print(f"l2 {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"l2 {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI's last line of defence: one line, no traceback
        if args.debug:
            raise
        print(
            f"l2 {args.command}: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
