"""The observation layout of the specialists: a window of FeatureSet rows plus the position state.

This module is the single definition of what a specialist sees, shared by the training envs
(``envs/trading_env.py``) and live inference (the EnsembleManager), so a policy is fed in
production exactly what it was trained on.

Layout (flat float32 vector of length ``window * k + 4``)::

    [ row[t - window + 1] ... row[t] ]   window FeatureSet rows, oldest first, k features each
    [ exposure, unrealised_pnl, bars_in_position, drawdown ]   the position state

Position state (:func:`position_state`; bounds :data:`STATE_LOW` / :data:`STATE_HIGH`):

* ``exposure``: position value / equity, clipped to [-3, 3] (0 when equity <= 0);
* ``unrealised_pnl``: equity / equity when the position was opened - 1, clipped to [-1, 5]
  (0 when flat);
* ``bars_in_position``: ``b / (b + holding_scale_bars)`` in [0, 1) (``b`` = bars held);
* ``drawdown``: from the equity peak, clipped to [0, 1].

Live code usually knows the state directly (a :class:`PositionState`), not the env's
account; :meth:`PositionState.vector` applies the same scaling and clipping.

>>> rows = np.arange(6, dtype=np.float32).reshape(3, 2)
>>> build_observation(rows[1:], FLAT.vector()).tolist()
[2.0, 3.0, 4.0, 5.0, 0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from l2_tactical.execution import SCALAR

STATE_NAMES = ("exposure", "unrealised_pnl", "bars_in_position", "drawdown")
STATE_LOW = (-3.0, -1.0, 0.0, 0.0)
STATE_HIGH = (3.0, 5.0, 1.0, 1.0)
N_STATE = len(STATE_NAMES)
#: default scale of the bars-in-position observation (the envs' ``holding_scale_bars``)
HOLDING_SCALE_BARS = 24.0


def position_state(qty: Any, close: Any, equity: Any, entry_equity: Any, bars: Any, drawdown: Any,
                   holding_scale_bars: float = HOLDING_SCALE_BARS, ops: Any = SCALAR) -> tuple[Any, Any, Any, Any]:
    """The four position-state observations from an account (scalars, or arrays with ``ops=np``)."""
    solvent = equity > 0.0
    exposure = ops.where(solvent, qty * close / ops.where(solvent, equity, 1.0), 0.0)
    upnl = ops.where(bars > 0.0, equity / entry_equity - 1.0, 0.0)
    return (ops.clip(exposure, STATE_LOW[0], STATE_HIGH[0]), ops.clip(upnl, STATE_LOW[1], STATE_HIGH[1]),
            bars / (bars + holding_scale_bars), ops.clip(drawdown, STATE_LOW[3], STATE_HIGH[3]))


@dataclass(frozen=True, slots=True)
class PositionState:
    """What live code knows about a symbol's position (raw units; see the module docstring).

    >>> PositionState(exposure=0.5, unrealised_pnl=0.02, bars_in_position=24, drawdown=0.01).vector().tolist()
    [0.5, 0.019999999552965164, 0.5, 0.009999999776482582]
    """

    exposure: float = 0.0  # position value / equity
    unrealised_pnl: float = 0.0  # equity / equity at entry - 1
    bars_in_position: float = 0.0
    drawdown: float = 0.0  # from the equity peak, in [0, 1]

    def __post_init__(self) -> None:
        for name in STATE_NAMES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"PositionState.{name}={value!r}: must be a finite number")
        if self.bars_in_position < 0:
            raise ValueError(f"PositionState.bars_in_position={self.bars_in_position!r}: must be >= 0")

    def vector(self, holding_scale_bars: float = HOLDING_SCALE_BARS) -> np.ndarray:
        """float32 ``[4]`` scaled and clipped exactly like :func:`position_state`."""
        b = float(self.bars_in_position)
        upnl = self.unrealised_pnl if b > 0 else 0.0
        return np.array([min(max(self.exposure, STATE_LOW[0]), STATE_HIGH[0]),
                         min(max(upnl, STATE_LOW[1]), STATE_HIGH[1]),
                         b / (b + holding_scale_bars),
                         min(max(self.drawdown, STATE_LOW[3]), STATE_HIGH[3])], dtype=np.float32)

    def key(self) -> tuple[float, float, float, float]:
        """Hashable identity (prediction cache key)."""
        return (self.exposure, self.unrealised_pnl, self.bars_in_position, self.drawdown)


FLAT = PositionState()


def observation_size(window: int, n_features: int) -> int:
    return window * n_features + N_STATE


def infer_window(obs_size: int, n_features: int) -> int:
    """The window a policy with ``obs_size`` inputs was trained on; ValueError if it does not fit.

    >>> infer_window(16 * 19 + 4, 19)
    16
    """
    body = obs_size - N_STATE
    if n_features <= 0 or body <= 0 or body % n_features:
        raise ValueError(f"observation size {obs_size} is not window * {n_features} features + {N_STATE} state")
    return body // n_features


def observation_bounds(feature_low: np.ndarray, feature_high: np.ndarray, window: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """float32 (low, high) of the observation: the FeatureSet bounds tiled ``window`` times, then the state's."""
    low = np.concatenate([np.tile(np.asarray(feature_low, np.float32), window), np.asarray(STATE_LOW, np.float32)])
    high = np.concatenate([np.tile(np.asarray(feature_high, np.float32), window),
                           np.asarray(STATE_HIGH, np.float32)])
    return low.astype(np.float32), high.astype(np.float32)


def build_observation(rows: np.ndarray, state: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Flatten ``rows`` (``[window, k]``, oldest first) and append ``state`` (``[4]``)."""
    wk = rows.size
    if out is None:
        out = np.empty(wk + N_STATE, dtype=np.float32)
    out[:wk] = rows.reshape(-1)
    out[wk:] = state
    return out


def window_observations(features: np.ndarray, rows: np.ndarray, window: int, state: np.ndarray) -> np.ndarray:
    """Observations ``[len(rows), window * k + 4]`` for the given end rows of a feature matrix (batch path).

    Every end row must have ``window - 1`` rows before it.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and rows.min() < window - 1:
        raise ValueError(f"row {int(rows.min())} has fewer than window={window} rows up to it")
    k = features.shape[1]
    idx = rows[:, None] + np.arange(-window + 1, 1)[None, :]
    out = np.empty((rows.size, window * k + N_STATE), dtype=np.float32)
    out[:, : window * k] = features[idx].reshape(rows.size, window * k)
    out[:, window * k:] = np.asarray(state, dtype=np.float32)
    return out


class ObservationWindow:
    """The last ``window`` rows of selected feature columns, kept for live observations.

    ``run`` counts the consecutive pushed rows whose columns were all ready: the window can be
    shown to its specialist once ``run >= window``.
    """

    __slots__ = ("_count", "_obs", "_rows", "columns", "run", "window")

    def __init__(self, columns: np.ndarray | list[int], window: int) -> None:
        if window < 1:
            raise ValueError(f"window={window!r}: must be >= 1")
        self.columns = np.asarray(columns, dtype=np.int64)
        self.window = window
        self._rows = np.zeros((window, self.columns.size), dtype=np.float32)
        self._count = 0
        self.run = 0
        self._obs = np.empty(observation_size(window, self.columns.size), dtype=np.float32)

    @property
    def full(self) -> bool:
        return self._count >= self.window

    def push(self, row: np.ndarray, ready: np.ndarray) -> None:
        """Append the full FeatureSet row of a new bar and its readiness flags (only this window's
        columns are kept)."""
        r = self._rows
        r[:-1] = r[1:]
        r[-1] = row[self.columns]
        self._count += 1
        self.run = self.run + 1 if ready[self.columns].all() else 0

    def observation(self, state: np.ndarray) -> np.ndarray:
        """The current observation (a reused buffer: copy it to keep it)."""
        return build_observation(self._rows, state, self._obs)


class MatrixWindow:
    """:class:`ObservationWindow` over a precomputed feature matrix read row by row (backtests).

    The window's columns are copied out of the matrix once (float32, contiguous), so an observation is
    one slice of them, and the ready runs are counted once (:func:`ready_runs`); :meth:`push` only
    follows ``feed``'s cursor (a :class:`~l2_tactical.technical.feature_updater.MatrixFeed`, which
    refuses any bar that is not its next row). The observations equal an ObservationWindow's pushed
    the same rows (``tests/test_ensemble_observation.py``).
    """

    __slots__ = ("_feed", "_obs", "_runs", "_sub", "columns", "run", "window")

    def __init__(self, feed: Any, values: np.ndarray, ready: np.ndarray, columns: np.ndarray | list[int],
                 window: int) -> None:
        if window < 1:
            raise ValueError(f"window={window!r}: must be >= 1")
        self.columns = np.asarray(columns, dtype=np.int64)
        self.window = window
        self._feed = feed
        self._sub = np.ascontiguousarray(values[:, self.columns], dtype=np.float32)
        self._runs: list[int] = ready_runs(np.asarray(ready[:, self.columns].all(axis=1))).tolist()
        self.run = 0
        self._obs = np.empty(observation_size(window, self.columns.size), dtype=np.float32)

    @property
    def full(self) -> bool:
        return self._feed.position + 1 >= self.window

    def push(self, row: np.ndarray, ready: np.ndarray) -> None:
        """The feed moved to its next row (``row`` / ``ready`` are that row: already in the matrix)."""
        self.run = self._runs[self._feed.position]

    def observation(self, state: np.ndarray) -> np.ndarray:
        """The current observation (a reused buffer: copy it to keep it)."""
        end = self._feed.position + 1
        return build_observation(self._sub[end - self.window:end], state, self._obs)


@dataclass(frozen=True)
class FeaturePlan:
    """One FeatureSet for a base timeframe serving every specialist (plus the technical sources).

    ``feature_set`` is ``base_features`` followed by each usable specialist's features not already
    in it; ``columns[name]`` are the specialist's columns in its training order. A specialist is
    excluded (``excluded[name]`` says why) when its features, rebuilt on this base timeframe, do
    not reproduce the schema hash it was trained with (other base timeframe or other features).
    """

    feature_set: Any  # l2_tactical.data.features.FeatureSet
    columns: dict[str, np.ndarray]
    windows: dict[str, int]
    excluded: dict[str, str]
    index: dict[str, int]
    names: tuple[str, ...] = ()  # feature_set.names, cached (the property rebuilds it)
    macd_columns: dict[str, str] = field(default_factory=dict)  # timeframe -> its MACD histogram column
    bar_ns: int = 0


def plan_features(base_features: Any, specialists: Any) -> FeaturePlan:
    """Build the :class:`FeaturePlan` of ``base_features`` (a FeatureSet) and ``specialists``
    (objects with ``name``, ``feature_names``, ``feature_schema_hash``, ``window``)."""
    from l2_tactical.data.features import FeatureSet
    from l2_tactical.technical.feature_spec import FeatureError, parse_feature

    base = base_features.base_timeframe
    specs = list(base_features.features)
    excluded: dict[str, str] = {}
    usable = []
    for spec in specialists:
        try:
            own = FeatureSet(spec.feature_names, base)
        except (FeatureError, ValueError) as exc:
            excluded[spec.name] = f"its features cannot be built on {base} bars: {exc}"
            continue
        if spec.feature_schema_hash and own.schema_hash != spec.feature_schema_hash:
            excluded[spec.name] = (f"trained on another FeatureSet (schema hash {spec.feature_schema_hash[:12]}); "
                                   f"its features on {base} bars hash to {own.schema_hash[:12]}")
            continue
        usable.append(spec)
        specs += [parse_feature(n) for n in spec.feature_names if parse_feature(n) not in specs]
    union = FeatureSet(specs, base)
    index = {n: i for i, n in enumerate(union.names)}
    columns = {s.name: np.array([index[n] for n in s.feature_names], dtype=np.int64) for s in usable}
    names = union.names
    macd = {tf: f"macd_hist_12_26_9@{tf}" for tf in union.timeframes if f"macd_hist_12_26_9@{tf}" in index}
    from l2_tactical.data.resample import timeframe_ns

    return FeaturePlan(union, columns, {s.name: int(s.window) for s in usable}, excluded, index, names, macd,
                       timeframe_ns(base))


def ready_runs(ready: np.ndarray) -> np.ndarray:
    """Per row, how many consecutive rows up to it are ready (``ready``: bool ``[n]``).

    >>> ready_runs(np.array([True, True, False, True])).tolist()
    [1, 2, 0, 1]
    """
    ok = np.asarray(ready, dtype=bool).reshape(-1)
    index = np.arange(ok.shape[0], dtype=np.int64)
    last_gap = np.maximum.accumulate(np.where(ok, -1, index)) if ok.size else index  # last row not ready so far
    return np.where(ok, index - last_gap, 0).astype(np.int64)
