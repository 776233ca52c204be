"""Dense-variant kernels: maxout's ties and NaNs, and the highway steps, against NumPy."""

from __future__ import annotations

import numpy as np

from numlayers.testing import tolerance


def test_maxout_takes_the_first_maximum_and_sends_the_gradient_there(device, dtype):
    kernels = device.kernels(dtype)
    z = np.array([[[1, 5, 2]], [[3, 5, np.nan]], [[3, 0, 2]]], dtype)  # (features, 1, 3)
    out = device.empty((1, 3), dtype)
    argmax = device.empty((1, 3), np.int32)
    kernels.maxout_forward(device.asarray(z), out, argmax)
    np.testing.assert_array_equal(device.to_host(out), [[3, 5, np.nan]])
    np.testing.assert_array_equal(device.to_host(argmax), [[1, 0, 1]])
    grad_z = device.empty(z.shape, dtype)
    kernels.maxout_backward(device.asarray(np.array([[7, 8, 9]], dtype)), argmax, grad_z)
    expected = np.zeros(z.shape, dtype)
    expected[1, 0, 0], expected[0, 0, 1], expected[1, 0, 2] = 7, 8, 9
    np.testing.assert_array_equal(device.to_host(grad_z), expected)


def test_highway_steps_match_numpy(device, dtype):
    rng = np.random.default_rng(3)
    h, x, grad = (rng.standard_normal((2, 3)).astype(dtype) for _ in range(3))
    gate = rng.uniform(0, 1, (2, 3)).astype(dtype)
    kernels = device.kernels(dtype)
    arrays = [device.asarray(a) for a in (grad, h, gate, x)]
    out = device.empty((2, 3), dtype)
    kernels.highway_forward(arrays[1], arrays[2], arrays[3], out)
    np.testing.assert_allclose(device.to_host(out), h * gate + x * (1 - gate), **tolerance(dtype))
    grads = [device.empty((2, 3), dtype) for _ in range(3)]
    kernels.highway_backward(*arrays, *grads)
    expected = [grad * gate, grad * (h - x) * gate * (1 - gate), grad * (1 - gate)]
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(device.to_host(got), want, **tolerance(dtype))
