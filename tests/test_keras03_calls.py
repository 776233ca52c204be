"""Keras 0.3 calls that run unchanged: accuracy flags, class modes, per-timestep losses,
a multi-output Graph's total loss, a branch merged with itself, the identity base layer,
constraint and regularizer, initialisers without a generator, reset_states."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers import activations, constraints, initializations, losses, regularizers, set_seed
from numlayers import backend as K
from numlayers.graph import Graph
from numlayers.layers import (
    LSTM,
    Activation,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Merge,
    Permute,
    SimpleRNN,
    TimeDistributedDense,
)
from numlayers.layers.base import Layer
from numlayers.models import Sequential
from numlayers.testing import gradient_check


def classifier(units: int = 3, activation: str = "softmax") -> Sequential:
    model = Sequential()
    model.add(Dense(units, input_shape=(4,), activation=activation))
    return model


def labelled_data(units: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 4)).astype("float32")
    Y = np.eye(units, dtype="float32")[np.arange(12) % units]
    return X, Y


def test_show_accuracy_reports_acc_in_that_call_only():
    model = classifier()
    model.compile("sgd", "categorical_crossentropy", class_mode="categorical")
    X, Y = labelled_data()
    assert isinstance(model.evaluate(X, Y), float)
    loss, acc = model.evaluate(X, Y, show_accuracy=True)
    expected = np.mean(model.predict(X).argmax(1) == Y.argmax(1))
    assert acc == pytest.approx(expected)
    assert loss == pytest.approx(model.evaluate(X, Y))
    assert len(model.train_on_batch(X, Y, accuracy=True)) == 2
    assert isinstance(model.test_on_batch(X, Y), float)
    history = model.fit(X, Y, nb_epoch=1, verbose=0, show_accuracy=True, validation_split=0.25)
    assert {"loss", "acc", "val_loss", "val_acc"} <= set(history.history)
    history = model.fit(X, Y, nb_epoch=1, verbose=0)
    assert "acc" not in history.history


def test_binary_class_mode_rounds_each_output():
    model = classifier(units=2, activation="sigmoid")
    model.compile("sgd", "mse", class_mode="binary")
    X, Y = labelled_data(units=2)
    _, acc = model.evaluate(X, Y, show_accuracy=True)
    assert acc == pytest.approx(np.mean(np.round(model.predict(X)) == Y))
    with pytest.raises(ValueError, match="class_mode must be"):
        model.compile("sgd", "mse", class_mode="multi")


def test_loss_functions_return_one_value_per_timestep_of_a_sequence():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.random((2, 3, 5)), rng.random((2, 3, 5))
    values = losses.mean_squared_error(y_true, y_pred)
    np.testing.assert_allclose(values, ((y_true - y_pred) ** 2).mean(axis=-1))
    assert losses.mse(y_true[:, 0], y_pred[:, 0]).shape == (2,)


def test_multi_output_graph_evaluate_returns_the_total_loss():
    graph = Graph()
    graph.add_input("x", input_shape=(4,))
    graph.add_node(Dense(2), name="a", input="x")
    graph.add_node(Dense(3), name="b", input="x")
    graph.add_output("out_a", input="a")
    graph.add_output("out_b", input="b")
    graph.compile("sgd", {"out_a": "mse", "out_b": "mse"})
    X = np.ones((5, 4), "float32")
    data = {"x": X, "out_a": np.zeros((5, 2)), "out_b": np.zeros((5, 3))}
    total = graph.evaluate(data)
    assert isinstance(total, float)
    predicted = graph.predict({"x": X})
    expected = np.mean(predicted["out_a"] ** 2) + np.mean(predicted["out_b"] ** 2)
    assert total == pytest.approx(expected, rel=1e-5)
    assert isinstance(graph.train_on_batch(data), float)


def test_a_branch_merged_with_itself_takes_one_input_and_trains_once():
    left = Sequential()
    left.add(Dense(3, input_shape=(4,)))
    model = Sequential()
    model.add(Merge([left, left], mode="mul"))
    model.add(Dense(1))
    model.compile("sgd", "mse")
    X = np.random.default_rng(2).standard_normal((6, 4)).astype("float32")
    W, b = left.layers[0].get_weights()
    head_W, head_b = model.layers[-1].get_weights()
    branch = X @ W + b
    out = (branch * branch) @ head_W + head_b
    np.testing.assert_allclose(model.predict([X]), out, rtol=1e-5)
    np.testing.assert_allclose(model.predict(X), out, rtol=1e-5)  # Keras 0.3 took X alone
    assert model.count_params() == left.count_params() + model.layers[-1].count_params()

    # the branch's gradient is the sum over both of its uses: d(v * v)/dv = 2 v
    y = np.zeros((6, 1), "float32")
    model.train_on_batch([X], y)
    grad_branch = 2 * branch * ((2 * (out - y) / 6) @ head_W.T)
    step = W - left.layers[0].get_weights()[0]
    np.testing.assert_allclose(step, 0.01 * X.T @ grad_branch, rtol=1e-3, atol=1e-6)

    copy = Sequential.from_config(model.get_config())
    merge = copy.layers[0]
    assert merge.branches[0] is merge.branches[1]


def test_the_base_layer_used_directly_is_the_identity():
    layer = Layer(input_shape=(3,))
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(layer(x), x)
    model = Sequential()
    model.add(Layer(input_shape=(3,)))
    model.add(Dense(2))
    model.compile("sgd", "mse")
    assert isinstance(model.train_on_batch(x, np.zeros((2, 2))), float)


def test_identity_constraint_and_regularizer_and_initialisers_without_a_generator():
    layer = Dense(2, input_shape=(3,), W_constraint=constraints.identity(),
                  W_regularizer=regularizers.identity())  # fmt: skip
    assert layer.constraints == [] and layer.regularizers == []
    assert constraints.get("identity") is None
    set_seed(3)
    first = initializations.glorot_uniform((3, 4))
    set_seed(3)
    np.testing.assert_array_equal(initializations.get("glorot_uniform")((3, 4)), first)
    assert initializations.orthogonal((4, 4)).shape == (4, 4)


def test_keras_03_regularizer_classes_penalise_as_the_functions_do():
    X = np.random.default_rng(5).standard_normal((4, 3))
    losses_seen = []
    for weight, activity in (
        (regularizers.WeightRegularizer(l1=0.1, l2=0.2), regularizers.ActivityRegularizer(l2=0.3)),
        (regularizers.l1l2(0.1, 0.2), regularizers.activity_l2(0.3)),
    ):
        set_seed(6)
        model = Sequential()
        model.add(Dense(2, input_shape=(3,), W_regularizer=weight, activity_regularizer=activity))
        model.compile("sgd", "mse")
        losses_seen.append(model.test_on_batch(X, np.zeros((4, 2))))
    assert losses_seen[0] == losses_seen[1] > 0


def test_reset_states_resets_every_stateful_layer_of_a_model(capsys):
    model = Sequential()
    model.add(SimpleRNN(3, batch_input_shape=(2, 4, 2), stateful=True, return_sequences=True))
    model.add(SimpleRNN(2, stateful=True))
    X = np.random.default_rng(4).standard_normal((2, 4, 2)).astype("float32")
    first = model.predict(X, batch_size=2)
    assert not np.allclose(model.predict(X, batch_size=2), first)
    model.reset_states()
    np.testing.assert_allclose(model.predict(X, batch_size=2), first, rtol=1e-6)
    Sequential().reset_states()  # nothing stateful: nothing to do

    config = model.get_config(verbose=1)
    assert "'class_name': 'Sequential'" in capsys.readouterr().out
    assert config["layers"][0]["stateful"]


def test_fit_arguments_are_checked_and_numpy_integers_accepted():
    model = classifier()
    model.compile("sgd", "categorical_crossentropy")
    X, Y = labelled_data()
    model.fit(X, Y, batch_size=np.int64(4), nb_epoch=np.int32(1), verbose=0)
    with pytest.raises(TypeError, match="validation_split must be a number"):
        model.fit(X, Y, nb_epoch=1, verbose=0, validation_split="0.2")
    for bad, error in (([1.0, 2.0], TypeError), ({"a": 1.0}, TypeError), ({0: -1.0}, ValueError),
                       ({0: float("nan")}, ValueError)):  # fmt: skip
        with pytest.raises(error, match="class_weight"):
            model.fit(X, Y, nb_epoch=1, verbose=0, class_weight=bad)
    with pytest.raises(TypeError, match="real numbers"):
        model.fit(X, Y.astype(np.complex64), nb_epoch=1, verbose=0)


def test_token_ids_must_be_integers_everywhere():
    model = Sequential()
    model.add(Embedding(5, 2, input_length=3))
    model.add(Flatten())
    model.compile("sgd", "mse")
    ids = np.array([[0, 1, 2], [3, 4, 0]])
    assert model.predict(ids).shape == (2, 6)
    for bad in (ids + 0.7, ids.astype(bool)):
        with pytest.raises(TypeError, match="token ids .* integer dtype"):
            model.predict(bad)


def test_a_merge_of_a_merge_takes_one_flat_list_of_inputs():
    a, b, c = (Sequential([Dense(2, input_shape=(3,))]) for _ in range(3))
    inner = Sequential()
    inner.add(Merge([a, b], mode="sum"))
    outer = Sequential()
    outer.add(Merge([inner, c], mode="concat"))
    outer.add(Dense(1))
    outer.compile("sgd", "mse")
    xs = [np.random.default_rng(i).standard_normal((4, 3)).astype("float32") for i in range(3)]
    branch = [m.predict(x) for m, x in zip((a, b, c), xs, strict=True)]
    W, bias = outer.layers[-1].get_weights()
    expected = np.concatenate([branch[0] + branch[1], branch[2]], axis=1) @ W + bias
    np.testing.assert_allclose(outer.predict(xs), expected, rtol=1e-5)
    assert isinstance(outer.train_on_batch(xs, np.zeros((4, 1))), float)
    with pytest.raises(ValueError, match="list of 3 arrays"):
        outer.predict(xs[:2])


def test_activations_are_functions_of_arrays_as_in_keras_03():
    x = np.array([[-2.0, 0.5, 3.0]])
    np.testing.assert_allclose(activations.relu(x), [[0.0, 0.5, 3.0]])
    np.testing.assert_allclose(activations.relu(x, alpha=0.1, max_value=2.0), [[-0.2, 0.5, 2.0]])
    np.testing.assert_allclose(activations.get("tanh")(x), np.tanh(x), rtol=1e-12)
    np.testing.assert_allclose(activations.linear(x), x)
    np.testing.assert_allclose(activations.softmax(x).sum(axis=-1), [1.0])
    assert activations.sigmoid(x.astype("float32")).dtype == np.float32
    layer = Dense(3, input_shape=(3,), activation=activations.relu)
    assert layer.get_config()["activation"] == "relu"


def test_one_label_a_sample_trains_a_one_column_output_as_that_column():
    # Keras 0.3's imdb example: Dense(1) + sigmoid trained on labels of shape (samples,).
    # The targets are made columns on the host, before any device sees them.
    rng = np.random.default_rng(1)
    X = rng.standard_normal((12, 4)).astype("float32")
    labels = (X[:, 0] > 0).astype("int64")
    models = []
    for targets in (labels, labels[:, None]):
        model = Sequential()
        model.add(Dense(1, input_shape=(4,), activation="sigmoid", seed=2))
        model.compile("sgd", "binary_crossentropy", class_mode="binary")
        history = model.fit(
            X, targets, batch_size=6, nb_epoch=2, verbose=0, shuffle=False,
            validation_data=(X, targets), class_weight={0: 1.0, 1: 3.0},
        )  # fmt: skip
        results = (
            history.history["loss"] + history.history["val_loss"],
            model.evaluate(X, targets, show_accuracy=True, verbose=0),
            model.train_on_batch(X, targets, accuracy=True),
            model.test_on_batch(X, targets),
        )
        models.append((results, model.get_weights()))
    (results_1d, weights_1d), (results_2d, weights_2d) = models
    np.testing.assert_allclose(np.hstack(results_1d), np.hstack(results_2d), rtol=1e-6)
    for column_trained, row_trained in zip(weights_1d, weights_2d, strict=True):
        np.testing.assert_allclose(column_trained, row_trained, rtol=1e-6)


def test_one_label_a_sample_reaches_a_graph_output_of_one_column_only():
    graph = Graph()
    graph.add_input("x", input_shape=(4,))
    graph.add_node(Dense(1, activation="sigmoid"), name="score", input="x")
    graph.add_node(Dense(3, activation="softmax"), name="classes", input="x")
    graph.add_output("score", input="score")
    graph.add_output("classes", input="classes")
    graph.compile("sgd", {"score": "binary_crossentropy", "classes": "categorical_crossentropy"})
    X, Y = labelled_data()
    labels = (X[:, 0] > 0).astype("float32")
    loss = graph.train_on_batch({"x": X, "score": labels, "classes": Y})
    assert np.isfinite(loss)
    with pytest.raises(
        ValueError, match=r"expects targets of shape \(None, 3\), received y of shape \(12,\)"
    ):
        graph.train_on_batch({"x": X, "score": labels, "classes": Y.argmax(1)})


def test_keras_03_stateful_lstm_example_trains_with_every_layer_given_the_first_shape():
    # its layers all get batch_input_shape=(batch, tsteps, 1); the second takes 5 features
    model = Sequential()
    model.add(LSTM(5, batch_input_shape=(2, 3, 1), return_sequences=True, stateful=True))
    model.add(LSTM(5, batch_input_shape=(2, 3, 1), return_sequences=False, stateful=True))
    model.add(Dense(1))
    model.compile(loss="mse", optimizer="rmsprop")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 3, 1)).astype("float32")
    y = rng.standard_normal((4, 1)).astype("float32")
    model.fit(X, y, batch_size=2, nb_epoch=1, verbose=0, shuffle=False)
    model.reset_states()
    assert model.layers[1].get_weights()[0].shape == (5, 20)
    assert np.all(np.isfinite(model.predict(X, batch_size=2)))


def test_initialisations_take_keras_03_arguments_and_layers_take_its_init_functions():
    assert np.abs(initializations.normal((50, 40), 0.001, name="W")).max() < 0.01  # scale 2nd
    assert initializations.uniform((2, 3), 0.1, "W").shape == (2, 3)
    # Keras 0.3's mnist_irnn example
    rnn = SimpleRNN(
        output_dim=4,
        init=lambda shape, name: initializations.normal(shape, scale=0.001, name=name),
        inner_init=lambda shape, name: initializations.identity(shape, scale=1.0, name=name),
        activation="relu",
        input_shape=(5, 3),
    )
    W, U, _ = rnn.get_weights()
    assert W.shape == (3, 4) and np.abs(W).max() < 0.01
    np.testing.assert_array_equal(U, np.eye(4))
    # a function of the shape alone (Keras 0.3.0), and one of the shape and a generator
    assert np.all(
        Dense(2, input_dim=3, init=lambda shape: np.full(shape, 0.5)).get_weights()[0] == 0.5
    )
    drawn = [
        Dense(2, input_dim=3, init=lambda shape, generator: generator.uniform(size=shape), seed=7)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(drawn[0].get_weights()[0], drawn[1].get_weights()[0])


def test_a_branch_merged_at_two_depths_takes_one_input_and_trains_as_the_same_graph():
    # Keras 0.3's memory network example: the question branch is merged with the story
    # (two depths down) and again with the response; fit takes [story, question, story].
    # Which branch runs when is decided on the host, the same for both devices (the
    # kernels are each tested on both), so the CPU alone shows it.
    story, query, vocab = 5, 3, 7

    def embedding(width: int, length: int) -> Sequential:
        return Sequential([Embedding(vocab, width, input_length=length, seed=width + length)])

    memory, question, context = embedding(4, story), embedding(4, query), embedding(query, story)
    match = Sequential([Merge([memory, question], mode="dot", dot_axes=[(2,), (2,)])])
    response = Sequential([Merge([match, context], mode="sum"), Permute((2, 1))])
    answer = Sequential([Merge([response, question], mode="concat", concat_axis=-1)])
    answer.add(TimeDistributedDense(vocab, seed=1))
    answer.add(Flatten())
    answer.add(Dense(vocab, activation="softmax", seed=2))
    answer.compile("sgd", "categorical_crossentropy")

    graph = Graph()
    graph.add_input("story", input_shape=(story,), dtype="int")
    graph.add_input("question", input_shape=(query,), dtype="int")
    graph.add_input("story_again", input_shape=(story,), dtype="int")
    graph.add_node(Embedding(vocab, 4), name="memory", input="story")
    graph.add_node(Embedding(vocab, 4), name="question_embedded", input="question")
    graph.add_node(Embedding(vocab, query), name="context", input="story_again")
    graph.add_node(Activation("linear"), name="match", inputs=["memory", "question_embedded"],
                   merge_mode="dot", dot_axes=[(2,), (2,)])  # fmt: skip
    graph.add_node(Permute((2, 1)), name="response", inputs=["match", "context"], merge_mode="sum")
    graph.add_node(TimeDistributedDense(vocab), name="dense",
                   inputs=["response", "question_embedded"], merge_mode="concat")  # fmt: skip
    graph.add_node(Flatten(), name="flat", input="dense")
    graph.add_node(Dense(vocab, activation="softmax"), name="answer", input="flat")
    graph.add_output("out", input="answer")
    graph.compile("sgd", {"out": "categorical_crossentropy"})
    same_layers = {
        "memory": memory.layers[0], "question_embedded": question.layers[0],
        "context": context.layers[0], "dense": answer.layers[1], "answer": answer.layers[3],
    }  # fmt: skip
    for name, layer in same_layers.items():
        graph.nodes[name].set_weights(layer.get_weights())
    rng = np.random.default_rng(4)
    stories, queries = rng.integers(0, vocab, (6, story)), rng.integers(0, vocab, (6, query))
    labels = np.eye(vocab)[rng.integers(0, vocab, 6)]
    feed = {"story": stories, "question": queries, "story_again": stories}
    for _ in range(2):
        loss = answer.train_on_batch([stories, queries, stories], labels)
        assert loss == pytest.approx(graph.train_on_batch({**feed, "out": labels}), rel=1e-5)
    np.testing.assert_allclose(
        answer.predict([stories, queries, stories]), graph.predict(feed)["out"], rtol=1e-5
    )
    with pytest.raises(ValueError, match="list of 3 arrays"):
        answer.predict([stories, queries, stories, queries])


def test_keras_03_data_helpers_pad_sequences_and_one_hot_labels():
    from numlayers.preprocessing import sequence
    from numlayers.utils import np_utils

    rows = [[1, 2, 3], [4], []]
    np.testing.assert_array_equal(sequence.pad_sequences(rows), [[1, 2, 3], [0, 0, 4], [0, 0, 0]])
    np.testing.assert_array_equal(
        sequence.pad_sequences(rows, maxlen=2, padding="post", truncating="post", value=-1),
        [[1, 2], [4, -1], [-1, -1]],
    )
    assert sequence.pad_sequences(rows, maxlen=2).dtype == np.int32
    assert sequence.pad_sequences(rows, maxlen=0).shape == (3, 0)
    for bad, match in (({"padding": "middle"}, "padding"), ({"maxlen": -1}, "maxlen")):
        with pytest.raises(ValueError, match=match):
            sequence.pad_sequences(rows, **bad)
    with pytest.raises(ValueError, match="sequence 1 must be one-dimensional"):
        sequence.pad_sequences([[1], [[2, 3]]])

    Y = np_utils.to_categorical(np.array([2, 0, 1]))
    np.testing.assert_array_equal(Y, np.eye(3)[[2, 0, 1]])
    assert np_utils.to_categorical([1.0, 0.0], 4).shape == (2, 4)
    np.testing.assert_array_equal(np_utils.categorical_probas_to_classes(Y), [2, 0, 1])
    np.testing.assert_array_equal(np_utils.probas_to_classes([[0.2], [0.7]]), [0, 1])
    assert np_utils.accuracy([1, 0, 1], [1, 1, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="label 3 does not fit 3 classes"):
        np_utils.to_categorical([0, 3], 3)
    with pytest.raises(ValueError, match=">= 0"):
        np_utils.to_categorical([-1, 0])
    with pytest.raises(TypeError, match="integer class labels"):
        np_utils.to_categorical([0.5])


def test_graph_inputs_take_python_and_numpy_types_as_their_dtype():
    # Keras 0.3's bidirectional LSTM example: add_input(..., dtype=int)
    for dtype in (int, np.int32, "int64"):
        graph = Graph()
        graph.add_input("ids", input_shape=(3,), dtype=dtype)
        graph.add_node(Embedding(5, 2), name="embedded", input="ids")
        graph.add_node(Flatten(), name="flat", input="embedded")
        graph.add_output("out", input="flat")
        assert graph.predict({"ids": np.array([[1, 2, 4]])})["out"].shape == (1, 6)
        assert graph.get_config()["nodes"][0]["dtype"] == "int"
    graph = Graph()
    graph.add_input("x", input_shape=(3,), dtype=float)
    with pytest.raises(ValueError, match="input 'y' dtype must be 'float' or 'int'"):
        graph.add_input("y", input_shape=(3,), dtype=bool)


class Antirectifier(Layer):
    """Keras 0.3's antirectifier example layer, as written there (imports changed)."""

    @property
    def output_shape(self):
        shape = list(self.input_shape)
        assert len(shape) == 2  # only valid for 2D tensors
        shape[-1] *= 2
        return tuple(shape)

    def get_output(self, train):
        x = self.get_input(train)
        x -= K.mean(x, axis=1, keepdims=True)
        x = K.l2_normalize(x, axis=1)
        pos = K.relu(x)
        neg = K.relu(-x)
        return K.concatenate([pos, neg], axis=1)


