"""``l2 evaluate`` on real candles: walk-forward folds, shipped models on a symbol they never saw, a 5m
file derived from the 1m data, the out-of-sample check, DSR/PBO bookkeeping, and per-fold retraining."""

from __future__ import annotations

import dataclasses
import itertools
import json
from importlib.metadata import EntryPoint

import numpy as np
import pandas as pd
import pytest
import yaml

import l2_tactical.cli as cli
from l2_tactical.config import L2Config
from l2_tactical.data.candles import load_candles
from l2_tactical.data.resample import resample_ohlcv
from tests.l1_support import BTC_1H, BTC_1M
from training import evaluate as ev
from training import walk_forward as wf

SOL_1H = BTC_1H.parent / "SOLUSDT-1h.csv.gz"
ALONE = ("trend_alone", "mean_reversion_alone", "volatility_alone")


def l2(argv: list[str]) -> int:
    """The real CLI, with ``evaluate`` registered through the entry point it ships under."""
    entry = EntryPoint(name="evaluate", value="training.evaluate_command:evaluate", group=cli.PLUGIN_GROUP)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "entry_points", lambda group: [entry] if group == cli.PLUGIN_GROUP else [])
        return cli.main(argv)


@pytest.fixture(scope="module")
def models():
    """Three tiny specialists trained on real BTCUSDT 1h bars (cards: trained 2018-2023 on BTCUSDT)."""
    from tests.test_fast_policy import shared_ensemble

    root, _ = shared_ensemble("1h")
    return root / "saved_models"


