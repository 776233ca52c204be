"""The depth gather of Convolution3D and its adjoint (family ``convolutional.depth``).

A 3-D convolution is computed as a 2-D one (the kernels of
:mod:`numlayers.kernels.convolutional`) over the last two spatial axes, whose channels
are the pairs (channel, depth tap): for each output depth ``o`` the input slices under
the ``taps`` depth taps of its window are gathered side by side, zeros where a tap
falls on the padding. The depth window is a :class:`DepthWindow`; output depth ``o``
reads input depth ``o * stride - pad + k`` at tap ``k``.

With ``plane`` the elements of one depth slice of one channel, the gathered
``columns`` are:

- ``"th"``: ``x (N, C, D, plane)``, ``columns (N, O, C, taps, plane)``: as
  ``(N * O, C * taps, rows, cols)``, the channels ordered ``(c, k)`` as the weight
  ``(F, C, taps, KR, KC)`` stores them, so that weight is the 2-D ``"th"`` weight by a
  reshape;
- ``"tf"``: ``x (N, D, plane, C)``, ``columns (N, O, plane, taps, C)``: as
  ``(N * O, rows, cols, taps * C)``, the channels ordered ``(k, c)``.

Both are one form: ``x`` has axes ``(n, a, d, b)`` in some order of ``a`` and ``d``
(``a, b`` are ``c, plane`` for ``"th"`` and ``plane, c`` for ``"tf"``) and
``columns`` is ``(N, O, a, taps, b)``; the window carries the steps of ``a`` and
``d`` in ``x``.

Operations (both devices; arrays C-contiguous, outputs overwritten):

- ``depth_gather_forward(x, window, columns)``: ``columns[n, o, a, k, b] =
  x[n, a, o * stride - pad + k, b]``, zero where that depth is outside ``x``.
- ``depth_gather_backward(grad_columns, window, grad_x)``: the adjoint,
  ``grad_x[n, a, d, b]`` the sum of ``grad_columns[n, o, a, k, b]`` over the taps
  ``k`` and output depths ``o`` that read depth ``d`` (col2im along the depth): a
  gather over at most ``taps`` values per element, so no two threads write one
  element, no atomics and the same result on every run.

Both write the rows of their output array, a row being its innermost axis ``b`` (a
depth slice's plane for ``"th"``, the channels for ``"tf"``), which is contiguous in
both arrays. On CUDA a row's offsets (the helpers below, device functions there)
are computed per element, one thread per element (the toolkit's 2-D index loop over
rows and ``b``), so neighbouring threads write neighbouring elements. On the CPU a
thread takes a block of rows and copies or sums them with slices, in the order of the
array written: the gather a block ``(n, o)``, its adjoint a block ``(n, a)``, which
zeroes its rows and adds each column row the block's taps filled from them (no other
block writes them). The divisions that place a block are done once for all its rows:
placed row by row, the channels-last gather (rows of a few channels) took 3.5 times as
long (8 x 16 x 16 x 32 x 32, three taps, float32, 2 cores: 8.1 -> 2.3 ms; its adjoint
7.2 -> 5.7 ms; channels first, rows of a whole plane, the same either way).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numba
import numpy as np

from numlayers.kernels.convolutional.geometry import source_position
from numlayers.kernels.toolkit import (
    CudaKernels,
    DeviceArray,
    cpu_index_loop,
    cpu_inline,
    cuda_kernels,
)

#: The work of one element written, in the toolkit's units (one vectorised
#: ``scale_add_into`` element), from serial float32 timings on the 2-core development
#: machine (depth 8, three taps): a gathered element 4, an input gradient element (a
#: sum of three rows) 15, in rows of 256 (``"th"``, 16 x 16 slices). The per-element
#: body (CUDA's) took 160 units a gathered element on the CPU, nearly all of it the
#: integer divisions that place a row: hence the CPU's blocks of rows.
GATHER_COST = 4.0
SCATTER_COST = 15.0


class DepthWindow(NamedTuple):
    """Where the depth taps of a 3-D convolution stand (see the module doc).

    ``pad`` is the zeros before the first input depth
    (:func:`numlayers.layers.spatial.padding_before`); ``plane`` the elements of one
    depth slice of one channel (rows times columns).
    """

    layout: str
    channels: int
    depth: int
    plane: int
    taps: int
    outputs: int
    stride: int
    pad: int

    def numbers(self) -> tuple[int, ...]:
        """The sizes as the kernels read them: ``(across, depth, inner, taps, outputs,
        stride, pad, across_step, depth_step)``, ``a`` being ``across`` and ``b``
        ``inner``, the steps those of ``a`` and ``d`` in ``x``."""
        if self.layout == "th":  # x (N, C, D, plane)
            across, inner = self.channels, self.plane
            across_step, depth_step = self.depth * self.plane, self.plane
        else:  # x (N, D, plane, C)
            across, inner = self.plane, self.channels
            across_step, depth_step = self.channels, self.plane * self.channels
        return tuple(
            int(value)
            for value in (
                across,
                self.depth,
                inner,
                self.taps,
                self.outputs,
                self.stride,
                self.pad,
                across_step,
                depth_step,
            )  # fmt: skip
        )


@cpu_inline
def gathered_source(row, window):
    """Where row ``row`` ``(n, o, a, k)`` of the columns (``(N * O * across * taps,
    inner)``) starts in ``x``, or -1 where its depth is padding."""
    across, depth, inner, taps, outputs, stride, pad, across_step, depth_step = window
    index = np.int64(row)  # a parallel loop's index is unsigned: keep depths signed
    k = index % taps
    rest = index // taps
    a = rest % across
    rest //= across
    o = rest % outputs
    n = rest // outputs
    d = o * stride - pad + k
    if d < 0 or d >= depth:
        return -1
    return n * (across * depth * inner) + a * across_step + d * depth_step


@cpu_inline
def input_row(row, window):
    """``(n, a, d)`` of row ``row`` of ``x`` in the order ``(n, a, d)`` and where that
    row starts in ``x`` (whose order of ``a`` and ``d`` the window's steps give)."""
    across, depth, inner, taps, outputs, stride, pad, across_step, depth_step = window
    index = np.int64(row)
    d = index % depth
    rest = index // depth
    a = rest % across
    n = rest // across
    return n, a, d, n * (across * depth * inner) + a * across_step + d * depth_step


@cpu_inline
def tap_source(n, a, d, k, window):
    """Where the columns' row that tap ``k`` fills from depth ``d`` starts, or -1 where
    no output depth puts tap ``k`` on ``d``."""
    across, depth, inner, taps, outputs, stride, pad, across_step, depth_step = window
    o = source_position(d, k, stride, pad, 1, outputs)
    if o < 0:
        return -1
    return (((n * outputs + o) * across + a) * taps + k) * inner


# CUDA: one thread per element, neighbouring threads on neighbouring elements of a row
@cpu_inline
def depth_gather_element(row, column, x, window, zero, columns):
    source = gathered_source(row, window)
    target = np.int64(row) * window[2] + column
    if source < 0:
        columns[target] = zero
    else:
        columns[target] = x[source + column]


@cpu_inline
def depth_gather_backward_element(row, column, grad_columns, window, zero, grad_x):
    n, a, d, target = input_row(row, window)
    total = zero
    for k in range(window[3]):
        source = tap_source(n, a, d, k, window)
        if source >= 0:
            total += grad_columns[source + column]
    grad_x[target + column] = total


# CPU: a block of rows at a time, in the order of the array written, the divisions
# that place the block done once for all its rows
@cpu_inline
def depth_gather_block(block, x, window, zero, columns):
    """The rows ``(n, o, a, k)`` of the columns for every ``(a, k)`` of block ``(n, o)``."""
    across, depth, inner, taps, outputs, stride, pad, across_step, depth_step = window
    index = np.int64(block)
    o = index % outputs
    n = index // outputs
    target = index * (across * taps * inner)  # row (n, o, 0, 0)
    base = n * (across * depth * inner)
    for a in range(across):
        for k in range(taps):
            d = o * stride - pad + k
            if d < 0 or d >= depth:
                columns[target : target + inner] = zero
            else:
                source = base + a * across_step + d * depth_step
                columns[target : target + inner] = x[source : source + inner]
            target += inner


@cpu_inline
def depth_gather_backward_block(block, grad_columns, window, zero, grad_x):
    """The rows ``(n, a, d)`` of the input gradient for every ``d`` of block ``(n, a)``:
    zeroed, then each column row ``(n, o, a, k)`` added to the row of the depth it was
    gathered from (the rows a block writes are its own: no two threads meet)."""
    across, depth, inner, taps, outputs, stride, pad, across_step, depth_step = window
    index = np.int64(block)
    a = index % across
    n = index // across
    base = n * (across * depth * inner) + a * across_step
    for d in range(depth):
        target = base + d * depth_step
        grad_x[target : target + inner] = zero
    row_step = across * taps * inner  # from output depth o to o + 1
    first = (n * outputs * across + a) * taps * inner  # row (n, 0, a, 0)
    for o in range(outputs):
        for k in range(taps):
            d = o * stride - pad + k
            if d >= 0 and d < depth:
                source = first + o * row_step + k * inner
                target = base + d * depth_step
                grad_x[target : target + inner] += grad_columns[source : source + inner]


def depth_operations(dtype: np.dtype, cuda: CudaKernels | None) -> dict[str, Any]:
    """The family's operations on the CPU (``cuda`` None) or on CUDA."""
    zero = dtype.type(0)
    vector = numba.from_dtype(dtype)[::1]
    argtypes = (vector, numba.types.UniTuple(numba.int64, 9), numba.from_dtype(dtype), vector)
    if cuda is None:
        gather_blocks = cpu_index_loop(depth_gather_block, cost=GATHER_COST)
        scatter_blocks = cpu_index_loop(depth_gather_backward_block, cost=SCATTER_COST)

        def gather(rows: int, inner: int, *arguments: Any) -> None:
            per_block = arguments[1][0] * arguments[1][3]  # across * taps
            gather_blocks(rows // per_block, *arguments, elements=per_block * inner)

        def scatter(rows: int, inner: int, *arguments: Any) -> None:
            per_block = arguments[1][1]  # depth
            scatter_blocks(rows // per_block, *arguments, elements=per_block * inner)

    else:
        gather = cuda.index_loop(depth_gather_element, argtypes, dims=2)
        scatter = cuda.index_loop(depth_gather_backward_element, argtypes, dims=2)

    def depth_gather_forward(x: Any, window: DepthWindow, columns: Any) -> None:
        numbers = window.numbers()
        inner = numbers[2]
        flat_x = x.reshape(x.size)
        gather(columns.size // inner, inner, flat_x, numbers, zero, columns.reshape(columns.size))

    def depth_gather_backward(grad_columns: Any, window: DepthWindow, grad_x: Any) -> None:
        numbers = window.numbers()
        inner = numbers[2]
        flat_grad = grad_columns.reshape(grad_columns.size)
        scatter(grad_x.size // inner, inner, flat_grad, numbers, zero, grad_x.reshape(grad_x.size))

    return {
        "depth_gather_forward": depth_gather_forward,
        "depth_gather_backward": depth_gather_backward,
    }


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    return depth_operations(np.dtype(dtype), None)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    return depth_operations(np.dtype(dtype), cuda_kernels(cuda_api, dtype))


class DepthKernels(Protocol):
    """The depth gather's operations, the same on both devices (module doc)."""

    def depth_gather_forward(
        self, x: DeviceArray, window: DepthWindow, columns: DeviceArray
    ) -> None: ...

    def depth_gather_backward(
        self, grad_columns: DeviceArray, window: DepthWindow, grad_x: DeviceArray
    ) -> None: ...
