"""Merge-mode kernels against NumPy: products, concat parts, batched products, cosine."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import get_device
from numlayers.kernels import build_family, matmul, merges, toolkit
from numlayers.testing import tolerance

RNG = np.random.default_rng(2024)


def random(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def stale(shape, dtype):
    """An output full of values the operation must overwrite."""
    return np.full(shape, 99.0, dtype)


def operations(device, dtype):
    return build_family("merges", device, dtype)


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 2)], ids=["2d", "3d"])
def test_elementwise_products_and_scale(device, dtype, shape):
    ops = operations(device, dtype)
    x = random(shape, dtype)
    y = random(shape, dtype)

    out = device.asarray(y.copy())  # the CPU device would not copy y
    ops["multiply_into"](device.asarray(x), out)
    np.testing.assert_allclose(device.to_host(out), y * x, **tolerance(dtype))

    out = device.asarray(stale(shape, dtype))
    ops["multiply_two"](device.asarray(x), device.asarray(y), out)
    np.testing.assert_allclose(device.to_host(out), x * y, **tolerance(dtype))

    out = device.asarray(stale(shape, dtype))
    ops["scale_into"](device.asarray(x), -2.5, out)
    np.testing.assert_allclose(device.to_host(out), -2.5 * x, **tolerance(dtype))
    ops["scale_into"](out, 0.5, out)  # in place, as the 'ave' mode scales its sum
    np.testing.assert_allclose(device.to_host(out), -1.25 * x, **tolerance(dtype))


def test_mul_merge_gradient_from_products(device, dtype):
    # the layer's recipe for grad_i = grad * prod_{j != i} x_j with three inputs
    ops = operations(device, dtype)
    xs = [random((2, 4), dtype) for _ in range(3)]
    grad = random((2, 4), dtype)
    for i in range(3):
        others = [x for j, x in enumerate(xs) if j != i]
        out = device.empty((2, 4), dtype)
        ops["multiply_two"](device.asarray(grad), device.asarray(others[0]), out)
        ops["multiply_into"](device.asarray(others[1]), out)
        np.testing.assert_allclose(
            device.to_host(out), grad * others[0] * others[1], **tolerance(dtype)
        )


def concat_views(shape, axis, lengths):
    """The (outer, length, inner) views the layer builds to concatenate along ``axis``."""
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return [(outer, length, inner) for length in lengths], (outer, sum(lengths), inner)


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_concat_parts_match_numpy_and_round_trip(device, dtype, axis):
    base = (2, 3, 1, 2)
    lengths = [1, 3, 2]
    shapes = [base[:axis] + (length,) + base[axis + 1 :] for length in lengths]
    xs = [random(shape, dtype) for shape in shapes]
    expected = np.concatenate(xs, axis=axis)
    part_views, out_view = concat_views(base, axis, lengths)
    ops = operations(device, dtype)

    out = device.asarray(stale(out_view, dtype))
    offset = 0
    for x, view in zip(xs, part_views, strict=True):
        ops["concat_forward_part"](device.asarray(x.reshape(view)), out, offset)
        offset += view[1]
    np.testing.assert_array_equal(device.to_host(out).reshape(expected.shape), expected)

    # backward of the concat: each part's slice of the output, which round-trips exactly
    offset = 0
    for x, view in zip(xs, part_views, strict=True):
        grad_x = device.asarray(stale(view, dtype))
        ops["concat_backward_part"](out, offset, grad_x)
        np.testing.assert_array_equal(device.to_host(grad_x).reshape(x.shape), x)
        offset += view[1]


def test_concat_of_an_empty_part(device, dtype):
    ops = operations(device, dtype)
    out = device.asarray(stale((2, 3, 2), dtype))
    ops["concat_forward_part"](device.asarray(np.zeros((2, 0, 2), dtype)), out, 1)
    np.testing.assert_array_equal(device.to_host(out), stale((2, 3, 2), dtype))


def batched_operands(batch, rows, cols, depth, transpose_a, transpose_b, dtype):
    a = random((batch, depth, rows) if transpose_a else (batch, rows, depth), dtype)
    b = random((batch, cols, depth) if transpose_b else (batch, depth, cols), dtype)
    expected = np.einsum(
        "zmk,zkn->zmn",
        np.swapaxes(a, 1, 2) if transpose_a else a,
        np.swapaxes(b, 1, 2) if transpose_b else b,
    )
    return a, b, expected


TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]
TRANSPOSE_IDS = ["nn", "tn", "nt", "tt"]
# (batch, M, N, K): M, N cross CUDA's output tile and K its slice of the depth (64 x 64
# and 16 on a GPU, smaller under the simulator: the toolkit's launch_size)
TILE_EDGE_SHAPES = [
    (2, matmul.TILE_M + 1, 3, matmul.TILE_K + 1),
    (2, 3, matmul.TILE_N + 2, matmul.TILE_K + 2),
]


@pytest.mark.parametrize(("transpose_a", "transpose_b"), TRANSPOSES, ids=TRANSPOSE_IDS)
@pytest.mark.parametrize("shape", TILE_EDGE_SHAPES, ids=["tall", "wide"])
def test_batched_matmul_across_tile_edges(device, dtype, transpose_a, transpose_b, shape):
    batch, rows, cols, depth = shape
    a, b, expected = batched_operands(batch, rows, cols, depth, transpose_a, transpose_b, dtype)
    out = device.asarray(stale((batch, rows, cols), dtype))
    operations(device, dtype)["batched_matmul"](
        device.asarray(a), device.asarray(b), out, transpose_a, transpose_b
    )
    np.testing.assert_allclose(device.to_host(out), expected, **tolerance(dtype))


@pytest.mark.parametrize(("transpose_a", "transpose_b"), TRANSPOSES, ids=TRANSPOSE_IDS)
def test_batched_matmul_of_vectors_and_empty_depth(device, dtype, transpose_a, transpose_b):
    # 'dot' mode on (batch, d) inputs is a batch of 1 x d @ d x 1 products
    ops = operations(device, dtype)
    a, b, expected = batched_operands(3, 1, 1, 5, transpose_a, transpose_b, dtype)
    out = device.asarray(stale((3, 1, 1), dtype))
    ops["batched_matmul"](device.asarray(a), device.asarray(b), out, transpose_a, transpose_b)
    np.testing.assert_allclose(device.to_host(out), expected, **tolerance(dtype))

    a, b, expected = batched_operands(2, 2, 3, 0, transpose_a, transpose_b, dtype)
    out = device.asarray(stale((2, 2, 3), dtype))
    ops["batched_matmul"](device.asarray(a), device.asarray(b), out, transpose_a, transpose_b)
    np.testing.assert_array_equal(device.to_host(out), np.zeros((2, 2, 3), dtype))


def test_cuda_batched_matmul_strides_over_a_short_grid(dtype, monkeypatch):
    # batches larger than the grid's z extent are walked in strides of gridDim.z
    monkeypatch.setattr(matmul, "MAX_GRID_Z", 2)
    device = get_device("cuda")
    a, b, expected = batched_operands(5, 3, 2, 4, False, True, dtype)
    out = device.asarray(stale((5, 3, 2), dtype))
    operations(device, dtype)["batched_matmul"](
        device.asarray(a), device.asarray(b), out, False, True
    )
    np.testing.assert_allclose(device.to_host(out), expected, **tolerance(dtype))


@pytest.mark.parametrize(("transpose_a", "transpose_b"), TRANSPOSES, ids=TRANSPOSE_IDS)
def test_cpu_batched_matmul_blas_and_vector_paths(dtype, transpose_a, transpose_b):
    # larger than the simulator allows; (batch, 1, 1) results take the row-dot loop
    matmul = operations(get_device("cpu"), dtype)["batched_matmul"]
    for batch, rows, cols, depth in [(4, 70, 33, 40), (9, 1, 1, 300), (2, 1, 7, 5), (0, 1, 1, 3)]:
        a, b, expected = batched_operands(batch, rows, cols, depth, transpose_a, transpose_b, dtype)
        out = stale((batch, rows, cols), dtype)
        matmul(a, b, out, transpose_a, transpose_b)
        np.testing.assert_allclose(out, expected, **tolerance(dtype))


def test_batched_matmul_of_an_empty_batch(device, dtype):
    ops = operations(device, dtype)
    for rows, cols in [(2, 3), (1, 1)]:
        a, b, _ = batched_operands(0, rows, cols, 4, False, False, dtype)
        out = device.empty((0, rows, cols), dtype)
        ops["batched_matmul"](device.asarray(a), device.asarray(b), out, False, False)
        assert device.to_host(out).shape == (0, rows, cols)


@pytest.mark.parametrize("minimum", [0, 2**62], ids=["parallel", "serial"])
def test_cpu_elementwise_and_concat_serial_and_parallel(dtype, monkeypatch, minimum):
    monkeypatch.setattr(toolkit, "PARALLEL_MIN_WORK", minimum)
    ops = operations(get_device("cpu"), dtype)
    x = random((40, 30), dtype)
    y = random((40, 30), dtype)
    out = y.copy()
    ops["multiply_into"](x, out)
    np.testing.assert_allclose(out, y * x, **tolerance(dtype))
    ops["multiply_two"](x, y, out)
    np.testing.assert_allclose(out, x * y, **tolerance(dtype))
    ops["scale_into"](x, 0.5, out)
    np.testing.assert_allclose(out, 0.5 * x, **tolerance(dtype))
    whole = stale((40, 50, 2), dtype)
    ops["concat_forward_part"](x.reshape(40, 15, 2), whole, 20)
    np.testing.assert_array_equal(whole[:, 20:35], x.reshape(40, 15, 2))
    untouched = np.concatenate([whole[:, :20], whole[:, 35:]], axis=1)
    np.testing.assert_array_equal(untouched, stale(untouched.shape, dtype))
    grad_x = stale((40, 15, 2), dtype)
    ops["concat_backward_part"](whole, 20, grad_x)
    np.testing.assert_array_equal(grad_x, x.reshape(40, 15, 2))


def cosine_reference(a, b):
    """The guarded cosine in float64; equal to Keras 0.3's wherever norms are not tiny."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    squares = np.sum(a * a, axis=1) * np.sum(b * b, axis=1)
    return (np.sum(a * b, axis=1) / np.sqrt(np.maximum(squares, merges.COSINE_EPSILON)))[:, None]


