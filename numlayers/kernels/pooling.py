"""Pooling, upsampling and zero-padding kernels (the MaxPooling, AveragePooling,
UpSampling and ZeroPadding layers, 1-D and 2-D).

Every array is seen as 4-D ``(outer, rows, cols, inner)``: the two spatial axes in the
middle, the axes before them merged into ``outer`` and those after them into ``inner``.
A channels-first image batch ``(samples, channels, rows, cols)`` is
``(samples * channels, rows, cols, 1)``, a channels-last one is itself, and a sequence
batch ``(samples, steps, features)`` is ``(samples, steps, 1, features)``: so one kernel
per operation serves both orderings and the 1-D layers.

A pooling window is a :class:`PoolWindow`: its size, its stride and the zeros before
the first input along each spatial axis (``"same"`` padding). Window ``(r, c)`` covers
the input rows ``r * stride_rows - pad_rows + [0, pool_rows)`` and the columns likewise,
clipped to the input: padded positions never win a maximum and do not count in an
average (a window at a border averages fewer values). Every window holds at least one
input position (the layers' shapes make sure of it).

Operations (both devices; arrays 4-D and C-contiguous, outputs overwritten):

- ``max_pool_forward(x, window, out, argmax)``: ``out`` is each window's maximum and
  ``argmax`` (int32, shaped like ``out``) its position in the window,
  ``row * pool_cols + col``: the first in row-major order among equal maxima; a NaN in
  a window gives NaN, at the first NaN's position.
- ``max_pool_backward(grad_out, argmax, window, grad_x)``: each window's gradient goes
  to the input position its ``argmax`` names; an input in several windows (a stride
  smaller than the pool) gets the sum, one in none gets zero.
- ``average_pool_forward(x, window, out)``: each window's mean over its input positions.
- ``average_pool_backward(grad_out, window, grad_x)``: each input gets the sum, over the
  windows that cover it, of their gradient divided by their number of input positions.
- ``upsample_forward(x, out)``: nearest-neighbour repetition, ``out[o, r, c, i] =
  x[o, r // f, c // g, i]`` with the factors ``f, g`` the ratios of the shapes.
- ``upsample_backward(grad_out, grad_x)``: each input gets the sum of its ``f x g`` block.
- ``zero_pad_forward(x, padding, out)``: ``x`` placed in ``out`` after ``padding``
  ``(rows, cols)`` zeros along each spatial axis, zeros around it.
- ``zero_pad_backward(grad_out, padding, grad_x)``: the crop of ``grad_out`` at ``x``.

Each operation is one per-element body ``body(o, r, c, i, ...)`` at the 4-D index of
the element it writes, written once for both devices. CUDA runs it by the toolkit's
2-D index loop over ``(outer * rows, cols * inner)``, one thread per element
(neighbouring threads write neighbouring elements), one launch per operation; its
backward passes gather (each input element sums what the windows covering it send
it), so no two threads write the same element: no atomics, the same result on every
run. The CPU runs loops of its own order (see "CPU loops" below), a ``prange`` over the
rows ``outer * rows`` or the slices ``outer`` of the array written, which call the same
per-window helpers: forward passes a row of windows at a time, the windows that need
no clipping apart from the few at the borders (which run the per-element bodies);
backward passes a slice at a time, each window scattering its gradient (a slice is
one thread's: deterministic too). :func:`spatial_loop` builds both devices' loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import numba
import numpy as np
from numba import prange

from numlayers.kernels.toolkit import (
    CpuLoop,
    CudaKernels,
    DeviceArray,
    argument_list,
    cpu_inline,
    cuda_kernels,
    generate_function,
)

#: The work of one element of the array written in the toolkit's units (one
#: vectorised ``scale_add_into`` element, 0.2 ns), measured serially in float32 on the
#: 2-core development machine with the CPU loops below: a 2 x 2 window of the
#: forward passes 30 to 90 units, an input element of the backward passes (the
#: scattered gradients, the upsampling sum) 8 to 20, an upsampled copy 5 to 8, a padded
#: copy or crop 6 to 10.
WINDOW_COST = 60.0
INPUT_COST = 12.0
UPSAMPLE_COST = 6.0
PAD_COST = 8.0


class PoolWindow(NamedTuple):
    """Where the pooling windows stand along the two spatial axes (see the module doc)."""

    pool_rows: int
    pool_cols: int
    stride_rows: int
    stride_cols: int
    pad_rows: int
    pad_cols: int


# ---------------------------------------------------------------- index helpers


@cpu_inline
def quotient(dividend, divisor):
    """``dividend // divisor`` for non-negative ints, as an int64: unsigned division is
    the shorter instruction sequence (no rounding of negative quotients)."""
    return np.int64(np.uint64(dividend) // np.uint64(divisor))


@cpu_inline
def last_window(position, stride, pad, count):
    """The last of ``count`` windows whose start is at or before input ``position`` along
    an axis. It and the windows before it cover ``position`` while ``position + pad -
    window * stride`` (the position's offset in the window) is less than the pool."""
    return min(quotient(position + pad, stride), count - 1)


@cpu_inline
def window_offsets(first, pool, length):
    """The offsets ``(start, stop)`` in a window starting at input ``first`` that fall
    inside an axis of ``length`` inputs (padding before or after is left out)."""
    return max(-first, 0), min(pool, length - first)


@cpu_inline
def interior_windows(pool, stride, pad, length, count):
    """``(first, stop)``: the windows ``first <= c < stop`` of the ``count`` along an axis
    of ``length`` inputs that need no clipping (the others are border windows)."""
    first = min(quotient(pad + stride - 1, stride), count)
    stop = (length - pool + pad) // stride + 1  # floor division: no window when negative
    return first, max(min(stop, count), first)


@cpu_inline
def border_column(k, first, stop):
    """The ``k``-th border window of an axis whose interior windows are ``[first, stop)``."""
    return k if k < first else k - first + stop


# ---------------------------------------------------------------- per-element formulas


@cpu_inline
def window_mean(total, count, like):
    """``total / count`` in ``like``'s dtype (not float64)."""
    return total / like.dtype.type(count)


# ---------------------------------------------------------------- pooling bodies


@cpu_inline
def window_max(x, outer, inner, top, left, rows, cols, pool_cols, zero):
    """``(maximum, its position in the window)`` over the window at ``(top, left)``,
    offsets ``rows`` by ``cols`` (``range`` pairs, clipped to the input)."""
    best = x[outer, top + rows[0], left + cols[0], inner]
    chosen = rows[0] * pool_cols + cols[0]
    # One comparison per value, which LLVM turns into selects (a NaN-aware comparison
    # became branches, mispredicted on random data: 3 times slower); a NaN is caught by
    # the sum, NaN when some value is.
    total = zero
    for i in range(rows[0], rows[1]):
        for j in range(cols[0], cols[1]):
            value = x[outer, top + i, left + j, inner]
            total += value
            if value > best:  # strictly: the first of equal maxima stays
                best = value
                chosen = i * pool_cols + j
    if total != total:  # a NaN, or infinities of both signs: look for the first NaN
        for i in range(rows[0], rows[1]):
            for j in range(cols[0], cols[1]):
                value = x[outer, top + i, left + j, inner]
                if value != value and best == best:
                    best = value
                    chosen = i * pool_cols + j
    return best, chosen


@cpu_inline
def max_pool_forward_element(outer, r, c, inner, x, window, zero, out, argmax):
    pool_rows, pool_cols, stride_rows, stride_cols, pad_rows, pad_cols = window
    top = r * stride_rows - pad_rows
    left = c * stride_cols - pad_cols
    rows = window_offsets(top, pool_rows, x.shape[1])
    cols = window_offsets(left, pool_cols, x.shape[2])
    best, chosen = window_max(x, outer, inner, top, left, rows, cols, pool_cols, zero)
    out[outer, r, c, inner] = best
    argmax[outer, r, c, inner] = chosen


@cpu_inline
def max_pool_backward_element(outer, y, z, inner, grad_out, argmax, window, zero, grad_x):
    pool_rows, pool_cols, stride_rows, stride_cols, pad_rows, pad_cols = window
    last_col = last_window(z, stride_cols, pad_cols, grad_out.shape[2])
    total = zero
    # the windows covering (y, z), from the last back (while loops: a range with a
    # negative step costs a division to set up)
    r = last_window(y, stride_rows, pad_rows, grad_out.shape[1])
    offset_row = y + pad_rows - r * stride_rows
    while r >= 0 and offset_row < pool_rows:
        c = last_col
        offset_col = z + pad_cols - c * stride_cols
        while c >= 0 and offset_col < pool_cols:
            if argmax[outer, r, c, inner] == offset_row * pool_cols + offset_col:
                total += grad_out[outer, r, c, inner]
            c -= 1
            offset_col += stride_cols
        r -= 1
        offset_row += stride_rows
    grad_x[outer, y, z, inner] = total


@cpu_inline
def window_average(x, outer, inner, top, left, rows, cols, zero):
    """The mean over the window at ``(top, left)``, offsets ``rows`` by ``cols``."""
    total = zero
    for i in range(rows[0], rows[1]):
        for j in range(cols[0], cols[1]):
            total += x[outer, top + i, left + j, inner]
    return window_mean(total, (rows[1] - rows[0]) * (cols[1] - cols[0]), x)


@cpu_inline
def average_pool_forward_element(outer, r, c, inner, x, window, zero, out):
    pool_rows, pool_cols, stride_rows, stride_cols, pad_rows, pad_cols = window
    top = r * stride_rows - pad_rows
    left = c * stride_cols - pad_cols
    rows = window_offsets(top, pool_rows, x.shape[1])
    cols = window_offsets(left, pool_cols, x.shape[2])
    out[outer, r, c, inner] = window_average(x, outer, inner, top, left, rows, cols, zero)


@cpu_inline
def average_pool_backward_element(outer, y, z, inner, grad_out, window, zero, grad_x):
    pool_rows, pool_cols, stride_rows, stride_cols, pad_rows, pad_cols = window
    rows, cols = grad_x.shape[1], grad_x.shape[2]
    last_col = last_window(z, stride_cols, pad_cols, grad_out.shape[2])
    total = zero
    r = last_window(y, stride_rows, pad_rows, grad_out.shape[1])
    top = r * stride_rows - pad_rows
    while r >= 0 and y - top < pool_rows:
        row_start, row_stop = window_offsets(top, pool_rows, rows)
        c = last_col
        left = c * stride_cols - pad_cols
        while c >= 0 and z - left < pool_cols:
            col_start, col_stop = window_offsets(left, pool_cols, cols)
            count = (row_stop - row_start) * (col_stop - col_start)
            total += window_mean(grad_out[outer, r, c, inner], count, grad_x)
            c -= 1
            left -= stride_cols
        r -= 1
        top -= stride_rows
    grad_x[outer, y, z, inner] = total


# ---------------------------------------------------------------- upsampling, padding


@cpu_inline
def upsample_forward_element(outer, r, c, inner, x, out):
    factor_rows = out.shape[1] // x.shape[1]
    factor_cols = out.shape[2] // x.shape[2]
    source = x[outer, quotient(r, factor_rows), quotient(c, factor_cols), inner]
    out[outer, r, c, inner] = source


@cpu_inline
def upsample_backward_element(outer, y, z, inner, grad_out, zero, grad_x):
    factor_rows = grad_out.shape[1] // grad_x.shape[1]
    factor_cols = grad_out.shape[2] // grad_x.shape[2]
    total = zero
    for r in range(y * factor_rows, (y + 1) * factor_rows):
        for c in range(z * factor_cols, (z + 1) * factor_cols):
            total += grad_out[outer, r, c, inner]
    grad_x[outer, y, z, inner] = total


@cpu_inline
def zero_pad_forward_element(outer, r, c, inner, x, padding, zero, out):
    y = r - padding[0]
    z = c - padding[1]
    if 0 <= y < x.shape[1] and 0 <= z < x.shape[2]:
        out[outer, r, c, inner] = x[outer, y, z, inner]
    else:
        out[outer, r, c, inner] = zero


@cpu_inline
def zero_pad_backward_element(outer, y, z, inner, grad_out, padding, grad_x):
    grad_x[outer, y, z, inner] = grad_out[outer, y + padding[0], z + padding[1], inner]


# ---------------------------------------------------------------- CPU loops
#
# The CPU's pooling forward runs a row of windows ``(outer, r)`` at a time: the rows of
# the window that fall inside the input are found once per row, and the windows that
# need no clipping along the columns (all but a few at the borders) skip it: the
# clipping cost 2 to 3 times the pooling. Its backward passes scatter, a slice
# ``outer`` at a time (the slices are the tasks, so no two threads write one element):
# each window sends its gradient to its inputs. That has no data-dependent branch,
# where the gather (each input looking for the windows that chose it) mispredicted
# one branch in four on random data (LLVM made the selects branches) and took several
# times as long.


@cpu_inline
def fill_row(array, outer, r, start, stop, value):
    for c in range(start, stop):
        for i in range(array.shape[3]):
            array[outer, r, c, i] = value


@cpu_inline
def fill_slice(array, outer, value):
    # one loop (an innermost loop over ``inner`` elements, often 1, costs more than it
    # does), over a view made once per slice (a view costs two atomic reference counts)
    flat = array[outer].reshape(array.shape[1] * array.shape[2] * array.shape[3])
    for k in range(flat.size):
        flat[k] = value


@cpu_inline
def is_default_window(rows, pool_cols):
    """Whether a row's windows are 2 x 2 or 2 x 1 (Keras' default pools, 2-D and 1-D),
    none clipped along the rows. Their loops are then written with these constant
    bounds, which LLVM unrolls: over bounds known only at run time, the loops cost 3 to
    5 times the pooling. (The test is the same for a whole row: LLVM moves it out of
    the loops, and the constants must be in the same function as the loops: a helper
    too large to be inlined would take them as run-time arguments.)"""
    return rows[0] == 0 and rows[1] == 2 and pool_cols <= 2


@cpu_inline
def max_pool_forward_row(outer, r, x, window, zero, out, argmax):
    pool_rows, pool_cols, stride_rows, stride_cols, pad_rows, pad_cols = window
    count = out.shape[2]
    first, stop = interior_windows(pool_cols, stride_cols, pad_cols, x.shape[2], count)
    for k in range(first + count - stop):
        c = border_column(k, first, stop)
        for i in range(x.shape[3]):
            max_pool_forward_element(outer, r, c, i, x, window, zero, out, argmax)
    top = r * stride_rows - pad_rows
    rows = window_offsets(top, pool_rows, x.shape[1])
    cols = (0, pool_cols)
    default = is_default_window(rows, pool_cols)
    for i in range(x.shape[3]):  # outside: a short innermost loop costs more than it does
        for c in range(first, stop):
            left = c * stride_cols - pad_cols
            if default and pool_cols == 2:
                best, chosen = window_max(x, outer, i, top, left, (0, 2), (0, 2), 2, zero)
            elif default:
                best, chosen = window_max(x, outer, i, top, left, (0, 2), (0, 1), 1, zero)
            else:
                best, chosen = window_max(x, outer, i, top, left, rows, cols, pool_cols, zero)
            out[outer, r, c, i] = best
            argmax[outer, r, c, i] = chosen


@cpu_inline
def average_pool_forward_row(outer, r, x, window, zero, out):
    pool_rows, pool_cols, stride_rows, stride_cols, pad_rows, pad_cols = window
    count = out.shape[2]
    first, stop = interior_windows(pool_cols, stride_cols, pad_cols, x.shape[2], count)
    for k in range(first + count - stop):
        c = border_column(k, first, stop)
        for i in range(x.shape[3]):
            average_pool_forward_element(outer, r, c, i, x, window, zero, out)
    top = r * stride_rows - pad_rows
    rows = window_offsets(top, pool_rows, x.shape[1])
    cols = (0, pool_cols)
    default = is_default_window(rows, pool_cols)
    for i in range(x.shape[3]):
        for c in range(first, stop):
            left = c * stride_cols - pad_cols
            if default and pool_cols == 2:
                mean = window_average(x, outer, i, top, left, (0, 2), (0, 2), zero)
            elif default:
                mean = window_average(x, outer, i, top, left, (0, 2), (0, 1), zero)
            else:
                mean = window_average(x, outer, i, top, left, rows, cols, zero)
            out[outer, r, c, i] = mean


@cpu_inline
def max_pool_backward_slice(outer, grad_out, argmax, window, zero, grad_x):
    pool_rows, pool_cols, stride_rows, stride_cols, pad_rows, pad_cols = window
    fill_slice(grad_x, outer, zero)
    for r in range(grad_out.shape[1]):
        top = r * stride_rows - pad_rows
        for i in range(grad_out.shape[3]):  # outside, as in max_pool_forward_row
            for c in range(grad_out.shape[2]):
                left = c * stride_cols - pad_cols
                # the position in the window back to its offsets (a shift for 2 columns)
                position = argmax[outer, r, c, i]
                if pool_cols == 2:
                    offset_row = quotient(position, 2)
                else:
                    offset_row = quotient(position, pool_cols)
                offset_col = position - offset_row * pool_cols
                grad_x[outer, top + offset_row, left + offset_col, i] += grad_out[outer, r, c, i]


@cpu_inline
def spread(grad_x, outer, inner, top, left, rows, cols, share):
    """Add ``share`` to the inputs of the window at ``(top, left)``, offsets ``rows`` by
    ``cols``."""
    for wi in range(rows[0], rows[1]):
        for wj in range(cols[0], cols[1]):
            grad_x[outer, top + wi, left + wj, inner] += share


@cpu_inline
def average_pool_backward_slice(outer, grad_out, window, zero, grad_x):
    pool_rows, pool_cols, stride_rows, stride_cols, pad_rows, pad_cols = window
    rows, cols = grad_x.shape[1], grad_x.shape[2]
    count = grad_out.shape[2]
    first, stop = interior_windows(pool_cols, stride_cols, pad_cols, cols, count)
    fill_slice(grad_x, outer, zero)
    for r in range(grad_out.shape[1]):
        top = r * stride_rows - pad_rows
        window_rows = window_offsets(top, pool_rows, rows)
        default = is_default_window(window_rows, pool_cols)
        for i in range(grad_out.shape[3]):
            for c in range(count):
                left = c * stride_cols - pad_cols
                window_cols = window_offsets(left, pool_cols, cols)
                size = (window_rows[1] - window_rows[0]) * (window_cols[1] - window_cols[0])
                share = window_mean(grad_out[outer, r, c, i], size, grad_x)
                if default and first <= c < stop and pool_cols == 2:
                    spread(grad_x, outer, i, top, left, (0, 2), (0, 2), share)
                elif default and first <= c < stop:
                    spread(grad_x, outer, i, top, left, (0, 2), (0, 1), share)
                else:
                    spread(grad_x, outer, i, top, left, window_rows, window_cols, share)


@cpu_inline
def upsample_forward_row(outer, r, x, out):
    factor_cols = out.shape[2] // x.shape[2]
    y = quotient(r, out.shape[1] // x.shape[1])
    for i in range(x.shape[3]):  # outside, as in max_pool_forward_row
        for k in range(factor_cols):
            for z in range(x.shape[2]):
                out[outer, r, z * factor_cols + k, i] = x[outer, y, z, i]


@cpu_inline
def upsample_backward_row(outer, y, grad_out, zero, grad_x):
    factor_rows = grad_out.shape[1] // grad_x.shape[1]
    factor_cols = grad_out.shape[2] // grad_x.shape[2]
    fill_row(grad_x, outer, y, 0, grad_x.shape[2], zero)
    for i in range(grad_x.shape[3]):  # outside, as in max_pool_forward_row
        for r in range(y * factor_rows, (y + 1) * factor_rows):
            for k in range(factor_cols):
                for z in range(grad_x.shape[2]):
                    grad_x[outer, y, z, i] += grad_out[outer, r, z * factor_cols + k, i]


@cpu_inline
def zero_pad_forward_row(outer, r, x, padding, zero, out):
    for c in range(out.shape[2]):
        for i in range(out.shape[3]):
            zero_pad_forward_element(outer, r, c, i, x, padding, zero, out)


@cpu_inline
def zero_pad_backward_row(outer, y, grad_out, padding, grad_x):
    for z in range(grad_x.shape[2]):
        for i in range(grad_x.shape[3]):
            zero_pad_backward_element(outer, y, z, i, grad_out, padding, grad_x)


# ---------------------------------------------------------------- operations


#: the CPU's loops over a 4-D ``(outer, rows, cols, inner)`` array: its rows, calling
#: ``cpu_body(o, r, *arguments)``, or its slices, calling ``cpu_body(o, *arguments)``
CPU_LOOPS = {
    "row": """
def {name}(outer, rows, cols, inner, {arguments}):
    for task in prange(outer * rows):
        o = quotient(task, rows)
        cpu_body(o, np.int64(task) - o * rows, {arguments})
""",
    "slice": """
def {name}(outer, rows, cols, inner, {arguments}):
    for o in prange(outer):
        cpu_body(o, {arguments})
""",
}
#: the CUDA twin's per-index body over ``(outer * rows, cols * inner)``: neighbouring
#: threads take neighbouring elements of the array written
CUDA_SPATIAL_BODY = """
def {name}(row, column, rows, inner, {arguments}):
    o = quotient(row, rows)
    c = quotient(column, inner)
    body(o, row - o * rows, c, column - c * inner, {arguments})
"""


def spatial_loop(
    cuda: CudaKernels | None,
    body: Any,
    cpu_body: Any,
    argtypes: Sequence[Any],
    cost: float,
    cpu_unit: str = "row",
) -> Callable[..., None]:
    """``run(shape, *arguments)``: every element of the 4-D ``shape`` ``(outer, rows,
    cols, inner)``, on CUDA an element at a time by ``body(o, r, c, i, *arguments)``, on
    the CPU (``cuda`` None) a row at a time by ``cpu_body(o, r, *arguments)`` or, with
    ``cpu_unit`` ``"slice"``, a slice at a time by ``cpu_body(o, *arguments)``.

    ``argtypes`` are the numba types of ``arguments`` (for the CUDA kernel); ``cost``
    is the work of one element (for the CPU's parallel rule).
    """
    arguments = argument_list(len(argtypes))
    if cuda is None:
        name = f"{cpu_body.__name__}_loop"
        template = generate_function(
            CPU_LOOPS[cpu_unit].format(name=name, arguments=arguments),
            name,
            cpu_body,
            {"cpu_body": cpu_body},
            {"prange": prange, "np": np, "quotient": quotient},
        )
        twins = CpuLoop(template, name, cost=cost, fastmath={"contract"})

        def run(shape: tuple[int, ...], *values: Any) -> None:
            twins.twin_for(math.prod(shape))(*shape, *values)

        return run
    name = f"{body.__name__}_spatial"
    split_body = generate_function(
        CUDA_SPATIAL_BODY.format(name=name, arguments=arguments),
        name,
        body,
        {"body": cuda.device(body), "quotient": cuda.device(quotient)},
        {},
    )
    compiled = cuda.cuda.jit(device=True, inline=True)(split_body)
    index = numba.types.int64
    launch = cuda.index_loop(split_body, (index, index, *argtypes), dims=2, device_body=compiled)

    def run_cuda(shape: tuple[int, ...], *values: Any) -> None:
        outer, rows, cols, inner = shape
        launch(outer * rows, cols * inner, rows, inner, *values)

    return run_cuda


def pooling_operations(dtype: np.dtype, cuda: CudaKernels | None) -> dict[str, Any]:
    """The family's operations on the CPU (``cuda`` None) or on CUDA."""
    zero = dtype.type(0)
    scalar = numba.from_dtype(dtype)
    array = scalar[:, :, :, ::1]
    indices = numba.int32[:, :, :, ::1]
    window_type = numba.types.UniTuple(numba.int64, 6)
    padding_type = numba.types.UniTuple(numba.int64, 2)

    def loop(body: Any, cpu_body: Any, cost: float, *argtypes: Any) -> Any:
        return spatial_loop(cuda, body, cpu_body, argtypes, cost)

    def scatter(body: Any, cpu_body: Any, cost: float, *argtypes: Any) -> Any:
        return spatial_loop(cuda, body, cpu_body, argtypes, cost, "slice")

    max_forward = loop(
        max_pool_forward_element,
        max_pool_forward_row,
        WINDOW_COST,
        array,
        window_type,
        scalar,
        array,
        indices,
    )
    max_backward = scatter(
        max_pool_backward_element,
        max_pool_backward_slice,
        INPUT_COST,
        array,
        indices,
        window_type,
        scalar,
        array,
    )
    average_forward = loop(
        average_pool_forward_element,
        average_pool_forward_row,
        WINDOW_COST,
        array,
        window_type,
        scalar,
        array,
    )
    average_backward = scatter(
        average_pool_backward_element,
        average_pool_backward_slice,
        INPUT_COST,
        array,
        window_type,
        scalar,
        array,
    )
    upsample = loop(upsample_forward_element, upsample_forward_row, UPSAMPLE_COST, array, array)
    upsample_sum = loop(
        upsample_backward_element, upsample_backward_row, INPUT_COST, array, scalar, array
    )
    pad = loop(
        zero_pad_forward_element, zero_pad_forward_row, PAD_COST, array, padding_type, scalar, array
    )
    crop = loop(
        zero_pad_backward_element, zero_pad_backward_row, PAD_COST, array, padding_type, array
    )

    def max_pool_forward(x: Any, window: PoolWindow, out: Any, argmax: Any) -> None:
        max_forward(out.shape, x, ints(window), zero, out, argmax)

    def max_pool_backward(grad_out: Any, argmax: Any, window: PoolWindow, grad_x: Any) -> None:
        max_backward(grad_x.shape, grad_out, argmax, ints(window), zero, grad_x)

    def average_pool_forward(x: Any, window: PoolWindow, out: Any) -> None:
        average_forward(out.shape, x, ints(window), zero, out)

    def average_pool_backward(grad_out: Any, window: PoolWindow, grad_x: Any) -> None:
        average_backward(grad_x.shape, grad_out, ints(window), zero, grad_x)

    def upsample_forward(x: Any, out: Any) -> None:
        upsample(out.shape, x, out)

    def upsample_backward(grad_out: Any, grad_x: Any) -> None:
        upsample_sum(grad_x.shape, grad_out, zero, grad_x)

    def zero_pad_forward(x: Any, padding: tuple[int, int], out: Any) -> None:
        pad(out.shape, x, ints(padding), zero, out)

    def zero_pad_backward(grad_out: Any, padding: tuple[int, int], grad_x: Any) -> None:
        crop(grad_x.shape, grad_out, ints(padding), grad_x)

    return {
        "max_pool_forward": max_pool_forward,
        "max_pool_backward": max_pool_backward,
        "average_pool_forward": average_pool_forward,
        "average_pool_backward": average_pool_backward,
        "upsample_forward": upsample_forward,
        "upsample_backward": upsample_backward,
        "zero_pad_forward": zero_pad_forward,
        "zero_pad_backward": zero_pad_backward,
    }


def ints(values: tuple[int, ...]) -> tuple[int, ...]:
    """A plain tuple of Python ints (each kernel compiles for tuples of int64 only)."""
    return tuple(int(value) for value in values)


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    return pooling_operations(np.dtype(dtype), None)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    return pooling_operations(np.dtype(dtype), cuda_kernels(cuda_api, dtype))


class PoolingKernels(Protocol):
    """The pooling family's operations, the same on both devices (module doc)."""

    def max_pool_forward(
        self, x: DeviceArray, window: PoolWindow, out: DeviceArray, argmax: DeviceArray
    ) -> None: ...

    def max_pool_backward(
        self,
        grad_out: DeviceArray,
        argmax: DeviceArray,
        window: PoolWindow,
        grad_x: DeviceArray,
    ) -> None: ...

    def average_pool_forward(
        self, x: DeviceArray, window: PoolWindow, out: DeviceArray
    ) -> None: ...

    def average_pool_backward(
        self, grad_out: DeviceArray, window: PoolWindow, grad_x: DeviceArray
    ) -> None: ...

    def upsample_forward(self, x: DeviceArray, out: DeviceArray) -> None: ...

    def upsample_backward(self, grad_out: DeviceArray, grad_x: DeviceArray) -> None: ...

    def zero_pad_forward(
        self, x: DeviceArray, padding: tuple[int, int], out: DeviceArray
    ) -> None: ...

    def zero_pad_backward(
        self, grad_out: DeviceArray, padding: tuple[int, int], grad_x: DeviceArray
    ) -> None: ...
