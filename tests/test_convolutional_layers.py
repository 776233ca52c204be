"""Convolution1D and Convolution2D as layers: scipy's correlation, Keras 0.3's weight
layouts and Theano kernels, shapes known at add time, argument and input errors, and
two uses of one layer (the catalogue checks forward, backward and CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from numlayers.layers import Convolution1D, Convolution2D, Dense, convert_kernel
from numlayers.models import Sequential
from numlayers.testing import tolerance


def run(layer, x):
    return layer.device.to_host(layer.forward(layer.prepare_input(x))).copy()


@pytest.mark.parametrize(
    ("border_mode", "nb_row", "nb_col"), [("valid", 2, 3), ("same", 3, 3), ("full", 2, 3)]
)
def test_convolution2d_matches_scipy_correlate(border_mode, nb_row, nb_col):
    layer = Convolution2D(
        3, nb_row, nb_col, border_mode=border_mode, input_shape=(2, 5, 6), dtype="float64"
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 5, 6))
    weight, bias = layer.get_weights()[0], rng.standard_normal(3)
    layer.set_weights([weight, bias])
    # scipy's "same" centres the window as "same" does for an odd filter
    expected = np.zeros((2, 3, *layer.output_shape[2:]))
    for n in range(2):
        for f in range(3):
            for c in range(2):
                expected[n, f] += scipy.signal.correlate(x[n, c], weight[f, c], mode=border_mode)
            expected[n, f] += bias[f]
    np.testing.assert_allclose(run(layer, x), expected, **tolerance(np.float64))


def test_keras03_weight_layouts_load_as_they_are():
    conv1d = Convolution1D(4, 3, input_dim=2, input_length=6)
    th = Convolution2D(4, 3, 2, input_shape=(2, 5, 5))
    tf = Convolution2D(4, 3, 2, input_shape=(5, 5, 2), dim_ordering="tf")
    assert [w.shape for w in conv1d.get_weights()] == [(4, 2, 3, 1), (4,)]
    assert [w.shape for w in th.get_weights()] == [(4, 2, 3, 2), (4,)]
    assert [w.shape for w in tf.get_weights()] == [(3, 2, 2, 4), (4,)]
    # one kernel in both orderings gives one output, transposed
    rng = np.random.default_rng(1)
    weight, bias = rng.standard_normal((4, 2, 3, 2)), rng.standard_normal(4)
    th.set_weights([weight, bias])
    tf.set_weights([weight.transpose(2, 3, 1, 0), bias])
    x = rng.standard_normal((2, 2, 5, 5)).astype("float32")
    np.testing.assert_allclose(
        run(tf, x.transpose(0, 2, 3, 1)), run(th, x).transpose(0, 2, 3, 1), **tolerance(np.float32)
    )
    with pytest.raises(ValueError, match=f"{th.name}.*shape"):
        th.set_weights([weight.transpose(2, 3, 1, 0), bias])


def test_a_theano_kernel_flipped_by_convert_kernel_gives_true_convolution():
    rng = np.random.default_rng(2)
    theano_kernel = rng.standard_normal((1, 1, 2, 3))
    layer = Convolution2D(1, 2, 3, input_shape=(1, 4, 5), bias=False, dtype="float64")
    layer.set_weights([convert_kernel(theano_kernel)])
    x = rng.standard_normal((1, 1, 4, 5))
    expected = scipy.signal.convolve(x[0, 0], theano_kernel[0, 0], mode="valid")
    np.testing.assert_allclose(run(layer, x)[0, 0], expected, **tolerance(np.float64))
    tf_kernel = theano_kernel.transpose(2, 3, 1, 0)
    flipped = convert_kernel(tf_kernel, dim_ordering="tf")
    np.testing.assert_array_equal(flipped, convert_kernel(theano_kernel).transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(convert_kernel(flipped, "tf"), tf_kernel)
    with pytest.raises(ValueError, match="4-D"):
        convert_kernel(theano_kernel[0])


def test_output_shapes_are_known_at_add_time():
    model = Sequential()
    model.add(Convolution2D(4, 3, 3, border_mode="same", subsample=(2, 2), input_shape=(3, 9, 8)))
    assert model.layers[-1].output_shape == (None, 4, 5, 4)
    model.add(Convolution2D(2, 2, 2, border_mode="full", dilation=2))
    assert model.layers[-1].output_shape == (None, 2, 7, 6)
    sequence = Convolution1D(5, 4, subsample_length=3, input_shape=(None, 2))
    assert sequence.output_shape == (None, None, 5)
    assert sequence(np.ones((1, 10, 2))).shape == (1, 3, 5)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"nb_filter": 0}, "nb_filter must be a positive int"),
        ({"nb_row": 2.5}, "nb_row must be a positive int"),
        ({"border_mode": "half"}, "border_mode must be one of"),
        ({"dim_ordering": "channels_last"}, "dim_ordering must be 'th'"),
        ({"subsample": (1, 0)}, "subsample must be 2 positive ints"),
        ({"dilation": (1, 2, 3)}, "dilation must be 2 positive ints"),
    ],
)
def test_bad_convolution2d_arguments_are_refused(arguments, message):
    given = {"nb_filter": 2, "nb_row": 3, "nb_col": 3, **arguments}
    with pytest.raises(ValueError, match=f"Convolution2D.*{message}"):
        Convolution2D(**given)


def test_bad_convolution1d_arguments_are_refused():
    with pytest.raises(ValueError, match="Convolution1D: filter_length"):
        Convolution1D(2, 0)
    with pytest.raises(ValueError, match="Convolution1D: subsample_length"):
        Convolution1D(2, 3, subsample_length=-1)
    with pytest.raises(ValueError, match="not both"):
        Convolution1D(2, 3, input_dim=3, input_shape=(5, 3))


def test_inputs_the_layer_cannot_take_are_refused_naming_it():
    small = Convolution2D(2, 5, 5, name="small")
    with pytest.raises(ValueError, match="small.*smaller than the filter"):
        small.set_input_shape((None, 1, 4, 6))
    dilated = Convolution1D(2, 3, dilation=3, name="dilated")
    with pytest.raises(ValueError, match="dilated.*spans 7"):
        dilated.set_input_shape((None, 6, 2))
    model = Sequential([Dense(4, input_dim=3)])
    with pytest.raises(ValueError, match="rank 4"):
        model.add(Convolution2D(2, 3, 3))
    channels = Convolution2D(2, 1, 1, input_shape=(3, None, None), name="channels")
    with pytest.raises(ValueError, match="channels.*shape"):
        channels.forward(np.ones((1, 2, 4, 4), "float32"))
    with pytest.raises(ValueError, match="channels.*3 input channels"):
        channels.set_input_shape((None, 2, 4, 4))
    unknown = Convolution2D(2, 1, 1, name="unknown", dim_ordering="tf")
    with pytest.raises(ValueError, match="unknown.*known number of input channels"):
        unknown.set_input_shape((None, 4, 4, None))


def test_two_uses_keep_their_own_backward_state_and_first_layers_skip_grad_x():
    layer = Convolution1D(3, 2, border_mode="same", input_shape=(4, 2), dtype="float64")
    rng = np.random.default_rng(3)
    x1, x2 = rng.standard_normal((2, 2, 4, 2))
    grad = rng.standard_normal((2, 4, 3))
    layer.forward(x2, use="second")
    layer.forward(x1, use="first")
    layer.forward(x2, use="second")
    grad_x1 = layer.backward(grad, use="first").copy()
    weights_from_first = layer.get_gradients()
    alone = Convolution1D(3, 2, border_mode="same", input_shape=(4, 2), dtype="float64")
    alone.set_weights(layer.get_weights())
    alone.forward(x1)
    np.testing.assert_allclose(grad_x1, alone.backward(grad), **tolerance(np.float64))
    for got, expected in zip(weights_from_first, alone.get_gradients(), strict=True):
        np.testing.assert_allclose(got, expected, **tolerance(np.float64))
    alone.needs_input_gradient = False
    alone.forward(x1)
    assert alone.backward(grad) is None
    np.testing.assert_allclose(alone.get_gradients()[0], weights_from_first[0])
