"""Benchmark of the trading envs (not a test): one run, one markdown table.

    .venv/bin/python bench/envs.py [--quick]

Measured on the real BTCUSDT-1h candles with the trend FeatureSet (the same indicator
columns are handed to the peers):

* single-env steps/s of ``TradingEnv`` (Discrete(3), random actions, auto-reset) vs
  FinRL's ``StockTradingEnv`` (finrl 0.3.7) and gym-trading-env's ``TradingEnv`` (0.3.5).
  The peers run in a subprocess with ``.venv-bench/bin/python`` (create it with
  ``python3 -m venv .venv-bench && .venv-bench/bin/pip install finrl==0.3.7
  gym-trading-env==0.3.5 matplotlib``); a peer that cannot run is reported as
  "not measured: <reason>", never estimated;
* ``TradingVecEnv`` env-steps/s at 8 and 64 envs (and 512, to show how the batch scales);
* stable-baselines3 PPO and A2C training fps with 8 envs on ``TradingVecEnv`` vs the same
  algorithm on a do-nothing VecEnv with the same spaces (SB3's own ceiling here); the ratio is
  the median over repeats of two back-to-back runs (ours / do-nothing), which cancels the
  machine's drift better than a ratio of two bests taken minutes apart.

Throughput is counted per CPU-second of the measuring process (``time.process_time``,
best of several repeats), because this machine is shared and wall-clock numbers swing
with the load; the wall-clock value of the same runs is printed beside it. Training runs
torch on one thread (ours and the do-nothing ceiling alike), so CPU time is its time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
DATA = ROOT / "data" / "BTCUSDT-1h.csv.gz"
WINDOW = 16


def timed(run: Any, steps: int, repeats: int) -> tuple[float, float]:
    """(steps per CPU-second, steps per wall-second), the best of ``repeats`` calls of ``run()``."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        run()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return steps / max(min(cpu), 1e-9), steps / max(min(wall), 1e-9)


# --------------------------------------------------------------------------- peers (subprocess)


def _finrl_runner(d: dict[str, np.ndarray], names: list[str], steps: int) -> Any:
    import importlib.util
    import types

    import pandas as pd

    # finrl/__init__.py imports FinRL's live/paper-trading stack (alpaca_trade_api, ...), which the env
    # does not use: register the package by its path without running that __init__. The env module
    # imports SB3's DummyVecEnv for its get_sb_env() helper only; the bench venv has no torch, so a
    # placeholder stands in. StockTradingEnv.reset/step touch neither.
    found = importlib.util.find_spec("finrl")
    if found is None or found.submodule_search_locations is None:
        raise ModuleNotFoundError("finrl is not installed in this interpreter")
    pkg = types.ModuleType("finrl")
    pkg.__path__ = list(found.submodule_search_locations)
    sys.modules["finrl"] = pkg
    for mod in ("stable_baselines3", "stable_baselines3.common", "stable_baselines3.common.vec_env"):
        sys.modules.setdefault(mod, types.ModuleType(mod))
    sys.modules["stable_baselines3.common.vec_env"].DummyVecEnv = None  # type: ignore[attr-defined]
    from finrl.meta.env_stock_trading.env_stocktrading import StockTradingEnv

    n = len(d["close"])
    df = pd.DataFrame({"date": pd.to_datetime(d["timestamps"], utc=True).strftime("%Y-%m-%d %H:%M:%S"),
                       "tic": "BTCUSDT", "close": d["close"], "open": d["open"], "high": d["high"],
                       "low": d["low"], "volume": d["volume"]}, index=np.arange(n))
    for j, name in enumerate(names):
        df[name] = d["features"][:, j].astype(np.float64)
    env = StockTradingEnv(df=df, stock_dim=1, hmax=1, initial_amount=1_000_000, num_stock_shares=[0],
                          buy_cost_pct=[0.001], sell_cost_pct=[0.001], reward_scaling=1e-4,
                          state_space=3 + len(names), action_space=1, tech_indicator_list=names,
                          print_verbosity=10**9)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 1)).astype(np.float32)
    env.reset(seed=0)

    def run() -> None:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
    return run


