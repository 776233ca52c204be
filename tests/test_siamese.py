"""Siamese, SiameseHead and add_shared_layer (Keras 0.3): one layer's weights applied to
several models' outputs train as a Graph's shared node does, from the sum of the
applications' gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest

from numlayers.layers import Dense, Merge, Siamese, SiameseHead, add_shared_layer
from numlayers.models import Graph, Sequential, model_from_config
from numlayers.optimizers import SGD

RNG = np.random.default_rng(7)
A = RNG.uniform(-1, 1, (6, 2))
B = RNG.uniform(-1, 1, (6, 4))


def branches(device) -> tuple[Sequential, Sequential]:
    dense = {"dtype": "float64", "device": device}
    left = Sequential([Dense(3, input_shape=(2,), seed=1, **dense)], **dense)
    right = Sequential([Dense(3, input_shape=(4,), seed=2, **dense)], **dense)
    return left, right


def graph_twin(mode: str, device) -> Graph:
    """The same model as a Graph with a shared node (the reference for sharing)."""
    graph = Graph(device=device, dtype="float64")
    graph.add_input("a", input_shape=(2,))
    graph.add_input("b", input_shape=(4,))
    graph.add_node(Dense(3, seed=1), name="left", input="a")
    graph.add_node(Dense(3, seed=2), name="right", input="b")
    graph.add_shared_node(
        Dense(4, activation="tanh", seed=3), name="shared", inputs=["left", "right"],
        merge_mode=mode,
    )  # fmt: skip
    graph.add_output("output", input="shared")
    graph.compile(SGD(lr=0.1), {"output": "mse"})
    return graph


@pytest.mark.parametrize("mode", ["concat", "sum"])
def test_a_siamese_step_updates_the_weights_as_a_graph_shared_node(device, mode):
    left, right = branches(device)
    model = Sequential(device=device, dtype="float64")
    model.add(Siamese(Dense(4, activation="tanh", seed=3), [left, right], merge_mode=mode))
    model.compile(SGD(lr=0.1), "mse")
    graph = graph_twin(mode, device)
    y = RNG.uniform(-1, 1, (6, 8 if mode == "concat" else 4))
    np.testing.assert_allclose(model.predict([A, B]), graph.predict({"a": A, "b": B})["output"])
    model.train_on_batch([A, B], y)
    graph.train_on_batch({"a": A, "b": B, "output": y})
    for ours, theirs in zip(model.get_weights(), graph.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    assert model.count_params() == graph.count_params()


def test_add_shared_layer_then_merge_trains_the_shared_weights_once(device):
    left, right = branches(device)
    shared = Dense(4, activation="tanh", seed=3, dtype="float64")
    add_shared_layer(shared, [left, right])
    assert [type(model.layers[-1]) for model in (left, right)] == [SiameseHead, SiameseHead]
    model = Sequential(device=device, dtype="float64")
    model.add(Merge([left, right], mode="sum"))
    model.compile(SGD(lr=0.1), "mse")
    graph = graph_twin("sum", device)
    y = RNG.uniform(-1, 1, (6, 4))
    model.train_on_batch([A, B], y)
    graph.train_on_batch({"a": A, "b": B, "output": y})
    assert model.count_params() == graph.count_params() == 9 + 15 + 16
    layers = [left.layers[0], right.layers[0], shared]  # the graph's node order
    weights = [weight for layer in layers for weight in layer.get_weights()]
    for ours, theirs in zip(weights, graph.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)


def test_a_siamese_model_round_trips_through_its_config():
    left, right = branches("cpu")
    model = Sequential(dtype="float64")
    model.add(Siamese(Dense(4, seed=3), [left, right], merge_mode="concat"))
    rebuilt = model_from_config(json.loads(json.dumps(model.get_config())))
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.predict([A, B]), model.predict([A, B]))


def test_siamese_errors_say_what_to_do():
    left, right = branches("cpu")
    with pytest.raises(ValueError, match="add_shared_layer"):
        Siamese(Dense(4), [left, right], merge_mode=None)
    with pytest.raises(ValueError, match="at least 2 inputs"):
        Siamese(Dense(4), [left])
    with pytest.raises(TypeError, match="add_shared_layer"):
        SiameseHead(0)
