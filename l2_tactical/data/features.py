"""The one feature pipeline: a declared :class:`FeatureSet`, built in batch or bar by bar.

A ``FeatureSet`` is an ordered list of :class:`FeatureSpec` (a feature *kind*
from :mod:`l2_tactical.technical.feature_kinds`, a timeframe, parameters) on a
*base* timeframe (the bars you feed: 1m, or 1h). It gives

* ``build(frame)`` -> :class:`FeatureMatrix`: C-contiguous float32
  ``[n_bars, n_features]`` for a whole history (training, backtests), and
* ``incremental()`` -> :class:`FeatureUpdater`: ``update(bar)`` takes one
  closed base bar and returns that bar's row, equal to the batch row
  (``tests/test_features_equality.py`` checks every row of the real data).

Conventions (both paths):

* **Closed bars only.** Row ``t`` uses only candles closed at or before the
  close of base bar ``t``. A higher-timeframe feature takes the value of the
  last higher-timeframe bar visible at ``t`` (see
  :mod:`l2_tactical.data.resample`): on 1m bars, a 1h feature changes on the
  row of the hh:59 bar and holds for the next 59 rows.
* **Warm-up is explicit.** Until a feature has enough bars of its timeframe
  (its ``lookback``) it is *not ready*: its value is the documented
  ``neutral`` of its kind (e.g. 0.5 for RSI/100, 0 for returns) and
  ``ready[t, j]`` is False. ``valid_from`` is the first row where every
  feature is ready. No nan or inf ever leaves this module.
* **Scale-free and bounded.** Each kind documents its normalisation
  (percent of close, ATR multiples, /100 for oscillators) and finite
  ``bounds``; values are clipped to them, so observation spaces can use
  ``FeatureSet.lower`` / ``FeatureSet.upper``.
* **Schema hash** over the base timeframe and every feature's kind,
  timeframe and parameters, in order.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from l2_tactical.data.resample import resample_arrays, timeframe_ns
from l2_tactical.errors import DataError
from l2_tactical.technical.bars import BatchBars
from l2_tactical.technical.feature_kinds import KINDS
from l2_tactical.technical.feature_spec import FeatureError, FeatureSpec, feature, parse_feature
from l2_tactical.technical.feature_updater import FeatureUpdater, ohlcv_arrays

__all__ = [
    "FeatureError",
    "FeatureMatrix",
    "FeatureSet",
    "FeatureSpec",
    "FeatureUpdater",
    "feature",
    "feature_set",
    "parse_feature",
]


@dataclass(frozen=True)
class FeatureMatrix:
    """Features of a whole history; row ``t`` belongs to base bar ``index[t]``."""

    values: np.ndarray  # float32 [n_bars, n_features], C-contiguous, finite, within bounds
    ready: np.ndarray  # bool [n_bars, n_features]: False while a feature warms up
    names: tuple[str, ...]
    index: pd.DatetimeIndex
    valid_from: int  # first row where every feature is ready (n_bars if never)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=self.index, columns=list(self.names))


class FeatureSet:
    """An ordered, hashable declaration of features on a base timeframe."""

    def __init__(self, features: Iterable[FeatureSpec | str], base_timeframe: str) -> None:
        timeframe_ns(base_timeframe)
        specs = tuple(f if isinstance(f, FeatureSpec) else parse_feature(f) for f in features)
        if not specs:
            raise FeatureError("a FeatureSet needs at least one feature")
        seen: set[str] = set()
        for spec in specs:
            if spec.column in seen:
                raise FeatureError(f"feature {spec.column!r} is declared twice")
            seen.add(spec.column)
            _check_timeframe(spec, base_timeframe)
        self.features = specs
        self.base_timeframe = base_timeframe

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.column for s in self.features)

    @property
    def timeframes(self) -> tuple[str, ...]:
        """Timeframes used, base first, then in increasing length."""
        return tuple(sorted({s.timeframe for s in self.features} | {self.base_timeframe}, key=timeframe_ns))

    @property
    def lower(self) -> np.ndarray:
        return np.array([s.bounds[0] for s in self.features], dtype=np.float32)

    @property
    def upper(self) -> np.ndarray:
        return np.array([s.bounds[1] for s in self.features], dtype=np.float32)

    @property
    def neutral(self) -> np.ndarray:
        return np.array([s.neutral for s in self.features], dtype=np.float32)

    @property
    def lookback_bars(self) -> int:
        """Base bars needed before every feature can be ready (ignoring gaps in the data)."""
        base = timeframe_ns(self.base_timeframe)
        return max(s.lookback * timeframe_ns(s.timeframe) // base for s in self.features)

    @property
    def schema_hash(self) -> str:
        doc = {
            "schema": 1,
            "base_timeframe": self.base_timeframe,
            "features": [[s.name, s.timeframe, dict(s.params)] for s in self.features],
        }
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def compare(self, names: Sequence[str]) -> tuple[list[str], list[str]]:
        """(missing, extra): names of this set absent from ``names``, and the reverse."""
        mine = self.names
        return [n for n in mine if n not in names], [n for n in names if n not in mine]

    def __len__(self) -> int:
        return len(self.features)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureSet) and other.schema_hash == self.schema_hash

    def __hash__(self) -> int:
        return hash(self.schema_hash)

    def __repr__(self) -> str:
        return f"FeatureSet({len(self)} features on {self.base_timeframe}, {self.schema_hash[:12]})"

    def build(self, frame: Any) -> FeatureMatrix:
        """All rows for an OHLCV history (DataFrame indexed by UTC open time, or ``Candles``).

        Raises :class:`~l2_tactical.errors.DataError` when the history is too
        short for a feature, naming the feature and the bars it needs.
        """
        index, ts, cols = ohlcv_arrays(frame, self.base_timeframe)
        n, f = ts.shape[0], len(self.features)
        values = np.empty((n, f), dtype=np.float32)
        ready = np.zeros((n, f), dtype=bool)
        for tf in self.timeframes:
            bars, row_map = self._bars(tf, ts, cols)
            for j, spec in enumerate(self.features):
                if spec.timeframe == tf:
                    self._check_history(spec, len(bars), n)
                    raw = KINDS[spec.name].batch(bars, spec.param_dict)
                    _fill_column(values, ready, j, raw, row_map, spec)
        firsts = [int(np.argmax(col)) if col.any() else n for col in ready.T]
        return FeatureMatrix(
            values=values, ready=ready, names=self.names, index=index, valid_from=max(firsts, default=0)
        )

    def incremental(self, history: Any = None) -> FeatureUpdater:
        """An updater for live use, optionally warmed up on ``history`` (same checks as ``build``)."""
        updater = FeatureUpdater(self.features, self.base_timeframe)
        if history is not None:
            _, ts, cols = ohlcv_arrays(history, self.base_timeframe)
            for tf in self.timeframes:
                bars, _ = self._bars(tf, ts, cols)
                for spec in self.features:
                    if spec.timeframe == tf:
                        self._check_history(spec, len(bars), ts.shape[0])
            updater.warm_up(ts, *cols)
        return updater

    def _bars(self, tf: str, ts: np.ndarray, cols: tuple[np.ndarray, ...]) -> tuple[BatchBars, np.ndarray | None]:
        if tf == self.base_timeframe:
            return BatchBars(*cols), None
        r = resample_arrays(ts, *cols, base=self.base_timeframe, timeframe=tf)
        row_map = np.searchsorted(r.visible_row, np.arange(ts.shape[0]), side="right") - 1
        return BatchBars(r.open, r.high, r.low, r.close, r.volume), row_map

    def _check_history(self, spec: FeatureSpec, have: int, base_rows: int) -> None:
        if have >= spec.lookback:
            return
        per = timeframe_ns(spec.timeframe) // timeframe_ns(self.base_timeframe)
        raise DataError(
            f"feature {spec.column!r} needs at least {spec.lookback} closed {spec.timeframe} bars"
            f" (about {spec.lookback * per} {self.base_timeframe} bars); the history has"
            f" {base_rows} {self.base_timeframe} bars giving {have}"
        )


def _check_timeframe(spec: FeatureSpec, base: str) -> None:
    tf, base_ns = timeframe_ns(spec.timeframe), timeframe_ns(base)
    if tf < base_ns or tf % base_ns:
        raise FeatureError(
            f"feature {spec.column!r}: timeframe {spec.timeframe} cannot be built "
            f"from {base} bars (it must be a multiple of {base})"
        )


def _fill_column(
    values: np.ndarray, ready: np.ndarray, j: int, raw: np.ndarray, row_map: np.ndarray | None, spec: FeatureSpec
) -> None:
    if row_map is not None:
        raw = np.where(row_map >= 0, raw[np.maximum(row_map, 0)] if raw.size else np.nan, np.nan)
    ok = np.isfinite(raw)
    lo, hi = spec.bounds
    values[:, j] = np.where(ok, np.clip(np.where(ok, raw, 0.0), lo, hi), spec.neutral)
    ready[:, j] = ok


def feature_set(name: str, base_timeframe: str = "1m", *, higher: bool = True) -> FeatureSet:
    """A named preset: ``"trend"``, ``"mean_reversion"``, ``"volatility"`` or ``"full"``.

    ``higher`` adds the preset's higher-timeframe features (1m base: 5m, 15m,
    1h; 1h base: 4h).
    """
    from l2_tactical.technical.presets import PRESETS, preset_features

    if name not in PRESETS:
        hint = difflib.get_close_matches(name, list(PRESETS), n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        raise FeatureError(f"unknown feature preset {name!r}{extra} (known: {', '.join(PRESETS)})")
    return FeatureSet(preset_features(name, base_timeframe, higher=higher), base_timeframe)
