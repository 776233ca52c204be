"""The CPU's convolution passes (see the package doc): patches, shifted images
(``"th"`` at stride 1) and rows of channels (channels last at stride 1)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numba import prange

from numlayers.kernels import activations, arrays, blas
from numlayers.kernels.activations import ELEMENTWISE_FUNCTIONS, constants_for, row_sum
from numlayers.kernels.arrays import sum_column
from numlayers.kernels.blas import gemm, product, source_digest
from numlayers.kernels.convolutional import geometry
from numlayers.kernels.convolutional.geometry import (
    CHANNELS,
    COLS,
    DILATION_COLS,
    DILATION_ROWS,
    FILTERS,
    KERNEL_COLS,
    KERNEL_DEPTH,
    KERNEL_ROWS,
    OUT_COLS,
    OUT_DEPTH,
    OUT_ROWS,
    PAD_COLS,
    PAD_DEPTH,
    PAD_ROWS,
    ROWS,
    STRIDE_COLS,
    STRIDE_DEPTH,
    ConvolutionGeometry,
    input_col,
    input_row,
    patch_index,
    weight_matrix,
)
from numlayers.kernels.toolkit import CpuLoop, compile_cpu, cpu_inline, use_parallel

#: the compiled CPU loops inline geometry.py's helpers and activations.py's formulas
#: and call blas.py: their cached names change with any of those files
DIGEST = source_digest(
    __file__, geometry.__file__, blas.__file__, activations.__file__, arrays.__file__
)

# ------------------------------------------------------------------ CPU
#
# Every product runs through blas.product, which splits it over Numba's threads (one
# thread pool), so the batch is multiplied at once: a chunk of samples (at most
# CHUNK_ELEMENTS of workspace) per product. Values move between layouts through
# compiled loops (the patches, the padded images), except the patches' reordering of
# a channels-first chunk's outputs and the weights' transposes, strided NumPy copies.

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
    ``scatter`` ``x[source + o * step] += patches[target + o]`` (flat arrays, offsets
    at least 0: they are taken unsigned, which lets LLVM vectorise the loops)."""
    source, target, step = np.uint64(source), np.uint64(target), np.uint64(step)
    if scatter:
        for o in range(np.uint64(count)):
            x[source + o * step] += patches[target + o]
    elif step == 1:  # a contiguous copy, which vectorises
        for o in range(np.uint64(count)):
            patches[target + o] = x[source + o]
    else:
        for o in range(np.uint64(count)):
            patches[target + o] = x[source + o * step]


@cpu_inline
def move_tap(x, pixel, patches, first, step, count, scatter):
    """``patches[first + c * step] = x[pixel + c]`` for ``c < count`` (the channels of
    one tap of a channels-last patch), or with ``scatter`` ``x[pixel + c] +=`` them;
    offsets unsigned, as in :func:`move_line`."""
    pixel, first, step = np.uint64(pixel), np.uint64(first), np.uint64(step)
    if scatter:
        for c in range(np.uint64(count)):
            x[pixel + c] += patches[first + c * step]
    elif step == 1:
        for c in range(np.uint64(count)):
            patches[first + c] = x[pixel + c]
    else:
        for c in range(np.uint64(count)):
            patches[first + c * step] = x[pixel + c]


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
                        move_tap(flat_x, pixel, flat, first, step, channels, scatter)
                    elif not scatter:
                        for c in range(np.uint64(channels)):
                            flat[np.uint64(first) + c * np.uint64(step)] = zero


def _move_patches(x, flat, g, channels_first, scatter):
    """The patches of the samples ``x`` into ``flat``: ``(K, S P)`` channels first,
    ``(S P, K)`` channels last (im2col); with ``scatter``, their adjoint added into
    ``x`` (col2im). The samples are independent: the parallel variant shares them out."""
    samples = x.shape[0]
    positions = g[OUT_ROWS] * g[OUT_COLS]
    depth = g[CHANNELS] * g[KERNEL_ROWS] * g[KERNEL_COLS]
    for s in prange(samples):
        if channels_first:
            move_channels_first(x[s], flat, s * positions, samples * positions, g, scatter)
        else:
            move_channels_last(x[s], flat, s * positions * depth, g, scatter)


