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
stays NaN). Each operation is built from per-index bodies that both devices run
(``masking_forward`` is the row mask, then ``apply_time_mask``). The sum of the mask
that ``mask_row_scale`` divides by is a reduction: on CUDA it is summed on the device
into a one-element buffer by :func:`~numlayers.kernels.optimizers.block_sum_launcher`
(one block, a shared-memory reduction the simulator runs too), which the row loop then
reads: nothing goes through the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

import numba
import numpy as np
from numba import njit, prange

from numlayers.kernels.optimizers import block_sum_launcher
from numlayers.kernels.toolkit import (
    KERNEL_OPTIONS,
    CudaKernels,
    DeviceArray,
    cpu_inline,
    cpu_loop,
    cuda_kernels,
    device_index_loop,
)

#: The work of one element in the toolkit's units (one elementwise multiply-add): a
#: compare or a multiply, streaming memory (0.7 to 0.8 of ``scale_add_into``'s time,
#: serial, on the 2-core development machine).
ELEMENT_COST = 1.0


def mask_entry(a, b, i, s1, s2):
    """``a[i]``: the term whose sum over the mask :func:`block_sum_launcher` computes."""
    return a[i]


@njit(**KERNEL_OPTIONS)
def sum_into(values, zero, total):
    """``total[0] = sum(values)``: the CPU's sum of the mask."""
    accumulated = zero
    for i in range(values.size):
        accumulated += values[i]
    total[0] = accumulated


# The masked values are seen as ``(rows, features)``, a row a timestep; the bodies take
# ``zero`` and ``one`` in the layer dtype (a literal would be float64 on a GPU).


@cpu_inline
def timestep_mask_element(row, x, mask_value, one, zero, mask):
    differs = False
    for j in range(x.shape[1]):
        differs |= x[row, j] != mask_value
    mask[row] = one if differs else zero


@cpu_inline
def time_mask_element(row, column, x, mask, out):
    out[row, column] = x[row, column] * mask[row]


@cpu_loop(cost=ELEMENT_COST, size_argument=0)
def masking_rows(x, mask_value, one, zero, out, mask):
    # The CPU's Masking forward does both bodies a row at a time, while the row is in
    # cache (two passes, as on CUDA, take 1.6 times as long).
    for row in prange(x.shape[0]):
        timestep_mask_element(row, x, mask_value, one, zero, mask)
        for column in range(x.shape[1]):
            time_mask_element(row, column, x, mask, out)


@cpu_inline
def row_scale_element(sample, step, mask, sample_scale, total, count, zero, out):
    """One row's loss weight: ``mask * scale / (total / count)``, or 0 for an empty mask."""
    if total[0] == zero:
        out[sample, step] = zero
    else:
        out[sample, step] = mask[sample, step] * sample_scale[sample] / (total[0] / count)


@cpu_inline
def mask_product_element(index, a, b, out):
    out[index] = a[index] * b[index]


def rows(x: Any, mask: Any) -> Any:
    """``x`` of ``(batch, time, features)`` as ``(batch * time, features)``."""
    return x.reshape(mask.size, x.shape[2])


def masking_operations(
    dtype: np.dtype,
    cuda: CudaKernels | None,
    sum_mask: Callable[[Any], Any],
) -> dict[str, Any]:
    """The operations but ``masking_forward`` on the CPU (``cuda`` None) or on CUDA, given
    ``sum_mask(flat_mask)``, which returns a one-element array (on the device) holding
    the mask's sum."""
    cast = dtype.type
    zero = cast(0)
    scalar = numba.from_dtype(dtype)
    vector = scalar[::1]
    matrix = scalar[:, ::1]
    time_mask = device_index_loop(
        cuda, time_mask_element, (matrix, vector, matrix), dims=2, cost=ELEMENT_COST
    )
    row_scale = device_index_loop(
        cuda,
        row_scale_element,
        (matrix, vector, vector, scalar, scalar, matrix),
        dims=2,
        cost=ELEMENT_COST,
    )
    mask_product = device_index_loop(
        cuda, mask_product_element, (vector, vector, vector), cost=ELEMENT_COST
    )

    def apply_time_mask(x: Any, mask: Any, out: Any) -> None:
        time_mask(mask.size, x.shape[2], rows(x, mask), mask.reshape(mask.size), rows(out, mask))

    def mask_row_scale(mask: Any, sample_scale: Any, out: Any) -> None:
        total = sum_mask(mask.reshape(mask.size))
        batch, time = mask.shape
        row_scale(
            batch, time, mask, sample_scale, total, cast(mask.size), zero, out.reshape(batch, time)
        )

    def combine_masks_all(mask_a: Any, mask_b: Any, out: Any) -> None:
        mask_product(
            out.size,
            mask_a.reshape(mask_a.size),
            mask_b.reshape(mask_b.size),
            out.reshape(out.size),
        )

    return {
        "apply_time_mask": apply_time_mask,
        "mask_row_scale": mask_row_scale,
        "combine_masks_all": combine_masks_all,
    }


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    total = np.zeros(1, dtype)
    cast = dtype.type
    zero, one = cast(0), cast(1)

    def sum_mask(flat_mask: np.ndarray) -> np.ndarray:
        sum_into(flat_mask, zero, total)
        return total

    def masking_forward(
        x: np.ndarray, mask_value: float, out: np.ndarray, mask: np.ndarray
    ) -> None:
        flat_mask = mask.reshape(-1)
        masking_rows(rows(x, mask), cast(mask_value), one, zero, rows(out, mask), flat_mask)

    return {"masking_forward": masking_forward, **masking_operations(dtype, None, sum_mask)}


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    zero = dtype.type(0)
    block_sum = block_sum_launcher(cuda_api, dtype, mask_entry, False)
    # the mask's sum stays on the device, in a one-element buffer made on first use
    # (a builder must not touch the GPU)
    total_buffer = functools.cache(lambda: cuda_api.device_array(1, dtype=dtype))

    def sum_mask(flat_mask: Any) -> Any:
        total = total_buffer()
        block_sum(flat_mask, flat_mask, zero, zero, total)
        return total

    cuda = cuda_kernels(cuda_api, dtype)
    scalar = cuda.scalar
    timestep_mask = cuda.index_loop(
        timestep_mask_element, (cuda.array(2), scalar, scalar, scalar, cuda.array(1))
    )
    operations = masking_operations(dtype, cuda, sum_mask)
    apply_time_mask = operations["apply_time_mask"]
    one = dtype.type(1)  # ``zero`` is the reduction's, above

    def masking_forward(x: Any, mask_value: float, out: Any, mask: Any) -> None:
        flat_mask = mask.reshape(mask.size)
        timestep_mask(mask.size, rows(x, mask), dtype.type(mask_value), one, zero, flat_mask)
        apply_time_mask(x, mask, out)

    return {"masking_forward": masking_forward, **operations}


class MaskingKernels(Protocol):
    """The masking family's operations, the same on both devices (module doc)."""

    def masking_forward(
        self, x: DeviceArray, mask_value: float, out: DeviceArray, mask: DeviceArray
    ) -> None: ...

    def apply_time_mask(self, x: DeviceArray, mask: DeviceArray, out: DeviceArray) -> None: ...

    def mask_row_scale(
        self, mask: DeviceArray, sample_scale: DeviceArray, out: DeviceArray
    ) -> None: ...

    def combine_masks_all(
        self, mask_a: DeviceArray, mask_b: DeviceArray, out: DeviceArray
    ) -> None: ...
