"""Whole-array helpers the containers and layers need: fill, copy, accumulate, column sums.

Operations (both devices; arrays of any shape are taken as flat, C-contiguous):

- ``fill(out, value)``: every element of ``out`` becomes ``value``
- ``copy(x, out)``: ``out[...] = x``
- ``add_into(x, out)``: ``out += x`` (sums fan-out gradients)
- ``scale_add_into(x, alpha, out)``: ``out += alpha * x`` (epoch sums of batch values)
- ``sum_rows(x, out)``: ``out[j] = sum_i x[i, j]`` for a 2-D ``x``

Each elementwise operation is one per-index body, run by the toolkit's loops on both
devices. ``sum_rows`` is the exception: on CUDA one thread sums one column (reads of
neighbouring threads are neighbours in memory), but on the CPU that would walk memory
a row apart at every step, so the CPU adds whole rows into ``out`` instead.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import numba
import numpy as np
from numba import njit

from numlayers.kernels.toolkit import (
    KERNEL_OPTIONS,
    CudaKernels,
    DeviceArray,
    cpu_inline,
    cpu_inline_early,
    cuda_kernels,
    device_index_loop,
)

#: The work of one element in the toolkit's units (one elementwise multiply-add, which
#: ``scale_add_into`` is): the others only move memory as it does, and take 0.6 (fill)
#: to 0.8 (copy) of its time (serial, on the 2-core development machine).
COPY_COST = 1.0


@cpu_inline_early
def fill_element(index, value, out):
    out[index] = value


@cpu_inline_early
def copy_element(index, x, out):
    out[index] = x[index]


@cpu_inline_early
def add_into_element(index, x, out):
    out[index] += x[index]


@cpu_inline_early
def scale_add_into_element(index, x, alpha, out):
    out[index] += alpha * x[index]


@cpu_inline
def sum_column(column, x, zero, out):
    """``out[column]`` = the sum of column ``column`` of the 2-D ``x`` (from ``zero``)."""
    total = zero
    for row in range(x.shape[0]):
        total += x[row, column]
    out[column] = total


def flat(array: Any) -> Any:
    """``array`` as a 1-D view (NumPy and CUDA device arrays alike)."""
    return array.reshape(array.size)


def array_operations(dtype: np.dtype, cuda: CudaKernels | None) -> dict[str, Any]:
    """``fill``, ``copy``, ``add_into`` and ``scale_add_into`` on the CPU (``cuda`` None)
    or on CUDA."""
    cast = dtype.type
    scalar = numba.from_dtype(dtype)
    vector = scalar[::1]

    def loop(body: Any, *argtypes: Any) -> Any:
        return device_index_loop(cuda, body, argtypes, cost=COPY_COST)

    fill_loop = loop(fill_element, scalar, vector)
    copy_loop = loop(copy_element, vector, vector)
    add_into_loop = loop(add_into_element, vector, vector)
    scale_add_into_loop = loop(scale_add_into_element, vector, scalar, vector)

    def fill(out: Any, value: float) -> None:
        fill_loop(out.size, cast(value), flat(out))

    def copy(x: Any, out: Any) -> None:
        copy_loop(out.size, flat(x), flat(out))

    def add_into(x: Any, out: Any) -> None:
        add_into_loop(out.size, flat(x), flat(out))

    def scale_add_into(x: Any, alpha: float, out: Any) -> None:
        scale_add_into_loop(out.size, flat(x), cast(alpha), flat(out))

    return {"fill": fill, "copy": copy, "add_into": add_into, "scale_add_into": scale_add_into}


@njit(**KERNEL_OPTIONS)
def sum_rows_cpu(x, out):
    # row by row, so that the inner loop reads and writes consecutive elements (and
    # vectorises); a per-column sum would stride a whole row between reads
    out[:] = 0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[j] += x[i, j]


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    return {**array_operations(dtype, None), "sum_rows": sum_rows_cpu}


@functools.cache
def sum_rows_launcher(cuda_api: Any, dtype: np.dtype) -> Any:
    """Return ``launch(x, out)``: column sums of a 2-D array, one thread per column."""
    cuda = cuda_kernels(cuda_api, dtype)
    zero = dtype.type(0)
    sum_columns = cuda.index_loop(sum_column, (cuda.array(2), cuda.scalar, cuda.array(1)))

    def sum_rows(x: Any, out: Any) -> None:
        sum_columns(out.shape[0], x, zero, out)

    return sum_rows


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    return {
        **array_operations(dtype, cuda_kernels(cuda_api, dtype)),
        "sum_rows": sum_rows_launcher(cuda_api, dtype),
    }


class ArrayKernels(Protocol):
    """The array family's operations, the same on both devices (module doc)."""

    def fill(self, out: DeviceArray, value: float) -> None: ...

    def copy(self, x: DeviceArray, out: DeviceArray) -> None: ...

    def add_into(self, x: DeviceArray, out: DeviceArray) -> None: ...

    def scale_add_into(self, x: DeviceArray, alpha: float, out: DeviceArray) -> None: ...

    def sum_rows(self, x: DeviceArray, out: DeviceArray) -> None: ...
