"""Activation kernels against NumPy / SciPy references on every device and dtype."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import expit

from numlayers.kernels.activations import ELEMENTWISE_ACTIVATIONS, ELEMENTWISE_FUNCTIONS
from numlayers.kernels.toolkit import PARALLEL_MIN_WORK as PARALLEL_MIN_SIZE
from numlayers.testing import tolerance

RNG = np.random.default_rng(2024)


def reference_forward(name, x):
    """The activation in float64 (or longdouble), by formulas independent of the kernels'."""
    x = x.astype(np.longdouble) if x.dtype == np.float64 else x.astype(np.float64)
    if name == "relu":
        return np.maximum(x, 0)
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return expit(x)
    if name == "hard_sigmoid":
        return np.clip(0.2 * x + 0.5, 0, 1)
    if name == "softplus":
        return np.logaddexp(0, x)
    if name == "leaky_relu":  # at its default alpha, and the others at theirs
        return np.where(x > 0, x, 0.3 * x)
    if name == "elu":
        return np.where(x > 0, x, np.expm1(x))
    if name == "thresholded_linear":
        return x * (np.abs(x) > 1)
    if name == "thresholded_relu":
        return x * (x > 1)
    if name == "clipped_leaky_relu":  # no slope, no bound: relu
        return np.maximum(x, 0)
    assert name == "linear"
    return x


def reference_derivative(name, x):
    x = x.astype(np.float64)
    if name == "relu":
        return (x > 0).astype(np.float64)
    if name == "tanh":
        return 1 - np.tanh(x) ** 2
    if name == "sigmoid":
        return expit(x) * (1 - expit(x))
    if name == "hard_sigmoid":
        return np.where(np.abs(x) < 2.5, 0.2, 0.0)
    if name == "softplus":
        return expit(x)
    if name == "leaky_relu":
        return np.where(x > 0, 1.0, 0.3)
    if name == "elu":
        return np.where(x > 0, 1.0, np.exp(x))
    if name == "thresholded_linear":
        return (np.abs(x) > 1).astype(np.float64)
    if name == "thresholded_relu":
        return (x > 1).astype(np.float64)
    if name == "clipped_leaky_relu":
        return (x > 0).astype(np.float64)
    assert name == "linear"
    return np.ones_like(x)


