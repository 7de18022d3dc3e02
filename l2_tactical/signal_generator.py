"""SignalGenerator: specialists + technical + pattern sources -> filtered TacticalSignals (seed 000's API)::

    gen = SignalGenerator(L2Config.from_file("config/l2_config.yaml"))
    signals = gen.generate_signals(market_data=df, symbol="BTCUSDT", regime_context={"regime": "trending"})
    decision = gen.on_bar("BTCUSDT", (open_time, o, h, l, c, v))   # streaming, same numbers as the batch path

Per closed bar (the batch and the streaming path run the same :meth:`SignalGenerator._decide`):

1. **Features**: one FeatureSet per base timeframe, the ``full`` preset plus every feature a
   loaded specialist was trained on (:func:`~l2_tactical.finrl_models.feature_processor.plan_features`);
   batch ``build`` for :meth:`generate_signals` / :meth:`decisions`, the incremental updater
   for :meth:`on_bar` (equal row for row). A backtest calls :meth:`precompute` first: on_bar
   then reads that batch matrix row by row (a cursor, no indicator update) with the same decisions.
2. **AI_MODEL**: the :class:`EnsembleManager` votes; a specialist votes once its features have
   been ready for its whole observation window. A specialist whose FeatureSet hash differs from
   the data's (e.g. trained on 1h bars, fed 1m bars) is unavailable on that data, with the reason.
3. **TECHNICAL** / **PATTERN**: :func:`l2_tactical.technical.signals.technical_call` (with the
   multi-timeframe MACD consensus) and :func:`~l2_tactical.technical.signals.pattern_call`,
   once every feature is ready: numbers; the TacticalSignal is built only if the call is kept.
4. **COMPOSITE** = weighted vote of the sources with ``signals.ai_model_weight``,
   ``technical_weight``, ``pattern_weight``. A silent source votes 0 with confidence 0; the AI
   source votes 0 when its consensus is below ``ensemble.consensus_threshold``; when no
   specialist answers, the AI source drops out and the composite is technical + pattern only
   (metadata ``ai_status``). Composite confidence = sum(W_s c_s agreement_s) / sum(W_s).
5. **Quality filters**: a directional signal needs ``strength >= signals.min_signal_strength``;
   AI_MODEL also ``confidence >= ai_model.prediction_threshold`` and consensus >=
   ``ensemble.consensus_threshold``; COMPOSITE also ``confidence >= ensemble.confidence_threshold``.
6. **Conflicts**: if LONG and SHORT both survive, only the signals on the composite's side are
   kept (none when the composite did not pass); the overruled ones are named in ``reasons``.

Signals carry the bar's close time and expire ``signals.signal_expiry_minutes`` later. Adaptive
weights use each specialist's realised return over the last ``ensemble.performance_window``
bars (its previous vote x this bar's close-to-close return; 0 when it did not vote). The
prediction cache key is (symbol, bar time, position). Direction and conviction only: no sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from l2_tactical.clock import Clock, SystemClock
from l2_tactical.config import L2Config
from l2_tactical.data.features import feature_set
from l2_tactical.data.resample import TIMEFRAME_SECONDS, timeframe_ns
from l2_tactical.errors import DataError
from l2_tactical.finrl_models.ensemble_manager import EnsembleManager
from l2_tactical.finrl_models.feature_processor import (
    FLAT,
    FeaturePlan,
    MatrixWindow,
    ObservationWindow,
    PositionState,
    build_observation,
    plan_features,
    ready_runs,
)
from l2_tactical.messages import TacticalSignal
from l2_tactical.signal_composite import Composer, Context, Decision, parse_regime
from l2_tactical.technical.feature_updater import MatrixFeed, ohlcv_arrays
from l2_tactical.technical.multi_timeframe import timeframe_consensus
from l2_tactical.technical.signals import SourceCall, pattern_call, pattern_columns, technical_call

__all__ = ["Context", "Decision", "SignalGenerator", "infer_timeframe", "parse_regime"]

_NS_TO_TF = {s * 1_000_000_000: tf for tf, s in TIMEFRAME_SECONDS.items()}


@dataclass
class _State:
    """What one symbol carries from bar to bar."""

    plan: FeaturePlan
    tracker: Any
    updater: Any = None
    windows: dict[str, ObservationWindow | MatrixWindow] = field(default_factory=dict)
    last_votes: dict[str, float] = field(default_factory=dict)
    prev_close: float | None = None
    prev_row: dict[str, float] | None = None


class SignalGenerator:
    """See the module docstring. ``ensemble`` defaults to loading ``config.ensemble.models``."""

    def __init__(self, config: L2Config, *, ensemble: EnsembleManager | None = None, clock: Clock | None = None,
                 timeframe: str | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.ensemble = ensemble or EnsembleManager.from_config(config, clock=self.clock)
        self.timeframe = timeframe or config.timeframes.primary
        timeframe_ns(self.timeframe)
        self._plans: dict[str, FeaturePlan] = {}
        self._states: dict[str, _State] = {}
        self._composer = Composer(config)
        self._vectors: dict[tuple, np.ndarray] = {}
        self._feeds: dict[str, tuple[str, MatrixFeed]] = {}
        self._pattern_columns: dict[str, tuple[tuple[str, str], ...]] = {}

    # ------------------------------------------------------------------ public API
    def generate_signals(self, market_data: Any, symbol: str, regime_context: Any = None,
                         position: PositionState | None = None) -> list[TacticalSignal]:
        """Signals for the last closed bar of ``market_data`` (OHLCV frame indexed by UTC open time)."""
        return list(self.decisions(market_data, symbol, regime_context, position, last=1)[-1].signals)

    def decisions(self, market_data: Any, symbol: str, regime_context: Any = None,
                  position: PositionState | None = None, *, last: int | None = None,
                  progress: Callable[[int], None] | None = None) -> list[Decision]:
        """Batch path: the decision of each of the ``last`` bars (all bars when None).

        ``progress(k)`` is called after each replayed bar with the number of bars still to go.
        """
        ctx, pos = parse_regime(regime_context, symbol), position or FLAT
        base = infer_timeframe(market_data)
        plan = self._plan(base)
        _, ts, _ = ohlcv_arrays(market_data, base)
        n = ts.shape[0]
        if n == 0:
            raise DataError(f"market_data for {symbol} has no bars")
        matrix = plan.feature_set.build(market_data)
        close = getattr(market_data, "frame", market_data)["close"].to_numpy(dtype=np.float64)
        runs = {name: ready_runs(matrix.ready[:, cols].all(axis=1)) for name, cols in plan.columns.items()}
        all_ready = matrix.ready.all(axis=1)
        last = n if last is None else max(1, min(int(last), n))
        start = max(0, n - last - self.config.ensemble.performance_window - 1)
        state = _State(plan=plan, tracker=self.ensemble.new_tracker())
        out: list[Decision] = []
        for t in range(start, n):
            obs = {name: build_observation(matrix.values[t - plan.windows[name] + 1:t + 1, cols],
                                           self._state_vector(pos, name))
                   if runs[name][t] >= plan.windows[name] else None for name, cols in plan.columns.items()}
            d = self._decide(state, symbol, int(ts[t]), float(close[t]), matrix.values[t], bool(all_ready[t]),
                             obs, ctx, pos)
            if t >= n - last:
                out.append(d)
            if progress is not None:
                progress(n - 1 - t)
        return out

    def warm_up(self, symbol: str, history: Any, regime_context: Any = None,
                position: PositionState | None = None) -> None:
        """Start (or restart) ``symbol``'s stream on ``history``; :meth:`on_bar` continues after its last bar."""
        base = infer_timeframe(history)
        _, ts, cols = ohlcv_arrays(history, base)
        state = self._new_state(base, symbol)
        self._states[symbol] = state
        replay_from = max(0, ts.shape[0] - self.config.ensemble.performance_window - 1)
        for i, bar in enumerate(zip(ts.tolist(), *(c.tolist() for c in cols), strict=True)):
            if i >= replay_from:
                self._stream(state, symbol, bar, regime_context, position)
            else:
                state.updater.advance(*bar)
                self._push_windows(state, state.updater.row())
                state.prev_close = bar[4]

    def precompute(self, symbol: str, history: Any) -> None:
        """Backtest mode: build ``symbol``'s features for ``history`` in one batch; the next
        :meth:`warm_up` / :meth:`on_bar` of ``symbol`` restart its stream and read the rows from that
        matrix instead of updating features bar by bar. Same decisions (the batch rows equal the
        incremental ones); a bar that is not ``history``'s next one raises DataError."""
        base = infer_timeframe(history)
        plan = self._plan(base)
        _, ts, cols = ohlcv_arrays(history, base)
        matrix = plan.feature_set.build(history)
        self._feeds[symbol] = (base, MatrixFeed(matrix.values, matrix.ready, plan.names, base, ts, cols))
        self._states.pop(symbol, None)

    def on_bar(self, symbol: str, candle: Any, regime_context: Any = None,
               position: PositionState | None = None) -> Decision:
        """Streaming path: feed one closed bar ``(open_time, open, high, low, close, volume)``; that bar's decision."""
        state = self._states.get(symbol)
        if state is None:
            state = self._states[symbol] = self._new_state(self.timeframe, symbol)
        return self._stream(state, symbol, _candle_tuple(candle), regime_context, position)

    # ------------------------------------------------------------------ shared per-bar step
    def _stream(self, state: _State, symbol: str, bar: tuple, regime_context: Any,
                position: PositionState | None) -> Decision:
        ctx, pos = parse_regime(regime_context, symbol), position or FLAT
        state.updater.advance(*bar)
        row = state.updater.row()
        self._push_windows(state, row)
        key = pos.key()
        state_vector = self._state_vector
        obs = {name: w.observation(state_vector(pos, name, key)) if w.run >= w.window else None
               for name, w in state.windows.items()}
        # a streamed bar is never asked twice (the updater refuses it), so no prediction cache here
        return self._decide(state, symbol, bar[0], bar[4], row, state.updater.is_ready, obs, ctx, pos, cache=False)

    def _push_windows(self, state: _State, row: np.ndarray) -> None:
        ready = state.updater.ready
        for w in state.windows.values():
            w.push(row, ready)

    def _decide(self, state: _State, symbol: str, ts_ns: int, close: float, row: np.ndarray, ready: bool,
                obs: Mapping[str, np.ndarray | None], ctx: Context, pos: PositionState, cache: bool = True
                ) -> Decision:
        self._record(state, close)
        when = datetime.fromtimestamp((ts_ns + state.plan.bar_ns) / 1e9, tz=timezone.utc)
        ens = self.ensemble.predict(obs, tracker=state.tracker, regime=ctx.regime, strength=ctx.strength,
                                    key=(symbol, ts_ns, pos.key()) if cache else None)
        state.last_votes = {v.name: (v.exposure if v.answered else 0.0) for v in ens.votes}
        tech = patt = None
        if ready:
            values = dict(zip(state.plan.names, row.tolist(), strict=True))
            tech, patt = self._technical(state, symbol, values, close, when)
            state.prev_row = values
        return self._composer.compose(symbol, when, close, ens, tech, patt, ctx)

    def _record(self, state: _State, close: float) -> None:
        if state.prev_close is not None and state.last_votes:
            state.tracker.record(state.last_votes, close / state.prev_close - 1.0)
        state.prev_close = close

    def _technical(self, state: _State, symbol: str, values: dict[str, float], close: float, when: datetime
                   ) -> tuple[SourceCall | None, SourceCall | None]:
        """The TECHNICAL and PATTERN calls as numbers; a message is built only for a call that is kept."""
        base = state.plan.feature_set.base_timeframe
        macd = {tf: values[col] for tf, col in state.plan.macd_columns.items()}
        consensus = None
        if len(macd) > 1:
            consensus = timeframe_consensus(macd, alignment_threshold=self.config.timeframes.alignment_threshold)
        tech = technical_call(values, timeframe=base, previous=state.prev_row, consensus=consensus)
        columns = self._pattern_columns.get(base)
        if columns is None:
            columns = self._pattern_columns[base] = pattern_columns(state.plan.names, base)
        return tech, pattern_call(values, timeframe=base, columns=columns)

    # ------------------------------------------------------------------ state
    def _plan(self, base: str) -> FeaturePlan:
        if base not in self._plans:
            self._plans[base] = plan_features(feature_set("full", base), self.ensemble.available)
            for name, why in self._plans[base].excluded.items():
                self.ensemble.unavailable.setdefault(f"{name}@{base}", why)
        return self._plans[base]

    def _new_state(self, base: str, symbol: str | None = None) -> _State:
        plan = self._plan(base)
        feed = self._feeds.get(symbol) if symbol is not None else None
        if feed is not None and feed[0] == base:
            del self._feeds[symbol]  # type: ignore[arg-type]
            updater: Any = feed[1]
        else:
            updater = plan.feature_set.incremental()
        state = _State(plan=plan, tracker=self.ensemble.new_tracker(), updater=updater)
        if isinstance(updater, MatrixFeed):  # the windows are slices of the precomputed matrix
            state.windows = {n: MatrixWindow(updater, updater.values, updater.ready_matrix, cols, plan.windows[n])
                             for n, cols in plan.columns.items()}
        else:
            state.windows = {n: ObservationWindow(cols, plan.windows[n]) for n, cols in plan.columns.items()}
        return state

    def _state_vector(self, pos: PositionState, name: str, pos_key: tuple | None = None) -> np.ndarray:
        """The position-state observation for specialist ``name`` (memoised: positions repeat bar after bar;
        ``pos_key``: ``pos.key()`` when the caller has it)."""
        spec = self.ensemble.specialists.get(name)
        scale = spec.holding_scale_bars if spec is not None else 24.0
        key = (pos.key() if pos_key is None else pos_key, scale)
        vec = self._vectors.get(key)
        if vec is None:
            if len(self._vectors) > 1024:
                self._vectors.clear()
            vec = self._vectors[key] = pos.vector(scale)
        return vec


