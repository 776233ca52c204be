"""Inverted dropout and Gaussian noise from a counter-based hash: nothing random is
stored or transferred.

Operations (both devices; arrays of any shape are taken as flat, C-contiguous):

- ``dropout_forward(x, seed, keep_threshold, scale, out)``: ``out[i] = x[i] * scale``
  where element ``i`` is kept, else ``0``
- ``dropout_backward(grad_out, seed, keep_threshold, scale, grad_x)``: the same mask,
  ``grad_x[i] = grad_out[i] * scale`` where kept, else ``0``
- ``dropout_mask(seed, keep_threshold, out)``: ``out[i] = 1`` where kept, else ``0``
  (for tests and debugging)
- ``gaussian_noise_forward(x, seed, sigma, out)``: ``out[i] = x[i] + sigma * z[i]``
  (additive Gaussian noise; its backward pass is the identity)
- ``gaussian_dropout_forward(x, seed, std, out)``: ``out[i] = x[i] * (1 + std * z[i])``
  (multiplicative Gaussian noise; its backward pass is this operation on the gradient,
  with the same seed)

``seed`` is a one-element uint64 array on the device (a layer fills it with
``Device.stage`` on every pass) whose ``seed[0]``, the seed, is in ``[0, 2**63)``. The
kernels read it when they run, not when they are called, so a training step replayed as
a CUDA graph draws a new seed on every replay (on the CPU, which runs a loop at once,
the operation reads ``seed[0]`` just before its loop, :func:`seed_read_now`).

Element ``i`` (its flat index) is kept when a hash of ``(seed[0], i)`` to 24 uniform
bits is at least ``keep_threshold`` (:func:`random_bits`, :func:`is_kept`). The caller
computes ``keep_threshold = int(p * RANDOM_RANGE)`` (``RANDOM_RANGE = 2**24``) for a drop
probability ``p`` and ``scale = 1 / (1 - p)``. The backward pass recomputes the forward
mask from the same seed, and the CPU and CUDA kernels give identical masks, so a model's
dropout is reproducible across devices.

``z[i]`` is a standard normal number made by the Box-Muller transform,
``z = sqrt(-2 log u1) cos(2 pi u2)``, from the hashes of flat indices ``2 i`` and
``2 i + 1`` under ``seed[0]``, each turned into a uniform number
``u = (r + 1) / RANDOM_RANGE`` in ``(0, 1]`` (:func:`uniform`). ``u`` is exact in
float32 and float64, and the cosine is a polynomial written here
(:func:`cos_two_pi`), so the devices differ only by the rounding of ``log`` and
``sqrt`` and by fused multiply-adds.

The hash works on 32-bit words held in uint64 and keeps every product below
``2**64``: no step depends on wrapping overflow, so the same code is exact when the
CUDA simulator runs it with NumPy scalars (which warn on overflow), and the masked
products vectorise on the CPU as 32 x 32 -> 64-bit multiplies.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import numba
import numpy as np

from numlayers.kernels.toolkit import (
    CudaKernels,
    DeviceArray,
    cpu_inline_early,
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
ONE = np.uint64(1)
TWO = np.uint64(2)
SHIFT_12 = np.uint64(12)
LOW_12_BITS = np.uint64(0xFFF)
#: the numba type of a seed on CUDA: a one-element uint64 array, read as ``seed[0]``
SEED_TYPE = numba.types.Array(numba.uint64, 1, "C")
#: the hash gives values in ``[0, RANDOM_RANGE)``; ``keep_threshold = int(p * RANDOM_RANGE)``
RANDOM_RANGE = 2**24

#: The work of one element in the toolkit's units (one elementwise multiply-add): the
#: hash is four rounds of two 64-bit multiplies, three shifts and three xors, and an
#: element takes 16 to 18 times as long as ``scale_add_into``'s (serial, measured on
#: the 2-core development machine).
HASH_COST = 16.0
#: A normal number: two hashes, a logarithm, a cosine and a square root.
NORMAL_COST = 2 * HASH_COST + 8.0


class NormalConstants(NamedTuple):
    """The scalars of :func:`uniform` and :func:`standard_normal`, in the kernel's dtype."""

    high_scale: Any
    low_scale: Any
    minus_two: Any
    two_pi: Any
    half: Any
    quarter: Any


def normal_constants(dtype: np.dtype) -> NormalConstants:
    cast = dtype.type
    return NormalConstants(
        cast(2.0**-12),
        cast(2.0**-24),
        cast(-2.0),
        cast(2 * math.pi),
        cast(0.5),
        cast(0.25),
    )


