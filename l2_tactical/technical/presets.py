"""Named feature presets for the specialists of DESIGN.md (trend, mean reversion, volatility).

Each preset is ~10-20 features on the base timeframe plus a few on higher
timeframes (on 1m bars: 5m, 15m and 1h; on 1h bars: 4h). ``full`` is the
union of the three plus returns, OBV flow and candlestick patterns; it is the
set the benchmark measures.
"""

from __future__ import annotations

from collections.abc import Callable

from l2_tactical.technical.feature_spec import FeatureSpec, feature

#: higher timeframes used by the presets, per base timeframe
HIGHER_TIMEFRAMES: dict[str, tuple[str, ...]] = {
    "1m": ("5m", "15m", "1h"),
    "5m": ("15m", "1h"),
    "15m": ("1h", "4h"),
    "1h": ("4h",),
}
PATTERN_FEATURES = (
    "hammer",
    "inverted_hammer",
    "engulfing",
    "doji",
    "morning_star",
    "evening_star",
    "shooting_star",
    "hanging_man",
    "harami",
)


def _trend(base: str, higher: tuple[str, ...]) -> list[FeatureSpec]:
    specs = [
        feature("ema_slope", base, period=20, lag=5),
        feature("ema_slope", base, period=50, lag=5),
        feature("ema_slope", base, period=200, lag=10),
        feature("ema_spread", base, fast=10, slow=50),
        feature("ema_dist", base, period=50),
        feature("macd", base),
        feature("macd_hist", base),
        feature("adx", base),
        feature("di_diff", base),
        feature("ret", base, period=20),
    ]
    for tf in higher:
        specs += [feature("ema_slope", tf, period=20, lag=3), feature("macd_hist", tf), feature("di_diff", tf)]
    return specs


def _mean_reversion(base: str, higher: tuple[str, ...]) -> list[FeatureSpec]:
    specs = [
        feature("rsi", base, period=14),
        feature("rsi", base, period=21),
        feature("bb_pctb", base),
        feature("zscore", base, period=20),
        feature("zscore", base, period=50),
        feature("stoch_k", base),
        feature("stoch_d", base),
        feature("sr_res_dist", base),
        feature("sr_sup_dist", base),
        feature("ema_dist", base, period=20),
        feature("ret", base, period=1),
        feature("ret", base, period=5),
        feature("rel_volume", base),
    ]
    for tf in higher:
        specs += [feature("rsi", tf, period=14), feature("bb_pctb", tf)]
    return specs


def _volatility(base: str, higher: tuple[str, ...]) -> list[FeatureSpec]:
    specs = [
        feature("atr", base),
        feature("bb_width", base),
        feature("realized_vol", base, period=20),
        feature("realized_vol", base, period=50),
        feature("range_pct", base),
        feature("range_pos", base),
        feature("range_break", base),
        feature("sr_breakout", base),
        feature("rel_volume", base),
        feature("ret", base, period=1),
    ]
    for tf in higher:
        specs += [feature("atr", tf), feature("realized_vol", tf, period=20)]
    return specs


def _full(base: str, higher: tuple[str, ...]) -> list[FeatureSpec]:
    specs: list[FeatureSpec] = []
    extra = [feature("ret", base, period=k) for k in (1, 5, 10, 20)]
    extra += [
        feature("obv_flow", base),
        feature("ema_slope", base, period=10, lag=5),
        feature("sma_slope", base, period=20, lag=5),
        feature("sma_slope", base, period=200, lag=10),
    ]
    extra += [feature("cdl", base, pattern=p) for p in PATTERN_FEATURES]
    for part in (_trend(base, higher), _mean_reversion(base, higher), _volatility(base, higher), extra):
        specs += [s for s in part if s not in specs]
    return specs


PRESETS: dict[str, Callable[[str, tuple[str, ...]], list[FeatureSpec]]] = {
    "trend": _trend,
    "mean_reversion": _mean_reversion,
    "volatility": _volatility,
    "full": _full,
}


def preset_features(name: str, base: str, *, higher: bool = True) -> list[FeatureSpec]:
    """The specs of preset ``name`` on ``base`` bars (see :data:`HIGHER_TIMEFRAMES`)."""
    return PRESETS[name](base, HIGHER_TIMEFRAMES.get(base, ()) if higher else ())