def _gte_runner(d: dict[str, np.ndarray], names: list[str], steps: int) -> Any:
    import pandas as pd
    from gym_trading_env.environments import TradingEnv

    # naive UTC times: gym-trading-env reads ``index.values``, which pandas 3.1 deprecates (with a warning it
    # raises) for a tz-aware index
    index = pd.to_datetime(d["timestamps"], utc=True).tz_localize(None)
    df = pd.DataFrame({c: d[c] for c in ("open", "high", "low", "close", "volume")}, index=index)
    for j, name in enumerate(names):
        df[f"feature_{name}"] = d["features"][:, j]
    env = TradingEnv(df=df, positions=[-1, 0, 1], windows=WINDOW, trading_fees=0.001,
                     borrow_interest_rate=0.05 / (365 * 24), verbose=0, initial_position=0)
    actions = np.random.default_rng(0).integers(0, 3, steps).tolist()
    env.reset(seed=0)

    def run() -> None:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
    return run


def peer_main(peer: str, data_path: str, steps: int, repeats: int) -> None:
    """Runs inside .venv-bench: prints one JSON line {"cpu": .., "wall": .., "version": ..} or {"error": ..}."""
    try:
        with np.load(data_path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        names = [str(x) for x in d.pop("names")]
        with contextlib.redirect_stdout(io.StringIO()):
            runner = (_finrl_runner if peer == "finrl" else _gte_runner)(d, names, steps)
            cpu, wall = timed(runner, steps, repeats)
        from importlib.metadata import version

        dist = "finrl" if peer == "finrl" else "gym-trading-env"
        print(json.dumps({"cpu": cpu, "wall": wall, "version": version(dist)}))
    except Exception as exc:  # reported as "not measured", never as a number
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}))


def measure_peer(peer: str, data_path: str, steps: int, repeats: int) -> dict[str, Any]:
    if not BENCH_PYTHON.exists():
        return {"error": f"{BENCH_PYTHON.relative_to(ROOT)} not found (see this script's docstring)"}
    cmd = [str(BENCH_PYTHON), __file__, "--peer", peer, "--peer-data", data_path, "--steps", str(steps),
           "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:200]}"}
    return dict(json.loads(lines[-1]))


# --------------------------------------------------------------------------- ours


def export_peer_data(md: Any, path: str) -> int:
    """The longest ready segment: candles + the same trend features, for the peers."""
    from l2_tactical.data.candles import load_candles

    s, e = max(md.segments, key=lambda se: se[1] - se[0])
    volume = load_candles(DATA).frame["volume"].to_numpy()
    np.savez(path, open=md.open[s:e], high=md.high[s:e], low=md.low[s:e], close=md.close[s:e],
             volume=volume[s:e], features=md.features[s:e], timestamps=md.timestamps[s:e],
             names=np.array(md.feature_names))
    return e - s


def measure_single(md: Any, steps: int, repeats: int, wrapped: bool) -> tuple[float, float]:
    import gymnasium as gym

    from envs.trading_env import TradingEnv

    env: Any = gym.make("L2Trend-v0", data=md) if wrapped else TradingEnv(md)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 3, steps).tolist()

    def run() -> None:
        step, reset = env.step, env.reset
        for a in actions:
            _, _, terminated, truncated, _ = step(a)
            if terminated or truncated:
                reset()
    return timed(run, steps, repeats)


def measure_vec(md: Any, n_envs: int, steps: int, repeats: int) -> tuple[float, float]:
    from envs.vec_env import TradingVecEnv

    venv = TradingVecEnv(md, num_envs=n_envs, seed=0)
    venv.reset()
    actions = np.random.default_rng(0).integers(0, 3, (steps, n_envs))

    def run() -> None:
        for a in actions:
            venv.step(a)
    return timed(run, steps * n_envs, repeats)


