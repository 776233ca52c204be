"""Graph models, merge modes, Merge of Sequential branches, Embedding and masks end to end."""

from __future__ import annotations

import numpy as np
import pytest

import numlayers as nl
from numlayers.layers import (
    GRU,
    Activation,
    Bidirectional,
    Dense,
    Embedding,
    Flatten,
    Lambda,
    Layer,
    Masking,
    Merge,
    TimeDistributed,
    TimeDistributedDense,
)
from numlayers.layers.merging import MergeNode
from numlayers.models import Graph, Sequential
from numlayers.optimizers import SGD, Adam
from numlayers.testing import tolerance


class Source(Layer):
    """A fed input (the identity) for building merge nodes in tests."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._finish_init()

    def _forward(self, x, train):
        return x

    def _backward(self, grad_output):
        return grad_output


MERGE_CASES = {
    "sum": ([(2, 3), (2, 3), (2, 3)], {}, lambda a, b, c: a + b + c),
    "mul": ([(2, 3), (2, 3), (2, 3)], {}, lambda a, b, c: a * b * c),
    "ave": ([(2, 3), (2, 3)], {}, lambda a, b: (a + b) / 2),
    "concat": ([(2, 3), (2, 2)], {}, lambda a, b: np.concatenate([a, b], -1)),
    "concat-axis1": (
        [(2, 3, 2), (2, 1, 2)],
        {"concat_axis": 1},
        lambda a, b: np.concatenate([a, b], 1),
    ),
    "dot": ([(2, 3), (2, 3)], {}, lambda a, b: np.sum(a * b, -1, keepdims=True)),
    "dot-3d": (
        [(2, 3, 4), (2, 5, 4)],
        {"dot_axes": [[2], [2]]},
        lambda a, b: np.einsum("bik,bjk->bij", a, b),
    ),
    "dot-3d-first": (
        [(2, 4, 3), (2, 4, 5)],
        {"dot_axes": [[1], [1]]},
        lambda a, b: np.einsum("bki,bkj->bij", a, b),
    ),
    "cos": (
        [(2, 3), (2, 3)],
        {},
        lambda a, b: (
            np.sum(a * b, -1, keepdims=True)
            / np.sqrt(np.sum(a * a, -1, keepdims=True) * np.sum(b * b, -1, keepdims=True))
        ),
    ),
}


def merge_node(case, device, dtype):
    shapes, options, _ = MERGE_CASES[case]
    mode = case.split("-")[0]
    sources = [Source(input_shape=s[1:], dtype=dtype).to(device) for s in shapes]
    return sources, MergeNode(sources, mode, **options)


@pytest.mark.parametrize("case", sorted(MERGE_CASES))
def test_merge_modes_forward_backward_on_every_device(case, device, dtype):
    shapes, _, reference = MERGE_CASES[case]
    rng = np.random.default_rng(0)
    values = [rng.uniform(0.5, 1.5, s) for s in shapes]
    sources, node = merge_node(case, device, dtype)
    for source, value in zip(sources, values, strict=True):
        source.set_input(value.astype(dtype))
    out = device.to_host(node.get_output())
    np.testing.assert_allclose(out, reference(*values), **tolerance(dtype))
    assert out.shape == (2, *[d for d in node.output_shape[1:]])
    # backward against float64 finite differences of the merge, one input at a time
    grad = rng.standard_normal(out.shape)
    grads = [device.to_host(g) for g in node.backward(device.asarray(grad.astype(dtype)))]
    for index, value in enumerate(values):
        numerical = np.zeros_like(value)
        for position in np.ndindex(value.shape):
            shifted = [v.copy() for v in values]
            shifted[index][position] += 1e-6
            plus = np.sum(reference(*shifted) * grad)
            shifted[index][position] -= 2e-6
            minus = np.sum(reference(*shifted) * grad)
            numerical[position] = (plus - minus) / 2e-6
        np.testing.assert_allclose(
            grads[index],
            numerical,
            rtol=1e-4 if dtype == np.float32 else 1e-6,
            atol=1e-4 if dtype == np.float32 else 1e-7,
        )


def test_merge_shapes_are_checked_with_the_nodes_named():
    g = Graph()
    g.add_input("a", input_shape=(3,))
    g.add_input("b", input_shape=(4,))
    with pytest.raises(ValueError, match="'a'.*'b'"):
        g.add_node(Dense(2), name="bad", inputs=["a", "b"], merge_mode="sum")
    with pytest.raises(ValueError, match="unknown merge_mode"):
        g.add_node(Dense(2), name="bad2", inputs=["a", "b"], merge_mode="max")
    g.add_node(Dense(2), name="ok", inputs=["a", "b"], merge_mode="concat")
    assert g.nodes["ok"].input_shape == (None, 7)


def seed_graph(device="cpu", backward=None, vocabulary=5000, dim=32):
    """The Keras 0.3 seed example, as written (smaller sizes for the CUDA simulator)."""
    g = Graph(device=device)
    g.add_input(name="words", input_shape=(10,), dtype="int")
    g.add_input(name="points", input_shape=(10,), dtype="int")
    g.add_node(Embedding(vocabulary, dim, input_length=10), name="embedding", input="words")
    g.add_node(Embedding(vocabulary, dim, input_length=10), name="embedpoint", input="points")
    g.add_node(
        Lambda(lambda x: x.sum(2), backward=backward),
        name="merge",
        inputs=["embedding", "embedpoint"],
        merge_mode="mul",
    )
    g.add_node(Dense(1, activation="sigmoid"), name="score", input="merge")
    g.add_output(name="output", input="score")
    g.compile(optimizer="adam", loss={"output": "binary_crossentropy"})
    return g


def seed_data(n=64, seed=0, vocabulary=5000):
    rng = np.random.default_rng(seed)
    W = rng.integers(0, vocabulary, (n, 10))
    P = rng.integers(0, vocabulary, (n, 10))
    y = (rng.random((n, 1)) < 0.5).astype("float32")
    return W, P, y


def sum_over_features_backward(x, grad):
    return np.repeat(grad[:, :, None], x.shape[2], axis=2)


def test_seed_example_trains_as_written_without_a_lambda_backward():
    # the Lambda's function is traced: its gradient and kernels come from the trace
    nl.set_seed(0)
    g = seed_graph()
    W, P, y = seed_data()
    history = g.fit({"words": W, "points": P, "output": y}, nb_epoch=5, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    assert g.evaluate({"words": W, "points": P, "output": y}) < losses[0]


def test_seed_example_trains_with_an_explicit_lambda_backward():
    # an explicit backward wins over the traced gradient (and agrees with it)
    W, P, y = seed_data(8, vocabulary=20)
    losses = []
    for backward in (sum_over_features_backward, None):
        nl.set_seed(0)
        g = seed_graph(backward=backward, vocabulary=20, dim=4)
        history = g.fit({"words": W, "points": P, "output": y}, nb_epoch=3, verbose=0)
        losses.append(history.history["loss"])
    assert losses[0][-1] < losses[0][0]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_seed_example_on_cuda_matches_cpu_without_a_lambda_backward():
    W, P, y = seed_data(4, vocabulary=20)
    results = []
    for device in ("cpu", "cuda"):
        nl.set_seed(3)
        g = seed_graph(device, vocabulary=20, dim=4)
        history = g.fit({"words": W, "points": P, "output": y}, nb_epoch=2, verbose=0)
        results.append((history.history["loss"], g.predict({"words": W, "points": P})["output"]))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)


class Counting(Dense):
    calls = 0

    def _forward(self, x, train):
        Counting.calls += 1
        return super()._forward(x, train)


def test_a_node_read_by_several_nodes_runs_once_and_sums_their_gradients():
    nl.set_seed(1)
    g = Graph(dtype="float64")
    g.add_input("x", input_shape=(3,))
    g.add_node(Counting(4, activation="tanh"), name="shared_input", input="x")
    g.add_node(Dense(2), name="left", input="shared_input")
    g.add_node(Dense(2), name="right", input="shared_input")
    g.add_output("out", inputs=["left", "right"], merge_mode="sum")
    g.compile(SGD(lr=0.0), "mse")  # weights stay put, so the gradients can be recomputed
    X = np.random.default_rng(0).normal(size=(5, 3))
    Y = np.zeros((5, 2))
    Counting.calls = 0
    g.predict({"x": X})
    assert Counting.calls == 1
    # the gradient of the node read twice is the sum over both consumers
    g.train_on_batch({"x": X, "out": Y})
    assert Counting.calls == 2
    W_s, b_s, W_l, b_l, W_r, b_r = [np.asarray(w) for w in g.get_weights()]
    grads = g.get_gradients()
    h = np.tanh(X @ W_s + b_s)
    out = h @ W_l + b_l + h @ W_r + b_r
    d_out = 2 * (out - Y) / out.size
    d_h = d_out @ W_l.T + d_out @ W_r.T
    expected_W_s = X.T @ (d_h * (1 - h**2))
    np.testing.assert_allclose(grads[0], expected_W_s, rtol=1e-9)
    np.testing.assert_allclose(grads[2], h.T @ d_out, rtol=1e-9)


def test_nodes_no_output_needs_do_not_run_and_a_grown_graph_runs_its_new_nodes():
    nl.set_seed(4)
    g = Graph(dtype="float64")
    g.add_input("x", input_shape=(3,))
    g.add_node(Dense(2), name="kept", input="x")
    g.add_node(Counting(2), name="dangling", input="x")
    g.add_output("out", input="kept")
    X = np.random.default_rng(1).normal(size=(4, 3))
    Counting.calls = 0
    first = g.predict({"x": X})
    assert Counting.calls == 0 and set(first) == {"out"}
    g.add_output("late", input="dangling")  # the graph grows after it has run
    second = g.predict({"x": X})
    assert Counting.calls == 1
    np.testing.assert_array_equal(second["out"], first["out"])
    W, b = g.nodes["dangling"].get_weights()
    np.testing.assert_allclose(second["late"], X @ W + b, rtol=1e-12)


def test_two_output_graph_trains_with_two_losses():
    nl.set_seed(2)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(64, 4)).astype("float32")
    y_reg = X[:, :1] * 2
    y_cls = np.eye(2, dtype="float32")[(X[:, 1] > 0).astype(int)]
    g = Graph()
    g.add_input("x", input_shape=(4,))
    g.add_node(Dense(16, activation="relu"), name="hidden", input="x")
    g.add_node(Dense(1), name="regression", input="hidden", create_output=True)
    g.add_node(Dense(2, activation="softmax"), name="classes", input="hidden")
    g.add_output("label", input="classes")
    g.compile(
        Adam(lr=0.01),
        {"regression": "mse", "label": "categorical_crossentropy"},
        metrics=["accuracy"],
    )
    data = {"x": X, "regression": y_reg, "label": y_cls}
    history = g.fit(data, nb_epoch=30, batch_size=16, verbose=0)
    assert set(history.history) == {
        "loss",
        "regression_loss",
        "regression_acc",
        "label_loss",
        "label_acc",
    }
    assert history.history["regression_loss"][-1] < history.history["regression_loss"][0] / 3
    assert history.history["label_acc"][-1] > 0.85
    out = g.predict({"x": X})
    assert set(out) == {"regression", "label"}
    weights = {"regression": np.ones(64), "label": np.arange(64) % 2}
    g.fit(
        data, nb_epoch=1, verbose=0, sample_weight=weights, class_weight={"label": {0: 1.0, 1: 2.0}}
    )


def test_shared_node_uses_one_weight_set_and_sums_gradients():
    nl.set_seed(4)
    g = Graph(dtype="float64")
    g.add_input("a", input_shape=(3,))
    g.add_input("b", input_shape=(3,))
    shared = Dense(2, activation="tanh")
    g.add_shared_node(shared, name="both", inputs=["a", "b"], merge_mode="sum")
    g.add_output("out", input="both")
    g.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    W, b = shared.get_weights()
    out = g.predict({"a": A, "b": B})["out"]
    np.testing.assert_allclose(out, np.tanh(A @ W + b) + np.tanh(B @ W + b))
    assert g.count_params() == 8
    g.test_on_batch({"a": A, "b": B, "out": np.zeros((4, 2))})
    g.backward_outputs([g.device.asarray(np.ones((4, 2)))], [False])
    grad_W = shared.get_gradients()[0]
    ha, hb = np.tanh(A @ W + b), np.tanh(B @ W + b)
    np.testing.assert_allclose(grad_W, A.T @ (1 - ha**2) + B.T @ (1 - hb**2))


#: a layer to share, the layer before each of its uses, and the input shape of one sample
SHARED_CASES = {
    "dense": (lambda: Dense(3, activation="tanh"), lambda: Dense(4), (4,)),
    "dense_activity_regularized": (
        lambda: Dense(3, activation="tanh", activity_regularizer="l2"),
        lambda: Dense(4),
        (4,),
    ),
    "time_distributed": (
        lambda: TimeDistributed(Dense(3, activation="tanh")),
        lambda: TimeDistributedDense(4),
        (2, 4),
    ),
    "bidirectional": (lambda: Bidirectional(GRU(2)), lambda: TimeDistributedDense(4), (3, 4)),
    # a whole base network: each use runs every layer of it, all shared
    "sequential": (
        lambda: Sequential(
            [Dense(3, activation="tanh", input_shape=(4,)), Activation("tanh"), Dense(2)],
            dtype="float64",
        ),
        lambda: Dense(4),
        (4,),
    ),
}


@pytest.mark.parametrize("case", list(SHARED_CASES))
def test_each_use_of_a_shared_layer_back_propagates_its_own_forward(case):
    """One layer applied to two inputs: the gradients of its weights (summed over the
    uses) and of each use's input (seen in the weights of the layer before it) match
    float64 central differences, so each use's backward read what its own forward saved."""
    make_shared, make_before, sample_shape = SHARED_CASES[case]
    nl.set_seed(5)
    g = Graph(dtype="float64")
    for name in ("a", "b"):
        g.add_input(name, input_shape=sample_shape)
        g.add_node(make_before(), name=f"before_{name}", input=name)
    g.add_shared_node(
        make_shared(), name="shared", inputs=["before_a", "before_b"], outputs=["use_a", "use_b"]
    )
    g.add_output("out_a", input="use_a")
    g.add_output("out_b", input="use_b")
    rng = np.random.default_rng(0)
    inputs = [g.device.asarray(rng.normal(size=(2, *sample_shape))) for _ in range(2)]
    projections = [rng.normal(size=(2, *g.outputs[name].output_shape[1:])) for name in g.outputs]

    def loss() -> float:
        """sum(out * R) over both outputs, plus the regularization penalties."""
        outputs = g.forward_outputs(inputs, train=True)
        penalties = g.device.zeros((1,), g.dtype)
        for layer in g.all_layers():
            layer.add_penalties(penalties)
        projected = sum(
            np.sum(g.device.to_host(o) * r) for o, r in zip(outputs, projections, strict=True)
        )
        return float(projected + g.device.to_host(penalties)[0])

    loss()
    g.backward_outputs([g.device.asarray(r) for r in projections], [False, False])
    analytic = g.get_gradients()
    weights = g.get_weights()
    epsilon = 1e-6
    for position, (values, gradient) in enumerate(zip(weights, analytic, strict=True)):
        numerical = np.zeros_like(values)
        for index in np.ndindex(values.shape):
            original = values[index]
            values[index] = original + epsilon
            g.set_weights(weights)
            plus = loss()
            values[index] = original - epsilon
            g.set_weights(weights)
            minus = loss()
            values[index] = original
            numerical[index] = (plus - minus) / (2 * epsilon)
        np.testing.assert_allclose(
            gradient, numerical, rtol=1e-5, atol=1e-8, err_msg=f"weight {position} of {case}"
        )
    g.set_weights(weights)


