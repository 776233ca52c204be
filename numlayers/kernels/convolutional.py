"""Convolution kernels (Convolution1D, Convolution2D): cross-correlation as matrix products.

Operations (both devices):

- ``convolution_forward(x, weight, bias, out, geometry, workspace)``:
  ``out = x (*) weight + bias`` (``bias`` may have length 0)
- ``convolution_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, geometry,
  workspace, need_grad_x)``: the weight and bias gradients and, when ``need_grad_x``,
  the input gradient (every output is overwritten)
- ``convolution_workspace(geometry, batch)``: the elements ``workspace`` must have for
  a batch of ``batch`` samples (0 on CUDA, which packs nothing)

The arrays are 4-D in one of three layouts (:class:`ConvolutionGeometry`'s ``layout``):

- ``"th"``: ``x (N, C, H, W)``, ``weight (F, C, KH, KW)``, ``out (N, F, OH, OW)``
- ``"tf"``: ``x (N, H, W, C)``, ``weight (KH, KW, C, F)``, ``out (N, OH, OW, F)``
- ``"steps"`` (Convolution1D): ``x (N, L, 1, C)``, ``weight (F, C, KL, 1)``,
  ``out (N, OL, 1, F)``: channels last, with Keras 0.3's channels-first weights

A sample's *patches* are the input values under each of its ``P = OH * OW`` output
positions, ``K = C * KH * KW`` of them (zeros where the window overhangs the padding).
Each layout's weight is a ``K x F`` or ``F x K`` matrix without moving data, so a
convolution is one product per sample: ``"th"`` gives ``out (F, P) = W (F, K) @
patches (K, P)``, the others ``out (P, F) = patches (P, K) @ W``, with ``K`` ordered as
the weight stores it (``(c, kr, kc)`` for ``"th"`` and ``"steps"``, ``(kr, kc, c)``
for ``"tf"``).

CPU, two paths, both through the BLAS of :mod:`numlayers.kernels.blas` (one thread
pool: Numba's, the BLAS sequential inside it):

- ``"th"`` at stride 1 (the common case) packs no patches: one product per tap with a
  shifted view of the zero-padded image (see "CPU, th at stride 1" below), each sample
  on one thread, the samples shared out among Numba's threads. At 3 x 3, 32 -> 32
  channels this ran twice as fast as the patches.
- channels last at stride 1 (``"tf"``, Convolution1D): the same without the threads'
  blocks: the padded images of a chunk of samples as rows of channels, one product per
  tap over the whole chunk (see "CPU, channels last at stride 1"), which
  :func:`~numlayers.kernels.blas.product` splits over the threads.
- otherwise (strides above 1): the patches of a chunk of samples are
  packed into ``workspace`` (im2col, a compiled loop) and multiplied at once by
  :func:`~numlayers.kernels.blas.product`, which splits the product over the threads;
  the backward pass packs them again, adds ``grad_out @ patches`` into the weight
  gradient, multiplies ``grad_out`` by the weight into the patch buffer and adds those
  patch gradients back into the input gradient (col2im).

The bias is added and summed by NumPy, and activations are the layer's business.

CUDA: implicit GEMM. The tiled product of :mod:`numlayers.kernels.matmul` runs with
tile loaders that compute each patch element from the input as they stage it in
shared memory, so no patch matrix exists in global memory. One launch per product:

- forward: the product above (``"th"``: one per sample, walked by the grid's z axis;
  channels last: ``(N P, K) @ (K, F)`` at once), bias added as it is stored;
- input gradient: ``grad_x`` at input position ``q`` is the sum over ``d = (kr, kc,
  f)`` of ``weight[f, c, kr, kc] * grad_out[f, o]``, ``o`` the output position whose
  window put tap ``(kr, kc)`` on ``q`` (zero where there is none): a product of
  depth ``F KH KW`` whose loader gathers ``grad_out``;
- weight gradient: ``grad_out`` times the patches over all ``N P`` positions at once,
  the bias gradient as one more column (patches of ones); the depth is split across
  the grid's z axis (split-K) so a small weight still fills the GPU, each slice adding
  its part atomically into outputs zeroed first (one fill launch each).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numba
import numpy as np
from numba import njit, prange

from numlayers.kernels import blas
from numlayers.kernels.arrays import build_cuda as build_array_cuda
from numlayers.kernels.blas import gemm, product, source_digest
from numlayers.kernels.matmul import (
    GEMM_THREADS,
    MAX_GRID_Z,
    TILE_K,
    TILE_M,
    TILE_N,
    make_tile_loader,
    make_tile_product,
    matrix_store,
)
from numlayers.kernels.toolkit import (
    DeviceArray,
    bind_cuda,
    compile_cpu,
    cpu_inline,
    launch_size,
)

#: ``numba.cuda``, bound by :func:`bind_cuda` (kernels must see it as a module global)
cuda: Any = None


class ConvolutionGeometry(NamedTuple):
    """Sizes of one convolution (see the module doc for the layouts).

    ``pad_*`` are the zeros before the first input along an axis
    (:func:`numlayers.layers.spatial.padding_before`); the zeros after it are implied
    by the output size.
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

    @property
    def depth(self) -> int:
        """``K``: the values under one window position."""
        return self.channels * self.kernel_rows * self.kernel_cols

    @property
    def positions(self) -> int:
        """``P``: the output positions of one sample."""
        return self.out_rows * self.out_cols

    def numbers(self) -> tuple[int, ...]:
        """The sizes as the kernels take them (indexed by the module's constants)."""
        return (
            *self[1:],
            int(self.layout == "tf"),  # WEIGHT_K_MAJOR: the weight is (K, F)
        )


# indices into ConvolutionGeometry.numbers(), which the kernels receive as a tuple
CHANNELS, ROWS, COLS, FILTERS, KERNEL_ROWS, KERNEL_COLS, OUT_ROWS, OUT_COLS = range(8)
STRIDE_ROWS, STRIDE_COLS, DILATION_ROWS, DILATION_COLS, PAD_ROWS, PAD_COLS = range(8, 14)
WEIGHT_K_MAJOR = 14
GEOMETRY_LENGTH = 15