def cos_taylor(dtype: np.dtype) -> tuple[Any, ...]:
    """The Taylor coefficients of ``cos`` in ``x**2``, highest first, in ``dtype``: the
    first term left out is below half an ulp of 1 on ``[0, pi / 2]``. (A separate
    argument: Numba's parallel CPU loops take no tuple nested in a tuple.)"""
    terms = 8 if dtype == np.float32 else 12
    return tuple(dtype.type((-1) ** k / math.factorial(2 * k)) for k in range(terms - 1, -1, -1))


@cpu_inline_early
def random_bits(seed, index):
    """The 24-bit random number (a uint64 in ``[0, RANDOM_RANGE)``) of ``index`` under
    ``seed`` (a uint64).

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
    return state >> SHIFT_8


@cpu_inline_early
def is_kept(seed, index, keep_threshold):
    """True when element ``index`` survives dropout under ``seed`` (a uint64)."""
    return np.int64(random_bits(seed, index)) >= keep_threshold


@cpu_inline_early
def uniform(seed, index, c):
    """``(random_bits + 1) / RANDOM_RANGE`` in ``(0, 1]``, in the dtype of ``c``.

    The 25-bit ``random_bits + 1`` is split into 12-bit halves cast to int16, which
    mixes with float32 without promoting to float64 (int64 would); each half times its
    power of two is exact, and so is their sum (``c`` is :class:`NormalConstants`).
    """
    bits = random_bits(seed, index) + ONE
    high = np.int16(bits >> SHIFT_12)
    low = np.int16(bits & LOW_12_BITS)
    return high * c.high_scale + low * c.low_scale


@cpu_inline_early
def standard_normal(seed, index, c, taylor):
    """The standard normal number of element ``index``: Box-Muller from the uniform
    numbers of ``2 index`` and ``2 index + 1``."""
    twice = np.uint64(index) * TWO
    u1 = uniform(seed, twice, c)
    u2 = uniform(seed, twice + ONE, c)
    return math.sqrt(c.minus_two * math.log(u1)) * cos_two_pi(u2, c, taylor)


@cpu_inline_early
def cos_two_pi(t, c, taylor):
    """``cos(2 pi t)`` for ``0 <= t <= 1``, by a Taylor polynomial on ``[0, pi / 2]``.

    ``math.cos`` would do: but CUDA's ``cosf`` carries a float64 reduction for huge
    arguments, which float32 kernels must not contain. ``t - 1/2`` and ``1/2 - w`` are
    exact, so only the polynomial rounds.
    """
    w = abs(t - c.half)  # cos(2 pi t) = -cos(2 pi w), 0 <= w <= 1/2
    negate = w <= c.quarter
    if not negate:
        w = c.half - w  # -cos(2 pi w) = cos(2 pi (1/2 - w))
    x = c.two_pi * w
    square = x * x
    p = taylor[0]
    for coefficient in taylor[1:]:
        p = p * square + coefficient
    return -p if negate else p


# ``zero`` and ``one`` come in the layer dtype (a literal would be float64 on a GPU).
# ``seed`` is the seed array on CUDA, a 1-tuple of its value on the CPU
# (:func:`seed_read_now`): both read as ``seed[0]``.


@cpu_inline_early
def dropout_element(index, x, seed, keep_threshold, scale, zero, out):
    out[index] = x[index] * scale if is_kept(seed[0], index, keep_threshold) else zero


@cpu_inline_early
def dropout_mask_element(index, seed, keep_threshold, one, zero, out):
    out[index] = one if is_kept(seed[0], index, keep_threshold) else zero


@cpu_inline_early
def gaussian_noise_element(index, x, seed, sigma, c, taylor, out):
    out[index] = x[index] + sigma * standard_normal(seed[0], index, c, taylor)


@cpu_inline_early
def gaussian_dropout_element(index, x, seed, std, one, c, taylor, out):
    out[index] = x[index] * (one + std * standard_normal(seed[0], index, c, taylor))


#: a seed passed with the launch: the host's value in a 1-tuple, read as ``seed[0]`` too
SEED_VALUE_TYPE = numba.types.UniTuple(numba.uint64, 1)


def seed_in_kernel(seed: DeviceArray | tuple[Any]) -> DeviceArray | tuple[Any]:
    """CUDA's seed argument, as :meth:`Device.stage <numlayers.devices.Device.stage>` gave
    it: a 1-tuple holding the host's value (an eager step: passed with the launch, no
    copy), or the device array that a recorded graph refills before each replay, which
    each thread reads as ``seed[0]`` when the kernel runs."""
    return seed


def seed_read_now(seed: DeviceArray) -> tuple[Any]:
    """The CPU's seed argument: ``seed[0]`` read now, just before the loop runs, in a
    1-tuple that the kernels read as ``seed[0]`` too. A scalar stays in a register, whereas a
    read from an array inside the loop is repeated after every store to ``out`` (which
    might alias it) and made the loops 10 to 20% slower."""
    return (seed[0],)


def dropout_operations(dtype: np.dtype, cuda: CudaKernels | None) -> dict[str, Any]:
    """The dropout operations on the CPU (``cuda`` None) or on CUDA."""
    seed_argument = seed_read_now if cuda is None else seed_in_kernel
    cast = dtype.type
    zero = cast(0)
    one = cast(1)
    scalar = numba.from_dtype(dtype)
    vector = scalar[::1]
    seed_and_threshold = (SEED_TYPE, numba.int64)

    def seeded_loop(body: Any, argtypes: tuple[Any, ...], cost: float) -> Any:
        """``body``'s loop; on CUDA two kernels, for a seed given as a value or as a
        device array (:func:`seed_in_kernel`), launched by the seed's form."""
        on_array = device_index_loop(cuda, body, argtypes, cost=cost)
        if cuda is None:
            return on_array
        position = argtypes.index(SEED_TYPE)
        value_types = (*argtypes[:position], SEED_VALUE_TYPE, *argtypes[position + 1 :])
        on_value = cuda.index_loop(body, value_types, name=f"{body.__name__}_seed_value_kernel")

        def launch(count: int, *arguments: Any) -> None:
            seeded = on_value if isinstance(arguments[position], tuple) else on_array
            seeded(count, *arguments)

        return launch

    apply_mask = seeded_loop(
        dropout_element, (vector, *seed_and_threshold, scalar, scalar, vector), HASH_COST
    )
    write_mask = seeded_loop(
        dropout_mask_element, (*seed_and_threshold, scalar, scalar, vector), HASH_COST
    )

    def dropout_forward(
        x: Any, seed: DeviceArray, keep_threshold: int, scale: float, out: Any
    ) -> None:
        apply_mask(
            out.size,
            x.reshape(x.size),
            seed_argument(seed),
            np.int64(keep_threshold),
            cast(scale),
            zero,
            out.reshape(out.size),
        )

    def dropout_mask(seed: DeviceArray, keep_threshold: int, out: Any) -> None:
        write_mask(
            out.size,
            seed_argument(seed),
            np.int64(keep_threshold),
            one,
            zero,
            out.reshape(out.size),
        )

    def dropout_backward(
        grad_out: Any, seed: DeviceArray, keep_threshold: int, scale: float, grad_x: Any
    ) -> None:
        # the incoming gradient, scaled by the very same mask
        dropout_forward(grad_out, seed, keep_threshold, scale, grad_x)

    constants = normal_constants(dtype)
    taylor = cos_taylor(dtype)
    constants_types = (numba.typeof(constants), numba.typeof(taylor))
    add_noise = seeded_loop(
        gaussian_noise_element, (vector, SEED_TYPE, scalar, *constants_types, vector), NORMAL_COST
    )
    multiply_noise = seeded_loop(
        gaussian_dropout_element,
        (vector, SEED_TYPE, scalar, scalar, *constants_types, vector),
        NORMAL_COST,
    )

    def gaussian_noise_forward(x: Any, seed: DeviceArray, sigma: float, out: Any) -> None:
        add_noise(
            out.size,
            x.reshape(x.size),
            seed_argument(seed),
            cast(sigma),
            constants,
            taylor,
            out.reshape(out.size),
        )

    def gaussian_dropout_forward(x: Any, seed: DeviceArray, std: float, out: Any) -> None:
        multiply_noise(
            out.size,
            x.reshape(x.size),
            seed_argument(seed),
            cast(std),
            one,
            constants,
            taylor,
            out.reshape(out.size),
        )

    return {
        "dropout_forward": dropout_forward,
        "dropout_backward": dropout_backward,
        "dropout_mask": dropout_mask,
        "gaussian_noise_forward": gaussian_noise_forward,
        "gaussian_dropout_forward": gaussian_dropout_forward,
    }


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    return dropout_operations(dtype, None)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    return dropout_operations(dtype, cuda_kernels(cuda_api, dtype))


class DropoutKernels(Protocol):
    """The dropout family's operations, the same on both devices (module doc)."""

    def dropout_forward(
        self, x: DeviceArray, seed: DeviceArray, keep_threshold: int, scale: float, out: DeviceArray
    ) -> None: ...

    def dropout_backward(
        self,
        grad_out: DeviceArray,
        seed: DeviceArray,
        keep_threshold: int,
        scale: float,
        grad_x: DeviceArray,
    ) -> None: ...

    def dropout_mask(self, seed: DeviceArray, keep_threshold: int, out: DeviceArray) -> None: ...

    def gaussian_noise_forward(
        self, x: DeviceArray, seed: DeviceArray, sigma: float, out: DeviceArray
    ) -> None: ...

    def gaussian_dropout_forward(
        self, x: DeviceArray, seed: DeviceArray, std: float, out: DeviceArray
    ) -> None: ...