def test_shared_node_with_separate_outputs():
    g = Graph()
    g.add_input("a", input_shape=(3,))
    g.add_input("b", input_shape=(3,))
    g.add_shared_node(Dense(2), name="enc", inputs=["a", "b"], outputs=["enc_a", "enc_b"])
    g.add_output("oa", input="enc_a")
    g.add_output("ob", input="enc_b")
    out = g.predict({"a": np.ones((2, 3)), "b": np.zeros((2, 3))})
    np.testing.assert_allclose(
        out["oa"] - out["ob"], np.ones((2, 3)) @ g.get_weights()[0], rtol=1e-5
    )


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda g: g.add_node(Dense(2), name="x", input="x"), "duplicate"),
        (lambda g: g.add_node(Dense(2), name="n", input="missing"), "not defined"),
        (lambda g: g.add_node(Dense(2), name="n", input="n"), "own output"),
        (lambda g: g.add_node(Dense(2), name="n"), "input="),
        (lambda g: g.add_node(Dense(2), name="n", inputs=["x"]), "use input="),
        (lambda g: g.add_input("y"), "input_shape"),
    ],
    ids=["duplicate-name", "unknown-input", "cycle", "no-input", "one-of-inputs", "no-shape"],
)
def test_bad_graphs_raise_clear_errors(build, match):
    g = Graph()
    g.add_input("x", input_shape=(3,))
    with pytest.raises(ValueError, match=match):
        build(g)