# ------------------------------------------------------------------ shared index helpers
@cpu_inline
def tap_of(k, g):
    """``(c, kr, kc)`` of patch index ``k`` in the weight's order."""
    kernel_cols = g[KERNEL_COLS]
    if g[WEIGHT_K_MAJOR]:  # (kr, kc, c)
        c = k % g[CHANNELS]
        t = k // g[CHANNELS]
        return c, t // kernel_cols, t % kernel_cols
    t = k % (g[KERNEL_ROWS] * kernel_cols)  # (c, kr, kc)
    return k // (g[KERNEL_ROWS] * kernel_cols), t // kernel_cols, t % kernel_cols


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
    if shifted < 0 or shifted % stride != 0 or shifted // stride >= outputs:
        return -1
    return shifted // stride


# ------------------------------------------------------------------ CPU
#
# Every product runs through blas.product, which splits it over Numba's threads (one
# thread pool), so the batch is multiplied at once: a chunk of samples (at most
# CHUNK_ELEMENTS of workspace) per product. Moving values between layouts is NumPy
# (strided copies) or a serial compiled loop (the patches).

#: workspace elements a chunk of samples may use (16 MiB of float32)
CHUNK_ELEMENTS = 1 << 22


@cpu_inline
def valid_range(start, step, size, outputs):
    """The outputs ``o`` with ``0 <= start + o * step < size``, as ``(lo, hi)``."""
    lo = 0 if start >= 0 else (-start + step - 1) // step
    hi = 0 if start >= size else min(outputs, (size - 1 - start) // step + 1)
    return lo, max(lo, hi)


@cpu_inline
def move_line(x, source, step, patches, target, count, scatter):
    """``patches[target + o] = x[source + o * step]`` for ``o < count``, or with
    ``scatter`` ``x[source + o * step] += patches[target + o]`` (flat arrays)."""
    if scatter:
        for o in range(count):
            x[source + o * step] += patches[target + o]
    elif step == 1:  # a contiguous copy, which vectorises
        for o in range(count):
            patches[target + o] = x[source + o]
    else:
        for o in range(count):
            patches[target + o] = x[source + o * step]


@cpu_inline
def move_channels_first(x, flat, offset, ld, g, scatter):
    """Patches of one ``(C, H, W)`` sample ``x`` into the ``(K, P)`` block at ``offset``
    of the flat matrix ``flat`` (rows ``ld`` apart): im2col; with ``scatter`` the
    adjoint instead, ``x += `` the patch values at their input positions (col2im).

    Flat indices throughout: a view per line of the image would cost more than the
    line's copy (views count references)."""
    rows, cols, out_rows, out_cols = g[ROWS], g[COLS], g[OUT_ROWS], g[OUT_COLS]
    stride = g[STRIDE_COLS]
    flat_x = x.reshape(x.size)
    zero = flat.dtype.type(0)
    k = 0
    for c in range(g[CHANNELS]):
        for kr in range(g[KERNEL_ROWS]):
            for kc in range(g[KERNEL_COLS]):
                start = input_col(0, kc, g)
                lo, hi = valid_range(start, stride, cols, out_cols)
                for out_row in range(out_rows):
                    i = input_row(out_row, kr, g)
                    target = offset + k * ld + out_row * out_cols
                    if 0 <= i < rows:
                        source = (c * rows + i) * cols + start + lo * stride
                        move_line(flat_x, source, stride, flat, target + lo, hi - lo, scatter)
                        if not scatter:  # the padding at both ends of the line
                            for o in range(lo):
                                flat[target + o] = zero
                            for o in range(hi, out_cols):
                                flat[target + o] = zero
                    elif not scatter:  # a padding line
                        for o in range(out_cols):
                            flat[target + o] = zero
                k += 1


@cpu_inline
def move_channels_last(x, flat, offset, g, scatter):
    """Patches of one ``(H, W, C)`` sample ``x`` into the ``(P, K)`` rows at ``offset``
    of ``flat``, or with ``scatter`` their adjoint added into ``x``."""
    rows, cols, channels = g[ROWS], g[COLS], g[CHANNELS]
    depth = channels * g[KERNEL_ROWS] * g[KERNEL_COLS]
    flat_x = x.reshape(x.size)
    zero = flat.dtype.type(0)
    for out_row in range(g[OUT_ROWS]):
        for out_col in range(g[OUT_COLS]):
            patch = offset + (out_row * g[OUT_COLS] + out_col) * depth
            for kr in range(g[KERNEL_ROWS]):
                i = input_row(out_row, kr, g)
                for kc in range(g[KERNEL_COLS]):
                    j = input_col(out_col, kc, g)
                    first = patch + patch_index(0, kr, kc, g)
                    # the channels of a tap are adjacent in the patch ("tf") or a tap apart
                    step = patch_index(1, kr, kc, g) - patch_index(0, kr, kc, g)
                    if 0 <= i < rows and 0 <= j < cols:
                        pixel = (i * cols + j) * channels
                        if scatter:
                            for c in range(channels):
                                flat_x[pixel + c] += flat[first + c * step]
                        elif step == 1:
                            for c in range(channels):
                                flat[first + c] = flat_x[pixel + c]
                        else:
                            for c in range(channels):
                                flat[first + c * step] = flat_x[pixel + c]
                    elif not scatter:
                        for c in range(channels):
                            flat[first + c * step] = zero


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def move_patches(x, flat, g, channels_first, scatter):
    """The patches of the samples ``x`` into ``flat``: ``(K, S P)`` channels first,
    ``(S P, K)`` channels last (im2col); with ``scatter``, their adjoint added into
    ``x`` (col2im)."""
    samples = x.shape[0]
    positions = g[OUT_ROWS] * g[OUT_COLS]
    depth = g[CHANNELS] * g[KERNEL_ROWS] * g[KERNEL_COLS]
    for s in range(samples):
        if channels_first:
            move_channels_first(x[s], flat, s * positions, samples * positions, g, scatter)
        else:
            move_channels_last(x[s], flat, s * positions * depth, g, scatter)


def chunk_size(geometry: ConvolutionGeometry, batch: int) -> int:
    """Samples per product of the patches' path: as many as :data:`CHUNK_ELEMENTS` of
    workspace hold."""
    return max(1, min(batch, CHUNK_ELEMENTS // max(patches_workspace(geometry, 1), 1)))


def patches_workspace(geometry: ConvolutionGeometry, samples: int) -> int:
    """Workspace elements of the patches' path for a chunk of ``samples`` samples."""
    g = geometry
    reordered = g.filters * samples * g.positions if g.layout == "th" else 0
    return g.depth * samples * g.positions + reordered


def chunks(batch: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, batch)) for lo in range(0, batch, size)]


def patches_forward(x, weight, bias, out, geometry, workspace):
    """The forward pass through patches, a chunk of samples per product."""
    g = geometry
    numbers = g.numbers()
    channels_first = g.layout == "th"
    matrix = weight_matrix(weight, g)
    for lo, hi in chunks(x.shape[0], chunk_size(g, x.shape[0])):
        count = (hi - lo) * g.positions
        patches = workspace[: g.depth * count]
        move_patches(x[lo:hi], patches, numbers, channels_first, False)
        if channels_first:  # (F, K) @ (K, S P), then each sample's (F, P) out of it
            by_filter = workspace[g.depth * count : (g.depth + g.filters) * count]
            by_filter = by_filter.reshape(g.filters, count)
            product(matrix, patches.reshape(g.depth, count), by_filter)
            sample_view = by_filter.reshape(g.filters, hi - lo, g.positions).transpose(1, 0, 2)
            out_view = out[lo:hi].reshape(hi - lo, g.filters, g.positions)
            out_view[...] = sample_view
            if bias.shape[0] > 0:
                out_view += bias[:, None]
        else:  # (S P, K) @ W: the outputs in their place
            rows = out[lo:hi].reshape(count, g.filters)
            product(patches.reshape(count, g.depth), matrix, rows,
                    transpose_b=g.layout != "tf", bias=bias if bias.shape[0] else None)  # fmt: skip


def patches_backward(x, weight, grad_out, grad_x, grad_weight, geometry, workspace, need_grad_x):
    """The weight and input gradients through patches, a chunk of samples per product."""
    g = geometry
    numbers = g.numbers()
    channels_first = g.layout == "th"
    matrix = weight_matrix(weight, g)
    grad_matrix = weight_matrix(grad_weight, g)
    for index, (lo, hi) in enumerate(chunks(x.shape[0], chunk_size(g, x.shape[0]))):
        count = (hi - lo) * g.positions
        beta = 1.0 if index else 0.0  # the chunks' weight gradients add up
        flat = workspace[: g.depth * count]
        move_patches(x[lo:hi], flat, numbers, channels_first, False)
        if channels_first:
            patches = flat.reshape(g.depth, count)
            by_filter = workspace[g.depth * count : (g.depth + g.filters) * count]
            by_filter = by_filter.reshape(g.filters, count)
            by_filter.reshape(g.filters, hi - lo, g.positions)[...] = (
                grad_out[lo:hi].reshape(hi - lo, g.filters, g.positions).transpose(1, 0, 2)
            )
            product(by_filter, patches, grad_matrix, transpose_b=True, beta=beta)
            if need_grad_x:
                product(matrix, by_filter, patches, transpose_a=True)
        else:
            patches = flat.reshape(count, g.depth)
            rows = grad_out[lo:hi].reshape(count, g.filters)
            if g.layout == "tf":  # (K, F) += patches.T @ grad
                product(patches, rows, grad_matrix, transpose_a=True, beta=beta)
            else:  # (F, K) += grad.T @ patches
                product(rows, patches, grad_matrix, transpose_a=True, beta=beta)
            if need_grad_x:
                product(rows, matrix, patches, transpose_b=g.layout == "tf")
        if need_grad_x:
            grad_x[lo:hi] = 0
            move_patches(grad_x[lo:hi], flat, numbers, channels_first, True)


# ------------------------------------------------------------------ CPU, "th" at stride 1
#
# At stride 1 a channels-first convolution needs no patches: pad each sample's image
# into rows of ``Wp = OW + extent_cols - 1`` values (``Hp = OH + extent_rows - 1`` of
# them), and the image under tap ``(kr, kc)`` for every output position is one strided
# matrix, ``padded[:, offset : offset + OH * Wp]`` (``C`` rows, ``offset = kr dr Wp +
# kc dc``), whose columns ``oi * Wp + oj`` with ``oj >= OW`` fall on the padding and are
# dropped. Each tap is then one product with the tap's ``(F, C)`` weights: taps times
# ``F x C x OH Wp`` multiply-adds, a few per cent more than the patches' product, but
# no ``K x P`` patch matrix is written or read (im2col and col2im cost as much as the
# products themselves at 3 x 3, 32 channels). The backward pass likewise: the weight
# gradient of a tap is ``grad_wide @ padded_slice.T``, and the padded input gradient
# gets ``W_tap.T @ grad_wide`` added at the tap's offset, ``grad_wide`` being
# ``grad_out`` in rows of ``Wp`` with zeros past ``OW``.
#
# A sample's products are small enough to stay in cache across the taps, so the
# samples are shared out among Numba's threads in blocks, each thread running its
# products on its own (the BLAS is sequential inside them: one thread pool), with its
# own part of the workspace and its own sums of the taps' weight gradients.


def shifted_path(geometry: ConvolutionGeometry) -> bool:
    """Whether the CPU takes the stride-1 path (above) for ``geometry``."""
    return geometry.layout == "th" and geometry.stride_rows == geometry.stride_cols == 1


@cpu_inline
def shifted_sizes(g):
    """``(Wp, padded length per channel, taps, block's workspace)`` of the stride-1
    path; the workspace starts with the taps' ``(F, C)`` weights."""
    padded_rows = g[OUT_ROWS] + (g[KERNEL_ROWS] - 1) * g[DILATION_ROWS]
    padded_cols = g[OUT_COLS] + (g[KERNEL_COLS] - 1) * g[DILATION_COLS]
    # the last tap's slice runs (extent_cols - 1) values past the padded image
    length = padded_rows * padded_cols + (g[KERNEL_COLS] - 1) * g[DILATION_COLS]
    taps = g[KERNEL_ROWS] * g[KERNEL_COLS]
    wide = g[FILTERS] * g[OUT_ROWS] * padded_cols
    per_block = 2 * g[CHANNELS] * length + wide + taps * g[FILTERS] * g[CHANNELS]
    return padded_cols, length, taps, per_block


@njit(cache=True, error_model="numpy")
def pad_image(x, padded, g, padded_cols, extract):
    """``padded (C, L)`` = the sample ``x (C, H, W)`` placed after the padding, zeros
    elsewhere; with ``extract``, ``x`` = that part of ``padded`` instead."""
    rows, cols = g[ROWS], g[COLS]
    if not extract:
        padded[:] = 0
    for c in range(g[CHANNELS]):
        for i in range(rows):
            start = (g[PAD_ROWS] + i) * padded_cols + g[PAD_COLS]
            for j in range(cols):
                if extract:
                    x[c, i, j] = padded[c, start + j]
                else:
                    padded[c, start + j] = x[c, i, j]


@njit(cache=True, error_model="numpy")
def widen_rows(values, wide, g, padded_cols, narrow):
    """``wide (F, OH * Wp)`` = ``values (F, OH, OW)`` in rows of ``Wp``, zeros past
    ``OW``; with ``narrow``, ``values`` = ``wide`` without those columns instead."""
    out_cols = g[OUT_COLS]
    for f in range(values.shape[0]):
        for oi in range(g[OUT_ROWS]):
            start = oi * padded_cols
            for oj in range(padded_cols):
                if narrow:
                    if oj < out_cols:
                        values[f, oi, oj] = wide[f, start + oj]
                else:
                    wide[f, start + oj] = values[f, oi, oj] if oj < out_cols else 0


def _shifted_block(backward, block, blocks, x, first, second, g, workspace, need_grad_x):
    """One block's samples: the forward pass (``first`` the output), or with
    ``backward`` the input gradients (``first`` the output gradient, ``second`` the
    input gradient) and the block's sums of the taps' weight gradients."""
    padded_cols, length, taps, per_block = shifted_sizes(g)
    channels, filters = g[CHANNELS], g[FILTERS]
    head = taps * filters * channels
    tap_weights = workspace[:head].reshape((taps, filters, channels))
    area = workspace[head + block * per_block : head + (block + 1) * per_block]
    padded = area[: channels * length].reshape((channels, length))
    grad_padded = area[channels * length : 2 * channels * length].reshape((channels, length))
    width = g[OUT_ROWS] * padded_cols
    wide = area[2 * channels * length : 2 * channels * length + filters * width]
    wide = wide.reshape((filters, width))
    sums = area[2 * channels * length + filters * width :].reshape((taps, filters, channels))
    if backward:
        sums[:] = 0
    step = (x.shape[0] + blocks - 1) // blocks
    for n in range(min(block * step, x.shape[0]), min(block * step + step, x.shape[0])):
        pad_image(x[n], padded, g, padded_cols, False)
        if backward:
            widen_rows(first[n], wide, g, padded_cols, False)
            if need_grad_x:
                grad_padded[:] = 0
        for tap in range(taps):
            kr = tap // g[KERNEL_COLS]
            offset = (
                kr * g[DILATION_ROWS] * padded_cols + (tap - kr * g[KERNEL_COLS]) * g[DILATION_COLS]
            )
            shifted = padded[:, offset : offset + width]
            if not backward:
                gemm(tap_weights[tap], shifted, wide, False, False, 1, 1 if tap else 0)
                continue
            gemm(wide, shifted, sums[tap], False, True, 1, 1)
            if need_grad_x:
                target = grad_padded[:, offset : offset + width]
                gemm(tap_weights[tap], wide, target, True, False, 1, 1)
        if not backward:
            widen_rows(first[n], wide, g, padded_cols, True)
        elif need_grad_x:
            pad_image(second[n], grad_padded, g, padded_cols, True)


#: the stride-1 blocks call blas.py: their cached names change with it
DIGEST = source_digest(__file__, blas.__file__)
shifted_block = compile_cpu(_shifted_block, f"shifted_block_{DIGEST}", fastmath={"contract"})


def _shifted_blocks_on_threads(backward, blocks, x, first, second, g, workspace, need_grad_x):
    for block in prange(blocks):
        shifted_block(backward, block, blocks, x, first, second, g, workspace, need_grad_x)


shifted_blocks_on_threads = compile_cpu(
    _shifted_blocks_on_threads, f"shifted_blocks_on_threads_{DIGEST}", parallel=True
)


def cpu_blocks(geometry: ConvolutionGeometry, batch: int) -> int:
    """Thread blocks of the stride-1 path: one per thread when the products are worth
    waking the threads for (the BLAS module's rule for one product), else one."""
    work = batch * geometry.depth * geometry.positions * geometry.filters
    if batch <= 1 or blas.THREADS <= 1 or work <= blas.SERIAL_WORK:
        return 1
    return min(batch, blas.THREADS)


def shifted_workspace(geometry: ConvolutionGeometry, blocks: int) -> int:
    _, _, taps, per_block = shifted_sizes(geometry.numbers())
    return taps * geometry.filters * geometry.channels + blocks * per_block


def run_shifted(
    backward: bool,
    x: Any,
    weight: Any,
    first: Any,
    second: Any,
    geometry: ConvolutionGeometry,
    workspace: Any,
    need_grad_x: bool,
) -> int:
    """The stride-1 pass, its blocks on the calling thread or on Numba's; returns the
    number of blocks."""
    g = geometry
    blocks = cpu_blocks(g, x.shape[0])
    taps = g.kernel_rows * g.kernel_cols
    head = workspace[: taps * g.filters * g.channels]
    head.reshape(g.kernel_rows, g.kernel_cols, g.filters, g.channels)[...] = weight.transpose(
        2, 3, 0, 1
    )
    arguments = (x, first, second, g.numbers(), workspace, need_grad_x)
    if blocks == 1:
        shifted_block(backward, 0, 1, *arguments)
    else:
        shifted_blocks_on_threads(backward, blocks, *arguments)
    return blocks


def shifted_forward(x, weight, bias, out, geometry, workspace):
    """The stride-1 ``"th"`` forward pass."""
    run_shifted(False, x, weight, out, out, geometry, workspace, False)
    if bias.shape[0] > 0:
        out += bias[:, None, None]


def shifted_backward(x, weight, grad_out, grad_x, grad_weight, geometry, workspace, need_grad_x):
    """The stride-1 ``"th"`` weight and input gradients."""
    g = geometry
    blocks = run_shifted(True, x, weight, grad_out, grad_x, g, workspace, need_grad_x)
    _, _, taps, per_block = shifted_sizes(g.numbers())
    head = taps * g.filters * g.channels
    parts = workspace[head : head + blocks * per_block].reshape(blocks, per_block)
    sums = parts[:, per_block - head :].sum(axis=0)
    grad_weight[...] = sums.reshape(g.kernel_rows, g.kernel_cols, g.filters, g.channels).transpose(
        2, 3, 0, 1
    )


# ------------------------------------------------------------------ CPU, channels last at stride 1
#
# The same idea for channels last, with the whole chunk of samples in each product: the
# padded images are rows of ``C`` values, ``L = Hp Wp`` rows a sample, so the image
# under tap ``(kr, kc)`` for every output position of the chunk is the block of rows
# ``padded[offset : offset + S L]`` (contiguous), and the output ``(S L, F)`` is the
# sum over the taps of that block times the tap's ``(C, F)`` weights, its rows
# ``s L + oi Wp + oj`` with ``oi < OH``, ``oj < OW`` the outputs. The products are as
# large as the chunk: blas.product splits them over the threads.


def rows_path(geometry: ConvolutionGeometry) -> bool:
    """Whether the CPU takes the channels-last stride-1 path (above) for ``geometry``."""
    return geometry.layout != "th" and geometry.stride_rows == geometry.stride_cols == 1


def rows_sizes(g: ConvolutionGeometry) -> tuple[int, int, int, list[int]]:
    """``(Hp, Wp, tail, offsets)``: a padded image, the rows the last tap reads past the
    chunk, and each tap's offset in rows."""
    padded_rows = g.out_rows + (g.kernel_rows - 1) * g.dilation_rows
    padded_cols = g.out_cols + (g.kernel_cols - 1) * g.dilation_cols
    offsets = [
        kr * g.dilation_rows * padded_cols + kc * g.dilation_cols
        for kr in range(g.kernel_rows)
        for kc in range(g.kernel_cols)
    ]
    return padded_rows, padded_cols, offsets[-1], offsets


def rows_workspace(g: ConvolutionGeometry, samples: int) -> int:
    """Workspace elements of the channels-last stride-1 path for ``samples`` samples."""
    padded_rows, padded_cols, tail, _ = rows_sizes(g)
    rows = samples * padded_rows * padded_cols
    taps = g.kernel_rows * g.kernel_cols * g.channels * g.filters
    return 2 * (rows + tail) * g.channels + rows * g.filters + 2 * taps


def rows_chunk(g: ConvolutionGeometry, batch: int) -> int:
    per_sample = rows_workspace(g, 1)
    return max(1, min(batch, CHUNK_ELEMENTS // per_sample))


def rows_buffers(g: ConvolutionGeometry, samples: int, workspace: np.ndarray) -> list[Any]:
    """``[padded, grad_padded, wide, tap_weights, tap_gradients]`` of a chunk."""
    padded_rows, padded_cols, tail, _ = rows_sizes(g)
    rows = samples * padded_rows * padded_cols
    taps = g.kernel_rows * g.kernel_cols
    image: tuple[int, ...] = (rows + tail, g.channels)
    tap_matrices: tuple[int, ...] = (taps, g.channels, g.filters)
    shapes = [image, image, (rows, g.filters), tap_matrices, tap_matrices]
    buffers, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        buffers.append(workspace[start : start + size].reshape(shape))
        start += size
    return buffers


def rows_block(matrix: np.ndarray, g: ConvolutionGeometry, samples: int,
               corner: tuple[int, int], size: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """The ``(samples, rows, cols, X)`` view of ``matrix (S L + tail, X)`` where the
    images of ``size`` at ``corner`` of the padded images lie."""
    padded_rows, padded_cols, _, _ = rows_sizes(g)
    grid = matrix[: samples * padded_rows * padded_cols].reshape(
        samples, padded_rows, padded_cols, matrix.shape[1]
    )
    return grid[:, corner[0] : corner[0] + size[0], corner[1] : corner[1] + size[1]]


def tap_weights_as_rows(weight: np.ndarray, g: ConvolutionGeometry, out: np.ndarray) -> None:
    """Each tap's ``(C, F)`` weights: ``"tf"`` stores them so, Convolution1D transposed."""
    if g.layout == "tf":
        out[...] = weight.reshape(out.shape)
    else:
        out[...] = weight.transpose(2, 3, 1, 0).reshape(out.shape)


def rows_forward(x, weight, bias, out, geometry, workspace):
    """The channels-last stride-1 forward pass, a chunk of samples per product."""
    g = geometry
    image, outputs = (g.rows, g.cols), (g.out_rows, g.out_cols)
    _, _, _, offsets = rows_sizes(g)
    for lo, hi in chunks(x.shape[0], rows_chunk(g, x.shape[0])):
        padded, _, wide, tap_weights, _ = rows_buffers(g, hi - lo, workspace)
        tap_weights_as_rows(weight, g, tap_weights)
        padded[...] = 0
        rows_block(padded, g, hi - lo, (g.pad_rows, g.pad_cols), image)[...] = x[lo:hi]
        for tap, offset in enumerate(offsets):
            shifted = padded[offset : offset + wide.shape[0]]
            product(shifted, tap_weights[tap], wide, beta=1.0 if tap else 0.0)
        out[lo:hi] = rows_block(wide, g, hi - lo, (0, 0), outputs)
        if bias.shape[0] > 0:
            out[lo:hi] += bias


def rows_backward(x, weight, grad_out, grad_x, grad_weight, geometry, workspace, need_grad_x):
    """The channels-last stride-1 weight and input gradients, a chunk per product."""
    g = geometry
    image, outputs = (g.rows, g.cols), (g.out_rows, g.out_cols)
    _, _, _, offsets = rows_sizes(g)
    for index, (lo, hi) in enumerate(chunks(x.shape[0], rows_chunk(g, x.shape[0]))):
        padded, grad_padded, wide, tap_weights, tap_gradients = rows_buffers(g, hi - lo, workspace)
        tap_weights_as_rows(weight, g, tap_weights)
        padded[...] = 0
        rows_block(padded, g, hi - lo, (g.pad_rows, g.pad_cols), image)[...] = x[lo:hi]
        wide[...] = 0
        rows_block(wide, g, hi - lo, (0, 0), outputs)[...] = grad_out[lo:hi]
        if need_grad_x:
            grad_padded[...] = 0
        beta = 1.0 if index else 0.0  # the chunks' weight gradients add up
        for tap, offset in enumerate(offsets):
            shifted = padded[offset : offset + wide.shape[0]]
            product(shifted, wide, tap_gradients[tap], transpose_a=True, beta=beta)
            if need_grad_x:
                target = grad_padded[offset : offset + wide.shape[0]]
                product(wide, tap_weights[tap], target, transpose_b=True, beta=1.0)
        if need_grad_x:
            grad_x[lo:hi] = rows_block(grad_padded, g, hi - lo, (g.pad_rows, g.pad_cols), image)
    if g.layout == "tf":
        grad_weight[...] = tap_gradients.reshape(grad_weight.shape)
    else:
        shape = (g.kernel_rows, g.kernel_cols, g.channels, g.filters)
        grad_weight[...] = tap_gradients.reshape(shape).transpose(3, 2, 0, 1)


def cpu_pass(geometry: ConvolutionGeometry, shifted: Any, rows: Any, patches: Any) -> Any:
    """The pass of the CPU path that ``geometry`` takes."""
    if shifted_path(geometry):
        return shifted
    return rows if rows_path(geometry) else patches


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    def convolution_workspace(geometry: ConvolutionGeometry, batch: int) -> int:
        if shifted_path(geometry):
            return shifted_workspace(geometry, cpu_blocks(geometry, batch))
        if rows_path(geometry):
            return rows_workspace(geometry, rows_chunk(geometry, batch))
        return patches_workspace(geometry, chunk_size(geometry, batch))

    def convolution_forward(
        x: Any, weight: Any, bias: Any, out: Any, geometry: ConvolutionGeometry, workspace: Any
    ) -> None:
        run = cpu_pass(geometry, shifted_forward, rows_forward, patches_forward)
        run(x, weight, bias, out, geometry, workspace)

    def convolution_backward(
        x: Any,
        weight: Any,
        grad_out: Any,
        grad_x: Any,
        grad_weight: Any,
        grad_bias: Any,
        geometry: ConvolutionGeometry,
        workspace: Any,
        need_grad_x: bool,
    ) -> None:
        run = cpu_pass(geometry, shifted_backward, rows_backward, patches_backward)
        run(x, weight, grad_out, grad_x, grad_weight, geometry, workspace, need_grad_x)
        if grad_bias.shape[0] > 0:
            filter_axis = 1 if geometry.layout == "th" else 3
            others = tuple(axis for axis in range(4) if axis != filter_axis)
            np.sum(grad_out, axis=others, out=grad_bias)

    return {
        "convolution_forward": convolution_forward,
        "convolution_backward": convolution_backward,
        "convolution_workspace": convolution_workspace,
    }


def weight_matrix(weight: Any, geometry: ConvolutionGeometry) -> Any:
    """The weight (or its gradient) as the matrix it is: ``(K, F)`` for ``"tf"``, else
    ``(F, K)`` (a view, on either device)."""
    if geometry.layout == "tf":
        return weight.reshape(geometry.depth, geometry.filters)
    return weight.reshape(geometry.filters, geometry.depth)


# ------------------------------------------------------------------ CUDA element loaders


def patch_value(x, n, p, k, g, zero, channels_first):
    """Patch element ``k`` of output position ``p`` of sample ``n`` (zero in padding)."""
    c, kr, kc = tap_of(k, g)
    out_row = p // g[OUT_COLS]
    i = input_row(out_row, kr, g)
    j = input_col(p - out_row * g[OUT_COLS], kc, g)
    if i < 0 or i >= g[ROWS] or j < 0 or j >= g[COLS]:
        return zero
    if channels_first:
        return x[n, c, i, j]
    return x[n, i, j, c]


def weight_value(weight, f, k, g):
    """``W[k, f]`` of the weight matrix, stored ``(K, F)`` or ``(F, K)``."""
    if g[WEIGHT_K_MAJOR]:
        return weight[k, f]
    return weight[f, k]


def gathered_gradient(grad_out, n, q, d, g, zero, channels_first):
    """The output gradient that tap ``(kr, kc)`` of filter ``f`` (``d = (kr, kc, f)``)
    brings to input position ``q`` of sample ``n``: zero where no window puts it there."""
    filters = g[FILTERS]
    f = d % filters
    tap = d // filters
    kr = tap // g[KERNEL_COLS]
    kc = tap - kr * g[KERNEL_COLS]
    i = q // g[COLS]
    j = q - i * g[COLS]
    out_row = source_position(i, kr, g[STRIDE_ROWS], g[PAD_ROWS], g[DILATION_ROWS], g[OUT_ROWS])
    out_col = source_position(j, kc, g[STRIDE_COLS], g[PAD_COLS], g[DILATION_COLS], g[OUT_COLS])
    if out_row < 0 or out_col < 0:
        return zero
    if channels_first:
        return grad_out[n, f, out_row, out_col]
    return grad_out[n, out_row, out_col, f]


def tapped_weight(weight, d, c, g):
    """The weight of tap ``(kr, kc)`` of filter ``f`` (``d = (kr, kc, f)``) on channel ``c``."""
    f = d % g[FILTERS]
    tap = d // g[FILTERS]
    kr = tap // g[KERNEL_COLS]
    return weight_value(weight, f, patch_index(c, kr, tap - kr * g[KERNEL_COLS], g), g)


def make_elements(dtype: np.dtype, channels_first: bool) -> dict[str, Any]:
    """The element functions ``element(operand, z, k, e, geometry)`` of the products'
    operands (see :func:`numlayers.kernels.matmul.make_tile_loader`), for one layout
    family: channels first (``"th"``) or last."""
    zero = dtype.type(0)
    one = dtype.type(1)

    def sample_patches(x, z, k, p, g):
        # "th": patches (K, P) of sample z
        return patch_value(x, z, p, k, g, zero, True)

    def batch_patches(x, z, k, row, g):
        # channels last: patches (N P, K) of the batch, transposed: (K, N P)
        positions = g[OUT_ROWS] * g[OUT_COLS]
        return patch_value(x, row // positions, row % positions, k, g, zero, False)

    def weight_rows(weight, z, k, f, g):
        # W as (F, K), transposed: (K, F)
        return weight_value(weight, f, k, g)

    def gradient_columns(grad_out, z, d, q, g):
        # "th": the gathered gradient (D, H W) of sample z
        return gathered_gradient(grad_out, z, q, d, g, zero, True)

    def gradient_rows(grad_out, z, d, row, g):
        # channels last: the gathered gradient (N H W, D), transposed
        pixels = g[ROWS] * g[COLS]
        return gathered_gradient(grad_out, row // pixels, row % pixels, d, g, zero, False)

    def channel_weights(weight, z, d, c, g):
        return tapped_weight(weight, d, c, g)

    def patches_with_ones(x, z, d, k, g):
        # the weight gradient's (N P, K + 1) patches; column K is ones (the bias's)
        depth = g[CHANNELS] * g[KERNEL_ROWS] * g[KERNEL_COLS]
        if k == depth:
            return one
        positions = g[OUT_ROWS] * g[OUT_COLS]
        return patch_value(x, d // positions, d % positions, k, g, zero, channels_first)

    def gradient_by_filter(grad_out, z, d, f, g):
        # "th": grad_out (N, F, P) as (F, N P), transposed; channels last: (N P, F)
        if channels_first:
            positions = g[OUT_ROWS] * g[OUT_COLS]
            return grad_out[d // positions, f, d % positions]
        return grad_out[d, f]

    return {
        "sample_patches": sample_patches,
        "batch_patches": batch_patches,
        "weight_rows": weight_rows,
        "gradient_columns": gradient_columns,
        "gradient_rows": gradient_rows,
        "channel_weights": channel_weights,
        "patches_with_ones": patches_with_ones,
        "gradient_by_filter": gradient_by_filter,
    }


def store_output_th(out, bias, z, row, col, value, g):
    """The ``"th"`` forward's ``out[z, f, p]`` (rows are filters), plus the filter's bias."""
    if bias.shape[0] > 0:
        value += bias[row]
    out[z, row, col] = value


def store_input_gradient_th(out, bias, z, row, col, value, g):
    out[z, row, col] = value


def store_input_gradient_last(out, bias, z, row, col, value, g):
    out[row, col] = value


def add_weight_gradient(out, bias, filter_index, k, value, g):
    """Adds a split-K slice's part of the weight gradient (``k == K``: the bias's)."""
    if k == g[CHANNELS] * g[KERNEL_ROWS] * g[KERNEL_COLS]:
        cuda.atomic.add(bias, filter_index, value)
    elif g[WEIGHT_K_MAJOR]:
        cuda.atomic.add(out, (k, filter_index), value)
    else:
        cuda.atomic.add(out, (filter_index, k), value)


def store_weight_gradient_th(out, bias, z, row, col, value, g):
    add_weight_gradient(out, bias, row, col, value, g)  # rows are filters


def store_weight_gradient_last(out, bias, z, row, col, value, g):
    add_weight_gradient(out, bias, col, row, value, g)  # columns are filters


#: blocks a weight-gradient launch aims at (2 per SM of an H100), through split-K
WEIGHT_GRADIENT_BLOCKS = launch_size(2 * 132, 2)


def split_depth(tiles: int, depth: int) -> tuple[int, int]:
    """The split-K of a weight gradient: ``(slices, depth per slice)``, the depth per
    slice a multiple of the GEMM's depth tile."""
    slices = max(1, min(WEIGHT_GRADIENT_BLOCKS // max(tiles, 1), MAX_GRID_Z))
    slices = min(slices, max(1, depth // (8 * TILE_K)))
    chunk = (depth + slices - 1) // slices
    chunk = (chunk + TILE_K - 1) // TILE_K * TILE_K
    return (depth + chunk - 1) // chunk, chunk


#: the most blocks a CUDA grid may have along y
MAX_GRID_Y = 65535


def tiles(rows: int, cols: int) -> tuple[int, int]:
    """The GEMM tiles covering a ``rows x cols`` product, as a grid's ``(x, y)``."""
    down = (rows + TILE_M - 1) // TILE_M
    if down > MAX_GRID_Y:
        raise ValueError(
            f"convolution: a product of {rows} rows is more than one launch covers "
            f"({MAX_GRID_Y * TILE_M}): use a smaller batch"
        )
    return (cols + TILE_N - 1) // TILE_N, down


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    kernels = bind_cuda(globals(), cuda_api, dtype)
    zero = kernels.dtype.type(0)
    geometry_type = numba.types.UniTuple(numba.types.int64, GEOMETRY_LENGTH)
    fill = build_array_cuda(dtype, cuda_api)["fill"]

    def product(elements: dict[str, Any], a: tuple[str, bool], b: tuple[str, bool], store: Any):
        """The tiled product with operands ``(element name, depth_major)``."""
        load_a, load_b = (
            kernels.device(make_tile_loader(zero, kernels.device(elements[name]), major))
            for name, major in (a, b)
        )
        return make_tile_product(kernels, load_a, load_b, kernels.device(store))

    first = make_elements(np.dtype(dtype), True)
    last = make_elements(np.dtype(dtype), False)
    # (element, depth_major): consecutive threads walk the operand's contiguous axis
    forward_first = product(
        first, ("weight_rows", False), ("sample_patches", True), store_output_th
    )
    # channels last: out (N P, F) plus the bias of each column, as the plain GEMM's
    forward_last = product(
        last, ("batch_patches", False), ("weight_rows", True), matrix_store(batched=False)
    )
    input_first = product(
        first, ("channel_weights", False), ("gradient_columns", True), store_input_gradient_th
    )
    input_last = product(
        last, ("gradient_rows", False), ("channel_weights", True), store_input_gradient_last
    )
    weight_first = product(
        first, ("gradient_by_filter", False), ("patches_with_ones", False), store_weight_gradient_th
    )
    weight_last = product(
        last, ("patches_with_ones", True), ("gradient_by_filter", True), store_weight_gradient_last
    )
    a2, a3, a4, vector = (kernels.array(n) for n in (2, 3, 4, 1))

    @kernels.jit(a4, a2, vector, a3, geometry_type)
    def convolution_forward_th(x, weight, bias, out, g):
        depth = g[CHANNELS] * g[KERNEL_ROWS] * g[KERNEL_COLS]
        for z in range(cuda.blockIdx.z, out.shape[0], cuda.gridDim.z):
            forward_first(weight, x, bias, out, z, out.shape[1], out.shape[2], 0, depth, g)

    @kernels.jit(a4, a2, vector, a2, geometry_type)
    def convolution_forward_last(x, weight, bias, out, g):
        depth = g[CHANNELS] * g[KERNEL_ROWS] * g[KERNEL_COLS]
        forward_last(x, weight, bias, out, 0, out.shape[0], out.shape[1], 0, depth, g)

    @kernels.jit(a4, a2, a3, geometry_type)
    def convolution_input_gradient_th(grad_out, weight, grad_x, g):
        depth = g[FILTERS] * g[KERNEL_ROWS] * g[KERNEL_COLS]
        rows, cols = grad_x.shape[1], grad_x.shape[2]
        for z in range(cuda.blockIdx.z, grad_x.shape[0], cuda.gridDim.z):
            input_first(weight, grad_out, weight, grad_x, z, rows, cols, 0, depth, g)

    @kernels.jit(a4, a2, a2, geometry_type)
    def convolution_input_gradient_last(grad_out, weight, grad_x, g):
        depth = g[FILTERS] * g[KERNEL_ROWS] * g[KERNEL_COLS]
        rows, cols = grad_x.shape[0], grad_x.shape[1]
        input_last(grad_out, weight, weight, grad_x, 0, rows, cols, 0, depth, g)

    @kernels.jit(a4, a3, a2, vector, geometry_type, numba.types.int64)
    def convolution_weight_gradient_th(x, grad_out, grad_weight, grad_bias, g, chunk):
        # (F, N P) @ (N P, K + 1): rows are filters
        positions = grad_out.shape[0] * grad_out.shape[2]
        cols = g[CHANNELS] * g[KERNEL_ROWS] * g[KERNEL_COLS] + (grad_bias.shape[0] > 0)
        begin = cuda.blockIdx.z * chunk
        end = min(begin + chunk, positions)
        weight_first(grad_out, x, grad_bias, grad_weight, 0, g[FILTERS], cols, begin, end, g)

    @kernels.jit(a4, a2, a2, vector, geometry_type, numba.types.int64)
    def convolution_weight_gradient_last(x, grad_out, grad_weight, grad_bias, g, chunk):
        # (K + 1, N P) @ (N P, F): rows are patch indices, columns filters
        positions = grad_out.shape[0]
        rows = g[CHANNELS] * g[KERNEL_ROWS] * g[KERNEL_COLS] + (grad_bias.shape[0] > 0)
        begin = cuda.blockIdx.z * chunk
        end = min(begin + chunk, positions)
        weight_last(x, grad_out, grad_bias, grad_weight, 0, rows, g[FILTERS], begin, end, g)

    def convolution_workspace(geometry: ConvolutionGeometry, batch: int) -> int:
        return 0

    def convolution_forward(
        x: Any, weight: Any, bias: Any, out: Any, geometry: ConvolutionGeometry, workspace: Any
    ) -> None:
        samples = x.shape[0]
        g = geometry.numbers()
        matrix = weight_matrix(weight, geometry)
        if geometry.layout == "th":
            out3 = out.reshape(samples, geometry.filters, geometry.positions)
            grid = (*tiles(geometry.filters, geometry.positions), min(samples, MAX_GRID_Z))
            convolution_forward_th[grid, GEMM_THREADS](x, matrix, bias, out3, g)
        else:
            out2 = out.reshape(samples * geometry.positions, geometry.filters)
            grid = (*tiles(out2.shape[0], geometry.filters), 1)
            convolution_forward_last[grid, GEMM_THREADS](x, matrix, bias, out2, g)

    def convolution_backward(
        x: Any,
        weight: Any,
        grad_out: Any,
        grad_x: Any,
        grad_weight: Any,
        grad_bias: Any,
        geometry: ConvolutionGeometry,
        workspace: Any,
        need_grad_x: bool,
    ) -> None:
        samples = x.shape[0]
        g = geometry.numbers()
        matrix = weight_matrix(weight, geometry)
        grad_matrix = weight_matrix(grad_weight, geometry)
        positions = samples * geometry.positions
        extra = int(grad_bias.shape[0] > 0)
        fill(grad_weight, 0)
        if extra:
            fill(grad_bias, 0)
        if geometry.layout == "th":
            grid_xy = tiles(geometry.filters, geometry.depth + extra)
            slices, chunk = split_depth(grid_xy[0] * grid_xy[1], positions)
            grad3 = grad_out.reshape(samples, geometry.filters, geometry.positions)
            convolution_weight_gradient_th[(*grid_xy, slices), GEMM_THREADS](
                x, grad3, grad_matrix, grad_bias, g, chunk
            )
        else:
            grid_xy = tiles(geometry.depth + extra, geometry.filters)
            slices, chunk = split_depth(grid_xy[0] * grid_xy[1], positions)
            grad2 = grad_out.reshape(positions, geometry.filters)
            convolution_weight_gradient_last[(*grid_xy, slices), GEMM_THREADS](
                x, grad2, grad_matrix, grad_bias, g, chunk
            )
        if not need_grad_x:
            return
        pixels = geometry.rows * geometry.cols
        if geometry.layout == "th":
            grad_x3 = grad_x.reshape(samples, geometry.channels, pixels)
            grid = (*tiles(geometry.channels, pixels), min(samples, MAX_GRID_Z))
            convolution_input_gradient_th[grid, GEMM_THREADS](grad_out, matrix, grad_x3, g)
        else:
            grad_x2 = grad_x.reshape(samples * pixels, geometry.channels)
            grid = (*tiles(grad_x2.shape[0], geometry.channels), 1)
            convolution_input_gradient_last[grid, GEMM_THREADS](grad_out, matrix, grad_x2, g)

    return {
        "convolution_forward": convolution_forward,
        "convolution_backward": convolution_backward,
        "convolution_workspace": convolution_workspace,
    }


class ConvolutionalKernels(Protocol):
    """The convolution family's operations, the same on both devices (module doc)."""

    def convolution_workspace(self, geometry: ConvolutionGeometry, batch: int) -> int: ...

    def convolution_forward(
        self,
        x: DeviceArray,
        weight: DeviceArray,
        bias: DeviceArray,
        out: DeviceArray,
        geometry: ConvolutionGeometry,
        workspace: DeviceArray,
    ) -> None: ...

    def convolution_backward(
        self,
        x: DeviceArray,
        weight: DeviceArray,
        grad_out: DeviceArray,
        grad_x: DeviceArray,
        grad_weight: DeviceArray,
        grad_bias: DeviceArray,
        geometry: ConvolutionGeometry,
        workspace: DeviceArray,
        need_grad_x: bool,
    ) -> None: ...
