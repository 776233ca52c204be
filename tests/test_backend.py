"""``numlayers.backend``: Keras 0.3's backend names, on NumPy arrays and inside traced Lambdas."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers import backend as K
from numlayers.layers import Lambda


def sample(shape, seed=0):
    x = np.random.default_rng(seed).uniform(-1, 1, shape)
    return np.where(np.abs(x) < 0.05, 0.05 + np.abs(x), x)


#: each backend function applied to a (batch, 3, 4) array, with its NumPy reference
CASES = {
    "sum": (lambda x: K.sum(x, axis=-1), lambda x: x.sum(-1)),
    "mean": (lambda x: K.mean(x, axis=1, keepdims=True), lambda x: x.mean(1, keepdims=True)),
    "max": (lambda x: K.max(x, axis=2), lambda x: x.max(2)),
    "min": (lambda x: K.min(x, axis=-1, keepdims=True), lambda x: x.min(-1, keepdims=True)),
    "prod": (lambda x: K.prod(x, axis=1), lambda x: x.prod(1)),
    "std": (lambda x: K.std(x, axis=-1), lambda x: x.std(-1)),
    "square-sqrt": (lambda x: K.sqrt(K.square(x) + 1.0), lambda x: np.sqrt(x * x + 1.0)),
    "sqrt-clips-at-zero": (lambda x: K.sqrt(x), lambda x: np.sqrt(np.maximum(x, 0.0))),
    "abs-exp-log": (lambda x: K.log(K.exp(x) + K.abs(x)), lambda x: np.log(np.exp(x) + abs(x))),
    "pow": (lambda x: K.pow(K.abs(x) + 1.0, 1.5), lambda x: (abs(x) + 1.0) ** 1.5),
    "clip": (lambda x: K.clip(x, 0.5, -1.0), lambda x: np.clip(x, 0.5, 0.5)),
    "maximum-minimum": (
        lambda x: K.maximum(x, 0.2) + K.minimum(x, -0.2),
        lambda x: np.maximum(x, 0.2) + np.minimum(x, -0.2),
    ),
    "dot": (lambda x: K.dot(x, np.ones((4, 2))), lambda x: x @ np.ones((4, 2))),
    "batch_dot": (
        lambda x: K.batch_dot(x, x, axes=[[2], [2]]),
        lambda x: np.einsum("bik,bjk->bij", x, x),
    ),
    "concatenate": (lambda x: K.concatenate([x, 2 * x]), lambda x: np.concatenate([x, 2 * x], -1)),
    "reshape": (lambda x: K.reshape(x, (x.shape[0], 12)), lambda x: x.reshape(len(x), 12)),
    "permute_dimensions": (
        lambda x: K.permute_dimensions(x, (0, 2, 1)),
        lambda x: x.transpose(0, 2, 1),
    ),
    "repeat": (lambda x: K.repeat(x[:, 0], 2), lambda x: np.stack([x[:, 0]] * 2, 1)),
    "expand_dims-squeeze": (
        lambda x: K.squeeze(K.expand_dims(x, 1), 1),
        lambda x: x,
    ),
    "softmax": (
        lambda x: K.softmax(x),
        lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True),
    ),
    "relu": (
        lambda x: K.relu(x, alpha=0.1, max_value=0.5),
        lambda x: np.minimum(np.where(x > 0, x, 0.1 * x), 0.5),
    ),
    "sigmoid-hard_sigmoid-tanh": (
        lambda x: K.sigmoid(x) + K.hard_sigmoid(3 * x) + K.tanh(x),
        lambda x: 1 / (1 + np.exp(-x)) + np.clip(0.6 * x + 0.5, 0, 1) + np.tanh(x),
    ),
    "l2_normalize": (
        lambda x: K.l2_normalize(x, axis=-1),
        lambda x: x / np.sqrt((x * x).sum(-1, keepdims=True)),
    ),
    "softplus": (lambda x: K.softplus(4 * x), lambda x: np.log(1 + np.exp(4 * x))),
    "crossentropies": (
        lambda x: (
            K.categorical_crossentropy(K.softmax(x), K.softmax(2 * x))
            + K.categorical_crossentropy(x, K.softmax(2 * x), from_logits=True)
            + K.sum(K.binary_crossentropy(K.sigmoid(x), 0.3), axis=-1)
            + K.sum(K.binary_crossentropy(x, 0.7, from_logits=True), axis=-1)
        ),
        lambda x: (
            -2 * (softmax(2 * x) * np.log(softmax(x))).sum(-1)
            - (0.3 * np.log(1 / (1 + np.exp(-x))) + 0.7 * np.log(1 - 1 / (1 + np.exp(-x)))).sum(-1)
            - (0.7 * np.log(1 / (1 + np.exp(-x))) + 0.3 * np.log(1 - 1 / (1 + np.exp(-x)))).sum(-1)
        ),
    ),
    "comparisons-switch-cast": (
        lambda x: (
            K.cast(K.equal(x, K.max(x, axis=-1, keepdims=True)), "float64") * x
            + K.switch(x > 0, x, K.zeros_like(x))
            + K.ones_like(x)
            + K.cast(K.not_equal(x, x), "float64")
        ),
        lambda x: (x == x.max(-1, keepdims=True)) * x + np.maximum(x, 0) + 1.0,
    ),
    "sign-round": (
        lambda x: K.sign(x) * K.round(3 * x) * x,
        lambda x: np.sign(x) * np.sign(x) * np.floor(np.abs(3 * x) + 0.5) * x,
    ),
    "repeat_elements-tile": (
        lambda x: K.repeat_elements(x, 2, axis=1) * K.tile(x, (1, 2, 1)),
        lambda x: np.repeat(x, 2, axis=1) * np.concatenate([x, x], axis=1),
    ),
    "batch_flatten": (lambda x: K.batch_flatten(x), lambda x: x.reshape(len(x), 12)),
}


def softmax(x):
    return np.exp(x) / np.exp(x).sum(-1, keepdims=True)


@pytest.mark.parametrize("name", list(CASES))
def test_backend_function_on_numpy_arrays(name):
    function, reference = CASES[name]
    x = sample((2, 3, 4))
    np.testing.assert_allclose(function(x), reference(x), rtol=1e-12, atol=1e-12)


def every_function(x):
    """Every case's result, flattened per sample and side by side (one traced program)."""
    return np.concatenate(
        [np.reshape(function(x), (x.shape[0], -1)) for function, _ in CASES.values()], axis=1
    )