def infer_timeframe(market_data: Any) -> str:
    """The bar timeframe of a frame (``Candles.timeframe`` when given): the smallest step between bars."""
    tf = getattr(market_data, "timeframe", None)
    if isinstance(tf, str):
        return tf
    frame = getattr(market_data, "frame", market_data)
    try:
        ts = np.asarray(frame.index.asi8 if hasattr(frame.index, "asi8") else [], dtype=np.int64)
    except (AttributeError, TypeError):
        ts = np.zeros(0, np.int64)
    steps = np.diff(ts[:500])
    steps = steps[steps > 0]
    unit = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}.get(getattr(frame.index, "unit", "ns"), 1)
    step = int(steps.min()) * unit if steps.size else 0
    if step not in _NS_TO_TF:
        raise DataError(f"cannot tell the bar timeframe of market_data: smallest step between bars is "
                        f"{step / 1e9:g} s (known: {', '.join(TIMEFRAME_SECONDS)})", column="timestamp")
    return _NS_TO_TF[step]


def _candle_tuple(candle: Any) -> tuple[int, float, float, float, float, float]:
    """``(open_time_ns, o, h, l, c, v)`` from a tuple, a mapping with ``timestamp`` or a Series named by time."""
    if type(candle) is tuple and len(candle) == 6:  # already that tuple (the loop's): returned as it is
        ts, o, h, lo, c, v = candle
        if type(ts) is int and type(o) is float and type(h) is float and type(lo) is float and type(c) is float \
                and type(v) is float:
            return candle
    keys = ("open", "high", "low", "close", "volume")
    if isinstance(candle, tuple | list) and len(candle) == 6:
        ts, *values = candle
    elif isinstance(candle, pd.Series):
        ts, values = candle.get("timestamp", candle.name), [candle.get(k) for k in keys]
    elif isinstance(candle, Mapping):
        ts, values = candle.get("timestamp"), [candle.get(k) for k in keys]
    else:
        raise DataError(f"candle {candle!r}: expected (timestamp, open, high, low, close, volume)")
    if ts is None or any(v is None for v in values):
        raise DataError(f"candle {candle!r}: needs timestamp, open, high, low, close and volume")
    if isinstance(ts, int | np.integer):
        ns = int(ts)
    else:
        stamp = pd.Timestamp(ts)
        ns = int((stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).value)
    o, h, lo, c, v = (float(x) for x in values)
    return ns, o, h, lo, c, v
