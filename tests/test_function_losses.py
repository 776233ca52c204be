"""Losses written as functions ``f(y_true, y_pred)``, as Keras 0.3's custom objectives:
traced, so they run on the model's device and need no gradient written."""

from __future__ import annotations

import numpy as np
import pytest

import numlayers as nl
from numlayers import backend as K
from numlayers.layers import Dense, TimeDistributedDense
from numlayers.losses import FunctionLoss
from numlayers.models import Sequential
from numlayers.optimizers import SGD
from numlayers.testing import tolerance


def squared_error(y_true, y_pred):  # one value an element, like mse
    return K.square(y_pred - y_true)


def absolute_error_per_sample(y_true, y_pred):  # one value a sample, like mae
    return K.mean(K.abs(y_pred - y_true), axis=-1)


def hinge_of_the_batch(y_true, y_pred):  # one value for the batch
    return K.mean(K.maximum(1.0 - y_true * y_pred, 0.0))


def model(device, dtype, sequence: bool = False) -> Sequential:
    net = Sequential(device=device, dtype=dtype)
    if sequence:
        net.add(TimeDistributedDense(2, input_shape=(3, 4), activation="tanh"))
    else:
        net.add(Dense(2, input_shape=(4,), activation="tanh"))
    return net


def data(sequence: bool = False):
    rng = np.random.default_rng(0)
    shape = (6, 3) if sequence else (6,)
    return rng.normal(size=(*shape, 4)), rng.normal(size=(*shape, 2))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("function", "builtin", "sequence"),
    [
        (squared_error, "mse", False),
        (squared_error, "mse", True),
        (absolute_error_per_sample, "mae", False),
        (absolute_error_per_sample, "mae", True),
    ],
    ids=["per-element", "per-element-sequence", "per-sample", "per-sample-sequence"],
)
def test_a_function_trains_as_the_builtin_loss_it_writes(
    device, dtype, function, builtin, sequence
):
    """Same values, same steps, sample weights included, on every device."""
    X, Y = data(sequence)
    weights = np.array([1.0, 0.0, 2.0, 1.0, 0.5, 1.0])
    runs = []
    for loss in (function, builtin):
        nl.set_seed(7)
        net = model(device, dtype, sequence)
        net.compile(SGD(lr=0.1), loss)
        history = net.fit(X, Y, batch_size=3, nb_epoch=2, verbose=0, shuffle=False,
                          sample_weight=weights)  # fmt: skip
        runs.append((history.history["loss"], net.evaluate(X, Y, verbose=0), net.get_weights()))
    rtol = tolerance(np.dtype(dtype))["rtol"] * 10
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=rtol)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=rtol)
    for got, expected in zip(runs[0][2], runs[1][2], strict=True):
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-6)


def test_a_batch_loss_step_follows_its_gradient(device):
    """A function returning one value for the batch: one SGD step of rate 1 moves the
    weights by float64 central differences of that value."""
    nl.set_seed(8)
    net = model(device, "float64")
    net.compile(SGD(lr=1.0), hinge_of_the_batch)
    X, Y = data()
    Y = np.sign(Y)

    def value(weights):
        W, b = weights
        return float(np.mean(np.maximum(1.0 - Y * np.tanh(X @ W + b), 0.0)))

    before = [w.copy() for w in net.get_weights()]
    np.testing.assert_allclose(net.evaluate(X, Y, verbose=0), value(before), rtol=1e-12)
    net.train_on_batch(X, Y)
    for position, values in enumerate(before):
        numerical = np.zeros_like(values)
        for index in np.ndindex(values.shape):
            shifted = [w.copy() for w in before]
            shifted[position][index] += 1e-6
            plus = value(shifted)
            shifted[position][index] -= 2e-6
            numerical[index] = (plus - value(shifted)) / 2e-6
        moved = before[position] - net.get_weights()[position]
        np.testing.assert_allclose(moved, numerical, rtol=1e-5, atol=1e-9)


def test_functions_a_trace_cannot_take_are_refused_by_name():
    def branching(y_true, y_pred):
        if float(np.sum(y_pred)) > 0:  # a value read on the host
            return K.square(y_pred - y_true)
        return K.abs(y_pred - y_true)

    def two_values_a_sample(y_true, y_pred):
        return K.square(y_pred - y_true)[:, :, None] * np.ones(2)

    X, Y = data()
    for function, match in (
        (branching, "loss function branching cannot be traced"),
        (two_values_a_sample, r"loss function two_values_a_sample returned values of shape"),
    ):
        net = model("cpu", "float32")
        net.compile("sgd", function)
        with pytest.raises(ValueError, match=match):
            net.train_on_batch(X, Y)
    with pytest.raises(ValueError, match="unknown loss 'msq'"):
        model("cpu", "float32").compile("sgd", "msq")


def test_a_function_loss_still_computes_values_on_numpy_arrays():
    loss = FunctionLoss(squared_error)
    assert repr(loss) == "<FunctionLoss squared_error>"
    np.testing.assert_allclose(loss(np.zeros((2, 2)), np.ones((2, 2))), np.ones((2, 2)))
