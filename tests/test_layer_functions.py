"""K.function over layer outputs: Keras 0.3's FAQ recipe for reading an intermediate layer."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers import backend as K
from numlayers.layer_functions import PendingOutput
from numlayers.layers import Activation, Dense, Dropout, Embedding, Merge
from numlayers.models import Graph, Sequential


def mlp(device="cpu", dtype="float32") -> Sequential:
    model = Sequential(device=device, dtype=dtype)
    model.add(Dense(6, input_dim=4, seed=1))
    model.add(Activation("relu"))
    model.add(Dropout(0.5, seed=2))
    model.add(Dense(3, seed=3))
    model.add(Activation("softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="sgd")
    return model


def hidden_of_numpy(model: Sequential, x: np.ndarray) -> np.ndarray:
    """layers[3]'s output in test mode: relu(x W1 + b1) W2 + b2 (dropout is the identity)."""
    (w1, b1), (w2, b2) = model.layers[0].get_weights(), model.layers[3].get_weights()
    return np.maximum(x @ w1 + b1, 0.0) @ w2 + b2


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_faq_recipe_reads_a_layer_before_and_after_training(device):
    model = mlp(device, "float64")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    # nothing fed yet: get_output stands for the output of what the function feeds
    pending = model.layers[3].get_output(train=False)
    assert isinstance(pending, PendingOutput)
    get_3rd_layer_output = K.function([model.layers[0].input], [pending])
    np.testing.assert_allclose(get_3rd_layer_output([x])[0], hidden_of_numpy(model, x))

    model.fit(x, np.eye(3)[[0, 1, 2, 0, 1]], nb_epoch=1, batch_size=5, verbose=0)
    # fed by fit: get_output is the last batch's array, and the function runs again
    after = K.function([model.input], [model.layers[3].get_output(train=False)])
    new_x = rng.normal(size=(7, 4))
    first = after([new_x])[0]
    assert isinstance(first, np.ndarray) and first.shape == (7, 3)
    np.testing.assert_allclose(first, hidden_of_numpy(model, new_x))
    # copies: a later call does not change what an earlier one returned
    after([x])
    np.testing.assert_allclose(first, hidden_of_numpy(model, new_x))
    whole = K.function([model.input], [model.get_output()])
    np.testing.assert_allclose(whole([new_x])[0], model.predict(new_x))


def test_outputs_keep_their_train_flag():
    model = mlp()
    x = np.ones((64, 4), "float32")
    train, test = K.function(
        [model.layers[0].input],
        [model.layers[2].get_output(train=True), model.layers[2].get_output(train=False)],
    )([x])
    relu = np.maximum(x @ model.layers[0].get_weights()[0] + model.layers[0].get_weights()[1], 0)
    np.testing.assert_allclose(test, relu, rtol=1e-6)
    kept = train != 0
    assert 0.3 < kept[relu > 0].mean() < 0.7  # dropout in training mode only
    np.testing.assert_allclose(train[kept], 2.0 * relu[kept], rtol=1e-6)


def test_a_graph_feeds_its_inputs_in_input_order():
    graph = Graph(dtype="float64")
    graph.add_input("left", input_shape=(3,))
    graph.add_input("right", input_shape=(2,))
    graph.add_node(Dense(4, seed=0), name="dense", input="left")
    graph.add_node(Activation("tanh"), name="mixed", inputs=["dense", "right"], merge_mode="concat")
    graph.add_output("out", input="mixed")
    rng = np.random.default_rng(1)
    data = {"left": rng.normal(size=(5, 3)), "right": rng.normal(size=(5, 2))}
    get_mixed = K.function(
        [graph.inputs[name].input for name in graph.input_order],
        [graph.nodes["mixed"].get_output(train=False)],
    )
    w, b = graph.nodes["dense"].get_weights()
    expected = np.tanh(np.concatenate([data["left"] @ w + b, data["right"]], axis=1))
    np.testing.assert_allclose(get_mixed([data[name] for name in graph.input_order])[0], expected)


def test_a_model_that_starts_with_a_merge_has_a_list_of_inputs():
    left, right = Sequential(dtype="float64"), Sequential(dtype="float64")
    left.add(Dense(2, input_dim=3, seed=0))
    right.add(Dense(2, input_dim=1, seed=1))
    model = Sequential(dtype="float64")
    model.add(Merge([left, right], mode="sum"))
    inputs = model.input
    assert isinstance(inputs, list) and len(inputs) == 2
    a, b = np.ones((2, 3)), np.full((2, 1), 2.0)
    (wl, bl), (wr, br) = left.layers[0].get_weights(), right.layers[0].get_weights()
    out = K.function(inputs, [model.get_output()])([a, b])[0]
    np.testing.assert_allclose(out, a @ wl + bl + b @ wr + br)


def test_k_function_refuses_what_it_cannot_run():
    model = mlp()
    first = model.layers[0].input
    hidden = model.layers[3].get_output(False)
    with pytest.raises(ValueError, match="output 1 is not what a layer's get_output"):
        K.function([first], [hidden, K.mean(np.ones((2, 2)))])
    with pytest.raises(TypeError, match="input 0 must be a layer's input"):
        K.function([np.ones((2, 4))], [hidden])
    with pytest.raises(ValueError, match="input 0 is the input of .*dense.*takes it from other"):
        K.function([model.layers[3].input], [hidden])
    with pytest.raises(ValueError, match="updates need a symbolic graph"):
        K.function([first], [hidden], updates=[(1, 2)])
    with pytest.raises(TypeError, match="invalid argument"):
        K.function([first], [hidden], givens={})
    other = mlp()
    with pytest.raises(ValueError, match="computed from the input of .*not among"):
        K.function([first], [other.layers[3].get_output(False)])
    function = K.function([first], [hidden], allow_input_downcast=True)
    with pytest.raises(ValueError, match="takes 1 input arrays, received 2"):
        function([np.ones((1, 4)), np.ones((1, 4))])
    with pytest.raises(TypeError, match="list of 1 input arrays, received ndarray"):
        function(np.ones((1, 4)))
    with pytest.raises(ValueError, match="expects"):  # the layer's own shape check
        function([np.ones((1, 5))])
    with pytest.raises(RuntimeError, match="has no input yet"):
        np.asarray(mlp().layers[3].get_output(False))
    masked = Sequential()
    masked.add(Embedding(5, 2, input_length=3, mask_zero=True))
    with pytest.raises(RuntimeError, match="embedding.*has no input yet"):
        masked.layers[0].get_output_mask(False)
