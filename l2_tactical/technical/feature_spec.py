"""Declaring one feature: :class:`FeatureSpec`, :func:`feature` and :func:`parse_feature`.

A feature's column name is ``<kind>[_<param>...]@<timeframe>`` with the
parameters in the kind's declared order, e.g. ``rsi_14@1h``,
``ema_slope_20_5@1m``, ``cdl_morning_star@1m``; :func:`parse_feature` reads
such a name back.

>>> feature("rsi", "1h").column
'rsi_14@1h'
>>> parse_feature("ema_slope_50_5@15m").param_dict
{'period': 50, 'lag': 5}
>>> feature("rsl", "1h")
Traceback (most recent call last):
...
l2_tactical.technical.feature_spec.FeatureError: unknown feature 'rsl'; did you mean 'rsi'?
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from l2_tactical.errors import ConfigError
from l2_tactical.technical.feature_kinds import KINDS, ensure_loaded


class FeatureError(ConfigError, ValueError):
    """A feature declaration is invalid (unknown kind or parameter, bad value)."""


def _hint(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f" (known: {', '.join(sorted(choices))})"


@dataclass(frozen=True)
class FeatureSpec:
    """One declared feature. Build it with :func:`feature`, which fills the derived fields."""

    name: str  # the kind, e.g. "rsi"
    timeframe: str
    params: tuple[tuple[str, Any], ...]
    lookback: int  # bars of `timeframe` before the first ready value
    normalisation: str
    bounds: tuple[float, float]
    neutral: float  # value shown while warming up

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def column(self) -> str:
        parts = [self.name, *(str(v) for _, v in self.params)]
        return f"{'_'.join(parts)}@{self.timeframe}"


def _coerce(kind: str, key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return str(value)
    try:
        cast = type(default)(value)
    except (TypeError, ValueError):
        raise FeatureError(f"feature {kind!r}: parameter {key}={value!r} is not a number") from None
    if cast != value and not isinstance(value, str):
        raise FeatureError(f"feature {kind!r}: parameter {key}={value!r} must be {type(default).__name__}")
    if cast <= 0:
        raise FeatureError(f"feature {kind!r}: parameter {key}={value!r} must be positive")
    return cast


def feature(name: str, timeframe: str, **params: Any) -> FeatureSpec:
    """Declare a feature of kind ``name`` on ``timeframe``; omitted parameters take their defaults."""
    ensure_loaded()
    if name not in KINDS:
        raise FeatureError(f"unknown feature {name!r}{_hint(name, list(KINDS))}")
    kind = KINDS[name]
    for key in params:
        if key not in kind.defaults:
            raise FeatureError(f"feature {name!r} has no parameter {key!r}{_hint(key, list(kind.defaults))}")
    values = {k: _coerce(name, k, params.get(k, d), d) for k, d in kind.defaults.items()}
    try:
        lookback = int(kind.lookback(values))
    except ValueError as exc:
        raise FeatureError(f"feature {name!r}: {exc}") from None
    return FeatureSpec(
        name=name,
        timeframe=timeframe,
        params=tuple(values.items()),
        lookback=lookback,
        normalisation=kind.normalisation,
        bounds=kind.bounds(values),
        neutral=kind.neutral(values),
    )


def _takes_text(kind: str) -> bool:
    return any(isinstance(v, str) for v in KINDS[kind].defaults.values())


def parse_feature(column: str) -> FeatureSpec:
    """The :class:`FeatureSpec` whose ``column`` is ``column`` (e.g. ``"rsi_14@1h"``)."""
    ensure_loaded()
    left, sep, timeframe = column.partition("@")
    if not sep or not timeframe:
        raise FeatureError(f"feature name {column!r} has no '@<timeframe>' suffix (e.g. 'rsi_14@1h')")
    stem = "_".join(t for t in left.split("_") if not t.replace(".", "").isdigit())
    kinds = [k for k in KINDS if left == k or left.startswith(k + "_")]
    if not kinds or (
        stem not in KINDS
        and max(kinds, key=len) != stem
        and stem.startswith(max(kinds, key=len))
        and not _takes_text(max(kinds, key=len))
    ):
        raise FeatureError(f"unknown feature {column!r}{_hint(stem, list(KINDS))}")
    name = max(kinds, key=len)
    keys = list(KINDS[name].defaults)
    tokens = left[len(name) + 1 :].split("_") if left != name else []
    if keys and len(tokens) > len(keys):
        tokens = [*tokens[: len(keys) - 1], "_".join(tokens[len(keys) - 1 :])]
    if len(tokens) != len(keys):
        raise FeatureError(f"feature {column!r}: {name!r} takes parameters {keys}, got {tokens}")
    spec = feature(name, timeframe, **dict(zip(keys, tokens, strict=True)))
    if spec.column != column:
        raise FeatureError(f"feature {column!r} is not canonical; did you mean {spec.column!r}?")
    return spec
