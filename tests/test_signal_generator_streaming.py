"""Streaming path: ``on_bar`` (incremental features) gives the batch path's decision on every bar.

Real BTCUSDT 1m and 1h candles; tiny specialists trained here on the real env for the same base
timeframe and loaded through the safe loader. Separate generators (and ensembles, so no shared
prediction cache) run the two paths; the decisions, signals and ensemble votes must be equal.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles
from l2_tactical.finrl_models.ensemble_manager import EnsembleManager
from l2_tactical.signal_generator import SignalGenerator
from tests.test_fast_policy import BTC_1H, BTC_1M, shared_ensemble

REGIME = {"regime": "trending", "strength": 0.7}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, parse_dates=["timestamp"], index_col="timestamp")


def _generator(cfg: L2Config, root: Path, timeframe: str) -> SignalGenerator:
    return SignalGenerator(cfg, ensemble=EnsembleManager.from_config(cfg, root=root), timeframe=timeframe)


def _bars(frame: pd.DataFrame) -> list[tuple]:
    cols = [frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    return list(zip(frame.index, *cols, strict=True))


@pytest.fixture(scope="module")
def models_1m() -> Path:
    return shared_ensemble("1m")[0]


def test_on_bar_equals_the_batch_path_on_real_1m_bars(models_1m: Path) -> None:
    cfg = L2Config.default().with_overrides({"ensemble.confidence_threshold": 0.0,
                                             "ai_model.prediction_threshold": 0.0})
    frame = _frame(BTC_1M).iloc[:3100]
    warm, live = frame.iloc[:2700], frame.iloc[2700:]
    batch = _generator(cfg, models_1m, "1m").decisions(frame, "BTCUSDT", REGIME, last=len(live))
    stream_gen = _generator(cfg, models_1m, "1m")
    stream_gen.warm_up("BTCUSDT", warm, REGIME)
    stream = [stream_gen.on_bar("BTCUSDT", bar, REGIME) for bar in _bars(live)]
    assert len(stream) == len(batch) == 400
    assert all(d.ensemble is not None and d.ensemble.answered == 3 for d in stream)  # specialists do vote
    assert sum(len(d.signals) for d in stream) > 0
    for s, b in zip(stream, batch, strict=True):
        assert s == b, f"bar {s.timestamp}: stream {s.exposure} / batch {b.exposure}"


def test_on_bar_from_the_first_bar_equals_the_batch_path_on_real_1h_bars() -> None:
    candles = load_candles(BTC_1H)
    part = candles.slice(candles.frame.index[-1200], None)
    root = shared_ensemble("1h")[0]
    cfg = L2Config.default()
    batch = _generator(cfg, root, "1h").decisions(part.frame, "ETHUSDT", REGIME)
    gen = _generator(cfg, root, "1h")
    stream = [gen.on_bar("ETHUSDT", bar, REGIME) for bar in _bars(part.frame)]
    assert stream == batch
    assert sum(d.ensemble is not None and d.ensemble.answered == 3 for d in stream) > 500


def test_on_bar_accepts_series_and_mapping_candles_and_refuses_a_bar_out_of_order() -> None:
    from l2_tactical.errors import DataError

    cfg = L2Config.default()
    frame = _frame(BTC_1H).iloc[-300:]
    gen = SignalGenerator(cfg, ensemble=EnsembleManager(cfg.ensemble, {}), timeframe="1h")
    ref = SignalGenerator(cfg, ensemble=EnsembleManager(cfg.ensemble, {}), timeframe="1h")
    for i, (ts, row) in enumerate(frame.iterrows()):
        candle = row if i % 2 else {"timestamp": ts, **row.to_dict()}
        assert gen.on_bar("BTCUSDT", candle) == ref.on_bar("BTCUSDT", (ts, *row.to_numpy()))
    with pytest.raises(DataError, match="not after the previous bar"):
        gen.on_bar("BTCUSDT", (frame.index[-2], *frame.iloc[-2].to_numpy()))


def test_a_candle_already_in_the_loops_form_is_taken_as_it_is_and_equals_the_general_path() -> None:
    from l2_tactical.signal_generator import _candle_tuple

    frame = _frame(BTC_1H).iloc[-200:]
    for ts, *values in _bars(frame):  # pandas Timestamp and numpy floats: the general path converts them
        general = _candle_tuple((ts, *values))
        assert type(general[0]) is int and all(type(x) is float for x in general[1:])
        assert general == (ts.value, *(float(x) for x in values))
        plain = (ts.value, *(float(x) for x in values))   # the TacticalLoop's form
        assert _candle_tuple(plain) is plain and _candle_tuple(list(plain)) == plain
