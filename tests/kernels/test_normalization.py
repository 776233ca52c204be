"""Normalization kernels against NumPy: forward, running statistics, float64 finite
differences of a NumPy forward for every gradient, large means, the parallel twin."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import get_device
from numlayers.kernels import build_family, normalization, toolkit
from numlayers.testing import tolerance

EPSILON = 1e-3
MOMENTUM = 0.8
#: (outer, features, inner): rows of features, and features with runs of values
LAYOUTS = [pytest.param((5, 3, 1), id="rows"), pytest.param((2, 3, 4), id="runs")]


def operations(device, dtype):
    return build_family("normalization", device, np.dtype(dtype))


def per_feature(values):
    return values[None, :, None]


def batch_norm_reference(x, gamma, beta, running_mean, running_var, train):
    """Mode 0 in float64 NumPy: ``(y, mean, variance)`` used."""
    if train:
        mean, variance = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    else:
        mean, variance = running_mean, running_var
    normalised = (x - per_feature(mean)) / np.sqrt(per_feature(variance) + EPSILON)
    return per_feature(gamma) * normalised + per_feature(beta), mean, variance


def sample_norm_reference(x, gamma, beta):
    mean = x.mean(axis=1, keepdims=True)
    variance = x.var(axis=1, keepdims=True)
    return per_feature(gamma) * (x - mean) / np.sqrt(variance + EPSILON) + per_feature(beta)


def parameters(features, seed=0):
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 1.5, features)
    beta = rng.uniform(-0.5, 0.5, features)
    running_mean = rng.uniform(-0.5, 0.5, features)
    running_var = rng.uniform(0.5, 2.0, features)
    return gamma, beta, running_mean, running_var


def on(device, *arrays, dtype=np.float64):
    return [device.asarray(np.array(a, dtype)) for a in arrays]  # copies: kernels write some


def run_batch_forward(device, dtype, x, gamma, beta, running_mean, running_var, train):
    """The kernel's output, mean, inv_std and running statistics, on the host."""
    ops = operations(device, dtype)
    features = x.shape[1]
    arrays = on(device, x, gamma, beta, running_mean, running_var, dtype=dtype)
    mean, inv_std = device.empty((features,), dtype), device.empty((features,), dtype)
    out = device.empty(x.shape, dtype)
    ops["batch_norm_forward"](*arrays, EPSILON, MOMENTUM, train, mean, inv_std, out)
    host = [device.to_host(a) for a in (out, mean, inv_std, arrays[3], arrays[4])]
    return host


@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
@pytest.mark.parametrize("shape", LAYOUTS)
def test_batch_norm_forward_and_running_statistics(device, shape, train):
    dtype = np.dtype(np.float32)  # float64 runs in the finite-difference tests
    x = np.random.default_rng(1).uniform(-2, 3, shape)
    gamma, beta, running_mean, running_var = parameters(shape[1])
    got = run_batch_forward(device, dtype, x, gamma, beta, running_mean, running_var, train)
    y, mean, variance = batch_norm_reference(x, gamma, beta, running_mean, running_var, train)
    if train:
        running_mean = MOMENTUM * running_mean + (1 - MOMENTUM) * mean
        running_var = MOMENTUM * running_var + (1 - MOMENTUM) * variance
    expected = [y, mean, 1 / np.sqrt(variance + EPSILON), running_mean, running_var]
    for name, value, reference in zip(
        ["out", "mean", "inv_std", "running_mean", "running_var"], got, expected, strict=True
    ):
        assert value.dtype == dtype, name
        np.testing.assert_allclose(value, reference, **tolerance(dtype), err_msg=name)


@pytest.mark.parametrize("shape", LAYOUTS)
def test_sample_norm_forward(device, shape):
    dtype = np.dtype(np.float32)
    x = np.random.default_rng(2).uniform(-2, 3, shape)
    gamma, beta, _, _ = parameters(shape[1])
    ops = operations(device, dtype)
    statistics_shape = (shape[0], shape[2])
    mean, inv_std = (device.empty(statistics_shape, dtype) for _ in range(2))
    out = device.empty(shape, dtype)
    ops["sample_norm_forward"](
        *on(device, x, gamma, beta, dtype=dtype), EPSILON, mean, inv_std, out
    )
    np.testing.assert_allclose(
        device.to_host(out), sample_norm_reference(x, gamma, beta), **tolerance(dtype)
    )
    np.testing.assert_allclose(device.to_host(mean), x.mean(axis=1), **tolerance(dtype))


