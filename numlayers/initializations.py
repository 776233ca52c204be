"""Weight initialisations (Keras 0.3 names and scales), drawn on the host.

Each function takes the weight ``shape`` and a ``numpy.random.Generator`` (by default
numlayers' seeded generator, so ``glorot_uniform((3, 4))`` works as in Keras 0.3) and
returns a float64 NumPy array; layers cast it to their dtype and move it to
their device. Fans follow Keras 0.3: for a 2-D ``(fan_in, fan_out)`` weight the
obvious ones; for convolution kernels ``(out, in, *receptive)`` the products.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from numlayers.random import get_generator

Initializer = Callable[[tuple[int, ...], np.random.Generator], np.ndarray]


def get_fans(shape: tuple[int, ...]) -> tuple[float, float]:
    """``(fan_in, fan_out)`` of a weight of ``shape``."""
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    if len(shape) > 2:
        receptive = float(np.prod(shape[2:]))
        return shape[1] * receptive, shape[0] * receptive
    size = float(np.prod(shape)) if shape else 1.0
    return size, size


def uniform(
    shape: tuple[int, ...], rng: np.random.Generator | None = None, scale: float = 0.05
) -> np.ndarray:
    return get_generator(rng).uniform(-scale, scale, size=shape)


def normal(
    shape: tuple[int, ...], rng: np.random.Generator | None = None, scale: float = 0.05
) -> np.ndarray:
    return get_generator(rng).normal(0.0, scale, size=shape)


def lecun_uniform(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    fan_in, _ = get_fans(shape)
    return uniform(shape, rng, np.sqrt(3.0 / fan_in))


def glorot_normal(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    fan_in, fan_out = get_fans(shape)
    return normal(shape, rng, np.sqrt(2.0 / (fan_in + fan_out)))


def glorot_uniform(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    fan_in, fan_out = get_fans(shape)
    return uniform(shape, rng, np.sqrt(6.0 / (fan_in + fan_out)))


def he_normal(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    fan_in, _ = get_fans(shape)
    return normal(shape, rng, np.sqrt(2.0 / fan_in))


def he_uniform(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    fan_in, _ = get_fans(shape)
    return uniform(shape, rng, np.sqrt(6.0 / fan_in))


def orthogonal(
    shape: tuple[int, ...], rng: np.random.Generator | None = None, scale: float = 1.1
) -> np.ndarray:
    """Saxe et al.'s orthogonal init, scaled by 1.1 as in Keras 0.3."""
    flat_shape = (shape[0], int(np.prod(shape[1:])))
    gaussian = get_generator(rng).normal(0.0, 1.0, flat_shape)
    u, _, v = np.linalg.svd(gaussian, full_matrices=False)
    q = u if u.shape == flat_shape else v
    return scale * q.reshape(shape)


def identity(
    shape: tuple[int, ...], rng: np.random.Generator | None = None, scale: float = 1.0
) -> np.ndarray:
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"identity initialisation needs a square 2-D weight, received {shape}")
    return scale * np.identity(shape[0])


def zero(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    return np.zeros(shape)


def one(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    return np.ones(shape)


INITIALIZERS: dict[str, Initializer] = {
    "uniform": uniform,
    "normal": normal,
    "lecun_uniform": lecun_uniform,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "orthogonal": orthogonal,
    "identity": identity,
    "zero": zero,
    "one": one,
}


def get(identifier: Any) -> Initializer:
    """The initialiser named ``identifier`` (or ``identifier`` itself if callable)."""
    if callable(identifier):
        return identifier
    if identifier not in INITIALIZERS:
        raise ValueError(
            f"unknown initialisation {identifier!r}; choose one of {sorted(INITIALIZERS)}"
        )
    return INITIALIZERS[identifier]