def numpy_antirectifier(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=1, keepdims=True)
    unit = centred / np.sqrt(np.maximum(np.sum(centred**2, axis=1, keepdims=True), 1e-12))
    return np.concatenate([np.maximum(unit, 0), np.maximum(-unit, 0)], axis=1)


def test_a_keras_03_custom_layer_overriding_get_output_runs_traced(device):
    """Its get_output body becomes the layer's kernels and gradient, on every device."""
    x = np.random.default_rng(0).normal(size=(4, 5))
    layer = Antirectifier(input_shape=(5,), dtype="float64", device=device)
    assert layer.output_shape == (None, 10)
    np.testing.assert_allclose(layer.device.to_host(layer(x)), numpy_antirectifier(x), rtol=1e-12)
    gradient_check(layer, x)
    model = Sequential(device=device)
    model.add(Dense(6, input_shape=(5,)))
    model.add(Antirectifier())
    model.add(Dense(2, activation="softmax"))
    model.compile("sgd", "categorical_crossentropy")
    targets = np.eye(2)[[0, 1, 1, 0]]
    before = model.evaluate(x, targets)
    for _ in range(5):
        model.train_on_batch(x, targets)
    assert model.evaluate(x, targets) < before


def test_a_keras_03_custom_layer_sees_its_train_flag_and_is_refused_what_it_cannot_do():
    class Doubling(Layer):
        def get_output(self, train=False):
            return self.get_input(train) * (2.0 if train else 1.0)

    layer = Doubling(input_shape=(3,))
    ones = np.ones((1, 3))
    np.testing.assert_allclose(layer(ones, train=True), 2 * ones)
    np.testing.assert_allclose(layer(ones), ones)

    class Unlisted(Layer):  # a weight not in params: a constant, as Keras 0.3 left it
        def build(self):
            self.W = np.full((3, 3), 0.5)

        def get_output(self, train=False):
            return self.get_input(train) @ self.W

    unlisted = Unlisted(input_shape=(3,))
    assert unlisted.params == []
    np.testing.assert_allclose(unlisted(ones), np.full((1, 3), 1.5))

    class Branching(Layer):
        def get_output(self, train=False):
            x = self.get_input(train)
            return x if float(x.sum()) > 0 else -x

    with pytest.raises(ValueError, match=r"Branching layer .*get_output cannot be traced \(float"):
        Branching(input_shape=(3,))


