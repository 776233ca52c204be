"""fit_generator and evaluate_generator (Keras 0.3): batches from a generator on worker
threads train as the same batches given to fit, and what goes wrong is raised."""

from __future__ import annotations

import threading
import traceback

import numpy as np
import pytest

import numlayers as nl
from numlayers.callbacks import Callback
from numlayers.generators import BatchQueue, GeneratorEnded
from numlayers.layers import Dense
from numlayers.models import Graph, Sequential
from numlayers.optimizers import SGD

RNG = np.random.default_rng(0)
X = RNG.normal(size=(20, 3))
Y = (X @ np.array([[1.0, 0.0], [-2.0, 1.0], [0.5, 0.5]]) > 0).astype(float)
WEIGHTS = np.linspace(0.5, 1.5, 20)


def looping_batches(batch_size: int = 5, weights: bool = False):
    """Keras 0.3's generator contract: loop over the data forever, in order."""
    while True:
        for start in range(0, len(X), batch_size):
            rows = slice(start, start + batch_size)
            yield (X[rows], Y[rows], WEIGHTS[rows]) if weights else (X[rows], Y[rows])


def classifier() -> Sequential:
    nl.set_seed(1)
    model = Sequential([Dense(2, input_shape=(3,), activation="softmax")])
    model.compile(SGD(lr=0.5), "categorical_crossentropy")
    return model


