"""Shape arithmetic in Python integers: sizes that wrap NumPy's int64, or that no memory
holds, get an error naming the layer instead of a wrong shape or NumPy's own message; and
array layouts the kernels cannot read are refused or copied, never read wrongly."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.layers import (
    LSTM,
    Bidirectional,
    Dense,
    Embedding,
    Flatten,
    Reshape,
    TimeDistributed,
)
from numlayers.models import Sequential


def test_reshape_to_a_size_that_wraps_at_2_to_the_64_is_refused():
    # 3 * 6148914691236517206 is 2 modulo 2**64: NumPy's product said it fits 2 values
    with pytest.raises(ValueError, match="Reshape layer .* more than an array holds"):
        Reshape((3, 6148914691236517206), input_shape=(2,))


def test_flatten_of_more_elements_than_an_array_holds_is_refused():
    with pytest.raises(ValueError, match="Flatten .* more elements than an array can hold"):
        Flatten(input_shape=(2**32, 2**32))


def test_weights_larger_than_memory_name_the_layer():
    with pytest.raises(ValueError, match="Dense layer .* larger than an array can be"):
        Dense(2**40, input_shape=(2**30,))
    with pytest.raises(MemoryError, match="Dense layer .* no memory for its weights"):
        Dense(2**20, input_shape=(2**20,))


@pytest.mark.parametrize("layout", ["reversed", "broadcast", "transposed", "every-other"])
def test_views_the_kernels_cannot_read_are_refused_at_every_entry_point(device, layout):
    layer = Dense(3, input_shape=(4,), device=device.name)
    base = np.arange(32, dtype="float32").reshape(8, 4)
    view = {
        "reversed": base[::-1],
        "broadcast": np.broadcast_to(base[:1], (8, 4)),
        "transposed": np.asfortranarray(base),
        "every-other": base[::2],
    }[layout]
    x = device.asarray(np.ascontiguousarray(view))
    expected = device.to_host(layer.forward(x)).copy()
    if device.name == "cpu":  # CUDA arrays are made contiguous when moved there
        with pytest.raises(ValueError, match="Dense layer .* C-contiguous"):
            layer.forward(view)
        layer.forward(x)
        grad = np.ones((len(view), 3), "float32")
        with pytest.raises(ValueError, match="Dense layer .* C-contiguous"):
            layer.backward(np.broadcast_to(grad[:1], grad.shape))
    # layer(x) and predict copy any layout into the kernels' own
    np.testing.assert_allclose(layer(view), expected, rtol=1e-6)
    model = Sequential([Dense(3, input_shape=(4,))], device=device.name)
    model.layers[0].set_weights(layer.get_weights())
    np.testing.assert_allclose(model.predict(view), expected, rtol=1e-6)


def test_embedding_backward_uses_the_ids_its_forward_checked(device):
    layer = Embedding(4, 2, input_length=3, device=device.name)
    ids = np.array([[0, 1, 3], [2, 2, 1]])
    grad = device.asarray(np.ones((2, 3, 2), "float32"))
    layer.forward(device.asarray(ids))
    layer.backward(grad)
    expected = device.to_host(layer.grads[0]).copy()

    mutable = device.asarray(ids)
    layer.forward(mutable)
    changed = np.full_like(ids, 10**9)  # ids far past the vocabulary
    if device.name == "cpu":
        mutable[...] = changed
    else:
        mutable.copy_to_device(changed)
    layer.backward(grad)
    np.testing.assert_array_equal(device.to_host(layer.grads[0]), expected)


@pytest.mark.parametrize(
    "make", [lambda: Dense(3, input_shape=(4,)), lambda: LSTM(3, input_shape=(2, 4))]
)
def test_changing_the_input_between_forward_and_backward_changes_nothing(device, make):
    layer = make().to(device)
    x = np.random.default_rng(1).uniform(-1, 1, (2, *layer.input_shape[1:])).astype("float32")
    grad = device.asarray(np.ones((2, *layer.output_shape[1:]), "float32"))
    layer.forward(device.asarray(x), train=True)
    expected = [device.to_host(g).copy() for g in [layer.backward(grad), *layer.grads]]

    mutable = device.asarray(x)
    layer.forward(mutable, train=True)
    if device.name == "cpu":
        mutable[...] = 1e6
    else:
        mutable.copy_to_device(np.full_like(x, 1e6))
    got = [device.to_host(g) for g in [layer.backward(grad), *layer.grads]]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def _refuses_writes(device, y):
    with pytest.raises(ValueError, match="read-only"):
        y[0, 0] = 1.0
    if device.name == "cuda":
        with pytest.raises(ValueError, match="read-only"):
            y.copy_to_device(np.zeros(tuple(y.shape), y.dtype))
        with pytest.raises(ValueError, match="read-only"):
            y.reshape(y.size)[0] = 1.0


def test_forward_results_are_read_only_and_chain_into_other_layers(device):
    first = Dense(3, input_shape=(4,)).to(device)
    second = Dense(2, input_shape=(3,)).to(device)
    y = first.forward(device.asarray(np.ones((2, 4), "float32")))
    _refuses_writes(device, y)
    np.testing.assert_allclose(
        device.to_host(second.forward(y)),
        device.to_host(second(first(np.ones((2, 4))))),
        rtol=1e-6,
    )


def test_sequential_forward_owns_its_input_and_returns_a_read_only_result(device):
    model = Sequential([Dense(3, input_shape=(4,)), Dense(2)], device=device.name)
    x = np.random.default_rng(2).uniform(-1, 1, (5, 4)).astype("float32")
    grad = np.ones((5, 2), "float32")
    model.forward(x, train=True)
    expected = [device.to_host(g).copy() for g in [model.backward(grad), *model.layers[0].grads]]

    mutable = device.asarray(x)
    _refuses_writes(device, model.forward(mutable, train=True))
    if device.name == "cpu":
        mutable[...] = 1e6
    else:
        mutable.copy_to_device(np.full_like(x, 1e6))
    got = [device.to_host(g) for g in [model.backward(grad), *model.layers[0].grads]]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_scalar_input_is_reported_as_a_scalar():
    with pytest.raises(ValueError, match=r"Dense layer .* received an array of shape \(\)"):
        Dense(2, input_shape=(3,))(np.float32(3))


def test_sequential_backward_takes_host_arrays_as_forward_does(device):
    model = Sequential([Dense(2, input_shape=(3,))], device=device.name)
    model.forward(np.ones((4, 3), "float32"), train=True)
    grad = model.backward(np.ones((4, 2), "float32"))
    W = model.layers[0].get_weights()[0]
    np.testing.assert_allclose(device.to_host(grad), np.ones((4, 2)) @ W.T, rtol=1e-6)


def test_wrappers_take_the_dtype_their_inner_layer_was_given():
    assert Bidirectional(LSTM(3, dtype="float64"), input_shape=(4, 2)).dtype == np.float64
    assert TimeDistributed(Dense(3, dtype="float64"), input_shape=(4, 2)).dtype == np.float64
    assert TimeDistributed(Dense(3), input_shape=(4, 2)).dtype == np.float32


def test_host_arrays_reach_the_gpu_with_the_strides_of_a_new_array():
    # NumPy keeps any stride on a length-1 axis (x[None] has 0 there) and calls the array
    # C-contiguous; a GPU array keeps the strides, and numba-cuda refuses to reshape one
    # that has such a stride: a traced Lambda's constant of shape (1, n) failed so
    from numlayers.devices import cuda_available, get_device

    if not cuda_available():
        pytest.skip("no CUDA device")
    host = np.ascontiguousarray(np.arange(4.0)[None])
    assert host.strides == (0, 8)
    device_array = get_device("cuda").asarray(host)
    assert device_array.strides == (32, 8)
    np.testing.assert_array_equal(device_array.reshape(4).copy_to_host(), np.arange(4.0))
