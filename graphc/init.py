"""Initializers: ``init(rng, shape, dtype) -> array``.

Weight matrices are (fan_in, fan_out), the batch-major convention ``x @ W + b``.
The generator is per-variable (see :class:`graphc.runtime.store.Store`), so
initial values do not depend on the order layers were built in.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphc.errors import GraphcError

Initializer = Callable[[np.random.Generator, tuple, str], np.ndarray]


def _fans(shape: tuple) -> tuple[int, int]:
    if len(shape) < 2:
        return int(np.prod(shape)), int(np.prod(shape))
    return int(np.prod(shape[:-1])), int(shape[-1])


def glorot_uniform(rng: np.random.Generator, shape: tuple, dtype: str) -> np.ndarray:
    """Glorot & Bengio (2010): keeps activation variance through tanh/sigmoid layers."""
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(dtype)


def glorot_normal(rng: np.random.Generator, shape: tuple, dtype: str) -> np.ndarray:
    fan_in, fan_out = _fans(shape)
    return (rng.standard_normal(shape) * np.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


def he_normal(rng: np.random.Generator, shape: tuple, dtype: str) -> np.ndarray:
    """He et al. (2015): variance 2/fan_in, for ReLU layers that zero half their inputs."""
    fan_in, _ = _fans(shape)
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def he_uniform(rng: np.random.Generator, shape: tuple, dtype: str) -> np.ndarray:
    fan_in, _ = _fans(shape)
    limit = np.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, shape).astype(dtype)


def normal(std: float = 0.01) -> Initializer:
    """Small Gaussian weights, the classic initialization of the course slides."""
    def init(rng: np.random.Generator, shape: tuple, dtype: str) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(dtype)
    return init


def constant(value: float) -> Initializer:
    def init(rng: np.random.Generator, shape: tuple, dtype: str) -> np.ndarray:
        return np.full(shape, value, dtype)
    return init


zeros = constant(0.0)
ones = constant(1.0)

BY_NAME: dict[str, Initializer] = {
    "glorot": glorot_uniform, "glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
    "he": he_normal, "he_normal": he_normal, "he_uniform": he_uniform, "normal": normal(0.01),
    "zeros": zeros,
}


def resolve(init: "str | Initializer") -> Initializer:
    if callable(init):
        return init
    if init not in BY_NAME:
        raise GraphcError(f"unknown initializer {init!r}; choose one of {', '.join(BY_NAME)} or pass a function")
    return BY_NAME[init]
