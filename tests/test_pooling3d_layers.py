"""The 3-D pooling, upsampling and zero-padding layers beyond their catalogue rows:
Keras 0.3.3's defaults and output shapes (unknown sizes too), configs that come back,
equal maxima in a 3-D window, the errors for bad arguments and inputs, and a small
model that learns through them."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.layers import (
    AveragePooling3D,
    Dense,
    Flatten,
    MaxPooling3D,
    UpSampling3D,
    ZeroPadding3D,
    deserialize,
)
from numlayers.models import Sequential


def keras_conv_output_length(length, filter_size, border_mode, stride):
    """Keras 0.3.3's ``conv_output_length`` (keras/layers/convolutional.py)."""
    if length is None:
        return None
    output_length = length if border_mode == "same" else length - filter_size + 1
    return (output_length + stride - 1) // stride


def test_keras033_defaults_and_configs():
    pooling = MaxPooling3D()
    assert (pooling.pool_size, pooling.strides) == ((2, 2, 2), (2, 2, 2))
    assert (pooling.border_mode, pooling.dim_ordering) == ("valid", "th")
    config = AveragePooling3D(pool_size=3, strides=(1, 2, 3)).get_config()
    assert (config["pool_size"], config["strides"]) == ([3, 3, 3], [1, 2, 3])
    assert (config["border_mode"], config["dim_ordering"]) == ("valid", "th")
    assert UpSampling3D().size == (2, 2, 2) and UpSampling3D().dim_ordering == "th"
    assert ZeroPadding3D().padding == (1, 1, 1) and ZeroPadding3D().dim_ordering == "th"


@pytest.mark.parametrize(
    "make",
    [
        lambda: MaxPooling3D((3, 1, 2), (1, 2, 1), "same", "tf", input_shape=(4, 5, 6, 2)),
        lambda: AveragePooling3D(pool_size=2, border_mode="valid", input_shape=(1, 4, 4, 4)),
        lambda: UpSampling3D(size=(1, 2, 3), dim_ordering="tf", input_shape=(2, 2, 2, 1)),
        lambda: ZeroPadding3D(padding=(0, 1, 2), input_shape=(1, 2, 2, 2)),
    ],
    ids=["max-pooling", "average-pooling", "upsampling", "zero-padding"],
)
def test_a_config_comes_back_as_the_same_layer(make):
    layer = make()
    config = layer.get_config()
    rebuilt = deserialize(config)
    assert type(rebuilt) is type(layer)
    assert rebuilt.get_config() == config
    assert rebuilt.output_shape == layer.output_shape


@pytest.mark.parametrize("dim_ordering", ["th", "tf"])
@pytest.mark.parametrize("border_mode", ["valid", "same"])
@pytest.mark.parametrize(
    ("pool_size", "strides"),
    [((2, 2, 2), None), ((3, 1, 2), (2, 1, 3)), ((1, 4, 3), (3, 2, 1))],
    ids=["defaults", "3x1x2-strides2x1x3", "1x4x3-strides3x2x1"],
)
def test_pooling_output_shapes_follow_keras033(dim_ordering, border_mode, pool_size, strides):
    spatial = (7, None, 9)  # an unknown size stays unknown
    input_shape = (3, *spatial) if dim_ordering == "th" else (*spatial, 3)
    layer = MaxPooling3D(pool_size, strides, border_mode, dim_ordering, input_shape=input_shape)
    steps = pool_size if strides is None else strides
    pooled = tuple(
        keras_conv_output_length(length, pool, border_mode, stride)
        for length, pool, stride in zip(spatial, pool_size, steps, strict=True)
    )
    expected = (None, 3, *pooled) if dim_ordering == "th" else (None, *pooled, 3)
    assert layer.output_shape == expected


