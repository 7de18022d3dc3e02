"""The catalogue of feature kinds a :class:`~l2_tactical.data.features.FeatureSet` can declare.

A *kind* (``"rsi"``, ``"ema_slope"``, ...) knows its parameters and their
defaults, its lookback (bars of its own timeframe before the first ready
value), its normalisation and documented bounds, the neutral value shown
during warm-up, and two implementations of the same formula: ``batch`` on a
whole :class:`~l2_tactical.technical.bars.BatchBars` (TA-Lib / numpy) and
``stream`` on a :class:`~l2_tactical.technical.bars.StreamBars`, returning a
zero-argument function read after each closed bar. Both return ``nan`` while
the feature is warming up and a finite number afterwards, including on
zero-volume and zero-range bars.

Units: ``%`` means percent of the bar's close; ``ATR`` means multiples of the
ATR(14) of the same timeframe. Values are clipped to ``bounds``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from l2_tactical.technical.bars import BatchBars, StreamBars

Params = Mapping[str, Any]
BatchFn = Callable[[BatchBars, Params], np.ndarray]
StreamFn = Callable[[StreamBars, Params], Callable[[], float]]


@dataclass(frozen=True)
class Kind:
    """One kind of feature; see the module docstring."""

    name: str
    defaults: Mapping[str, Any]
    lookback: Callable[[Params], int]
    bounds: Callable[[Params], tuple[float, float]]
    neutral: Callable[[Params], float]
    normalisation: str
    batch: BatchFn
    stream: StreamFn


KINDS: dict[str, Kind] = {}


def register(
    name: str,
    defaults: Mapping[str, Any],
    *,
    lookback: Callable[[Params], int],
    bounds: tuple[float, float] | Callable[[Params], tuple[float, float]],
    normalisation: str,
    neutral: float | Callable[[Params], float] = 0.0,
) -> Callable[[BatchFn], Callable[[StreamFn], StreamFn]]:
    """Decorator pair: ``@register(...)`` on the batch function, then ``@<it>`` on the stream one.

    Used as::

        @register("rsi", {"period": 14}, lookback=..., bounds=(0, 1), normalisation="RSI / 100")
        def _rsi_batch(bars, p): ...
        @_rsi_batch
        def _rsi_stream(bars, p): ...
    """
    bounds_fn = bounds if callable(bounds) else (lambda _p, b=bounds: (float(b[0]), float(b[1])))
    neutral_fn = neutral if callable(neutral) else (lambda _p, v=neutral: float(v))

    def on_batch(batch: BatchFn) -> Callable[[StreamFn], StreamFn]:
        def on_stream(stream: StreamFn) -> StreamFn:
            if name in KINDS:
                raise ValueError(f"feature kind {name!r} registered twice")
            KINDS[name] = Kind(name, dict(defaults), lookback, bounds_fn, neutral_fn, normalisation, batch, stream)
            return stream

        return on_stream

    return on_batch


def safe_ratio(num: np.ndarray, den: np.ndarray, fallback: float) -> np.ndarray:
    """``num / den`` where ``den > 0``, ``fallback`` where ``den == 0``, nan where either is nan."""
    out = np.full(num.shape, fallback)
    with np.errstate(invalid="ignore"):
        positive = den > 0
    np.divide(num, den, out=out, where=positive)
    out[np.isnan(num) | np.isnan(den)] = np.nan
    return out


def shifted_ratio(x: np.ndarray, lag: int) -> np.ndarray:
    """``x[t] / x[t - lag]`` (nan for the first ``lag`` bars)."""
    out = np.full(x.shape[0], np.nan)
    if x.shape[0] > lag:
        out[lag:] = x[lag:] / x[:-lag]
    return out


def ensure_loaded() -> None:
    """Import the modules that register kinds (they register on import)."""
    from l2_tactical.technical import kinds_levels, kinds_price, kinds_volatility  # noqa: F401
