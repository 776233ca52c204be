"""Keras 0.3's Siamese graph: a whole Sequential shared over two inputs, joined into a
dict that a Lambda reads by input name, trained with a loss written as a function."""

from __future__ import annotations

import numpy as np
import pytest

import numlayers as nl
from numlayers import backend as K
from numlayers.layers import Dense, Dropout, Lambda, Merge
from numlayers.models import Graph, Sequential
from numlayers.optimizers import SGD


def euclidean_distance(inputs):
    u, v = inputs.values()
    return K.sqrt(K.sum(K.square(u - v), axis=1, keepdims=True))


def contrastive_loss(y, d):
    margin = 1
    return K.mean(y * K.square(d) + (1 - y) * K.square(K.maximum(margin - d, 0)))


def base_network(dtype: str = "float32", dropout: float = 0.0) -> Sequential:
    layers = [Dense(5, input_shape=(4,), activation="relu")]
    if dropout:
        layers.append(Dropout(dropout))
    layers.append(Dense(3, activation="tanh"))
    return Sequential(layers, dtype=dtype)


def siamese_graph(device="cpu", dtype="float32", dropout=0.0) -> tuple[Graph, Sequential]:
    """Keras 0.3's mnist_siamese_graph, at a small size."""
    base = base_network(dtype, dropout)
    g = Graph(device=device, dtype=dtype)
    g.add_input(name="input_a", input_shape=(4,))
    g.add_input(name="input_b", input_shape=(4,))
    g.add_shared_node(base, name="shared", inputs=["input_a", "input_b"], merge_mode="join")
    g.add_node(Lambda(euclidean_distance), name="d", input="shared")
    g.add_output(name="output", input="d")
    return g, base


def pairs(samples: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "input_a": rng.normal(size=(samples, 4)),
        "input_b": rng.normal(size=(samples, 4)),
        "output": (np.arange(samples) % 2).astype(float),
    }


def numpy_base(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    W1, b1, W2, b2 = weights
    return np.tanh(np.maximum(x @ W1 + b1, 0) @ W2 + b2)


def numpy_loss(weights: list[np.ndarray], data: dict[str, np.ndarray]) -> float:
    u, v = (numpy_base(weights, data[name]) for name in ("input_a", "input_b"))
    d = np.sqrt(np.sum((u - v) ** 2, axis=1, keepdims=True))
    y = data["output"][:, None]
    return float(np.mean(y * d**2 + (1 - y) * np.maximum(1 - d, 0) ** 2))


def test_the_siamese_graph_computes_the_distance_and_loss_of_numpy():
    nl.set_seed(1)
    g, base = siamese_graph(dtype="float64")
    g.compile(loss={"output": contrastive_loss}, optimizer=SGD(lr=0.1))
    data = pairs()
    weights = g.get_weights()
    assert len(weights) == 4  # the base network's weights, once
    u, v = (numpy_base(weights, data[name]) for name in ("input_a", "input_b"))
    expected = np.sqrt(np.sum((u - v) ** 2, axis=1, keepdims=True))
    inputs = {"input_a": data["input_a"], "input_b": data["input_b"]}
    np.testing.assert_allclose(g.predict(inputs)["output"], expected, rtol=1e-12)
    np.testing.assert_allclose(g.evaluate(data), numpy_loss(weights, data), rtol=1e-12)
    # the shared network is still a model of its own, with the same weights
    np.testing.assert_allclose(base.predict(data["input_a"]), u, rtol=1e-12)


def test_a_siamese_step_follows_the_gradient_of_the_loss():
    """One SGD step of rate 1 moves each weight by its gradient: it matches float64 central
    differences of the NumPy loss, summed over both applications of every shared layer."""
    nl.set_seed(2)
    g, _ = siamese_graph(dtype="float64")
    g.compile(loss={"output": contrastive_loss}, optimizer=SGD(lr=1.0))
    data = pairs()
    before = [w.copy() for w in g.get_weights()]
    g.train_on_batch(data)
    analytic = [b - a for b, a in zip(before, g.get_weights(), strict=True)]
    epsilon = 1e-6
    for position, values in enumerate(before):
        numerical = np.zeros_like(values)
        for index in np.ndindex(values.shape):
            shifted = [w.copy() for w in before]
            shifted[position][index] += epsilon
            plus = numpy_loss(shifted, data)
            shifted[position][index] -= 2 * epsilon
            numerical[index] = (plus - numpy_loss(shifted, data)) / (2 * epsilon)
        np.testing.assert_allclose(analytic[position], numerical, rtol=1e-5, atol=1e-9)


def test_the_siamese_graph_trains_alike_on_cuda_and_on_the_cpu():
    data = pairs(6)
    results = []
    for device in ("cpu", "cuda"):
        nl.set_seed(3)
        g, _ = siamese_graph(device)
        g.compile(loss={"output": contrastive_loss}, optimizer="rmsprop")
        history = g.fit(data, batch_size=3, nb_epoch=2, verbose=0, shuffle=False)
        inputs = {"input_a": data["input_a"], "input_b": data["input_b"]}
        results.append((history.history["loss"], g.predict(inputs)["output"]))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)


