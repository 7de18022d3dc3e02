"""Model selection on the validation window: keep the best model by validation Sharpe, stop early.

:class:`ValidationCallback` works like SB3's ``EvalCallback`` with ``StopTrainingOnNoModelImprovement``,
but scores the *deterministic* policy by the Sharpe ratio after costs of the validation window
(an ``evaluate`` function, normally :func:`training.evaluation.evaluate_window` on the validation
MarketData). It never sees the test window: it only holds the function it is given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

#: ``evaluate(model) -> (score, details)``; higher score is better
Evaluate = Callable[[Any], tuple[float, dict[str, Any]]]


class ValidationCallback(BaseCallback):
    """Every ``eval_freq`` timesteps: score the model; save it to ``best_path`` when it beats the best
    score so far; stop training after ``patience`` evaluations in a row without improvement (but not
    before ``min_evals`` evaluations). The model is also scored once at the very end of training."""

    def __init__(
        self,
        evaluate: Evaluate,
        *,
        eval_freq: int,
        best_path: str | Path,
        patience: int = 4,
        min_evals: int = 2,
        min_delta: float = 0.0,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        for name, value, lo in (("eval_freq", eval_freq, 1), ("patience", patience, 1), ("min_evals", min_evals, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name}={value!r}: must be an int >= {lo}")
        self.evaluate = evaluate
        self.eval_freq = eval_freq
        self.best_path = Path(best_path)
        self.patience = patience
        self.min_evals = min_evals
        self.min_delta = float(min_delta)
        self.best_score = -math.inf
        self.best_timestep = -1
        self.best_details: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.stopped_early = False
        self._since_best = 0
        self._last_eval = 0

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last_eval < self.eval_freq:
            return True
        return self._run_evaluation()

    def _on_training_end(self) -> None:
        if self._last_eval != self.num_timesteps and not self.stopped_early:
            self._run_evaluation()

    def _run_evaluation(self) -> bool:
        self._last_eval = self.num_timesteps
        started = time.monotonic()
        score, details = self.evaluate(self.model)
        if not math.isfinite(score):
            score = -math.inf
        improved = score > self.best_score + self.min_delta or self.best_timestep < 0
        self.history.append(
            {
                "timestep": self.num_timesteps,
                "score": score if math.isfinite(score) else None,
                "seconds": round(time.monotonic() - started, 2),
                "improved": improved,
            }
        )
        self.logger.record("validation/sharpe", score if math.isfinite(score) else -99.0)
        self.logger.record("validation/best_sharpe", max(score, self.best_score))
        for key, value in details.items():
            if isinstance(value, int | float):
                self.logger.record(f"validation/{key}", value)
        if improved:
            self.best_score, self.best_timestep, self.best_details = score, self.num_timesteps, details
            self._since_best = 0
            self.best_path.parent.mkdir(parents=True, exist_ok=True)
            self.model.save(self.best_path)
        else:
            self._since_best += 1
        if self.verbose:
            print(
                f"[validation] step {self.num_timesteps}: Sharpe {score:.3f} (best {self.best_score:.3f} "
                f"at {self.best_timestep})",
                flush=True,
            )
        if self._since_best >= self.patience and len(self.history) >= self.min_evals:
            self.stopped_early = True
            return False
        return True
