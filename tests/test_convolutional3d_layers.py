"""Convolution3D beyond its catalogue rows: the depth gather's kernels against NumPy,
argument and input errors, Keras 0.3.3's output shapes, configs, first layers that
skip the input gradient, and a model that learns (the catalogue checks forward,
backward and CUDA against the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.kernels.convolutional.depth import DepthWindow
from numlayers.layers import Convolution3D, Dense, Flatten, deserialize
from numlayers.models import Sequential, model_from_json
from numlayers.optimizers import Adam
from numlayers.testing import tolerance


def depth_columns_reference(x: np.ndarray, window: DepthWindow) -> np.ndarray:
    """The gathered columns of channels-first ``x (N, C, D, plane)``: ``(N, O, C, taps,
    plane)``, zeros where a tap's depth is padding."""
    samples, channels, depth, plane = x.shape
    columns = np.zeros((samples, window.outputs, channels, window.taps, plane))
    for o in range(window.outputs):
        for k in range(window.taps):
            d = o * window.stride - window.pad + k
            if 0 <= d < depth:
                columns[:, o, :, k, :] = x[:, :, d, :]
    return columns


@pytest.mark.parametrize(
    ("taps", "stride", "pad", "outputs"),
    [(3, 1, 1, 5), (2, 2, 0, 2), (3, 2, 1, 3)],
    ids=["same-stride1", "valid-stride2", "same-stride2"],
)
def test_depth_gather_and_its_adjoint_match_numpy(device, taps, stride, pad, outputs):
    rng = np.random.default_rng(taps * 10 + stride)
    x = rng.standard_normal((2, 3, 5, 4))  # (N, C, D, plane), channels first
    window = DepthWindow("th", channels=3, depth=5, plane=4, taps=taps, outputs=outputs,
                         stride=stride, pad=pad)  # fmt: skip
    kernels = device.kernels(np.dtype(np.float64))
    expected = depth_columns_reference(x, window)
    grad_columns = rng.standard_normal(expected.shape)
    # the adjoint, by its definition: <gather(x), g> = <x, adjoint(g)> for every x, so
    # adjoint(g) is the gather's transpose applied to g
    transpose = np.zeros((expected.size, x.size))
    for index in range(x.size):
        basis = np.zeros(x.size)
        basis[index] = 1.0
        transpose[:, index] = depth_columns_reference(basis.reshape(x.shape), window).ravel()
    expected_grad_x = (transpose.T @ grad_columns.ravel()).reshape(x.shape)
    for layout, to_layout, columns_to_layout in (
        ("th", (0, 1, 2, 3), (0, 1, 2, 3, 4)),
        ("tf", (0, 2, 3, 1), (0, 1, 4, 3, 2)),  # x (N, D, plane, C), columns (N, O, plane, taps, C)
    ):
        laid_out = window._replace(layout=layout)
        columns = device.empty(expected.transpose(columns_to_layout).shape, np.float64)
        kernels.depth_gather_forward(device.asarray(x.transpose(to_layout).copy()), laid_out,
                                     columns)  # fmt: skip
        np.testing.assert_array_equal(
            device.to_host(columns), expected.transpose(columns_to_layout), err_msg=layout
        )
        grad_x = device.empty(x.transpose(to_layout).shape, np.float64)
        grad = device.asarray(grad_columns.transpose(columns_to_layout).copy())
        kernels.depth_gather_backward(grad, laid_out, grad_x)
        np.testing.assert_allclose(
            device.to_host(grad_x), expected_grad_x.transpose(to_layout), rtol=1e-12,
            err_msg=layout,
        )  # fmt: skip


def test_depth_gather_runs_in_float32(device):
    window = DepthWindow("tf", channels=2, depth=3, plane=2, taps=2, outputs=2, stride=1, pad=0)
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)  # (N, D, plane, C)
    kernels = device.kernels(np.dtype(np.float32))
    columns = device.empty((1, 2, 2, 2, 2), np.float32)
    kernels.depth_gather_forward(device.asarray(x), window, columns)
    got = device.to_host(columns)
    assert got.dtype == np.float32
    # output depth o, tap k reads depth o + k
    np.testing.assert_array_equal(got[0, 1, :, 0, :], x[0, 1])
    np.testing.assert_array_equal(got[0, 1, :, 1, :], x[0, 2])


