"""Recurrent layers beyond the catalogue: masks, stateful layers, wrappers, bad inputs, training."""

from __future__ import annotations

import numpy as np
import pytest

import numlayers as nl
from numlayers.layers import (
    GRU,
    LSTM,
    Bidirectional,
    Dense,
    Embedding,
    SimpleRNN,
    TimeDistributed,
)
from numlayers.models import Sequential
from numlayers.testing import gradient_check, tolerance
from numlayers.testing.catalogue import _recurrent_reference

KINDS = {"rnn": SimpleRNN, "gru": GRU, "lstm": LSTM}


def masked_reference(kind, x, mask, weights, return_sequences, go_backwards):
    """Reference with Keras 0.3's mask rule: a masked step keeps the previous state."""
    reference = _recurrent_reference(kind, True, go_backwards)
    steps = x.shape[1]
    outputs = np.zeros(
        (x.shape[0], steps, weights[0].shape[1] // {"rnn": 1, "gru": 3, "lstm": 4}[kind])
    )
    for b in range(x.shape[0]):
        kept = [t for t in range(steps) if mask[b, t]]
        if not kept:
            continue
        full = reference(x[b : b + 1, kept], weights)[0]
        # the state after each step equals the state after the last kept step so far
        order = range(steps - 1, -1, -1) if go_backwards else range(steps)
        state = np.zeros(outputs.shape[2])
        position = 0
        kept_order = list(reversed(kept)) if go_backwards else kept
        for t in order:
            if mask[b, t]:
                state = full[kept.index(kept_order[position])]
                position += 1
            outputs[b, t] = state
    if return_sequences:
        return outputs
    last = 0 if go_backwards else steps - 1
    return outputs[:, last]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
def test_masked_steps_keep_the_state_on_every_device(kind, go_backwards, device, dtype):
    nl.set_seed(0)
    layer = KINDS[kind](
        3,
        input_shape=(5, 2),
        activation="tanh",
        return_sequences=True,
        go_backwards=go_backwards,
        dtype=dtype,
    ).to(device)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 5, 2))
    mask = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=dtype)
    out = device.to_host(layer.forward(layer.prepare_input(x), mask=device.asarray(mask)))
    expected = masked_reference(kind, x, mask, layer.get_weights(), True, go_backwards)
    np.testing.assert_allclose(out, expected, **tolerance(dtype))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_masked_gradients_match_finite_differences(kind):
    """Masked steps get no gradient; the gradient still flows past them."""
    nl.set_seed(1)
    layer = KINDS[kind](3, input_shape=(4, 2), activation="tanh", dtype="float64")
    mask = np.array([[1, 0, 1, 1], [1, 1, 0, 0]], dtype=float)

    original_forward = layer.forward

    def forward_with_mask(x, train=False, mask_arg=None):
        return original_forward(x, train, mask=mask)

    layer.forward = forward_with_mask  # type: ignore[method-assign]
    x = np.random.default_rng(2).uniform(-1, 1, (2, 4, 2))
    gradient_check(layer, x)
    layer.forward(layer.prepare_input(x))
    grad_x = layer.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(grad_x[0, 1], 0.0)
    np.testing.assert_array_equal(grad_x[1, 2:], 0.0)


def test_masks_from_embedding_reach_the_lstm_and_padding_changes_nothing():
    nl.set_seed(2)
    model = Sequential(dtype="float64")
    model.add(Embedding(10, 4, input_length=6, mask_zero=True))
    model.add(LSTM(3, return_sequences=False))
    model.add(Dense(1, activation="sigmoid"))
    short = np.array([[3, 5, 2, 0, 0, 0]])
    same_prefix_other_padding = np.array([[3, 5, 2, 0, 0, 0]])
    np.testing.assert_array_equal(model.predict(short), model.predict(same_prefix_other_padding))
    no_mask = Sequential(dtype="float64")
    no_mask.add(Embedding(10, 4, input_length=6))
    no_mask.add(LSTM(3))
    no_mask.add(Dense(1, activation="sigmoid"))
    no_mask.set_weights(model.get_weights())
    assert not np.allclose(no_mask.predict(short), model.predict(short))
    # the masked LSTM equals one run on the unpadded prefix
    prefix = Sequential(dtype="float64")
    prefix.add(Embedding(10, 4, input_length=3))
    prefix.add(LSTM(3))
    prefix.add(Dense(1, activation="sigmoid"))
    prefix.set_weights(model.get_weights())
    np.testing.assert_allclose(model.predict(short), prefix.predict(short[:, :3]), rtol=1e-12)


