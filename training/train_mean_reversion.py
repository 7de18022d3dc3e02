"""Train the mean reversion specialist: `python training/train_mean_reversion.py [--timesteps N] [--seed S] ...`.

Thin entry point over :func:`training.shared.train_specialist` (same options as `l2 train mean_reversion`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.script import main

if __name__ == "__main__":
    sys.exit(main("mean_reversion", sys.argv[1:]))
