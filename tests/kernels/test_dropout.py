"""Dropout kernels: counter-based masks that match across devices, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import get_device
from numlayers.kernels import dropout, toolkit
from numlayers.layers import Dropout
from numlayers.random import draw_seed
from numlayers.testing import tolerance

RNG = np.random.default_rng(2024)
SEEDS = [0, 1, 12345, 2**40 + 7, 2**63 - 1]


def random(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def threshold(p):
    return int(p * dropout.RANDOM_RANGE)


def reference_mask(seed, size, keep_threshold):
    """The hash the kernels promise, in NumPy: lowbias32 rounds over (index, seed), 32 bits each."""
    low32 = np.uint64(0xFFFFFFFF)
    index = np.arange(size, dtype=np.uint64)
    seed = np.uint64(seed)
    words = [
        index & low32,
        index >> np.uint64(32),
        np.full(size, seed & low32),
        np.full(size, seed >> np.uint64(32)),
    ]
    state = np.full(size, 0x9E3779B9, dtype=np.uint64)
    for word in words:
        state ^= word
        state ^= state >> np.uint64(16)
        state = (state * np.uint64(0x21F0AAAD)) & low32
        state ^= state >> np.uint64(15)
        state = (state * np.uint64(0x735A2D97)) & low32
        state ^= state >> np.uint64(15)
    return (state >> np.uint64(8)).astype(np.int64) >= keep_threshold


def seed_array(device, seed):
    """``seed`` as the kernels take it: a one-element uint64 array on ``device``."""
    return device.asarray(np.array([seed], np.uint64))


def mask_of(device, dtype, seed, keep_threshold, shape):
    out = device.empty(shape, dtype)
    device.kernels(dtype).dropout_mask(seed_array(device, seed), keep_threshold, out)
    return device.to_host(out)


@pytest.mark.parametrize("seed", SEEDS)
def test_cpu_and_cuda_masks_are_identical(dtype, seed):
    cpu = mask_of(get_device("cpu"), dtype, seed, threshold(0.5), (5, 7))
    cuda = mask_of(get_device("cuda"), dtype, seed, threshold(0.5), (5, 7))
    np.testing.assert_array_equal(cpu, cuda)
    assert 0 < cpu.sum() < cpu.size  # a mask that keeps or drops all would prove nothing


@pytest.mark.parametrize("seed", SEEDS)
def test_mask_matches_the_reference_hash(device, dtype, seed):
    # pins the random stream: a changed hash would silently change every seeded model
    mask = mask_of(device, dtype, seed, threshold(0.3), (4, 9))
    expected = reference_mask(seed, 36, threshold(0.3)).reshape(4, 9)
    np.testing.assert_array_equal(mask, expected.astype(dtype))


def test_mask_depends_on_the_flat_index_only(device, dtype):
    flat = mask_of(device, dtype, 99, threshold(0.5), (24,))
    shaped = mask_of(device, dtype, 99, threshold(0.5), (2, 3, 4))
    np.testing.assert_array_equal(shaped.reshape(-1), flat)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_kept_fraction_on_a_large_cpu_array(p):
    mask = mask_of(get_device("cpu"), np.dtype(np.float32), 7, threshold(p), (20_000,))
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert abs(mask.mean() - (1 - p)) < 0.02


def test_neighbouring_seeds_give_independent_masks():
    # for independent masks at p = 0.5 about half the decisions agree
    cpu = get_device("cpu")
    base = mask_of(cpu, np.dtype(np.float64), 1000, threshold(0.5), (20_000,))
    for other in (1001, 1000 + 2**32, 1000 ^ 2**62):
        agreement = base == mask_of(cpu, np.dtype(np.float64), other, threshold(0.5), (20_000,))
        assert abs(agreement.mean() - 0.5) < 0.02


def test_different_seeds_give_different_masks(device, dtype):
    masks = [mask_of(device, dtype, seed, threshold(0.5), (6, 7)) for seed in SEEDS]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert not np.array_equal(masks[i], masks[j]), (SEEDS[i], SEEDS[j])


def test_forward_is_x_times_scale_times_mask(device, dtype):
    p, seed = 0.4, 31
    x = random((3, 5, 2), dtype)
    scale = 1 / (1 - p)
    kernels = device.kernels(dtype)
    out = device.empty(x.shape, dtype)
    kernels.dropout_forward(device.asarray(x), seed_array(device, seed), threshold(p), scale, out)
    mask = mask_of(device, dtype, seed, threshold(p), x.shape)
    assert 0 < mask.sum() < mask.size
    expected = np.where(mask == 1, x * dtype.type(scale), dtype.type(0))
    np.testing.assert_allclose(device.to_host(out), expected, **tolerance(dtype))


def test_backward_uses_the_forward_mask(device, dtype):
    p, seed = 0.5, 2**62 + 3
    x = random((4, 6), dtype)
    grad_out = random((4, 6), dtype)
    scale = 1 / (1 - p)
    kernels = device.kernels(dtype)
    out = device.empty(x.shape, dtype)
    grad_x = device.empty(x.shape, dtype)
    seed_on_device = seed_array(device, seed)
    kernels.dropout_forward(device.asarray(x), seed_on_device, threshold(p), scale, out)
    kernels.dropout_backward(device.asarray(grad_out), seed_on_device, threshold(p), scale, grad_x)
    kept = device.to_host(out) != 0
    assert 0 < kept.sum() < kept.size
    expected = np.where(kept, grad_out * dtype.type(scale), dtype.type(0))
    np.testing.assert_allclose(device.to_host(grad_x), expected, **tolerance(dtype))


def test_p_zero_keeps_everything_and_full_threshold_drops_everything(device, dtype):
    x = random((3, 4), dtype)
    kernels = device.kernels(dtype)
    out = device.empty(x.shape, dtype)
    seed = seed_array(device, 5)
    kernels.dropout_forward(device.asarray(x), seed, 0, 1.0, out)
    np.testing.assert_array_equal(device.to_host(out), x)
    kernels.dropout_forward(device.asarray(x), seed, dropout.RANDOM_RANGE, 2.0, out)
    np.testing.assert_array_equal(device.to_host(out), np.zeros_like(x))


def test_serial_and_parallel_cpu_loops_agree(dtype, monkeypatch):
    cpu = get_device("cpu")
    kernels = cpu.kernels(dtype)
    x = random((150, 160), dtype)
    seed = seed_array(cpu, 77)
    results = []
    for minimum in (0, 2**62):  # every loop parallel, then every loop serial
        monkeypatch.setattr(toolkit, "PARALLEL_MIN_WORK", minimum)
        out = np.empty_like(x)
        mask = np.empty_like(x)
        kernels.dropout_forward(x, seed, threshold(0.25), 4 / 3, out)
        kernels.dropout_mask(seed, threshold(0.25), mask)
        results.append((out, mask))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(
        results[0][1], reference_mask(77, x.size, threshold(0.25)).reshape(x.shape)
    )


def test_each_use_of_a_shared_layer_keeps_its_own_seed():
    # the second use draws a new seed into a buffer of its own: the first use's backward
    # still scales by the first use's mask
    layer = Dropout(0.5, seed=3, input_shape=(40,), dtype="float64")
    x = np.ones((2, 40))
    first = layer.forward(x, train=True, use="a").copy()
    second = layer.forward(x, train=True, use="b").copy()
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(layer.backward(x, use="a"), first)
    np.testing.assert_array_equal(layer.backward(x, use="b"), second)


def test_passes_take_the_seeds_that_draw_seed_gives_in_turn():
    # pins which seed each pass gets: a change would silently change every seeded model
    layer = Dropout(0.25, seed=11, input_shape=(40,), dtype="float64")
    generator = np.random.default_rng(11)
    for _ in range(2):
        y = layer.forward(np.ones((2, 40)), train=True)
        kept = reference_mask(draw_seed(generator), 80, threshold(0.25)).reshape(2, 40)
        np.testing.assert_array_equal(y, np.where(kept, 1 / 0.75, 0.0))
