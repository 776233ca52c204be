"""Weight initialisations (Keras 0.3 names, scales and signatures), drawn on the host.

Each function takes the weight ``shape`` as Keras 0.3's do (``normal(shape, scale=0.05,
name=None)``; ``name`` is accepted and unused, numlayers names weights by their layer)
and a keyword ``rng``: the ``numpy.random.Generator`` to draw from, by default
numlayers' seeded one, so ``glorot_uniform((3, 4))`` works as in Keras 0.3. Each
returns a float64 NumPy array; layers cast it to their dtype and move it to their
device, drawing through :func:`draw`, which also takes a user's function. Fans follow
Keras 0.3: for a 2-D ``(fan_in, fan_out)`` weight the obvious ones; for convolution
kernels ``(out, in, *receptive)`` the products.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from numlayers.random import get_generator

Initializer = Callable[..., np.ndarray]
#: the generator of a draw (None: numlayers' seeded one, see :func:`numlayers.set_seed`)
Rng = np.random.Generator | None


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
    shape: tuple[int, ...], scale: float = 0.05, name: Any = None, *, rng: Rng = None
) -> np.ndarray:
    return get_generator(rng).uniform(-scale, scale, size=shape)


def normal(
    shape: tuple[int, ...], scale: float = 0.05, name: Any = None, *, rng: Rng = None
) -> np.ndarray:
    return get_generator(rng).normal(0.0, scale, size=shape)


def lecun_uniform(shape: tuple[int, ...], name: Any = None, *, rng: Rng = None) -> np.ndarray:
    fan_in, _ = get_fans(shape)
    return uniform(shape, np.sqrt(3.0 / fan_in), rng=rng)


def glorot_normal(shape: tuple[int, ...], name: Any = None, *, rng: Rng = None) -> np.ndarray:
    fan_in, fan_out = get_fans(shape)
    return normal(shape, np.sqrt(2.0 / (fan_in + fan_out)), rng=rng)


def glorot_uniform(shape: tuple[int, ...], name: Any = None, *, rng: Rng = None) -> np.ndarray:
    fan_in, fan_out = get_fans(shape)
    return uniform(shape, np.sqrt(6.0 / (fan_in + fan_out)), rng=rng)


def he_normal(shape: tuple[int, ...], name: Any = None, *, rng: Rng = None) -> np.ndarray:
    fan_in, _ = get_fans(shape)
    return normal(shape, np.sqrt(2.0 / fan_in), rng=rng)


def he_uniform(shape: tuple[int, ...], name: Any = None, *, rng: Rng = None) -> np.ndarray:
    fan_in, _ = get_fans(shape)
    return uniform(shape, np.sqrt(6.0 / fan_in), rng=rng)


def orthogonal(
    shape: tuple[int, ...], scale: float = 1.1, name: Any = None, *, rng: Rng = None
) -> np.ndarray:
    """Saxe et al.'s orthogonal init, scaled by 1.1 as in Keras 0.3."""
    flat_shape = (shape[0], int(np.prod(shape[1:])))
    gaussian = get_generator(rng).normal(0.0, 1.0, flat_shape)
    u, _, v = np.linalg.svd(gaussian, full_matrices=False)
    q = u if u.shape == flat_shape else v
    return scale * q.reshape(shape)


def identity(
    shape: tuple[int, ...], scale: float = 1.0, name: Any = None, *, rng: Rng = None
) -> np.ndarray:
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"identity initialisation needs a square 2-D weight, received {shape}")
    return scale * np.identity(shape[0])


def zero(shape: tuple[int, ...], name: Any = None, *, rng: Rng = None) -> np.ndarray:
    return np.zeros(shape)


def one(shape: tuple[int, ...], name: Any = None, *, rng: Rng = None) -> np.ndarray:
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
    """The initialiser named ``identifier`` (or ``identifier`` itself if callable); draw
    from it with :func:`draw`."""
    if callable(identifier):
        return identifier
    if identifier not in INITIALIZERS:
        raise ValueError(
            f"unknown initialisation {identifier!r}; choose one of {sorted(INITIALIZERS)}"
        )
    return INITIALIZERS[identifier]


def draw(init: Any, shape: tuple[int, ...], rng: Rng) -> np.ndarray:
    """A weight of ``shape`` from ``init``, a name or a function, called as its
    parameters say: with ``rng=`` (the functions above, and any with an ``rng``
    parameter), with ``name=None`` (Keras 0.3's ``lambda shape, name: normal(shape,
    scale=0.001, name=name)``), with the generator second (a function of two
    parameters), or with the shape alone (``lambda shape: ...``)."""
    function = get(init)
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a callable Python cannot describe: the shape alone
        return np.asarray(function(shape))
    if "rng" in parameters:
        return np.asarray(function(shape, rng=rng))
    if "name" in parameters:
        return np.asarray(function(shape, name=None))
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters.values() if p.kind in positional and p.default is p.empty]
    if len(required) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters.values()):
        return np.asarray(function(shape, rng))
    return np.asarray(function(shape))
