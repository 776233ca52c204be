"""What a CUDA step asks of the GPU: kernel launches, copies and synchronisations,
counted by the toolkit's launcher and the CUDA device (the simulator counts the launches
a GPU would get). On a GPU each launch from Python costs about as much as a small
layer's kernel and each device-to-host copy waits for the queue, so these counts are
the step's speed: the tests hold them down."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import cuda_activity
from numlayers.layers import GRU, LSTM, Dense, SimpleRNN
from numlayers.models import Sequential

X = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype("float32")
Y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]


def three_layer_mlp() -> Sequential:
    model = Sequential(
        [
            Dense(5, input_shape=(6,), activation="relu"),
            Dense(5, activation="relu"),
            Dense(3, activation="softmax"),
        ],
        device="cuda",
    )
    model.compile("sgd", "categorical_crossentropy")
    model.train_on_batch(X, Y)  # compiles, allocates the step's buffers
    return model


def test_an_mlp_training_step_launches_few_kernels_and_copies_only_the_batch_and_loss():
    model = three_layer_mlp()
    with cuda_activity() as step:
        model.train_on_batch(X, Y)
    assert step.launches <= 30
    assert (step.to_device, step.to_host, step.synchronizations) == (2, 1, 0)


def test_prediction_copies_the_batch_in_and_the_outputs_out():
    model = three_layer_mlp()
    model.predict_on_batch(X)
    with cuda_activity() as step:
        model.predict_on_batch(X)
    assert step.launches <= 10
    assert (step.to_device, step.to_host) == (1, 1)


#: launches of a forward and backward pass today, as (fixed, per step): the recurrent
#: layers still launch per step (258, 461 and 260 launches over 50 steps; a pass in a
#: few launches is the goal). The ceilings keep a change from adding more unnoticed.
RECURRENT_LAUNCHES = {SimpleRNN: (8, 5), GRU: (11, 9), LSTM: (10, 5)}
STEPS = 4


@pytest.mark.parametrize("layer_class", list(RECURRENT_LAUNCHES), ids=lambda c: c.__name__)
def test_recurrent_passes_launch_no_more_kernels_than_today(layer_class):
    layer = layer_class(3, input_shape=(STEPS, 2)).to("cuda")
    x = layer.device.asarray(np.ones((2, STEPS, 2), "float32"))
    grad = layer.device.asarray(np.ones((2, 3), "float32"))
    layer.forward(x, True)
    layer.backward(grad)
    with cuda_activity() as passes:
        layer.forward(x, True)
        layer.backward(grad)
    fixed, per_step = RECURRENT_LAUNCHES[layer_class]
    assert passes.launches <= fixed + per_step * STEPS
    assert (passes.to_device, passes.to_host, passes.synchronizations) == (0, 0, 0)
