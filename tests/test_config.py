"""L2Config: bundled defaults, file layering, environment overrides, clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from l2_tactical.config import DEFAULT_CONFIG_PATH, L2Config
from l2_tactical.errors import ConfigError


def test_bundled_file_covers_seed_000_keys():
    cfg = L2Config.from_file(DEFAULT_CONFIG_PATH, env={})
    seed_keys = {
        "ai_model": ["model_path", "model_type", "prediction_threshold", "cache_predictions"],
        "signals": [
            "min_signal_strength",
            "ai_model_weight",
            "technical_weight",
            "pattern_weight",
            "signal_expiry_minutes",
        ],
        "position_sizing": ["kelly_fraction", "target_volatility", "max_position_pct"],
        "risk": ["default_stop_pct", "max_correlation", "daily_loss_limit"],
    }
    for section, keys in seed_keys.items():
        for key in keys:
            assert hasattr(getattr(cfg, section), key), f"{section}.{key}"


def test_design_keys_are_present():
    cfg = L2Config.default()
    assert set(cfg.ensemble.models) == {"trend", "mean_reversion", "volatility"}
    assert cfg.ensemble.models["trend"].algorithm == "PPO"
    assert cfg.ensemble.models["mean_reversion"].algorithm == "A2C"
    assert cfg.ensemble.models["volatility"].algorithm == "SAC"
    for key in (
        "atr_multiplier",
        "max_loss_per_trade",
        "trailing_stop",
        "breakeven_threshold",
        "max_daily_trades",
        "max_concurrent_positions",
        "exposure_limit",
    ):
        assert hasattr(cfg.risk, key)
    assert cfg.symbols["BTCUSDT"].max_qty == 0.05 and cfg.symbols["ETHUSDT"].max_qty == 1.0
    assert cfg.symbols["BTCUSDT"].max_exposure == 0.20 and cfg.symbols["ETHUSDT"].max_exposure == 0.15


def test_environment_overrides_the_file():
    env = {"L2_KELLY_FRACTION": "0.2", "L2_AI_MODEL_PATH": "models/x.zip", "L2_RISK_DAILY_LOSS_LIMIT": "0.03"}
    cfg = L2Config.from_env(env)
    assert cfg.position_sizing.kelly_fraction == 0.2
    assert cfg.ai_model.model_path == "models/x.zip"
    assert cfg.risk.daily_loss_limit == 0.03


def test_user_file_is_layered_over_defaults(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("risk:\n  daily_loss_limit: 0.02\n")
    cfg = L2Config.from_file(p, env={})
    assert cfg.risk.daily_loss_limit == 0.02
    assert cfg.risk.max_daily_trades == L2Config.default().risk.max_daily_trades
    assert cfg.source == str(p)


def test_unknown_file_key_names_it_with_a_hint(tmp_path):
    p = tmp_path / "typo.yaml"
    p.write_text("risk:\n  daly_loss_limit: 0.02\n")
    with pytest.raises(ConfigError, match=r"risk\.daly_loss_limit.*did you mean 'daily_loss_limit'"):
        L2Config.from_file(p, env={})


def test_unknown_environment_variable_names_it_with_a_hint():
    with pytest.raises(ConfigError, match="L2_KELY_FRACTION.*did you mean 'L2_KELLY_FRACTION'"):
        L2Config.from_env({"L2_KELY_FRACTION": "0.2"})


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("position_sizing.kelly_fraction", 1.5, "must be <= 1"),
        ("risk.daily_loss_limit", 0.0, "must be > 0"),
        ("risk.max_daily_trades", 2.5, "integer"),
        ("ensemble.voting", "majorty", "did you mean .majority."),
        ("risk.trailing_stop", "maybe", "true or false"),
        ("signals.ai_model_weight", float("nan"), "finite"),
    ],
)
def test_out_of_range_values_fail_with_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        L2Config.default().with_overrides({key: value})
    assert key in str(err.value)


def test_drawdown_reduce_must_not_exceed_halt():
    with pytest.raises(ConfigError, match="drawdown_reduce"):
        L2Config.default().with_overrides({"risk.drawdown_reduce": 0.5, "risk.drawdown_halt": 0.2})


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("risk:\n  daily_loss_limit: [0.1\n")
    with pytest.raises(ConfigError, match="line"):
        L2Config.from_file(p, env={})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        L2Config.from_file(tmp_path / "nope.yaml", env={})


def test_config_is_frozen_all_the_way_down():
    cfg = L2Config.default()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.risk.daily_loss_limit = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.symbols["BTCUSDT"] = None  # type: ignore[index]
    assert isinstance(cfg.technical.rsi_periods, tuple)


def test_yaml_dump_round_trips(tmp_path):
    cfg = L2Config.default()
    p = tmp_path / "resolved.yaml"
    p.write_text(cfg.to_yaml())
    assert L2Config.from_file(p, env={}).to_dict() == cfg.to_dict()