def cosine_gradient_reference(a, b, grad):
    """Analytic gradients of the unguarded cosine, for rows away from the guard."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    norm_a = np.linalg.norm(a, axis=1, keepdims=True)
    norm_b = np.linalg.norm(b, axis=1, keepdims=True)
    cosine = np.sum(a * b, axis=1, keepdims=True) / (norm_a * norm_b)
    grad_a = grad * (b / (norm_a * norm_b) - cosine * a / norm_a**2)
    grad_b = grad * (a / (norm_a * norm_b) - cosine * b / norm_b**2)
    return grad_a, grad_b


def cosine_inputs(rows, dim, dtype):
    """Rows of ordinary vectors, then a parallel pair, a zero row and a row below the guard."""
    a = random((rows + 3, dim), dtype)
    b = random((rows + 3, dim), dtype)
    b[rows] = 3 * a[rows]
    a[rows + 1] = 0
    a[rows + 2] *= dtype.type(1e-3)
    b[rows + 2] *= dtype.type(1e-3)
    return a, b


@pytest.mark.parametrize("dim", [5, 130], ids=["narrow", "wider-than-a-cuda-block"])
def test_cosine_forward_and_backward(device, dtype, dim):
    ops = operations(device, dtype)
    a, b = cosine_inputs(2, dim, dtype)
    out = device.asarray(stale((5, 1), dtype))
    ops["cosine_forward"](device.asarray(a), device.asarray(b), out)
    result = device.to_host(out)
    np.testing.assert_allclose(result, cosine_reference(a, b), **tolerance(dtype))
    np.testing.assert_allclose(result[2, 0], 1.0, **tolerance(dtype))  # parallel vectors
    assert result[3, 0] == 0  # a zero vector gives 0, not nan

    grad = random((5, 1), dtype)
    grad_a = device.asarray(stale(a.shape, dtype))
    grad_b = device.asarray(stale(b.shape, dtype))
    ops["cosine_backward"](
        device.asarray(a), device.asarray(b), device.asarray(grad), grad_a, grad_b
    )
    expected_a, expected_b = cosine_gradient_reference(a[:3], b[:3], grad[:3])
    np.testing.assert_allclose(device.to_host(grad_a)[:3], expected_a, **tolerance(dtype))
    np.testing.assert_allclose(device.to_host(grad_b)[:3], expected_b, **tolerance(dtype))
    # below the guard the denominator is constant: the gradient of dot / sqrt(epsilon)
    scale = grad[3:] / np.sqrt(merges.COSINE_EPSILON)
    np.testing.assert_allclose(device.to_host(grad_a)[3:], scale * b[3:], **tolerance(dtype))
    np.testing.assert_allclose(device.to_host(grad_b)[3:], scale * a[3:], **tolerance(dtype))


@pytest.mark.parametrize("minimum", [0, 2**62], ids=["parallel", "serial"])
def test_cpu_cosine_backward_matches_finite_differences(monkeypatch, minimum):
    monkeypatch.setattr(toolkit, "PARALLEL_MIN_WORK", minimum)
    ops = operations(get_device("cpu"), np.dtype(np.float64))
    a, b = cosine_inputs(3, 4, np.dtype(np.float64))
    projection = RNG.standard_normal((a.shape[0], 1))
    out = np.empty((a.shape[0], 1))

    def loss():
        ops["cosine_forward"](a, b, out)
        return float(np.sum(out * projection))

    grad_a = np.empty_like(a)
    grad_b = np.empty_like(b)
    ops["cosine_backward"](a, b, projection, grad_a, grad_b)
    step = 1e-6
    for values, analytic in ((a, grad_a), (b, grad_b)):
        numerical = np.zeros_like(values)
        for index in np.ndindex(values.shape):
            original = values[index]
            values[index] = original + step
            plus = loss()
            values[index] = original - step
            minus = loss()
            values[index] = original
            numerical[index] = (plus - minus) / (2 * step)
        np.testing.assert_allclose(analytic, numerical, rtol=1e-6, atol=1e-7)
