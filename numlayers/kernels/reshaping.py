"""Reshaping layers: axis permutation (Permute) and vector repetition (RepeatVector).

Operations (both devices, outputs overwritten):

- ``permute_forward(x, out, out_shape, source_strides)``: ``out`` becomes the
  C-contiguous ``x.transpose(axes)``, for any rank; ``out_shape`` and
  ``source_strides`` are the int64 arrays :func:`permute_plan` returns for
  ``(x.shape, axes)`` (device arrays on CUDA, made once by the layer). The
  gradient of a permute is the permute by :func:`inverse_axes`, so a layer needs
  one plan each way and no separate backward operation.
- ``repeat_vector_forward(x, out)``: ``x`` is ``(batch, dim)``, ``out`` is
  ``(batch, n, dim)`` and ``out[b, t, :] = x[b, :]``
- ``repeat_vector_backward(grad_out, grad_x)``: ``grad_x[b, :] = sum_t grad_out[b, t, :]``

The permutation is index arithmetic: output element ``i``'s multi-index over
``out_shape``, dotted with ``source_strides``, is its offset in ``x``. That helper is
written once and compiled for both devices, so they agree for every rank. On CUDA
each thread copies one output element (coalesced writes, reads at x's strides); the
CPU copies in square tiles so that strided reads still use whole cache lines. RepeatVector
is one per-element body each way, run by the toolkit's loops on both devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numba
import numpy as np
from numba import prange

from numlayers.kernels.arrays import sum_column
from numlayers.kernels.toolkit import (
    CudaKernels,
    DeviceArray,
    cpu_inline,
    cpu_loop,
    cuda_kernels,
    device_index_loop,
)

#: The work of one element in the toolkit's units (one elementwise multiply-add), from
#: serial timings against ``scale_add_into`` on the 2-core development machine: the
#: repeat writes a row it reads from cache (0.45); the backward adds (0.7); the permute
#: reads at strides, through its tiles (5).
REPEAT_COST = 0.5
SUM_COST = 1.0
PERMUTE_COST = 5.0
#: side of the square tiles the CPU permute copies (32 x 32 float64 is 8 KiB, in L1)
TILE = 32


def permute_plan(in_shape: Sequence[int], axes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(out_shape, source_strides)`` for permuting an array of ``in_shape`` by ``axes``.

    Args:
        in_shape: shape of the C-contiguous input (rank 1 or more).
        axes: a permutation of ``range(len(in_shape))``; output axis ``k`` is input
            axis ``axes[k]``, as in ``numpy.transpose``.

    Returns:
        Two int64 arrays of length ``len(in_shape)``: the output's shape, and for
        each output axis the stride, in elements, of its input axis.

    Example:
        >>> permute_plan((2, 3, 4), (2, 0, 1))
        (array([4, 2, 3]), array([ 1, 12,  4]))
    """
    shape = [int(extent) for extent in in_shape]
    order = [int(axis) for axis in axes]
    if not shape:
        raise ValueError("permute_plan needs an input of rank 1 or more, received shape ()")
    if sorted(order) != list(range(len(shape))):
        raise ValueError(
            f"axes must be a permutation of range({len(shape)}) for an input of shape "
            f"{tuple(shape)}, received {tuple(axes)}"
        )
    strides = np.ones(len(shape), dtype=np.int64)
    for axis in range(len(shape) - 2, -1, -1):
        strides[axis] = strides[axis + 1] * shape[axis + 1]
    out_shape = np.array([shape[axis] for axis in order], dtype=np.int64)
    return out_shape, strides[order]


def inverse_axes(axes: Sequence[int]) -> tuple[int, ...]:
    """The axes that undo ``numpy.transpose(x, axes)`` (the permute's backward)."""
    return tuple(int(axis) for axis in np.argsort(np.asarray(axes, dtype=np.int64)))


@cpu_inline
def strided_offset(index, shape, strides):
    """Offset in a strided source of flat element ``index`` of an array of ``shape``
    (``strides[axis]``: the source's step, in elements, along each axis of ``shape``;
    0 where the source is broadcast). Reads a permuted array or a broadcast input."""
    offset = 0
    remaining = np.int64(index)  # a parallel loop's index is unsigned: keep offsets signed
    for axis in range(shape.shape[0] - 1, -1, -1):
        extent = shape[axis]
        offset += (remaining % extent) * strides[axis]
        remaining //= extent
    return offset


def permute_element(index, x, out_shape, source_strides, out):
    out[index] = x[strided_offset(index, out_shape, source_strides)]