def test_unused_inputs_and_missing_data_are_errors():
    g = Graph()
    g.add_input("x", input_shape=(3,))
    g.add_input("unused", input_shape=(3,))
    g.add_node(Dense(2), name="d", input="x", create_output=True)
    with pytest.raises(ValueError, match="unused"):
        g.compile("sgd", {"d": "mse"})
    g2 = Graph()
    g2.add_input("x", input_shape=(3,))
    g2.add_node(Dense(2), name="d", input="x", create_output=True)
    g2.compile("sgd", {"d": "mse"})
    with pytest.raises(ValueError, match="missing targets"):
        g2.fit({"x": np.ones((2, 3))}, verbose=0)
    with pytest.raises(ValueError, match="unknown names"):
        g2.fit({"x": np.ones((2, 3)), "d": np.ones((2, 2)), "z": 1}, verbose=0)


def test_graph_config_round_trip_and_summary(capsys):
    nl.set_seed(5)
    g = seed_graph(backward=None)
    config = g.get_config()
    rebuilt = Graph.from_config(config)
    assert rebuilt.get_config()["nodes"][2]["layer"]["input_dim"] == 5000
    rebuilt.set_weights(g.get_weights())
    W, P, _ = seed_data(4)
    np.testing.assert_array_equal(
        rebuilt.predict({"words": W, "points": P})["output"],
        g.predict({"words": W, "points": P})["output"],
    )
    g.summary()
    printed = capsys.readouterr().out
    assert "embedpoint" in printed and "Connected to" in printed and "320,011" in printed


