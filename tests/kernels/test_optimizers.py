"""Optimizer update and gradient-clipping kernels against NumPy, on every device and dtype.

Each update rule runs three steps (with a new gradient each step) and is compared
with a float64 NumPy reference of the rule written here.
"""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.testing import tolerance

SIZE = 37
STEPS = 3


def rng():
    return np.random.default_rng(7)


def sgd_reference(param, grads, lr=0.1, momentum=0.9, nesterov=False):
    velocity = np.zeros_like(param)
    for g in grads:
        velocity = momentum * velocity - lr * g
        param = param + (momentum * velocity - lr * g if nesterov else velocity)
    return param, [velocity]


def rmsprop_reference(param, grads, lr=0.01, rho=0.9, epsilon=1e-6):
    accumulator = np.zeros_like(param)
    for g in grads:
        accumulator = rho * accumulator + (1 - rho) * g**2
        param = param - lr * g / np.sqrt(accumulator + epsilon)
    return param, [accumulator]


def adagrad_reference(param, grads, lr=0.01, epsilon=1e-6):
    accumulator = np.zeros_like(param)
    for g in grads:
        accumulator = accumulator + g**2
        param = param - lr * g / np.sqrt(accumulator + epsilon)
    return param, [accumulator]


def adadelta_reference(param, grads, lr=1.0, rho=0.95, epsilon=1e-6):
    accumulator = np.zeros_like(param)
    delta_accumulator = np.zeros_like(param)
    for g in grads:
        accumulator = rho * accumulator + (1 - rho) * g**2
        update = g * np.sqrt(delta_accumulator + epsilon) / np.sqrt(accumulator + epsilon)
        param = param - lr * update
        delta_accumulator = rho * delta_accumulator + (1 - rho) * update**2
    return param, [accumulator, delta_accumulator]


def adam_reference(param, grads, lr_t=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    m = np.zeros_like(param)
    v = np.zeros_like(param)
    for g in grads:
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        param = param - lr_t * m / (np.sqrt(v) + epsilon)
    return param, [m, v]


def adamax_reference(param, grads, lr_t=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    m = np.zeros_like(param)
    u = np.zeros_like(param)
    for g in grads:
        m = beta_1 * m + (1 - beta_1) * g
        u = np.maximum(beta_2 * u, np.abs(g))
        param = param - lr_t * m / (u + epsilon)
    return param, [m, u]


# operation name, reference, number of state arrays, scalar arguments after the states
RULES = {
    "sgd": ("sgd_update", sgd_reference, 1, {"lr": 0.1, "momentum": 0.9, "nesterov": False}),
    "sgd_nesterov": (
        "sgd_update",
        sgd_reference,
        1,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    ),
    "rmsprop": ("rmsprop_update", rmsprop_reference, 1, {"lr": 0.01, "rho": 0.9, "epsilon": 1e-6}),
    "adagrad": ("adagrad_update", adagrad_reference, 1, {"lr": 0.01, "epsilon": 1e-6}),
    "adadelta": (
        "adadelta_update",
        adadelta_reference,
        2,
        {"lr": 1.0, "rho": 0.95, "epsilon": 1e-6},
    ),
    "adam": (
        "adam_update",
        adam_reference,
        2,
        {"lr_t": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},
    ),
    "adamax": (
        "adamax_update",
        adamax_reference,
        2,
        {"lr_t": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_three_update_steps_match_numpy(device, dtype, rule):
    operation_name, reference, state_count, scalars = RULES[rule]
    generator = rng()
    param = generator.standard_normal(SIZE).astype(dtype)
    grads = [generator.standard_normal(SIZE).astype(dtype) for _ in range(STEPS)]
    grads[0][0] = 0  # a zero gradient must not divide by zero anywhere

    operation = getattr(device.kernels(dtype), operation_name)
    param_on_device = device.asarray(param.copy())
    states = [device.zeros((SIZE,), dtype) for _ in range(state_count)]
    for g in grads:
        operation(param_on_device, device.asarray(g), *states, *scalars.values())

    expected_param, expected_states = reference(
        param.astype(np.float64), [g.astype(np.float64) for g in grads], **scalars
    )
    np.testing.assert_allclose(device.to_host(param_on_device), expected_param, **tolerance(dtype))
    for state, expected in zip(states, expected_states, strict=True):
        np.testing.assert_allclose(device.to_host(state), expected, **tolerance(dtype))


def test_clip_values(device, dtype):
    grad = np.array([-3.0, -0.5, 0.0, 0.25, 0.5, 7.0], dtype)
    on_device = device.asarray(grad.copy())
    device.kernels(dtype).clip_values(on_device, 0.5)
    np.testing.assert_array_equal(device.to_host(on_device), np.clip(grad, -0.5, 0.5))


def test_sum_of_squares_accumulates(device, dtype):
    generator = rng()
    first = generator.standard_normal(300).astype(dtype)  # two blocks on CUDA
    second = generator.standard_normal(5).astype(dtype)
    out = device.zeros((1,), dtype)
    kernels = device.kernels(dtype)
    kernels.sum_of_squares(device.asarray(first), out)
    kernels.sum_of_squares(device.asarray(second), out)
    expected = (first.astype(np.float64) ** 2).sum() + (second.astype(np.float64) ** 2).sum()
    np.testing.assert_allclose(device.to_host(out), [expected], **tolerance(dtype))


@pytest.mark.parametrize("clipnorm", [1.0, 100.0], ids=["scaled", "unchanged"])
def test_clipnorm_scales_every_gradient_by_the_global_norm(device, dtype, clipnorm):
    """sum_of_squares over two gradients, then scale_by_norm_limit reading it on the device."""
    generator = rng()
    grads = [generator.standard_normal(shape).astype(dtype) for shape in (7, 12)]
    kernels = device.kernels(dtype)
    on_device = [device.asarray(g.copy()) for g in grads]
    total_sq = device.zeros((1,), dtype)
    for g in on_device:
        kernels.sum_of_squares(g, total_sq)
    for g in on_device:
        kernels.scale_by_norm_limit(g, total_sq, clipnorm)

    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    factor = clipnorm / norm if norm > clipnorm else 1.0
    for g, result in zip(grads, on_device, strict=True):
        np.testing.assert_allclose(device.to_host(result), g * factor, **tolerance(dtype))
    if clipnorm < norm:
        clipped_norm = np.sqrt(
            sum((device.to_host(g).astype(np.float64) ** 2).sum() for g in on_device)
        )
        np.testing.assert_allclose(clipped_norm, clipnorm, rtol=1e-5)
