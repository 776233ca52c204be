"""Timestep masks: Keras 0.3's Masking layer and the masks other layers pass along.

A mask is an array of the layer dtype holding 0 or 1, shaped ``(batch, time)``;
the values it masks are ``(batch, time, features)``. Operations (both devices, all
outputs overwritten):

- ``masking_forward(x, mask_value, out, mask)``: ``mask[b, t] = 1`` when any feature
  of ``x[b, t, :]`` differs from ``mask_value``, else ``0``; ``out = x * mask``
  broadcast over the features
- ``apply_time_mask(x, mask, out)``: ``out[b, t, :] = x[b, t, :] * mask[b, t]`` (the
  Masking layer's backward, and any layer that zeroes masked timesteps)
- ``mask_row_scale(mask, sample_scale, out)``: the weight of each row
  ``r = b * time + t`` of a loss on a masked sequence, ``out[r] = mask[b, t] *
  sample_scale[b] / mean(mask)`` with the mean over all ``batch * time`` entries
  (Keras 0.3: ``score *= mask; score /= mean(mask)``); ``0`` everywhere when the
  mask is all zero. ``sample_scale`` is ``(batch,)``; ``out`` has ``batch * time``
  elements in any shape.
- ``combine_masks_all(mask_a, mask_b, out)``: ``out = mask_a * mask_b`` (a merge of
  masked inputs keeps a timestep only if every input keeps it)

Masked values are multiplied by the mask, not replaced by zero, as in Keras (a NaN
stays NaN). On CUDA the mask is summed on the device into a one-element buffer by
:func:`~numlayers.kernels.optimizers.block_sum_launcher` (one block, a shared-memory
reduction the simulator runs too), which the row kernel then reads: nothing goes
through the host.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import njit, prange

from numlayers.kernels.cuda_support import blocks_for, new_registry
from numlayers.kernels.dropout import compile_serial_and_parallel
from numlayers.kernels.optimizers import block_sum_launcher

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None

#: arrays at least this long are processed over all cores on the CPU
PARALLEL_MIN_SIZE = 1 << 15


def row_scale(mask_value, sample_scale, total, count, zero):
    """One row's loss weight: ``mask * scale / (total / count)``, or 0 for an empty mask."""
    if total == zero:
        return zero
    return mask_value * sample_scale / (total / count)


row_scale_cpu = njit(inline="always")(row_scale)