@pytest.fixture(scope="module")
def loose(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "loose.yaml"
    path.write_text(yaml.safe_dump({"ensemble": {"confidence_threshold": 0.2},
                                    "signals": {"min_signal_strength": 0.2}}))
    return path


@pytest.fixture(scope="module")
def sol_report(models, loose, tmp_path_factory):
    out = tmp_path_factory.mktemp("sol") / "ev.json"
    code = l2(["--config", str(loose), "evaluate", "--data", str(SOL_1H), "--models", str(models),
               "--from", "2025-04-01", "--to", "2025-04-11", "--folds", "2", "--json", str(out), "--no-progress"])
    assert code == 0
    return json.loads(out.read_text())


def test_folds_are_consecutive_windows_of_equal_duration_inside_the_period():
    c = [load_candles(BTC_1H)]
    folds = ev.make_folds(c, "2024-01-01", "2024-04-01", 3)
    assert [str(f.start)[:10] for f in folds] == ["2024-01-01", "2024-01-31", "2024-03-01"]
    assert all(a.end == b.start for a, b in itertools.pairwise(folds))
    assert str(folds[-1].end)[:10] == "2024-04-01"


def test_retraining_split_puts_the_test_window_exactly_at_the_fold():
    c = [load_candles(BTC_1H)]
    fold = ev.make_folds(c, "2024-01-01", "2024-04-01", 3)[1]
    cfg = ev.fold_walk_forward(L2Config.default(), c, fold)
    split = wf.split_from_config(cfg.walk_forward, 3600)
    assert split.test_start == fold.start.value
    assert split.train_end < split.validation_start < split.validation_end < split.test_start


def test_shipped_models_on_a_symbol_they_never_saw(sol_report):
    fams = sol_report["families"]
    assert set(fams) == {"l2_ensemble", *ALONE, "buy_and_hold", "sma_cross_24_168"}
    assert sol_report["mode"] == "shipped" and sol_report["out_of_sample"] is True
    assert len(sol_report["folds"]) == 2 and len(sol_report["runs"]) == 2 * 6
    assert any("buy-and-hold" in line for line in sol_report["verdict"])


def test_the_stitched_path_chains_the_folds(sol_report):
    per_fold = [r["metrics"]["total_return"] for r in sol_report["runs"] if r["name"] == "buy_and_hold"]
    chained = float(np.prod([1.0 + x for x in per_fold]) - 1.0)
    assert sol_report["paths"]["buy_and_hold"]["total_return"] == pytest.approx(chained, rel=1e-9)


def test_dsr_counts_every_l2_run_as_a_trial_and_pbo_every_candidate(sol_report):
    dsr = sol_report["deflated_sharpe"]
    assert set(dsr) == {"l2_ensemble", *ALONE}
    assert {d["n_trials"] for d in dsr.values()} == {4}
    assert all(d["dsr"] is None or 0.0 <= d["dsr"] <= 1.0 for d in dsr.values())
    pbo = sol_report["pbo"]
    assert pbo["n_strategies"] == 6 and 0.0 <= pbo["pbo"] <= 1.0


def test_a_period_the_models_were_trained_on_is_flagged_not_out_of_sample(models, tmp_path, capsys):
    out = tmp_path / "ev.json"
    assert l2(["evaluate", "--data", str(BTC_1H), "--models", str(models), "--from", "2022-03-01", "--to",
               "2022-03-03", "--folds", "1", "--json", str(out), "--no-progress"]) == 0
    assert "NOT out-of-sample" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["out_of_sample"] is False and len(report["not_out_of_sample_because"]) == 3


def five_minute_file(tmp_path, start: str, end: str):
    """A 5m candle file in the documented format, resampled from a slice of the real 1m data."""
    frame = load_candles(BTC_1M).slice(start, end).frame
    five = resample_ohlcv(frame, "5m", base="1m")
    five.index = five.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    five.index.name = "timestamp"
    path = tmp_path / "BTCUSDT-5m.csv.gz"
    five.to_csv(path)
    return path


def test_a_5m_file_runs_with_1h_models_unavailable_and_says_why(models, tmp_path):
    path = five_minute_file(tmp_path, "2025-07-01", "2025-07-08")
    assert load_candles(path).timeframe == "5m"
    out = tmp_path / "ev5.json"
    assert l2(["evaluate", "--data", str(path), "--models", str(models), "--from", "2025-07-05", "--folds", "1",
               "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert set(report["families"]) == {"l2_ensemble", "buy_and_hold", "sma_cross_24_168"}
    assert set(report["unavailable"]) == {"trend", "mean_reversion", "volatility"}
    assert all("5m" in why for why in report["unavailable"].values())
    assert report["folds"][0]["start"].startswith("2025-07-05")


def test_retraining_needs_a_seed(capsys):
    assert l2(["evaluate", "--data", str(BTC_1H), "--seeds", "0", "--no-progress"]) == 3
    assert "--seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_retraining_per_fold_reports_mean_and_std_across_seeds(tmp_path, loose):
    path = five_minute_file(tmp_path, "2025-07-01", "2025-07-15")
    out = tmp_path / "ev.json"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(loose.read_text()), "walk_forward": {"purge_bars": 24}}))
    assert l2(["--config", str(cfg), "evaluate", "--data", str(path), "--from", "2025-07-13", "--folds", "1",
               "--seeds", "2", "--timesteps", "64", "--json", str(out), "--work-dir", str(tmp_path / "work"),
               "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "retrained"
    assert report["families"]["l2_ensemble"]["runs"] == 2
    assert {r["seed"] for r in report["runs"] if r["family"] == "l2_ensemble"} == {0, 1}
    assert all(report["families"][a]["runs"] == 2 for a in ALONE)
    assert report["deflated_sharpe"]["l2_ensemble_seed0"]["n_trials"] == 8
    cards = sorted(p.name for p in (tmp_path / "work" / "fold0" / "seed1").glob("*.json") if p.name != "manifest.json")
    assert cards == ["mean_reversion.json", "trend.json", "volatility.json"]
    card = json.loads((tmp_path / "work" / "fold0" / "seed1" / "trend.json").read_text())
    assert pd.Timestamp(card["validation"]["end"]) < pd.Timestamp("2025-07-13T00:00:00Z")


@pytest.mark.slow
def test_retraining_without_from_starts_at_the_configured_test_window(tmp_path, loose):
    """Without ``--from`` the retrained walk-forward starts where the shipped split's test window does
    (``walk_forward.validation_end`` + purge), so the first fold has years of history to train on."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(loose.read_text()), "walk_forward": {"purge_bars": 24}}))
    split = L2Config.from_file(cfg).walk_forward
    first = pd.Timestamp(split.validation_end, tz="UTC") + pd.Timedelta(hours=24)
    out = tmp_path / "ev.json"
    assert l2(["--config", str(cfg), "evaluate", "--data", str(BTC_1H), "--to", str(first + pd.Timedelta(days=3)),
               "--folds", "1", "--seeds", "1", "--timesteps", "64", "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "retrained"
    assert pd.Timestamp(report["folds"][0]["start"]) == first


def test_retraining_a_file_without_history_before_the_test_window_says_how_to_go_on(tmp_path, capsys):
    """A file that starts after the configured test window has nothing to train the first fold on:
    exit 4 with the fold, the reason and the way out (a later --from, or --models)."""
    frame = load_candles(BTC_1H).frame.loc["2025-03-01":]
    path = tmp_path / "BTCUSDT-1h.csv"
    frame.rename_axis("timestamp").reset_index().assign(
        timestamp=lambda f: f["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(path, index=False)
    assert l2(["evaluate", "--data", str(path), "--seeds", "1", "--timesteps", "64", "--no-progress"]) == 4
    err = capsys.readouterr().err
    assert "fold 0 starts at 2025-03-01" in err and "too little history" in err
    assert "--from" in err and "--models" in err


def test_family_rows_give_mean_and_std():
    from training.evaluate_command import _stats

    assert _stats([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(np.sqrt(2.0))}
    assert _stats([]) == {"mean": None, "std": None}
    assert dataclasses.is_dataclass(ev.Fold)
