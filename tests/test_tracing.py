"""Traced Lambdas: every supported operation against NumPy and float64 finite differences on
both devices, fusion (counted launches), fallbacks, explicit backwards, multi-input
Lambdas and custom traced layers.

Compilation is the cost here, so the elementwise operations share one Lambda: each is
applied to its own slice of the input (``x[:, k]``) and the results are stacked, so one
forward and one backward kernel cover them all, and each test checks its own slice.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

import numlayers as nl
from numlayers import backend as K
from numlayers.kernels import toolkit
from numlayers.layers import Dense, Lambda, LambdaMerge
from numlayers.models import Graph, Sequential
from numlayers.tracing import TracedLayer, TraceError, TracingFallbackWarning, trace

CONSTANT = np.array([0.5, -1.0, 2.0, 1.5])

#: elementwise operations of a (batch, 4) slice, each a NumPy function of it
ELEMENTWISE = {
    "add-sub-scalars": lambda x: (x + 1.5) - 3.0 - (2.0 - x),
    "mul-div": lambda x: x * 2.0 / (x * x + 2.0) + 3.0 / (abs(x) + 1.0),
    "neg-pos-abs": lambda x: -x + (+x) * abs(x) + np.abs(x) + np.fabs(x),
    "broadcast-constant": lambda x: x * CONSTANT + CONSTANT[None, :] - x / (CONSTANT + 3.0),
    "pow": lambda x: (np.abs(x) + 0.5) ** x + x**3 + x**2 + (abs(x) + 1.0) ** 1.5,
    "pow-specials": lambda x: (abs(x) + 1.0) ** 0.5 + (x + 3.0) ** -1 + np.power(x, 2),
    "exp-log": lambda x: np.exp(x) + np.log(abs(x) + 1.0) + np.log1p(abs(x)) + np.expm1(x),
    "sqrt-square": lambda x: np.sqrt(abs(x) + 1.0) + np.square(x),
    "tanh": lambda x: np.tanh(3.0 * x),
    "sin-cos": lambda x: np.sin(x) * np.cos(2.0 * x),
    "reciprocal-sign": lambda x: np.reciprocal(x + 3.0) + np.sign(x) * x,
    "maximum-minimum": lambda x: np.maximum(x, 0.1) + np.minimum(x, -0.1) * 2.0,
    "where-comparisons": lambda x: np.where(x > 0, x * x, -x) + (x >= 0.2) * x + (x < -0.3) * x,
    "comparisons": lambda x: (x <= 0.5) * x + (x == x) * x - (x != x) * x,
    "clip": lambda x: np.clip(x, -0.5, 0.5) + x.clip(-0.2, 0.7),
    "floor-ceil": lambda x: (np.floor(3.0 * x) + np.ceil(2.5 * x)) * x,
    "backend-activations": lambda x: (
        K.sigmoid(x)
        + K.hard_sigmoid(x) * 0.0
        + K.relu(x, 0.1)
        + K.tanh(x)
        + K.sqrt(x + 2.0)
        + K.pow(x, 2)
        + K.clip(x, -0.5, 0.5)
    ),
}
NAMES = list(ELEMENTWISE)


def elementwise_program(x):
    return np.stack([f(x) for f in ELEMENTWISE.values()], axis=1)


def sample(shape, seed=0):
    x = np.random.default_rng(seed).uniform(-1, 1, shape)
    return np.where(np.abs(x) < 0.05, 0.05 + np.abs(x), x)


def numerical_gradient(function, x, projection, eps=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        grad[index] = (np.sum(function(up) * projection) - np.sum(function(down) * projection)) / (
            2 * eps
        )
    return grad


def forward_backward(function, x, device, projection=None):
    layer = Lambda(function, input_shape=x.shape[1:], dtype="float64").to(device)
    assert layer.traced_call.failure is None, layer.traced_call.failure
    y = layer.device.to_host(layer.forward(layer.device.asarray(x), train=True)).copy()
    if projection is None:
        projection = np.random.default_rng(1).standard_normal(y.shape)
    grad = layer.device.to_host(layer.backward(layer.device.asarray(projection))).copy()
    return y, grad, projection


@functools.cache
def elementwise_layer(device_name):
    """Every elementwise operation of one sample, in one Lambda: one fused kernel each way."""
    x = sample((3, 4))
    layer = Lambda(elementwise_program, input_shape=(4,), dtype="float64").to(device_name)
    y = layer.device.to_host(layer.forward(layer.device.asarray(x), train=True)).copy()
    return layer, x, y


def check_elementwise(name, device_name):
    layer, x, y = elementwise_layer(device_name)
    k = NAMES.index(name)
    function = ELEMENTWISE[name]
    np.testing.assert_allclose(y[:, k], function(x), rtol=1e-12, atol=1e-12, err_msg=name)
    # a projection on this operation's output only: the input gradient is its own
    projection = np.zeros(y.shape)
    projection[:, k] = np.random.default_rng(k).standard_normal(x.shape)
    grad = layer.device.to_host(layer.backward(layer.device.asarray(projection)))
    expected = numerical_gradient(function, x, projection[:, k])
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("name", NAMES)
def test_elementwise_operation_forward_and_gradient_on_cuda(name):
    check_elementwise(name, "cuda")


def test_elementwise_operations_forward_and_gradient_on_the_cpu():
    # one test, not one per operation: test processes would each compile the program
    for name in NAMES:
        check_elementwise(name, "cpu")


#: operations that are not elementwise: (function, sample shape with the batch axis)
W = np.linspace(-1, 1, 12).reshape(4, 3)
STRUCTURAL = {
    "sum-negative-axis": (lambda x: x.sum(2) + np.sum(x, axis=-1) * 0.5, (2, 3, 4)),
    "keepdims-mean-max-min": (
        lambda x: (
            x
            - x.mean(axis=-1, keepdims=True)
            + x.max(axis=(1,), keepdims=True) * x.min(-1, keepdims=True)
        ),
        (2, 3, 4),
    ),
    "separate-axes-prod": (
        lambda x: x.sum(axis=(1, 3)) + np.prod(x, axis=1)[:, :, 0],
        (2, 2, 3, 2),
    ),
    "var-std": (lambda x: x.var(axis=-1) + np.std(x, axis=-1) + x.var(-1, ddof=1), (2, 4)),
    "over-the-batch": (lambda x: x - x.mean(0) + x * x.max(), (2, 4)),
    "matmul-dot": (lambda x: x @ W + np.dot(x, W) + np.matmul(x[:, None], W)[:, 0], (2, 4)),
    "gram": (lambda x: x @ (x.T @ x), (2, 4)),
    "batched-matmul-einsum": (
        lambda x: x @ x.transpose(0, 2, 1) + np.einsum("bij,bkj->bik", x, x),
        (2, 3, 4),
    ),
    "concatenate-stack": (
        lambda x: (
            np.concatenate([x, x * 2.0], axis=-1)[:, None] + np.stack([x, x], axis=1)[..., :1]
        ),
        (2, 4),
    ),
    "reshape-squeeze-swapaxes": (
        lambda x: (
            np.expand_dims(x, 1).reshape(x.shape[0], 12).reshape((-1, 3, 4)).squeeze()
            + x.swapaxes(1, 2).T.transpose(2, 1, 0).transpose(0, 2, 1)
        ),
        (2, 3, 4),
    ),
    "repeat-tile": (lambda x: np.repeat(x, 2, axis=1) + np.tile(x, (1, 2)), (2, 4)),
    "cumsum": (lambda x: np.cumsum(x, axis=-1) * x, (2, 4)),
    "slices": (lambda x: x[:, 1:3] * x[:, ::-1][:, :2] + x[..., 0:1], (2, 4)),
    "repeated-integer-index": (
        lambda x: x[:, [0, 0, 2, 3, 3, 3]] * x[:, [1, 1, 1, 0, 0, 2]],
        (2, 4),
    ),
    "new-axis-broadcast": (lambda x: (x[:, None, :] * x[:, :, None]).sum(1), (2, 4)),
    "backend-shapes": (
        lambda x: K.l2_normalize(x, -1) * K.softmax(x) + K.repeat(x, 3)[:, 0] + K.batch_dot(x, x),
        (2, 4),
    ),
    "backend-products": (
        lambda x: (
            K.batch_dot(x, K.permute_dimensions(x, (0, 2, 1)))
            + K.concatenate(
                [K.expand_dims(K.max(x, 2)), K.squeeze(x[:, :, :1], 2)[:, :, None]], axis=-1
            )[:, :, :1]
        ),
        (2, 3, 4),
    ),
}


def check_forward_and_gradient(function, x, y, grad, projection, what):
    np.testing.assert_allclose(y, function(x), rtol=1e-12, atol=1e-12, err_msg=what)
    expected = numerical_gradient(function, x, projection)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7, err_msg=what)


@pytest.mark.parametrize("name", list(STRUCTURAL))
def test_structural_operation_forward_and_gradient_on_cuda(name):
    # one Lambda per operation: CUDA (the simulator without a GPU) compiles nothing
    function, shape = STRUCTURAL[name]
    x = sample(shape, seed=2)
    check_forward_and_gradient(function, x, *forward_backward(function, x, "cuda"), name)


def side_by_side(names):
    """The operations ``names`` of one sample shape as one function: their results
    flattened per sample, side by side (one traced program, so fewer CPU compilations)."""

    def function(x):
        results = [STRUCTURAL[name][0](x) for name in names]
        return np.concatenate([np.reshape(r, (x.shape[0], -1)) for r in results], axis=1)

    return function


SHAPES = sorted({shape for _, shape in STRUCTURAL.values()})


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_structural_operations_forward_and_gradient_on_the_cpu(shape):
    names = [name for name, (_, case_shape) in STRUCTURAL.items() if case_shape == shape]
    x = sample(shape, seed=2)
    y, grad, projection = forward_backward(side_by_side(names), x, "cpu")
    offset = 0
    for name in names:  # each operation's own columns, and its gradient alone
        function = STRUCTURAL[name][0]
        width = int(np.prod(np.shape(function(x))[1:]))
        own = np.zeros_like(projection)
        own[:, offset : offset + width] = projection[:, offset : offset + width]
        alone = forward_backward(side_by_side(names), x, "cpu", own)
        check_forward_and_gradient(
            side_by_side(names), x, alone[0], alone[1], own, f"{name} on the cpu"
        )
        offset += width
    check_forward_and_gradient(side_by_side(names), x, y, grad, projection, str(names))


@pytest.mark.extended  # compiles the parallel twin of every loop: CI runs it apart
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_structural_operations_in_the_parallel_cpu_loops(shape, monkeypatch):
    """Every loop takes its parallel twin (which large batches run): a parallel loop's
    index is unsigned, and offsets computed from it must stay integers."""
    monkeypatch.setattr(toolkit, "PARALLEL_MIN_WORK", 0)
    names = [name for name, (_, case_shape) in STRUCTURAL.items() if case_shape == shape]
    function = side_by_side(names)
    x = sample(shape, seed=3)
    check_forward_and_gradient(function, x, *forward_backward(function, x, "cpu"), str(names))


def test_the_gradient_of_a_product_is_exact_at_zeros(device):
    """No division by the element: one zero in a slice gets the product of the rest,
    the others 0; two zeros give 0 everywhere."""
    x = np.array([[1.5, 0.0, 2.0, -1.0], [0.5, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 2.0]])
    layer = Lambda(lambda v: v.prod(axis=1, keepdims=True), input_shape=(4,), dtype="float64")
    layer.to(device)
    layer.forward(layer.device.asarray(x), True)
    grad = layer.device.to_host(layer.backward(layer.device.asarray(np.ones((3, 1)))))
    others = [[0.0, -3.0, 0.0, 0.0], [24.0, 6.0, 4.0, 3.0], [0.0, 0.0, 0.0, 0.0]]
    np.testing.assert_array_equal(grad, others)


def test_one_program_serves_every_batch_size_and_float32():
    layer = Lambda(lambda x: np.tanh(x).sum(-1) * x[:, 0], input_shape=(3,))
    for batch in (1, 4, 2):
        x = sample((batch, 3)).astype("float32")
        np.testing.assert_allclose(layer(x), np.tanh(x).sum(-1) * x[:, 0], rtol=2e-6, atol=2e-6)
    assert len(layer.traced_call._programs) == 1


# ---------------------------------------------------------------- fusion


def launches(layer, x, grad):
    executable = layer.traced_call.executable([(None, *x.shape[1:])], layer.dtype, layer.device)
    before = executable.launches
    layer.forward(layer.device.asarray(x), train=True)
    forward = executable.launches - before
    layer.backward(layer.device.asarray(grad))
    return forward, executable.launches - before - forward


def test_a_chain_of_elementwise_operations_is_one_kernel_each_way(device):
    chain = Lambda(lambda x: np.exp(np.tanh(x * 2.0 + 1.0) - x) * x, input_shape=(3,))
    x = sample((2, 3)).astype("float32")
    assert launches(chain.to(device), x, np.ones((2, 3), "float32")) == (1, 1)


def test_a_reduction_splits_the_fused_groups(device):
    layer = Lambda(lambda x: (x * 2.0).sum(-1, keepdims=True) * x + 1.0, input_shape=(3,))
    x = sample((2, 3)).astype("float32")
    forward, backward = launches(layer.to(device), x, np.ones((2, 3), "float32"))
    assert forward == 3  # x * 2, the sum, then (sum * x + 1)
    assert backward >= 2


def test_cuda_runs_without_copies_to_the_host(monkeypatch):
    layer = Lambda(lambda x: np.tanh(x).sum(-1, keepdims=True) * x, input_shape=(3,)).to("cuda")
    x = layer.device.asarray(sample((2, 3)).astype("float32"))
    layer.forward(x, train=True)  # compiled and laid out; now count
    monkeypatch.setattr(type(layer.device), "to_host", lambda *a: pytest.fail("copied to host"))
    y = layer.forward(x, train=True)
    grad = layer.backward(y)
    assert layer.device.is_device_array(y) and layer.device.is_device_array(grad)


# ------------------------------------------------------------ fallbacks


def branchy(x):
    return x if x.sum() > 0 else -x


@pytest.mark.parametrize(
    ("function", "named"),
    [
        (branchy, "Python if"),
        (lambda x: x * float(x.mean()), "float()"),
        (lambda x: np.sort(x, axis=-1), "np.sort"),
    ],
    ids=["if", "float", "unsupported-function"],
)
def test_untraceable_functions_warn_once_and_run_on_the_host(function, named):
    with pytest.warns(TracingFallbackWarning, match=f"lambda_fallback.*{named}"):
        layer = Lambda(function, input_shape=(3,), name="lambda_fallback")
    x = sample((2, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: no second warning
        np.testing.assert_allclose(layer(x), function(x), rtol=1e-6)
        layer.forward(x)
    with pytest.raises(RuntimeError, match="no backward function.*cannot be traced"):
        layer.backward(np.ones((2, 3), "float32"))


def test_an_explicit_backward_wins():
    def thrice(x, grad):
        return 3.0 * grad

    layer = Lambda(lambda x: x * x, backward=thrice, input_shape=(2,))
    x = np.ones((2, 2), "float32")
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(np.ones((2, 2), "float32")), 3.0)


def test_output_shape_is_read_from_the_trace_and_checked():
    assert Lambda(lambda x: x[:, :2].sum(-1), input_shape=(3,)).output_shape == (None,)
    assert Lambda(lambda x: K.repeat(x, 4), input_shape=(3,)).output_shape == (None, 4, 3)
    layer = Lambda(lambda x: x[:, :2], output_shape=(3,), input_shape=(3,), name="wrong")
    with pytest.raises(ValueError, match="'wrong'.*returned shape"):
        layer(np.ones((2, 3)))


def test_trace_errors_name_what_cannot_be_recorded():
    with pytest.raises(TraceError, match="batch axis must stay first"):
        trace(lambda x: x.T, [(None, 3)], np.float32)
    with pytest.raises(TraceError, match="mixes the batch axis"):
        trace(lambda x: x.reshape(-1), [(None, 3)], np.float32)
    with pytest.raises(TraceError, match="bool"):
        trace(lambda x: x if x.max() > 0 else x, [(None, 3)], np.float32)


# ------------------------------------------------ several inputs, custom layers


def product_plus(inputs):
    return inputs[0] * np.tanh(inputs[1]) + inputs[0]


def test_graph_lambda_of_several_inputs_trains_and_round_trips(device):
    nl.set_seed(0)
    graph = Graph(device=device, dtype="float64")
    graph.add_input("a", input_shape=(3,))
    graph.add_input("b", input_shape=(3,))
    graph.add_node(Lambda(product_plus), name="m", inputs=["a", "b"], merge_mode=None)
    graph.add_node(Dense(1), name="out", input="m", create_output=True)
    graph.compile("sgd", {"out": "mse"})
    a, b = sample((4, 3)), sample((4, 3), seed=1)
    history = graph.fit({"a": a, "b": b, "out": np.ones((4, 1))}, nb_epoch=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    rebuilt = Graph.from_config(graph.get_config(), custom_objects={"product_plus": product_plus})
    rebuilt.set_weights(graph.get_weights())
    np.testing.assert_allclose(
        rebuilt.predict({"a": a, "b": b})["out"], graph.predict({"a": a, "b": b})["out"]
    )


def test_lambda_merge_of_sequential_branches_is_differentiable():
    nl.set_seed(0)
    left, right = Sequential(dtype="float64"), Sequential(dtype="float64")
    left.add(Dense(2, input_shape=(3,)))
    right.add(Dense(2, input_shape=(4,)))
    merge = LambdaMerge([left, right], lambda xs: xs[0] * xs[1] - xs[1])
    assert merge.output_shape == (None, 2)
    a, b = sample((2, 3)), sample((2, 4))
    grad = np.random.default_rng(3).standard_normal((2, 2))
    merge.forward_branches([a, b], train=True)
    merge.backward_branches(grad)
    left_grad = left.layers[0].get_gradients()[0]

    def loss(weight):
        left_out = a @ weight + left.layers[0].get_weights()[1]
        right_out = right.predict(b)
        return np.sum((left_out * right_out - right_out) * grad)

    weight = left.layers[0].get_weights()[0]
    np.testing.assert_allclose(left_grad, numerical_gradient(loss, weight, 1.0), rtol=1e-6)


class Bilinear(TracedLayer):
    """x W x^T per sample: a custom layer with a weight, written as ``call``."""

    def build(self):
        features = self.input_shape[-1]
        self.add_weight("W", np.linspace(-1, 1, features * features).reshape(features, -1))

    def call(self, x, W):  # noqa: N803
        return ((x @ W) * x).sum(-1, keepdims=True)


def test_custom_traced_layer_gets_weight_and_input_gradients(device):
    layer = Bilinear(input_shape=(3,), dtype="float64").to(device)
    x = sample((2, 3))
    weight = layer.get_weights()[0]
    y = layer.device.to_host(layer.forward(layer.device.asarray(x), train=True))
    np.testing.assert_allclose(y[:, 0], np.einsum("bi,ij,bj->b", x, weight, x))
    grad_x = layer.device.to_host(layer.backward(layer.device.asarray(np.ones((2, 1)))))
    np.testing.assert_allclose(grad_x, x @ weight + x @ weight.T)
    np.testing.assert_allclose(layer.get_gradients()[0], x.T @ x)