def keras033_output_length(length: int, size: int, border_mode: str, stride: int) -> int:
    """Keras 0.3.3's ``conv_output_length``, as it is written there."""
    output = length if border_mode == "same" else length - size + 1
    return (output + stride - 1) // stride


@pytest.mark.parametrize("border_mode", ["valid", "same"])
@pytest.mark.parametrize("dim_ordering", ["th", "tf"])
def test_output_shapes_follow_keras033(border_mode, dim_ordering):
    for sizes, kernel, strides in (
        ((7, 8, 9), (3, 2, 1), (1, 2, 3)),
        ((5, 5, 6), (2, 3, 4), (3, 1, 2)),
        ((4, 9, 3), (1, 4, 3), (2, 3, 1)),
    ):
        input_shape = (2, *sizes) if dim_ordering == "th" else (*sizes, 2)
        layer = Convolution3D(5, *kernel, border_mode=border_mode, subsample=strides,
                              dim_ordering=dim_ordering, input_shape=input_shape)  # fmt: skip
        new = tuple(
            keras033_output_length(length, size, border_mode, stride)
            for length, size, stride in zip(sizes, kernel, strides, strict=True)
        )
        expected = (None, 5, *new) if dim_ordering == "th" else (None, *new, 5)
        assert layer.output_shape == expected
        x = np.zeros((1, *input_shape), "float32")
        assert layer(x).shape == (1, *expected[1:])


def test_unknown_sizes_stay_unknown_and_weights_have_keras033_layouts():
    th = Convolution3D(4, 3, 2, 1, input_shape=(2, None, 6, None))
    assert th.output_shape == (None, 4, None, 5, None)
    tf = Convolution3D(4, 3, 2, 1, input_shape=(7, 6, 5, 2), dim_ordering="tf")
    assert [w.shape for w in th.get_weights()] == [(4, 2, 3, 2, 1), (4,)]
    assert [w.shape for w in tf.get_weights()] == [(3, 2, 1, 2, 4), (4,)]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"nb_filter": 0}, "nb_filter must be a positive int, received 0"),
        ({"kernel_dim1": 0}, "kernel_dim1 must be a positive int, received 0"),
        ({"kernel_dim2": 2.5}, "kernel_dim2 must be a positive int, received 2.5"),
        ({"kernel_dim3": None}, "kernel_dim3 must be a positive int, received None"),
        (
            {"border_mode": "full"},
            r"border_mode must be one of \('valid', 'same'\), received 'full'",
        ),
        ({"border_mode": "half"}, "border_mode must be one of .*received 'half'"),
        ({"subsample": (1, 2)}, r"subsample must be 3 positive ints, received \(1, 2\)"),
        ({"subsample": (1, 0, 1)}, r"subsample must be 3 positive ints, received \(1, 0, 1\)"),
        ({"dim_ordering": "channels_last"}, "dim_ordering must be 'th'.*'channels_last'"),
    ],
)
def test_bad_arguments_are_refused_naming_the_layer(arguments, message):
    given = {"nb_filter": 2, "kernel_dim1": 3, "kernel_dim2": 3, "kernel_dim3": 3, **arguments}
    with pytest.raises(ValueError, match=f"Convolution3D.*{message}"):
        Convolution3D(**given)


def test_inputs_and_weights_the_layer_cannot_take_are_refused_naming_it():
    model = Sequential([Dense(4, input_dim=3)])
    with pytest.raises(ValueError, match="Convolution3D layer 'volume'.*rank 5.*outputs shape"):
        model.add(Convolution3D(2, 3, 3, 3, name="volume"))
    with pytest.raises(ValueError, match="rank 5"):
        Convolution3D(2, 1, 1, 1, input_shape=(2, 4, 4))
    small = Convolution3D(2, 3, 2, 2, name="small")
    with pytest.raises(ValueError, match=r"small.*spatial size \(2, 4, 4\).*smaller than"):
        small.set_input_shape((None, 1, 2, 4, 4))
    layer = Convolution3D(2, 3, 2, 2, input_shape=(3, 4, 4, 4), name="built")
    with pytest.raises(ValueError, match=r"built.*shape"):
        layer.forward(np.ones((1, 2, 4, 4, 4), "float32"))
    wrong = [np.zeros((2, 3, 2, 2)), np.zeros(2)]  # a 2-D kernel
    with pytest.raises(ValueError, match=r"built.*weight 0 \('W'\) has shape \(2, 3, 3, 2, 2\), "
                       r"received an array of shape \(2, 3, 2, 2\)"):  # fmt: skip
        layer.set_weights(wrong)
    with pytest.raises(ValueError, match=r"Convolution3D.*weight 0.*\(3, 2, 2, 3, 2\).*"
                       r"received an array of shape \(2, 3, 3, 2, 2\)"):  # fmt: skip
        Convolution3D(2, 3, 2, 2, dim_ordering="tf", input_shape=(4, 4, 4, 3),
                      weights=[np.zeros((2, 3, 3, 2, 2)), np.zeros(2)])  # fmt: skip