def test_batches_from_a_generator_train_as_the_same_batches_given_to_fit():
    """(On the CPU: the batches reach the device through the same step as fit's.)"""
    runs = []
    for use_generator in (True, False):
        model = classifier()
        if use_generator:
            history = model.fit_generator(
                looping_batches(weights=True),
                samples_per_epoch=20,
                nb_epoch=3,
                verbose=0,
                show_accuracy=True,
                validation_data=(X[:8], Y[:8]),
                class_weight={0: 1.0, 1: 2.0},
            )
        else:
            history = model.fit(
                X,
                Y,
                batch_size=5,
                nb_epoch=3,
                verbose=0,
                shuffle=False,
                show_accuracy=True,
                validation_data=(X[:8], Y[:8]),
                sample_weight=WEIGHTS,
                class_weight={0: 1.0, 1: 2.0},
            )
        runs.append((history.history, model.get_weights()))
    (generated, generated_weights), (fitted, fitted_weights) = runs
    assert set(generated) == {"loss", "acc", "val_loss", "val_acc"}
    for key in fitted:
        np.testing.assert_allclose(generated[key], fitted[key], rtol=1e-6, err_msg=key)
    for got, expected in zip(generated_weights, fitted_weights, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_validation_and_evaluation_from_generators_average_over_samples():
    model = classifier()
    loss, acc = model.evaluate(X, Y, show_accuracy=True)
    generated = model.evaluate_generator(looping_batches(), 20, show_accuracy=True)
    np.testing.assert_allclose(generated, [loss, acc], rtol=1e-6)
    # batches of 7, 7, 6 and 7 for 21 samples asked: 27 read, averaged by samples
    np.testing.assert_allclose(model.evaluate_generator(looping_batches(7), 21), model.evaluate(
        np.concatenate([X, X[:7]]), np.concatenate([Y, Y[:7]])), rtol=1e-6)  # fmt: skip
    history = model.fit_generator(
        looping_batches(), 20, 2, verbose=0, validation_data=looping_batches(), nb_val_samples=20
    )
    assert len(history.history["val_loss"]) == 2
    np.testing.assert_allclose(history.history["val_loss"][-1], model.evaluate(X, Y), rtol=1e-6)


def test_a_graph_takes_dicts_of_arrays_and_of_sample_weights():
    def graph():
        nl.set_seed(2)
        g = Graph()
        g.add_input("x", input_shape=(3,))
        g.add_node(Dense(2, activation="softmax"), name="p", input="x", create_output=True)
        g.compile(SGD(lr=0.5), {"p": "categorical_crossentropy"})
        return g

    def batches():
        while True:
            for start in range(0, 20, 10):
                rows = slice(start, start + 10)
                yield {"x": X[rows], "p": Y[rows]}, {"p": WEIGHTS[rows]}

    generated, fitted = graph(), graph()
    generated.fit_generator(batches(), samples_per_epoch=20, nb_epoch=2, verbose=0)
    fitted.fit({"x": X, "p": Y}, batch_size=10, nb_epoch=2, verbose=0, shuffle=False,
               sample_weight={"p": WEIGHTS})  # fmt: skip
    for got, expected in zip(generated.get_weights(), fitted.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(
        generated.evaluate_generator(batches(), nb_val_samples=20),
        generated.evaluate({"x": X, "p": Y}, sample_weight={"p": WEIGHTS}),
        rtol=1e-6,
    )


class BatchCounter(Callback):
    def __init__(self):
        super().__init__()
        self.sizes = []

    def on_batch_end(self, batch, logs=None):
        self.sizes.append(logs["size"])


def test_several_workers_share_one_python_generator_and_every_batch_trains_once():
    yielded = []

    def counted():
        while True:
            yielded.append(1)
            yield X[:4], Y[:4]

    model = classifier()
    counter = BatchCounter()
    before = threading.active_count()
    model.fit_generator(counted(), 40, 3, verbose=0, callbacks=[counter], nb_worker=4)
    assert counter.sizes == [4] * 30  # no batch lost, none run twice, no worker failed
    assert 30 <= len(yielded) <= 30 + 10 + 4  # the rest were read ahead, at most a queue
    assert threading.active_count() == before  # the workers stopped with the fit


def test_an_epoch_longer_than_asked_warns_and_a_callback_can_stop_mid_epoch():
    model = classifier()
    with pytest.warns(UserWarning, match=r"trained on 20 samples, more than samples_per_epoch=18"):
        model.fit_generator(looping_batches(7), 18, 1, verbose=0)

    class StopAfterTwo(BatchCounter):
        def on_batch_end(self, batch, logs=None):
            super().on_batch_end(batch, logs)
            if len(self.sizes) == 2:
                self.model.stop_training = True

    stopper = StopAfterTwo()
    history = model.fit_generator(looping_batches(), 20, 5, verbose=0, callbacks=[stopper])
    assert stopper.sizes == [5, 5] and len(history.history["loss"]) == 1


def test_what_goes_wrong_in_a_generator_is_raised_by_the_fit():
    model = classifier()

    def failing():
        yield X[:5], Y[:5]
        raise OSError("the data disk went away")

    with pytest.raises(OSError, match="the data disk went away") as raised:
        model.fit_generator(failing(), 20, 1, verbose=0)
    frames = traceback.extract_tb(raised.value.__traceback__)
    assert any(frame.name == "failing" for frame in frames)  # the generator's own frame
    with pytest.raises(GeneratorEnded, match="ended after 2 batches; it must loop"):
        model.fit_generator(iter([(X[:5], Y[:5])] * 2), 20, 1, verbose=0)
    with pytest.raises(
        TypeError, match=r"expected \(X, y\) or \(X, y, sample_weight\), received a ndarray"
    ):
        model.fit_generator(iter([X] * 3), 20, 1, verbose=0)
    with pytest.raises(ValueError, match=r"targets of shape \(None, 2\)"):
        model.fit_generator(iter([(X, Y[:, 0])] * 3), 20, 1, verbose=0)
    with pytest.raises(TypeError, match="expected a generator or an iterator, received list"):
        model.fit_generator([(X, Y)], 20, 1, verbose=0)
    with pytest.raises(ValueError, match="give nb_val_samples"):
        model.fit_generator(looping_batches(), 20, 1, verbose=0, validation_data=looping_batches())
    with pytest.raises(ValueError, match="samples_per_epoch must be an int >= 1, received 0"):
        model.fit_generator(looping_batches(), 0, 1, verbose=0)
    with pytest.raises(ValueError, match="nb_worker must be an int >= 1, received 0"):
        model.fit_generator(looping_batches(), 20, 1, verbose=0, nb_worker=0)
    with pytest.raises(ValueError, match="give the number of samples"):
        model.evaluate_generator(looping_batches())


def test_a_batch_queue_stops_its_workers_even_when_they_wait():
    before = threading.active_count()
    with BatchQueue(looping_batches(), workers=3, max_queued=2, owner="test") as batches:
        first = batches.get()
    assert first[0].shape == (5, 3)
    assert threading.active_count() == before