class KerasDense(Layer):
    """A Keras 0.3 custom layer with weights, written as its Dense was (imports changed):
    the weights made in build, listed in ``params`` (0.3.0 to 0.3.2)."""

    def __init__(self, output_dim, **kwargs):
        self.output_dim = output_dim
        self.init = initializations.get("glorot_uniform")
        super().__init__(**kwargs)

    def build(self):
        input_dim = self.input_shape[1]
        self.W = self.init((input_dim, self.output_dim))
        self.b = K.zeros((self.output_dim,))
        self.params = [self.W, self.b]

    def get_output(self, train=False):
        X = self.get_input(train)
        return K.tanh(K.dot(X, self.W) + self.b)

    @property
    def output_shape(self):
        return (self.input_shape[0], self.output_dim)


class KerasDense033(KerasDense):
    """The same layer as Keras 0.3.3 wrote it: ``trainable_weights``, a scale too."""

    def build(self):
        input_dim = self.input_shape[1]
        self.W = self.init((input_dim, self.output_dim))
        self.b = K.zeros((self.output_dim,))
        self.scale = K.variable(np.full(self.output_dim, 2.0))
        self.trainable_weights = [self.W, self.b, self.scale]

    def get_output(self, train=False):
        X = self.get_input(train)
        return self.scale * K.tanh(K.dot(X, self.W) + self.b)


