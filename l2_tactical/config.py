"""L2Config: YAML file + ``L2_*`` environment overrides, validated, frozen.

Every default lives in ``config/l2_config.yaml`` (no silent defaults in code).
A user file is layered over that file, so it only names the keys it changes;
``L2_<KEY>`` environment variables override both. Unknown keys and
out-of-range values fail at load with the key's dotted name and a
"did you mean" hint. The loaded config is frozen (nested frozen dataclasses,
tuples and read-only mappings).

>>> cfg = L2Config.default()
>>> cfg.position_sizing.kelly_fraction
0.25
>>> cfg.with_overrides({"risk.daily_loss_limit": 0.03}).risk.daily_loss_limit
0.03
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from l2_tactical.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PACKAGE_ROOT / "config" / "l2_config.yaml"
TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "1d")



def rng(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, choices: tuple[str, ...] = ()
) -> Any:
    """A required field with a range or a set of allowed values."""
    return dataclasses.field(metadata={"lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AIModelConfig:
    model_path: str
    model_type: str = rng(choices=("sb3", "sklearn", "pkl"))
    prediction_threshold: float = rng(0, 1)
    cache_predictions: bool
    cache_ttl_seconds: float = rng(0)
    timeout_ms: float = rng(0, lo_open=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SignalsConfig:
    min_signal_strength: float = rng(0, 1)
    ai_model_weight: float = rng(0, 1)
    technical_weight: float = rng(0, 1)
    pattern_weight: float = rng(0, 1)
    signal_expiry_minutes: float = rng(0, lo_open=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnsembleModelConfig:
    path: str
    algorithm: str = rng(choices=("PPO", "A2C", "SAC", "TD3", "DDPG", "DQN"))
    weight: float = rng(0)
    specialization: str = rng(choices=("trend_following", "mean_reversion", "volatility_breakout"))
    timeframes: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnsembleConfig:
    voting: str = rng(choices=("weighted", "majority", "confidence_weighted"))
    consensus_threshold: float = rng(0, 1)
    confidence_threshold: float = rng(0, 1)
    performance_window: int = rng(2)
    min_weight: float = rng(0, 1)
    performance_sensitivity: float = rng(0)
    regime_boost: float = rng(1)
    models: Mapping[str, EnsembleModelConfig]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PositionSizingConfig:
    method: str = rng(choices=("min", "weighted"))
    kelly_fraction: float = rng(0, 1)
    target_volatility: float = rng(0, 5, lo_open=True)
    max_position_pct: float = rng(0, 1, lo_open=True)
    max_position_size: float = rng(0, lo_open=True)
    max_portfolio_heat: float = rng(0, 1, lo_open=True)
    correlation_adjustment: bool
    correlation_window: int = rng(10)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RiskConfig:
    default_stop_pct: float = rng(0, 0.5, lo_open=True)
    stop_method: str = rng(choices=("fixed", "atr", "volatility", "support_resistance"))
    atr_multiplier: float = rng(0, 20, lo_open=True)
    take_profit_r: float = rng(0, lo_open=True)
    max_loss_per_trade: float = rng(0, 1, lo_open=True)
    trailing_stop: bool
    breakeven_threshold: float = rng(0)
    max_correlation: float = rng(0, 1)
    daily_loss_limit: float = rng(0, 1, lo_open=True)
    drawdown_reduce: float = rng(0, 1, lo_open=True)
    drawdown_halt: float = rng(0, 1, lo_open=True)
    max_daily_trades: int = rng(0)
    max_concurrent_positions: int = rng(0)
    exposure_limit: float = rng(0, 10)
    volatility_spike_multiple: float = rng(0, lo_open=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TechnicalConfig:
    rsi_periods: tuple[int, ...]
    macd: tuple[int, ...]
    bollinger_period: int = rng(2)
    bollinger_std: float = rng(0, lo_open=True)
    atr_period: int = rng(1)
    ema_periods: tuple[int, ...]
    sma_periods: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TimeframesConfig:
    primary: str = rng(choices=TIMEFRAMES)
    secondary: tuple[str, ...]
    alignment_threshold: float = rng(0, 1)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WalkForwardConfig:
    train_end: str
    validation_end: str
    purge_bars: int = rng(0)

    def __post_init__(self) -> None:
        for key in ("train_end", "validation_end"):
            value = getattr(self, key)
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ConfigError(f"walk_forward.{key}={value!r}: must be an ISO date like 2023-01-01") from None
        if self.validation_end <= self.train_end:
            raise ConfigError(f"walk_forward.validation_end={self.validation_end!r} must be after "
                              f"walk_forward.train_end={self.train_end!r}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionConfig:
    fee_bps: float = rng(0, 1000)
    half_spread_bps: float = rng(0, 1000)
    slippage_bps: float = rng(0, 1000)
    volatility_slippage: float = rng(0, 1)
    initial_cash: float = rng(0, lo_open=True)
    quote_asset: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SymbolLimits:
    lot_step: float = rng(0, lo_open=True)
    min_qty: float = rng(0)
    min_notional: float = rng(0)
    max_notional: float = rng(0, lo_open=True)
    max_qty: float = rng(0, lo_open=True)
    max_exposure: float = rng(0, 1, lo_open=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BusConfig:
    url: str
    stream_prefix: str
    heartbeat_seconds: float = rng(0, lo_open=True)
    heartbeat_timeout_seconds: float = rng(0, lo_open=True)
    max_deliveries: int = rng(1)
    retry_base_seconds: float = rng(0, lo_open=True)
    retry_max_seconds: float = rng(0, lo_open=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class L1Config:
    mode: str = rng(choices=("PAPER", "TESTNET", "LIVE"))
    journal_url: str
    metrics_csv: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class L2Config:
    ai_model: AIModelConfig
    signals: SignalsConfig
    ensemble: EnsembleConfig
    position_sizing: PositionSizingConfig
    risk: RiskConfig
    technical: TechnicalConfig
    timeframes: TimeframesConfig
    walk_forward: WalkForwardConfig
    execution: ExecutionConfig
    symbols: Mapping[str, SymbolLimits]
    bus: BusConfig
    l1: L1Config
    source: str = "<defaults>"

    def __post_init__(self) -> None:
        if self.risk.drawdown_reduce > self.risk.drawdown_halt:
            raise ConfigError(
                f"risk.drawdown_reduce={self.risk.drawdown_reduce} must not exceed "
                f"risk.drawdown_halt={self.risk.drawdown_halt}"
            )
        for key in ("primary",):
            tf = getattr(self.timeframes, key)
            if tf not in TIMEFRAMES:
                raise ConfigError(f"timeframes.{key}={tf!r}: not one of {TIMEFRAMES}")
        for tf in self.timeframes.secondary:
            if tf not in TIMEFRAMES:
                raise ConfigError(f"timeframes.secondary: {tf!r} is not one of {TIMEFRAMES}")

    # ------------------------------------------------------------ constructors
    @classmethod
    def default(cls) -> L2Config:
        """The bundled defaults, without environment overrides."""
        return cls.from_file(DEFAULT_CONFIG_PATH, env={})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> L2Config:
        """Load ``path`` layered over the bundled defaults, then ``L2_*`` overrides from ``env``
        (``os.environ`` when not given; pass ``{}`` to ignore the environment)."""
        data = _read_yaml(DEFAULT_CONFIG_PATH)
        path = Path(path)
        if path.resolve() != DEFAULT_CONFIG_PATH:
            _merge(data, _read_yaml(path), str(path))
        overrides = _env_overrides(os.environ if env is None else env)
        for dotted, raw in overrides.items():
            _set_dotted(data, dotted, yaml.safe_load(raw) if raw.strip() else raw)
        data["source"] = str(path)
        return _build(cls, data, "")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> L2Config:
        """The file named by ``L2_CONFIG`` (default: the bundled one) plus ``L2_*`` overrides."""
        env = os.environ if env is None else env
        return cls.from_file(env.get("L2_CONFIG", str(DEFAULT_CONFIG_PATH)), env=env)

    def with_overrides(self, overrides: Mapping[str, Any]) -> L2Config:
        """A new config with dotted keys replaced, validated like a file (tests, CLI flags)."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value)
        return _build(type(self), data, "")

    def to_dict(self) -> dict[str, Any]:
        return typing.cast(dict[str, Any], _plain(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def symbol_limits(self, symbol: str) -> SymbolLimits:
        try:
            return self.symbols[symbol]
        except KeyError:
            raise ConfigError(f"symbols.{symbol}: no limits configured (known: {sorted(self.symbols)})") from None


# ---------------------------------------------------------------- internals

_ALIASES = {
    "AI_MODEL_PATH": "ai_model.model_path",
    "AI_MODEL_TYPE": "ai_model.model_type",
    "ENSEMBLE_MODELS": "ensemble.models",
    "CONFIG": "",
}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], extra: Mapping[str, Any], where: str, prefix: str = "") -> None:
    for key, value in extra.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{where}: unknown key '{dotted}'{_hint(str(key), base)}")
        open_map = dotted in ("ensemble.models", "symbols")
        if isinstance(value, Mapping) and isinstance(base[key], dict) and not open_map:
            _merge(base[key], value, where, dotted + ".")
        else:
            base[key] = value


