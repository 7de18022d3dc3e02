"""Backtest throughput of the full live pipeline on one core (not a test): one run, markdown tables.

    .venv/bin/python bench/backtest.py [--bars 3000] [--models ROOT] [--cpu 0] [--no-finrl]

Measures :class:`l2_tactical.backtest.engine.Backtester` on real BTCUSDT-1h candles from the test
window start: per bar, features (built in one batch per symbol before the loop, that time counted in
the run, and read row by row: :meth:`SignalGenerator.precompute`; the same rows as the incremental
updater of ``l2 paper``) + 3 specialists (numpy policies) + ensemble vote +
technical/pattern sources + composite + sizer + risk controls (TacticalLoop) + L1's paper
executor (validation, fills through the simulator, stops, SQLite journal). Bars/s is counted per
CPU-second of this process (the machine is shared; wall-clock is printed beside it), pinned to one
core. A cProfile pass attributes the time to the pipeline's parts. The composite's quality filters
are loosened (``LOOSE``) so that orders actually flow through the sizer, risk controls and L1.

Models: ``ROOT/saved_models`` when its three specialists serve 1h bars, else tiny ones trained for
the bench (``bench/signals.py``'s helper; the cost of a forward pass depends on the network's
shape, not on its training).

FinRL's env-driven loop (``StockTradingEnv`` stepped by an SB3 PPO ``predict``, as
``DRLAgent.DRL_prediction`` does) is measured in the same run with ``.venv-finrl/bin/python`` when
that interpreter exists; otherwise it is reported as not measured, with the reason, and the
issue's ~700 bars/s is shown as a quoted figure only.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l2_tactical.backtest.engine import Backtester, config_with_models  # noqa: E402
from l2_tactical.config import L2Config  # noqa: E402
from l2_tactical.data.candles import load_candles  # noqa: E402

FINRL_PYTHON = ROOT / ".venv-finrl" / "bin" / "python"
TARGET = 20_000
QUOTED_FINRL = 700
# Looser quality filters than the defaults so that orders flow through the sizer, the risk controls and L1
# (with the default thresholds the composite rarely passes, and those stages would hardly run).
LOOSE = {"ensemble.confidence_threshold": 0.2, "signals.min_signal_strength": 0.2}
GROUPS = (  # (label, path fragments), first match wins; tottime is summed per group
    ("technical + pattern rules", ("technical/signals", "technical/multi_timeframe")),
    ("features (batch build, row feed)", ("l2_tactical/technical/", "l2_tactical/data/")),
    ("specialists (numpy policies, observations)", ("finrl_models/fast_policy", "finrl_models/feature_processor")),
    ("ensemble vote, weights, consensus", ("finrl_models/ensemble_manager", "l2_tactical/ensemble/")),
    ("signal generator (sources, composite, filters)", ("l2_tactical/signal_generator",
                                                         "l2_tactical/signal_composite")),
    ("sizer + risk controls + stops", ("order_pipeline", "position_sizer", "risk_controls", "stops.py",
                                       "position_monitor")),
    ("TacticalLoop bookkeeping", ("l2_tactical/tactical_loop",)),
    ("messages (validation, ids)", ("l2_tactical/messages", "l2_tactical/message_")),
    ("L1 paper executor + journal (SQLite)", ("l1_operational/", "sqlalchemy", "sqlite3")),
    ("backtest engine (recording)", ("l2_tactical/backtest/",)),
)


def pin(cpu: int) -> str:
    try:
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError) as exc:
        return f"not pinned ({exc})"


def models_root(cfg: L2Config, root: Path) -> tuple[Path, str]:
    sys.path.insert(0, str(ROOT / "bench"))
    from signals import models_for  # bench/signals.py

    return models_for(cfg, "1h", root)


def run_once(cfg: L2Config, candles: Any, start: Any, end: Any) -> Any:
    return Backtester(cfg).run([candles], start=start, end=end)


def measure(cfg: L2Config, candles: Any, start: Any, end: Any) -> tuple[Any, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    result = run_once(cfg, candles, start, end)
    total_cpu, total_wall = time.process_time() - c0, time.perf_counter() - w0
    # the engine times its own bar loop (wall); CPU is apportioned by the loop's share of the wall time
    share = result.seconds / total_wall if total_wall > 0 else 1.0
    return result, total_cpu * share, result.seconds


def breakdown(cfg: L2Config, candles: Any, start: Any, end: Any) -> list[tuple[str, float]]:
    profiler = cProfile.Profile()
    profiler.enable()
    run_once(cfg, candles, start, end)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.items():
        label = next((g for g, frags in GROUPS if any(f in filename for f in frags)), "other (numpy, pandas, Python)")
        totals[label] = totals.get(label, 0.0) + tottime
    whole = sum(totals.values()) or 1.0
    return sorted(((k, v / whole) for k, v in totals.items()), key=lambda kv: -kv[1])


# ------------------------------------------------------------------------- FinRL


FINRL_SCRIPT = r"""
import json, sys, time, numpy as np, pandas as pd
from finrl.meta.env_stock_trading.env_stocktrading import StockTradingEnv
from stable_baselines3 import PPO
import torch
torch.set_num_threads(1)
z = np.load(sys.argv[1]); steps = int(sys.argv[2])
names = [f"f{j}" for j in range(z["features"].shape[1])]
n = len(z["close"])
df = pd.DataFrame({"date": pd.to_datetime(z["timestamps"], utc=True).strftime("%Y-%m-%d %H:%M:%S"), "tic": "BTCUSDT",
                   "close": z["close"], "open": z["open"], "high": z["high"], "low": z["low"], "volume": z["volume"]},
                  index=np.arange(n))