@pytest.mark.parametrize("layer_class", [KerasDense, KerasDense033])
def test_a_keras_03_custom_layer_with_weights_trains_them(device, layer_class):
    x = np.random.default_rng(1).normal(size=(5, 3))
    layer = layer_class(2, input_shape=(3,), dtype="float64", device=device)
    weights = layer.get_weights()
    assert layer.param_names == ["W", "b", "scale"][: len(weights)]
    scale = weights[2] if len(weights) == 3 else 1.0
    expected = scale * np.tanh(x @ weights[0] + weights[1])
    np.testing.assert_allclose(layer.device.to_host(layer(x)), expected, rtol=1e-12)
    gradient_check(layer, x[:2])  # few values: each is a difference quotient in the simulator
    assert layer.W is layer.params[0]  # the attribute holds the weight that trains
    moved = layer_class(4, input_shape=(3,)).to(device)
    assert moved.W is moved.params[0]
    if layer_class is KerasDense033:
        return  # the same adapter: one model of each device is enough (the simulator is slow)

    model = Sequential(device=device)
    model.add(Dense(6, input_shape=(3,)))
    model.add(layer_class(4))  # built when connected, as Keras 0.3's were
    model.add(Dense(2, activation="softmax"))
    model.compile("sgd", "categorical_crossentropy")
    targets = np.eye(2)[[0, 1, 1, 0, 1]]
    first = model.layers[1].get_weights()
    before = model.evaluate(x, targets)
    for _ in range(3):
        model.train_on_batch(x, targets)
    assert model.evaluate(x, targets) < before
    for old, new in zip(first, model.layers[1].get_weights(), strict=True):
        assert not np.allclose(old, new)