def numerical_gradients(loss, arrays, epsilon=1e-6):
    """Central differences of ``loss()`` with respect to each array (changed in place)."""
    gradients = []
    for values in arrays:
        gradient = np.zeros_like(values)
        for index in np.ndindex(values.shape):
            original = values[index]
            values[index] = original + epsilon
            plus = loss()
            values[index] = original - epsilon
            minus = loss()
            values[index] = original
            gradient[index] = (plus - minus) / (2 * epsilon)
        gradients.append(gradient)
    return gradients


@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
@pytest.mark.parametrize("shape", LAYOUTS)
def test_batch_norm_backward_matches_finite_differences(device, shape, train):
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 3, shape)
    projection = rng.standard_normal(shape)
    gamma, beta, running_mean, running_var = parameters(shape[1])
    inputs = [x, gamma, beta, running_mean, running_var]

    def loss():
        return np.sum(batch_norm_reference(*inputs, train)[0] * projection)

    expected = numerical_gradients(loss, inputs)
    _, mean, inv_std, _, _ = run_batch_forward(device, np.float64, *inputs, train)
    features = shape[1]
    grad_x = device.empty(shape, np.float64)
    weight_grads = [device.empty((features,), np.float64) for _ in range(4)]
    operations(device, np.float64)["batch_norm_backward"](
        *on(device, x, projection, gamma, mean, inv_std), train, grad_x, *weight_grads
    )
    got = [device.to_host(grad_x)] + [device.to_host(g) for g in weight_grads]
    names = ["x", "gamma", "beta", "running_mean", "running_var"]
    for name, value, reference in zip(names, got, expected, strict=True):
        np.testing.assert_allclose(value, reference, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("shape", LAYOUTS)
def test_sample_norm_backward_matches_finite_differences(device, shape):
    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 3, shape)
    projection = rng.standard_normal(shape)
    gamma, beta, _, _ = parameters(shape[1])
    inputs = [x, gamma, beta]
    expected = numerical_gradients(
        lambda: np.sum(sample_norm_reference(*inputs) * projection), inputs
    )
    ops = operations(device, np.float64)
    statistics_shape = (shape[0], shape[2])
    mean, inv_std = (device.empty(statistics_shape, np.float64) for _ in range(2))
    ops["sample_norm_forward"](
        *on(device, x, gamma, beta), EPSILON, mean, inv_std, device.empty(shape, np.float64)
    )
    grad_x = device.empty(shape, np.float64)
    grad_gamma, grad_beta = (device.empty((shape[1],), np.float64) for _ in range(2))
    ops["sample_norm_backward"](
        *on(device, x, projection, gamma), mean, inv_std, grad_x, grad_gamma, grad_beta
    )
    got = [device.to_host(a) for a in (grad_x, grad_gamma, grad_beta)]
    for name, value, reference in zip(["x", "gamma", "beta"], got, expected, strict=True):
        np.testing.assert_allclose(value, reference, rtol=1e-6, atol=1e-8, err_msg=name)


def test_large_means_keep_the_variance_in_float32(device):
    # a one-pass sum of squares loses every digit here: 1e4 ** 2 swamps a variance of 1e-2
    rng = np.random.default_rng(5)
    x = 1e4 + rng.standard_normal((16, 2, 3)) * 0.1
    gamma, beta, running_mean, running_var = parameters(2)
    ones = np.ones(2)
    out, _, inv_std, _, _ = run_batch_forward(
        device, np.float32, x, ones, 0 * ones, running_mean, running_var, True
    )
    x32 = x.astype(np.float32).astype(np.float64)  # what the kernel was given
    variance = x32.var(axis=(0, 2))
    np.testing.assert_allclose(1 / inv_std.astype(np.float64) ** 2 - EPSILON, variance, rtol=1e-3)
    normalised = (x32 - per_feature(x32.mean(axis=(0, 2)))) / np.sqrt(
        per_feature(variance) + EPSILON
    )
    # a float32 mean near 1e4 is good to half a unit in the last place (5e-4): divided by
    # the standard deviation of 0.1, that is 5e-3 in the output
    np.testing.assert_allclose(out, normalised, atol=1e-2)


def test_parallel_twin_on_the_cpu_matches_numpy():
    cpu = get_device("cpu")
    shape = (64, 160, 1)  # enough work for every core (see NORMALIZATION_COST)
    assert toolkit.use_parallel(np.prod(shape), normalization.NORMALIZATION_COST)
    x = np.random.default_rng(6).uniform(-2, 3, shape)
    gamma, beta, running_mean, running_var = parameters(shape[1])
    out, mean, _, _, _ = run_batch_forward(
        cpu, np.float32, x, gamma, beta, running_mean, running_var, True
    )
    y, expected_mean, _ = batch_norm_reference(x, gamma, beta, running_mean, running_var, True)
    np.testing.assert_allclose(out, y, **tolerance(np.float32))
    np.testing.assert_allclose(mean, expected_mean, **tolerance(np.float32))