@pytest.mark.parametrize("dim_ordering", ["th", "tf"])
def test_upsampling_and_padding_output_shapes_follow_keras033(dim_ordering):
    spatial = (2, None, 5)
    input_shape = (4, *spatial) if dim_ordering == "th" else (*spatial, 4)

    def batch(sizes):
        return (None, 4, *sizes) if dim_ordering == "th" else (None, *sizes, 4)

    upsampling = UpSampling3D(size=(3, 2, 1), dim_ordering=dim_ordering, input_shape=input_shape)
    assert upsampling.output_shape == batch((6, None, 5))
    padding = ZeroPadding3D((2, 1, 0), dim_ordering=dim_ordering, input_shape=input_shape)
    assert padding.output_shape == batch((6, None, 5))


def test_the_gradient_of_equal_maxima_goes_to_the_first_in_row_major_order():
    # Two maxima in a 2 x 2 x 2 window: (0, 1, 1) comes first in row-major order,
    # though (1, 0, 0) is first along dim2 and dim3.
    x = np.zeros((1, 1, 2, 2, 2), "float64")
    x[0, 0, 0, 1, 1] = x[0, 0, 1, 0, 0] = 1.0
    for dim_ordering, sample in (("th", x), ("tf", x.transpose(0, 2, 3, 4, 1).copy())):
        layer = MaxPooling3D(dim_ordering=dim_ordering, input_shape=sample.shape[1:])
        assert layer(sample).ravel().tolist() == [1.0]
        grad_x = layer.backward(np.full((1, 1, 1, 1, 1), 5.0, "float32"))
        grad_x = grad_x if dim_ordering == "th" else grad_x.transpose(0, 4, 1, 2, 3)
        expected = np.zeros_like(x)
        expected[0, 0, 0, 1, 1] = 5.0
        np.testing.assert_array_equal(grad_x, expected)


def test_a_layer_used_twice_keeps_each_uses_arg_maxima():
    layer = MaxPooling3D(pool_size=(2, 1, 2), input_shape=(1, 2, 1, 2))
    first = np.array([1.0, 0.0, 0.0, 0.0], "float32").reshape(1, 1, 2, 1, 2)
    second = first[..., ::-1, :, ::-1].copy()  # the maximum at the other corner
    grad = np.ones((1, 1, 1, 1, 1), "float32")
    layer.forward(layer.prepare_input(first), use="a")
    layer.forward(layer.prepare_input(second), use="b")
    np.testing.assert_array_equal(layer.backward(grad, use="a").ravel(), [1, 0, 0, 0])
    np.testing.assert_array_equal(layer.backward(grad, use="b").ravel(), [0, 0, 0, 1])


def test_no_input_gradient_is_computed_for_a_first_layer():
    layer = ZeroPadding3D(input_shape=(1, 2, 2, 2))
    y = layer.forward(layer.prepare_input(np.ones((1, 1, 2, 2, 2))))
    layer.needs_input_gradient = False  # as a model sets it for its first layer
    assert layer.backward(np.ones(y.shape, "float32")) is None


BAD_ARGUMENTS = {
    "pool-size-length": (
        MaxPooling3D,
        {"pool_size": (2, 2)},
        r"pool_size must be 3 positive ints, received \(2, 2\)",
    ),
    "pool-size-zero": (
        MaxPooling3D,
        {"pool_size": (2, 0, 2)},
        r"pool_size must be 3 positive ints, received \(2, 0, 2\)",
    ),
    "negative-stride": (
        AveragePooling3D,
        {"strides": (1, -1, 1)},
        r"strides must be 3 positive ints, received \(1, -1, 1\)",
    ),
    "bool-strides": (AveragePooling3D, {"strides": True}, "strides must be 3 .*received True"),
    "full-border": (MaxPooling3D, {"border_mode": "full"}, "border_mode must be .*received 'full'"),
    "pooling-dim-ordering": (
        AveragePooling3D,
        {"dim_ordering": "channels_last"},
        "dim_ordering must be .*received 'channels_last'",
    ),
    "upsample-length": (
        UpSampling3D,
        {"size": (2, 2)},
        r"size must be 3 positive ints, received \(2, 2\)",
    ),
    "upsample-zero": (UpSampling3D, {"size": 0}, "size must be 3 positive ints, received 0"),
    "upsample-dim-ordering": (
        UpSampling3D,
        {"dim_ordering": "xy"},
        "dim_ordering must be .*received 'xy'",
    ),
    "negative-padding": (
        ZeroPadding3D,
        {"padding": (1, -1, 1)},
        r"padding must be 3 non-negative ints, received \(1, -1, 1\)",
    ),
    "padding-length": (
        ZeroPadding3D,
        {"padding": (1, 1)},
        r"padding must be 3 non-negative ints, received \(1, 1\)",
    ),
    "float-padding": (
        ZeroPadding3D,
        {"padding": (1, 1.5, 1)},
        r"padding must be 3 non-negative ints, received \(1, 1.5, 1\)",
    ),
}


