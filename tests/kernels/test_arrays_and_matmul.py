"""Kernel-level tests: each operation against NumPy on every device and dtype."""

from __future__ import annotations

import numpy as np

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
    # 67 x 19 @ 19 x 66: neither dimension is a multiple of the 64 x 64 x 16 CUDA tile
    a = random((67, 19), dtype)
    b = random((19, 66), dtype)
    bias = random((66,), dtype)
    kernels = device.kernels(dtype)
    out = device.empty((67, 66), dtype)
    kernels.matmul(device.asarray(a), device.asarray(b), device.asarray(bias), out)
    np.testing.assert_allclose(device.to_host(out), a @ b + bias, **tolerance(dtype))

    c = random((67, 66), dtype)
    out_ta = device.empty((19, 66), dtype)
    kernels.matmul_transpose_a(device.asarray(a), device.asarray(c), out_ta)
    np.testing.assert_allclose(device.to_host(out_ta), a.T @ c, **tolerance(dtype))

    out_tb = device.empty((67, 19), dtype)
    kernels.matmul_transpose_b(device.asarray(c), device.asarray(b), out_tb)
    np.testing.assert_allclose(device.to_host(out_tb), c @ b.T, **tolerance(dtype))


def test_scale_add_into(device, dtype):
    x = random((2, 3), dtype)
    out = device.asarray(np.ones((2, 3), dtype))
    device.kernels(dtype).scale_add_into(device.asarray(x), 3.0, out)
    np.testing.assert_allclose(device.to_host(out), 1 + 3 * x, **tolerance(dtype))
