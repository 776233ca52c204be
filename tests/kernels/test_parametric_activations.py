"""Parametric activation kernels (per-feature parameters) against NumPy on every device
and dtype: forward against references written here, backward (input and parameter
gradients) against float64 central differences of those references."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import get_device
from numlayers.kernels.parametric_activations import FEATURE_ACTIVATIONS
from numlayers.kernels.toolkit import PARALLEL_MIN_WORK
from numlayers.testing import tolerance


def reference_srelu(x, t_left, a_left, t_right, a_right):
    """Keras 0.3.3's SReLU.call in NumPy."""
    t_right_actual = t_left + np.abs(t_right)
    left_and_center = t_left + np.minimum(
        np.where(x > t_left, x - t_left, a_left * (x - t_left)), t_right_actual - t_left
    )
    return left_and_center + np.maximum(x - t_right_actual, 0) * a_right


REFERENCES = {
    "prelu": lambda x, alpha: np.where(x > 0, x, alpha * x),
    "parametric_softplus": lambda x, alpha, beta: alpha * np.logaddexp(0, beta * x),
    "srelu": reference_srelu,
}

#: the range of each parameter's sample values (SReLU: negative left slopes, so that the
#: left piece is clipped at the right threshold too, and both signs of t_right)
PARAMETER_RANGES = {
    "prelu": [(-0.5, 0.8)],
    "parametric_softplus": [(0.2, 2.0), (0.5, 5.0)],
    "srelu": [(-0.5, 0.5), (-1.0, 1.0), (-1.5, 1.5), (0.5, 2.0)],
}
NAMES = list(FEATURE_ACTIVATIONS)


def sample(name, shape, seed=0):
    """``x`` of ``shape`` in [-2, 2] and the parameters for its features, float64."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, shape)
    parameters = [rng.uniform(low, high, shape[1:]) for low, high in PARAMETER_RANGES[name]]
    return x, parameters


def run_forward(device, dtype, name, x, parameters):
    kernels = device.kernels(dtype)
    out = device.empty(x.shape, dtype)
    getattr(kernels, f"{name}_forward")(
        device.asarray(x, dtype), [device.asarray(p, dtype) for p in parameters], out
    )
    return device.to_host(out)


def run_backward(device, dtype, name, x, parameters, grad_out, need_grad_x=True):
    """``(grad_x, grad_parameters)``; ``grad_x`` starts as NaN (never written unless needed)."""
    kernels = device.kernels(dtype)
    grad_x = device.asarray(np.full(x.shape, np.nan), dtype)
    # stale values in the parameter gradients: the backward overwrites them
    grad_parameters = [device.asarray(np.full(p.shape, 7.0), dtype) for p in parameters]
    getattr(kernels, f"{name}_backward")(
        device.asarray(x, dtype),
        [device.asarray(p, dtype) for p in parameters],
        device.asarray(grad_out, dtype),
        grad_x,
        grad_parameters,
        need_grad_x,
    )
    return device.to_host(grad_x), [device.to_host(g) for g in grad_parameters]


def central_differences(function, arrays, index, projection, epsilon=1e-6):
    """d sum(function(*arrays) * projection) / d arrays[index], elementwise."""
    values = arrays[index]
    gradient = np.zeros_like(values)
    for position in np.ndindex(values.shape):
        original = values[position]
        values[position] = original + epsilon
        plus = np.sum(function(*arrays) * projection)
        values[position] = original - epsilon
        minus = np.sum(function(*arrays) * projection)
        values[position] = original
        gradient[position] = (plus - minus) / (2 * epsilon)
    return gradient


@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_numpy_reference(device, dtype, name):
    # 3-D: the features are every axis after the batch
    x, parameters = sample(name, (3, 2, 3))
    x, parameters = x.astype(dtype), [p.astype(dtype) for p in parameters]
    expected = REFERENCES[name](x.astype(np.float64), *(p.astype(np.float64) for p in parameters))
    np.testing.assert_allclose(
        run_forward(device, dtype, name, x, parameters), expected, **tolerance(dtype)
    )


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_float64_finite_differences(device, dtype, name):
    x, parameters = sample(name, (3, 4), seed=1)
    x, parameters = x.astype(dtype).astype(np.float64), [p.astype(dtype) for p in parameters]
    parameters = [p.astype(np.float64) for p in parameters]
    grad_out = np.random.default_rng(2).standard_normal(x.shape)
    grad_x, grad_parameters = run_backward(device, dtype, name, x, parameters, grad_out)
    arrays = [x, *parameters]
    for index, got in enumerate([grad_x, *grad_parameters]):
        expected = central_differences(REFERENCES[name], arrays, index, grad_out)
        # float32 sums over the batch: a few roundings of the largest term
        np.testing.assert_allclose(
            got, expected, rtol=1e-4 if dtype == np.float32 else 1e-6, atol=1e-5
        )


def test_without_input_gradient_only_the_parameter_gradients_are_written(device):
    x, parameters = sample("srelu", (3, 4), seed=3)
    grad_out = np.ones_like(x)
    grad_x, grad_parameters = run_backward(
        device, np.float64, "srelu", x, parameters, grad_out, need_grad_x=False
    )
    assert np.isnan(grad_x).all()
    _, expected = run_backward(device, np.float64, "srelu", x, parameters, grad_out)
    for got, want in zip(grad_parameters, expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name):
    x, parameters = sample(name, (5, 3), seed=4)
    grad_out = np.random.default_rng(5).standard_normal(x.shape)
    results = {}
    for device_name in ("cpu", "cuda"):
        device = get_device(device_name)
        y = run_forward(device, np.float32, name, x, parameters)
        grad_x, grad_parameters = run_backward(device, np.float32, name, x, parameters, grad_out)
        results[device_name] = [y, grad_x, *grad_parameters]
    for got, expected in zip(results["cuda"], results["cpu"], strict=True):
        np.testing.assert_allclose(got, expected, **tolerance(np.float32))


def test_cpu_parallel_blocks_match_reference():
    """Past PARALLEL_MIN_WORK the CPU spreads the features' blocks over the cores; 600
    features make blocks of 256, 256 and a partial 88."""
    device = get_device("cpu")
    rows = PARALLEL_MIN_WORK // 600 + 1
    x, parameters = sample("prelu", (rows, 600), seed=6)
    grad_out = np.random.default_rng(7).standard_normal(x.shape)
    y = run_forward(device, np.float64, "prelu", x, parameters)
    np.testing.assert_allclose(y, REFERENCES["prelu"](x, *parameters), **tolerance(np.float64))
    grad_x, (grad_alpha,) = run_backward(device, np.float64, "prelu", x, parameters, grad_out)
    np.testing.assert_allclose(grad_x, grad_out * np.where(x > 0, 1, parameters[0]), rtol=1e-12)
    np.testing.assert_allclose(grad_alpha, (grad_out * np.minimum(x, 0)).sum(axis=0), rtol=1e-10)


def test_a_wrong_number_of_parameter_arrays_is_refused(device):
    x, (alpha,) = sample("prelu", (2, 3))
    kernels = device.kernels(np.float64)
    out = device.empty(x.shape, np.float64)
    with pytest.raises(TypeError, match=r"prelu takes 1 parameter arrays \['alpha'\], received 2"):
        kernels.prelu_forward(device.asarray(x), [device.asarray(alpha)] * 2, out)
