"""Merging the timesteps of each sample: TimeDistributedMerge's sums, means and products.

The values are ``(batch, time, features)`` (trailing axes flattened into features)
and the mask ``(batch, time)``, of the layer dtype, 1 keeping a step and 0 leaving it
out (a layer without an input mask passes ones). Operations (both devices, every
output overwritten):

- ``time_sum_forward(x, mask, average, out)``: ``out[b, f]`` is the sum of the kept
  ``x[b, t, f]``, divided by the number of kept steps when ``average`` (0 when none is
  kept)
- ``time_sum_backward(grad_out, mask, average, grad_x)``: ``grad_x[b, t, f] =
  grad_out[b, f] * mask[b, t]``, over the number of kept steps when ``average``
- ``time_product_forward(x, mask, out)``: ``out[b, f]`` is the product of the kept
  ``x[b, t, f]`` (1 when none is kept)
- ``time_product_backward(x, mask, grad_out, grad_x)``: ``grad_x[b, t, f]`` is
  ``grad_out[b, f]`` times the product of the other kept steps, 0 for a masked step.
  The product of the others is the product of the steps before times that of the steps
  after (no division, so a zero among the steps is handled exactly): ``grad_x`` first
  holds the products after each step, then a second pass multiplies in those before.

One per-index body per operation, an index per ``(b, f)`` pair looping over time,
runs on both devices; the steps of one index are read with stride ``features``.
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

#: The work of one index in the toolkit's units: a loop over the steps of a short
#: sequence (a few elementwise multiply-adds each).
INDEX_COST = 8.0


@cpu_inline
def kept_steps(sample, mask, zero):
    count = zero
    for step in range(mask.shape[1]):
        count += mask[sample, step]
    return count


@cpu_inline
def time_sum_element(index, x, mask, average, zero, one, out):
    features = x.shape[2]
    sample = index // features
    feature = index % features
    total = zero
    for step in range(x.shape[1]):
        total += mask[sample, step] * x[sample, step, feature]
    if average:
        count = kept_steps(sample, mask, zero)
        total = total / count if count != zero else zero
    out[sample, feature] = total


@cpu_inline
def time_sum_backward_element(index, grad_out, mask, average, zero, one, grad_x):
    features = grad_x.shape[2]
    sample = index // features
    feature = index % features
    scale = one
    if average:
        count = kept_steps(sample, mask, zero)
        scale = one / count if count != zero else zero
    gradient = grad_out[sample, feature] * scale
    for step in range(grad_x.shape[1]):
        grad_x[sample, step, feature] = gradient * mask[sample, step]


@cpu_inline
def kept_value(x, mask, sample, step, feature, one):
    """``x[sample, step, feature]`` for a kept step, 1 (the product's unit) for a masked one."""
    return x[sample, step, feature] if mask[sample, step] != 0 else one


@cpu_inline
def time_product_element(index, x, mask, one, out):
    features = x.shape[2]
    sample = index // features
    feature = index % features
    product = one
    for step in range(x.shape[1]):
        product *= kept_value(x, mask, sample, step, feature, one)
    out[sample, feature] = product


@cpu_inline
def time_product_backward_element(index, x, mask, grad_out, zero, one, grad_x):
    features = x.shape[2]
    sample = index // features
    feature = index % features
    steps = x.shape[1]
    after = one
    for step in range(steps - 1, -1, -1):
        grad_x[sample, step, feature] = after
        after *= kept_value(x, mask, sample, step, feature, one)
    before = one
    gradient = grad_out[sample, feature]
    for step in range(steps):
        kept = mask[sample, step] != 0
        grad_x[sample, step, feature] = (
            gradient * before * grad_x[sample, step, feature] if kept else zero
        )
        before *= kept_value(x, mask, sample, step, feature, one)


def as_steps(x: Any) -> Any:
    """``x`` of ``(batch, time, ...)`` as ``(batch, time, features)``."""
    return x.reshape(x.shape[0], x.shape[1], x.size // (x.shape[0] * x.shape[1]))


def as_rows(out: Any) -> Any:
    """``out`` of ``(batch, ...)`` as ``(batch, features)``."""
    return out.reshape(out.shape[0], out.size // out.shape[0])


def time_merge_operations(dtype: np.dtype, cuda: CudaKernels | None) -> dict[str, Any]:
    """The family's operations on the CPU (``cuda`` None) or on CUDA."""
    cast = dtype.type
    zero, one = cast(0), cast(1)
    scalar = numba.from_dtype(dtype)
    flag = numba.types.boolean
    matrix, cube = scalar[:, ::1], scalar[:, :, ::1]

    def loop(body: Any, *argtypes: Any) -> Any:
        return device_index_loop(cuda, body, argtypes, cost=INDEX_COST)

    time_sum = loop(time_sum_element, cube, matrix, flag, scalar, scalar, matrix)
    time_sum_backward = loop(time_sum_backward_element, matrix, matrix, flag, scalar, scalar, cube)
    time_product = loop(time_product_element, cube, matrix, scalar, matrix)
    time_product_backward = loop(
        time_product_backward_element, cube, matrix, matrix, scalar, scalar, cube
    )

    def time_sum_forward(x: Any, mask: Any, average: bool, out: Any) -> None:
        rows = as_rows(out)
        time_sum(rows.size, as_steps(x), mask, bool(average), zero, one, rows)

    def time_sum_backward_operation(grad_out: Any, mask: Any, average: bool, grad_x: Any) -> None:
        rows = as_rows(grad_out)
        time_sum_backward(rows.size, rows, mask, bool(average), zero, one, as_steps(grad_x))

    def time_product_forward(x: Any, mask: Any, out: Any) -> None:
        rows = as_rows(out)
        time_product(rows.size, as_steps(x), mask, one, rows)

    def time_product_backward_operation(x: Any, mask: Any, grad_out: Any, grad_x: Any) -> None:
        rows = as_rows(grad_out)
        time_product_backward(rows.size, as_steps(x), mask, rows, zero, one, as_steps(grad_x))

    return {
        "time_sum_forward": time_sum_forward,
        "time_sum_backward": time_sum_backward_operation,
        "time_product_forward": time_product_forward,
        "time_product_backward": time_product_backward_operation,
    }


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    return time_merge_operations(np.dtype(dtype), None)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    return time_merge_operations(np.dtype(dtype), cuda_kernels(cuda_api, dtype))


class TimeMergeKernels(Protocol):
    """The time-merge family's operations, the same on both devices (module doc)."""

    def time_sum_forward(
        self, x: DeviceArray, mask: DeviceArray, average: bool, out: DeviceArray
    ) -> None: ...

    def time_sum_backward(
        self, grad_out: DeviceArray, mask: DeviceArray, average: bool, grad_x: DeviceArray
    ) -> None: ...

    def time_product_forward(self, x: DeviceArray, mask: DeviceArray, out: DeviceArray) -> None: ...

    def time_product_backward(
        self, x: DeviceArray, mask: DeviceArray, grad_out: DeviceArray, grad_x: DeviceArray
    ) -> None: ...
