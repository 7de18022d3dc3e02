"""Stable-baselines3 MLP policies exported to a plain numpy forward pass.

SB3's ``predict`` costs a few hundred microseconds per call (tensor conversion, ``no_grad``,
distribution objects); a specialist's MLP is three small matrix products. :func:`export_policy`
copies the actor's weights out of a loaded SB3 model once; :class:`FastPolicy` then evaluates
the deterministic action and a confidence in microseconds, for one observation or a batch
(e.g. one row per symbol).

Supported (deterministic action exactly as SB3 ``predict(obs, deterministic=True)`` computes it):

* PPO / A2C, ``Discrete(n)``: ``logits = action_net(policy_net(obs))``, action = argmax.
* PPO / A2C, ``Box`` (no gSDE): ``mean = action_net(policy_net(obs))``, action =
  ``clip(mean, low, high)``; the std is ``exp(log_std)`` (state independent).
* SAC (no gSDE): ``mu = mu(latent_pi(obs))``, action = ``tanh(mu)`` rescaled from [-1, 1] to
  [low, high]; the std is ``exp(clip(log_std(latent_pi(obs)), -20, 2))``.

Anything else (CNN extractors, gSDE, DQN/TD3/DDPG, unknown activations) raises
:class:`UnsupportedPolicy`; callers then fall back to SB3 ``predict``.

Confidence (documented in :mod:`l2_tactical.ensemble.confidence_calc`): discrete ->
rescaled probability of the chosen action; Gaussian -> ``erf(|mu| / (sigma sqrt 2))``, the
rescaled probability that a sampled action keeps the deterministic action's sign.
Torch and numpy sum in different orders, so continuous actions agree to ~1e-6, not bit for bit;
discrete actions agree exactly except on exact logit ties.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from l2_tactical.ensemble.confidence_calc import discrete_confidence_batch

Activation = Callable[[np.ndarray], np.ndarray]
_SQRT2 = math.sqrt(2.0)
_add_reduce = np.add.reduce  # ndarray.sum() without its Python wrapper (the same reduction)
_dot = np.dot
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class UnsupportedPolicy(ValueError):
    """The SB3 policy's structure has no numpy export; use SB3 ``predict`` instead."""


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _leaky(slope: float) -> Activation:
    return lambda x: np.where(x >= 0, x, x * np.float32(slope)).astype(np.float32)


def _elu(alpha: float) -> Activation:
    return lambda x: np.where(x > 0, x, np.float32(alpha) * np.expm1(x)).astype(np.float32)


def _silu(x: np.ndarray) -> np.ndarray:
    return (x / (1.0 + np.exp(-x))).astype(np.float32)


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x, out=x)


def _activation(module: Any) -> Activation:
    name = type(module).__name__
    simple: dict[str, Activation] = {"Tanh": _tanh, "ReLU": _relu, "Identity": _identity,
                                     "Sigmoid": _sigmoid, "SiLU": _silu}
    if name in simple:
        return simple[name]
    if name == "LeakyReLU":
        return _leaky(float(module.negative_slope))
    if name == "ELU":
        return _elu(float(module.alpha))
    raise UnsupportedPolicy(f"activation {name} has no numpy export")


@dataclass(frozen=True, slots=True)
class Dense:
    """``act(x @ weight + bias)``; weight stored ``[in, out]`` float32."""

    weight: np.ndarray
    bias: np.ndarray
    act: Activation = _identity

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.act(x @ self.weight + self.bias)


def _linear(module: Any, act: Activation = _identity) -> Dense:
    w = module.weight.detach().cpu().numpy().astype(np.float32).T.copy()
    b = (module.bias.detach().cpu().numpy().astype(np.float32) if module.bias is not None
         else np.zeros(w.shape[1], np.float32))
    return Dense(np.ascontiguousarray(w), b, act)


def _mlp(sequential: Any) -> tuple[Dense, ...]:
    """Linear layers of an ``nn.Sequential`` with the activation that follows each."""
    modules = list(sequential)
    layers: list[Dense] = []
    i = 0
    while i < len(modules):
        mod = modules[i]
        if type(mod).__name__ != "Linear":
            raise UnsupportedPolicy(f"layer {type(mod).__name__} at position {i} is not Linear")
        act: Activation = _identity
        if i + 1 < len(modules) and type(modules[i + 1]).__name__ != "Linear":
            act = _activation(modules[i + 1])
            i += 1
        layers.append(_linear(mod, act))
        i += 1
    return tuple(layers)


