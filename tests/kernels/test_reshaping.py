"""Reshaping kernels: permutes against numpy.transpose, RepeatVector against np.repeat."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import get_device
from numlayers.kernels import toolkit
from numlayers.kernels.reshaping import inverse_axes, permute_plan
from numlayers.testing import tolerance

RNG = np.random.default_rng(77)

PERMUTES = [
    ((4,), (0,)),
    ((3, 5), (1, 0)),
    ((3, 5), (0, 1)),
    ((2, 3, 4), (0, 2, 1)),
    ((2, 3, 4), (2, 0, 1)),
    ((2, 3, 4), (1, 2, 0)),
    ((2, 1, 4), (2, 1, 0)),
    ((2, 3, 2, 3), (0, 3, 1, 2)),
    ((2, 3, 2, 3), (1, 0, 2, 3)),
    ((2, 3, 2, 3), (3, 2, 1, 0)),
    ((2, 1, 2, 3, 2), (4, 0, 3, 1, 2)),
]


def random(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def permute(device, dtype, x, axes):
    """Run permute_forward on ``device`` as a layer would: plan on the host, arrays moved once."""
    out_shape, source_strides = permute_plan(x.shape, axes)
    out = device.empty(tuple(out_shape), dtype)
    device.kernels(dtype).permute_forward(
        device.asarray(x), out, device.asarray(out_shape), device.asarray(source_strides)
    )
    return device.to_host(out)


@pytest.mark.parametrize(("shape", "axes"), PERMUTES, ids=[f"{s}-{a}" for s, a in PERMUTES])
def test_permute_matches_numpy_transpose(device, dtype, shape, axes):
    x = random(shape, dtype)
    np.testing.assert_array_equal(permute(device, dtype, x, axes), np.transpose(x, axes))


@pytest.mark.parametrize(("shape", "axes"), PERMUTES, ids=[f"{s}-{a}" for s, a in PERMUTES])
def test_permute_by_inverse_axes_round_trips(device, dtype, shape, axes):
    x = random(shape, dtype)
    permuted = permute(device, dtype, x, axes)
    np.testing.assert_array_equal(permute(device, dtype, permuted, inverse_axes(axes)), x)


def test_permute_of_an_empty_array(device, dtype):
    x = np.zeros((0, 3), dtype)
    assert permute(device, dtype, x, (1, 0)).shape == (3, 0)


def test_permute_plan_values_and_validation():
    out_shape, source_strides = permute_plan((2, 3, 4), (2, 0, 1))
    assert out_shape.dtype == np.int64 and source_strides.dtype == np.int64
    np.testing.assert_array_equal(out_shape, [4, 2, 3])
    np.testing.assert_array_equal(source_strides, [1, 12, 4])
    assert inverse_axes((2, 0, 1)) == (1, 2, 0)
    for axes in [(0, 1), (0, 1, 1), (0, 1, 3)]:
        with pytest.raises(ValueError, match="permutation of range\\(3\\)"):
            permute_plan((2, 3, 4), axes)
    with pytest.raises(ValueError, match="rank 1 or more"):
        permute_plan((), ())


@pytest.mark.parametrize(("batch", "repeats", "dim"), [(3, 5, 4), (2, 1, 3), (1, 4, 1)])
def test_repeat_vector_forward_and_backward(device, dtype, batch, repeats, dim):
    kernels = device.kernels(dtype)
    x = random((batch, dim), dtype)
    out = device.empty((batch, repeats, dim), dtype)
    kernels.repeat_vector_forward(device.asarray(x), out)
    np.testing.assert_array_equal(device.to_host(out), np.repeat(x[:, None, :], repeats, axis=1))

    grad_out = random((batch, repeats, dim), dtype)
    grad_x = device.asarray(np.full((batch, dim), 99.0, dtype))  # stale values must go
    kernels.repeat_vector_backward(device.asarray(grad_out), grad_x)
    np.testing.assert_allclose(device.to_host(grad_x), grad_out.sum(axis=1), **tolerance(dtype))


CPU_TILED_PERMUTES = [
    ((3, 70, 45), (0, 2, 1)),
    ((3, 70, 45), (2, 0, 1)),
    ((70, 45), (1, 0)),
    ((33, 2, 40), (2, 1, 0)),
    ((4, 35, 3, 40), (1, 3, 0, 2)),
]


@pytest.mark.parametrize("minimum", [0, 2**62], ids=["parallel", "serial"])
def test_cpu_permute_across_partial_tiles(dtype, monkeypatch, minimum):
    # extents above reshaping.TILE (32) and not multiples of it; CPU only, too big to simulate
    monkeypatch.setattr(toolkit, "PARALLEL_MIN_WORK", minimum)
    cpu = get_device("cpu")
    for shape, axes in CPU_TILED_PERMUTES:
        x = random(shape, dtype)
        np.testing.assert_array_equal(permute(cpu, dtype, x, axes), np.transpose(x, axes))


@pytest.mark.parametrize("minimum", [0, 2**62], ids=["parallel", "serial"])
def test_cpu_repeat_vector_serial_and_parallel(dtype, monkeypatch, minimum):
    monkeypatch.setattr(toolkit, "PARALLEL_MIN_WORK", minimum)
    kernels = get_device("cpu").kernels(dtype)
    x = random((40, 50), dtype)
    out = np.empty((40, 12, 50), dtype)
    kernels.repeat_vector_forward(x, out)
    np.testing.assert_array_equal(out, np.repeat(x[:, None, :], 12, axis=1))
    grad_out = random((40, 12, 50), dtype)
    grad_x = np.empty((40, 50), dtype)
    kernels.repeat_vector_backward(grad_out, grad_x)
    np.testing.assert_allclose(grad_x, grad_out.sum(axis=1), **tolerance(dtype))
