"""Benchmark of the feature pipeline (a script, not a test).

Prints a markdown table:

* incremental ``FeatureUpdater.update`` cost per 1m bar for the ``full``
  FeatureSet across four timeframes (1m, 5m, 15m, 1h), p50 / p99 / max over
  the measured bars (the p99 includes the hh:59 bars where all four
  timeframes update);
* batch ``FeatureSet.build`` time for all of ``data/BTCUSDT-1h.csv.gz``
  (``full`` preset on 1h: 1h + 4h), and for the 1m file.

Usage: ``python bench/features.py [--bars 20000]``
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l2_tactical.data.candles import load_candles  # noqa: E402
from l2_tactical.data.features import feature_set  # noqa: E402


def _incremental(bars: int, warm: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    frame = load_candles(ROOT / "data" / "BTCUSDT-1m.csv.gz").frame.iloc[: warm + bars]
    fs = feature_set("full", "1m")
    updater = fs.incremental(history=frame.iloc[:warm])
    tail = frame.iloc[warm:]
    rows = zip(
        tail.index.as_unit("ns").asi8.tolist(),
        *(tail[c].tolist() for c in ("open", "high", "low", "close", "volume")),
        strict=True,
    )
    wall, cpu = np.empty(len(tail)), np.empty(len(tail))
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i, bar in enumerate(rows):
        start, start_cpu = clock(), cpu_clock()
        updater.update(bar)
        cpu[i] = cpu_clock() - start_cpu
        wall[i] = clock() - start
    all_four = np.asarray(tail.index.minute == 59)  # these bars also close a 5m, a 15m and a 1h bar
    return len(fs), wall / 1_000.0, cpu / 1_000.0, all_four


def _batch(name: str, base: str, repeats: int = 3) -> tuple[int, int, float]:
    frame = load_candles(ROOT / "data" / name).frame
    fs = feature_set("full", base)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fs.build(frame)
        best = min(best, time.perf_counter() - start)
    return len(frame), len(fs), best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=20_000, help="1m bars to time after warm-up")
    args = parser.parse_args()
    n_features, wall, cpu, hh59 = _incremental(args.bars, warm=3_000)
    rows_1h, f_1h, t_1h = _batch("BTCUSDT-1h.csv.gz", "1h")
    rows_1m, f_1m, t_1m = _batch("BTCUSDT-1m.csv.gz", "1m", repeats=1)
    print(
        f"Feature pipeline benchmark ({platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()})\n"
    )
    print("| measurement | features | bars | p50 | p99 | max / total |")
    print("|---|---|---|---|---|---|")
    for label, us in (("wall", wall), ("CPU", cpu)):
        for scope, sel in (("all bars", slice(None)), ("hh:59 bars only (all four timeframes update)", hh59)):
            x = us[sel]
            print(
                f"| incremental update, `full` on 1m (1m+5m+15m+1h), {label} time, {scope} | {n_features} | "
                f"{len(x):,} | {np.percentile(x, 50):.0f} µs/bar | {np.percentile(x, 99):.0f} µs/bar "
                f"| {x.max():.0f} µs |"
            )
    print(
        f"| batch build, `full` on BTCUSDT-1h (1h+4h) | {f_1h} | {rows_1h:,} | | | {t_1h:.2f} s "
        f"({t_1h / rows_1h * 1e6:.1f} µs/bar) |"
    )
    print(
        f"| batch build, `full` on BTCUSDT-1m (1m+5m+15m+1h) | {f_1m} | {rows_1m:,} | | | {t_1m:.2f} s "
        f"({t_1m / rows_1m * 1e6:.1f} µs/bar) |"
    )


if __name__ == "__main__":
    main()
