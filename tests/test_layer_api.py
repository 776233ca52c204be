"""The Layer contract: constructor, connections, shapes, caching, masks, weights, configs."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

from numlayers import activations
from numlayers.layers import (
    ELU,
    GRU,
    LSTM,
    Activation,
    BatchNormalization,
    Convolution1D,
    Dense,
    Dropout,
    Flatten,
    Lambda,
    Layer,
    ParametricSoftplus,
    PReLU,
    RepeatVector,
    SimpleRNN,
    SReLU,
    ThresholdedReLU,
    TimeDistributedDense,
)
from numlayers.layers.base import _snake_case
from numlayers.tracing import TracingFallbackWarning


class CountingIdentity(Layer):
    """An identity layer that counts how often it really computes."""

    passes_mask = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.computed = 0
        self._finish_init()

    def _forward(self, x, train):
        self.computed += 1
        return x

    def _backward(self, grad_output):
        return grad_output


class MaskingSource(CountingIdentity):
    """Claims to output a mask, to test mask compatibility checks."""

    def produces_mask(self):
        return True


def test_unknown_keyword_raises_type_error_naming_it():
    with pytest.raises(TypeError, match="input_dimm"):
        Dense(3, input_dimm=4)


#: class name -> the prefix of its automatic layer names: a run of capitals is one word
#: (an acronym), a capital followed by a lowercase letter starts a new one, digits stay
#: with the word before, and ReLU reads as one acronym
AUTOMATIC_NAMES = {
    "Dense": "dense",
    "BatchNormalization": "batch_normalization",
    "LSTM": "lstm",
    "GRU": "gru",
    "ELU": "elu",
    "SimpleRNN": "simple_rnn",
    "TimeDistributedDense": "time_distributed_dense",
    "LeakyReLU": "leaky_relu",
    "PReLU": "prelu",
    "SReLU": "srelu",
    "ParametricSoftplus": "parametric_softplus",
    "ThresholdedReLU": "thresholded_relu",
    "ThresholdedLinear": "thresholded_linear",
    "MaxPooling2D": "max_pooling2d",
    "Convolution1D": "convolution1d",
    "RNNCell": "rnn_cell",
}


@pytest.mark.parametrize(
    ("class_name", "expected"), list(AUTOMATIC_NAMES.items()), ids=list(AUTOMATIC_NAMES)
)
def test_class_names_become_readable_snake_case(class_name, expected):
    assert _snake_case(class_name) == expected


@pytest.mark.parametrize(
    "layer_class", [Dense, LSTM, GRU, SimpleRNN, TimeDistributedDense], ids=lambda c: c.__name__
)
def test_unnamed_layers_are_named_after_their_class_and_counted(layer_class):
    prefix = AUTOMATIC_NAMES[layer_class.__name__]
    first, second = layer_class(2), layer_class(2)
    assert re.fullmatch(rf"{prefix}_\d+", first.name), first.name
    assert second.name == f"{prefix}_{int(first.name.rsplit('_', 1)[1]) + 1}"


def test_input_shape_and_batch_input_shape():
    assert Dense(3, input_shape=(4,)).input_shape == (None, 4)
    layer = Dense(3, batch_input_shape=(8, 4))
    assert layer.input_shape == (8, 4)
    assert layer.output_shape == (8, 3)
    with pytest.raises(ValueError, match="not both"):
        Dense(3, input_shape=(4,), batch_input_shape=(8, 4))


def test_unconnected_layer_asks_about_input_shape():
    layer = Activation("relu")
    with pytest.raises(RuntimeError, match="did you forget input_shape"):
        _ = layer.input_shape


def test_set_input_shape_accepts_tuples_and_lists_only():
    layer = Activation("tanh")
    layer.set_input_shape([None, 3])
    assert layer.output_shape == (None, 3)
    with pytest.raises(TypeError, match="tuple or list"):
        Activation("tanh").set_input_shape(3)
    with pytest.raises(ValueError, match="positive"):
        Activation("tanh").set_input_shape((None, 0))


def test_set_previous_builds_and_checks_rank():
    first = Dense(5, input_shape=(3,))
    second = Dense(2)
    assert not second.built
    second.set_previous(first)
    assert second.built and second.params[0].shape == (5, 2)
    repeat = RepeatVector(2, input_shape=(4,))
    with pytest.raises(ValueError, match="rank 2"):
        Dense(2).set_previous(repeat)


#: layers declared for one feature (the shape their weights are first built for), and
#: the input a layer of 5 features before them gives
DECLARED_FOR_ONE_FEATURE = {
    "Dense": (lambda **kw: Dense(4, input_shape=(1,), **kw), (5,)),
    "TimeDistributedDense": (
        lambda **kw: TimeDistributedDense(4, input_shape=(3, 1), **kw),
        (3, 5),
    ),
    "SimpleRNN": (lambda **kw: SimpleRNN(4, input_shape=(3, 1), **kw), (3, 5)),
    "GRU": (lambda **kw: GRU(4, input_shape=(3, 1), **kw), (3, 5)),
    "LSTM": (lambda **kw: LSTM(4, input_shape=(3, 1), **kw), (3, 5)),
}


@pytest.mark.parametrize("kind", DECLARED_FOR_ONE_FEATURE)
def test_a_layer_declared_for_another_input_is_built_again_for_the_layer_before_it(kind):
    # Keras 0.3 builds a layer again when it is connected: its stateful LSTM example gives
    # every layer the first one's batch_input_shape
    make, shape = DECLARED_FOR_ONE_FEATURE[kind]
    before = Activation("linear", input_shape=shape)
    layer = make()
    layer.set_previous(before)
    assert layer.params[0].shape[0] == 5
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype("float32")
    assert layer(x).shape == (2, *layer.output_shape[1:])


@pytest.mark.parametrize("kind", DECLARED_FOR_ONE_FEATURE)
def test_given_or_used_weights_are_never_built_again_for_another_input(kind):
    make, shape = DECLARED_FOR_ONE_FEATURE[kind]
    given = make()
    given = make(weights=given.get_weights())
    used = make()
    used(np.zeros((2, *shape[:-1], 1), "float32"))
    for layer in (given, used):
        kept = layer.get_weights()
        with pytest.raises(ValueError, match=rf"{layer.name}' was built for input dimension 1"):
            layer.set_previous(Activation("linear", input_shape=shape))
        for weight, before in zip(layer.get_weights(), kept, strict=True):
            np.testing.assert_array_equal(weight, before)


def test_input_check_follows_a_change_of_shape_upstream():
    """A layer remembers the last input it accepted; any layer changing shape anywhere
    must make it check again."""
    first = Activation("tanh", input_shape=(3,))
    second = Activation("relu")
    second.set_previous(first)
    second.forward(np.zeros((2, 3), np.float32))
    first.set_input_shape((None, 4))
    with pytest.raises(ValueError, match=second.name):
        second.forward(np.zeros((2, 3), np.float32))
    second.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match=second.name):
        second.forward(np.zeros((2, 4), np.float64))


#: weighted layers, the input a layer before them first gives (3 features), and the
#: input it gives after it is declared again (5 features)
WEIGHTS_FOR_THREE_FEATURES = {
    "Dense": (lambda: Dense(4), (3,), (5,)),
    "TimeDistributedDense": (lambda: TimeDistributedDense(2), (2, 3), (2, 5)),
    "LSTM": (lambda: LSTM(4), (2, 3), (2, 5)),
    "Convolution1D": (lambda: Convolution1D(2, 2), (4, 3), (4, 5)),
    "BatchNormalization": (lambda: BatchNormalization(), (3,), (5,)),
    "PReLU": (lambda: PReLU(), (3,), (5,)),
}


@pytest.mark.parametrize("kind", WEIGHTS_FOR_THREE_FEATURES)
def test_weights_refuse_an_input_a_layer_upstream_changed_to_after_they_were_built(kind):
    # the weights were built for 3 features: kernels given 5 would read past them
    make, first_shape, new_shape = WEIGHTS_FOR_THREE_FEATURES[kind]
    first = Activation("linear", input_shape=first_shape)
    layer = make()
    layer.set_previous(first)
    layer.forward(np.ones((2, *first_shape), np.float32))
    first.set_input_shape((None, *new_shape))
    with pytest.raises(ValueError, match=rf"{layer.name}'.*3"):
        layer.forward(np.ones((2, *new_shape), np.float32))
    first.set_input_shape((None, *first_shape))  # and back: accepted again
    assert layer.forward(np.ones((2, *first_shape), np.float32)).shape[0] == 2


def test_non_masking_layer_refuses_a_masked_parent():
    source = MaskingSource(input_shape=(3,))
    Activation("relu").set_previous(source)  # value-only layers pass masks
    with pytest.raises(ValueError, match="cannot take a masked input"):
        Dense(2).set_previous(source)


def test_masks_pass_through_value_only_layers():
    source = CountingIdentity(input_shape=(3,))
    activation = Activation("relu")
    activation.set_previous(source)
    dropout = Dropout(0.5)
    dropout.set_previous(activation)
    mask = np.array([1, 0], dtype=bool)
    source.set_input(np.ones((2, 3)), mask=mask)
    assert dropout.get_output_mask() is mask
    dense = Dense(2, input_shape=(3,))
    assert dense.get_output_mask() is None


def test_get_output_is_cached_per_pass_and_train_flag():
    source = CountingIdentity(input_shape=(3,))
    middle = CountingIdentity()
    middle.set_previous(source)
    top = CountingIdentity()
    top.set_previous(middle)
    source.set_input(np.ones((2, 3)))
    top.get_output(train=False)
    top.get_output(train=False)
    middle.get_output(train=False)
    assert (source.computed, middle.computed, top.computed) == (1, 1, 1)
    top.get_output(train=True)
    assert (source.computed, middle.computed, top.computed) == (2, 2, 2)
    source.set_input(np.zeros((2, 3)))  # a new input invalidates every cache downstream
    np.testing.assert_array_equal(top.get_output(train=False), np.zeros((2, 3), "float32"))
    assert (source.computed, middle.computed, top.computed) == (3, 3, 3)


def test_cache_can_be_disabled():
    source = CountingIdentity(input_shape=(3,), cache_enabled=False)
    source.set_input(np.ones((1, 3)))
    source.get_output()
    source.get_output()
    assert source.computed == 2


def test_call_applies_a_layer_directly_without_touching_its_cache():
    layer = Dense(2, input_shape=(3,), weights=[np.ones((3, 2)), np.zeros(2)])
    result = layer(np.ones((4, 3)))
    np.testing.assert_array_equal(result, np.full((4, 2), 3.0, "float32"))
    again = layer(2 * np.ones((4, 3)))
    np.testing.assert_array_equal(result, np.full((4, 2), 3.0, "float32"))  # a new array each call
    np.testing.assert_array_equal(again, np.full((4, 2), 6.0, "float32"))


def test_get_set_weights_check_count_and_each_shape_and_keep_weights_on_error():
    layer = Dense(2, input_shape=(3,))
    before = layer.get_weights()
    with pytest.raises(ValueError, match="2 weight"):
        layer.set_weights([np.zeros((3, 2))])
    with pytest.raises(ValueError, match=r"weight 1 \('b'\) .*\(2,\).*\(3,\)"):
        layer.set_weights([np.zeros((3, 2)), np.zeros(3)])
    for kept, original in zip(layer.get_weights(), before, strict=True):
        np.testing.assert_array_equal(kept, original)
    layer.set_weights([np.ones((3, 2)), np.arange(2)])
    np.testing.assert_array_equal(layer.get_weights()[1], [0, 1])
    assert layer.count_params() == 8


def test_cpu_weights_start_on_a_cache_line_and_own_their_values():
    initial = [np.arange(12.0).reshape(4, 3), np.arange(3.0)]
    layer = Dense(3, input_shape=(4,), weights=initial, dtype="float32")
    recurrent = LSTM(5, input_shape=(7, 4), dtype="float64")
    for weight in layer.params + recurrent.params:
        assert weight.ctypes.data % 64 == 0 and weight.flags.c_contiguous and weight.flags.writeable
    layer._change_dtype("float64")  # what a model's dtype change does
    assert all(weight.ctypes.data % 64 == 0 for weight in layer.params)
    np.testing.assert_array_equal(layer.get_weights()[0], initial[0])
    layer.params[0][0, 0] = 7.0
    assert initial[0][0, 0] == 0.0


def test_get_params_and_trainable():
    layer = Dense(2, input_shape=(3,))
    params, regularizers, constraints, updates = layer.get_params()
    assert len(params) == 2 and regularizers == [] and constraints == [] and updates == []
    layer.trainable = False
    assert layer.get_params()[0] == []


def test_get_gradients_follow_weight_order():
    layer = Dense(2, input_shape=(3,), dtype="float64")
    x = np.arange(6.0).reshape(2, 3)
    layer.forward(x)
    layer.backward(np.ones((2, 2)))
    grad_w, grad_b = layer.get_gradients()
    np.testing.assert_allclose(grad_w, x.T @ np.ones((2, 2)))
    np.testing.assert_allclose(grad_b, [2.0, 2.0])


def test_backward_before_forward_and_wrong_gradient_shape():
    layer = Dense(2, input_shape=(3,))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((1, 2), "float32"))
    layer.forward(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="does not match"):
        layer.backward(np.ones((1, 3), "float32"))


def test_dtype_argument_and_inheritance():
    first = Dense(3, input_shape=(2,), dtype="float64")
    second = Dense(1)
    second.set_previous(first)
    assert second.dtype == np.float64 and second.params[0].dtype == np.float64
    with pytest.raises(TypeError, match="float32 or float64"):
        Dense(3, dtype="int32")
    explicit = Dense(1, dtype="float32")
    with pytest.raises(TypeError, match="dtype float32"):
        explicit.set_previous(first)


def test_constructor_arguments_are_validated_with_the_layer_named():
    with pytest.raises(ValueError, match="output_dim"):
        Dense(0)
    with pytest.raises(ValueError, match="activation"):
        Dense(2, activation="swishy")
    with pytest.raises(ValueError, match="initialisation"):
        Dense(2, init="nope")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.5)
    with pytest.raises(ValueError, match="permutation"):
        from numlayers.layers import Permute

        Permute((1, 3))


def test_dropout_training_mask_scales_and_backward_reuses_it(device):
    layer = Dropout(0.5, seed=3, input_shape=(40,), dtype="float64").to(device)
    x = np.random.default_rng(0).uniform(1, 2, (3, 40))
    y = device.to_host(layer.forward(device.asarray(x), train=True)).copy()
    kept = y != 0
    assert 0.3 < kept.mean() < 0.7
    np.testing.assert_allclose(y[kept], 2 * x[kept])
    grad = device.to_host(layer.backward(device.asarray(np.ones_like(x))))
    np.testing.assert_allclose(grad, 2.0 * kept)
    # inference is the identity, and a new training pass draws a new mask
    np.testing.assert_array_equal(device.to_host(layer.forward(device.asarray(x))), x)
    y2 = device.to_host(layer.forward(device.asarray(x), train=True))
    assert not np.array_equal(y2 != 0, kept)


def test_dropout_is_reproducible_with_a_seed_and_identical_on_cpu_and_cuda():
    x = np.ones((2, 50))
    outputs = []
    for device in ("cpu", "cuda", "cpu"):
        layer = Dropout(0.3, seed=11, input_shape=(50,), dtype="float64").to(device)
        outputs.append(layer.device.to_host(layer.forward(layer.device.asarray(x), train=True)))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


def test_an_untraceable_lambda_without_backward_predicts_but_refuses_to_train():
    # np.sort has no traced form: the Lambda runs on the host, with a warning naming it
    layer = Lambda(lambda x: np.sort(x, axis=1)[:, :1], output_shape=(1,), input_shape=(3,))
    with pytest.warns(TracingFallbackWarning, match="sort"):
        np.testing.assert_array_equal(layer(np.array([[3.0, 1.0, 2.0]])), [[1.0]])
    layer.forward(np.ones((2, 3), "float32"))
    with pytest.raises(RuntimeError, match="no backward function"):
        layer.backward(np.ones((2, 1), "float32"))


def test_lambda_checks_what_its_function_returns():
    layer = Lambda(lambda x: x[:, :2], output_shape=(3,), input_shape=(3,))
    with pytest.raises(ValueError, match="returned shape"):
        layer(np.ones((2, 3)))


def test_lambda_output_shape_function():
    layer = Lambda(
        lambda x: np.concatenate([x, x], 1),
        output_shape=lambda s: (s[0], 2 * s[1]),
        input_shape=(3,),
    )
    assert layer.output_shape == (None, 6)
    assert layer(np.ones((2, 3))).shape == (2, 6)


def square(x):
    return x * x


def test_lambda_config_names_module_functions_and_never_imports():
    from numlayers.layers import deserialize

    layer = Lambda(square, input_shape=(2,))
    config = layer.get_config()
    assert config["function"] == f"{__name__}:square"
    with pytest.raises(ValueError, match="neither in custom_objects nor registered"):
        deserialize(config)
    assert deserialize(config, custom_objects={"square": square}).function is square
    assert deserialize(config, safe_mode=False).function is square  # a trusted file
    config["function"] = "some_module_never_imported:evil"
    with pytest.raises(ValueError, match="not imported"):
        deserialize(config, safe_mode=False)


def test_flatten_of_unknown_dimension_is_a_clear_error():
    with pytest.raises(ValueError, match="fully known"):
        Flatten(batch_input_shape=(None, None, 3))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ELU(),
        lambda: ThresholdedReLU(0.5),
        lambda: PReLU(),
        lambda: ParametricSoftplus(),
        lambda: SReLU(seed=0),
    ],
    ids=["ELU", "ThresholdedReLU", "PReLU", "ParametricSoftplus", "SReLU"],
)
def test_advanced_activations_pass_masks_through(make):
    source = CountingIdentity(input_shape=(2, 3))
    layer = make()
    layer.set_previous(source)
    mask = np.array([[1, 0], [1, 1]], dtype=bool)
    source.set_input(np.ones((2, 2, 3)), mask=mask)
    assert layer.get_output_mask() is mask


def test_trainable_activations_have_a_parameter_per_feature_and_clear_errors():
    layer = SReLU(input_shape=(2, 3), seed=0)
    assert layer.weight_names() == ["t_left", "a_left", "t_right", "a_right"]
    assert [w.shape for w in layer.get_weights()] == [(2, 3)] * 4
    assert PReLU(input_shape=(4,)).get_weights()[0].tolist() == [0.0] * 4  # Keras: "zero"
    alphas, betas = ParametricSoftplus(input_shape=(2,), dtype="float64").get_weights()
    assert alphas.tolist() == [0.2, 0.2] and betas.tolist() == [5.0, 5.0]
    with pytest.raises(ValueError, match=r"PReLU layer 'p'.*every input dimension"):
        PReLU(batch_input_shape=(None, None), name="p")
    with pytest.raises(ValueError, match=r"SReLU layer 's': a_left: unknown initialisation"):
        SReLU(a_left_init="nope", name="s")
    with pytest.raises(ValueError, match=r"ParametricSoftplus layer 'q'.*finite"):
        ParametricSoftplus(float("inf"), name="q")
    built = PReLU(input_shape=(3,), name="built")
    with pytest.raises(ValueError, match=r"'built' has parameters for features of shape \(3,\)"):
        built.set_input_shape((None, 4))


def test_trainable_activation_without_input_gradient_still_trains():
    layer = PReLU(input_shape=(3,), weights=[np.array([0.1, 0.2, 0.3])], dtype="float64")
    layer.needs_input_gradient = False
    x = np.array([[-1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]])
    layer.forward(x)
    assert layer.backward(np.ones_like(x)) is None
    assert layer.get_gradients()[0].tolist() == [-5.0, -2.0, -6.0]


def test_relu_arguments_reach_activation_and_dense_and_their_configs():
    activation = activations.get("relu", alpha=0.5, max_value=2.0)
    assert activation.config == {"name": "relu", "alpha": 0.5, "max_value": 2.0}
    layer = Activation(activation, input_shape=(4,), dtype="float64")
    assert layer(np.array([[-2.0, 1.0, 3.0, 0.0]])).tolist() == [[-1.0, 1.0, 2.0, 0.0]]
    assert layer.get_config()["activation"] == activation.config

    # Keras 0.3 code passes its relu with arguments bound
    def relu(x, alpha=0.0, max_value=None):
        raise AssertionError("the kernels run, not this")

    dense = Dense(2, input_dim=2, activation=functools.partial(relu, alpha=0.25), dtype="float64")
    dense.set_weights([np.eye(2), np.zeros(2)])
    assert dense(np.array([[-4.0, 8.0]])).tolist() == [[-1.0, 8.0]]
    assert dense.get_config()["activation"] == {"name": "relu", "alpha": 0.25, "max_value": None}
    # relu's defaults keep the plain relu (and its fused Dense passes)
    assert activations.get("relu", alpha=0, max_value=None).config == "relu"
    with pytest.raises(ValueError, match=r"Dense layer 'd': activation 'relu' takes the arguments"):
        Dense(2, activation={"name": "relu", "beta": 1.0}, name="d")
    with pytest.raises(ValueError, match="activation 'tanh' takes no arguments"):
        Activation({"name": "tanh", "alpha": 1.0})
    with pytest.raises(TypeError, match="relu max_value must be a number"):
        Activation(activations.get("relu", max_value="6"))
    with pytest.raises(ValueError, match="cannot run inside a recurrent step"):
        SimpleRNN(3, activation=activations.get("relu", max_value=6.0))
