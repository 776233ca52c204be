"""Inverted dropout with a counter-based mask: nothing random is stored or transferred.

Operations (both devices; arrays of any shape are taken as flat, C-contiguous):

- ``dropout_forward(x, seed, keep_threshold, scale, out)``: ``out[i] = x[i] * scale``
  where element ``i`` is kept, else ``0``
- ``dropout_backward(grad_out, seed, keep_threshold, scale, grad_x)``: the same mask,
  ``grad_x[i] = grad_out[i] * scale`` where kept, else ``0``
- ``dropout_mask(seed, keep_threshold, out)``: ``out[i] = 1`` where kept, else ``0``
  (for tests and debugging)

Element ``i`` (its flat index) is kept when a hash of ``(seed, i)`` to 24 uniform bits
is at least ``keep_threshold`` (:func:`is_kept`). The caller computes
``keep_threshold = int(p * RANDOM_RANGE)`` (``RANDOM_RANGE = 2**24``) for a drop
probability ``p`` and
``scale = 1 / (1 - p)``; ``seed`` is an int in ``[0, 2**63)``. The backward pass
recomputes the forward mask from the same seed, and the CPU and CUDA kernels give
identical masks, so a model's dropout is reproducible across devices.

The hash works on 32-bit words held in uint64 and keeps every product below
``2**64``: no step depends on wrapping overflow, so the same code is exact when the
CUDA simulator runs it with NumPy scalars (which warn on overflow), and the masked
products vectorise on the CPU as 32 x 32 -> 64-bit multiplies.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from numlayers.kernels.cuda_support import blocks_for, new_registry

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None

# Every constant is uint64: mixing uint64 with Numba's int64 promotes to float64.
LOW_32_BITS = np.uint64(0xFFFFFFFF)
SHIFT_8 = np.uint64(8)
SHIFT_15 = np.uint64(15)
SHIFT_16 = np.uint64(16)
SHIFT_32 = np.uint64(32)
# so that index 0 under seed 0 does not hash the all-zero state (a fixed point)
HASH_START = np.uint64(0x9E3779B9)
# the multipliers of Chris Wellons' "lowbias32" integer hash (an avalanching bijection)
MIX_MULTIPLIER_1 = np.uint64(0x21F0AAAD)
MIX_MULTIPLIER_2 = np.uint64(0x735A2D97)
#: the hash gives values in ``[0, RANDOM_RANGE)``; ``keep_threshold = int(p * RANDOM_RANGE)``
RANDOM_RANGE = 2**24

#: arrays at least this long use the CPU loops over both cores (the hash is compute-bound)
PARALLEL_MIN_SIZE = 1 << 14


def is_kept(seed, index, keep_threshold):
    """True when element ``index`` survives dropout under ``seed`` (a uint64).

    The 128-bit word ``(seed, index)`` is fed to the state 32 bits at a time, index
    first, each followed by a lowbias32 round; the top 24 bits of the final state
    are the element's random number.
    """
    state = HASH_START
    low = np.uint64(index)
    high = seed
    for _ in range(4):
        state ^= low & LOW_32_BITS
        state ^= state >> SHIFT_16
        state = (state * MIX_MULTIPLIER_1) & LOW_32_BITS
        state ^= state >> SHIFT_15
        state = (state * MIX_MULTIPLIER_2) & LOW_32_BITS
        state ^= state >> SHIFT_15
        low = (low >> SHIFT_32) | ((high & LOW_32_BITS) << SHIFT_32)
        high >>= SHIFT_32
    return np.int64(state >> SHIFT_8) >= keep_threshold


is_kept_cpu = njit(inline="always")(is_kept)


def compile_serial_and_parallel(function: Callable[..., None]) -> tuple[Any, Any]:
    """Compile a loop written with ``prange`` twice: on one core, and over all of them.

    Without ``parallel=True`` Numba runs ``prange`` as ``range``. The copy gets its
    own qualified name because Numba's on-disk cache names entries after that, not
    after the compile flags, and would otherwise hand one variant the other's code.
    """
    serial = njit(cache=True)(function)
    twin = types.FunctionType(
        function.__code__, function.__globals__, function.__name__, None, function.__closure__
    )
    twin.__qualname__ = f"{function.__qualname__}_parallel"
    return serial, njit(cache=True, parallel=True)(twin)


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    cast = dtype.type
    zero = dtype.type(0)
    one = dtype.type(1)

    def apply_mask(x, seed, keep_threshold, scale, out):
        for i in prange(out.size):
            out[i] = x[i] * scale if is_kept_cpu(seed, i, keep_threshold) else zero

    def write_mask(seed, keep_threshold, out):
        for i in prange(out.size):
            out[i] = one if is_kept_cpu(seed, i, keep_threshold) else zero

    apply_mask_serial, apply_mask_parallel = compile_serial_and_parallel(apply_mask)
    write_mask_serial, write_mask_parallel = compile_serial_and_parallel(write_mask)

    def dropout_forward(
        x: np.ndarray, seed: int, keep_threshold: int, scale: float, out: np.ndarray
    ) -> None:
        loop = apply_mask_parallel if out.size >= PARALLEL_MIN_SIZE else apply_mask_serial
        loop(x.reshape(-1), np.uint64(seed), np.int64(keep_threshold), cast(scale), out.reshape(-1))

    def dropout_mask(seed: int, keep_threshold: int, out: np.ndarray) -> None:
        loop = write_mask_parallel if out.size >= PARALLEL_MIN_SIZE else write_mask_serial
        loop(np.uint64(seed), np.int64(keep_threshold), out.reshape(-1))

    # the backward pass scales the incoming gradient by the very same mask
    return {
        "dropout_forward": dropout_forward,
        "dropout_backward": dropout_forward,
        "dropout_mask": dropout_mask,
    }


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    cast = dtype.type
    zero = dtype.type(0)
    one = dtype.type(1)
    vector = registry.array(1)
    kept = registry.device(is_kept)

    @registry.jit(vector, numba.types.uint64, numba.types.int64, registry.scalar, vector)
    def apply_mask_kernel(x, seed, keep_threshold, scale, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = x[i] * scale if kept(seed, i, keep_threshold) else zero

    @registry.jit(numba.types.uint64, numba.types.int64, vector)
    def write_mask_kernel(seed, keep_threshold, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = one if kept(seed, i, keep_threshold) else zero

    def dropout_forward(x: Any, seed: int, keep_threshold: int, scale: float, out: Any) -> None:
        apply_mask_kernel[blocks_for(out.size), 256](
            x.reshape(x.size),
            np.uint64(seed),
            np.int64(keep_threshold),
            cast(scale),
            out.reshape(out.size),
        )

    def dropout_mask(seed: int, keep_threshold: int, out: Any) -> None:
        write_mask_kernel[blocks_for(out.size), 256](
            np.uint64(seed), np.int64(keep_threshold), out.reshape(out.size)
        )

    return {
        "dropout_forward": dropout_forward,
        "dropout_backward": dropout_forward,
        "dropout_mask": dropout_mask,
    }
