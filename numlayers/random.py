"""Seeding: one place that hands out random generators and dropout seeds.

``set_seed(n)`` makes every later weight initialisation, dropout mask and
shuffle reproducible bit for bit on the CPU; layers and models also take an
explicit ``seed`` (an int or a ``numpy.random.Generator``) that overrides it.

Until ``set_seed`` is called, those draws follow NumPy's global random state, as
Keras 0.3's did: a script that starts with ``np.random.seed(1337)`` (every Keras 0.3
example does) builds and trains the same model at every run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: numlayers' own generator once ``set_seed`` was called; None: follow NumPy's global state
_global_generator: np.random.Generator | None = None

_LARGEST_SEED = 2**63 - 1


def set_seed(seed: int) -> None:
    """Reseed numlayers' global generator (initial weights, dropout, shuffling); from then
    on NumPy's global seed no longer decides them."""
    global _global_generator
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"set_seed expects a non-negative integer, received {seed!r}")
    _global_generator = np.random.default_rng(int(seed))


def get_generator(seed: Any = None) -> np.random.Generator:
    """``seed`` if it is a Generator, a new one seeded by an int, else the global one (a
    new one seeded from NumPy's global state until :func:`set_seed` is called)."""
    if seed is None:
        if _global_generator is not None:
            return _global_generator
        return np.random.default_rng(_from_numpy_global_state())
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(
            f"seed must be None, a non-negative int or a numpy Generator, received {seed!r}"
        )
    return np.random.default_rng(int(seed))


def draw_seed(seed: Any = None) -> int:
    """A 63-bit integer seed drawn from :func:`get_generator` (for counter-based kernels)."""
    if seed is None and _global_generator is None:
        return _from_numpy_global_state()
    return int(get_generator(seed).integers(0, _LARGEST_SEED))


def _from_numpy_global_state() -> int:
    """A seed drawn from NumPy's global random state (what ``np.random.seed`` sets)."""
    return int(np.random.randint(0, _LARGEST_SEED, dtype=np.int64))  # noqa: NPY002 - the point
