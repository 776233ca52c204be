"""Penalty, penalty-gradient and constraint kernels against NumPy, on every device and dtype."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.testing import tolerance

EPS = 1e-7


def weight_with_zeros(dtype):
    """A (4, 6) weight with a zero element and an all-zero column."""
    weight = np.random.default_rng(3).standard_normal((4, 6))
    weight[1, 2] = 0.0
    weight[:, 4] = 0.0
    return weight.astype(dtype)


def test_l1l2_penalty_accumulates(device, dtype):
    weight = weight_with_zeros(dtype)
    out = device.asarray(np.array([1.5], dtype))  # what earlier penalties added
    device.kernels(dtype).l1l2_penalty(device.asarray(weight), 0.01, 0.02, out)
    w = weight.astype(np.float64)
    expected = 1.5 + 0.01 * np.abs(w).sum() + 0.02 * (w**2).sum()
    np.testing.assert_allclose(device.to_host(out), [expected], **tolerance(dtype))


@pytest.mark.parametrize("operation", ["l1l2_gradient", "activity_l1l2_gradient"])
def test_l1l2_gradient_adds_to_grad(device, dtype, operation):
    weight = weight_with_zeros(dtype)
    grad = np.random.default_rng(4).standard_normal(weight.shape).astype(dtype)
    on_device = device.asarray(grad.copy())
    getattr(device.kernels(dtype), operation)(device.asarray(weight), 0.01, 0.02, on_device)
    w = weight.astype(np.float64)
    expected = grad + 0.01 * np.sign(w) + 2 * 0.02 * w  # sign(0) = 0
    np.testing.assert_allclose(device.to_host(on_device), expected, **tolerance(dtype))


def column_norms(weight):
    return np.sqrt((weight.astype(np.float64) ** 2).sum(axis=0))


def test_maxnorm_constraint(device, dtype):
    weight = weight_with_zeros(dtype)
    weight[:, 0] *= 10  # surely above the limit
    weight[:, 1] *= 0.01  # surely below it
    on_device = device.asarray(weight.copy())
    device.kernels(dtype).maxnorm_constraint(on_device, 1.5)
    norms = column_norms(weight)
    expected = weight * (np.clip(norms, 0, 1.5) / (EPS + norms))
    result = device.to_host(on_device)
    np.testing.assert_allclose(result, expected, **tolerance(dtype))
    assert column_norms(result).max() <= 1.5 * (1 + 1e-6)
    np.testing.assert_array_equal(result[:, 4], 0)  # a zero column stays zero


def test_unitnorm_constraint_normalises_rows(device, dtype):
    weight = weight_with_zeros(dtype).T.copy()  # a zero row
    on_device = device.asarray(weight.copy())
    device.kernels(dtype).unitnorm_constraint(on_device)
    row_norms = np.sqrt((weight.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    result = device.to_host(on_device)
    np.testing.assert_allclose(result, weight / (EPS + row_norms), **tolerance(dtype))
    norms = np.sqrt((result.astype(np.float64) ** 2).sum(axis=1))
    np.testing.assert_allclose(norms[[0, 1, 2, 3, 5]], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(result[4], 0)


def test_maxnorm_rows_constraint(device, dtype):
    weight = weight_with_zeros(dtype).T.copy()  # a zero row
    weight[0] *= 10  # surely above the limit
    on_device = device.asarray(weight.copy())
    device.kernels(dtype).maxnorm_rows_constraint(on_device, 1.5)
    norms = np.sqrt((weight.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    expected = weight * (np.clip(norms, 0, 1.5) / (EPS + norms))
    result = device.to_host(on_device)
    np.testing.assert_allclose(result, expected, **tolerance(dtype))
    np.testing.assert_array_equal(result[4], 0)


def test_unitnorm_columns_constraint(device, dtype):
    weight = weight_with_zeros(dtype)  # a zero column
    on_device = device.asarray(weight.copy())
    device.kernels(dtype).unitnorm_columns_constraint(on_device)
    result = device.to_host(on_device)
    np.testing.assert_allclose(result, weight / (EPS + column_norms(weight)), **tolerance(dtype))
    np.testing.assert_allclose(column_norms(result)[[0, 1, 2, 3, 5]], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(result[:, 4], 0)


def test_nonneg_constraint(device, dtype):
    weight = weight_with_zeros(dtype)
    on_device = device.asarray(weight.copy())
    device.kernels(dtype).nonneg_constraint(on_device)
    np.testing.assert_array_equal(device.to_host(on_device), np.maximum(weight, 0))
