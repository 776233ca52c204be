"""Shapes and windows of a convolution: :class:`ConvolutionGeometry`, the index
constants the kernels read it by, and the index helpers both devices' kernels use
(inlined into the CPU loops, compiled as device functions on CUDA)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numba

from numlayers.kernels.toolkit import DEVICE_SUBSTITUTES, cpu_inline


class ConvolutionGeometry(NamedTuple):
    """Sizes of one convolution (see the module doc for the layouts).

    ``pad_*`` are the zeros before the first input along an axis
    (:func:`numlayers.layers.spatial.padding_before`); the zeros after it are implied
    by the output size.

    A volume (Convolution3D's input, for the paths that take it whole:
    ``convolution_takes_volumes``) adds a depth axis before the rows: ``x (N, C / KD,
    D, H, W)`` and ``out (N, F, OD, OH, OW)`` channels first, ``channels`` counting
    the pairs (channel, depth tap) as the weight ``(F, C / KD, KD, KH, KW)`` folds them
    (``KD`` is ``kernel_depth``). The defaults are an image's: one plane, one tap.
    """

    layout: str
    channels: int
    rows: int
    cols: int
    filters: int
    kernel_rows: int
    kernel_cols: int
    out_rows: int
    out_cols: int
    stride_rows: int = 1
    stride_cols: int = 1
    dilation_rows: int = 1
    dilation_cols: int = 1
    pad_rows: int = 0
    pad_cols: int = 0
    depth_size: int = 1
    kernel_depth: int = 1
    out_depth: int = 1
    stride_depth: int = 1
    pad_depth: int = 0

    @property
    def depth(self) -> int:
        """``K``: the values under one window position."""
        return self.channels * self.kernel_rows * self.kernel_cols

    @property
    def positions(self) -> int:
        """``P``: the output positions of one sample."""
        return self.out_depth * self.out_rows * self.out_cols

    def numbers(self) -> tuple[int, ...]:
        """The sizes as the kernels take them (indexed by the module's constants)."""
        return (
            *self[1:15],  # channels to pad_cols
            int(self.layout == "tf"),  # WEIGHT_K_MAJOR: the weight is (K, F)
            *self[15:],  # the depth's fields
        )


# indices into ConvolutionGeometry.numbers(), which the kernels receive as a tuple
CHANNELS, ROWS, COLS, FILTERS, KERNEL_ROWS, KERNEL_COLS, OUT_ROWS, OUT_COLS = range(8)
STRIDE_ROWS, STRIDE_COLS, DILATION_ROWS, DILATION_COLS, PAD_ROWS, PAD_COLS = range(8, 14)
WEIGHT_K_MAJOR = 14
DEPTH_SIZE, KERNEL_DEPTH, OUT_DEPTH, STRIDE_DEPTH, PAD_DEPTH = range(15, 20)
GEOMETRY_LENGTH = 20


# ------------------------------------------------------------------ shared index helpers
@cpu_inline
def split(value, size):
    """``(value // size, value % size)`` of a non-negative ``value`` and a positive
    ``size``. On CUDA, :func:`split_unsigned` (every value a kernel splits is below
    2**32: :data:`MAX_SPLIT`)."""
    quotient = value // size
    return quotient, value - quotient * size


#: the values CUDA kernels split are below this (their launchers refuse larger sizes)
MAX_SPLIT = 1 << 32


def split_unsigned(value, size):
    """:func:`split` by one 32-bit unsigned division. A signed 64-bit floor division
    compiles to a call of a 64-bit division routine plus sign fix-ups; the convolution
    loaders divide four times per element they stage."""
    value = numba.uint32(value)
    size = numba.uint32(size)
    quotient = value // size
    return numba.int64(quotient), numba.int64(value - quotient * size)


DEVICE_SUBSTITUTES[split] = split_unsigned


@cpu_inline
def tap_of(k, g):
    """``(c, kr, kc)`` of patch index ``k`` in the weight's order."""
    if g[WEIGHT_K_MAJOR]:  # (kr, kc, c)
        t, c = split(k, g[CHANNELS])
        kr, kc = split(t, g[KERNEL_COLS])
        return c, kr, kc
    c, t = split(k, g[KERNEL_ROWS] * g[KERNEL_COLS])  # (c, kr, kc)
    kr, kc = split(t, g[KERNEL_COLS])
    return c, kr, kc


@cpu_inline
def patch_index(c, kr, kc, g):
    """The patch index ``k`` of tap ``(kr, kc)`` of channel ``c`` (weight's order)."""
    if g[WEIGHT_K_MAJOR]:
        return (kr * g[KERNEL_COLS] + kc) * g[CHANNELS] + c
    return (c * g[KERNEL_ROWS] + kr) * g[KERNEL_COLS] + kc


@cpu_inline
def input_row(out_row, kr, g):
    """The input row under tap row ``kr`` of output row ``out_row`` (may be padding)."""
    return out_row * g[STRIDE_ROWS] - g[PAD_ROWS] + kr * g[DILATION_ROWS]


@cpu_inline
def input_col(out_col, kc, g):
    """The input column under tap column ``kc`` of output column ``out_col``."""
    return out_col * g[STRIDE_COLS] - g[PAD_COLS] + kc * g[DILATION_COLS]


@cpu_inline
def source_position(position, tap, stride, pad, dilation, outputs):
    """The output position whose window puts ``tap`` on input ``position``, or -1."""
    shifted = position + pad - tap * dilation
    if shifted < 0:
        return -1
    output, remainder = split(shifted, stride)
    if remainder != 0 or output >= outputs:
        return -1
    return output


def weight_matrix(weight: Any, geometry: ConvolutionGeometry) -> Any:
    """The weight (or its gradient) as the matrix it is: ``(K, F)`` for ``"tf"``, else
    ``(F, K)`` (a view, on either device)."""
    if geometry.layout == "tf":
        return weight.reshape(geometry.depth, geometry.filters)
    return weight.reshape(geometry.filters, geometry.depth)
