"""Concurrent calls on one model take turns, and a Ctrl-C during fit never leaves the
weights half-updated."""

from __future__ import annotations

import functools
import signal
import threading

import numpy as np
import pytest

from numlayers.layers import Dense
from numlayers.models import Sequential
from numlayers.testing import run_interleaved


def two_layer_model(seed: int = 0) -> Sequential:
    model = Sequential()
    model.add(Dense(8, input_shape=(4,), activation="tanh", seed=seed))
    model.add(Dense(3, seed=seed + 1))
    model.compile("sgd", "mse")
    return model


def test_threads_predicting_with_one_model_get_their_own_results():
    model = two_layer_model()
    inputs = [np.random.default_rng(i).standard_normal((60, 4)).astype("float32") for i in range(4)]
    expected = [model.predict(x, batch_size=7) for x in inputs]
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(4)}

    def work(i: int) -> None:
        for _ in range(20):
            results[i].append(model.predict(inputs[i], batch_size=7))

    run_interleaved([functools.partial(work, i) for i in range(4)])
    for i in range(4):
        for result in results[i]:
            np.testing.assert_array_equal(result, expected[i])


@pytest.fixture
def python_handles_ctrl_c():
    """Python's own Ctrl-C handler for the test, whatever an earlier test in this process
    left installed: fit holds interrupts only where that handler is in place."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def one_batch_and_weights_after_one_step(seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """A batch of 8 samples and :func:`two_layer_model`'s weights after one step on it."""
    X = np.random.default_rng(seed).standard_normal((8, 4)).astype("float32")
    y = np.zeros((8, 3), "float32")
    reference = two_layer_model()
    reference.fit(X, y, batch_size=8, nb_epoch=1, verbose=0, shuffle=False)
    return X, y, reference.get_weights()


def assert_stepped_once(model: Sequential, expected_weights: list) -> None:
    for stepped, expected in zip(model.get_weights(), expected_weights, strict=True):
        np.testing.assert_allclose(stepped, expected, rtol=1e-6)


def fit_interrupted_between_weights(model: Sequential, X, y, meanwhile=lambda: None) -> None:
    """Fit ``model`` while a SIGINT lands in its first update between the first and the
    last weights, with ``meanwhile`` run right after it; the interrupt must reach fit."""
    update = model.optimizer.update

    def interrupted_update(params, grads, device, dtype):
        update(params[:2], grads[:2], device, dtype)
        signal.raise_signal(signal.SIGINT)
        meanwhile()
        update(params[2:], grads[2:], device, dtype)

    model.optimizer.update = interrupted_update
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, batch_size=8, nb_epoch=3, verbose=0, shuffle=False)


#: signal handlers run in the main thread only
main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals: main thread"
)


@main_thread_only
def test_an_interrupt_during_the_update_waits_until_every_weight_is_stepped(
    python_handles_ctrl_c,
):
    X, y, expected_weights = one_batch_and_weights_after_one_step(5)
    model = two_layer_model()
    fit_interrupted_between_weights(model, X, y)
    assert_stepped_once(model, expected_weights)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@main_thread_only
def test_another_thread_training_meanwhile_neither_takes_nor_lifts_the_held_interrupt(
    python_handles_ctrl_c,
):
    X, y, expected_weights = one_batch_and_weights_after_one_step(6)
    model = two_layer_model()
    other = two_layer_model(seed=3)
    failures: list[BaseException] = []

    def other_step() -> None:
        try:
            other.train_on_batch(X, y)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    def other_thread_trains() -> None:  # its update runs while the main one is held
        worker = threading.Thread(target=other_step)
        worker.start()
        worker.join()

    fit_interrupted_between_weights(model, X, y, meanwhile=other_thread_trains)
    assert failures == []
    assert_stepped_once(model, expected_weights)
