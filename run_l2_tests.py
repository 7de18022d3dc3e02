#!/usr/bin/env python
"""The test entry point named in the README: lint, types, then pytest.

    python run_l2_tests.py            # default tier (everything but @slow)
    python run_l2_tests.py --all      # every tier (what CI runs; CI=true implies it)
    python run_l2_tests.py -- -k risk # extra arguments after -- go to pytest

Exit code: 0 when everything passed; pytest's "no tests collected" (5) is a failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
LINT_PATHS = ["l2_tactical", "l1_operational", "envs", "training", "tests", "bench", "examples", "run_l2_tests.py"]


def step(name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    print(f"=== {name}: exit {rc} in {time.monotonic() - started:.1f}s", flush=True)
    return rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="include @slow tests and the long property-test profile")
    parser.add_argument("--no-lint", action="store_true", help="skip ruff and mypy")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    in_ci = os.environ.get("CI", "").lower() == "true"
    full = args.all or in_ci
    py = sys.executable
    failures = []
    if not args.no_lint:
        paths = [p for p in LINT_PATHS if os.path.exists(os.path.join(ROOT, p))]
        if step("ruff", [py, "-m", "ruff", "check", *paths]):
            failures.append("ruff")
        if step("mypy", [py, "-m", "mypy"]):
            failures.append("mypy")
    env = dict(os.environ)
    if full:
        env.setdefault("HYPOTHESIS_PROFILE", "ci")
    marker = [] if full else ["-m", "not slow"]
    cmd = [py, "-m", "pytest", "tests", "l2_tactical", "l1_operational", "envs", "training", *marker, *args.pytest_args]
    rc = step("pytest", cmd, env)
    if rc == 5:
        print("pytest collected no tests: treated as a failure", file=sys.stderr)
    if rc:
        failures.append(f"pytest (exit {rc})")
    if failures:
        print(f"\nFAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    print("\nALL CHECKS PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