def test_a_keras_03_subclass_of_a_layer_overriding_get_output_reads_its_weights(device):
    class RectifiedDense(Dense):
        def get_output(self, train=False):
            return K.relu(K.dot(self.get_input(train), self.W) + self.b)

    layer = RectifiedDense(3, input_shape=(2,), dtype="float64", device=device)
    x = np.random.default_rng(2).normal(size=(4, 2))
    W, b = layer.get_weights()
    np.testing.assert_allclose(layer.device.to_host(layer(x)), np.maximum(x @ W + b, 0))
    gradient_check(layer, x)
    assert not hasattr(layer, "W")  # the weights stand in for the attributes during the trace


def test_a_keras_03_custom_layer_is_refused_weights_it_cannot_train():
    class Hidden(Layer):
        def build(self):
            self.params = [K.zeros((3, 3))]  # get_output could not read it

        def get_output(self, train=False):
            return self.get_input(train)

    with pytest.raises(TypeError, match=r"Hidden layer .*weight 0 of its build \(ndarray\)"):
        Hidden(input_shape=(3,))

    class Regularized(KerasDense):
        def build(self):
            super().build()
            self.regularizers = [regularizers.l2(0.01)]

    with pytest.raises(TypeError, match="Regularized layer .*Keras 0.3 regularizers.*TracedLayer"):
        Regularized(2, input_shape=(3,))


