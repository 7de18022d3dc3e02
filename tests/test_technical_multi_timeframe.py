"""Consensus across timeframes: weighted agreement against alignment_threshold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from l2_tactical.data.candles import load_candles
from l2_tactical.data.features import feature_set
from l2_tactical.technical.multi_timeframe import consensus_scores, directions_from_row, timeframe_consensus
from tests.conftest import DATA

TFS = ("1m", "5m", "15m", "1h")


@pytest.mark.parametrize(
    ("directions", "weights", "direction", "agreement", "aligned"),
    [
        ({"1m": 1, "5m": 1, "15m": 1, "1h": 1}, None, 1, 1.0, True),
        ({"1m": -1, "5m": 1, "15m": 1, "1h": 1}, None, 1, 0.75, True),
        ({"1m": -1, "5m": -1, "15m": 1, "1h": 1}, None, 0, 0.0, False),
        ({"1m": -1, "5m": -1, "15m": 1, "1h": 1}, {"1m": 1, "5m": 1, "15m": 1, "1h": 3}, 1, 4 / 6, False),
        ({"1m": 0, "5m": -1, "15m": -1, "1h": -1}, None, -1, 0.75, True),
    ],
)
def test_consensus_table(directions, weights, direction, agreement, aligned) -> None:
    c = timeframe_consensus(directions, alignment_threshold=0.7, weights=weights)
    assert (c.direction, c.aligned) == (direction, aligned)
    assert c.agreement == pytest.approx(agreement)


def test_consensus_rejects_bad_threshold_and_empty_input() -> None:
    with pytest.raises(ValueError, match="alignment_threshold=1.5"):
        timeframe_consensus({"1h": 1.0}, alignment_threshold=1.5)
    with pytest.raises(ValueError, match="no timeframes"):
        timeframe_consensus({}, alignment_threshold=0.5)


@settings(max_examples=200, deadline=None)
@given(hs.lists(hs.tuples(*[hs.floats(-1, 1)] * 4), min_size=1, max_size=20), hs.floats(0, 1))
def test_vectorised_consensus_equals_scalar(rows, threshold) -> None:
    values = np.array(rows)
    direction, agreement, aligned = consensus_scores(values, alignment_threshold=threshold, weights=[1, 2, 3, 4])
    for i, row in enumerate(rows):
        c = timeframe_consensus(
            dict(zip(TFS, row, strict=True)),
            alignment_threshold=threshold,
            weights=dict(zip(TFS, [1, 2, 3, 4], strict=True)),
        )
        assert (direction[i], aligned[i]) == (c.direction, c.aligned)
        assert agreement[i] == pytest.approx(c.agreement)
        assert 0 <= c.agreement <= 1 and -1 <= c.score <= 1


def test_consensus_on_real_feature_rows() -> None:
    fs = feature_set("trend", "1m")
    fm = fs.build(load_candles(DATA / "BTCUSDT-1m.csv.gz").frame.iloc[:5_000])
    row = dict(zip(fm.names, fm.values[-1].tolist(), strict=True))
    directions = directions_from_row(row, TFS, kind="macd_hist")
    assert set(directions) == set(TFS)
    c = timeframe_consensus(directions, alignment_threshold=0.7)
    assert c.votes == {tf: int(np.sign(v)) for tf, v in directions.items()}
    with pytest.raises(KeyError, match="4h"):
        directions_from_row(row, ("1h", "4h"))