def test_config_round_trips_with_keras033_keys():
    model = Sequential()
    model.add(Convolution3D(3, 2, 3, 1, border_mode="same", subsample=(2, 1, 1),
                            dim_ordering="tf", activation="relu", W_regularizer="l2",
                            input_shape=(4, 5, 3, 2), name="volume"))  # fmt: skip
    model.add(Flatten())
    config = model.layers[0].get_config()
    for key, value in {
        "nb_filter": 3, "kernel_dim1": 2, "kernel_dim2": 3, "kernel_dim3": 1,
        "dim_ordering": "tf", "init": "glorot_uniform", "border_mode": "same",
        "subsample": [2, 1, 1],
    }.items():  # fmt: skip
        assert config[key] == value, key
    for key in ("activation", "W_regularizer", "b_regularizer", "activity_regularizer",
                "W_constraint", "b_constraint"):  # fmt: skip
        assert key in config
    rebuilt_layer = deserialize(config)
    assert rebuilt_layer.get_config() == config
    rebuilt = model_from_json(model.to_json())
    assert rebuilt.get_config() == model.get_config()
    rebuilt.set_weights(model.get_weights())
    x = np.random.default_rng(4).standard_normal((2, 4, 5, 3, 2)).astype("float32")
    np.testing.assert_array_equal(rebuilt.predict(x), model.predict(x))


@pytest.mark.parametrize("dim_ordering", ["th", "tf"])
def test_a_first_layer_computes_no_input_gradient(dim_ordering, monkeypatch):
    shape = (2, 4, 3, 3) if dim_ordering == "th" else (4, 3, 3, 2)
    layer = Convolution3D(2, 2, 2, 2, border_mode="same", dim_ordering=dim_ordering,
                          input_shape=shape, dtype="float64")  # fmt: skip
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, *shape))
    grad = rng.standard_normal((2, *layer.output_shape[1:]))
    layer.forward(x)
    assert layer.backward(grad) is not None
    expected = layer.get_gradients()
    calls = []
    kernels = layer.kernels
    convolution_backward = kernels.convolution_backward

    def spy_backward(*arguments):
        calls.append(("convolution_backward", arguments[11]))  # need_grad_x
        convolution_backward(*arguments)

    monkeypatch.setattr(kernels, "convolution_backward", spy_backward)
    monkeypatch.setattr(kernels, "depth_gather_backward", lambda *a: calls.append("adjoint"))
    layer.needs_input_gradient = False
    layer.forward(x)
    assert layer.backward(grad) is None
    assert calls == [("convolution_backward", False)]
    for got, want in zip(layer.get_gradients(), expected, strict=True):
        np.testing.assert_allclose(got, want, **tolerance(np.float64))


