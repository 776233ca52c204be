"""Steps recorded as CUDA graphs and replayed (numlayers.cuda_graphs): the same weights,
losses and outputs as launching every kernel from Python, one launch per step, and
the eager path wherever a graph cannot hold the step. Under the simulator a recording is
the list of launches and copies, replayed in order, so these tests check what replaying
means (frozen arguments, the same arrays, values staged each step) without a GPU; the
GPU check runs them on a real one, through stream capture."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.callbacks import LambdaCallback
from numlayers.devices import cuda_activity
from numlayers.layers import Dense, Dropout, Lambda
from numlayers.models import Sequential
from numlayers.optimizers import SGD, Adam

RNG = np.random.default_rng(0)
X = RNG.uniform(-1, 1, (6, 4)).astype("float32")
Y = np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2]]


def mlp(cuda_graphs, optimizer, middle=None):
    layers = [Dense(5, input_shape=(4,), activation="tanh", seed=1)]
    if middle is not None:
        layers.append(middle)
    layers.append(Dense(3, activation="softmax", seed=2))
    model = Sequential(layers, device="cuda")
    model.compile(optimizer, "categorical_crossentropy", cuda_graphs=cuda_graphs)
    return model


def train_steps(model, steps=3):
    losses = []
    for step in range(steps):
        if step == 2:  # a schedule changes the learning rate between steps
            model.optimizer.lr *= 0.5
        losses.append(model.train_on_batch(X, Y))
    return losses


@pytest.mark.parametrize(
    "optimizer",
    [lambda: SGD(lr=0.1, momentum=0.9, decay=0.01, nesterov=True), lambda: Adam(lr=0.01)],
    ids=["sgd-decay-nesterov", "adam"],
)
def test_replayed_steps_train_as_eager_steps_do(optimizer):
    eager, replayed = mlp(False, optimizer()), mlp(True, optimizer())
    assert train_steps(replayed) == train_steps(eager)
    for a, b in zip(eager.get_weights(), replayed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert replayed.optimizer.iterations == eager.optimizer.iterations == 3
    assert not eager.step_graphs.recorded


def test_a_replayed_step_is_one_launch_and_copies_only_the_batch_and_loss():
    model = mlp(True, "sgd")
    model.train_on_batch(X, Y)  # eager: compiles and allocates
    model.train_on_batch(X, Y)  # recorded, then launched
    with cuda_activity() as step:
        model.train_on_batch(X, Y)
    assert (step.launches, step.graph_launches) == (1, 1)
    assert (step.to_device, step.to_host, step.synchronizations) == (2, 1, 0)


def test_predictions_and_evaluations_replay_too():
    model = mlp(True, "sgd")
    expected = mlp(False, "sgd").predict_on_batch(X)
    for _ in range(3):
        np.testing.assert_array_equal(model.predict_on_batch(X), expected)
    with cuda_activity() as call:
        model.predict_on_batch(X)
    assert (call.launches, call.to_device, call.to_host) == (1, 1, 1)
    assert model.evaluate(X, Y, batch_size=4) == mlp(False, "sgd").evaluate(X, Y, batch_size=4)


def test_each_replay_copies_in_its_own_batch():
    """A replay's batch goes in through the recording's pinned buffers: each call's own
    values, however many replays share the buffers."""
    model, eager = mlp(True, "sgd"), mlp(False, "sgd")
    batches = [X, X[::-1].copy(), 2 * X]
    for batch in batches * 2:
        np.testing.assert_array_equal(model.predict_on_batch(batch), eager.predict_on_batch(batch))
    assert model.step_graphs.recorded and not model.step_graphs.eager


def test_fit_with_callbacks_and_a_short_last_batch_matches_eager_fit():
    histories = []
    for cuda_graphs in (False, True):
        model = mlp(cuda_graphs, Adam(lr=0.01))
        halve = LambdaCallback(on_epoch_end=lambda epoch, logs, m=model: setattr(
            m.optimizer, "lr", m.optimizer.lr * 0.5))  # fmt: skip
        history = model.fit(X, Y, batch_size=4, nb_epoch=2, verbose=0, seed=3, callbacks=[halve])
        histories.append((history.history["loss"], model.get_weights()))
    (eager_losses, eager_weights), (losses, weights) = histories
    assert losses == eager_losses
    for a, b in zip(eager_weights, weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_steps_a_graph_cannot_hold_run_eagerly_with_the_same_results():
    def host_lambda():
        return Lambda(lambda x: x * 2.0, backward=lambda x, grad: grad * 2.0)

    eager, replayed = mlp(False, "sgd", host_lambda()), mlp(True, "sgd", host_lambda())
    assert train_steps(replayed) == train_steps(eager)
    (reason,) = replayed.step_graphs.eager.values()
    assert "copy to the host" in reason


@pytest.mark.extended  # outside the test command's time budget (CI runs it)
def test_sample_weights_are_sent_each_step_so_those_steps_run_eagerly():
    weights = np.linspace(0.5, 1.5, len(X))
    eager, replayed = mlp(False, "sgd"), mlp(True, "sgd")
    for model in (eager, replayed):
        for _ in range(3):
            model.train_on_batch(X, Y, sample_weight=weights)
    (reason,) = replayed.step_graphs.eager.values()
    assert "host data" in reason
    for a, b in zip(eager.get_weights(), replayed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.extended  # outside the test command's time budget (CI runs it)
def test_replaced_optimizer_states_are_recorded_again():
    eager, replayed = mlp(False, Adam()), mlp(True, Adam())
    for model in (eager, replayed):
        train_steps(model, 3)
        model.optimizer.set_state(model.optimizer.get_state())  # new state arrays
        train_steps(model, 2)
    for a, b in zip(eager.get_weights(), replayed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_environment_variable_turns_recording_off(monkeypatch):
    monkeypatch.setenv("NUMLAYERS_CUDA_GRAPHS", "0")
    model = mlp(True, "sgd")
    train_steps(model, 3)
    assert not model.step_graphs.recorded
    with cuda_activity() as step:
        model.train_on_batch(X, Y)
    assert step.graph_launches == 0 and step.launches > 1


def test_dropout_draws_a_new_mask_at_every_replay():
    eager = mlp(False, "sgd", Dropout(0.5, seed=4))
    replayed = mlp(True, "sgd", Dropout(0.5, seed=4))
    assert train_steps(replayed, 4) == train_steps(eager, 4)
    for a, b in zip(eager.get_weights(), replayed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.extended  # outside the test command's time budget (CI runs it)
def test_clipping_set_after_recording_takes_effect():
    eager, replayed = mlp(False, SGD(lr=0.5)), mlp(True, SGD(lr=0.5))
    for model in (eager, replayed):
        train_steps(model, 3)
        model.optimizer.clipnorm = 0.01
        train_steps(model, 2)
    for a, b in zip(eager.get_weights(), replayed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.extended  # 17 s in the simulator: CI runs it apart
def test_a_siamese_step_with_a_loss_function_replays_as_it_runs_eagerly():
    """Keras 0.3's Siamese graph: a shared base network with dropout, a join into a
    traced Lambda and a traced loss function, recorded once and replayed."""
    import numlayers as nl
    from numlayers.testing.reference_models import siamese_data, siamese_graph

    data = siamese_data(6, 4)
    runs = []
    for cuda_graphs in (False, True):
        nl.set_seed(4)
        graph = siamese_graph(6, 5, "cuda", cuda_graphs)
        runs.append(([graph.train_on_batch(data) for _ in range(2)], graph))
    (eager_losses, eager), (replayed_losses, replayed) = runs
    assert replayed_losses == eager_losses
    for a, b in zip(eager.get_weights(), replayed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert replayed.step_graphs.recorded
    with cuda_activity() as step:
        replayed.train_on_batch(data)
    assert (step.launches, step.graph_launches, step.to_host) == (1, 1, 1)
