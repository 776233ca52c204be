"""Seeding: one place that hands out random generators and dropout seeds.

``set_seed(n)`` makes every later weight initialisation, dropout mask and
shuffle reproducible bit for bit on the CPU; layers and models also take an
explicit ``seed`` (an int or a ``numpy.random.Generator``) that overrides it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_global_generator = np.random.default_rng()


def set_seed(seed: int) -> None:
    """Reseed numlayers' global generator (initial weights, dropout, shuffling)."""
    global _global_generator
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"set_seed expects a non-negative integer, received {seed!r}")
    _global_generator = np.random.default_rng(int(seed))


def get_generator(seed: Any = None) -> np.random.Generator:
    """``seed`` if it is a Generator, a new one seeded by an int, else the global one."""
    if seed is None:
        return _global_generator
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(
            f"seed must be None, a non-negative int or a numpy Generator, received {seed!r}"
        )
    return np.random.default_rng(int(seed))


def draw_seed(seed: Any = None) -> int:
    """A 63-bit integer seed drawn from :func:`get_generator` (for counter-based kernels)."""
    return int(get_generator(seed).integers(0, 2**63 - 1))
