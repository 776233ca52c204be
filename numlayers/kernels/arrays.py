"""Whole-array helpers the containers and layers need: fill, copy, accumulate, column sums.

Operations (both devices; arrays of any shape are taken as flat, C-contiguous):

- ``fill(out, value)``: every element of ``out`` becomes ``value``
- ``copy(x, out)``: ``out[...] = x``
- ``add_into(x, out)``: ``out += x`` (sums fan-out gradients)
- ``scale_add_into(x, alpha, out)``: ``out += alpha * x`` (epoch sums of batch values)
- ``sum_rows(x, out)``: ``out[j] = sum_i x[i, j]`` for a 2-D ``x``

Each elementwise operation is one per-index body, run by the toolkit's loops on both
devices. ``sum_rows`` is the exception. The CPU adds whole rows into ``out`` (a
per-column sum would walk memory a row apart at every step). CUDA runs one hand-written
kernel (:func:`sum_rows_launcher`): a block takes a tile of neighbouring columns, its
rows of threads split the rows among them, and shared memory adds their partial sums
in a fixed order, so the result is the same from run to run.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import numba
import numpy as np
from numba import njit

from numlayers.kernels.toolkit import (
    KERNEL_OPTIONS,
    MAX_BLOCKS,
    CudaKernels,
    DeviceArray,
    bind_cuda,
    blocks_for,
    cpu_inline,
    cpu_inline_early,
    cuda_kernels,
    device_index_loop,
    launch_size,
)

#: ``numba.cuda``, bound by :func:`bind_cuda` (the column-sum kernel names it as a global)
cuda: Any = None

#: The work of one element in the toolkit's units (one elementwise multiply-add, which
#: ``scale_add_into`` is): the others only move memory as it does, and take 0.6 (fill)
#: to 0.8 (copy) of its time (serial, on the 2-core development machine).
COPY_COST = 1.0

#: Columns of a CUDA column-sum block, along x: a warp reads 32 neighbouring elements
#: of a row, one coalesced load.
SUM_TILE_COLUMNS = launch_size(32, 4)
#: Rows of threads of a CUDA column-sum block, along y (a power of two, for the halving
#: in shared memory): each sums every ``SUM_ROW_GROUPS``-th row of its column. 16 makes
#: blocks of 512 threads, enough loads in flight to keep a tile's SM busy.
SUM_ROW_GROUPS = launch_size(16, 2)


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
    """Return ``launch(x, out)``: column sums of a 2-D array, in one launch.

    A block of :data:`SUM_TILE_COLUMNS` by :data:`SUM_ROW_GROUPS` threads takes a tile
    of neighbouring columns (blocks stride over the tiles past :data:`MAX_BLOCKS`).
    Thread ``(column, group)`` adds rows ``group, group + SUM_ROW_GROUPS, ...`` of its
    column into four accumulators, four rows a step, so that four loads are in flight at
    once; the groups' sums are then halved in shared memory, always in the same order
    (no atomics: the sums do not change from run to run).
    """
    kernels = bind_cuda(globals(), cuda_api, dtype)
    scalar = kernels.scalar
    zero = dtype.type(0)
    step = SUM_ROW_GROUPS

    @kernels.jit(kernels.array(2), kernels.array(1), threads=SUM_TILE_COLUMNS * SUM_ROW_GROUPS)
    def sum_rows_kernel(x, out):
        partial = cuda.shared.array((SUM_ROW_GROUPS, SUM_TILE_COLUMNS), scalar)
        lane = cuda.threadIdx.x
        group = cuda.threadIdx.y
        rows, columns = x.shape
        tiles = (columns + SUM_TILE_COLUMNS - 1) // SUM_TILE_COLUMNS
        # the tile loop's bounds are the same for every thread of the block, so all of
        # them reach each syncthreads, those past the last column with zero sums
        for tile in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
            column = tile * SUM_TILE_COLUMNS + lane
            total0 = zero
            total1 = zero
            total2 = zero
            total3 = zero
            if column < columns:
                row = group
                while row + 3 * step < rows:
                    total0 += x[row, column]
                    total1 += x[row + step, column]
                    total2 += x[row + 2 * step, column]
                    total3 += x[row + 3 * step, column]
                    row += 4 * step
                while row < rows:
                    total0 += x[row, column]
                    row += step
            partial[group, lane] = (total0 + total1) + (total2 + total3)
            cuda.syncthreads()
            width = SUM_ROW_GROUPS // 2
            while width > 0:
                if group < width:
                    partial[group, lane] += partial[group + width, lane]
                cuda.syncthreads()
                width //= 2
            # no syncthreads before the next tile: only this thread writes row 0 of
            # ``partial``, and the other rows were last read before the one above
            if group == 0 and column < columns:
                out[column] = partial[0, lane]

    block = (SUM_TILE_COLUMNS, SUM_ROW_GROUPS)

    def sum_rows(x: Any, out: Any) -> None:
        columns = out.shape[0]
        if columns > 0:  # a grid with no blocks cannot be launched
            blocks = min(blocks_for(columns, SUM_TILE_COLUMNS), MAX_BLOCKS)
            sum_rows_kernel[blocks, block](x, out)

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
