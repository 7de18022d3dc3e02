"""Technical and pattern signal sources turn feature rows into explained TacticalSignals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from l2_tactical.data.candles import load_candles
from l2_tactical.data.features import feature_set
from l2_tactical.messages import SignalDirection, SignalSource
from l2_tactical.technical.multi_timeframe import timeframe_consensus
from l2_tactical.technical.signals import TechnicalRules, pattern_signal, technical_signal
from tests.conftest import DATA

NOW = datetime(2025, 1, 1, tzinfo=UTC)
_RULES = TechnicalRules()
WEIGHTS = {
    "rsi": _RULES.rsi_weight,
    "macd": _RULES.macd_weight,
    "bollinger": _RULES.bollinger_weight,
    "trend": _RULES.trend_weight,
    "consensus": _RULES.consensus_weight,
}


def _row(**values: float) -> dict[str, float]:
    return {f"{k}@1h": v for k, v in values.items()}


def test_oversold_rsi_with_bullish_macd_cross_is_a_long_technical_signal() -> None:
    row = _row(rsi_14=0.25, macd_hist_12_26_9=0.02, **{"bb_pctb_20_2.0": -0.1}, adx_14=0.1, di_diff_14=-0.05)
    prev = _row(macd_hist_12_26_9=-0.01)
    sig = technical_signal(
        "BTCUSDT", row, previous=prev, price=100.0, timestamp=NOW, timeframe="1h", expiry=timedelta(minutes=15)
    )
    assert sig is not None
    assert sig.direction is SignalDirection.LONG and sig.source is SignalSource.TECHNICAL
    assert sig.metadata["rsi"] == 25.0 and sig.metadata["macd_cross"] == "bullish"
    assert 0 < sig.strength <= 1 and sig.confidence == 1.0
    assert sig.expires_at == NOW + timedelta(minutes=15)


def test_overbought_bearish_cross_is_short_and_quiet_market_is_no_signal() -> None:
    row = _row(rsi_14=0.8, macd_hist_12_26_9=-0.01)
    sig = technical_signal(
        "BTCUSDT", row, previous=_row(macd_hist_12_26_9=0.01), price=1.0, timestamp=NOW, timeframe="1h"
    )
    assert sig is not None and sig.direction is SignalDirection.SHORT
    assert sig.metadata["macd_cross"] == "bearish"
    quiet = _row(rsi_14=0.5, macd_hist_12_26_9=0.0, adx_14=0.1, di_diff_14=0.1)
    assert technical_signal("BTCUSDT", quiet, price=1.0, timestamp=NOW, timeframe="1h") is None


def test_aligned_timeframes_add_a_consensus_vote_with_its_reason() -> None:
    consensus = timeframe_consensus({"1m": 1, "5m": 1, "15m": 1, "1h": -1}, alignment_threshold=0.7)
    sig = technical_signal("BTCUSDT", _row(rsi_14=0.5), price=1.0, timestamp=NOW, timeframe="1h", consensus=consensus)
    assert sig is not None and sig.direction is SignalDirection.LONG
    assert sig.metadata["consensus"]["aligned"] is True


def test_hammer_after_a_decline_on_volume_is_a_confident_long_pattern_signal() -> None:
    row = _row(cdl_hammer=1.0, cdl_doji=0.0, ret_5=-2.0, rel_volume_20=1.8)
    sig = pattern_signal("BTCUSDT", row, price=50.0, timestamp=NOW, timeframe="1h")
    assert sig is not None and sig.direction is SignalDirection.LONG and sig.source is SignalSource.PATTERN
    assert sig.metadata["patterns"] == {"hammer": 1.0} and sig.confidence == 1.0
    shooting = pattern_signal(
        "BTCUSDT", _row(cdl_shooting_star=-1.0, cdl_doji=1.0), price=50.0, timestamp=NOW, timeframe="1h"
    )
    assert shooting is not None and shooting.direction is SignalDirection.SHORT
    assert shooting.metadata["indecision"] == ["doji"] and shooting.confidence == 0.25
    assert pattern_signal("BTCUSDT", _row(cdl_hammer=0.0), price=50.0, timestamp=NOW, timeframe="1h") is None


def test_signal_sources_on_real_rows_give_valid_messages() -> None:
    frame = load_candles(DATA / "BTCUSDT-1h.csv.gz").frame.iloc[:3_000]
    fm = feature_set("full", "1h").build(frame)
    closes = frame["close"].to_numpy()
    counts = {"technical": 0, "pattern": 0}
    prev = None
    for t in range(fm.valid_from, len(frame)):
        row = dict(zip(fm.names, fm.values[t].tolist(), strict=True))
        ts = fm.index[t].to_pydatetime()
        for key, sig in (
            (
                "technical",
                technical_signal("BTCUSDT", row, previous=prev, price=closes[t], timestamp=ts, timeframe="1h"),
            ),
            ("pattern", pattern_signal("BTCUSDT", row, price=closes[t], timestamp=ts, timeframe="1h")),
        ):
            if sig is not None:
                counts[key] += 1
                assert 0 <= sig.strength <= 1 and 0 <= sig.confidence <= 1
                votes = sig.metadata.get("votes", {"p": sig.direction.sign})
                weighted = sum(v * WEIGHTS.get(k, 1.0) for k, v in votes.items())
                assert np.sign(weighted) == sig.direction.sign
        prev = row
    assert counts["technical"] > 100 and counts["pattern"] > 100


def test_a_technical_call_says_why_only_when_asked_and_says_it_whole() -> None:
    from l2_tactical.technical.signals import technical_call

    row = _row(rsi_14=0.25, macd_hist_12_26_9=0.02, **{"bb_pctb_20_2.0": -0.1}, adx_14=0.1, di_diff_14=-0.05)
    call = technical_call(row, timeframe="1h", previous=_row(macd_hist_12_26_9=-0.01))
    assert call is not None
    # by hand: RSI 25 < 30 -> (30 - 25) / 30 + 0.5 = 0.6667; MACD crossed up -> 1; %b < 0 -> 1; ADX 10 < 25 -> 0
    expected = {"timeframe": "1h", "rsi": 25.0, "macd_hist_pct": 0.02, "macd_cross": "bullish", "bb_pctb": -0.1,
                "adx": 10.0, "di_diff": -5.0,
                "votes": {"rsi": 0.6667, "macd": 1.0, "bollinger": 1.0, "trend": 0.0}}
    first = call.metadata
    assert first == expected and list(first) == list(expected)
    first["rsi"] = -1.0  # a fresh dict each time: the call itself cannot be changed through it
    assert call.metadata == expected
