"""Pooling, upsampling and zero-padding layers beyond their catalogue rows: Keras 0.3's
defaults, shapes inferred in a model, each use of a shared layer keeping its own
arg-max, and the errors for bad arguments and inputs."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.layers import (
    AveragePooling1D,
    AveragePooling2D,
    MaxPooling1D,
    MaxPooling2D,
    UpSampling1D,
    UpSampling2D,
    ZeroPadding1D,
    ZeroPadding2D,
)
from numlayers.models import Sequential


def test_keras03_defaults_and_configs():
    pooling = MaxPooling1D()
    assert (pooling.pool_length, pooling.stride, pooling.border_mode) == (2, 2, "valid")
    images = AveragePooling2D(pool_size=3)
    assert images.get_config()["pool_size"] == [3, 3]
    assert images.get_config()["strides"] == [3, 3]
    assert images.get_config()["dim_ordering"] == "th"
    assert UpSampling1D().length == 2 and UpSampling2D().size == (2, 2)
    assert ZeroPadding1D().padding == 1 and ZeroPadding2D().padding == (1, 1)


def test_shapes_are_inferred_when_layers_are_added():
    model = Sequential()
    model.add(ZeroPadding2D(padding=(1, 0), input_shape=(3, 5, 7)))  # 3 x 7 x 7
    model.add(MaxPooling2D(pool_size=(3, 3), strides=(2, 2)))  # valid: 3 x 3 x 3
    model.add(UpSampling2D(size=(1, 2)))  # 3 x 3 x 6
    model.add(AveragePooling2D(pool_size=(2, 4), border_mode="same"))  # ceil: 3 x 2 x 2
    assert model.layers[-1].output_shape == (None, 3, 2, 2)
    channels_last = MaxPooling2D(strides=(1, 3), dim_ordering="tf", input_shape=(5, 7, 4))
    assert channels_last.output_shape == (None, 4, 2, 4)
    sequences = MaxPooling1D(3, stride=2, border_mode="same", input_shape=(None, 4))
    assert sequences.output_shape == (None, None, 4)


def test_a_layer_used_twice_keeps_the_arg_max_of_each_use():
    layer = MaxPooling1D(input_shape=(4, 1))
    first = np.array([[[1.0], [0.0], [1.0], [0.0]]], "float32")
    second = 1 - first
    grad = np.ones((1, 2, 1), "float32")
    layer.forward(layer.prepare_input(first), use="a")
    layer.forward(layer.prepare_input(second), use="b")
    np.testing.assert_array_equal(layer.backward(grad, use="a")[0, :, 0], [1, 0, 1, 0])
    np.testing.assert_array_equal(layer.backward(grad, use="b")[0, :, 0], [0, 1, 0, 1])


def test_no_input_gradient_is_computed_for_a_first_layer():
    layer = UpSampling1D(input_shape=(2, 1))
    y = layer.forward(layer.prepare_input(np.ones((1, 2, 1))))
    layer.needs_input_gradient = False  # as a model sets it for its first layer
    assert layer.backward(np.ones(y.shape, "float32")) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MaxPooling1D(pool_length=0), "pool_length must be a positive int"),
        (lambda: MaxPooling1D(stride=True), "stride must be a positive int"),
        (lambda: MaxPooling2D(pool_size=(2, 2, 2)), "pool_size must be 2 positive ints"),
        (lambda: AveragePooling2D(strides=(1, -1)), "strides must be 2 positive ints"),
        (lambda: AveragePooling1D(border_mode="full"), "border_mode must be one of"),
        (lambda: MaxPooling2D(dim_ordering="channels_first"), "dim_ordering must be"),
        (lambda: UpSampling1D(length=0), "length must be a positive int"),
        (lambda: UpSampling2D(size=(2,)), "size must be 2 positive ints"),
        (lambda: ZeroPadding1D(padding=-1), "padding must be a non-negative int"),
        (lambda: ZeroPadding2D(padding=(1, 1.5)), "padding must be 2 non-negative ints"),
    ],
    ids=[
        "pool-zero",
        "stride-bool",
        "pool-size-length",
        "negative-stride",
        "full-border",
        "dim-ordering",
        "upsample-zero",
        "upsample-length",
        "negative-padding",
        "float-padding",
    ],
)
def test_bad_arguments_are_refused_naming_the_layer(make, message):
    with pytest.raises(ValueError, match=f"layer '.*': {message}"):
        make()


def test_inputs_of_the_wrong_rank_or_smaller_than_a_valid_window_are_refused():
    with pytest.raises(ValueError, match="max_pooling2d_.*rank 4"):
        MaxPooling2D(input_shape=(3, 4))
    with pytest.raises(ValueError, match="up_sampling1d_.*rank 3"):
        UpSampling1D(input_shape=(3, 4, 5))
    with pytest.raises(ValueError, match="average_pooling2d_.*3x3 pool does not fit.*2x5"):
        AveragePooling2D(pool_size=3, input_shape=(1, 2, 5))
    # unknown steps: checked when a sequence arrives
    layer = MaxPooling1D(pool_length=3, input_shape=(None, 2))
    with pytest.raises(ValueError, match=f"{layer.name}.*does not fit in inputs of spatial size 2"):
        layer.forward(layer.prepare_input(np.zeros((1, 2, 2))))
    same = MaxPooling1D(pool_length=3, border_mode="same", input_shape=(None, 2))
    assert same(np.ones((1, 2, 2))).shape == (1, 1, 2)
