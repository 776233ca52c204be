"""BatchNormalization as a layer: running statistics over training steps, the weights
file, moving to CUDA, training on the digits, argument and input errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

import numlayers as nl
from numlayers.layers import Activation, BatchNormalization, Dense
from numlayers.models import Sequential
from numlayers.optimizers import SGD
from numlayers.testing import tolerance


@pytest.mark.parametrize(
    ("shape", "axis"), [((6, 3), -1), ((2, 3, 2, 2), 1)], ids=["features", "channels-first"]
)
def test_running_statistics_after_training_steps_match_numpy(device, shape, axis):
    layer = BatchNormalization(momentum=0.7, axis=axis, input_shape=shape[1:], dtype="float64")
    layer.to(device)
    rng = np.random.default_rng(0)
    others = tuple(a for a in range(len(shape)) if a != axis % len(shape))
    running_mean, running_var = np.zeros(shape[axis]), np.ones(shape[axis])
    for step in range(3):
        x = rng.normal(step, 1.0 + step, shape)
        layer.forward(layer.prepare_input(x), train=True)
        running_mean = 0.7 * running_mean + 0.3 * x.mean(axis=others)
        running_var = 0.7 * running_var + 0.3 * x.var(axis=others)
    layer.forward(layer.prepare_input(x), train=False)  # prediction leaves them alone
    np.testing.assert_allclose(layer.get_weights()[2], running_mean, **tolerance(np.float64))
    np.testing.assert_allclose(layer.get_weights()[3], running_var, **tolerance(np.float64))
    assert layer.param_names == ["gamma", "beta", "running_mean", "running_var"]


def test_running_statistics_get_zero_gradients_in_training():
    layer = BatchNormalization(input_shape=(3,), dtype="float64")
    x = np.random.default_rng(1).normal(size=(4, 3))
    layer.forward(layer.prepare_input(x), train=False)
    layer.backward(np.ones((4, 3)))  # prediction: real gradients
    assert np.abs(layer.get_gradients()[2]).max() > 0
    layer.forward(layer.prepare_input(x), train=True)
    layer.backward(np.ones((4, 3)))
    assert not np.any(layer.get_gradients()[2]) and not np.any(layer.get_gradients()[3])


def model_with_batch_normalization(device="cpu"):
    model = Sequential(device=device)
    model.add(Dense(5, input_shape=(4,), seed=0))
    model.add(BatchNormalization(momentum=0.5))
    model.add(Activation("tanh"))
    model.add(Dense(2, activation="softmax", seed=1))
    model.compile(optimizer=SGD(lr=0.1), loss="categorical_crossentropy")
    return model


def test_a_trained_model_saves_loads_moves_to_cuda_and_predicts_the_same(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, (16, 4)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, 16)]
    model = model_with_batch_normalization()
    model.fit(x, y, batch_size=8, nb_epoch=2, verbose=0)
    running_mean = model.layers[1].get_weights()[2]
    assert np.abs(running_mean).max() > 0.1  # trained: no longer the initial zeros
    expected = model.predict(x)
    path = tmp_path / "bn.npz"
    model.save_weights(str(path))
    loaded = model_with_batch_normalization()
    loaded.load_weights(str(path))
    np.testing.assert_array_equal(loaded.layers[1].get_weights()[2], running_mean)
    np.testing.assert_allclose(loaded.predict(x), expected, **tolerance(np.float32))
    loaded.to("cuda")
    np.testing.assert_allclose(loaded.predict(x), expected, **tolerance(np.float32))
    np.testing.assert_array_equal(loaded.layers[1].get_weights()[2], running_mean)


def digits_accuracies(batch_normalization, epochs):
    """Held-out accuracy after each epoch of an MLP on the digits, with or without a
    BatchNormalization after its hidden Dense."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = np.eye(10, dtype="float32")[digits.target]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=digits.target
    )
    nl.set_seed(0)
    model = Sequential()
    model.add(Dense(32, input_shape=(64,), seed=3))
    if batch_normalization:
        model.add(BatchNormalization())
    model.add(Activation("relu"))
    model.add(Dense(10, activation="softmax", seed=4))
    model.compile(optimizer=SGD(lr=0.05), loss="categorical_crossentropy", metrics=["accuracy"])
    accuracies = []
    for _ in range(epochs):
        model.fit(x_train, y_train, batch_size=32, nb_epoch=1, verbose=0)
        accuracies.append(model.evaluate(x_test, y_test, batch_size=512)[1])
    return accuracies


def test_batch_normalization_reaches_the_plain_mlp_accuracy_in_fewer_epochs():
    epochs = 8
    plain = digits_accuracies(False, epochs)
    normalised = digits_accuracies(True, epochs)
    reached = next(i for i, accuracy in enumerate(normalised) if accuracy >= plain[-1])
    assert reached + 1 < epochs, (plain, normalised)
    assert max(normalised) >= plain[-1] > 0.8


def test_bad_arguments_and_inputs_raise_errors_naming_the_layer():
    with pytest.raises(ValueError, match="mode must be 0"):
        BatchNormalization(mode=2)
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(momentum=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        BatchNormalization(epsilon=0)
    with pytest.raises(ValueError, match="initialisation"):
        BatchNormalization(gamma_init="nope")
    with pytest.raises(ValueError, match=r"batch_normalization_\d+.*axis 0"):
        BatchNormalization(axis=0, input_shape=(3,))
    with pytest.raises(ValueError, match=r"batch_normalization_\d+.*axis 3"):
        BatchNormalization(axis=3, input_shape=(2, 3))
    with pytest.raises(ValueError, match=r"batch_normalization_\d+.*rank 2, 3 or 4"):
        BatchNormalization(input_shape=(2, 2, 2, 2))
    layer = BatchNormalization(input_shape=(3,))
    with pytest.raises(ValueError, match=layer.name):
        layer.set_weights([np.ones(3)] * 3)
    with pytest.raises(ValueError, match=r"built for 3 features"):
        layer.set_input_shape((None, 4))


def test_running_statistics_are_not_given_to_the_optimizer_and_count_as_non_trainable():
    model = Sequential()
    model.add(BatchNormalization(input_shape=(3,)))
    model.compile("adam", "mse")
    layer = model.layers[0]
    params, grads = layer.trained_weights()
    assert [p.shape for p in params] == [(3,), (3,)] and len(grads) == 2
    out = io.StringIO()
    model.summary(file=out)
    assert "Trainable params: 6" in out.getvalue()
    assert "Non-trainable params: 6" in out.getvalue()