def test_nodes_inputs_outputs_maps_and_device_moves():
    g = seed_graph(vocabulary=20, dim=4)
    assert set(g.nodes) == {"words", "points", "embedding", "embedpoint", "merge", "score"}
    assert set(g.inputs) == {"words", "points"} and set(g.outputs) == {"output"}
    W, P, _ = seed_data(4, vocabulary=20)
    before = g.predict({"words": W, "points": P})["output"]
    g.to("cuda")
    np.testing.assert_allclose(g.predict({"words": W, "points": P})["output"], before, rtol=1e-5)


def test_merge_of_sequential_branches():
    nl.set_seed(6)
    left, right = Sequential(), Sequential()
    left.add(Dense(4, input_shape=(3,), activation="relu"))
    right.add(Dense(4, input_shape=(5,), activation="relu"))
    model = Sequential()
    model.add(Merge([left, right], mode="concat"))
    model.add(Dense(2, activation="softmax"))
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(32, 3)), rng.normal(size=(32, 5))
    Y = np.eye(2)[(A[:, 0] + B[:, 0] > 0).astype(int)]
    assert model.count_params() == 16 + 24 + 18
    history = model.fit([A, B], Y, nb_epoch=30, verbose=0, batch_size=8)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.predict([A, B]).shape == (32, 2)
    with pytest.raises(ValueError, match="list of 2"):
        model.predict(A)


