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
CPU copies in square tiles so that strided reads still use whole cache lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit, prange

from numlayers.kernels.cuda_support import blocks_for, new_registry
from numlayers.kernels.dropout import compile_serial_and_parallel

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None


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


def source_offset(position, out_shape, source_strides):
    """Offset in the input of flat output element ``position`` (all int64)."""
    offset = 0
    for axis in range(out_shape.shape[0] - 1, -1, -1):
        extent = out_shape[axis]
        offset += (position % extent) * source_strides[axis]
        position //= extent
    return offset


source_offset_cpu = njit(inline="always")(source_offset)

#: outputs at least this long are written by the CPU loops over both cores
PARALLEL_MIN_SIZE = 1 << 14
#: side of the square tiles the CPU permute copies (32 x 32 float64 is 8 KiB, in L1)
TILE = 32


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    zero = dtype.type(0)

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
            # the divisions of source_offset are paid once per tile, not per element
            source0 = source_offset_cpu(row0 * row_length, out_shape, source_strides)
            for column in range(0, row_length, column_tile):
                end = min(column + column_tile, row_length)
                for i in range(first, last):
                    target = (row0 + i * inner_rows) * row_length
                    source = source0 + i * tile_step
                    if row_stride == 1:  # a loop of its own, which LLVM vectorises
                        for j in range(column, end):
                            out[target + j] = x[source + j]
                    else:
                        for j in range(column, end):
                            out[target + j] = x[source + j * row_stride]

    def repeat_rows(x, out):
        for b in prange(out.shape[0]):
            for t in range(out.shape[1]):
                for j in range(out.shape[2]):
                    out[b, t, j] = x[b, j]

    def sum_repeats(grad_out, grad_x):
        for b in prange(grad_x.shape[0]):
            for j in range(grad_x.shape[1]):
                grad_x[b, j] = zero
            for t in range(grad_out.shape[1]):
                for j in range(grad_x.shape[1]):
                    grad_x[b, j] += grad_out[b, t, j]

    permute_serial, permute_parallel = compile_serial_and_parallel(permute_tiles)
    repeat_serial, repeat_parallel = compile_serial_and_parallel(repeat_rows)
    sum_serial, sum_parallel = compile_serial_and_parallel(sum_repeats)

    def permute_forward(
        x: np.ndarray, out: np.ndarray, out_shape: np.ndarray, source_strides: np.ndarray
    ) -> None:
        if out.size == 0:  # nothing to copy, and a zero-length row would divide by zero
            return
        permute = permute_parallel if out.size >= PARALLEL_MIN_SIZE else permute_serial
        permute(x.reshape(-1), out.reshape(-1), out_shape, source_strides)

    def repeat_vector_forward(x: np.ndarray, out: np.ndarray) -> None:
        (repeat_parallel if out.size >= PARALLEL_MIN_SIZE else repeat_serial)(x, out)

    def repeat_vector_backward(grad_out: np.ndarray, grad_x: np.ndarray) -> None:
        (sum_parallel if grad_out.size >= PARALLEL_MIN_SIZE else sum_serial)(grad_out, grad_x)

    return {
        "permute_forward": permute_forward,
        "repeat_vector_forward": repeat_vector_forward,
        "repeat_vector_backward": repeat_vector_backward,
    }


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    zero = dtype.type(0)
    vector = registry.array(1)
    indices = registry.array(1, np.int64)
    offset_of = registry.device(source_offset)

    @registry.jit(vector, vector, indices, indices)
    def permute_kernel(x, out, out_shape, source_strides):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = x[offset_of(i, out_shape, source_strides)]

    @registry.jit(registry.array(2), registry.array(3))
    def repeat_vector_kernel(x, out):
        i = cuda.grid(1)
        if i < out.size:
            repeats = out.shape[1]
            dim = out.shape[2]
            row = i // dim  # row = b * repeats + t
            out[row // repeats, row % repeats, i % dim] = x[row // repeats, i % dim]

    @registry.jit(registry.array(3), registry.array(2))
    def repeat_vector_backward_kernel(grad_out, grad_x):
        i = cuda.grid(1)
        if i < grad_x.size:
            dim = grad_x.shape[1]
            b = i // dim
            j = i % dim
            total = zero
            for t in range(grad_out.shape[1]):
                total += grad_out[b, t, j]
            grad_x[b, j] = total

    def permute_forward(x: Any, out: Any, out_shape: Any, source_strides: Any) -> None:
        permute_kernel[blocks_for(out.size), 256](
            x.reshape(x.size), out.reshape(out.size), out_shape, source_strides
        )

    def repeat_vector_forward(x: Any, out: Any) -> None:
        repeat_vector_kernel[blocks_for(out.size), 256](x, out)

    def repeat_vector_backward(grad_out: Any, grad_x: Any) -> None:
        repeat_vector_backward_kernel[blocks_for(grad_x.size), 256](grad_out, grad_x)

    return {
        "permute_forward": permute_forward,
        "repeat_vector_forward": repeat_vector_forward,
        "repeat_vector_backward": repeat_vector_backward,
    }