@cpu_inline
def repeat_element(row, column, x, repeats, out):
    # ``out`` seen as (batch * repeats, dim): row ``b * repeats + t`` is a copy of x[b]
    out[row, column] = x[row // repeats, column]


def repeat_sum_element(sample, column, grad_out, zero, grad_x):
    # CUDA: one thread sums one column of one sample's repeats (neighbouring threads
    # read neighbouring elements)
    sum_column(column, grad_out[sample], zero, grad_x[sample])


@cpu_loop(cost=SUM_COST, size_argument=0)
def sum_repeats(grad_out, grad_x):
    # The CPU adds each sample's repeats row by row, so that the inner loop reads
    # consecutive elements and vectorises (a column at a time would stride by a row).
    for sample in prange(grad_x.shape[0]):
        grad_x[sample, :] = 0
        for t in range(grad_out.shape[1]):
            for j in range(grad_x.shape[1]):
                grad_x[sample, j] += grad_out[sample, t, j]


@cpu_loop(cost=PERMUTE_COST, size_argument=1)
def permute_tiles(x, out, out_shape, source_strides):
    # A row is the last output axis merged with the axes before it that stay
    # contiguous in x; (1, 0, 2, 3) copies whole x[i, j] blocks.
    axis = out_shape.shape[0] - 1
    row_stride = source_strides[axis]
    row_length = out_shape[axis]
    while axis > 0 and source_strides[axis - 1] == row_stride * row_length:
        axis -= 1
        row_length *= out_shape[axis]
    # Rows are copied in TILE x TILE tiles across the earlier axis that steps least
    # in x (usually 1), so a tile reads whole cache lines of x however far apart
    # its rows are, as in a blocked matrix transpose.
    tile_axis = axis
    for candidate in range(axis):
        if out_shape[candidate] > 1 and (
            tile_axis == axis or source_strides[candidate] < source_strides[tile_axis]
        ):
            tile_axis = candidate
    tile_extent = 1
    tile_step = 0
    inner_rows = 1  # rows between consecutive indices along the tile axis
    if tile_axis < axis:
        tile_extent = out_shape[tile_axis]
        tile_step = source_strides[tile_axis]
        for between in range(tile_axis + 1, axis):
            inner_rows *= out_shape[between]
    column_tile = row_length if row_stride == 1 else TILE
    row_tiles = (tile_extent + TILE - 1) // TILE
    for task in prange(out.size // (row_length * tile_extent) * row_tiles):
        group = task // row_tiles  # the rows that differ only along the tile axis
        first = (task % row_tiles) * TILE
        last = min(first + TILE, tile_extent)
        row0 = (group // inner_rows) * tile_extent * inner_rows + group % inner_rows
        # the divisions of strided_offset are paid once per tile, not per element
        source0 = strided_offset(row0 * row_length, out_shape, source_strides)
        for column in range(0, row_length, column_tile):
            end = min(column + column_tile, row_length)
            for i in range(first, last):
                target = (row0 + i * inner_rows) * row_length
                source = source0 + i * tile_step
                if row_stride == 1:
                    # a loop of its own over unsigned offsets, which LLVM vectorises
                    # (with signed ones, the negative-index checks kept it scalar:
                    # eight times slower)
                    out_row, x_row = np.uint64(target + column), np.uint64(source + column)
                    for j in range(np.uint64(end - column)):
                        out[out_row + j] = x[x_row + j]
                else:
                    for j in range(column, end):
                        out[target + j] = x[source + j * row_stride]


def repeat_forward(dtype: np.dtype, cuda: CudaKernels | None) -> Any:
    """RepeatVector's forward on the CPU (``cuda`` None) or on CUDA."""
    matrix = numba.from_dtype(dtype)[:, ::1]
    repeat = device_index_loop(
        cuda, repeat_element, (matrix, numba.int64, matrix), dims=2, cost=REPEAT_COST
    )

    def repeat_vector_forward(x: Any, out: Any) -> None:
        batch, repeats, dim = out.shape
        repeat(batch * repeats, dim, x, repeats, out.reshape(batch * repeats, dim))

    return repeat_vector_forward


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    def permute_forward(
        x: np.ndarray, out: np.ndarray, out_shape: np.ndarray, source_strides: np.ndarray
    ) -> None:
        if out.size == 0:  # nothing to copy, and a zero-length row would divide by zero
            return
        permute_tiles(x.reshape(-1), out.reshape(-1), out_shape, source_strides)

    def repeat_vector_backward(grad_out: np.ndarray, grad_x: np.ndarray) -> None:
        sum_repeats(grad_out, grad_x)

    return {
        "permute_forward": permute_forward,
        "repeat_vector_forward": repeat_forward(dtype, None),
        "repeat_vector_backward": repeat_vector_backward,
    }


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    cuda = cuda_kernels(cuda_api, dtype)
    zero = dtype.type(0)
    vector = cuda.array(1)
    indices = cuda.array(1, np.int64)
    # one thread per output element, which the CPU's tiles would only slow down
    permute = cuda.index_loop(permute_element, (vector, indices, indices, vector))
    repeat_sum = cuda.index_loop(
        repeat_sum_element, (cuda.array(3), cuda.scalar, cuda.array(2)), dims=2
    )

    def permute_forward(x: Any, out: Any, out_shape: Any, source_strides: Any) -> None:
        permute(out.size, x.reshape(x.size), out_shape, source_strides, out.reshape(out.size))

    def repeat_vector_backward(grad_out: Any, grad_x: Any) -> None:
        batch, dim = grad_x.shape
        repeat_sum(batch, dim, grad_out, zero, grad_x)

    return {
        "permute_forward": permute_forward,
        "repeat_vector_forward": repeat_forward(dtype, cuda),
        "repeat_vector_backward": repeat_vector_backward,
    }


class ReshapingKernels(Protocol):
    """The reshaping family's operations, the same on both devices (module doc)."""

    def permute_forward(
        self,
        x: DeviceArray,
        out: DeviceArray,
        out_shape: DeviceArray,
        source_strides: DeviceArray,
    ) -> None: ...

    def repeat_vector_forward(self, x: DeviceArray, out: DeviceArray) -> None: ...

    def repeat_vector_backward(self, grad_out: DeviceArray, grad_x: DeviceArray) -> None: ...