for j, name in enumerate(names):
    df[name] = z["features"][:, j].astype(np.float64)
env = StockTradingEnv(df=df, stock_dim=1, hmax=1, initial_amount=1_000_000, num_stock_shares=[0],
                      buy_cost_pct=[0.001], sell_cost_pct=[0.001], reward_scaling=1e-4, state_space=3 + len(names),
                      action_space=1, tech_indicator_list=names, print_verbosity=10**9)
vec, obs = env.get_sb_env()
model = PPO("MlpPolicy", vec, seed=0, device="cpu")
c0, w0 = time.process_time(), time.perf_counter()
done = 0
for _ in range(steps):  # DRLAgent.DRL_prediction's loop: predict, then step the env
    action, _ = model.predict(obs, deterministic=True)
    obs, _, dones, _ = vec.step(action)
    done += 1
    if dones[0]:
        obs = vec.reset()
cpu, wall = time.process_time() - c0, time.perf_counter() - w0
from importlib.metadata import version
print(json.dumps({"cpu": done / cpu, "wall": done / wall, "steps": done, "version": version("finrl")}))
"""


def measure_finrl(candles: Any, steps: int, cpu: int) -> dict[str, Any]:
    if not FINRL_PYTHON.exists():
        return {"error": f"{FINRL_PYTHON.relative_to(ROOT)} does not exist (FinRL's pins clash with ours; "
                         "create that venv with finrl==0.3.7 to measure it)"}
    from l2_tactical.data.features import feature_set

    frame = candles.frame.iloc[-(steps + 300):]
    fs = feature_set("trend", "1h")
    matrix = fs.build(candles.slice(frame.index[0], None))
    ok = matrix.ready.all(axis=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bars.npz"
        np.savez(path, timestamps=frame.index[ok].as_unit("ns").asi8, features=np.nan_to_num(matrix.values[ok]),
                 **{k: frame[k].to_numpy()[ok] for k in ("open", "high", "low", "close", "volume")})
        cmd = ["taskset", "-c", str(cpu), str(FINRL_PYTHON), "-c", FINRL_SCRIPT, str(path), str(steps)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=3000, help="bars backtested (default 3000)")
    parser.add_argument("--models", default=str(ROOT), help="root holding saved_models/ (default: the repo)")
    parser.add_argument("--cpu", type=int, default=0, help="core to pin to (default 0)")
    parser.add_argument("--no-finrl", action="store_true", help="skip the FinRL measurement")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile breakdown")
    args = parser.parse_args()
    pinned = pin(args.cpu)
    base = L2Config.default()
    root, origin = models_root(base, Path(args.models))
    cfg = config_with_models(base, root / "saved_models").with_overrides(LOOSE)
    candles = load_candles(ROOT / "data" / "BTCUSDT-1h.csv.gz")
    start = candles.frame.index[candles.frame.index >= "2024-07-08"][0]
    end = candles.frame.index[candles.frame.index.get_loc(start) + args.bars]
    run_once(cfg, candles, start, candles.frame.index[candles.frame.index.get_loc(start) + 50])  # imports, caches
    result, cpu_s, wall_s = measure(cfg, candles, start, end)
    n = result.bars_processed
    ours_cpu, ours_wall = n / cpu_s, n / wall_s
    print(f"# bench/backtest.py — BTCUSDT-1h, {n:,} bars from {start:%Y-%m-%d}, {pinned}, specialists: {origin}; "
          f"{len(result.orders)} orders, {len(result.fills)} fills (quality filters loosened: {LOOSE})")
    if result.unavailable:
        print(f"# WARNING: specialists not loaded: {dict(result.unavailable)}")
    print()
    print("| loop | bars/s (CPU) | bars/s (wall) | µs per bar (CPU) | vs target 20,000 bars/s |")
    print("|---|---:|---:|---:|---|")
    print(f"| l2 backtest: features + 3 specialists + ensemble + composite + sizer + risk + L1 paper | "
          f"{ours_cpu:,.0f} | {ours_wall:,.0f} | {1e6 / ours_cpu:,.0f} | "
          f"{'met' if ours_cpu >= TARGET else f'NOT met ({ours_cpu / TARGET:.1%} of it)'} |")
    if not args.no_finrl:
        finrl = measure_finrl(candles, min(args.bars, 3000), args.cpu)
        if "error" in finrl:
            print(f"| FinRL {QUOTED_FINRL} bars/s: quoted from the issue, NOT measured here | — | — | — | — |")
            print(f"\nFinRL not measured here: {finrl['error']}")
        else:
            print(f"| FinRL {finrl['version']} StockTradingEnv + SB3 PPO predict (DRL_prediction loop), "
                  f"measured now | {finrl['cpu']:,.0f} | {finrl['wall']:,.0f} | {1e6 / finrl['cpu']:,.0f} | — |")
    if not args.no_profile:
        parts = breakdown(cfg, candles, start, candles.frame.index[candles.frame.index.get_loc(start) + 1000])
        print("\nWhere the time goes (cProfile, own time per part, 1,000 bars):\n")
        print("| part | share | ≈ µs per bar (CPU) |")
        print("|---|---:|---:|")
        for label, share in parts:
            print(f"| {label} | {share:.1%} | {share * 1e6 / ours_cpu:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
