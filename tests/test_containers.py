"""Nested containers (a Sequential or Graph as a layer) and Graph shared nodes that do
not merge, or chain."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import numlayers as nl
from numlayers.constraints import MaxNorm
from numlayers.layers import (
    Activation,
    Container,
    Dense,
    Flatten,
    Masking,
    TimeDistributedDense,
    deserialize,
)
from numlayers.models import Graph, Sequential, model_from_config
from numlayers.optimizers import SGD


def _tanh_dense(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.tanh(x @ W + b)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _two_branch_graph(width: int, name: str = "branches", **dense: object) -> Graph:
    """Input ``i`` read by two Dense nodes whose outputs are summed into output ``o``."""
    graph = Graph(dtype="float64", name=name)
    graph.add_input("i", input_shape=(width,))
    graph.add_node(Dense(2, **dense), name="a", input="i")  # type: ignore[arg-type]
    graph.add_node(Dense(2), name="b", input="i")
    graph.add_output("o", inputs=["a", "b"], merge_mode="sum")
    return graph


# ------------------------------------------------------------------ forward
def test_nested_models_forward_matches_numpy(device):
    """A Sequential and a Graph nested in a Sequential, and that model nested in a Graph,
    give what their layers give applied by hand."""
    nl.set_seed(1)
    model = Sequential(dtype="float64", device=device, name="middle")
    model.add(Dense(3, input_shape=(2,), activation="tanh"))
    model.add(Sequential([Dense(4, input_shape=(3,), activation="tanh")], dtype="float64"))
    model.add(_two_branch_graph(4))
    model.add(Activation("softmax"))
    outer = Graph(dtype="float64", device=device)
    outer.add_input("x", input_shape=(2,))
    outer.add_node(model, name="nested", input="x")
    outer.add_output("y", input="nested")
    assert [type(layer) for layer in model.layers] == [Dense, Container, Container, Activation]
    W0, b0, W1, b1, Wa, ba, Wb, bb = outer.get_weights()
    x = np.random.default_rng(0).normal(size=(5, 2))
    h = _tanh_dense(_tanh_dense(x, W0, b0), W1, b1)
    expected = _softmax(h @ Wa + ba + h @ Wb + bb)
    np.testing.assert_allclose(outer.predict({"x": x})["y"], expected, rtol=1e-10)
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-10)
    assert model.output_shape == (None, 2)


# ---------------------------------------------------------------- training
def _nested_and_flat_sequential() -> tuple[Sequential, Sequential]:
    """Dense, a nested Graph (regularized), a nested Sequential (constrained), softmax;
    and the same layers in one flat Sequential."""
    regularized = {"W_regularizer": "l2"}
    nested = Sequential(dtype="float64")
    nested.add(Dense(4, input_shape=(3,)))
    graph = Graph(dtype="float64", name="graph_part")
    graph.add_input("i", input_shape=(4,))
    graph.add_node(Dense(4, **regularized), name="d", input="i")  # type: ignore[arg-type]
    graph.add_node(Activation("relu"), name="r", input="d")
    graph.add_output("o", input="r")
    nested.add(graph)
    constrained = Dense(2, input_shape=(4,), W_constraint=MaxNorm(0.3))
    nested.add(Sequential([constrained, Activation("softmax")], dtype="float64"))
    flat = Sequential(dtype="float64")
    flat.add(Dense(4, input_shape=(3,)))
    flat.add(Dense(4, **regularized))  # type: ignore[arg-type]
    flat.add(Activation("relu"))
    flat.add(Dense(2, W_constraint=MaxNorm(0.3)))
    flat.add(Activation("softmax"))
    return nested, flat


def _nested_and_flat_graph() -> tuple[Graph, Graph]:
    """A Graph with a nested Sequential and a nested Graph whose input feeds two nodes
    (so its input gradient sums two), and the same nodes in one flat Graph."""
    nested = Graph(dtype="float64")
    nested.add_input("x", input_shape=(3,))
    nested.add_node(Dense(4), name="h", input="x")
    inner = Sequential([Dense(4, input_shape=(4,), activation="tanh")], dtype="float64")
    nested.add_node(inner, name="s", input="h")
    nested.add_node(_two_branch_graph(4, W_regularizer="l2"), name="g", input="s")
    nested.add_output("out", input="g")
    flat = Graph(dtype="float64")
    flat.add_input("x", input_shape=(3,))
    flat.add_node(Dense(4), name="h", input="x")
    flat.add_node(Dense(4, activation="tanh"), name="s", input="h")
    flat.add_node(Dense(2, W_regularizer="l2"), name="a", input="s")
    flat.add_node(Dense(2), name="b", input="s")
    flat.add_output("out", inputs=["a", "b"], merge_mode="sum")
    return nested, flat


@pytest.mark.parametrize("kind", ["sequential", "graph"])
def test_training_step_updates_the_nested_weights_as_the_flat_model_does(kind, device):
    """Same weights, same batch: one SGD step leaves the nested and the flat model with the
    same weights (so gradients, regularizers and constraints reach the nested layers)."""
    nl.set_seed(2)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, 3))
    if kind == "sequential":
        nested, flat = _nested_and_flat_sequential()
        data: tuple = (X, np.eye(2)[[0, 1, 1, 0, 1, 0]])
        loss = "categorical_crossentropy"
    else:
        nested, flat = _nested_and_flat_graph()
        data = ({"x": X, "out": rng.normal(size=(6, 2))},)
        loss = "mse"
    initial = nested.get_weights()
    flat.set_weights(initial)
    assert nested.count_params() == flat.count_params()
    for model in (nested, flat):
        model.to(device)
        model.compile(SGD(lr=0.5), loss)
    losses = [model.train_on_batch(*data) for model in (nested, flat)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10)
    updated = nested.get_weights()
    for got, expected in zip(updated, flat.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert all(not np.array_equal(w, v) for w, v in zip(updated, initial, strict=True))
    if kind == "sequential":
        assert np.linalg.norm(nested.get_weights()[4], axis=0).max() <= 0.3 + 1e-12


def test_masks_flow_into_and_out_of_a_nested_model():
    """Masking before a nested model: the nested layers see the mask, the model's output
    carries it, and the loss of a sequence output skips the masked steps as the flat
    model's does."""
    nl.set_seed(3)
    x = np.random.default_rng(2).normal(size=(3, 4, 2))
    x[0, 2:] = 0.0
    x[2, 0] = 0.0
    y = np.random.default_rng(3).normal(size=(3, 4, 2))
    inner = Sequential([TimeDistributedDense(2, input_shape=(4, 2))], dtype="float64")
    nested = Sequential([Masking(input_shape=(4, 2)), inner], dtype="float64")
    container = nested.layers[1]
    assert container.produces_mask() and not inner.layers[0].produces_mask()
    flat = Sequential([Masking(input_shape=(4, 2)), TimeDistributedDense(2)], dtype="float64")
    flat.set_weights(nested.get_weights())
    for model in (nested, flat):
        model.compile("sgd", "mse")
    assert nested.test_on_batch(x, y) == pytest.approx(flat.test_on_batch(x, y), rel=1e-12)
    mask = nested.device.to_host(container.get_output_mask())
    np.testing.assert_array_equal(mask, np.any(x != 0, axis=-1))
    with pytest.raises(ValueError, match="masked input"):
        Sequential([Masking(input_shape=(4, 2)), Sequential([Flatten(input_shape=(4, 2))])])


