"""Statistics of honest evaluation: the deflated Sharpe ratio and the probability of backtest overfitting.

Deflated Sharpe ratio (Bailey & López de Prado, 2014, "The Deflated Sharpe Ratio:
Correcting for Selection Bias, Backtest Overfitting and Non-Normality")
    ``PSR(SR*) = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))`` is the
    probability that the true Sharpe ratio exceeds ``SR*`` given an observed ``SR`` over
    ``T`` returns with skewness ``g3`` and (non-excess) kurtosis ``g4``. The DSR is the PSR
    against the Sharpe ratio the *best of N trials* would reach by luck alone,
    ``SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))``, where ``V``
    is the variance of the Sharpe ratios across the trials and ``gamma`` the
    Euler-Mascheroni constant. All Sharpe ratios here are **per bar** (not annualised).

Probability of backtest overfitting (Bailey, Borwein, López de Prado & Zhu, 2015,
"The Probability of Backtest Overfitting"), combinatorially symmetric cross-validation
    The ``T x N`` matrix of per-bar returns of N strategy variants is cut into ``S``
    contiguous blocks; every choice of ``S/2`` blocks is an in-sample set, the rest
    out-of-sample. For each split the in-sample best variant's out-of-sample relative
    rank ``w`` gives the logit ``log(w / (1 - w))``; PBO is the share of splits with a
    logit <= 0 (the in-sample winner is at or below the out-of-sample median).
    ``embargo`` drops the first bars of an in-sample block that follows an
    out-of-sample one (López de Prado's purging/embargo against serial correlation).

Combinatorial purged cross-validation (López de Prado, 2018, ch. 7 and 12)
    :func:`cpcv_splits` yields train/test index sets with the train observations
    whose label window overlaps a test block purged, plus an embargo after it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from itertools import combinations, pairwise
from statistics import NormalDist
from typing import Any

import numpy as np

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()


def sharpe_moments(returns: Any) -> tuple[float, float, float, int]:
    """``(per-bar Sharpe, skewness, kurtosis (normal = 3), n)`` of a return series."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.size < 3 or not np.all(np.isfinite(r)):
        raise ValueError(f"returns: need >= 3 finite values in a 1-D array, got shape {r.shape}")
    sd = r.std(ddof=1)
    if sd == 0:
        return 0.0, 0.0, 3.0, int(r.size)
    z = (r - r.mean()) / r.std(ddof=0)
    return float(r.mean() / sd), float(np.mean(z**3)), float(np.mean(z**4)), int(r.size)


