"""The dense family's passes against NumPy on every device and dtype.

``dense_activation_forward`` / ``_backward`` run as one compiled call for a one-block
layer on the CPU, and as a product followed by the activation operation otherwise
(large layers, CUDA): each path is checked.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_activations import reference_derivative, reference_forward, reference_softmax

from numlayers.activations import ACTIVATIONS
from numlayers.devices import cuda_activity, get_device
from numlayers.kernels.blas import block_count
from numlayers.testing import tolerance

ACTIVATED = [name for name in ACTIVATIONS if name != "linear"]
#: (rows, inputs, outputs): one block; several blocks on the CPU (too slow for the simulator)
SMALL = (5, 4, 3)
LARGE = (96, 256, 128)


def reference_passes(name, x, weight, bias, grad_y):
    """Forward output and every gradient, in float64."""
    x, weight, bias, grad_y = (a.astype(np.float64) for a in (x, weight, bias, grad_y))
    z = x @ weight + bias
    if name == "softmax":
        y = reference_softmax(z)
        grad_z = y * (grad_y - np.sum(grad_y * y, axis=1, keepdims=True))
    else:
        y = reference_forward(name, z).astype(np.float64)
        grad_z = grad_y * reference_derivative(name, z)
    return z, y, grad_z, grad_z @ weight.T, x.T @ grad_z, grad_z.sum(axis=0)


@pytest.mark.parametrize("shape", [SMALL, LARGE], ids=["one-block", "blocks"])
@pytest.mark.parametrize("name", ACTIVATED)
def test_dense_activation_passes_match_numpy(device, dtype, name, shape):
    if shape == LARGE and device.name == "cuda":
        pytest.skip("the large case exercises the CPU's blocks; CUDA runs the small one")
    rows, inputs, outputs = shape
    assert (block_count(rows, outputs, inputs) > 1) == (shape == LARGE)
    rng = np.random.default_rng(7)
    x, weight, grad_y = (
        rng.uniform(-1, 1, size).astype(dtype)
        for size in ((rows, inputs), (inputs, outputs), (rows, outputs))
    )
    bias = rng.uniform(-1, 1, outputs).astype(dtype)
    kernels = device.kernels(dtype)
    z, y, grad_z = (device.empty((rows, outputs), dtype) for _ in range(3))
    grad_x = device.empty((rows, inputs), dtype)
    grad_weight = device.empty((inputs, outputs), dtype)
    grad_bias = device.empty((outputs,), dtype)
    on_device = [device.asarray(a) for a in (x, weight, bias, grad_y)]
    kernels.dense_activation_forward(*on_device[:3], z, y, name)
    kernels.dense_activation_backward(
        on_device[0], on_device[1], z, y, on_device[3], grad_z, grad_x, grad_weight, grad_bias,
        True, name,
    )  # fmt: skip
    expected = reference_passes(name, x, weight, bias, grad_y)
    got = (z, y, grad_z, grad_x, grad_weight, grad_bias)
    # a sum over up to 256 terms: float32 rounding grows with it
    scale = max(1.0, inputs / 16) if dtype == np.float32 else 1.0
    tol = tolerance(dtype)
    for label, value, reference in zip(
        ("z", "y", "grad_z", "grad_x", "grad_weight", "grad_bias"), got, expected, strict=True
    ):
        np.testing.assert_allclose(
            device.to_host(value),
            reference,
            rtol=tol["rtol"] * scale,
            atol=tol["atol"] * scale,
            err_msg=label,
        )


def test_dense_activation_backward_can_skip_the_input_gradient(device):
    """The first layer of a model asks for no input gradient: it is left untouched."""
    dtype = np.dtype(np.float64)
    kernels = device.kernels(dtype)
    rng = np.random.default_rng(3)
    x, weight, grad_y = (rng.normal(size=s) for s in ((4, 3), (3, 2), (4, 2)))
    bias = np.zeros(2)
    z, y, grad_z = (device.empty((4, 2), dtype) for _ in range(3))
    grad_weight, grad_bias = device.empty((3, 2), dtype), device.empty((2,), dtype)
    no_grad_x = device.empty((0, 0), dtype)
    x_d, w_d = device.asarray(x), device.asarray(weight)
    kernels.dense_activation_forward(x_d, w_d, device.asarray(bias), z, y, "tanh")
    kernels.dense_activation_backward(
        x_d, w_d, z, y, device.asarray(grad_y), grad_z, no_grad_x, grad_weight, grad_bias,
        False, "tanh",
    )  # fmt: skip
    grad_z_expected = grad_y * (1 - np.tanh(x @ weight) ** 2)
    np.testing.assert_allclose(device.to_host(grad_weight), x.T @ grad_z_expected, rtol=1e-10)


@pytest.mark.parametrize(("name", "launches"), [("relu", 1), ("softmax", 2)])
def test_a_cuda_forward_pass_activates_in_the_product(name, launches):
    """An elementwise activation is the product's epilogue: one launch per forward pass;
    softmax (whole rows) follows the product as a kernel of its own."""
    device, dtype = get_device("cuda"), np.dtype(np.float32)
    kernels = device.kernels(dtype)
    rng = np.random.default_rng(5)
    x, weight, bias = (rng.uniform(-1, 1, s).astype(dtype) for s in ((5, 4), (4, 3), (3,)))
    z, y = device.empty((5, 3), dtype), device.empty((5, 3), dtype)
    operands = [device.asarray(a) for a in (x, weight, bias)]
    kernels.dense_activation_forward(*operands, z, y, name)  # compiles
    with cuda_activity() as forward:
        kernels.dense_activation_forward(*operands, z, y, name)
    assert forward.launches == launches
    expected = reference_passes(name, x, weight, bias, np.zeros((5, 3), dtype))
    np.testing.assert_allclose(device.to_host(z), expected[0], **tolerance(dtype))
    np.testing.assert_allclose(device.to_host(y), expected[1], **tolerance(dtype))