def reference_softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def forward(device, dtype, name, x):
    out = device.empty(x.shape, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow anywhere
        getattr(device.kernels(dtype), f"{name}_forward")(device.asarray(x), out)
    return device.to_host(out)


def backward(device, dtype, name, x, y, grad_out):
    grad_x = device.empty(x.shape, dtype)
    getattr(device.kernels(dtype), f"{name}_backward")(
        device.asarray(x), device.asarray(y), device.asarray(grad_out), grad_x
    )
    return device.to_host(grad_x)


def softmax(device, dtype, x):
    out = device.empty(x.shape, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        device.kernels(dtype).softmax_forward(device.asarray(x), out)
    return device.to_host(out)


@pytest.mark.parametrize("name", ELEMENTWISE_ACTIVATIONS)
def test_forward_matches_reference(device, dtype, name):
    # 3-D: the operations take any shape as flat; 78 elements: on CUDA (simulated), the
    # threads' loop takes 4 elements at a time, then the 14 left one at a time
    x = (3 * RNG.standard_normal((2, 3, 13))).astype(dtype)
    x[0, 0, :3] = [0.0, 1e-3, -1e-3]
    np.testing.assert_allclose(
        forward(device, dtype, name, x), reference_forward(name, x), **tolerance(dtype)
    )


@pytest.mark.parametrize("name", ELEMENTWISE_ACTIVATIONS)
def test_backward_matches_analytic_derivative(device, dtype, name):
    x = (3 * RNG.standard_normal((5, 15))).astype(dtype)  # as above: 4 at a time, then 11
    y = reference_forward(name, x).astype(dtype)
    grad_out = RNG.standard_normal((5, 15)).astype(dtype)
    np.testing.assert_allclose(
        backward(device, dtype, name, x, y, grad_out),
        grad_out * reference_derivative(name, x),
        **tolerance(dtype),
    )


def test_saturating_activations_at_extremes_are_finite_and_exact(device, dtype):
    x = np.array([-1000, -100, -30, 30, 100, 1000], dtype)
    sigmoid = forward(device, dtype, "sigmoid", x)
    softplus = forward(device, dtype, "softplus", x)
    tanh = forward(device, dtype, "tanh", x)
    assert np.all(np.isfinite(sigmoid)) and np.all(np.isfinite(softplus))
    assert sigmoid[0] == 0 and sigmoid[-1] == 1
    assert softplus[0] == 0 and softplus[-1] == 1000
    np.testing.assert_array_equal(tanh, np.sign(x))
    # relative to the value itself, however tiny: softplus(x) -> exp(x) far below 0
    close = {"rtol": tolerance(dtype)["rtol"], "atol": np.finfo(dtype).tiny}
    np.testing.assert_allclose(sigmoid, reference_forward("sigmoid", x), **close)
    np.testing.assert_allclose(softplus, reference_forward("softplus", x), **close)

    # the derivatives saturate to exact zeros and ones too
    ends = x[[0, -1]]
    ones = np.ones_like(ends)
    np.testing.assert_array_equal(
        backward(device, dtype, "softplus", ends, softplus[[0, -1]], ones), [0, 1]
    )
    np.testing.assert_array_equal(
        backward(device, dtype, "sigmoid", ends, sigmoid[[0, -1]], ones), [0, 0]
    )
    np.testing.assert_array_equal(
        backward(device, dtype, "tanh", ends, tanh[[0, -1]], ones), [0, 0]
    )


def test_hard_sigmoid_at_and_beyond_its_corners(device, dtype):
    x = np.array([-3.0, -2.5, -2.4, 0.0, 2.4, 2.5, 3.0], dtype)
    y = forward(device, dtype, "hard_sigmoid", x)
    np.testing.assert_allclose(y, [0, 0, 0.02, 0.5, 0.98, 1, 1], **tolerance(dtype))
    assert y[0] == y[1] == 0 and y[-2] == y[-1] == 1
    grad = backward(device, dtype, "hard_sigmoid", x, y, np.ones_like(x))
    np.testing.assert_allclose(grad, [0, 0, 0.2, 0.2, 0.2, 0, 0], **tolerance(dtype))


def test_relu_derivative_is_zero_at_and_below_zero(device, dtype):
    x = np.array([-2.0, -1e-3, 0.0, 1e-3, 2.0], dtype)
    grad_out = np.array([3.0, 4.0, 5.0, 6.0, 7.0], dtype)
    y = forward(device, dtype, "relu", x)
    np.testing.assert_array_equal(y, [0, 0, 0, x[3], 2])
    np.testing.assert_array_equal(backward(device, dtype, "relu", x, y, grad_out), [0, 0, 0, 6, 7])


def test_linear_copies_values_and_gradients(device, dtype):
    x = RNG.standard_normal((3, 4)).astype(dtype)
    grad_out = RNG.standard_normal((3, 4)).astype(dtype)
    np.testing.assert_array_equal(forward(device, dtype, "linear", x), x)
    np.testing.assert_array_equal(backward(device, dtype, "linear", x, x, grad_out), grad_out)


@pytest.mark.parametrize("columns", [3, 300])  # 300 crosses a CUDA block of 256 threads
def test_softmax_forward_and_backward(device, dtype, columns):
    x = (4 * RNG.standard_normal((2, columns))).astype(dtype)
    x[0, -1] = 1000  # a huge maximum at the very end: missing it would overflow exp
    y = softmax(device, dtype, x)
    np.testing.assert_allclose(y, reference_softmax(x), **tolerance(dtype))
    np.testing.assert_allclose(y.sum(axis=1), 1, **tolerance(dtype))

    grad_out = RNG.standard_normal((2, columns)).astype(dtype)
    grad_x = device.empty(x.shape, dtype)
    device.kernels(dtype).softmax_backward(device.asarray(y), device.asarray(grad_out), grad_x)
    y64 = y.astype(np.float64)
    expected = y64 * (grad_out - (grad_out * y64).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(device.to_host(grad_x), expected, **tolerance(dtype))


def test_softmax_of_huge_values_is_stable(device, dtype):
    x = np.array([[1000, -1000, 0], [1000, 1000, -1000], [-1000, -1000, -1000]], dtype)
    y = softmax(device, dtype, x)
    expected = np.array([[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]], dtype)
    np.testing.assert_array_equal(y, expected)
    two = softmax(device, dtype, np.array([[1000, -1000], [-1000, 1000]], dtype))
    np.testing.assert_array_equal(two, [[1, 0], [0, 1]])


def test_cpu_exponentials_are_accurate_over_their_whole_range(dtype):
    """The CPU's own vectorised exp, expm1 and log1p, near the rounding of the dtype."""
    from numlayers.devices import get_device

    device = get_device("cpu")
    limit = 90 if dtype == np.float32 else 720  # past the underflow threshold
    x = np.concatenate(
        [np.linspace(-limit, limit, 20001), np.geomspace(1e-20, 3, 2000) * [[1], [-1]]], axis=None
    ).astype(dtype)
    for name in ("tanh", "sigmoid", "softplus"):
        # a few units in the last place; far below 0, anything under the smallest normal
        np.testing.assert_allclose(
            forward(device, dtype, name, x),
            reference_forward(name, x),
            rtol=4 * np.finfo(dtype).eps,
            atol=np.finfo(dtype).tiny,
        )


#: the functions whose parallel loops are checked: every function's loop is the same
#: generated template, so these cover each kind of formula (vectorised exponentials,
#: branches, a run-time parameter) without compiling a parallel twin of every one
PARALLEL_CHECKED = ("relu", "tanh", "sigmoid", "hard_sigmoid", "softplus", "linear", "leaky_relu")


def test_cpu_parallel_loops_match_reference(dtype):
    """Arrays past PARALLEL_MIN_SIZE take the two-core loops (too big for the simulator)."""
    from numlayers.devices import get_device

    device = get_device("cpu")
    kernels = device.kernels(dtype)
    x = (3 * RNG.standard_normal((64, PARALLEL_MIN_SIZE // 64))).astype(dtype)
    grad_out = RNG.standard_normal(x.shape).astype(dtype)
    for name in PARALLEL_CHECKED:
        y = forward(device, dtype, name, x)
        np.testing.assert_allclose(y, reference_forward(name, x), **tolerance(dtype))
        grad_x = np.empty_like(x)
        getattr(kernels, f"{name}_backward")(x, y, grad_out, grad_x)
        np.testing.assert_allclose(
            grad_x, grad_out * reference_derivative(name, x), **tolerance(dtype)
        )
    y = softmax(device, dtype, x)
    np.testing.assert_allclose(y, reference_softmax(x), **tolerance(dtype))
    grad_x = np.empty_like(x)
    kernels.softmax_backward(y, grad_out, grad_x)
    y64 = y.astype(np.float64)
    expected = y64 * (grad_out - (grad_out * y64).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(grad_x, expected, **tolerance(dtype))


def test_leaky_relu_takes_its_slope_at_run_time(device, dtype):
    kernels = device.kernels(dtype)
    x = np.array([-2.0, -0.5, 0.0, 1.5], dtype)
    out = device.empty(x.shape, dtype)
    kernels.leaky_relu_forward(device.asarray(x), out, 0.1)
    np.testing.assert_allclose(device.to_host(out), [-0.2, -0.05, 0.0, 1.5], **tolerance(dtype))
    grad_x = device.empty(x.shape, dtype)
    kernels.leaky_relu_backward(
        device.asarray(x), out, device.asarray(np.ones_like(x)), grad_x, 0.1
    )
    np.testing.assert_allclose(device.to_host(grad_x), [0.1, 0.1, 0.1, 1.0], **tolerance(dtype))
    with pytest.raises(TypeError, match="leaky_relu takes 1 parameter"):
        kernels.leaky_relu_forward(device.asarray(x), out, 0.1, 0.2)


@pytest.mark.parametrize(
    ("name", "parameters", "expected_y", "expected_slope"),
    [
        (
            "elu",
            (0.5,),
            [0.5 * np.expm1(-2.0), 0.5 * np.expm1(-0.5), 0.0, 1.5],
            [0.5 * np.exp(-2.0), 0.5 * np.exp(-0.5), 0.5, 1.0],
        ),
        ("thresholded_linear", (0.5,), [-2.0, 0.0, 0.0, 1.5], [1.0, 0.0, 0.0, 1.0]),
        ("thresholded_relu", (0.5,), [0.0, 0.0, 0.0, 1.5], [0.0, 0.0, 0.0, 1.0]),
        ("clipped_leaky_relu", (0.1, 1.0), [-0.2, -0.05, 0.0, 1.0], [0.1, 0.1, 0.1, 0.0]),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_advanced_activations_take_their_parameters_at_run_time(
    device, dtype, name, parameters, expected_y, expected_slope
):
    kernels = device.kernels(dtype)
    x = np.array([-2.0, -0.5, 0.0, 1.5], dtype)
    out = device.empty(x.shape, dtype)
    getattr(kernels, f"{name}_forward")(device.asarray(x), out, *parameters)
    np.testing.assert_allclose(device.to_host(out), expected_y, **tolerance(dtype))
    grad_x = device.empty(x.shape, dtype)
    grad_out = np.full_like(x, 2.0)
    getattr(kernels, f"{name}_backward")(
        device.asarray(x), out, device.asarray(grad_out), grad_x, *parameters
    )
    np.testing.assert_allclose(
        device.to_host(grad_x), 2.0 * np.array(expected_slope), **tolerance(dtype)
    )


def test_elu_and_clipped_relu_keep_nan_and_never_overflow(device, dtype):
    x = np.array([np.nan, -1000.0, 1000.0], dtype)
    elu = forward(device, dtype, "elu", x)  # no RuntimeWarning: exp only of non-positives
    assert np.isnan(elu[0]) and elu[1] == -1.0 and elu[2] == 1000.0
    out = device.empty(x.shape, dtype)
    device.kernels(dtype).clipped_leaky_relu_forward(device.asarray(x), out, 0.5, 6.0)
    clipped = device.to_host(out)
    assert np.isnan(clipped[0]) and clipped[1] == -500.0 and clipped[2] == 6.0


@pytest.mark.parametrize("name", [*ELEMENTWISE_FUNCTIONS, "softmax"])
def test_every_activation_propagates_nan_forward_and_backward(device, dtype, name):
    # a NaN sample must reach the loss (and TerminateOnNaN) as NaN, never as a finite value,
    # and a NaN gradient must reach the weights' gradients (multiplied, not selected away)
    x = np.array([[np.nan, 0.5, -2.0]], dtype)
    finite = np.array([[0.25, 0.5, -2.0]], dtype)
    nan_gradient = np.array([[np.nan, 1.0, 1.0]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y = softmax(device, dtype, x) if name == "softmax" else forward(device, dtype, name, x)
    if name == "softmax":
        assert np.isnan(y).all()  # the row's sum is NaN
        y = softmax(device, dtype, finite)
        grad_x = device.empty(x.shape, dtype)
        device.kernels(dtype).softmax_backward(
            device.asarray(y), device.asarray(nan_gradient), grad_x
        )
        assert np.isnan(device.to_host(grad_x)).all()
        return
    assert np.isnan(y[0, 0]) and np.isfinite(y[0, 1:]).all()
    y = forward(device, dtype, name, finite)
    grad = backward(device, dtype, name, finite, y, nan_gradient)
    assert np.isnan(grad[0, 0]) and np.isfinite(grad[0, 1:]).all()
