"""Kernel-level tests: each operation against NumPy on every device and dtype."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import cuda_activity, get_device
from numlayers.kernels import arrays, matmul
from numlayers.kernels.activations import ELEMENTWISE_CODES
from numlayers.testing import tolerance

RNG = np.random.default_rng(1234)


def random(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def test_fill_copy_add_into(device, dtype):
    kernels = device.kernels(dtype)
    x = random((3, 5), dtype)
    out = device.empty((3, 5), dtype)
    kernels.fill(out, 2.5)
    np.testing.assert_array_equal(device.to_host(out), np.full((3, 5), 2.5, dtype))
    kernels.copy(device.asarray(x), out)
    np.testing.assert_array_equal(device.to_host(out), x)
    kernels.add_into(device.asarray(x), out)
    np.testing.assert_allclose(device.to_host(out), 2 * x, **tolerance(dtype))


def test_sum_rows(device, dtype):
    x = random((7, 4), dtype)
    out = device.empty((4,), dtype)
    device.kernels(dtype).sum_rows(device.asarray(x), out)
    np.testing.assert_allclose(device.to_host(out), x.sum(axis=0), **tolerance(dtype))


#: rows of the CUDA column sums that leave a remainder after the kernel's steps of four
#: rows per row group, after two such steps
REMAINDER_ROWS = 2 * 4 * arrays.SUM_ROW_GROUPS + 5

#: ``(rows, columns, column_step)`` of the CUDA column sums; ``column_step`` 2 sums every
#: other column of an array twice as wide (a strided view)
SUM_ROWS_CASES = {
    # more tiles than the simulator's grid has blocks (the blocks stride over them)
    "several_tiles": (5, 2 * arrays.SUM_TILE_COLUMNS + 6, 1),
    "narrower_than_a_tile": (REMAINDER_ROWS, arrays.SUM_TILE_COLUMNS - 1, 1),
    "a_tile_and_a_part": (37, arrays.SUM_TILE_COLUMNS + 1, 1),
    "one_row": (1, 5, 1),
    "no_rows": (0, 6, 1),
    "strided_columns": (REMAINDER_ROWS, 7, 2),
}


@pytest.mark.parametrize("case", list(SUM_ROWS_CASES))
def test_cuda_sum_rows_against_float64_sums_in_one_launch(case, dtype):
    rows, columns, column_step = SUM_ROWS_CASES[case]
    device = get_device("cuda")
    x = random((rows, columns * column_step), dtype)
    view = device.asarray(x) if column_step == 1 else device.asarray(x)[:, ::column_step]
    out = device.asarray(np.full(columns, np.nan, dtype))
    with cuda_activity() as activity:
        device.kernels(dtype).sum_rows(view, out)
    assert activity.launches == 1
    expected = x[:, ::column_step].astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(device.to_host(out), expected, **tolerance(dtype))


def test_matmul_variants_cross_tile_edges(device, dtype):
    # no dimension is a multiple of the CUDA tile (64 x 64 x 16 on a GPU, smaller under
    # the simulator: the toolkit's launch_size)
    rows, depth, cols = matmul.TILE_M + 3, matmul.TILE_K + 3, matmul.TILE_N + 2
    a = random((rows, depth), dtype)
    b = random((depth, cols), dtype)
    bias = random((cols,), dtype)
    kernels = device.kernels(dtype)
    out = device.empty((rows, cols), dtype)
    kernels.matmul(device.asarray(a), device.asarray(b), device.asarray(bias), out)
    np.testing.assert_allclose(device.to_host(out), a @ b + bias, **tolerance(dtype))

    c = random((rows, cols), dtype)
    out_ta = device.empty((depth, cols), dtype)
    kernels.matmul_transpose_a(device.asarray(a), device.asarray(c), out_ta)
    np.testing.assert_allclose(device.to_host(out_ta), a.T @ c, **tolerance(dtype))

    out_tb = device.empty((rows, depth), dtype)
    kernels.matmul_transpose_b(device.asarray(c), device.asarray(b), out_tb)
    np.testing.assert_allclose(device.to_host(out_tb), c @ b.T, **tolerance(dtype))


def test_scale_add_into(device, dtype):
    x = random((2, 3), dtype)
    out = device.asarray(np.ones((2, 3), dtype))
    device.kernels(dtype).scale_add_into(device.asarray(x), 3.0, out)
    np.testing.assert_allclose(device.to_host(out), 1 + 3 * x, **tolerance(dtype))


#: the transposes of the CUDA GEMM: (transpose_a, transpose_b) -> its operands' shapes
#: for ``out`` of ``rows x cols`` and depth ``depth``
TRANSPOSES = {
    "nn": (False, False),
    "tn": (True, False),
    "nt": (False, True),
}


def product_case(transposes, rows, cols, depth):
    """float32 operands of a ``rows x cols`` product of depth ``depth``, stored for the
    transposes named (a key of :data:`TRANSPOSES`), and the product ``op(a) @ op(b)``."""
    transpose_a, transpose_b = TRANSPOSES[transposes]
    a = random((depth, rows) if transpose_a else (rows, depth), np.float32)
    b = random((cols, depth) if transpose_b else (depth, cols), np.float32)
    return transpose_a, transpose_b, a, b, (a.T if transpose_a else a) @ (b.T if transpose_b else b)


@pytest.mark.parametrize("transposes", list(TRANSPOSES))
def test_every_cuda_gemm_tiling_handles_sizes_off_every_tile(transposes):
    # float32: the dtype with every tiling (float64 has the default one only, which the
    # test above runs in both dtypes)
    dtype = np.dtype(np.float32)
    # a multiple of no tile size (161 x 67 x 65 on a GPU, 11 x 7 x 9 under the simulator's
    # tiny tiles): every tiling the launcher may pick runs full and partial tiles in the
    # rows and partial ones in the columns, over five depth slices
    device = get_device("cuda")
    wide = matmul.WIDE_TILING
    rows, cols, depth = wide.rows + wide.rows // 4 + 1, wide.cols // 2 + 3, 4 * wide.depth + 1
    transpose_a, transpose_b, a, b, product = product_case(transposes, rows, cols, depth)
    bias = random((cols,), dtype)
    expected = product + bias
    for tiling in matmul.GEMM_TILINGS[dtype]:
        launch = matmul.gemm_kernel(device.cuda, dtype, transpose_a, transpose_b, tiling)
        out = device.empty((rows, cols), dtype)
        launch(device.asarray(a), device.asarray(b), device.asarray(bias), out)
        np.testing.assert_allclose(
            device.to_host(out), expected, err_msg=str(tiling), **tolerance(dtype)
        )


def test_the_gemm_picks_wide_tiles_for_large_products_and_narrower_ones_for_small():
    tilings = matmul.GEMM_TILINGS[np.dtype(np.float32)]
    wide = matmul.WIDE_TILING
    large = wide.rows * matmul.FULL_GRID
    assert matmul.pick_tiling(large, large, tilings) is wide
    assert matmul.pick_tiling(wide.rows, 2 * wide.cols, tilings) is matmul.DEFAULT_TILING
    # on a GPU: 128 x 128 x 16 tiles with 8 x 8 per thread, within static shared memory
    wide = matmul.Tiling(128, 128, 16, 16, 16)
    assert (wide.per_thread_m, wide.per_thread_n, wide.a_loads) == (8, 8, 8)
    for dtype, tilings in matmul.GEMM_TILINGS.items():
        for tiling in tilings:
            assert tiling.shared_bytes(dtype.itemsize) <= matmul.MAX_SHARED_BYTES
    with pytest.raises(ValueError, match="split evenly"):
        matmul.Tiling(100, 128, 8, 16, 16)
    with pytest.raises(ValueError, match="shared memory"):
        matmul.Tiling(256, 256, 32, 16, 16)


def test_gemm_kernels_are_bound_to_their_tilings_blocks_per_sm():
    # the wide tiling's kernels must leave room for two blocks an SM (ptxas keeps them
    # within 128 registers a thread); the launch bound is what the PTX check and the GPU
    # compile them with
    dtype = np.dtype(np.float32)
    device = get_device("cuda")
    kernels = matmul.bind_cuda(vars(matmul), device.cuda, dtype)
    assert matmul.WIDE_TILING.blocks_per_sm == 2
    for tiling in matmul.GEMM_TILINGS[dtype]:
        matmul.make_gemm_kernel(kernels, False, True, tiling=tiling)
        matmul.make_activation_gemm_kernel(kernels, tiling)
        matmul.make_split_gemm_kernel(kernels, True, False, tiling)
    wide = matmul.WIDE_TILING
    size = f"{wide.rows}x{wide.cols}x{wide.depth}"
    bounds = {name: bound for name, (_, _, bound) in kernels.kernels.items()}
    assert len(bounds) == 6, bounds
    for name, bound in bounds.items():
        expected = (wide.block_threads, 2) if size in name else matmul.DEFAULT_TILING.block_threads
        assert bound == expected, name


@pytest.mark.parametrize("transposes", list(TRANSPOSES))
def test_products_too_small_to_fill_the_gpu_are_cut_along_their_depth(transposes):
    # 2 tiles of the default tiling, deep enough for several slices (on a GPU: 65 x 67
    # outputs of depth 8 * 16 * 4 + 5); the last slice is shorter than the others
    dtype = np.dtype(np.float32)
    device = get_device("cuda")
    tiling = matmul.DEFAULT_TILING
    rows, cols = tiling.rows + 1, tiling.cols - 1
    depth = matmul.MAX_SPLITS * matmul.MIN_SPLIT_STEPS * tiling.depth + 5
    assert matmul.depth_splits(rows, cols, depth) > 1
    transpose_a, transpose_b, a, b, product = product_case(transposes, rows, cols, depth)
    # three launches of one shape: each finds the tiles' arrival counts back at zero
    for bias in (random((cols,), dtype), random((cols,), dtype), np.zeros(0, dtype)):
        expected = product + (bias if bias.size else 0)
        launch = matmul.gemm_launcher(device.cuda, dtype, transpose_a, transpose_b)
        out = device.empty((rows, cols), dtype)
        operands = device.asarray(a), device.asarray(b), device.asarray(bias)
        with cuda_activity() as activity:
            launch(*operands, out)
        assert activity.launches == 1  # the slices are added up by the product's own blocks
        np.testing.assert_allclose(device.to_host(out), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cut", [False, True], ids=["tiles", "depth_slices"])
def test_the_activation_epilogue_stores_the_product_and_its_activation(cut):
    """``gemm_launcher`` with ``activated``: ``z = a @ b + bias`` and ``tanh(z)`` in one launch,
    whether the product's tiles or its depth slices finish it."""
    dtype = np.dtype(np.float32)
    device = get_device("cuda")
    tiling = matmul.DEFAULT_TILING
    rows, cols = tiling.rows + 1, tiling.cols - 1
    depth = matmul.MAX_SPLITS * matmul.MIN_SPLIT_STEPS * tiling.depth + 5 if cut else 7
    assert (matmul.depth_splits(rows, cols, depth) > 1) == cut
    _, _, a, b, product = product_case("nn", rows, cols, depth)
    bias = random((cols,), dtype)
    launch = matmul.gemm_launcher(device.cuda, dtype, False, False)
    z, y = device.empty((rows, cols), dtype), device.empty((rows, cols), dtype)
    operands = device.asarray(a), device.asarray(b), device.asarray(bias)
    with cuda_activity() as activity:
        assert launch(*operands, z, y, ELEMENTWISE_CODES["tanh"])
    assert activity.launches == 1
    np.testing.assert_allclose(device.to_host(z), product + bias, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(device.to_host(y), np.tanh(product + bias), rtol=1e-4, atol=1e-4)


def test_only_products_with_few_tiles_and_enough_depth_are_cut():
    tiling = matmul.DEFAULT_TILING
    full = tiling.rows * matmul.FULL_GRID
    deep = 64 * tiling.depth
    assert matmul.depth_splits(full, tiling.cols, deep) == 1  # enough tiles
    assert matmul.depth_splits(tiling.rows, tiling.cols, tiling.depth) == 1  # too shallow
    assert 1 < matmul.depth_splits(tiling.rows, tiling.cols, deep) <= matmul.MAX_SPLITS


@pytest.mark.parametrize("transposes", list(TRANSPOSES))
def test_large_products_through_cublas_match_the_numba_gemm(transposes):
    # on a GPU with nvmath-python (the [cuda] extra): what matmul hands cuBLAS equals the
    # Numba GEMM's result, with and without a bias, also replayed inside a CUDA graph
    from numlayers.cuda_graphs import capture
    from numlayers.kernels.cublas import MIN_CUBLAS_WORK, cublas

    device = get_device("cuda")
    if cublas(device.cuda) is None:
        pytest.skip("no cuBLAS through nvmath-python here (a GPU and the [cuda] extra)")
    dtype = np.dtype(np.float32)
    rows, cols, depth = 300, 257, 260
    assert rows * cols * depth >= MIN_CUBLAS_WORK
    transpose_a, transpose_b, a, b, _ = product_case(transposes, rows, cols, depth)
    tiling = matmul.DEFAULT_TILING
    numba_gemm = matmul.gemm_kernel(device.cuda, dtype, transpose_a, transpose_b, tiling)
    launch = matmul.gemm_launcher(device.cuda, dtype, transpose_a, transpose_b)
    for bias in (random((cols,), dtype), np.zeros(0, dtype)):
        arrays = [device.asarray(x) for x in (a, b, bias)]
        expected, out = device.empty((rows, cols), dtype), device.empty((rows, cols), dtype)
        numba_gemm(*arrays, expected)
        launch(*arrays, out)
        np.testing.assert_allclose(
            device.to_host(out), device.to_host(expected), rtol=1e-4, atol=1e-4
        )
        graph, _ = capture(device, lambda arrays=arrays, out=out: launch(*arrays, out))
        device.kernels(dtype).fill(out, 0.0)
        graph.launch()
        np.testing.assert_allclose(
            device.to_host(out), device.to_host(expected), rtol=1e-4, atol=1e-4
        )


def test_without_a_gpu_every_product_runs_the_numba_gemm():
    from numlayers.devices import simulator_enabled
    from numlayers.kernels.cublas import cublas

    if not simulator_enabled():
        pytest.skip("checks the simulator's dispatch")
    assert cublas(get_device("cuda").cuda) is None