def mask_entry(a, b, i, s1, s2):
    """``a[i]``: the term whose sum over the mask :func:`block_sum_launcher` computes."""
    return a[i]


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    cast = dtype.type
    zero = dtype.type(0)
    one = dtype.type(1)

    def mask_rows(x, mask_value, out, mask):
        for row in prange(x.shape[0]):
            values = x[row]
            differs = False
            for j in range(values.size):
                differs |= values[j] != mask_value
            keep = one if differs else zero
            mask[row] = keep
            target = out[row]
            for j in range(values.size):
                target[j] = values[j] * keep

    def scale_rows(x, mask, out):
        for row in prange(x.shape[0]):
            keep = mask[row]
            values = x[row]
            target = out[row]
            for j in range(values.size):
                target[j] = values[j] * keep

    def multiply(a, b, out):
        for i in prange(out.size):
            out[i] = a[i] * b[i]

    @njit(cache=True)
    def scale_mask_rows(mask, sample_scale, count, out):
        total = zero
        for b in range(mask.shape[0]):
            for t in range(mask.shape[1]):
                total += mask[b, t]
        time = mask.shape[1]
        for b in range(mask.shape[0]):
            for t in range(time):
                out[b * time + t] = row_scale_cpu(mask[b, t], sample_scale[b], total, count, zero)

    mask_rows_serial, mask_rows_parallel = compile_serial_and_parallel(mask_rows)
    scale_rows_serial, scale_rows_parallel = compile_serial_and_parallel(scale_rows)
    multiply_serial, multiply_parallel = compile_serial_and_parallel(multiply)

    def masking_forward(
        x: np.ndarray, mask_value: float, out: np.ndarray, mask: np.ndarray
    ) -> None:
        loop = mask_rows_parallel if x.size >= PARALLEL_MIN_SIZE else mask_rows_serial
        shape = (mask.size, x.shape[2])
        loop(x.reshape(shape), cast(mask_value), out.reshape(shape), mask.reshape(-1))

    def apply_time_mask(x: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:
        loop = scale_rows_parallel if x.size >= PARALLEL_MIN_SIZE else scale_rows_serial
        shape = (mask.size, x.shape[2])
        loop(x.reshape(shape), mask.reshape(-1), out.reshape(shape))

    def mask_row_scale(mask: np.ndarray, sample_scale: np.ndarray, out: np.ndarray) -> None:
        scale_mask_rows(mask, sample_scale, cast(mask.size), out.reshape(-1))

    def combine_masks_all(mask_a: np.ndarray, mask_b: np.ndarray, out: np.ndarray) -> None:
        loop = multiply_parallel if out.size >= PARALLEL_MIN_SIZE else multiply_serial
        loop(mask_a.reshape(-1), mask_b.reshape(-1), out.reshape(-1))

    return {
        "masking_forward": masking_forward,
        "apply_time_mask": apply_time_mask,
        "mask_row_scale": mask_row_scale,
        "combine_masks_all": combine_masks_all,
    }


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    cast = dtype.type
    zero = dtype.type(0)
    one = dtype.type(1)
    scalar = registry.scalar
    vector = registry.array(1)
    matrix = registry.array(2)
    scale_of_row = registry.device(row_scale)
    # the mask's sum stays on the device, in a one-element buffer made on first use
    sum_mask = block_sum_launcher(cuda_api, dtype, mask_entry, False)
    total_buffer = functools.cache(lambda: cuda_api.device_array(1, dtype=dtype))

    @registry.jit(matrix, scalar, vector)
    def masking_row_mask_kernel(x, mask_value, mask):
        row = cuda.grid(1)
        if row < x.shape[0]:
            differs = False
            for j in range(x.shape[1]):
                differs |= x[row, j] != mask_value
            mask[row] = one if differs else zero

    @registry.jit(matrix, vector, matrix)
    def apply_time_mask_kernel(x, mask, out):
        i = cuda.grid(1)
        if i < x.size:
            features = x.shape[1]
            row = i // features
            out[row, i % features] = x[row, i % features] * mask[row]

    @registry.jit(matrix, vector, vector, scalar, vector)
    def mask_row_scale_kernel(mask, sample_scale, total, count, out):
        i = cuda.grid(1)
        if i < out.size:
            time = mask.shape[1]
            b = i // time
            out[i] = scale_of_row(mask[b, i % time], sample_scale[b], total[0], count, zero)

    @registry.jit(vector, vector, vector)
    def combine_masks_all_kernel(a, b, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a[i] * b[i]

    def apply_time_mask(x: Any, mask: Any, out: Any) -> None:
        shape = (mask.size, x.shape[2])
        apply_time_mask_kernel[blocks_for(x.size), 256](
            x.reshape(*shape), mask.reshape(mask.size), out.reshape(*shape)
        )

    def masking_forward(x: Any, mask_value: float, out: Any, mask: Any) -> None:
        masking_row_mask_kernel[blocks_for(mask.size), 256](
            x.reshape(mask.size, x.shape[2]), cast(mask_value), mask.reshape(mask.size)
        )
        apply_time_mask(x, mask, out)

    def mask_row_scale(mask: Any, sample_scale: Any, out: Any) -> None:
        flat_mask = mask.reshape(mask.size)
        total = total_buffer()
        sum_mask(flat_mask, flat_mask, zero, zero, total)
        mask_row_scale_kernel[blocks_for(mask.size), 256](
            mask, sample_scale, total, cast(mask.size), out.reshape(out.size)
        )

    def combine_masks_all(mask_a: Any, mask_b: Any, out: Any) -> None:
        combine_masks_all_kernel[blocks_for(out.size), 256](
            mask_a.reshape(mask_a.size), mask_b.reshape(mask_b.size), out.reshape(out.size)
        )

    return {
        "masking_forward": masking_forward,
        "apply_time_mask": apply_time_mask,
        "mask_row_scale": mask_row_scale,
        "combine_masks_all": combine_masks_all,
    }