@pytest.mark.filterwarnings("ignore:divide by zero")  # sqrt's gradient at 0, not chosen
def test_backend_functions_trace_with_their_gradients():
    # on CUDA (the simulator without a GPU), which compiles nothing: the CPU runs the same
    # operations in tests/test_tracing.py
    x = sample((2, 3, 4))
    layer = Lambda(every_function, input_shape=(3, 4), dtype="float64").to("cuda")
    assert layer.traced_call.failure is None, layer.traced_call.failure
    device = layer.device
    y = device.to_host(layer.forward(device.asarray(x), train=True))
    np.testing.assert_allclose(y, every_function(x), rtol=1e-12, atol=1e-12)
    projection = np.random.default_rng(1).standard_normal(y.shape)
    grad = device.to_host(layer.backward(device.asarray(projection)))
    expected = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += 1e-6
        down[index] -= 1e-6
        expected[index] = np.sum((every_function(up) - every_function(down)) * projection) / 2e-6
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)


def test_backend_functions_of_numpy_arrays_only():
    """What has no gradient (indices, tests) or moves the batch axis: NumPy arrays."""
    x = sample((2, 3, 4))
    assert K.shape(x) == (2, 3, 4) and K.ndim(x) == 3
    np.testing.assert_array_equal(K.transpose(x), x.T)
    np.testing.assert_array_equal(K.flatten(x), x.ravel())
    np.testing.assert_array_equal(K.argmax(x), x.argmax(-1))
    np.testing.assert_array_equal(K.argmin(x, axis=1), x.argmin(1))
    np.testing.assert_array_equal(K.any(x > 0.9, axis=-1), (x > 0.9).any(-1))
    np.testing.assert_array_equal(K.gather(x, [1, 0]), x[[1, 0]])
    np.testing.assert_array_equal(K.round(np.array([-1.5, -0.5, 0.5, 2.5])), [-2, -1, 1, 3])
    np.testing.assert_array_equal(K.zeros_like(x), np.zeros_like(x))


def test_floatx_and_epsilon_settings_reach_models_and_functions(monkeypatch):
    from numlayers.graph import Graph
    from numlayers.layers import Dense
    from numlayers.models import Sequential

    monkeypatch.setattr(K, "_FLOATX", K.floatx())  # restored after the test
    monkeypatch.setattr(K, "_EPSILON", K.epsilon())
    K.set_floatx("float64")
    assert Sequential([Dense(2, input_shape=(3,))]).dtype == np.float64
    assert Graph().dtype == np.float64 and Dense(2, input_dim=3).dtype == np.float64
    assert Sequential(dtype="float32").dtype == np.float32  # a dtype given wins
    assert K.cast_to_floatx([1, 2]).dtype == np.float64
    with pytest.raises(ValueError, match="'float32' or 'float64', received 'float16'"):
        K.set_floatx("float16")
    K.set_epsilon(0.1)
    np.testing.assert_allclose(
        K.binary_crossentropy(np.array([1.0]), np.array([0.0])), -np.log(0.1)
    )
    assert K._BACKEND == "numlayers"