# ---------------------------------------------------------------- Embedding and masks
def test_embedding_rejects_bad_indices_before_any_kernel(device):
    layer = Embedding(10, 3, input_length=4).to(device)
    with pytest.raises(TypeError, match="integer"):
        layer(np.ones((2, 4)))
    with pytest.raises(IndexError, match=r"token id 10 is outside \[0, 10\)"):
        layer(np.full((2, 4), 10))
    with pytest.raises(IndexError, match="token id -1"):
        layer(np.full((2, 4), -1))


def test_embedding_gradient_adds_up_repeated_indices(device, dtype):
    layer = Embedding(5, 2, input_length=3, dtype=dtype).to(device)
    ids = np.array([[1, 1, 4], [1, 0, 4]])
    layer.forward(layer.prepare_input(ids), train=True)
    grad = np.arange(12, dtype=dtype).reshape(2, 3, 2)
    layer.backward(device.asarray(grad))
    expected = np.zeros((5, 2))
    np.add.at(expected, ids.reshape(-1), grad.reshape(-1, 2))
    np.testing.assert_allclose(layer.get_gradients()[0], expected)


def test_masks_flow_through_a_chain_and_weight_the_loss():
    nl.set_seed(7)
    model = Sequential(dtype="float64")
    model.add(Embedding(6, 3, input_length=4, mask_zero=True))
    model.add(Activation("tanh"))
    model.add(TimeDistributedDense(2))
    model.compile("sgd", "mse")
    ids = np.array([[1, 2, 0, 0], [3, 0, 0, 0]])
    mask = (ids != 0).astype(float)
    model.forward(ids)
    np.testing.assert_array_equal(model.layers[-1].get_output_mask(), mask)
    targets = np.zeros((2, 4, 2))
    out = model.predict(ids)
    per_step = np.mean((out - targets) ** 2, axis=-1)
    expected = np.mean(per_step * mask / mask.mean())
    assert model.test_on_batch(ids, targets) == pytest.approx(expected)
    # masked steps get no gradient: changing their targets changes nothing
    other = targets.copy()
    other[ids == 0] = 100.0
    assert model.test_on_batch(ids, other) == pytest.approx(expected)