@pytest.mark.parametrize(
    ("cls", "arguments", "message"), list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS)
)
def test_bad_arguments_are_refused_naming_the_layer_and_the_value(cls, arguments, message):
    with pytest.raises(ValueError, match=f"{cls.__name__} layer '.*': {message}"):
        cls(**arguments)


def test_inputs_of_the_wrong_rank_or_smaller_than_a_valid_window_are_refused():
    with pytest.raises(
        ValueError, match=r"max_pooling3d_.*rank 5.*received input_shape \(None, 3, 4, 5\)"
    ):
        MaxPooling3D(input_shape=(3, 4, 5))
    with pytest.raises(ValueError, match="up_sampling3d_.*rank 5"):
        UpSampling3D(input_shape=(1, 2, 3, 4, 5))
    layer = ZeroPadding3D(input_shape=(1, 2, 2, 2))
    with pytest.raises(
        ValueError, match=rf"{layer.name}.*received an array of shape \(1, 1, 2, 2\)"
    ):
        layer.forward(layer.prepare_input(np.zeros((1, 1, 2, 2), "float32")))
    with pytest.raises(ValueError, match="average_pooling3d_.*3x3x3 pool does not fit.*2x5x5"):
        AveragePooling3D(pool_size=3, input_shape=(1, 2, 5, 5))
    # unknown sizes: checked when a batch arrives
    unknown = MaxPooling3D(pool_size=(1, 3, 1), dim_ordering="tf", input_shape=(2, None, 2, 1))
    with pytest.raises(
        ValueError, match=f"{unknown.name}.*does not fit in inputs of spatial size 2x2x2"
    ):
        unknown.forward(unknown.prepare_input(np.zeros((1, 2, 2, 2, 1), "float32")))
    same = MaxPooling3D(pool_size=3, border_mode="same", input_shape=(1, 2, 2, 2))
    assert same(np.ones((1, 1, 2, 2, 2), "float32")).shape == (1, 1, 1, 1, 1)


def test_a_small_volume_model_learns():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (16, 1, 3, 4, 4)).astype("float32")
    Y = np.stack([X[:, 0, :, :2].mean((1, 2, 3)), X[:, 0, :, 2:].mean((1, 2, 3))], axis=1)
    model = Sequential()
    model.add(ZeroPadding3D(padding=(1, 0, 0), input_shape=(1, 3, 4, 4)))  # 1 x 5 x 4 x 4
    model.add(MaxPooling3D(pool_size=(2, 2, 2), strides=(1, 2, 2)))  # 1 x 4 x 2 x 2
    model.add(UpSampling3D(size=(1, 2, 1)))  # 1 x 4 x 4 x 2
    model.add(AveragePooling3D(pool_size=(2, 1, 1), border_mode="same"))  # 1 x 2 x 4 x 2
    model.add(Flatten())
    model.add(Dense(2))
    assert model.layers[-2].output_shape == (None, 16)
    model.compile("sgd", "mse")
    losses = [model.train_on_batch(X, Y) for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0]
