"""Embedding kernels: row gather, scatter-add gradient and the mask_zero mask, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import get_device
from numlayers.kernels import build_family, embeddings, toolkit
from numlayers.testing import tolerance

RNG = np.random.default_rng(77)


def random(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def operations(device, dtype):
    return build_family("embeddings", device, np.dtype(dtype))


def reference_backward(indices, grad_out, vocabulary):
    dim = grad_out.shape[-1]
    expected = np.zeros((vocabulary, dim), dtype=grad_out.dtype)
    np.add.at(expected, indices.reshape(-1), grad_out.reshape(-1, dim))
    return expected


def run_backward(device, dtype, indices, grad_out, start):
    """``embedding_backward`` into a gradient buffer that holds ``start`` beforehand."""
    grad_weight = device.asarray(start)
    operations(device, dtype)["embedding_backward"](
        device.asarray(indices), device.asarray(grad_out), grad_weight
    )
    return device.to_host(grad_weight)


# index 0, the last row and repeats: the first and last rows of the table are the
# likeliest to be missed by off-by-one gathers, and repeats must accumulate
INDICES = np.array([[0, 4, 2, 4], [1, 4, 0, 6]], dtype=np.int64)
VOCABULARY = 7


def test_forward_gathers_rows(device, dtype):
    weight = random((VOCABULARY, 3), dtype)
    out = device.empty(INDICES.shape + (3,), dtype)
    operations(device, dtype)["embedding_forward"](
        device.asarray(INDICES), device.asarray(weight), out
    )
    np.testing.assert_array_equal(device.to_host(out), weight[INDICES])


def test_backward_accumulates_repeated_indices(device, dtype):
    # on CUDA this is the cuda.atomic.add path: row 4 gets three tokens, row 0 two
    grad_out = random(INDICES.shape + (3,), dtype)
    start = np.zeros((VOCABULARY, 3), dtype)
    got = run_backward(device, dtype, INDICES, grad_out, start)
    expected = reference_backward(INDICES, grad_out, VOCABULARY)
    assert np.count_nonzero(np.abs(expected).sum(axis=1)) == 5  # rows 3 and 5 stay zero
    np.testing.assert_allclose(got, expected, **tolerance(dtype))


@pytest.mark.parametrize("fill", [np.nan, -0.0, 3.5], ids=["nan", "negative-zero", "number"])
def test_backward_overwrites_what_the_gradient_held(device, dtype, fill):
    grad_out = random(INDICES.shape + (3,), dtype)
    start = np.full((VOCABULARY, 3), fill, dtype)
    got = run_backward(device, dtype, INDICES, grad_out, start)
    expected = reference_backward(INDICES, grad_out, VOCABULARY)
    np.testing.assert_allclose(got, expected, **tolerance(dtype))
    # rows no token touched are +0.0 exactly, not a leftover -0.0
    assert not np.signbit(got[[3, 5]]).any()


def test_backward_into_the_previous_batch_gradient(device, dtype):
    # the usual case in training: the buffer holds the last batch's rows, all else zero
    first = np.array([[5, 5, 1]], dtype=np.int64)
    second = np.array([[2, 3, 2]], dtype=np.int64)
    previous = reference_backward(first, random((1, 3, 4), dtype), VOCABULARY)
    grad_out = random((1, 3, 4), dtype)
    got = run_backward(device, dtype, second, grad_out, previous)
    np.testing.assert_allclose(
        got, reference_backward(second, grad_out, VOCABULARY), **tolerance(dtype)
    )


def test_backward_is_the_transpose_of_forward(device, dtype):
    # <forward(weight), g> == <weight, backward(g)> for the linear map weight -> out
    weight = random((VOCABULARY, 5), dtype)
    g = random(INDICES.shape + (5,), dtype)
    ops = operations(device, dtype)
    out = device.empty(INDICES.shape + (5,), dtype)
    ops["embedding_forward"](device.asarray(INDICES), device.asarray(weight), out)
    grad_weight = device.empty(weight.shape, dtype)
    ops["embedding_backward"](device.asarray(INDICES), device.asarray(g), grad_weight)
    left = np.sum(device.to_host(out).astype(np.float64) * g)
    right = np.sum(weight.astype(np.float64) * device.to_host(grad_weight))
    np.testing.assert_allclose(left, right, **tolerance(dtype))


def test_nonzero_mask_marks_nonzero_indices(device, dtype):
    mask = device.empty(INDICES.shape, dtype)
    operations(device, dtype)["nonzero_mask"](device.asarray(INDICES), mask)
    expected = np.array([[0, 1, 1, 1], [1, 1, 0, 1]], dtype=dtype)
    np.testing.assert_array_equal(device.to_host(mask), expected)


def test_cpu_and_cuda_agree(dtype):
    weight = random((VOCABULARY, 2), dtype)
    grad_out = random(INDICES.shape + (2,), dtype)
    results = []
    for device in (get_device("cpu"), get_device("cuda")):
        ops = operations(device, dtype)
        out = device.empty(INDICES.shape + (2,), dtype)
        grad_weight = device.empty(weight.shape, dtype)
        ops["embedding_forward"](device.asarray(INDICES), device.asarray(weight), out)
        ops["embedding_backward"](device.asarray(INDICES), device.asarray(grad_out), grad_weight)
        results.append((device.to_host(out), device.to_host(grad_weight)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], **tolerance(dtype))


@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_cpu_parallel_backward_splits_the_vocabulary(dtype, parts, monkeypatch):
    # rows of 37 elements straddle the clear chunks, and the row ranges of the parts
    # fall mid-chunk; a vocabulary smaller than the parts leaves some parts empty
    monkeypatch.setattr(toolkit, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(embeddings, "scatter_parts", lambda: parts)
    cpu = get_device("cpu")
    for vocabulary in (5, 301):
        indices = RNG.integers(0, vocabulary, size=(6, 40))
        indices[0, :3] = [0, vocabulary - 1, vocabulary - 1]
        grad_out = random((6, 40, 37), dtype)
        start = random((vocabulary, 37), dtype)
        start[: vocabulary // 2] = 0  # clean and dirty chunks
        got = run_backward(cpu, dtype, indices, grad_out, start)
        np.testing.assert_allclose(
            got, reference_backward(indices, grad_out, vocabulary), **tolerance(dtype)
        )


def test_cpu_serial_and_parallel_forward_agree(dtype, monkeypatch):
    cpu = get_device("cpu")
    weight = random((50, 16), dtype)
    indices = RNG.integers(0, 50, size=(40, 60))
    results = []
    for minimum in (0, 2**62):  # every loop parallel, then every loop serial
        monkeypatch.setattr(toolkit, "PARALLEL_MIN_WORK", minimum)
        out = np.empty(indices.shape + (16,), dtype)
        mask = np.empty(indices.shape, dtype)
        operations(cpu, dtype)["embedding_forward"](indices, weight, out)
        operations(cpu, dtype)["nonzero_mask"](indices, mask)
        results.append((out, mask))
    np.testing.assert_array_equal(results[0][0], weight[indices])
    np.testing.assert_array_equal(results[1][0], weight[indices])
    np.testing.assert_array_equal(results[0][1], (indices != 0).astype(dtype))
    np.testing.assert_array_equal(results[1][1], results[0][1])


def test_index_range_finds_the_smallest_and_largest_id(device, dtype):
    from numlayers.kernels import build_family

    operations = build_family("embeddings", device, dtype)
    ids = np.array([5, 3, 9, -2, 7, 9, 0], dtype=np.int64)
    for values in (ids, ids[::-1].copy(), np.array([4], dtype=np.int64), np.arange(600)):
        bounds = device.empty((2,), np.int64)
        operations["index_range"](device.asarray(values), bounds)
        np.testing.assert_array_equal(device.to_host(bounds), [values.min(), values.max()])