def test_numpy_global_seed_makes_a_run_reproducible_until_set_seed(monkeypatch):
    """Keras 0.3 scripts start with np.random.seed(1337) for reproducibility: initial
    weights, dropout masks and shuffles follow it, until numlayers' own set_seed."""
    import numlayers.random

    monkeypatch.setattr(numlayers.random, "_global_generator", None)  # never seeded

    def run(numpy_seed: int) -> tuple[list[float], np.ndarray, np.ndarray]:
        np.random.seed(numpy_seed)  # noqa: NPY002 - what Keras 0.3 scripts call
        X, Y = np.random.random((20, 4)), np.random.random((20, 2))  # noqa: NPY002
        model = Sequential()
        model.add(Dense(8, input_shape=(4,)))
        model.add(Dropout(0.5))
        model.add(Dense(2))
        initial = model.get_weights()[0]
        model.compile("sgd", "mse")
        history = model.fit(X, Y, nb_epoch=2, batch_size=5, verbose=0)
        return history.history["loss"], initial, model.get_weights()[0]

    first, again, other = run(1337), run(1337), run(7)
    assert first[0] == again[0] and np.array_equal(first[2], again[2])  # dropout, shuffles
    assert not np.array_equal(first[1], other[1])
    set_seed(3)  # from now on numlayers' own generator decides
    seeded = run(1337)
    set_seed(3)
    assert np.array_equal(run(7)[1], seeded[1])


