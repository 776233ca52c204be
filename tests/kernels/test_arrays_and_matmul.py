"""Kernel-level tests: each operation against NumPy on every device and dtype."""

from __future__ import annotations

import numpy as np

from numlayers.kernels import matmul
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