def _leaf_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for section in dataclasses.fields(L2Config):
        tp = typing.get_type_hints(L2Config)[section.name]
        if dataclasses.is_dataclass(tp):
            for f in dataclasses.fields(tp):
                index.setdefault(f.name.upper(), f"{section.name}.{f.name}")
                index[f"{section.name}_{f.name}".upper()] = f"{section.name}.{f.name}"
    index.update(_ALIASES)
    return index


def _env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    index = _leaf_index()
    out: dict[str, str] = {}
    for name, raw in env.items():
        if not name.startswith("L2_"):
            continue
        key = name[3:]
        if key not in index:
            known = [f"L2_{k}" for k in index]
            raise ConfigError(f"environment variable {name}: unknown setting{_hint(name, known)}")
        if index[key]:
            out[index[key]] = raw
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = data
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            known = node if isinstance(node, dict) else {}
            raise ConfigError(f"unknown key '{'.'.join(parts[: i + 1])}'{_hint(part, known)}")
        if i == len(parts) - 1:
            node[part] = value
        node = node[part]


def _hint(key: str, known: Mapping[str, Any] | typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build(cls: type[Any], data: Any, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown key '{prefix}{key}'{_hint(str(key), fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is not dataclasses.MISSING:
                continue
            raise ConfigError(f"missing key '{prefix}{name}'")
        kwargs[name] = _convert(hints[name], data[name], f"{prefix}{name}", f.metadata)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, key + ".")
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        inner = typing.get_args(tp)[1]
        return types.MappingProxyType({str(k): _convert(inner, v, f"{key}.{k}", {}) for k, v in value.items()})
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_convert(inner, v, f"{key}[{i}]", {}) for i, v in enumerate(value))
    return _scalar(tp, value, key, meta)


def _scalar(tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={value!r}: must be true or false")
    if tp in (int, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            num = tp(value)
            if tp is int and float(value) != num:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: must be a{'n integer' if tp is int else ' number'}") from None
        if num != num or num in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}={value!r}: must be finite")
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and (num < lo or (meta.get("lo_open") and num == lo)):
            raise ConfigError(f"{key}={value!r}: must be {'>' if meta.get('lo_open') else '>='} {lo}")
        if hi is not None and num > hi:
            raise ConfigError(f"{key}={value!r}: must be <= {hi}")
        return num
    text = str(value) if value is not None else ""
    choices = meta.get("choices") or ()
    if choices and text not in choices:
        raise ConfigError(f"{key}={value!r}: must be one of {', '.join(choices)}{_hint(text, choices)}")
    return text


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "source"}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj
