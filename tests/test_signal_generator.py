"""SignalGenerator: seed 000's API on real candles, sources, composite, filters, conflicts, expiry, cache, fallback.

AI specialists are either tiny SB3 models trained here on the real env (published with a model
card and manifest, loaded through the safe loader) or hand-made policies with fixed answers,
so the arithmetic of the composite can be checked by hand.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.errors import DataError
from l2_tactical.finrl_models.ensemble_manager import EnsembleManager, Specialist
from l2_tactical.messages import SignalDirection, SignalSource, TacticalSignal
from l2_tactical.signal_generator import SignalGenerator, infer_timeframe
from tests.test_fast_policy import BTC_1H, shared_ensemble

CONFIG = Path(__file__).resolve().parent.parent / "config" / "l2_config.yaml"
REGIME = {"regime": "trending", "strength": 0.8, "preferred_assets": ["BTCUSDT", "ETHUSDT"]}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def btc_1h() -> pd.DataFrame:
    return pd.read_csv(BTC_1H, parse_dates=["timestamp"], index_col="timestamp")


@pytest.fixture(scope="module")
def models_root() -> Path:
    return shared_ensemble("1h")[0]


def fixed_ensemble(cfg: L2Config, answers: dict[str, tuple[float, float]], clock=None) -> EnsembleManager:
    specs = {n: Specialist(n, cfg.ensemble.models[n].specialization, "PPO", ("rsi_14@1h",), None, 4,
                           lambda _o, a=a: a) for n, a in answers.items()}
    return EnsembleManager(cfg.ensemble, specs, clock=clock)


def test_seed_000_usage_example_runs_on_real_1h_candles(btc_1h: pd.DataFrame, models_root: Path) -> None:
    config = L2Config.from_file(CONFIG)
    signal_gen = SignalGenerator(config, ensemble=EnsembleManager.from_config(config, root=models_root))
    signals = signal_gen.generate_signals(market_data=btc_1h, symbol="BTCUSDT", regime_context=REGIME)
    assert isinstance(signals, list) and all(isinstance(s, TacticalSignal) for s in signals)
    for signal in signals:  # what the seed prints
        assert signal.direction.value in ("long", "short") and signal.symbol == "BTCUSDT"
        assert 0 <= signal.strength <= 1 and 0 <= signal.confidence <= 1
        assert signal.source.value in ("ai_model", "technical", "pattern", "composite")
        assert signal.timestamp == datetime(2025, 9, 1, tzinfo=timezone.utc)  # close of the last bar
    # over the last 300 bars: signals from the sources, every one through the filters, drops explained
    decisions = signal_gen.decisions(btc_1h.iloc[-3000:], "BTCUSDT", REGIME, last=300)
    emitted = [s for d in decisions for s in d.signals]
    assert {s.source for s in emitted} >= {SignalSource.TECHNICAL, SignalSource.PATTERN}
    cfg = config
    assert all(s.strength >= cfg.signals.min_signal_strength for s in emitted)
    assert all(s.confidence >= cfg.ensemble.confidence_threshold for s in emitted if s.source is SignalSource.COMPOSITE)
    assert all(d.ensemble is not None and d.ensemble.answered == 3 for d in decisions)
    for d in decisions:
        if d.composite is None and abs(d.exposure) >= 0.05:  # a directional composite that did not pass says why
            assert any(r.startswith("composite dropped: ") for r in d.reasons)
    # the tiny specialists are barely trained, so their confidence (and the composite's) is low
    loose = SignalGenerator(config.with_overrides({"ensemble.confidence_threshold": 0.0,
                                                   "ensemble.consensus_threshold": 0.0}),
                            ensemble=EnsembleManager.from_config(config, root=models_root))
    comps = [s for d in loose.decisions(btc_1h.iloc[-3000:], "BTCUSDT", REGIME, last=300) for s in d.signals
             if s.source is SignalSource.COMPOSITE]
    assert comps
    meta = comps[0].metadata
    assert meta["ai_status"] == "ok" and meta["regime"] == "trending" and meta["preferred_asset"] is True
    assert set(meta["sources"]) == {"ai_model", "technical", "pattern"} and meta["ensemble"]["coverage"] == 1.0


def test_composite_is_the_weighted_vote_of_ai_technical_and_pattern(btc_1h: pd.DataFrame) -> None:
    cfg = L2Config.default()
    ens = fixed_ensemble(cfg, {"trend": (1.0, 0.9), "mean_reversion": (1.0, 0.7), "volatility": (1.0, 0.8)})
    gen = SignalGenerator(cfg, ensemble=ens)
    decisions = gen.decisions(btc_1h.iloc[-2500:], "BTCUSDT", last=300)
    checked = emitted_tech = 0
    for d in decisions:
        if d.composite is None:
            continue
        src = d.composite.metadata["sources"]
        e_t, e_p = src["technical"]["exposure"], src["pattern"]["exposure"]
        # unanimous AI: exposure 1; composite = 0.6 * 1 + 0.3 * e_tech + 0.1 * e_pattern (weights sum to 1)
        assert d.exposure == pytest.approx(0.6 + 0.3 * e_t + 0.1 * e_p, abs=1e-5)
        # all agree, so performance moves no weight: confidence 0.4*0.9 + 0.35*0.7 + 0.25*0.8 = 0.805
        assert src["ai_model"] == {"exposure": 1.0, "confidence": pytest.approx(0.805, abs=1e-6), "weight": 0.6}
        checked += 1
        tech = next((s for s in d.signals if s.source is SignalSource.TECHNICAL), None)
        if tech is not None:  # the technical source's vote is the technical signal's exposure
            assert tech.exposure == pytest.approx(e_t, abs=1e-6)
            emitted_tech += 1
    assert checked > 0 and emitted_tech > 0


def test_ai_source_abstains_when_specialists_disagree(btc_1h: pd.DataFrame) -> None:
    cfg = L2Config.default().with_overrides({"ensemble.voting": "weighted", "ensemble.performance_sensitivity": 0.0})
    # 0.4 * 1 - 0.35 * 1 + 0 = 0.05 (just long); agreement 0.4 of the weight + 0.5 * 0.25 -> consensus 0.525 < 0.6
    ens = fixed_ensemble(cfg, {"trend": (1.0, 0.9), "mean_reversion": (-1.0, 0.9), "volatility": (0.0, 0.9)})
    d = SignalGenerator(cfg, ensemble=ens).decisions(btc_1h.iloc[-2500:], "BTCUSDT", last=1)[-1]
    assert d.ensemble is not None and d.ensemble.consensus == pytest.approx(0.525)
    assert not any(s.source is SignalSource.AI_MODEL for s in d.signals)
    assert any("consensus 0.53 < consensus_threshold 0.6" in r for r in d.reasons)


def test_no_working_model_falls_back_to_technical_and_pattern(btc_1h: pd.DataFrame, tmp_path: Path) -> None:
    cfg = L2Config.default()
    gen = SignalGenerator(cfg, ensemble=EnsembleManager.from_config(cfg, root=tmp_path))  # no model files
    decisions = gen.decisions(btc_1h.iloc[-2500:], "BTCUSDT", last=300)
    assert all(d.ensemble is None for d in decisions)
    comps = [s for d in decisions for s in d.signals if s.source is SignalSource.COMPOSITE]
    assert comps, "technical + pattern alone still produce composite signals"
    meta = comps[0].metadata
    assert meta["ai_status"] == "unavailable: technical + pattern only"
    assert set(meta["sources"]) == {"technical", "pattern"} and len(meta["ai_reasons"]) == 3
    assert all("model file not found" in r for r in meta["ai_reasons"])


def test_degraded_ensemble_in_the_generator_signals_with_lower_confidence(btc_1h: pd.DataFrame) -> None:
    cfg = L2Config.default().with_overrides({"ai_model.prediction_threshold": 0.0, "ai_model.timeout_ms": 20})
    clock = SimulatedClock(datetime(2025, 9, 1, tzinfo=timezone.utc))

    def hung(_obs: np.ndarray) -> tuple[float, float]:
        clock.advance(timedelta(seconds=1))
        return 1.0, 0.9

    def broken(_obs: np.ndarray) -> tuple[float, float]:
        raise ValueError("weights corrupted")

    def spec(name: str, fn) -> Specialist:
        return Specialist(name, cfg.ensemble.models[name].specialization, "PPO", ("rsi_14@1h",), None, 4, fn)

    healthy = {n: spec(n, lambda _o: (1.0, 0.9)) for n in cfg.ensemble.models}
    full = SignalGenerator(cfg, ensemble=EnsembleManager(cfg.ensemble, healthy, clock=clock, timeout_ms=20))
    data = btc_1h.iloc[-2500:]
    ai_full = next(s for s in full.generate_signals(data, "BTCUSDT") if s.source is SignalSource.AI_MODEL)
    specs = {"trend": healthy["trend"], "mean_reversion": spec("mean_reversion", broken),
             "volatility": spec("volatility", hung)}
    degraded = EnsembleManager(cfg.ensemble, specs, clock=clock, timeout_ms=20)
    signals = SignalGenerator(cfg, ensemble=degraded).generate_signals(data, "BTCUSDT")
    ai = next(s for s in signals if s.source is SignalSource.AI_MODEL)
    assert ai.direction is SignalDirection.LONG and ai.confidence < ai_full.confidence
    votes = ai.metadata["votes"]
    assert (votes["trend"]["status"], votes["mean_reversion"]["status"], votes["volatility"]["status"]) == (
        "ok", "error", "timeout")
    assert any("weights corrupted" in r for r in ai.metadata["degraded"])


def test_signals_are_stamped_at_bar_close_and_expire_after_signal_expiry_minutes(btc_1h: pd.DataFrame) -> None:
    cfg = L2Config.default().with_overrides({"signals.signal_expiry_minutes": 45})
    gen = SignalGenerator(cfg, ensemble=fixed_ensemble(cfg, {}))
    decisions = gen.decisions(btc_1h.iloc[-2500:], "BTCUSDT", last=100)
    signals = [s for d in decisions for s in d.signals]
    assert signals
    for d in decisions:
        for s in d.signals:
            assert s.expires_at - s.timestamp == timedelta(minutes=45)
            assert s.timestamp == d.timestamp
    last_open = btc_1h.index[-1].to_pydatetime()
    assert decisions[-1].timestamp == last_open + timedelta(hours=1)


def test_conflicting_sources_are_resolved_in_favour_of_the_composite(btc_1h: pd.DataFrame) -> None:
    cfg = L2Config.default()
    ens = fixed_ensemble(cfg, {"trend": (1.0, 1.0), "mean_reversion": (1.0, 1.0), "volatility": (1.0, 1.0)})
    decisions = SignalGenerator(cfg, ensemble=ens).decisions(btc_1h.iloc[-4000:], "BTCUSDT", last=1500)
    conflicted = [d for d in decisions if any(r.startswith("conflict: ") for r in d.reasons)]
    assert conflicted, "a technical or pattern short against a unanimous AI long should occur in 1500 real bars"
    for d in conflicted:
        assert d.composite is not None and d.composite.direction is SignalDirection.LONG
        assert all(s.direction is SignalDirection.LONG for s in d.signals)
        assert any("short overruled (composite is long)" in r for r in d.reasons)


def test_prediction_cache_reuses_answers_within_ttl(btc_1h: pd.DataFrame) -> None:
    cfg = L2Config.default().with_overrides({"ai_model.cache_ttl_seconds": 30})
    clock = SimulatedClock(datetime(2025, 9, 1, tzinfo=timezone.utc))
    calls: list[int] = []

    def counting(_obs: np.ndarray) -> tuple[float, float]:
        calls.append(1)
        return 0.7, 0.8

    specs = {"trend": Specialist("trend", "trend_following", "PPO", ("rsi_14@1h",), None, 4, counting)}
    ens = EnsembleManager(cfg.ensemble, specs, clock=clock, cache_ttl_seconds=30)
    gen = SignalGenerator(cfg, ensemble=ens, clock=clock)
    data = btc_1h.iloc[-2500:]
    first = gen.generate_signals(data, "BTCUSDT")
    n = len(calls)
    assert gen.generate_signals(data, "BTCUSDT") == first and len(calls) == n  # all from the cache
    clock.advance(timedelta(seconds=31))
    gen.generate_signals(data, "BTCUSDT")
    assert len(calls) == 2 * n


def test_bad_inputs_are_named() -> None:
    cfg = L2Config.default()
    gen = SignalGenerator(cfg, ensemble=fixed_ensemble(cfg, {}))
    frame = pd.read_csv(BTC_1H, parse_dates=["timestamp"], index_col="timestamp").iloc[-600:]
    with pytest.raises(ValueError, match="regime_context\\['regime'\\]='bull'"):
        gen.generate_signals(frame, "BTCUSDT", {"regime": "bull"})
    with pytest.raises(ValueError, match="strength"):
        gen.generate_signals(frame, "BTCUSDT", {"regime": "ranging", "strength": 3})
    odd = frame.copy()
    odd.index = odd.index + pd.Timedelta(minutes=7)
    odd = odd.iloc[::7]
    with pytest.raises(DataError, match="timeframe"):
        gen.generate_signals(odd, "BTCUSDT")
    assert infer_timeframe(frame) == "1h"
    with pytest.raises(DataError, match="needs at least 210 closed 1h bars"):
        gen.generate_signals(frame.iloc[-100:], "BTCUSDT")


def test_signals_built_on_demand_equal_the_ones_built_at_once(btc_1h: pd.DataFrame, models_root: Path) -> None:
    # a Decision builds its signals when read: reading the composite first, or only the calls, changes nothing
    config = L2Config.default().with_overrides({"ensemble.confidence_threshold": 0.0,
                                                "ensemble.consensus_threshold": 0.0,
                                                "ai_model.prediction_threshold": 0.0,
                                                "signals.min_signal_strength": 0.1})
    gens = [SignalGenerator(config, ensemble=EnsembleManager.from_config(config, root=models_root)) for _ in range(2)]
    eager, lazy = (g.decisions(btc_1h.iloc[-2500:], "BTCUSDT", REGIME, last=300) for g in gens)
    sources_seen: set[SignalSource] = set()
    for a, b in zip(eager, lazy, strict=True):
        everything = a.signals
        sources_seen |= {s.source for s in everything}
        assert b.calls == tuple((s.source, s.exposure) for s in everything)  # no signal built for these
        composite = b.signals_from((SignalSource.COMPOSITE,))
        assert composite == tuple(s for s in everything if s.source is SignalSource.COMPOSITE)
        assert b.composite == a.composite and b.signals == everything and a == b
        assert all(x is y for x, y in zip(b.signals, b.signals, strict=True))  # each built once
    assert sources_seen == set(SignalSource)


def test_decision_is_immutable(btc_1h: pd.DataFrame) -> None:
    cfg = L2Config.default()
    gen = SignalGenerator(cfg, ensemble=fixed_ensemble(cfg, {"trend": (1.0, 0.9)}))
    d = gen.decisions(btc_1h.iloc[-600:], "BTCUSDT", last=1)[-1]
    with pytest.raises(AttributeError, match="immutable"):
        d.exposure = 0.0  # type: ignore[misc]