def test_a_learning_rate_set_through_the_backend_reaches_the_next_step(device):
    """Keras 0.3 callbacks change ``optimizer.lr`` with ``K.set_value``: in place."""
    model = Sequential(device=device)
    model.add(Dense(1, input_shape=(3,)))
    model.compile("sgd", "mse")
    X, y = np.ones((4, 3)), np.zeros((4, 1))
    model.train_on_batch(X, y)  # a first step, so the learning rate lives on the device
    K.set_value(model.optimizer.lr, 0.0)
    before = model.get_weights()
    model.train_on_batch(X, y)
    for unchanged, weight in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(unchanged, weight)
    K.set_value(model.optimizer.lr, 0.25)
    assert K.get_value(model.optimizer.lr) == 0.25
    assert model.get_config()["optimizer"]["lr"] == 0.25
    model.train_on_batch(X, y)
    assert not np.array_equal(before[0], model.get_weights()[0])
    with pytest.raises(TypeError, match="set_value writes into an array in place"):
        K.set_value(0.1, 0.2)


def test_constraints_are_functions_of_a_weight_as_in_keras_03():
    W = np.random.default_rng(8).standard_normal((5, 4)) * 3
    capped = constraints.maxnorm(2.0)(W)
    norms = np.sqrt((W**2).sum(axis=0))
    np.testing.assert_allclose(capped, W * np.minimum(norms, 2.0) / (norms + 1e-7), rtol=1e-6)
    np.testing.assert_array_equal(constraints.nonneg()(W), np.maximum(W, 0))
    rows = constraints.unitnorm()(W)
    np.testing.assert_allclose(np.sqrt((rows**2).sum(axis=-1)), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(constraints.identity()(W), W)
    assert W.dtype == np.float64 and capped is not W  # a copy, the weight left alone


@pytest.mark.parametrize(
    ("constraint", "reference"),
    [
        (lambda: constraints.MaxNorm(1.0, axis=0), lambda W: _capped(W, (0,), 1.0)),
        (lambda: constraints.MaxNorm(1.0, axis=[1, 2, 3]), lambda W: _capped(W, (1, 2, 3), 1.0)),
        (lambda: constraints.UnitNorm(axis=0), lambda W: _capped(W, (0,), None)),
        (lambda: constraints.UnitNorm(), lambda W: _capped(W, (3,), None)),
    ],
    ids=["maxnorm-axis-0", "maxnorm-filters", "unitnorm-axis-0", "unitnorm-last"],
)
def test_keras_032_constraint_axes_on_a_convolution_weight(constraint, reference):
    W = np.random.default_rng(9).standard_normal((4, 3, 2, 2)) * 2
    np.testing.assert_allclose(constraint()(W), reference(W), rtol=1e-6)
    rebuilt = constraints.get(constraint().get_config())
    np.testing.assert_allclose(rebuilt(W), reference(W), rtol=1e-6)
    with pytest.raises(ValueError, match=r"norms over axis \(1, 2\) of a weight of shape"):
        constraints.MaxNorm(axis=[1, 2])(W)


def _capped(W, axes, m):
    """Keras 0.3.2's MaxNorm (``m``) or UnitNorm (``m`` None) of ``W`` over ``axes``."""
    norms = np.sqrt((W**2).sum(axis=axes, keepdims=True))
    return W * ((np.minimum(norms, m) if m is not None else 1.0) / (1e-7 + norms))
