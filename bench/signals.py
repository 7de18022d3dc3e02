"""Per-bar decision latency of the SignalGenerator's streaming path, on real candles, on one core.

Measures ``SignalGenerator.on_bar`` -- incremental features + 3 specialists (numpy policies) +
ensemble vote + technical/pattern sources + composite + filters -- for 1 and for 4 symbols
(interleaved bar by bar, as a live feed delivers them), and next to it the cost of calling
stable-baselines3 ``predict(obs, deterministic=True)`` three times on the same observations.

Models: the shipped ``saved_models`` when they load for the benchmark's timeframe; otherwise
three specialists (PPO trend, A2C mean reversion, SAC volatility, SB3 default MLP [64, 64]) are
trained for a few steps on the real envs into a temporary folder -- latency does not depend on
how well a network is trained, only on its shape.

    .venv/bin/python bench/signals.py [--timeframe 1h] [--bars 2000] [--models ROOT] [--cpu 0]

Prints a markdown table (times in microseconds; p99 target: <= 1000 us per symbol).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l2_tactical.config import L2Config  # noqa: E402
from l2_tactical.data.candles import load_candles  # noqa: E402
from l2_tactical.finrl_models.ensemble_manager import EnsembleManager  # noqa: E402
from l2_tactical.signal_generator import SignalGenerator  # noqa: E402

SYMBOLS = {"1h": ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"), "1m": ("BTCUSDT", "ETHUSDT")}
WARM = {"1h": 2500, "1m": 3000}
SPECIALISTS = (("trend", "PPO", {"n_steps": 64, "batch_size": 32, "n_epochs": 1}),
               ("mean_reversion", "A2C", {"n_steps": 8}),
               ("volatility", "SAC", {"learning_starts": 32, "batch_size": 32}))
ENV_IDS = {"trend": "L2Trend-v0", "mean_reversion": "L2MeanReversion-v0", "volatility": "L2Volatility-v0"}


def candles(symbol: str, timeframe: str) -> Any:
    return load_candles(ROOT / "data" / f"{symbol}-{timeframe}.csv.gz")


def train_models(timeframe: str, folder: Path) -> Path:
    """Three specialists trained for a few steps on real bars, published with cards and a manifest."""
    import gymnasium as gym
    import stable_baselines3

    import envs.registration  # noqa: F401
    from l2_tactical.finrl_models.model_card import (
        DataFile,
        Metrics,
        ModelCard,
        Period,
        WindowMetrics,
        card_path_for,
        file_sha256,
        update_manifest,
        write_card,
    )

    data_file = ROOT / "data" / f"BTCUSDT-{timeframe}.csv.gz"
    c = load_candles(data_file)
    data = c.slice(c.frame.index[-4000], None) if timeframe == "1h" else c.slice(None, c.frame.index[4000])
    out = folder / "saved_models"
    out.mkdir(parents=True, exist_ok=True)
    m = Metrics(total_return=0.0, sharpe=0.0, sortino=0.0, max_drawdown=0.0, hit_rate=0.5, turnover=0.0)
    for name, algo, kwargs in SPECIALISTS:
        env = gym.make(ENV_IDS[name], data=data)
        model = getattr(stable_baselines3, algo)("MlpPolicy", env, seed=0, device="cpu", **kwargs)
        model.learn(total_timesteps=64)
        path = out / f"{name}.zip"
        model.save(path)
        md = env.unwrapped.data
        write_card(card_path_for(path), ModelCard(
            name=name, specialist=name, algorithm=algo, env_id=ENV_IDS[name], env_version="bench",
            feature_schema_hash=md.schema_hash, feature_names=md.feature_names,
            data_files=(DataFile(path=str(data_file.relative_to(ROOT)), sha256=file_sha256(data_file)),),
            train=Period(start="2018-01-01T00:00:00+00:00", end="2019-01-01T00:00:00+00:00"),
            validation=Period(start="2019-01-01T00:00:00+00:00", end="2019-02-01T00:00:00+00:00"),
            test=Period(start="2019-02-01T00:00:00+00:00", end="2019-03-01T00:00:00+00:00"),
            hyperparameters={"total_timesteps": 64}, seed=0,
            validation_metrics=WindowMetrics(agent=m, buy_and_hold=m),
            test_metrics=WindowMetrics(agent=m, buy_and_hold=m),
            model_file=path.name, sha256=file_sha256(path)))
        update_manifest(out / "manifest.json", path)
    return folder


def models_for(cfg: L2Config, timeframe: str, models: Path) -> tuple[Path, str]:
    """The models root to use: ``models`` if its three specialists serve ``timeframe`` bars, else tiny ones."""
    ens = EnsembleManager.from_config(cfg, root=models)
    plan = SignalGenerator(cfg, ensemble=ens, timeframe=timeframe)._plan(timeframe)
    if len(plan.columns) == 3:
        return models, f"models from {models / 'saved_models'}"
    why = "; ".join(f"{k}: {v}" for k, v in {**ens.unavailable, **plan.excluded}.items())
    print(f"# {models / 'saved_models'} does not serve {timeframe} bars ({why[:300]}); training tiny models",
          file=sys.stderr)
    folder = Path(tempfile.mkdtemp(prefix="l2-bench-"))
    return train_models(timeframe, folder), "tiny models trained for the bench (SB3 default MLP)"


def pct(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values) * 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def run_streams(cfg: L2Config, ens: EnsembleManager, timeframe: str, symbols: tuple[str, ...],
                bars: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """Wall and CPU (thread) seconds: per symbol-bar ``on_bar``, and per bar for all symbols."""
    gen = SignalGenerator(cfg, ensemble=ens, timeframe=timeframe)
    feeds = []
    for sym in symbols:
        frame = candles(sym, timeframe).frame
        warm = WARM[timeframe]
        gen.warm_up(sym, frame.iloc[:warm], {"regime": "trending"})
        part = frame.iloc[warm:warm + bars]
        feeds.append(list(zip(part.index.as_unit("ns").asi8.tolist(),
                              *(part[c].to_numpy().tolist() for c in ("open", "high", "low", "close", "volume")),
                              strict=True)))
    n = min(len(f) for f in feeds)
    per_symbol, per_bar, cpu_symbol, cpu_bar = [], [], [], []
    ctx = {"regime": "trending", "strength": 0.8}
    clock, cpu = time.perf_counter, time.thread_time
    for i in range(n):
        start_bar, start_cpu = clock(), cpu()
        for sym, feed in zip(symbols, feeds, strict=True):
            t0, c0 = clock(), cpu()
            gen.on_bar(sym, feed[i], ctx)
            per_symbol.append(clock() - t0)
            cpu_symbol.append(cpu() - c0)
        per_bar.append(clock() - start_bar)
        cpu_bar.append(cpu() - start_cpu)
    return per_symbol, per_bar, cpu_symbol, cpu_bar


def component_times(cfg: L2Config, ens: EnsembleManager, root: Path, timeframe: str, bars: int
                    ) -> dict[str, tuple[float, ...]]:
    """Features alone, the 3 numpy specialists alone, and SB3 predict x3, on the same real bars."""
    gen = SignalGenerator(cfg, ensemble=ens, timeframe=timeframe)
    plan = gen._plan(timeframe)
    frame = candles("BTCUSDT", timeframe).frame
    warm = WARM[timeframe]
    updater = plan.feature_set.incremental(frame.iloc[:warm])
    part = frame.iloc[warm:warm + bars]
    rows, feats, feats_cpu = [], [], []
    for bar in zip(part.index.as_unit("ns").asi8.tolist(), *(part[c].to_numpy().tolist()
                                                            for c in ("open", "high", "low", "close", "volume")),
                   strict=True):
        t0, c0 = time.perf_counter(), time.thread_time()
        rows.append(updater.update(bar))
        feats.append(time.perf_counter() - t0)
        feats_cpu.append(time.thread_time() - c0)
    matrix = np.stack(rows)
    specs = [s for s in ens.available if s.name in plan.columns]
    state = np.zeros(4, np.float32)
    obs = {s.name: [np.concatenate([matrix[i - s.window + 1:i + 1, plan.columns[s.name]].reshape(-1), state])
                    for i in range(max(s.window for s in specs), len(matrix))] for s in specs}
    m = min(len(v) for v in obs.values())
    fast, sb3, fast_cpu, sb3_cpu = [], [], [], []
    loaded = {s.name: _sb3_model(cfg, root, s.name) for s in specs}
    for i in range(m):
        t0, c0 = time.perf_counter(), time.thread_time()
        for s in specs:
            s.act(obs[s.name][i])
        fast.append(time.perf_counter() - t0)
        fast_cpu.append(time.thread_time() - c0)
        t0, c0 = time.perf_counter(), time.thread_time()
        for s in specs:
            loaded[s.name].predict(obs[s.name][i], deterministic=True)
        sb3.append(time.perf_counter() - t0)
        sb3_cpu.append(time.thread_time() - c0)
    return {"features": pct(feats) + pct(feats_cpu), "numpy x3": pct(fast) + pct(fast_cpu),
            "sb3 x3": pct(sb3) + pct(sb3_cpu)}


def _sb3_model(cfg: L2Config, root: Path, name: str) -> Any:
    from l2_tactical.finrl_models.model_loader import load_model

    path = root / cfg.ensemble.models[name].path
    return load_model(path, manifest=path.parent / "manifest.json").model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeframe", choices=sorted(SYMBOLS), default="1h")
    p.add_argument("--bars", type=int, default=2000)
    p.add_argument("--models", type=Path, default=ROOT, help="root holding saved_models/ (default: the repo)")
    p.add_argument("--cpu", type=int, default=0, help="pin the process to this core")
    args = p.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    import torch

    torch.set_num_threads(1)
    cfg = L2Config.default()
    root, origin = models_for(cfg, args.timeframe, args.models)
    ens = EnsembleManager.from_config(cfg, root=root)
    comps = component_times(cfg, ens, root, args.timeframe, args.bars)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    import timeit

    calib = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6
    print(f"\nSignalGenerator.on_bar latency, {args.timeframe} bars, {origin}, one core (cpu {args.cpu}), "
          f"{args.bars} bars per symbol, load average {load}, CPU speed check sum(range(1000)) = {calib:.1f} us; "
          "microseconds\n")
    print("| measured | symbols | wall p50 | wall p99 | CPU p50 | CPU p99 | CPU p99 per symbol |")
    print("|---|---|---|---|---|---|---|")
    for k in (1, len(SYMBOLS[args.timeframe])):
        ens = EnsembleManager.from_config(cfg, root=root)  # a fresh cache and state per run
        per_symbol, per_bar, cpu_symbol, cpu_bar = run_streams(cfg, ens, args.timeframe,
                                                               SYMBOLS[args.timeframe][:k], args.bars)
        w50, w99 = pct(per_symbol)
        c50, c99 = pct(cpu_symbol)
        print(f"| on_bar, one symbol's bar (features + 3 specialists + ensemble + composite) | {k} "
              f"| {w50:.0f} | {w99:.0f} | {c50:.0f} | {c99:.0f} | {c99:.0f} |")
        if k > 1:
            w50, w99 = pct(per_bar)
            c50, c99 = pct(cpu_bar)
            print(f"| on_bar, all {k} symbols' bars | {k} | {w50:.0f} | {w99:.0f} | {c50:.0f} | {c99:.0f} "
                  f"| {c99 / k:.0f} |")
    for label, key in (("incremental features only (full FeatureSet)", "features"),
                       ("3 specialists, numpy forward", "numpy x3"),
                       ("3 specialists, SB3 predict(deterministic=True)", "sb3 x3")):
        a, b, c, d = comps[key]
        print(f"| {label} | 1 | {a:.0f} | {b:.0f} | {c:.0f} | {d:.0f} | {d:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
