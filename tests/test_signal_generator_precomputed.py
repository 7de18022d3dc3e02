"""Backtest mode: features precomputed in one batch give the decisions of the incremental on_bar path.

Real BTCUSDT 1h and 1m candles; the three specialists trained once on the real env for that base
timeframe (``shared_ensemble``) and loaded through the safe loader. Two generators (separate
ensembles, so no shared prediction cache or weights) see the same warm-up and the same bars; one
updates its features bar by bar, the other reads them from :meth:`SignalGenerator.precompute`'s
matrix. Every decision (signals, votes, weights, reasons) must be equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2_tactical.backtest.engine import Backtester, config_with_models
from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles
from l2_tactical.errors import DataError
from l2_tactical.finrl_models.ensemble_manager import EnsembleManager
from l2_tactical.finrl_models.feature_processor import PositionState
from l2_tactical.signal_generator import SignalGenerator
from tests.test_fast_policy import BTC_1H, BTC_1M, shared_ensemble

REGIME = {"regime": "ranging", "strength": 0.6}
LOOSE = {"ensemble.confidence_threshold": 0.0, "ai_model.prediction_threshold": 0.0,
         "signals.min_signal_strength": 0.2}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _generator(cfg: L2Config, root: Path, timeframe: str) -> SignalGenerator:
    return SignalGenerator(cfg, ensemble=EnsembleManager.from_config(cfg, root=root), timeframe=timeframe)


def _bars(frame: pd.DataFrame) -> list[tuple]:
    ts = frame.index.as_unit("ns").asi8.tolist()
    cols = [frame[c].to_numpy(dtype=np.float64).tolist() for c in ("open", "high", "low", "close", "volume")]
    return list(zip(ts, *cols, strict=True))


def _both_paths(frame: pd.DataFrame, warm: int, root: Path, timeframe: str) -> tuple[list, list]:
    """(incremental decisions, precomputed decisions) on ``frame[warm:]`` after warming up on ``frame[:warm]``;
    the position changes along the way, so the specialists see more than the flat state."""
    cfg = L2Config.default().with_overrides(LOOSE)
    out = []
    for precompute in (False, True):
        gen = _generator(cfg, root, timeframe)
        if precompute:
            gen.precompute("BTCUSDT", frame)
        gen.warm_up("BTCUSDT", frame.iloc[:warm], REGIME)
        decisions = []
        for i, bar in enumerate(_bars(frame.iloc[warm:])):
            pos = PositionState(exposure=0.3, unrealised_pnl=0.01 * (i % 7 - 3), bars_in_position=i % 40) \
                if (i // 50) % 2 else None
            decisions.append(gen.on_bar("BTCUSDT", bar, REGIME, position=pos))
        out.append(decisions)
    return out[0], out[1]


def _assert_same(incremental: list, precomputed: list) -> None:
    assert len(incremental) == len(precomputed)
    assert sum(len(d.signals) for d in incremental) > 0
    assert sum(d.ensemble is not None and d.ensemble.answered == 3 for d in incremental) > len(incremental) // 2
    for a, b in zip(incremental, precomputed, strict=True):
        assert a == b, f"bar {a.timestamp}: incremental {a.exposure} / precomputed {b.exposure}"


def test_precomputed_features_give_the_on_bar_decisions_on_real_1h_bars() -> None:
    frame = load_candles(BTC_1H).frame.iloc[-1500:]
    root = shared_ensemble("1h")[0]
    _assert_same(*_both_paths(frame, 700, root, "1h"))


def test_precomputed_features_give_the_on_bar_decisions_on_real_1m_bars() -> None:
    frame = load_candles(BTC_1M).frame.iloc[:3200]
    root = shared_ensemble("1m")[0]
    _assert_same(*_both_paths(frame, 2700, root, "1m"))


def test_precomputed_features_refuse_a_bar_that_is_not_the_next_one_of_the_history() -> None:
    frame = load_candles(BTC_1H).frame.iloc[-600:]
    cfg = L2Config.default().with_overrides({f"ensemble.models.{n}.path": f"/nonexistent/{n}.zip"
                                             for n in L2Config.default().ensemble.models})
    gen = SignalGenerator(cfg, timeframe="1h")
    gen.precompute("BTCUSDT", frame)
    bars = _bars(frame)
    gen.warm_up("BTCUSDT", frame.iloc[:500])
    gen.on_bar("BTCUSDT", bars[500])
    skipped = bars[502]
    with pytest.raises(DataError, match="not the next bar of the precomputed features"):
        gen.on_bar("BTCUSDT", skipped)
    ts, o, h, lo, c, v = bars[501]
    with pytest.raises(DataError, match="not the next bar of the precomputed features"):
        gen.on_bar("BTCUSDT", (ts, o, h, lo, c * 1.01, v))  # same time, other prices


def test_backtest_with_precomputed_features_makes_the_same_orders_fills_and_equity() -> None:
    root = shared_ensemble("1h")[0]
    cfg = config_with_models(L2Config.default(), root / "saved_models").with_overrides(
        {"ensemble.confidence_threshold": 0.05, "signals.min_signal_strength": 0.1})
    candles = load_candles(BTC_1H)
    start, end = candles.frame.index[-1500], candles.frame.index[-1]
    runs = [Backtester(cfg, precompute_features=p).run([candles], start=start, end=end) for p in (False, True)]
    incremental, precomputed = runs
    assert incremental.orders, "the window must make orders for the comparison to mean something"
    assert precomputed.orders == incremental.orders
    assert precomputed.reports == incremental.reports
    assert np.array_equal(precomputed.equity, incremental.equity)
    for name, trace in incremental.traces["BTCUSDT"].signals.items():
        assert np.array_equal(precomputed.traces["BTCUSDT"].signals[name], trace, equal_nan=True), name