move_patches_serial = compile_cpu(_move_patches, f"move_patches_{DIGEST}", fastmath={"contract"})
move_patches_parallel = compile_cpu(
    _move_patches, f"move_patches_{DIGEST}", parallel=True, fastmath={"contract"}
)
#: The work of moving one patch value, in the toolkit's units: a memory-bound copy. On a
#: quiet machine, Convolution1D's moves (batch 32, 128 features, filter 5: 2 million
#: values) on both threads brought its forward plus backward from 1.20-1.30 times
#: nn.Conv1d's time to 1.01-1.06 (the two alternated in one process); the digits CNN's
#: first layer (37 thousand values) stays on one thread, where both threads were slower.
PATCH_VALUE_COST = 0.25


def move_patches(x: Any, flat: Any, g: Any, channels_first: bool, scatter: bool) -> None:
    """:func:`_move_patches`, on every thread when the toolkit's rule says so."""
    values = x.shape[0] * g[OUT_ROWS] * g[OUT_COLS] * g[CHANNELS] * g[KERNEL_ROWS] * g[KERNEL_COLS]
    if use_parallel(int(values), PATCH_VALUE_COST):
        move_patches_parallel(x, flat, g, channels_first, scatter)
    else:
        move_patches_serial(x, flat, g, channels_first, scatter)


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


def patches_forward(x, weight, out, geometry, workspace):
    """The forward pass through patches, a chunk of samples per product (no bias)."""
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
        else:  # (S P, K) @ W: the outputs in their place
            rows = out[lo:hi].reshape(count, g.filters)
            product(patches.reshape(count, g.depth), matrix, rows, transpose_b=g.layout != "tf")


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
#
# Volumes (Convolution3D) go the same way with the depth taps among the channels: a
# sample ``(C, D, H, W)`` is padded once into rows ``(plane, channel)``, ``Dp = (OD -
# 1) SD + KD`` planes of ``C`` rows, and output plane ``o``'s window over the depth is
# the ``KD C`` rows from ``o SD C`` on, a view whose channels are ``(kd, c)`` (the taps'
# weights are laid out so). An image is a volume of one plane and one depth tap. The
# padding is zeroed once per pass: the samples overwrite only the interior.
#
# The threads share out planes, not whole samples, so that a batch of one volume
# keeps both busy: a block takes a run of the batch's output planes forward, and of
# its padded planes backward, where it computes, of every window, the depth taps on
# its planes (a window across two blocks' planes is split between them at the
# boundary), adds their weight gradients into its sums and their input gradients into
# its planes, which no other block writes.


#: The stride-1 paths (this one and the channels-last one below) multiply tap by tap,
#: products of depth ``C`` that add into the output once per tap; the patches' path
#: packs the patches first and multiplies once, at depth ``C KH KW``. With few
#: channels the taps' products are too thin to pay for themselves. Forward plus
#: backward, float32, batch 64, 3 x 3 "same", 32 filters, the patches took this much
#: of the stride-1 paths' time ("th" / "tf"; on one thread, its CPU time, on the
#: 2-core development machine): 8 x 8 images with 1 channel 0.9 / 1.0, 2: 0.8 / 0.8,
#: 4: 0.9 / 0.7, 8: 1.0 / 0.7, 16: 2.1 / 1.5; 16 x 16 images with 16, 32 and 64
#: channels 2.5 to 2.6 / 1.6 to 2.0. So the stride-1 paths take images of at least
#: this many channels, the patches' path the others (the digits CNN's first layer,
#: one channel, among them). On both threads (wall clock, the two paths alternated in
#: one process), 32 -> 32 channels on 16 x 16 images, "th" kept its lead (2.6) and
#: "tf" ran even (1.0).
DIRECT_MIN_CHANNELS = 16


def direct_path(geometry: ConvolutionGeometry) -> bool:
    """Whether an image convolution of ``geometry`` suits a stride-1 path (see above)."""
    g = geometry
    return g.stride_rows == g.stride_cols == 1 and g.channels >= DIRECT_MIN_CHANNELS


def shifted_path(geometry: ConvolutionGeometry) -> bool:
    """Whether the CPU takes the stride-1 path (above) for ``geometry``."""
    return geometry.layout == "th" and direct_path(geometry)


