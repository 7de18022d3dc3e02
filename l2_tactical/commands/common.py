"""Helpers shared by the CLI subcommands."""

from __future__ import annotations

import argparse

from l2_tactical.config import L2Config


def load_config(args: argparse.Namespace) -> L2Config:
    """The config named by ``--config`` (or ``L2_CONFIG``), with ``L2_*`` overrides."""
    path = getattr(args, "config", None)
    return L2Config.from_file(path) if path else L2Config.from_env()


def split_files(value: str) -> list[str]:
    """``a.csv,b.csv`` -> ``["a.csv", "b.csv"]`` (argparse type for --data)."""
    files = [v.strip() for v in value.split(",") if v.strip()]
    if not files:
        raise argparse.ArgumentTypeError("expected FILE[,FILE...]")
    return files