VOLUME_CASES = {
    # border mode, kernel, subsample, input (C, D1, D2, D3): at least 16 folded channels
    "same-333": ("same", (3, 3, 3), (1, 1, 1), (6, 5, 4, 5)),
    "valid-322-depth-stride2": ("valid", (3, 2, 2), (2, 1, 1), (6, 6, 3, 4)),
    "same-233-depth-stride2": ("same", (2, 3, 3), (2, 1, 1), (8, 5, 4, 3)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dim_ordering", ["th", "tf"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case", VOLUME_CASES.values(), ids=VOLUME_CASES.keys())
def test_volumes_convolved_whole_match_the_gathered_images(case, batch, dim_ordering, dtype,
                                                           monkeypatch):  # fmt: skip
    """The CPU's stride-1 channels-first path takes the volumes themselves (no depth
    gather; "th" no permute, "tf" a permute each way), two threads sharing a batch's
    planes (one sample split between them, or three): its outputs and gradients are
    those of the gathered images' path, which the catalogue checks against NumPy and
    finite differences, and it overwrites the input gradient, the planes no window
    reads included."""
    border_mode, kernel, subsample, shape = case
    if dim_ordering == "tf":
        shape = (*shape[1:], shape[0])
    monkeypatch.setattr("numlayers.kernels.blas.THREADS", 2)
    monkeypatch.setattr("numlayers.kernels.blas.SERIAL_WORK", 0)  # two blocks, however small
    rng = np.random.default_rng(11)
    x = rng.standard_normal((batch, *shape)).astype(dtype)
    layer = Convolution3D(4, *kernel, border_mode=border_mode, subsample=subsample,
                          activation="tanh", dim_ordering=dim_ordering, input_shape=shape,
                          dtype=dtype, seed=12)  # fmt: skip
    layer.set_weights([layer.get_weights()[0], rng.standard_normal(4)])
    grad = rng.standard_normal((batch, *layer.output_shape[1:])).astype(dtype)
    kernels = layer.kernels
    assert layer.takes_volumes(x.shape)
    convolution_backward = kernels.convolution_backward

    def backward_into_garbage(*arguments):
        arguments[6][...] = np.nan  # grad_x: every element must be written
        convolution_backward(*arguments)

    monkeypatch.setattr(kernels, "convolution_backward", backward_into_garbage)
    results = {}
    for volumes in (True, False):
        monkeypatch.setattr(kernels, "convolution_takes_volumes", lambda g, v=volumes: v)
        layer.needs_input_gradient = True
        y = layer.forward(x).copy()
        grad_x = layer.backward(grad).copy()
        assert layer.saved()["volumes"] is volumes
        assert ("depth_window" in layer.saved()) is not volumes
        results[volumes] = [y, grad_x, *(g.copy() for g in layer.get_gradients())]
    for got, want in zip(results[True], results[False], strict=True):
        np.testing.assert_allclose(got, want, **tolerance(np.dtype(dtype)))


def test_channels_last_volumes_keep_the_images_when_softmax_runs_after_the_kernels(
    monkeypatch,
):
    """Softmax runs over the last axis of the outputs' arrangement, which channels-first
    volumes would not keep for a "tf" layer."""
    monkeypatch.setattr("numlayers.kernels.blas.THREADS", 2)
    shape = (5, 4, 5, 6)
    for dim_ordering, activation, whole in [("tf", "softmax", False), ("tf", "relu", True),
                                            ("th", "softmax", True)]:  # fmt: skip
        layer_shape = shape if dim_ordering == "tf" else (6, 5, 4, 5)
        layer = Convolution3D(3, 3, 3, 3, activation=activation, dim_ordering=dim_ordering,
                              input_shape=layer_shape)  # fmt: skip
        assert layer.takes_volumes((2, *layer_shape)) is whole, (dim_ordering, activation)


def test_a_small_model_learns():
    rng = np.random.default_rng(7)
    # two classes of 4 x 4 x 4 volumes: a bright block in the front or the back half
    x = rng.uniform(0, 0.2, (16, 1, 4, 4, 4)).astype("float32")
    labels = np.arange(16) % 2
    x[labels == 0, :, :2, 1:3, 1:3] += 1.0
    x[labels == 1, :, 2:, 1:3, 1:3] += 1.0
    y = np.eye(2, dtype="float32")[labels]
    model = Sequential()
    model.add(Convolution3D(3, 2, 2, 2, activation="relu", subsample=(2, 2, 2),
                            input_shape=(1, 4, 4, 4), seed=8))  # fmt: skip
    model.add(Flatten())
    model.add(Dense(2, activation="softmax", seed=9))
    model.compile(optimizer=Adam(lr=0.05), loss="categorical_crossentropy")
    losses = [float(np.asarray(model.train_on_batch(x, y)).ravel()[0]) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0], losses
    assert (model.predict(x).argmax(axis=1) == labels).mean() > 0.9