# -------------------------------------------------------- weights, config
def test_weights_config_and_summary_round_trip(tmp_path):
    nl.set_seed(4)
    model, _ = _nested_and_flat_sequential()
    config = model.get_config()
    assert [layer["class_name"] for layer in config["layers"]] == [
        "Dense",
        "Container",
        "Container",
    ]
    assert config["layers"][1]["model"]["class_name"] == "Graph"
    assert config["layers"][1]["name"] == "graph_part"
    rebuilt = model_from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config
    assert rebuilt.count_params() == model.count_params() == 16 + 20 + 10
    path = tmp_path / "nested.npz"
    model.save_weights(path)
    rebuilt.load_weights(path)
    x = np.random.default_rng(4).normal(size=(3, 3))
    np.testing.assert_array_equal(rebuilt.predict(x), model.predict(x))
    assert len(model.get_weights()) == 6
    layer = deserialize(config["layers"][2])
    assert isinstance(layer, Container) and isinstance(layer.model, Sequential)
    out = io.StringIO()
    model.summary(file=out)
    printed = out.getvalue()
    assert "graph_part (Container)" in printed and "sequential_" in printed
    assert "Total params: 46" in printed


def test_moving_the_outer_model_moves_the_nested_one():
    nl.set_seed(5)
    model, _ = _nested_and_flat_sequential()
    x = np.random.default_rng(5).normal(size=(2, 3))
    before = model.predict(x)
    model.to("cuda")
    container = model.layers[1]
    assert container.device.name == container.model.device.name == "cuda"
    assert all(layer.device.name == "cuda" for layer in container.model.applied_layers())
    np.testing.assert_allclose(model.predict(x), before, rtol=1e-10)