@cpu_inline
def shifted_sizes(g):
    """``(Wp, padded length per row, taps, rows of the padded volume, block's
    workspace)`` of the stride-1 path; the workspace starts with the taps' weights."""
    padded_rows = g[OUT_ROWS] + (g[KERNEL_ROWS] - 1) * g[DILATION_ROWS]
    padded_cols = g[OUT_COLS] + (g[KERNEL_COLS] - 1) * g[DILATION_COLS]
    # the last tap's slice runs (extent_cols - 1) values past the padded image
    length = padded_rows * padded_cols + (g[KERNEL_COLS] - 1) * g[DILATION_COLS]
    taps = g[KERNEL_ROWS] * g[KERNEL_COLS]
    planes = (g[OUT_DEPTH] - 1) * g[STRIDE_DEPTH] + g[KERNEL_DEPTH]
    volume_rows = planes * (g[CHANNELS] // g[KERNEL_DEPTH])
    wide = g[FILTERS] * g[OUT_ROWS] * padded_cols
    per_block = 2 * volume_rows * length + wide + taps * g[FILTERS] * g[CHANNELS]
    return padded_cols, length, taps, volume_rows, per_block


def _pad_volume(x, padded, g, padded_cols, extract, first_plane, last_plane):
    """Planes ``first_plane`` to ``last_plane`` (excluded) of ``padded (Dp C, L)``, rows
    ``(plane, channel)``, = the interior of the zero-padded sample ``x (C, D, H, W)``
    there: their padding is left as it is (zeros, written once per pass); with
    ``extract``, ``x`` = that interior instead."""
    channels = x.shape[0]
    rows, cols = g[ROWS], g[COLS]
    for d in range(x.shape[1]):
        plane = d + g[PAD_DEPTH]
        if plane < first_plane or plane >= last_plane:
            continue
        for c in range(channels):
            row = plane * channels + c
            for i in range(rows):
                start = (g[PAD_ROWS] + i) * padded_cols + g[PAD_COLS]
                for j in range(cols):
                    if extract:
                        x[c, d, i, j] = padded[row, start + j]
                    else:
                        padded[row, start + j] = x[c, d, i, j]


def _widen_rows(values, plane, wide, g, padded_cols, narrow):
    """``wide (F, OH * Wp)`` = plane ``plane`` of ``values (F, OD, OH, OW)`` in rows of
    ``Wp``, zeros past ``OW``; with ``narrow``, that plane = ``wide`` without those
    columns instead (the sample's whole array is passed, a contiguous one)."""
    out_cols = g[OUT_COLS]
    for f in range(values.shape[0]):
        for oi in range(g[OUT_ROWS]):
            start = oi * padded_cols
            for oj in range(padded_cols):
                if narrow:
                    if oj < out_cols:
                        values[f, plane, oi, oj] = wide[f, start + oj]
                else:
                    wide[f, start + oj] = values[f, plane, oi, oj] if oj < out_cols else 0


pad_volume = compile_cpu(_pad_volume, f"pad_volume_{DIGEST}")
widen_rows = compile_cpu(_widen_rows, f"widen_rows_{DIGEST}")


@cpu_inline
def block_bounds(block, blocks, count):
    step = (count + blocks - 1) // blocks
    return min(count, block * step), min(count, block * step + step)


def _shifted_block(backward, block, blocks, x, first, second, g, workspace, need_grad_x):
    """One block's share (``x (N, C, D, H, W)``, outputs ``(N, F, OD, OH, OW)``): the
    forward pass (``first`` the output) of its output planes, or with ``backward``
    (``first`` the output gradient, ``second`` the input gradient) the input gradients
    of its padded planes and the block's sums of the taps' weight gradients."""
    padded_cols, length, taps, volume_rows, per_block = shifted_sizes(g)
    folded, filters = g[CHANNELS], g[FILTERS]
    channels = folded // g[KERNEL_DEPTH]
    planes = volume_rows // channels
    head = taps * filters * folded
    tap_weights = workspace[:head].reshape((taps, filters, folded))
    area = workspace[head + block * per_block : head + (block + 1) * per_block]
    padded = area[: volume_rows * length].reshape((volume_rows, length))
    grad_padded = area[volume_rows * length : 2 * volume_rows * length]
    grad_padded = grad_padded.reshape((volume_rows, length))
    width = g[OUT_ROWS] * padded_cols
    wide = area[2 * volume_rows * length : 2 * volume_rows * length + filters * width]
    wide = wide.reshape((filters, width))
    sums = area[2 * volume_rows * length + filters * width :].reshape((taps, filters, folded))
    padded[:] = 0
    if backward:
        sums[:] = 0
    # the block's units: output planes (forward) or padded planes (backward) of the
    # samples in turn, a contiguous run of them
    per_sample = planes if backward else g[OUT_DEPTH]
    first_unit, last_unit = block_bounds(block, blocks, x.shape[0] * per_sample)
    for n in range(first_unit // per_sample, (last_unit + per_sample - 1) // per_sample):
        lo = max(first_unit - n * per_sample, 0)
        hi = min(last_unit - n * per_sample, per_sample)
        if backward:
            shifted_backward_planes(n, lo, hi, x, first, second, g, need_grad_x,
                                    tap_weights, padded, grad_padded, wide, sums)  # fmt: skip
        else:
            shifted_forward_planes(n, lo, hi, x, first, g, tap_weights, padded, wide)


@cpu_inline
def tap_offset(tap, g, padded_cols):
    """Where tap ``tap`` (over rows and columns) starts in a padded plane."""
    kr = tap // g[KERNEL_COLS]
    return kr * g[DILATION_ROWS] * padded_cols + (tap - kr * g[KERNEL_COLS]) * g[DILATION_COLS]


def _shifted_forward_planes(n, lo, hi, x, out, g, tap_weights, padded, wide):
    """Output planes ``lo`` to ``hi`` (excluded) of sample ``n``."""
    padded_cols = wide.shape[1] // g[OUT_ROWS]
    folded = tap_weights.shape[2]
    channels = folded // g[KERNEL_DEPTH]
    stride = g[STRIDE_DEPTH]
    # the padded planes their windows read
    pad_volume(
        x[n], padded, g, padded_cols, False, lo * stride, (hi - 1) * stride + g[KERNEL_DEPTH]
    )
    for o in range(lo, hi):
        # the rows (depth tap, channel) under output plane o's window: a view
        top = o * stride * channels
        window = padded[top : top + folded]
        for tap in range(tap_weights.shape[0]):
            offset = tap_offset(tap, g, padded_cols)
            shifted = window[:, offset : offset + wide.shape[1]]
            gemm(tap_weights[tap], shifted, wide, False, False, 1, 1 if tap else 0)
        widen_rows(out[n], o, wide, g, padded_cols, True)


def _shifted_backward_planes(n, lo, hi, x, grad_out, grad_x, g, need_grad_x,
                             tap_weights, padded, grad_padded, wide, sums):  # fmt: skip
    """The gradients through padded planes ``lo`` to ``hi`` (excluded) of sample ``n``:
    each window's depth taps on those planes (all of them unless the window straddles
    another block's planes), their weight gradients added into ``sums`` and their input
    gradients into ``grad_padded``, whose planes are then extracted into ``grad_x``."""
    padded_cols = wide.shape[1] // g[OUT_ROWS]
    width = wide.shape[1]
    channels = tap_weights.shape[2] // g[KERNEL_DEPTH]
    stride = g[STRIDE_DEPTH]
    pad_volume(x[n], padded, g, padded_cols, False, lo, hi)
    if need_grad_x:
        grad_padded[lo * channels : hi * channels] = 0
    for o in range(g[OUT_DEPTH]):
        first_tap = max(lo - o * stride, 0)
        last_tap = min(hi - o * stride, g[KERNEL_DEPTH])
        if first_tap >= last_tap:
            continue
        # the rows (depth tap, channel) of the window's taps on these planes, and the
        # matching columns of the taps' weights
        top, bottom = (o * stride + first_tap) * channels, (o * stride + last_tap) * channels
        left, right = first_tap * channels, last_tap * channels
        widen_rows(grad_out[n], o, wide, g, padded_cols, False)
        for tap in range(tap_weights.shape[0]):
            offset = tap_offset(tap, g, padded_cols)
            shifted = padded[top:bottom, offset : offset + width]
            gemm(wide, shifted, sums[tap][:, left:right], False, True, 1, 1)
            if need_grad_x:
                target = grad_padded[top:bottom, offset : offset + width]
                gemm(tap_weights[tap][:, left:right], wide, target, True, False, 1, 1)
    if need_grad_x:
        pad_volume(grad_x[n], grad_padded, g, padded_cols, True, lo, hi)
        if hi == padded.shape[0] // channels:
            # the input planes past the last window's (a stride's leftovers) get zeros
            for d in range(max(hi - g[PAD_DEPTH], 0), grad_x.shape[2]):
                grad_x[n, :, d] = 0


shifted_forward_planes = compile_cpu(
    _shifted_forward_planes, f"shifted_forward_planes_{DIGEST}", fastmath={"contract"}
)
shifted_backward_planes = compile_cpu(
    _shifted_backward_planes, f"shifted_backward_planes_{DIGEST}", fastmath={"contract"}
)
shifted_block = compile_cpu(_shifted_block, f"shifted_block_{DIGEST}", fastmath={"contract"})


def _shifted_blocks_on_threads(backward, blocks, x, first, second, g, workspace, need_grad_x):
    for block in prange(blocks):
        shifted_block(backward, block, blocks, x, first, second, g, workspace, need_grad_x)


shifted_blocks_on_threads = compile_cpu(
    _shifted_blocks_on_threads, f"shifted_blocks_on_threads_{DIGEST}", parallel=True
)


def cpu_blocks(geometry: ConvolutionGeometry, batch: int) -> int:
    """Thread blocks of the stride-1 path: one per thread when the products are worth
    waking the threads for (the BLAS module's rule for one product), else one; no more
    than the batch's output planes (an image has one)."""
    work = batch * geometry.depth * geometry.positions * geometry.filters
    planes = batch * geometry.out_depth
    if planes <= 1 or blas.THREADS <= 1 or work <= blas.SERIAL_WORK:
        return 1
    return min(planes, blas.THREADS)


def takes_volumes(geometry: ConvolutionGeometry) -> bool:
    """Whether the CPU convolves volumes of ``geometry`` whole: the stride-1
    ``"th"`` path does, each sample padded once, each output plane's window a view of
    it, its planes shared out among the threads (output planes forward, padded planes
    backward, so that no two threads write one input gradient)."""
    return shifted_path(geometry)


def shifted_workspace(geometry: ConvolutionGeometry, blocks: int) -> int:
    _, _, taps, _, per_block = shifted_sizes(geometry.numbers())
    return taps * geometry.filters * geometry.channels + blocks * per_block


def tap_weight_order(g: ConvolutionGeometry, weight: Any) -> Any:
    """The weight ``(F, C KD, KH, KW)``, channels ``(c, kd)``, as the taps' ``(KH, KW, F,
    KD, C)`` (the padded volume's rows are ``(plane, channel)``)."""
    channels = g.channels // g.kernel_depth
    folded = weight.reshape(g.filters, channels, g.kernel_depth, g.kernel_rows, g.kernel_cols)
    return folded.transpose(3, 4, 0, 2, 1)


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
    taps = g.kernel_rows * g.kernel_cols
    head = workspace[: taps * g.filters * g.channels]
    channels = g.channels // g.kernel_depth
    head.reshape(g.kernel_rows, g.kernel_cols, g.filters, g.kernel_depth, channels)[...] = (
        tap_weight_order(g, weight)
    )
    # an image is a volume of one plane (and the arrays are read by their memory order,
    # whatever the caller grouped into their first axis)
    x = x.reshape(-1, channels, g.depth_size, g.rows, g.cols)
    first = first.reshape(-1, g.filters, g.out_depth, g.out_rows, g.out_cols)
    second = second.reshape(x.shape) if backward else first
    blocks = cpu_blocks(g, x.shape[0])
    arguments = (x, first, second, g.numbers(), workspace, need_grad_x)
    if blocks == 1:
        shifted_block(backward, 0, 1, *arguments)
    else:
        shifted_blocks_on_threads(backward, blocks, *arguments)
    return blocks


def shifted_forward(x, weight, out, geometry, workspace):
    """The stride-1 ``"th"`` forward pass (no bias)."""
    run_shifted(False, x, weight, out, out, geometry, workspace, False)


def shifted_backward(x, weight, grad_out, grad_x, grad_weight, geometry, workspace, need_grad_x):
    """The stride-1 ``"th"`` weight and input gradients."""
    g = geometry
    blocks = run_shifted(True, x, weight, grad_out, grad_x, g, workspace, need_grad_x)
    _, _, taps, _, per_block = shifted_sizes(g.numbers())
    head = taps * g.filters * g.channels
    parts = workspace[head : head + blocks * per_block].reshape(blocks, per_block)
    sums = parts[:, per_block - head :].sum(axis=0)
    tap_weight_order(g, grad_weight)[...] = sums.reshape(
        g.kernel_rows, g.kernel_cols, g.filters, g.kernel_depth, g.channels // g.kernel_depth
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
    """Whether the CPU takes the channels-last stride-1 path (above) for ``geometry``:
    ``"tf"`` images only. Convolution1D takes the patches: forward plus backward,
    float32, batch 32, 100 steps, on both threads, the patches took 0.6 of this path's
    time at 128 -> 128 features, filter 5, and 0.4 to 0.6 at 32 -> 32, filter 3 (wall
    clock, the paths alternated in one process). On one thread this path was 1.2 and
    1.6 times faster; its 15 products and 4 moves per pass each wake and join the
    threads, where the patches' path has 3 products."""
    return geometry.layout == "tf" and direct_path(geometry)


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


def _move_block(matrix, images, padded_rows, padded_cols, corner_row, corner_col, extract):
    """``matrix (S L + tail, X)`` = the images ``(S, h, w, X)`` placed at ``(corner_row,
    corner_col)`` of padded images of ``padded_rows x padded_cols`` rows of ``X``, zeros
    elsewhere; with ``extract``, ``images`` = that part of ``matrix`` instead."""
    samples, rows, cols, width = images.shape
    length = padded_rows * padded_cols
    for s in range(samples):
        first = s * length
        if not extract:
            matrix[first : first + length] = 0
        for i in range(rows):
            start = first + (corner_row + i) * padded_cols + corner_col
            for j in range(cols):
                for c in range(width):
                    if extract:
                        images[s, i, j, c] = matrix[start + j, c]
                    else:
                        matrix[start + j, c] = images[s, i, j, c]
    if not extract:  # the tail the last tap reads
        matrix[samples * length :] = 0


#: serial: moving 64 padded images of 32 x 32 x 32 took 0.6 to 0.8 ms on one thread,
#: 0.9 to 2.4 on both (memory-bound), and 0.8 to 1.0 through NumPy's strided copies
move_block = compile_cpu(_move_block, f"move_block_{DIGEST}")


def rows_move(matrix: np.ndarray, images: np.ndarray, g: ConvolutionGeometry,
              corner: tuple[int, int], extract: bool) -> None:  # fmt: skip
    """:func:`_move_block` with the padded images of the rows path."""
    padded_rows, padded_cols, _, _ = rows_sizes(g)
    move_block(matrix, images, padded_rows, padded_cols, corner[0], corner[1], extract)


def rows_forward(x, weight, out, geometry, workspace):
    """The channels-last stride-1 forward pass, a chunk of samples per product (no bias)."""
    g = geometry
    _, _, _, offsets = rows_sizes(g)
    for lo, hi in chunks(x.shape[0], rows_chunk(g, x.shape[0])):
        padded, _, wide, tap_weights, _ = rows_buffers(g, hi - lo, workspace)
        tap_weights[...] = weight.reshape(tap_weights.shape)  # "tf" stores each tap's (C, F)
        rows_move(padded, x[lo:hi], g, (g.pad_rows, g.pad_cols), False)
        for tap, offset in enumerate(offsets):
            shifted = padded[offset : offset + wide.shape[0]]
            product(shifted, tap_weights[tap], wide, beta=1.0 if tap else 0.0)
        rows_move(wide, out[lo:hi], g, (0, 0), True)


def rows_backward(x, weight, grad_out, grad_x, grad_weight, geometry, workspace, need_grad_x):
    """The channels-last stride-1 weight and input gradients, a chunk per product."""
    g = geometry
    _, _, _, offsets = rows_sizes(g)
    for index, (lo, hi) in enumerate(chunks(x.shape[0], rows_chunk(g, x.shape[0]))):
        padded, grad_padded, wide, tap_weights, tap_gradients = rows_buffers(g, hi - lo, workspace)
        tap_weights[...] = weight.reshape(tap_weights.shape)
        rows_move(padded, x[lo:hi], g, (g.pad_rows, g.pad_cols), False)
        rows_move(wide, grad_out[lo:hi], g, (0, 0), False)
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
            rows_move(grad_padded, grad_x[lo:hi], g, (g.pad_rows, g.pad_cols), True)
    grad_weight[...] = tap_gradients.reshape(grad_weight.shape)


def cpu_pass(geometry: ConvolutionGeometry, shifted: Any, rows: Any, patches: Any) -> Any:
    """The pass of the CPU path that ``geometry`` takes."""
    if shifted_path(geometry):
        return shifted
    return rows if rows_path(geometry) else patches


# ------------------------------------------------------------------ CPU, bias and activation
#
# The products above leave the convolution without its bias. One compiled pass over
# the output then adds the bias and applies the activation (forward), or takes the
# gradient through the activation and sums it per filter into the bias gradient
# (backward), as the Dense layer's fused passes do: the formulas are those of
# :mod:`numlayers.kernels.activations`, compiled into the loop once per activation.
# Channels first, the output is seen as ``(N, F, P)`` (a filter's outputs are
# contiguous), channels last as ``(N P, F)`` (the filters are the contiguous axis): a
# loop of each kind, so that the innermost loop runs along memory and vectorises.

#: an element of the bias and activation passes, in the toolkit's units: a load, an
#: add, the formula and a store (the formulas' own costs are about one unit)
BIAS_ACTIVATION_COST = 2.0


def filter_view(array: np.ndarray, geometry: ConvolutionGeometry) -> np.ndarray:
    """An output (or its gradient) as ``(N, F, P)`` channels first, ``(N P, F)`` else."""
    if geometry.layout == "th":
        return array.reshape(-1, geometry.filters, geometry.positions)
    return array.reshape(-1, geometry.filters)


@cpu_inline
def add_block_sums(sums, grad_bias, zero):
    """``grad_bias`` = the sums of the threads' blocks (left alone when of length 0)."""
    if grad_bias.shape[0] > 0:
        for f in range(sums.shape[1]):
            sum_column(f, sums, zero, grad_bias)


class BiasActivation(NamedTuple):
    """The bias and activation passes of one activation (see above).

    ``forward_*(z, y, bias)``: ``z += bias`` per filter (``bias`` may have length 0),
    then ``y = f(z)``; ``backward_*(grad_y, z, y, grad_z, grad_bias)``: ``grad_z =
    grad_y * f'(z)`` and ``grad_bias`` its sums per filter (left alone when of length
    0). For ``"linear"``, ``y`` and ``grad_z`` are neither written nor read (pass ``z``
    and ``grad_y``).
    """

    forward_first: CpuLoop
    forward_last: CpuLoop
    backward_first: CpuLoop
    backward_last: CpuLoop


def bias_activation_loops(dtype: np.dtype, name: str) -> BiasActivation:
    """The passes of the bias and activation ``name`` (one of
    :data:`~numlayers.kernels.activations.ELEMENTWISE_FUNCTIONS` without parameters),
    each compiled on first use."""
    function = ELEMENTWISE_FUNCTIONS[name]
    forward, derivative = function.forward, function.derivative
    c = constants_for(dtype)
    apply = name != "linear"
    threads = blas.THREADS

    def convolution_bias_activation_forward_first(z, y, bias):
        has_bias = bias.shape[0] > 0
        for n in prange(z.shape[0]):
            for f in range(z.shape[1]):
                shift = bias[f] if has_bias else c.zero
                for p in range(z.shape[2]):
                    value = z[n, f, p] + shift
                    z[n, f, p] = value
                    if apply:
                        y[n, f, p] = forward(value, c)

    def convolution_bias_activation_forward_last(z, y, bias):
        has_bias = bias.shape[0] > 0
        for row in prange(z.shape[0]):
            for f in range(z.shape[1]):
                value = z[row, f] + (bias[f] if has_bias else c.zero)
                z[row, f] = value
                if apply:
                    y[row, f] = forward(value, c)

    def convolution_bias_activation_backward_first(grad_y, z, y, grad_z, grad_bias):
        blocks = max(1, min(z.shape[0], threads))
        sums = np.zeros((blocks, z.shape[1]), z.dtype)
        for block in prange(blocks):
            first, last = block_bounds(block, blocks, z.shape[0])
            for n in range(first, last):
                for f in range(z.shape[1]):
                    if apply:
                        for p in range(z.shape[2]):
                            grad_z[n, f, p] = grad_y[n, f, p] * derivative(
                                z[n, f, p], y[n, f, p], c
                            )
                        sums[block, f] += row_sum(grad_z[n, f])
                    else:
                        sums[block, f] += row_sum(grad_y[n, f])
        add_block_sums(sums, grad_bias, c.zero)

    def convolution_bias_activation_backward_last(grad_y, z, y, grad_z, grad_bias):
        blocks = max(1, min(z.shape[0], threads))
        sums = np.zeros((blocks, z.shape[1]), z.dtype)
        for block in prange(blocks):
            first, last = block_bounds(block, blocks, z.shape[0])
            for row in range(first, last):
                for f in range(z.shape[1]):
                    grad = grad_y[row, f]
                    if apply:
                        grad = grad * derivative(z[row, f], y[row, f], c)
                        grad_z[row, f] = grad
                    sums[block, f] += grad
        add_block_sums(sums, grad_bias, c.zero)

    def loop(template: Any) -> CpuLoop:
        loop_name = template.__name__.replace("bias_activation", name)
        return CpuLoop(
            template,
            f"{loop_name}_{DIGEST}",
            cost=BIAS_ACTIVATION_COST,
            size_argument=0,
            fastmath={"contract"},
        )

    return BiasActivation(
        loop(convolution_bias_activation_forward_first),
        loop(convolution_bias_activation_forward_last),
        loop(convolution_bias_activation_backward_first),
        loop(convolution_bias_activation_backward_last),
    )


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    dtype = np.dtype(dtype)
    loops: dict[str, BiasActivation] = {}

    def bias_activation(name: str) -> BiasActivation:
        if name not in loops:
            loops[name] = bias_activation_loops(dtype, name)
        return loops[name]

    def convolution_takes_volumes(geometry: ConvolutionGeometry) -> bool:
        return takes_volumes(geometry)

    def convolution_workspace(geometry: ConvolutionGeometry, batch: int) -> int:
        if shifted_path(geometry):
            return shifted_workspace(geometry, cpu_blocks(geometry, batch))
        if rows_path(geometry):
            return rows_workspace(geometry, rows_chunk(geometry, batch))
        return patches_workspace(geometry, chunk_size(geometry, batch))

    def convolution_forward(
        x: Any,
        weight: Any,
        bias: Any,
        z: Any,
        y: Any,
        geometry: ConvolutionGeometry,
        workspace: Any,
        activation: str,
    ) -> None:
        run = cpu_pass(geometry, shifted_forward, rows_forward, patches_forward)
        run(x, weight, z, geometry, workspace)
        if bias.shape[0] > 0 or activation != "linear":
            loops = bias_activation(activation)
            forward = loops.forward_first if geometry.layout == "th" else loops.forward_last
            forward(filter_view(z, geometry), filter_view(y, geometry), bias)

    def convolution_backward(
        x: Any,
        weight: Any,
        z: Any,
        y: Any,
        grad_y: Any,
        grad_z: Any,
        grad_x: Any,
        grad_weight: Any,
        grad_bias: Any,
        geometry: ConvolutionGeometry,
        workspace: Any,
        need_grad_x: bool,
        activation: str,
    ) -> None:
        if activation == "linear":
            grad_z = grad_y
        if grad_bias.shape[0] > 0 or activation != "linear":
            loops = bias_activation(activation)
            backward = loops.backward_first if geometry.layout == "th" else loops.backward_last
            views = (filter_view(array, geometry) for array in (grad_y, z, y, grad_z))
            backward(*views, grad_bias)
        run = cpu_pass(geometry, shifted_backward, rows_backward, patches_backward)
        run(x, weight, grad_z, grad_x, grad_weight, geometry, workspace, need_grad_x)

    return {
        "convolution_forward": convolution_forward,
        "convolution_backward": convolution_backward,
        "convolution_workspace": convolution_workspace,
        "convolution_takes_volumes": convolution_takes_volumes,
    }