@dataclass(frozen=True, slots=True)
class FastPolicy:
    """A numpy actor: ``kind`` is ``"discrete"``, ``"gaussian"`` (PPO/A2C Box) or ``"squashed"`` (SAC)."""

    kind: str
    algorithm: str
    obs_size: int
    latent: tuple[Dense, ...]
    head: Dense
    log_std: np.ndarray | None = None  # gaussian: state-independent log std
    log_std_head: Dense | None = None  # squashed: state-dependent log std
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    n_actions: int = 0
    # float32 constants of :meth:`act_one`'s squash and clip, as arrays (array-array ufuncs skip the
    # Python-scalar conversion; the values and their float32 arithmetic are the same)
    _consts: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # the layers as plain (weight, bias, activation) tuples, read once per forward pass
        self._consts["layers"] = tuple((d.weight, d.bias, d.act) for d in self.latent)
        if self.low is not None and self.high is not None:
            shape = self.low.shape
            self._consts.update(one=np.ones(shape, np.float32), half=np.full(shape, 0.5, np.float32),
                                span=self.high - self.low, std_min=np.full(shape, LOG_STD_MIN, np.float32),
                                std_max=np.full(shape, LOG_STD_MAX, np.float32))

    def forward(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic actions and confidences for observations ``[batch, obs_size]`` (or ``[obs_size]``).

        Discrete -> int64 action indices ``[batch]``; Box -> float32 ``[batch, action_dim]``.
        """
        x = np.asarray(obs, dtype=np.float32)
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if x.shape[1] != self.obs_size:
            raise ValueError(f"observation has {x.shape[1]} values; the {self.algorithm} policy "
                             f"expects {self.obs_size}")
        for layer in self.latent:
            x = layer(x)
        out = self.head(x)
        if self.kind == "discrete":
            z = out - out.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            return np.argmax(out, axis=1), discrete_confidence_batch(p)
        if self.kind == "gaussian":
            assert self.log_std is not None and self.low is not None and self.high is not None
            conf = _gaussian_conf(out, np.exp(self.log_std))
            return np.clip(out, self.low, self.high), conf
        assert self.log_std_head is not None and self.low is not None and self.high is not None
        std = np.exp(np.clip(self.log_std_head(x), LOG_STD_MIN, LOG_STD_MAX))
        squashed = np.tanh(out)
        action = self.low + 0.5 * (squashed + 1.0) * (self.high - self.low)
        return action.astype(np.float32), _gaussian_conf(out, std)


    def act_one(self, obs: np.ndarray) -> tuple[float | int, float]:
        """One observation ``[obs_size]`` -> (first action dimension or action index, confidence).

        The same arithmetic as :meth:`forward` on a batch of one, without the batch bookkeeping
        (each float32 operation of :meth:`forward`, in the same order, on the one row).
        """
        if obs.shape != (self.obs_size,):
            raise ValueError(f"observation has shape {obs.shape}; the {self.algorithm} policy "
                             f"expects ({self.obs_size},)")
        x, out = self._forward_one(obs)
        if self.kind == "discrete":
            i = int(out.argmax())
            out -= out[i]
            n = out.shape[0]
            return i, min(1.0, max(0.0, (1.0 / float(_add_reduce(np.exp(out, out=out))) - 1.0 / n) / (1.0 - 1.0 / n)))
        assert self.low is not None and self.high is not None
        mu = out
        if self.kind == "gaussian":
            assert self.log_std is not None
            std = np.exp(self.log_std)
            action = np.clip(mu, self.low, self.high)
        else:
            assert self.log_std_head is not None
            k = self._consts
            log_std = x @ self.log_std_head.weight
            log_std += self.log_std_head.bias
            # np.clip(log_std, MIN, MAX): the same max-then-min per element (NaN stays NaN)
            std = np.exp(np.minimum(np.maximum(log_std, k["std_min"]), k["std_max"]))
            action = np.tanh(mu)  # low + 0.5 * (tanh(mu) + 1) * (high - low), operation by operation
            action += k["one"]
            action *= k["half"]
            action *= k["span"]
            action += self.low
        conf = [math.erf(abs(m) / (max(s, 1e-30) * _SQRT2)) for m, s in zip(mu.tolist(), std.tolist(), strict=True)]
        return float(action[0]), sum(conf) / len(conf)

    def _forward_one(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The MLP on one observation: ``(last latent layer, head output)``."""
        x = obs if obs.dtype == np.float32 else obs.astype(np.float32)
        for weight, bias, act in self._consts["layers"]:
            y = _dot(x, weight)
            y += bias
            x = act(y)
        head = self.head
        out = _dot(x, head.weight)
        out += head.bias
        return x, out

    def probs_one(self, obs: np.ndarray) -> np.ndarray:
        """Softmax action probabilities ``[n]`` of a discrete policy for one observation."""
        if self.kind != "discrete":
            raise ValueError(f"probs_one: a {self.kind} policy has no action probabilities")
        _, out = self._forward_one(obs)
        out -= out[out.argmax()]  # its max (the first NaN when there is one, as max() gives)
        np.exp(out, out=out)
        return out / _add_reduce(out)


def grouped_confidence(probs: np.ndarray, exposures: Sequence[float], chosen: int) -> float:
    """Rescaled probability mass of the actions whose exposure equals the chosen action's.

    Used when several actions mean the same exposure (a spot-trained specialist's short and flat
    both mean flat): with ``g`` distinct exposures, ``(mass - 1/g) / (1 - 1/g)``, clipped to [0, 1].

    >>> round(grouped_confidence(np.array([0.5, 0.3, 0.2]), (0.0, 0.0, 1.0), 0), 4)
    0.6
    """
    target = exposures[chosen]
    mass = float(sum(p for p, e in zip(probs.tolist(), exposures, strict=True) if e == target))
    g = len(set(exposures))
    if g < 2:
        return 1.0
    return min(1.0, max(0.0, (mass - 1.0 / g) / (1.0 - 1.0 / g)))


def _gaussian_conf(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    ratio = np.abs(mean.astype(np.float64)) / (np.maximum(std.astype(np.float64), 1e-30) * _SQRT2)
    return np.asarray([[math.erf(v) for v in row] for row in ratio]).mean(axis=1)


def _check_flatten(extractor: Any) -> None:
    if type(extractor).__name__ != "FlattenExtractor":
        raise UnsupportedPolicy(f"features extractor {type(extractor).__name__} has no numpy export")


def _box_bounds(space: Any) -> tuple[np.ndarray, np.ndarray]:
    return space.low.astype(np.float32).reshape(-1), space.high.astype(np.float32).reshape(-1)


def export_policy(model: Any, algorithm: str | None = None) -> FastPolicy:
    """Copy a loaded SB3 model's actor into a :class:`FastPolicy` (see the module docstring)."""
    from gymnasium import spaces

    algo = (algorithm or type(model).__name__).upper()
    policy = model.policy
    obs_space, act_space = policy.observation_space, policy.action_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        raise UnsupportedPolicy(f"observation space {obs_space} is not a flat Box")
    obs_size = int(obs_space.shape[0])
    if getattr(policy, "use_sde", False):
        raise UnsupportedPolicy("gSDE policies have no numpy export")
    if algo in ("PPO", "A2C"):
        return _export_actor_critic(policy, algo, obs_size, act_space)
    if algo == "SAC":
        actor = policy.actor
        _check_flatten(actor.features_extractor)
        low, high = _box_bounds(act_space)
        return FastPolicy(kind="squashed", algorithm=algo, obs_size=obs_size, latent=_mlp(actor.latent_pi),
                          head=_linear(actor.mu), log_std_head=_linear(actor.log_std), low=low, high=high)
    raise UnsupportedPolicy(f"algorithm {algo} has no numpy export")


def _export_actor_critic(policy: Any, algo: str, obs_size: int, act_space: Any) -> FastPolicy:
    from gymnasium import spaces

    _check_flatten(policy.pi_features_extractor)
    latent = _mlp(policy.mlp_extractor.policy_net)
    head = _linear(policy.action_net)
    if isinstance(act_space, spaces.Discrete):
        return FastPolicy(kind="discrete", algorithm=algo, obs_size=obs_size, latent=latent, head=head,
                          n_actions=int(act_space.n))
    if isinstance(act_space, spaces.Box):
        if getattr(policy, "squash_output", False):
            raise UnsupportedPolicy("squashed PPO/A2C outputs have no numpy export")
        low, high = _box_bounds(act_space)
        log_std = policy.log_std.detach().cpu().numpy().astype(np.float32)
        return FastPolicy(kind="gaussian", algorithm=algo, obs_size=obs_size, latent=latent, head=head,
                          log_std=log_std, low=low, high=high)
    raise UnsupportedPolicy(f"action space {act_space} has no numpy export")


def action_to_exposure(policy_kind: str, action: np.ndarray, action_values: Sequence[float] | None = None
                       ) -> np.ndarray:
    """Target exposures in [-1, 1] per row: discrete index -> ``action_values[index]``
    (default ``linspace(-1, 1, n)``, the envs' discrete3/discrete5 tables); Box -> first dimension, clipped."""
    if policy_kind == "discrete":
        values = np.asarray(action_values, dtype=np.float64)
        return values[np.asarray(action, dtype=np.int64).reshape(-1)]
    a = np.asarray(action, dtype=np.float64)
    a = a.reshape(a.shape[0], -1)[:, 0] if a.ndim > 1 else a.reshape(-1)
    return np.clip(a, -1.0, 1.0)


def default_action_values(n: int) -> tuple[float, ...]:
    """``linspace(-1, 1, n)``: 3 -> (-1, 0, 1), 5 -> (-1, -0.5, 0, 0.5, 1).

    >>> default_action_values(5)
    (-1.0, -0.5, 0.0, 0.5, 1.0)
    """
    if n < 2:
        raise ValueError(f"a discrete policy needs at least 2 actions, got {n}")
    return tuple(float(v) for v in np.linspace(-1.0, 1.0, n))