def null_vec_env(template: Any) -> Any:
    """A VecEnv with ``template``'s spaces whose step does nothing and returns zeros."""
    from stable_baselines3.common.vec_env import VecEnv

    class NullVecEnv(VecEnv):
        def __init__(self) -> None:
            super().__init__(template.num_envs, template.observation_space, template.action_space)
            self._zeros = np.zeros((self.num_envs, *template.observation_space.shape), np.float32)

        def reset(self) -> Any:
            return self._zeros.copy()

        def step_async(self, actions: Any) -> None:
            pass

        def step_wait(self) -> Any:
            n = self.num_envs
            return self._zeros.copy(), np.zeros(n, np.float32), np.zeros(n, bool), [{} for _ in range(n)]

        def close(self) -> None:
            pass

        def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
            return [None] * self.num_envs

        def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
            pass

        def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
            return [None] * self.num_envs

        def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
            return [False] * self.num_envs

    return NullVecEnv()


def measure_training(md: Any, algo: str, timesteps: int, repeats: int) -> dict[str, tuple[float, float]]:
    """{"ours"|"null": (fps per CPU-second, fps per wall-second), best of ``repeats``; "ratio": the median over
    the repeats of ours / null of the same repeat (CPU, wall)}, 8 envs, SB3 defaults otherwise (PPO with
    n_steps=256); torch on one thread for both. The two runs of a repeat are back to back (order alternating):
    this machine's speed drifts by tens of per cent within a minute, and a ratio of neighbours cancels it."""
    import stable_baselines3 as sb3
    import torch

    from envs.vec_env import TradingVecEnv

    torch.set_num_threads(1)
    cls = getattr(sb3, algo)
    kwargs = {"n_steps": 256} if algo == "PPO" else {}
    warm = cls("MlpPolicy", null_vec_env(TradingVecEnv(md, num_envs=8)), seed=0, device="cpu", **kwargs)
    warm.learn(total_timesteps=warm.n_steps * 8 * 2)  # one-time torch/SB3 start-up costs, charged to neither
    best = {"ours": (0.0, 0.0), "null": (0.0, 0.0)}
    ratios = []
    for rep in range(repeats):
        this: dict[str, tuple[float, float]] = {}
        for name in ("ours", "null") if rep % 2 == 0 else ("null", "ours"):
            venv = TradingVecEnv(md, num_envs=8, seed=0)
            env = venv if name == "ours" else null_vec_env(venv)
            model = cls("MlpPolicy", env, seed=0, device="cpu", verbose=0, **kwargs)
            c0, w0 = time.process_time(), time.perf_counter()
            model.learn(total_timesteps=timesteps)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            this[name] = (model.num_timesteps / cpu, model.num_timesteps / wall)
            best[name] = max(best[name], this[name])
        ratios.append((this["ours"][0] / this["null"][0], this["ours"][1] / this["null"][1]))
    cpu_ratio, wall_ratio = (float(np.median([r[i] for r in ratios])) for i in (0, 1))
    return {**best, "ratio": (cpu_ratio, wall_ratio)}


# --------------------------------------------------------------------------- report


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def row(what: str, ours: str, ref: str, ratio: str, target: str, met: str) -> str:
    return f"| {what} | {ours} | {ref} | {ratio} | {target} | {met} |"


