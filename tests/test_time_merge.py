"""TimeDistributedMerge with masks: masked steps are left out of sums, means and products,
forward and backward, on both devices (the catalogue checks the unmasked layer)."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.layers import Embedding, TimeDistributedMerge
from numlayers.models import Sequential

MASK = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [0, 1, 1, 1]], np.float64)


def masked_reference(x: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    kept = mask[:, :, None].astype(bool)
    if mode == "mul":
        return np.where(kept, x, 1.0).prod(axis=1)
    total = np.where(kept, x, 0.0).sum(axis=1)
    if mode == "sum":
        return total
    count = mask.sum(axis=1)[:, None]
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def masked_layer_gradient(x: np.ndarray, mask: np.ndarray, grad: np.ndarray, mode: str):
    """float64 central differences of ``sum(grad * reference(x))``."""
    numeric = np.zeros_like(x)
    step = 1e-6
    for index in np.ndindex(*x.shape):
        shifted = [x.copy(), x.copy()]
        shifted[0][index] += step
        shifted[1][index] -= step
        values = [np.sum(grad * masked_reference(s, mask, mode)) for s in shifted]
        numeric[index] = (values[0] - values[1]) / (2 * step)
    return numeric


@pytest.mark.parametrize("mode", ["sum", "ave", "mul"])
def test_masked_steps_are_left_out_forward_and_backward(device, mode):
    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 2, (3, 4, 2))
    x[2, 1, 0] = 0.0  # a zero among the kept steps of a product
    grad = rng.standard_normal((3, 2))
    layer = TimeDistributedMerge(mode, input_shape=(4, 2), dtype="float64").to(device)
    as_device = layer.device.asarray
    y = layer.forward(as_device(x), mask=as_device(MASK))
    np.testing.assert_allclose(layer.device.to_host(y), masked_reference(x, MASK, mode))
    grad_x = layer.device.to_host(layer.backward(as_device(grad)))
    expected = masked_layer_gradient(x, MASK, grad, mode)
    np.testing.assert_allclose(grad_x, expected, rtol=1e-6, atol=1e-8)


def test_a_mask_zero_embedding_feeds_its_mask_to_the_merge():
    ids = np.array([[3, 0, 2, 0], [1, 1, 1, 1]])
    model = Sequential([Embedding(5, 2, input_length=4, mask_zero=True, seed=0)])
    model.add(TimeDistributedMerge("ave"))
    vectors = model.layers[0].get_weights()[0]
    expected = np.stack([vectors[[3, 2]].mean(axis=0), vectors[1]])
    np.testing.assert_allclose(model.predict(ids), expected, rtol=1e-6)


def test_bad_modes_and_ranks_name_the_layer():
    with pytest.raises(ValueError, match="time_distributed_merge.*mode.*'max'"):
        TimeDistributedMerge("max")
    with pytest.raises(ValueError, match="time_distributed_merge.*rank >= 3"):
        TimeDistributedMerge(input_shape=(4,))


def test_a_mask_of_the_wrong_shape_is_refused():
    layer = TimeDistributedMerge(input_shape=(4, 2))
    x = np.ones((3, 4, 2), np.float32)
    with pytest.raises(ValueError, match="time_distributed_merge.*mask of shape \\(3, 4\\)"):
        layer.forward(x, mask=np.ones((3, 5), np.float32))