# ------------------------------------------------------------------ errors
def test_bad_nesting_raises_errors_naming_the_model():
    one = Sequential([Dense(2, input_shape=(3,))], name="one")
    with pytest.raises(RuntimeError, match="Sequential 'empty' has no layers"):
        Sequential().add(Sequential(name="empty"))
    two_inputs = Graph(name="two_inputs")
    two_inputs.add_input("a", input_shape=(2,))
    two_inputs.add_input("b", input_shape=(2,))
    two_inputs.add_node(Dense(2), name="d", inputs=["a", "b"], create_output=True)
    with pytest.raises(ValueError, match="Graph 'two_inputs' cannot be nested"):
        Sequential().add(two_inputs)
    with pytest.raises(ValueError, match="Container layer 'one'.*shape \\(None, 3\\)"):
        Sequential([Dense(4, input_shape=(2,)), one])
    with pytest.raises(TypeError, match="Container layer 'doubles'.*float64"):
        Sequential([Sequential([Dense(2, input_shape=(3,))], name="doubles", dtype="float64")])
    once = Sequential([Dense(2, input_shape=(3,))], name="once")
    twice = Sequential([once])
    with pytest.raises(ValueError, match="Container layer 'once' is already in this model"):
        twice.add(once)
    with pytest.raises(ValueError, match="Sequential 'once' is already nested as Container"):
        Container(once)
    graph = Graph()
    graph.add_input("a", input_shape=(3,))
    graph.add_input("b", input_shape=(3,))
    shared = Graph(name="shared")
    shared.add_input("x", input_shape=(3,))
    shared.add_node(Dense(2), name="d", input="x", create_output=True)
    with pytest.raises(ValueError, match="can share a layer or a Sequential, received Graph"):
        graph.add_shared_node(shared, name="s", inputs=["a", "b"], merge_mode="sum")
    container = Container(Sequential([Dense(2, input_shape=(3,))], name="alone"))
    x = container.prepare_input(np.ones((1, 3)))
    with pytest.raises(ValueError, match="Container layer 'alone'.*received an array"):
        container.forward(container.device.asarray(np.ones((1, 4), np.float32)))
    container.forward(x, use="first")
    with pytest.raises(ValueError, match="'alone' is applied at several places"):
        container.forward(x, use="second")


# ------------------------------------------------------ unmerged shared nodes
def _chained_shared_graph() -> tuple[Graph, Dense, Dense]:
    """``first`` applied to a and b without merging (outputs a1, b1), then ``second``
    applied to both (named by the first node) and summed; a1 is an output of its own."""
    nl.set_seed(6)
    graph = Graph(dtype="float64")
    graph.add_input("a", input_shape=(3,))
    graph.add_input("b", input_shape=(3,))
    first, second = Dense(2), Dense(2)
    graph.add_shared_node(first, name="s1", inputs=["a", "b"], outputs=["a1", "b1"])
    graph.add_shared_node(second, name="s2", inputs=["s1"], merge_mode="sum", create_output=True)
    graph.add_output("a1_out", input="a1")
    return graph, first, second