def test_masking_layer_masks_padding_steps(device):
    layer = Masking(-1.0, input_shape=(3, 2), dtype="float64").to(device)
    x = np.array([[[1.0, 2.0], [-1.0, -1.0], [-1.0, 0.5]]])
    out = device.to_host(layer.forward(device.asarray(x)))
    np.testing.assert_array_equal(out, x * np.array([1, 0, 1])[None, :, None])
    np.testing.assert_array_equal(device.to_host(layer.saved()["output_mask"]), [[1, 0, 1]])
    grad = device.to_host(layer.backward(device.asarray(np.ones_like(x))))
    np.testing.assert_array_equal(grad[0, :, 0], [1, 0, 1])


def test_layers_that_cannot_take_masks_refuse_masked_parents():
    model = Sequential()
    model.add(Embedding(6, 3, input_length=4, mask_zero=True))
    with pytest.raises(ValueError, match="cannot take a masked input"):
        model.add(Flatten())
    g = Graph()
    g.add_input("ids", input_shape=(4,), dtype="int")
    g.add_node(Embedding(6, 3, input_length=4, mask_zero=True), name="e1", input="ids")
    g.add_node(Embedding(6, 3, input_length=4), name="e2", input="ids")
    g.add_node(TimeDistributedDense(2), name="td", inputs=["e1", "e2"], merge_mode="sum")
    g.add_output("out", input="td")
    ids = np.array([[1, 0, 2, 0]])
    g.predict({"ids": ids})
    np.testing.assert_array_equal(g.nodes["td"].get_output_mask(), [[1, 0, 1, 0]])
