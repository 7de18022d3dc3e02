"""Train the trend specialist: `python training/train_trend.py [--timesteps N] [--seed S] ...`.

Thin entry point over :func:`training.shared.train_specialist` (same options as `l2 train trend`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.script import main

if __name__ == "__main__":
    sys.exit(main("trend", sys.argv[1:]))
