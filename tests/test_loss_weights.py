"""Keras 0.3's temporal sample weights (``sample_weight_mode="temporal"``) and a Graph's
``loss_weights``: the loss each computes, against NumPy, and what they refuse."""

from __future__ import annotations

import numpy as np
import pytest

import numlayers as nl
from numlayers.layers import LSTM, Dense, Embedding, TimeDistributedDense
from numlayers.models import Graph, Sequential
from numlayers.optimizers import SGD

RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 4, 3))
Y = RNG.standard_normal((6, 4, 2))
STEP_WEIGHTS = np.abs(RNG.standard_normal((6, 4))) * (RNG.random((6, 4)) > 0.3)


def sequence_model(device="cpu", mode="temporal") -> Sequential:
    nl.set_seed(1)
    model = Sequential(device=device, dtype="float64")
    model.add(TimeDistributedDense(2, input_shape=(4, 3)))
    model.compile(SGD(lr=0.1), "mse", sample_weight_mode=mode)
    return model


def test_temporal_weights_weigh_each_timestep(device):
    """Keras 0.3: the mean over steps and samples of ``w * loss``, divided by the share of
    nonzero weights: ``sum(w * loss) / count(w != 0)``."""
    model = sequence_model(device)
    W, b = model.get_weights()
    per_step = np.mean((X @ W + b - Y) ** 2, axis=-1)
    expected = np.sum(per_step * STEP_WEIGHTS) / np.count_nonzero(STEP_WEIGHTS)
    loss = model.test_on_batch(X, Y, sample_weight=STEP_WEIGHTS)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # a weight that is the same at every step of a sample is a sample weight
    per_sample = STEP_WEIGHTS.max(axis=1)
    plain = sequence_model(device, mode=None)
    temporal = sequence_model(device)
    for _ in range(2):
        np.testing.assert_allclose(
            temporal.train_on_batch(X, Y, sample_weight=np.repeat(per_sample[:, None], 4, 1)),
            plain.train_on_batch(X, Y, sample_weight=per_sample),
            rtol=1e-6,
        )
    for got, expected_weight in zip(temporal.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected_weight, rtol=1e-6)


def test_temporal_weights_with_a_mask_weigh_the_unmasked_steps():
    """Masked steps count for nothing; the rest weigh ``mask * w / (mean(mask) *
    count(w != 0))``, as Keras 0.3 combined them."""
    nl.set_seed(2)
    model = Sequential(dtype="float64")
    model.add(Embedding(5, 3, input_length=4, mask_zero=True))
    model.add(LSTM(3, return_sequences=True))
    model.add(TimeDistributedDense(2))
    model.compile("sgd", "mse", sample_weight_mode="temporal")
    ids = np.array(
        [[1, 2, 0, 0], [3, 4, 1, 0], [2, 2, 2, 2], [0, 0, 0, 0], [1, 0, 0, 0], [4, 3, 2, 1]]
    )
    outputs = model.predict(ids)
    mask = (ids != 0).astype(float)
    per_step = np.mean((outputs - Y) ** 2, axis=-1)
    scale = mask * STEP_WEIGHTS / (mask.mean() * np.count_nonzero(STEP_WEIGHTS))
    loss = model.test_on_batch(ids, Y, sample_weight=STEP_WEIGHTS)
    np.testing.assert_allclose(loss, np.sum(per_step * scale), rtol=1e-6)


def two_output_graph(loss_weights=None) -> Graph:
    nl.set_seed(3)
    graph = Graph(dtype="float64")
    graph.add_input("x", input_shape=(3,))
    graph.add_node(Dense(2), name="a", input="x", create_output=True)
    graph.add_node(Dense(1), name="b", input="x", create_output=True)
    graph.compile(SGD(lr=0.1), {"a": "mse", "b": "mse"}, loss_weights=loss_weights)
    return graph


def test_loss_weights_scale_each_output_in_the_total_and_its_gradient():
    data = {"x": X[:, 0], "a": Y[:, 0], "b": Y[:, 0, :1]}
    plain = two_output_graph()
    weighted = two_output_graph({"a": 2.0, "b": 0.0})
    start = plain.get_weights()
    losses = plain.evaluate(data), weighted.evaluate(data)
    plain_logs = plain.fit(data, nb_epoch=1, batch_size=6, verbose=0, shuffle=False).history
    weighted_logs = weighted.fit(data, nb_epoch=1, batch_size=6, verbose=0, shuffle=False)
    history = weighted_logs.history
    # per-output losses are reported as they are; the total weighs them
    np.testing.assert_allclose(history["a_loss"], plain_logs["a_loss"], rtol=1e-9)
    np.testing.assert_allclose(history["loss"][0], 2 * history["a_loss"][0], rtol=1e-9)
    np.testing.assert_allclose(losses[1], 2 * plain_logs["a_loss"][0], rtol=1e-9)
    assert losses[0] > losses[1] / 2
    # SGD moves a's weights twice as far, and b's not at all
    after_plain, after_weighted = plain.get_weights(), weighted.get_weights()
    for position in (0, 1):
        np.testing.assert_allclose(
            after_weighted[position] - start[position],
            2 * (after_plain[position] - start[position]),
            rtol=1e-9,
        )
    for position in (2, 3):
        np.testing.assert_array_equal(after_weighted[position], start[position])


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda: Sequential([Dense(2, input_shape=(3,))]).compile(
                "sgd", "mse", sample_weight_mode="temporal"
            ),
            ValueError,
            r"temporal sample weights need an output of shape \(samples, timesteps, features\)",
        ),
        (
            lambda: sequence_model().train_on_batch(X, Y, sample_weight=np.ones(6)),
            ValueError,
            r"must be non-negative numbers of shape \(6, 4\) \(samples, timesteps\)",
        ),
        (
            lambda: sequence_model().fit(X, Y, class_weight={0: 1.0}, verbose=0),
            ValueError,
            "class_weight cannot weigh",
        ),
        (
            lambda: sequence_model(mode="sometimes"),
            ValueError,
            "must be None or 'temporal', received 'sometimes'",
        ),
        (lambda: two_output_graph({"c": 1.0}), ValueError, r"names \['c'\], which are not outputs"),
        (lambda: two_output_graph({"a": -1.0}), ValueError, "non-negative number, received -1.0"),
    ],
    ids=["flat-output", "per-sample-given", "class-weight", "bad-mode", "unknown-output",
         "negative"],
)  # fmt: skip
def test_weighting_refuses_what_it_cannot_do(build, error, match):
    with pytest.raises(error, match=match):
        build()
