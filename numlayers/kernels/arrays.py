"""Whole-array helpers the containers and layers need: fill, copy, accumulate, column sums.

Operations (both devices; arrays of any shape are taken as flat, C-contiguous):

- ``fill(out, value)``: every element of ``out`` becomes ``value``
- ``copy(x, out)``: ``out[...] = x``
- ``add_into(x, out)``: ``out += x`` (sums fan-out gradients)
- ``scale_add_into(x, alpha, out)``: ``out += alpha * x`` (epoch sums of batch values)
- ``sum_rows(x, out)``: ``out[j] = sum_i x[i, j]`` for a 2-D ``x``
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import njit

from numlayers.kernels.cuda_support import blocks_for, new_registry

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    cast = dtype.type

    @njit(cache=True)
    def fill_flat(out, value):
        for i in range(out.size):
            out[i] = value

    @njit(cache=True)
    def copy_flat(x, out):
        for i in range(out.size):
            out[i] = x[i]

    @njit(cache=True)
    def add_into_flat(x, out):
        for i in range(out.size):
            out[i] += x[i]

    @njit(cache=True)
    def scale_add_into_flat(x, alpha, out):
        for i in range(out.size):
            out[i] += alpha * x[i]

    @njit(cache=True)
    def sum_rows(x, out):
        out[:] = 0
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                out[j] += x[i, j]

    def fill(out: np.ndarray, value: float) -> None:
        fill_flat(out.reshape(-1), cast(value))

    def copy(x: np.ndarray, out: np.ndarray) -> None:
        copy_flat(x.reshape(-1), out.reshape(-1))

    def add_into(x: np.ndarray, out: np.ndarray) -> None:
        add_into_flat(x.reshape(-1), out.reshape(-1))

    def scale_add_into(x: np.ndarray, alpha: float, out: np.ndarray) -> None:
        scale_add_into_flat(x.reshape(-1), cast(alpha), out.reshape(-1))

    return {
        "fill": fill,
        "copy": copy,
        "add_into": add_into,
        "scale_add_into": scale_add_into,
        "sum_rows": sum_rows,
    }


@functools.cache
def sum_rows_launcher(cuda_api: Any, dtype: np.dtype) -> Any:
    """Return ``launch(x, out)``: column sums of a 2-D array, one thread per column."""
    registry = new_registry(globals(), cuda_api, dtype)
    zero = registry.dtype.type(0)

    @registry.jit(registry.array(2), registry.array(1))
    def sum_rows_kernel(x, out):
        j = cuda.grid(1)
        if j < out.shape[0]:
            total = zero
            for i in range(x.shape[0]):
                total += x[i, j]
            out[j] = total

    def sum_rows(x: Any, out: Any) -> None:
        sum_rows_kernel[blocks_for(out.shape[0]), 256](x, out)

    return sum_rows


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    cast = dtype.type
    vector = registry.array(1)

    @registry.jit(vector, registry.scalar)
    def fill_kernel(out, value):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = value

    @registry.jit(vector, vector)
    def copy_kernel(x, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = x[i]

    @registry.jit(vector, vector)
    def add_into_kernel(x, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] += x[i]

    @registry.jit(vector, registry.scalar, vector)
    def scale_add_into_kernel(x, alpha, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] += alpha * x[i]

    def fill(out: Any, value: float) -> None:
        fill_kernel[blocks_for(out.size), 256](out.reshape(out.size), cast(value))

    def copy(x: Any, out: Any) -> None:
        copy_kernel[blocks_for(out.size), 256](x.reshape(x.size), out.reshape(out.size))

    def add_into(x: Any, out: Any) -> None:
        add_into_kernel[blocks_for(out.size), 256](x.reshape(x.size), out.reshape(out.size))

    def scale_add_into(x: Any, alpha: float, out: Any) -> None:
        scale_add_into_kernel[blocks_for(out.size), 256](
            x.reshape(x.size), cast(alpha), out.reshape(out.size)
        )

    return {
        "fill": fill,
        "copy": copy,
        "add_into": add_into,
        "scale_add_into": scale_add_into,
        "sum_rows": sum_rows_launcher(cuda_api, dtype),
    }