def test_shared_nodes_without_merge_chain_and_sum_their_gradients():
    graph, first, second = _chained_shared_graph()
    rng = np.random.default_rng(6)
    A, B, R = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    W1, b1 = first.get_weights()
    W2, b2 = second.get_weights()
    ha, hb = A @ W1 + b1, B @ W1 + b1
    out = graph.predict({"a": A, "b": B})
    np.testing.assert_allclose(out["s2"], ha @ W2 + b2 + hb @ W2 + b2, rtol=1e-10)
    np.testing.assert_allclose(out["a1_out"], ha, rtol=1e-10)
    graph.forward_outputs([graph.device.asarray(A), graph.device.asarray(B)], train=True)
    zeros = np.zeros((4, 2))
    graph.backward_outputs([graph.device.asarray(R), graph.device.asarray(zeros)], [False, False])
    grad_W1, grad_b1, grad_W2, grad_b2 = graph.get_gradients()
    np.testing.assert_allclose(grad_W2, (ha + hb).T @ R, rtol=1e-10)
    np.testing.assert_allclose(grad_b2, 2 * R.sum(axis=0), rtol=1e-10)
    np.testing.assert_allclose(grad_W1, (A + B).T @ (R @ W2.T), rtol=1e-10)
    np.testing.assert_allclose(grad_b1, 2 * (R @ W2.T).sum(axis=0), rtol=1e-10)


def test_unmerged_shared_nodes_round_trip_and_show_in_the_summary():
    graph, first, _ = _chained_shared_graph()
    config = graph.get_config()
    rebuilt = Graph.from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config
    assert rebuilt.output_names == ["s2", "a1_out"]
    rebuilt.set_weights(graph.get_weights())
    data = {"a": np.ones((2, 3)), "b": np.zeros((2, 3))}
    for name, values in graph.predict(data).items():
        np.testing.assert_array_equal(rebuilt.predict(data)[name], values)
    out = io.StringIO()
    graph.summary(file=out)
    assert f"{first.name} (Dense)" in out.getvalue() and "a, b" in out.getvalue()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda g: g.add_node(Dense(2), name="n", input="s1"), "one output per input"),
        (
            lambda g: g.add_shared_node(Dense(2), name="n", inputs=["a", "b"], outputs=["o"]),
            "one output name per input",
        ),
        (
            lambda g: g.add_shared_node(Dense(2), name="n", inputs=["a", "b"], create_output=True),
            "create_output needs outputs",
        ),
        (lambda g: g.add_shared_node(Dense(2), name="n", inputs=["a1"]), "at least 2 inputs"),
        (
            lambda g: g.add_shared_node(Dense(2), name="s1", inputs=["a", "b"], merge_mode="sum"),
            "duplicate name 's1'",
        ),
    ],
    ids=["plain-node-reads-unmerged", "outputs-count", "create-output-unnamed", "one-input", "dup"],
)
def test_bad_shared_nodes_raise_clear_errors(build, match):
    graph = Graph()
    graph.add_input("a", input_shape=(3,))
    graph.add_input("b", input_shape=(3,))
    graph.add_shared_node(Dense(2), name="s1", inputs=["a", "b"], outputs=["a1", "b1"])
    with pytest.raises(ValueError, match=match):
        build(graph)


def test_keras_03_autoencoder_script_trains_on_reconstructions_and_predicts_codes(tmp_path):
    from numlayers.layers import AutoEncoder, containers

    X = np.random.default_rng(0).uniform(size=(32, 6)).astype("float32")
    encoder = containers.Sequential([Dense(4, input_dim=6), Dense(2)])
    decoder = containers.Sequential([Dense(4, input_dim=2), Dense(6)])
    autoencoder = Sequential()
    autoencoder.add(AutoEncoder(encoder=encoder, decoder=decoder, output_reconstruction=False))
    autoencoder.compile(loss="mean_squared_error", optimizer=SGD(lr=0.5))
    history = autoencoder.fit(X, X, nb_epoch=20, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    codes = autoencoder.predict(X)
    np.testing.assert_allclose(codes, encoder.predict(X), rtol=1e-6)
    assert codes.shape == (32, 2) and autoencoder.count_params() == 28 + 10 + 12 + 30
    # evaluating compares test outputs, the codes, with the targets: a clear error
    with pytest.raises(ValueError, match="test outputs of shape \\(32, 2\\).*\\(32, 6\\)"):
        autoencoder.evaluate(X, X)
    path = str(tmp_path / "autoencoder.npz")
    autoencoder.save_weights(path)
    rebuilt = model_from_config(json.loads(json.dumps(autoencoder.get_config())))
    rebuilt.load_weights(path)
    np.testing.assert_array_equal(rebuilt.predict(X), codes)
