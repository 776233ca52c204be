"""The CUDA convolution passes (see the package doc): implicit GEMM, the tiled
product of :mod:`numlayers.kernels.matmul` with loaders that compute each patch
element as they stage it in shared memory."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from numlayers.kernels import activations
from numlayers.kernels.arrays import build_cuda as build_array_cuda
from numlayers.kernels.convolutional.geometry import (
    CHANNELS,
    COLS,
    DILATION_COLS,
    DILATION_ROWS,
    FILTERS,
    GEOMETRY_LENGTH,
    KERNEL_COLS,
    KERNEL_ROWS,
    MAX_SPLIT,
    OUT_COLS,
    OUT_ROWS,
    PAD_COLS,
    PAD_ROWS,
    ROWS,
    STRIDE_COLS,
    STRIDE_ROWS,
    WEIGHT_K_MAJOR,
    ConvolutionGeometry,
    input_col,
    input_row,
    patch_index,
    source_position,
    split,
    tap_of,
    weight_matrix,
)
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
from numlayers.kernels.toolkit import bind_cuda, launch_size

#: ``numba.cuda``, bound by :func:`bind_cuda` (kernels must see it as a module global)
cuda: Any = None


# ------------------------------------------------------------------ CUDA element loaders
# Every index below is non-negative when it is used (the padding is checked first), so
# the elements are read through unsigned indices: Numba then drops the negative-index
# wraparound of each subscript (as :func:`numlayers.kernels.matmul.matrix_element` does).
unsigned = numba.types.uint64


def patch_value(x, n, p, k, g, zero, channels_first):
    """Patch element ``k`` of output position ``p`` of sample ``n`` (zero in padding)."""
    c, kr, kc = tap_of(k, g)
    out_row, out_col = split(p, g[OUT_COLS])
    i = input_row(out_row, kr, g)
    j = input_col(out_col, kc, g)
    if i < 0 or i >= g[ROWS] or j < 0 or j >= g[COLS]:
        return zero
    if channels_first:
        return x[unsigned(n), unsigned(c), unsigned(i), unsigned(j)]
    return x[unsigned(n), unsigned(i), unsigned(j), unsigned(c)]


def weight_value(weight, f, k, g):
    """``W[k, f]`` of the weight matrix, stored ``(K, F)`` or ``(F, K)``."""
    if g[WEIGHT_K_MAJOR]:
        return weight[unsigned(k), unsigned(f)]
    return weight[unsigned(f), unsigned(k)]


def gathered_gradient(grad_out, n, q, d, g, zero, channels_first):
    """The output gradient that tap ``(kr, kc)`` of filter ``f`` (``d = (kr, kc, f)``)
    brings to input position ``q`` of sample ``n``: zero where no window puts it there."""
    tap, f = split(d, g[FILTERS])
    kr, kc = split(tap, g[KERNEL_COLS])
    i, j = split(q, g[COLS])
    out_row = source_position(i, kr, g[STRIDE_ROWS], g[PAD_ROWS], g[DILATION_ROWS], g[OUT_ROWS])
    out_col = source_position(j, kc, g[STRIDE_COLS], g[PAD_COLS], g[DILATION_COLS], g[OUT_COLS])
    if out_row < 0 or out_col < 0:
        return zero
    if channels_first:
        return grad_out[unsigned(n), unsigned(f), unsigned(out_row), unsigned(out_col)]
    return grad_out[unsigned(n), unsigned(out_row), unsigned(out_col), unsigned(f)]


def tapped_weight(weight, d, c, g):
    """The weight of tap ``(kr, kc)`` of filter ``f`` (``d = (kr, kc, f)``) on channel ``c``."""
    tap, f = split(d, g[FILTERS])
    kr, kc = split(tap, g[KERNEL_COLS])
    return weight_value(weight, f, patch_index(c, kr, kc, g), g)


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
        n, p = split(row, g[OUT_ROWS] * g[OUT_COLS])
        return patch_value(x, n, p, k, g, zero, False)

    def weight_rows(weight, z, k, f, g):
        # W as (F, K), transposed: (K, F)
        return weight_value(weight, f, k, g)

    def gradient_columns(grad_out, z, d, q, g):
        # "th": the gathered gradient (D, H W) of sample z
        return gathered_gradient(grad_out, z, q, d, g, zero, True)

    def gradient_rows(grad_out, z, d, row, g):
        # channels last: the gathered gradient (N H W, D), transposed
        n, q = split(row, g[ROWS] * g[COLS])
        return gathered_gradient(grad_out, n, q, d, g, zero, False)

    def channel_weights(weight, z, d, c, g):
        return tapped_weight(weight, d, c, g)

    def patches_with_ones(x, z, d, k, g):
        # the weight gradient's (N P, K + 1) patches; column K is ones (the bias's)
        depth = g[CHANNELS] * g[KERNEL_ROWS] * g[KERNEL_COLS]
        if k == depth:
            return one
        n, p = split(d, g[OUT_ROWS] * g[OUT_COLS])
        return patch_value(x, n, p, k, g, zero, channels_first)

    def gradient_by_filter(grad_out, z, d, f, g):
        # "th": grad_out (N, F, P) as (F, N P), transposed; channels last: (N P, F)
        if channels_first:
            n, p = split(d, g[OUT_ROWS] * g[OUT_COLS])
            return grad_out[unsigned(n), unsigned(f), unsigned(p)]
        return grad_out[unsigned(d), unsigned(f)]

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


def check_split_sizes(geometry: ConvolutionGeometry, samples: int) -> None:
    """Refuse a convolution whose indices the kernels would split past
    :data:`~.geometry.MAX_SPLIT` (their 32-bit divisions would wrap)."""
    largest = max(
        samples * geometry.positions,
        samples * geometry.rows * geometry.cols,
        geometry.depth + 1,
        geometry.filters * geometry.kernel_rows * geometry.kernel_cols,
    )
    if largest >= MAX_SPLIT:
        raise ValueError(
            f"convolution: {largest} positions, pixels or taps in one call is more than "
            f"the CUDA kernels index ({MAX_SPLIT - 1}): use a smaller batch"
        )


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    kernels = bind_cuda(globals(), cuda_api, dtype)
    zero = kernels.dtype.type(0)
    geometry_type = numba.types.UniTuple(numba.types.int64, GEOMETRY_LENGTH)
    fill = build_array_cuda(dtype, cuda_api)["fill"]
    activation_operations = activations.build_cuda(dtype, cuda_api)

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

    def convolution_takes_volumes(geometry: ConvolutionGeometry) -> bool:
        """Never: a volume's depth taps are gathered into images first."""
        return False

    def convolution_workspace(geometry: ConvolutionGeometry, batch: int) -> int:
        return 0

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
        product_forward(x, weight, bias, z, geometry)
        if activation != "linear":  # the bias was added as the product stored z
            activation_operations[f"{activation}_forward"](z, y)

    def product_forward(
        x: Any, weight: Any, bias: Any, out: Any, geometry: ConvolutionGeometry
    ) -> None:
        samples = x.shape[0]
        check_split_sizes(geometry, samples)
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
        else:
            activation_operations[f"{activation}_backward"](z, y, grad_y, grad_z)
        product_backward(x, weight, grad_z, grad_x, grad_weight, grad_bias, geometry, need_grad_x)

    def product_backward(
        x: Any,
        weight: Any,
        grad_out: Any,
        grad_x: Any,
        grad_weight: Any,
        grad_bias: Any,
        geometry: ConvolutionGeometry,
        need_grad_x: bool,
    ) -> None:
        samples = x.shape[0]
        check_split_sizes(geometry, samples)
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
        "convolution_takes_volumes": convolution_takes_volumes,
    }
