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

from typing import Any, Protocol

import numba
import numpy as np

from numlayers.kernels.toolkit import (
    CudaKernels,
    DeviceArray,
    cpu_inline,
    cuda_kernels,
    device_index_loop,
)

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

#: The work of one element in the toolkit's units (one elementwise multiply-add): the
#: hash is four rounds of two 64-bit multiplies, three shifts and three xors, and an
#: element takes 16 to 18 times as long as ``scale_add_into``'s (serial, measured on
#: the 2-core development machine).
HASH_COST = 16.0


@cpu_inline
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


# ``zero`` and ``one`` come in the layer dtype (a literal would be float64 on a GPU).


@cpu_inline
def dropout_element(index, x, seed, keep_threshold, scale, zero, out):
    out[index] = x[index] * scale if is_kept(seed, index, keep_threshold) else zero


@cpu_inline
def dropout_mask_element(index, seed, keep_threshold, one, zero, out):
    out[index] = one if is_kept(seed, index, keep_threshold) else zero


def dropout_operations(dtype: np.dtype, cuda: CudaKernels | None) -> dict[str, Any]:
    """The dropout operations on the CPU (``cuda`` None) or on CUDA."""
    cast = dtype.type
    zero = cast(0)
    one = cast(1)
    scalar = numba.from_dtype(dtype)
    vector = scalar[::1]
    seed_and_threshold = (numba.uint64, numba.int64)
    apply_mask = device_index_loop(
        cuda, dropout_element, (vector, *seed_and_threshold, scalar, scalar, vector), cost=HASH_COST
    )
    write_mask = device_index_loop(
        cuda, dropout_mask_element, (*seed_and_threshold, scalar, scalar, vector), cost=HASH_COST
    )

    def dropout_forward(x: Any, seed: int, keep_threshold: int, scale: float, out: Any) -> None:
        apply_mask(
            out.size,
            x.reshape(x.size),
            np.uint64(seed),
            np.int64(keep_threshold),
            cast(scale),
            zero,
            out.reshape(out.size),
        )

    def dropout_mask(seed: int, keep_threshold: int, out: Any) -> None:
        write_mask(
            out.size, np.uint64(seed), np.int64(keep_threshold), one, zero, out.reshape(out.size)
        )

    def dropout_backward(
        grad_out: Any, seed: int, keep_threshold: int, scale: float, grad_x: Any
    ) -> None:
        # the incoming gradient, scaled by the very same mask
        dropout_forward(grad_out, seed, keep_threshold, scale, grad_x)

    return {
        "dropout_forward": dropout_forward,
        "dropout_backward": dropout_backward,
        "dropout_mask": dropout_mask,
    }


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    return dropout_operations(dtype, None)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    return dropout_operations(dtype, cuda_kernels(cuda_api, dtype))


class DropoutKernels(Protocol):
    """The dropout family's operations, the same on both devices (module doc)."""

    def dropout_forward(
        self, x: DeviceArray, seed: int, keep_threshold: int, scale: float, out: DeviceArray
    ) -> None: ...

    def dropout_backward(
        self,
        grad_out: DeviceArray,
        seed: int,
        keep_threshold: int,
        scale: float,
        grad_x: DeviceArray,
    ) -> None: ...

    def dropout_mask(self, seed: int, keep_threshold: int, out: DeviceArray) -> None: ...