def test_the_siamese_example_learns_which_pairs_match():
    """Pairs of the same class (one of two clusters) end up closer than pairs of two."""
    nl.set_seed(4)
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(2, 4)) * 2
    first, second = rng.integers(0, 2, size=(2, 96))
    data = {
        "input_a": centres[first] + 0.3 * rng.normal(size=(96, 4)),
        "input_b": centres[second] + 0.3 * rng.normal(size=(96, 4)),
        "output": (first == second).astype(float),
    }
    g, _ = siamese_graph(dropout=0.1)
    g.compile(loss={"output": contrastive_loss}, optimizer="rmsprop")
    g.fit(data, batch_size=16, nb_epoch=15, verbose=0)
    inputs = {"input_a": data["input_a"], "input_b": data["input_b"]}
    distance = g.predict(inputs)["output"].ravel()
    assert np.mean((distance < 0.5) == (first == second)) > 0.9


def test_a_join_hands_the_lambda_a_dict_by_input_name():
    seen = []

    def weighted_difference(arrays):
        seen.append(list(arrays))
        return arrays["x"] - 2 * arrays["y"]

    g = Graph()
    g.add_input("y", input_shape=(3,))
    g.add_input("x", input_shape=(3,))
    g.add_node(Lambda(weighted_difference), name="diff", inputs=["x", "y"], merge_mode="join")
    g.add_output("out", input="diff")
    X, Y = np.ones((2, 3)), np.full((2, 3), 3.0)
    np.testing.assert_allclose(g.predict({"x": X, "y": Y})["out"], X - 2 * Y)
    assert seen and all(keys == ["x", "y"] for keys in seen)
    # a shared node's join is keyed by the names of its inputs, in their order
    keys = []
    g2 = Graph()
    g2.add_input("left", input_shape=(3,))
    g2.add_input("right", input_shape=(3,))
    g2.add_shared_node(Dense(2), name="codes", inputs=["right", "left"], merge_mode="join")
    g2.add_node(Lambda(lambda d: keys.append(list(d)) or d["right"]), name="r", input="codes")
    g2.add_output("out", input="r")
    R = np.ones((2, 3))
    out = g2.predict({"left": np.zeros((2, 3)), "right": R})["out"]
    W, b = g2.get_weights()
    np.testing.assert_allclose(out, R @ W + b, rtol=1e-5, atol=1e-6)
    assert keys and all(names == ["right", "left"] for names in keys)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda g: g.add_node(Dense(2), name="n", inputs=["a", "b"], merge_mode="join"),
            ValueError,
            "only a Lambda",
        ),
        (
            lambda g: g.add_output("o", inputs=["a", "b"], merge_mode="join"),
            ValueError,
            "only a Lambda",
        ),
        (
            lambda g: (
                g.add_shared_node(Dense(2), name="s", inputs=["a", "b"], merge_mode="join"),
                g.add_node(Dense(2), name="n", input="s"),
            ),
            ValueError,
            "'s', a join",
        ),
        (
            lambda g: g.add_shared_node(
                Dense(2), name="s", inputs=["a", "b"], merge_mode="join", create_output=True
            ),
            ValueError,
            "cannot be an output",
        ),
        (
            lambda g: g.add_shared_node(
                siamese_graph()[0], name="s", inputs=["a", "b"], merge_mode="sum"
            ),
            ValueError,
            "can share a layer or a Sequential, received Graph",
        ),
        (
            lambda g: g.add_shared_node(
                base_network("float64"), name="s", inputs=["a", "b"], merge_mode="sum"
            ),
            TypeError,
            "has dtype float64, the graph uses float32",
        ),
    ],
    ids=["join-into-dense", "join-output", "shared-join-into-dense", "shared-join-output",
         "shared-graph", "shared-sequential-dtype"],
)  # fmt: skip
def test_joins_and_shared_models_refuse_what_they_cannot_do(build, error, match):
    g = Graph()
    g.add_input("a", input_shape=(4,))
    g.add_input("b", input_shape=(4,))
    with pytest.raises(error, match=match):
        build(g)


def test_a_sequential_merge_cannot_join_and_says_what_can():
    branches = [Sequential([Dense(2, input_shape=(3,))]) for _ in range(2)]
    with pytest.raises(ValueError, match=r"'join' gives a dict.*LambdaMerge\(branches, f\)"):
        Merge(branches, mode="join")


def test_the_siamese_graph_round_trips_through_its_config(capsys):
    nl.set_seed(5)
    g, _ = siamese_graph()
    g.summary()
    rows = capsys.readouterr().out.splitlines()
    assert any("(Sequential)" in row and "(None, 3)" in row and "input_a, input_b" in row
               for row in rows)  # fmt: skip
    assert any("(Lambda)" in row and "(None, 1)" in row and "shared" in row for row in rows)
    rebuilt = Graph.from_config(
        g.get_config(), custom_objects={"euclidean_distance": euclidean_distance}
    )
    assert len(rebuilt.get_weights()) == 4
    rebuilt.set_weights(g.get_weights())
    data = pairs(4)
    inputs = {"input_a": data["input_a"], "input_b": data["input_b"]}
    np.testing.assert_array_equal(rebuilt.predict(inputs)["output"], g.predict(inputs)["output"])