def probabilistic_sharpe_ratio(
    observed_sr: float, benchmark_sr: float, n_obs: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """Probability that the true per-bar Sharpe ratio exceeds ``benchmark_sr``.

    >>> round(probabilistic_sharpe_ratio(0.1, 0.0, 101), 4)   # Phi(0.1 * 10 / sqrt(1 + 2 / 4 * 0.01))
    0.8407
    """
    if not (isinstance(n_obs, int | np.integer) and n_obs >= 2):
        raise ValueError(f"n_obs={n_obs!r}: need an integer >= 2")
    if not all(math.isfinite(x) for x in (observed_sr, benchmark_sr, skew, kurtosis)):
        raise ValueError(
            f"observed_sr={observed_sr!r}, benchmark_sr={benchmark_sr!r}, skew={skew!r}, "
            f"kurtosis={kurtosis!r}: must be finite"
        )
    denom = 1.0 - skew * observed_sr + (kurtosis - 1.0) / 4.0 * observed_sr**2
    if denom <= 0:
        raise ValueError(
            f"skew={skew!r}, kurtosis={kurtosis!r} with observed_sr={observed_sr!r}: "
            "the Sharpe ratio's variance estimate is not positive"
        )
    return _N.cdf((observed_sr - benchmark_sr) * math.sqrt(n_obs - 1) / math.sqrt(denom))


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected maximum per-bar Sharpe ratio of ``n_trials`` unskilled trials (0 for one trial)."""
    if not (isinstance(n_trials, int | np.integer) and n_trials >= 1):
        raise ValueError(f"n_trials={n_trials!r}: need an integer >= 1")
    if not (math.isfinite(sr_variance) and sr_variance >= 0):
        raise ValueError(f"sr_variance={sr_variance!r}: must be finite and >= 0")
    if n_trials == 1:
        return 0.0
    z1 = _N.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _N.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe_ratio(
    observed_sr: float,
    n_trials: int,
    sr_variance_across_trials: float,
    n_obs: int,
    skew: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """DSR: the PSR of ``observed_sr`` against the best Sharpe ratio luck gives ``n_trials`` trials.

    Read it as a probability: DSR > 0.95 means the result is unlikely to be the
    product of selection among the trials (at 5 % significance).
    """
    sr0 = expected_max_sharpe(n_trials, sr_variance_across_trials)
    return probabilistic_sharpe_ratio(observed_sr, sr0, n_obs, skew, kurtosis)


# --------------------------------------------------------------------------- PBO


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PBOResult:
    """Outcome of CSCV: one entry per in-sample/out-of-sample split."""

    pbo: float
    logits: np.ndarray
    is_best_performance: np.ndarray  # in-sample metric of the in-sample winner
    oos_performance: np.ndarray  # out-of-sample metric of that same winner
    n_splits: int
    n_strategies: int

    @property
    def n_combinations(self) -> int:
        return int(self.logits.size)

    @property
    def prob_oos_loss(self) -> float:
        """Share of splits where the in-sample winner has a negative out-of-sample metric."""
        return float(np.mean(self.oos_performance < 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "pbo": self.pbo,
            "n_splits": self.n_splits,
            "n_strategies": self.n_strategies,
            "n_combinations": self.n_combinations,
            "prob_oos_loss": self.prob_oos_loss,
            "logit_mean": float(self.logits.mean()),
            "logit_median": float(np.median(self.logits)),
            "logits": self.logits.tolist(),
        }


def _check_matrix(performance: Any, n_splits: int, embargo: int) -> np.ndarray:
    m = np.asarray(performance, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"performance_matrix: need shape (T, N) with N >= 2 strategies, got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("performance_matrix: contains NaN or inf")
    if not (isinstance(n_splits, int) and n_splits >= 2 and n_splits % 2 == 0):
        raise ValueError(f"n_splits={n_splits!r}: need an even integer >= 2")
    if not (isinstance(embargo, int) and embargo >= 0):
        raise ValueError(f"embargo={embargo!r}: need an integer >= 0")
    if m.shape[0] < n_splits * (embargo + 2):
        raise ValueError(
            f"performance_matrix: {m.shape[0]} rows are too few for n_splits={n_splits} and embargo={embargo}"
        )
    return m


def _sharpe_from_moments(n: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    mean = s1 / n
    var = np.maximum(s2 - n * mean**2, 0.0) / (n - 1)
    sd = np.sqrt(var)
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 1e-15)


def _split_metrics_sharpe(
    m: np.ndarray, bounds: list[tuple[int, int]], is_mask: np.ndarray, embargo: int
) -> tuple[np.ndarray, np.ndarray]:
    """In/out-of-sample per-bar Sharpe of every strategy for every split, from block moments."""

    def moments(rows: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        return (
            np.array([r.shape[0] for r in rows], dtype=np.float64)[:, None],
            np.stack([r.sum(axis=0) for r in rows]),
            np.stack([(r**2).sum(axis=0) for r in rows]),
        )

    full = moments([m[a:b] for a, b in bounds])
    head = moments([m[a : a + embargo] for a, b in bounds])
    oos_mask = ~is_mask
    after_oos = is_mask & np.roll(oos_mask, 1, axis=1)
    after_oos[:, 0] = False  # the first block follows nothing
    mi, mo, mh = is_mask.astype(np.float64), oos_mask.astype(np.float64), after_oos.astype(np.float64)
    is_perf = _sharpe_from_moments(*(mi @ f - mh @ h for f, h in zip(full, head, strict=True)))
    oos_perf = _sharpe_from_moments(*(mo @ f for f in full))
    return is_perf, oos_perf


def _split_metrics_generic(
    m: np.ndarray, bounds: list[tuple[int, int]], is_mask: np.ndarray, embargo: int, metric: Callable[[np.ndarray], Any]
) -> tuple[np.ndarray, np.ndarray]:
    is_rows, oos_rows = [], []
    for row in is_mask:
        is_idx = [
            np.arange(a + (embargo if k > 0 and not row[k - 1] else 0), b) for k, (a, b) in enumerate(bounds) if row[k]
        ]
        oos_idx = [np.arange(a, b) for k, (a, b) in enumerate(bounds) if not row[k]]
        is_rows.append(np.asarray(metric(m[np.concatenate(is_idx)]), dtype=np.float64))
        oos_rows.append(np.asarray(metric(m[np.concatenate(oos_idx)]), dtype=np.float64))
    return np.stack(is_rows), np.stack(oos_rows)


def pbo_cscv(
    performance_matrix: Any, n_splits: int = 16, *, embargo: int = 0, metric: Callable[[np.ndarray], Any] | None = None
) -> PBOResult:
    """Probability of backtest overfitting of choosing the in-sample best of N strategies.

    ``performance_matrix[t, n]`` is strategy ``n``'s return on bar ``t`` (all on the same
    bars). ``metric`` maps a ``(rows, N)`` sub-matrix to N scores; the default is the
    per-bar Sharpe ratio. ``n_splits = 16`` gives 12,870 splits.
    """
    m = _check_matrix(performance_matrix, n_splits, embargo)
    n_strat = m.shape[1]
    edges = np.linspace(0, m.shape[0], n_splits + 1).astype(int)
    bounds = [(int(a), int(b)) for a, b in pairwise(edges)]
    combos = np.array(list(combinations(range(n_splits), n_splits // 2)))
    is_mask = np.zeros((combos.shape[0], n_splits), dtype=bool)
    is_mask[np.arange(combos.shape[0])[:, None], combos] = True
    if metric is None:
        is_perf, oos_perf = _split_metrics_sharpe(m, bounds, is_mask, embargo)
    else:
        is_perf, oos_perf = _split_metrics_generic(m, bounds, is_mask, embargo, metric)
    rows = np.arange(is_perf.shape[0])
    best = np.argmax(is_perf, axis=1)
    oos_best = oos_perf[rows, best]
    below = np.sum(oos_perf < oos_best[:, None], axis=1)
    ties = np.sum(oos_perf == oos_best[:, None], axis=1) - 1  # other strategies tied with the winner
    rank = 1.0 + below + 0.5 * ties  # 1 = worst, N = best
    omega = rank / (n_strat + 1.0)
    logits = np.log(omega / (1.0 - omega))
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        is_best_performance=is_perf[rows, best],
        oos_performance=oos_best,
        n_splits=n_splits,
        n_strategies=n_strat,
    )


# ------------------------------------------------------------------------ CPCV


def purged_train_indices(
    n_obs: int, test_ranges: Sequence[tuple[int, int]], *, label_horizon: int = 0, embargo: int = 0
) -> np.ndarray:
    """Training rows left after removing the test blocks, purging and the embargo.

    Observation ``i`` carries a label over rows ``[i, i + label_horizon]``. A training
    row is purged when its label window overlaps a test block's label windows
    (``[a - label_horizon, b - 1 + label_horizon]`` for test rows ``[a, b)``); the
    ``embargo`` rows after that are dropped too.

    >>> purged_train_indices(10, [(4, 6)], label_horizon=1, embargo=1).tolist()
    [0, 1, 2, 8, 9]
    """
    if label_horizon < 0 or embargo < 0:
        raise ValueError(f"label_horizon={label_horizon!r}, embargo={embargo!r}: must be >= 0")
    keep = np.ones(n_obs, dtype=bool)
    for a, b in test_ranges:
        if not 0 <= a < b <= n_obs:
            raise ValueError(f"test range ({a}, {b}): must satisfy 0 <= start < end <= n_obs={n_obs}")
        keep[max(0, a - label_horizon) : min(n_obs, b + label_horizon + embargo)] = False
    return np.flatnonzero(keep)


def cpcv_splits(
    n_obs: int, n_groups: int, n_test_groups: int, *, label_horizon: int = 0, embargo: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """All combinatorial purged CV splits: ``C(n_groups, n_test_groups)`` (train, test) pairs."""
    if not (isinstance(n_groups, int) and isinstance(n_test_groups, int) and 1 <= n_test_groups < n_groups):
        raise ValueError(f"n_groups={n_groups!r}, n_test_groups={n_test_groups!r}: need 1 <= k < N")
    if n_obs < n_groups:
        raise ValueError(f"n_obs={n_obs!r}: fewer observations than n_groups={n_groups}")
    edges = np.linspace(0, n_obs, n_groups + 1).astype(int)
    out = []
    for combo in combinations(range(n_groups), n_test_groups):
        ranges = [(int(edges[g]), int(edges[g + 1])) for g in combo]
        test = np.concatenate([np.arange(a, b) for a, b in ranges])
        out.append((purged_train_indices(n_obs, ranges, label_horizon=label_horizon, embargo=embargo), test))
    return out


def n_backtest_paths(n_groups: int, n_test_groups: int) -> int:
    """Number of full backtest paths CPCV yields: ``k / N * C(N, k) = C(N - 1, k - 1)``."""
    return math.comb(n_groups - 1, n_test_groups - 1)
