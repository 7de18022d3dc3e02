"""FinRL interop: FinRL's ``DRLAgent`` trains PPO on ``L2Trend-v0``; our safe loader serves the zip it saves.

Runs inside the optional FinRL virtual environment (FinRL's pins live apart from the project's)::

    python3 -m venv .venv-finrl
    .venv-finrl/bin/pip install finrl==0.3.7 torch==2.13.0 stable_baselines3==2.9.2 gymnasium==1.4.0 \\
        numpy==2.4.6 TA-Lib==0.8.2 PyYAML==6.0.3 pyarrow==26.0.1 pytest \\
        matplotlib==3.11.2 stockstats==0.6.10 yfinance==1.7.0 alpaca-trade-api==0.48 alpha_vantage==2.3.1 \\
        wrds==3.5.0 pandas_market_calendars==5.5.0 exchange_calendars==4.13.2
    .venv-finrl/bin/pip install --no-deps -e .

FinRL 0.3.7 declares no dependencies but ``import finrl`` imports its whole package (paper trading,
data processors), hence matplotlib, stockstats, yfinance, alpaca-trade-api, wrds and the market
calendars; alpaca-trade-api 0.48 needs alpha_vantage < 3 (3.0 removed ``sectorperformance``), and
wrds brings pandas 2.2.3 (the project itself pins pandas 3.1.1; our code runs on both).
Built in about 10 minutes here (torch download included). Then::

    .venv-finrl/bin/python bench/finrl_interop.py --out runs/finrl --timesteps 256

Steps: ``DRLAgent(env=gymnasium.make("L2Trend-v0", data=<train window>))``, ``get_model("ppo")``,
``train_model``, ``model.save`` (FinRL saves plain SB3 zips); then the zip gets a model card
(validation and test metrics through :mod:`training.evaluation`), a manifest entry, and is loaded
back through :func:`l2_tactical.finrl_models.model_loader.load_model` with the current FeatureSet.
Prints one JSON line with the outcome. The walk-forward split is a late one (train until
2025-06-01, validation until 2025-07-15) to keep the run short.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/finrl", help="output folder (zip, card, manifest)")
    parser.add_argument("--timesteps", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import finrl  # noqa: F401  (fails here, clearly, when FinRL is not installed)
    import gymnasium as gym
    import numpy as np
    from finrl.agents.stablebaselines3.models import DRLAgent

    import envs  # noqa: F401  (registers L2Trend-v0)
    from l2_tactical.config import L2Config
    from l2_tactical.data.features import feature_set
    from l2_tactical.finrl_models.model_loader import load_model
    from training import shared
    from training.outputs import write_outputs

    cfg = L2Config.default().with_overrides(
        {"walk_forward.train_end": "2025-06-01", "walk_forward.validation_end": "2025-07-15"}
    )
    settings = shared.TrainSettings(
        specialist="trend",
        data=(shared.DEFAULT_DATA[0],),
        timesteps=args.timesteps,
        seed=args.seed,
        out=args.out,
        name="finrl_trend",
        tensorboard_log=None,
        progress_bar=False,
        verbose=0,
    )
    shared.set_determinism(args.seed, 1)
    prepared = shared.prepare_data(settings.data, "trend", cfg)
    env = gym.make("L2Trend-v0", data=prepared.train[0], config=cfg)
    agent = DRLAgent(env=env)
    kwargs = {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "learning_rate": 3e-4}
    model = agent.get_model(
        "ppo", policy_kwargs={"net_arch": [64, 64]}, model_kwargs=dict(kwargs), verbose=0, seed=args.seed
    )
    started = time.monotonic()
    model = DRLAgent.train_model(model=model, tb_log_name="finrl_ppo", total_timesteps=args.timesteps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "finrl_raw.zip"
    model.save(raw)  # what FinRL users get: a plain SB3 zip
    selection = types.SimpleNamespace(
        best_timestep=int(model.num_timesteps), best_score=None, stopped_early=False, history=[]
    )
    run = {
        "algorithm": "PPO",
        "env_kwargs": {},
        "timesteps": args.timesteps,
        "n_envs": 1,
        "eval_freq": 0,
        "policy": "MlpPolicy",
        "hyperparameters": {**kwargs, "policy_kwargs": {"net_arch": [64, 64]}},
        "seconds": time.monotonic() - started,
        "trained_timesteps": int(model.num_timesteps),
        "callback": selection,
    }
    result = write_outputs(settings, cfg, prepared, run, raw)
    fs = feature_set("trend", "1h")
    loaded = load_model(
        result.model_path,
        manifest=out / "manifest.json",
        expected_feature_hash=fs.schema_hash,
        expected_features=fs.names,
    )
    obs = np.stack([env.reset(seed=i)[0] for i in range(8)])
    same = bool(
        np.array_equal(loaded.model.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    )
    print(
        json.dumps(
            {
                "finrl_agent": f"{DRLAgent.__module__}.DRLAgent",
                "algorithm": loaded.algorithm,
                "model": str(result.model_path),
                "sha256": loaded.sha256,
                "timesteps": int(model.num_timesteps),
                "predictions_equal": same,
                "validation_sharpe": result.card.validation_metrics.agent.sharpe,
            }
        )
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
