"""Hyperparameter files in rl-zoo3's format: ``training/hyperparams/<algo>.yml``, one entry per env id.

::

    L2Trend-v0:
      n_timesteps: !!float 2e5
      policy: 'MlpPolicy'
      n_envs: 8
      learning_rate: lin_3e-4            # rl-zoo3's linear schedule, or a number
      policy_kwargs: "dict(net_arch=[64, 64])"
      ...any keyword of the SB3 algorithm...

rl-zoo3 evaluates ``policy_kwargs`` with ``eval``; here it is parsed without evaluating code: a
``dict(...)`` call whose values are literals, nested ``dict(...)`` calls or ``nn.<Activation>``
names. rl-zoo3 keys that change the environment (``normalize``, ``frame_stack``, ``env_wrapper``,
...) are refused with an error naming them, because the trading envs must stay exactly what the
execution simulator defines.
"""

from __future__ import annotations

import ast
import difflib
from pathlib import Path
from typing import Any

from l2_tactical.errors import ConfigError

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
ZOO_KEYS = ("n_timesteps", "policy", "n_envs")
_UNSUPPORTED = ("normalize", "normalize_kwargs", "frame_stack", "env_wrapper", "vec_env_wrapper", "callback")
_ACTIVATIONS = ("ReLU", "Tanh", "ELU", "LeakyReLU", "SiLU", "GELU", "Sigmoid")


def hyperparams_path(algorithm: str, directory: str | Path | None = None) -> Path:
    """``training/hyperparams/ppo.yml`` for ``"PPO"``."""
    return Path(directory or HYPERPARAMS_DIR) / f"{algorithm.lower()}.yml"


def load_hyperparams(algorithm: str, env_id: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The raw entry for ``env_id`` in the algorithm's file (a copy); ConfigError naming what is missing."""
    import yaml

    path = hyperparams_path(algorithm, directory)
    if not path.is_file():
        raise ConfigError(f"no hyperparameter file for algorithm {algorithm}: {path} does not exist")
    table = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if env_id not in table:
        hint = difflib.get_close_matches(env_id, list(table), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{path}: no entry for env id {env_id!r}{extra}; entries: {sorted(table)}")
    entry = dict(table[env_id] or {})
    bad = sorted(set(entry) & set(_UNSUPPORTED))
    if bad:
        raise ConfigError(
            f"{path}: {env_id}: rl-zoo3 key(s) {bad} are not supported here (they would change the "
            "env the execution simulator defines)"
        )
    return entry


def split_hyperparams(entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(zoo settings: n_timesteps/policy/n_envs, algorithm kwargs)`` with schedules and policy_kwargs parsed."""
    zoo = {key: entry[key] for key in ZOO_KEYS if key in entry}
    kwargs = {key: value for key, value in entry.items() if key not in ZOO_KEYS}
    if "n_timesteps" in zoo:
        zoo["n_timesteps"] = int(float(zoo["n_timesteps"]))
    if "n_envs" in zoo:
        zoo["n_envs"] = int(zoo["n_envs"])
    for key in ("learning_rate", "clip_range"):
        if key in kwargs:
            kwargs[key] = parse_schedule(key, kwargs[key])
    if "policy_kwargs" in kwargs and isinstance(kwargs["policy_kwargs"], str):
        kwargs["policy_kwargs"] = parse_policy_kwargs(kwargs["policy_kwargs"])
    return zoo, kwargs


def parse_schedule(key: str, value: Any) -> Any:
    """A number, or rl-zoo3's ``lin_<start>`` (linear decay to 0 over training) as an SB3 LinearSchedule.

    >>> parse_schedule("learning_rate", "3e-4")
    0.0003
    """
    if isinstance(value, str) and value.startswith("lin_"):
        from stable_baselines3.common.utils import LinearSchedule

        return LinearSchedule(float(value[4:]), 0.0, 1.0)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}: expected a number or 'lin_<number>'") from None


def parse_policy_kwargs(text: str) -> dict[str, Any]:
    """``"dict(net_arch=[64, 64], activation_fn=nn.Tanh)"`` -> a dict, without evaluating code.

    >>> parse_policy_kwargs("dict(net_arch=dict(pi=[64, 64], vf=[32]), ortho_init=False)")
    {'net_arch': {'pi': [64, 64], 'vf': [32]}, 'ortho_init': False}
    """
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ConfigError(f"policy_kwargs={text!r}: not a Python expression: {exc.msg}") from None
    value = _value(node, text)
    if not isinstance(value, dict):
        raise ConfigError(f"policy_kwargs={text!r}: expected dict(...) or {{...}}")
    return value


def _value(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _value(kw.value, text) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.Dict):
        return {ast.literal_eval(k): _value(v, text) for k, v in zip(node.keys, node.values, strict=True) if k}
    if isinstance(node, ast.Attribute) and node.attr in _ACTIVATIONS:
        import torch

        return getattr(torch.nn, node.attr)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ConfigError(
            f"policy_kwargs={text!r}: unsupported element {ast.unparse(node)!r} (literals, "
            f"dict(...) and nn.{{{','.join(_ACTIVATIONS)}}} only)"
        ) from None


def to_plain(value: Any) -> Any:
    """Hyperparameters as JSON/YAML-ready values (schedules and activation classes by name)."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, type):
        return f"nn.{value.__name__}"
    return repr(value)