def peer_rows(ours_cpu: float, ours_wall: float, peers: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for label, key, target in (("gym-trading-env TradingEnv", "gte", 4.0), ("FinRL StockTradingEnv", "finrl", 200.0)):
        p = peers[key]
        what = f"single env vs {label}"
        if "error" in p:
            rows.append(row(what, fmt(ours_cpu), f"not measured: {p['error']}", "-", f">= {target:g}x", "-"))
            continue
        ratio = ours_cpu / p["cpu"]
        wall_ratio = ours_wall / p["wall"]
        rows.append(row(f"{what} {p['version']}", f"{fmt(ours_cpu)} (wall {fmt(ours_wall)})",
                        f"{fmt(p['cpu'])} (wall {fmt(p['wall'])})", f"{ratio:,.1f}x (wall {wall_ratio:,.1f}x)",
                        f">= {target:g}x", "yes" if ratio >= target else "no"))
    return rows


def env_rows(md: Any, q: int) -> tuple[list[str], int]:
    """Single-env rows (ours measured before and after the peers, best kept) and VecEnv rows."""
    steps = 200_000 // q
    first = measure_single(md, steps, 5, wrapped=False)
    with tempfile.TemporaryDirectory() as tmp:
        peer_file = os.path.join(tmp, "peer.npz")
        n_rows = export_peer_data(md, peer_file)
        peers = {"gte": measure_peer("gte", peer_file, 30_000 // q, 3),
                 "finrl": measure_peer("finrl", peer_file, 3_000 // q, 3)}
    second = measure_single(md, steps, 5, wrapped=False)
    cpu, wall = max(first[0], second[0]), max(first[1], second[1])
    wcpu, wwall = measure_single(md, steps, 5, wrapped=True)
    rows = [row("single env steps/s, TradingEnv (Discrete(3))", f"{fmt(cpu)} (wall {fmt(wall)})", "-", "-",
                ">= 150,000", "yes" if cpu >= 150_000 else "no"),
            row("single env steps/s via gymnasium.make (+ checker/order/TimeLimit wrappers)",
                f"{fmt(wcpu)} (wall {fmt(wwall)})", "-", "-", "-", "-")]
    rows += peer_rows(cpu, wall, peers)
    for n_envs in (8, 64, 512):  # 512: how the batched step scales (no target)
        vcpu, vwall = measure_vec(md, n_envs, 20_000 // q // (1 + n_envs // 64), 5)
        target, met = ">= 2,000,000", "yes" if vcpu >= 2_000_000 else "no"
        rows.append(row(f"TradingVecEnv env-steps/s, {n_envs} envs", f"{fmt(vcpu)} (wall {fmt(vwall)})", "-", "-",
                        target if n_envs == 64 else "-", met if n_envs == 64 else "-"))
    return rows, n_rows


def training_rows(md: Any, q: int) -> list[str]:
    rows = []
    for algo, steps in (("PPO", 8_192), ("A2C", 8_000)):
        fps = measure_training(md, algo, steps // q, 7)
        (ours, ours_w), (null, null_w), (ratio, ratio_w) = fps["ours"], fps["null"], fps["ratio"]
        rows.append(row(f"SB3 {algo} training fps, 8 envs, vs the same {algo} on a do-nothing VecEnv "
                        "(best of 7 each; ratio: median of back-to-back pairs)",
                        f"{fmt(ours)} (wall {fmt(ours_w)})", f"{fmt(null)} (wall {fmt(null_w)})",
                        f"{ratio:.0%} (wall {ratio_w:.0%})", ">= 90%", "yes" if ratio >= 0.9 else "no"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run, numbers less stable)")
    ap.add_argument("--peer", choices=("finrl", "gte"), help=argparse.SUPPRESS)
    ap.add_argument("--peer-data", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer:
        peer_main(args.peer, args.peer_data, args.steps, args.repeats)
        return 0
    sys.path.insert(0, str(ROOT))
    from envs.market_data import as_market_data

    q = 10 if args.quick else 1
    load_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    md = as_market_data(DATA, "trend")
    rows, n_rows = env_rows(md, q)
    rows += training_rows(md, q)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nTrading env benchmark: BTCUSDT-1h, trend FeatureSet ({md.n_features} features, window {WINDOW}); "
          f"peers on the longest gap-free segment ({n_rows:,} bars) with the same feature columns.")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load_start} at the start, "
          f"{load} at the end. Env throughput per "
          "CPU-second of the measuring process (wall-clock in brackets); training with torch on 1 thread.\n")
    print(row("measurement", "ours", "reference", "ratio", "target", "met"))
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