def test_return_sequences_passes_the_input_mask_on():
    model = Sequential()
    model.add(Embedding(10, 4, input_length=5, mask_zero=True))
    model.add(GRU(3, return_sequences=True))
    model.add(TimeDistributed(Dense(2)))
    ids = np.array([[1, 2, 0, 0, 0]])
    model.forward(ids)
    np.testing.assert_array_equal(model.layers[1].get_output_mask(), [[1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(model.layers[2].get_output_mask(), [[1, 1, 0, 0, 0]])


@pytest.mark.parametrize("activation", [None, "softmax"], ids=["default", "softmax"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_stateful_layers_carry_state_across_batches_until_reset(kind, activation, device):
    nl.set_seed(3)
    make = KINDS[kind]
    options = {} if activation is None else {"activation": activation}
    layer = make(2, batch_input_shape=(2, 2, 2), stateful=True, dtype="float64", **options)
    layer = layer.to(device)
    x = np.random.default_rng(4).uniform(-1, 1, (2, 4, 2))
    whole = make(2, input_shape=(4, 2), dtype="float64", **options).to(device)
    whole.set_weights(layer.get_weights())
    expected = device.to_host(whole.forward(whole.prepare_input(x)))
    device.to_host(layer.forward(layer.prepare_input(x[:, :2])))
    second = device.to_host(layer.forward(layer.prepare_input(x[:, 2:])))
    np.testing.assert_allclose(second, expected, rtol=1e-10)
    layer.reset_states()
    fresh = device.to_host(layer.forward(layer.prepare_input(x[:, 2:]))).copy()
    restarted = make(2, input_shape=(2, 2), dtype="float64", **options).to(device)
    restarted.set_weights(layer.get_weights())
    again = device.to_host(restarted.forward(restarted.prepare_input(x[:, 2:])))
    np.testing.assert_allclose(fresh, again, rtol=1e-10)


def test_bad_recurrent_arguments_and_inputs():
    with pytest.raises(ValueError, match="batch_input_shape"):
        LSTM(3, input_shape=(4, 2), stateful=True)
    with pytest.raises(ValueError, match="rank 3"):
        model = Sequential()
        model.add(Dense(4, input_shape=(3,)))
        model.add(LSTM(2))
    layer = GRU(2, input_shape=(4, 3))
    with pytest.raises(ValueError, match=layer.name):
        layer.forward(np.ones((2, 4), "float32"))
    with pytest.raises(ValueError, match=layer.name):
        layer.forward(np.ones((2, 4, 5), "float32"))
    with pytest.raises(ValueError, match="dropout_W"):
        LSTM(2, dropout_W=1.0)
    for kind in KINDS.values():  # softmax mixes units: a cell activation, not a gate one
        label = f"{kind.__name__} layer 'cell': inner_activation 'softmax' cannot run"
        with pytest.raises(ValueError, match=label):
            kind(2, inner_activation="softmax", name="cell")
    with pytest.raises(RuntimeError, match="not stateful"):
        SimpleRNN(2, input_shape=(3, 1)).reset_states()
    with pytest.raises(TypeError, match="recurrent layer"):
        Bidirectional(Dense(2))


def test_keras_defaults_and_weight_layout():
    lstm = LSTM(4, input_shape=(3, 2))
    assert (lstm.activation, lstm.inner_activation) == ("tanh", "hard_sigmoid")
    W, U, b = lstm.get_weights()
    assert W.shape == (2, 16) and U.shape == (4, 16) and b.shape == (16,)
    np.testing.assert_array_equal(b[4:8], 1.0)  # forget_bias_init="one"
    np.testing.assert_array_equal(np.delete(b, np.s_[4:8]), 0.0)
    assert SimpleRNN(2).activation == "sigmoid" and GRU(2).activation == "sigmoid"
    gru = GRU(4, input_shape=(3, 2))
    assert [w.shape for w in gru.get_weights()] == [(2, 12), (4, 8), (4, 4), (12,)]
    assert gru.param_names == ["W", "U_zr", "U_h", "b"]


def test_dropout_on_inputs_and_state_trains_and_is_off_at_inference():
    nl.set_seed(5)
    layer = LSTM(3, input_shape=(4, 2), dropout_W=0.5, dropout_U=0.5, seed=1, dtype="float64")
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4, 2))
    inference = layer.forward(layer.prepare_input(x), train=False).copy()
    np.testing.assert_array_equal(layer.forward(layer.prepare_input(x), train=False), inference)
    training = layer.forward(layer.prepare_input(x), train=True)
    assert not np.allclose(training, inference)
    grad = layer.backward(np.ones_like(training))
    assert grad.shape == x.shape and np.all(np.isfinite(grad))


def test_an_lstm_learns_to_sum_a_sequence():
    nl.set_seed(6)
    rng = np.random.default_rng(6)
    X = rng.uniform(0, 1, (256, 6, 1)).astype("float32")
    y = X.sum(axis=(1, 2))[:, None] / 6
    model = Sequential()
    model.add(LSTM(8, input_shape=(6, 1)))
    model.add(Dense(1))
    model.compile("adam", "mse")
    before = model.evaluate(X, y)
    model.fit(X, y, nb_epoch=20, batch_size=32, verbose=0)
    assert model.evaluate(X, y) < before / 5


def test_cuda_lstm_training_matches_cpu():
    """The two directions' LSTMs have the same sizes, so on CUDA their passes share the
    kernels' kept scratch arrays; the steps run eagerly, are recorded, then replayed."""
    X = np.random.default_rng(7).uniform(-1, 1, (4, 3, 2)).astype("float32")
    y = np.ones((4, 1), "float32")
    losses = {}
    for device in ("cpu", "cuda"):
        nl.set_seed(7)
        model = Sequential(device=device)
        model.add(Bidirectional(LSTM(2), input_shape=(3, 2)))
        model.add(Dense(1))
        model.compile("sgd", "mse")
        losses[device] = [model.train_on_batch(X, y) for _ in range(3)]
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-5)
