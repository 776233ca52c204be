"""Loss, accuracy and weighted-sum kernels against NumPy references, on every device and dtype.

Each loss has a float64 NumPy reference of its rows and of its gradient, written from
the formulas (Keras 0.3's, with ``eps = 1e-7``) and not from the kernels. The gradients
are also checked against central differences of the CPU forward kernel in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from numlayers.devices import get_device
from numlayers.kernels import toolkit
from numlayers.testing import tolerance

EPS = 1e-7
ROWS, COLS = 3, 5


def rng():
    return np.random.default_rng(20240611)


# ---------------------------------------------------------------- inputs


def positive_pair(generator):
    """Targets and predictions in [0.3, 2], at least 0.1 apart (no kink of |p - t|)."""
    t = generator.uniform(0.3, 2.0, (ROWS, COLS))
    offset = generator.uniform(0.1, 0.5, (ROWS, COLS)) * generator.choice([-1, 1], (ROWS, COLS))
    return t, np.abs(t + offset) + 0.05


def hinge_pair(generator):
    """Targets of -1 / 1; margins ``1 - t * p`` at least 0.1 away from 0, on both sides."""
    t = generator.choice([-1.0, 1.0], (ROWS, COLS))
    margin = generator.uniform(0.1, 1.0, (ROWS, COLS)) * generator.choice([-1, 1], (ROWS, COLS))
    return t, (1.0 - margin) / t


def probability_pair(generator):
    """Targets in [0, 1], two columns of them exactly 0 and 1 (kernels take a shortcut
    there), and predictions in [0.05, 0.95] (inside the clip)."""
    t = generator.uniform(0, 1, (ROWS, COLS))
    t[:, :2] = [0.0, 1.0]
    return t, generator.uniform(0.05, 0.95, (ROWS, COLS))


def distribution_pair(generator):
    """Soft target rows summing to 1, with a zero column, and positive unnormalised
    predictions."""
    t = generator.uniform(0, 1, (ROWS, COLS))
    t[:, 0] = 0.0
    return t / t.sum(axis=1, keepdims=True), generator.uniform(0.2, 1.0, (ROWS, COLS))


def logits_pair(generator):
    t, _ = distribution_pair(generator)
    return t, 3.0 * generator.standard_normal((ROWS, COLS))


def signed_pair(generator):
    return generator.standard_normal((ROWS, COLS)), generator.standard_normal((ROWS, COLS))


# ---------------------------------------------------------------- references


def mean_squared_error(t, p):
    return ((p - t) ** 2).mean(1), 2 * (p - t) / COLS


def mean_absolute_error(t, p):
    return np.abs(p - t).mean(1), np.sign(p - t) / COLS


def mean_absolute_percentage_error(t, p):
    scale = np.maximum(np.abs(t), EPS)
    return 100 * (np.abs(t - p) / scale).mean(1), 100 * np.sign(p - t) / scale / COLS


def mean_squared_logarithmic_error(t, p):
    first = np.log(np.maximum(p, EPS) + 1)
    difference = first - np.log(np.maximum(t, EPS) + 1)
    return (difference**2).mean(1), np.where(p >= EPS, 2 * difference / (p + 1), 0) / COLS


def squared_hinge(t, p):
    margin = np.maximum(1 - t * p, 0)
    return (margin**2).mean(1), -2 * t * margin / COLS


def hinge(t, p):
    margin = 1 - t * p
    return np.maximum(margin, 0).mean(1), np.where(margin > 0, -t, 0) / COLS


def binary_crossentropy(t, p):
    q = np.clip(p, EPS, 1 - EPS)
    loss = -(t * np.log(q) + (1 - t) * np.log(1 - q))
    inside = (p >= EPS) & (p <= 1 - EPS)
    return loss.mean(1), np.where(inside, -t / q + (1 - t) / (1 - q), 0) / COLS


def categorical_crossentropy(t, p):
    total = p.sum(1, keepdims=True)
    q = p / total
    inside = (q >= EPS) & (q <= 1 - EPS)
    loss = -(t * np.log(np.clip(q, EPS, 1 - EPS))).sum(1)
    # chain rule through q = p / sum(p): dq_l / dp_j = (delta_lj - q_l) / sum(p)
    d_loss_d_q = np.where(inside, -t / q, 0)
    jacobian = (np.eye(COLS)[None] - q[:, :, None]) / total[:, :, None]  # [row, l, j]
    return loss, np.einsum("rl,rlj->rj", d_loss_d_q, jacobian)


def poisson(t, p):
    return (p - t * np.log(p + EPS)).mean(1), (1 - t / (p + EPS)) / COLS


def cosine_proximity(t, p):
    t_norm = np.linalg.norm(t, axis=1, keepdims=True)
    p_norm = np.linalg.norm(p, axis=1, keepdims=True)
    cosine = (t * p).sum(1, keepdims=True) / (t_norm * p_norm)
    return -cosine[:, 0], -(t / t_norm - cosine * p / p_norm) / p_norm


def softmax_crossentropy(t, z):
    log_softmax = z - logsumexp(z, axis=1, keepdims=True)
    return -(t * log_softmax).sum(1), softmax(z, axis=1) * t.sum(1, keepdims=True) - t


REFERENCES = {
    "mean_squared_error": (mean_squared_error, signed_pair),
    "mean_absolute_error": (mean_absolute_error, positive_pair),
    "mean_absolute_percentage_error": (mean_absolute_percentage_error, positive_pair),
    "mean_squared_logarithmic_error": (mean_squared_logarithmic_error, positive_pair),
    "squared_hinge": (squared_hinge, hinge_pair),
    "hinge": (hinge, hinge_pair),
    "binary_crossentropy": (binary_crossentropy, probability_pair),
    "categorical_crossentropy": (categorical_crossentropy, distribution_pair),
    "poisson": (poisson, positive_pair),
    "cosine_proximity": (cosine_proximity, signed_pair),
    "softmax_crossentropy": (softmax_crossentropy, logits_pair),
}
SPARSE_REFERENCES = {
    "sparse_categorical_crossentropy": categorical_crossentropy,
    "sparse_softmax_crossentropy": softmax_crossentropy,
}
SPARSE_INPUTS = {
    "sparse_categorical_crossentropy": distribution_pair,
    "sparse_softmax_crossentropy": logits_pair,
}


# ---------------------------------------------------------------- helpers


def run_forward(device, dtype, name, target, pred):
    out = device.empty((pred.shape[0],), dtype)
    getattr(device.kernels(dtype), f"{name}_forward")(
        device.asarray(target), device.asarray(pred), out
    )
    return device.to_host(out)


def run_backward(device, dtype, name, target, pred, row_scale):
    grad = device.empty(pred.shape, dtype)
    getattr(device.kernels(dtype), f"{name}_backward")(
        device.asarray(target), device.asarray(pred), device.asarray(row_scale), grad
    )
    return device.to_host(grad)


def run_forward_backward(device, dtype, name, target, pred, row_scale):
    """The loss rows and the gradient from the one-call operation a training step uses."""
    loss_rows, grad = device.empty((pred.shape[0],), dtype), device.empty(pred.shape, dtype)
    getattr(device.kernels(dtype), f"{name}_forward_backward")(
        device.asarray(target), device.asarray(pred), device.asarray(row_scale), loss_rows, grad
    )
    return device.to_host(loss_rows), device.to_host(grad)


def assert_loss_and_gradient(device, dtype, name, target, pred, row_scale, loss, grad):
    """The forward and backward operations, and the one-call operation, against the
    expected loss rows and ``row_scale * d loss / d pred``."""
    expected_grad = row_scale[:, None] * grad
    assert_close(run_forward(device, dtype, name, target, pred), loss, dtype)
    assert_close(run_backward(device, dtype, name, target, pred, row_scale), expected_grad, dtype)
    both = run_forward_backward(device, dtype, name, target, pred, row_scale)
    assert_close(both[0], loss, dtype)
    assert_close(both[1], expected_grad, dtype)


def labels_of(generator):
    return generator.integers(0, COLS, ROWS).astype(np.int64)


def row_scale_of(generator, dtype):
    return generator.uniform(0.5, 2.0, ROWS).astype(dtype)


def assert_close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, **tolerance(dtype))


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_loss_matches_numpy(device, dtype, name):
    reference, make_inputs = REFERENCES[name]
    generator = rng()
    t, p = (a.astype(dtype) for a in make_inputs(generator))
    row_scale = row_scale_of(generator, dtype)
    expected_loss, expected_grad = reference(t.astype(np.float64), p.astype(np.float64))
    assert_loss_and_gradient(device, dtype, name, t, p, row_scale, expected_loss, expected_grad)


@pytest.mark.parametrize("name", sorted(SPARSE_REFERENCES))
def test_sparse_loss_matches_dense_one_hot(device, dtype, name):
    generator = rng()
    labels = labels_of(generator)
    _, p = SPARSE_INPUTS[name](generator)
    p = p.astype(dtype)
    row_scale = row_scale_of(generator, dtype)
    one_hot = np.eye(COLS)[labels]
    expected_loss, expected_grad = SPARSE_REFERENCES[name](one_hot, p.astype(np.float64))
    assert_loss_and_gradient(
        device, dtype, name, labels, p, row_scale, expected_loss, expected_grad
    )


ALL_LOSSES = sorted(REFERENCES) + sorted(SPARSE_REFERENCES)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradient_matches_central_differences_of_forward_kernel(name):
    """d(sum_i scale_i * loss_i) / dp by float64 central differences of the CPU forward."""
    device = get_device("cpu")
    dtype = np.dtype(np.float64)
    generator = rng()
    if name in SPARSE_INPUTS:
        target = labels_of(generator)
        _, p = SPARSE_INPUTS[name](generator)
    else:
        target, p = REFERENCES[name][1](generator)
    row_scale = row_scale_of(generator, dtype)
    analytic = run_backward(device, dtype, name, target, p, row_scale)
    step = 1e-6
    numeric = np.empty_like(p)
    for index in np.ndindex(p.shape):
        shifted = p.copy()
        shifted[index] += step
        above = row_scale @ run_forward(device, dtype, name, target, shifted)
        shifted[index] -= 2 * step
        below = row_scale @ run_forward(device, dtype, name, target, shifted)
        numeric[index] = (above - below) / (2 * step)
    np.testing.assert_allclose(
        analytic, numeric, rtol=1e-5, atol=1e-7 * max(1.0, np.abs(numeric).max())
    )


def test_clipped_predictions_have_zero_gradient(device, dtype):
    """Where Keras clips a prediction the loss is flat in it: finite loss, zero gradient."""
    t = np.array([[1.0, 0.0, 1.0, 0.0]], dtype)
    p = np.array([[0.0, 1.0, 1.0, -0.5]], dtype)  # 0 and 1 clip in the crossentropies
    ones = np.ones(1, dtype)

    bce = run_forward(device, dtype, "binary_crossentropy", t, p)
    assert np.isfinite(bce).all()
    bce_grad = run_backward(device, dtype, "binary_crossentropy", t, p, ones)
    np.testing.assert_array_equal(bce_grad, np.zeros_like(p))

    msle_grad = run_backward(device, dtype, "mean_squared_logarithmic_error", t, p, ones)
    assert msle_grad[0, 3] == 0  # p = -0.5 is clipped to eps
    assert msle_grad[0, 1] != 0

    # q = p / sum(p) clips at 0 and at 1 - eps: only the unclipped columns carry t / q
    t_cce = np.array([[0.0, 1.0, 0.0]], dtype)
    p_cce = np.array([[0.0, 1.0, 0.0]], dtype)
    cce = run_forward(device, dtype, "categorical_crossentropy", t_cce, p_cce)
    expected = -np.log(np.float64(np.dtype(dtype).type(1) - np.dtype(dtype).type(EPS)))
    np.testing.assert_allclose(cce, [expected], rtol=1e-6)
    cce_grad = run_backward(device, dtype, "categorical_crossentropy", t_cce, p_cce, ones)
    np.testing.assert_array_equal(cce_grad, np.zeros_like(p_cce))


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_softmax_crossentropy_is_finite_for_logits_of_1000(device, dtype, sparse):
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]], dtype)
    labels = np.array([1, 2], np.int64)
    one_hot = np.eye(3, dtype=dtype)[labels]
    name = "sparse_softmax_crossentropy" if sparse else "softmax_crossentropy"
    target = labels if sparse else one_hot
    loss = run_forward(device, dtype, name, target, logits)
    grad = run_backward(device, dtype, name, target, logits, np.ones(2, dtype))
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    # row 0: log_softmax of the -1000 entry is -2000; row 1: the label holds the maximum
    np.testing.assert_allclose(loss, [2000.0, 0.0], **tolerance(dtype))
    expected_grad = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(grad, expected_grad, **tolerance(dtype))


def test_categorical_accuracy_takes_the_first_maximum(device, dtype):
    t = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0.2, 0.2, 0.6]], dtype)
    p = np.array([[0.1, 0.8, 0.1], [0.3, 0.3, 0.3], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]], dtype)
    correct = device.empty((4,), dtype)
    device.kernels(dtype).categorical_accuracy_rows(device.asarray(t), device.asarray(p), correct)
    expected = (np.argmax(t, 1) == np.argmax(p, 1)).astype(dtype)
    np.testing.assert_array_equal(device.to_host(correct), expected)
    np.testing.assert_array_equal(expected, [1, 1, 0, 1])


def test_sparse_categorical_accuracy(device, dtype):
    labels = np.array([1, 0, 2, 2], np.int64)
    p = np.array([[0.1, 0.8, 0.1], [0.3, 0.3, 0.3], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]], dtype)
    correct = device.empty((4,), dtype)
    kernels = device.kernels(dtype)
    kernels.sparse_categorical_accuracy_rows(device.asarray(labels), device.asarray(p), correct)
    np.testing.assert_array_equal(device.to_host(correct), [1, 1, 0, 1])


def test_binary_accuracy_rounds_halves_to_even(device, dtype):
    t = np.array([[0, 1, 0, 2], [1, 1, 0, -0.0], [2, 0, 1, 1]], dtype)
    p = np.array([[0.5, 0.51, 0.49, 1.5], [1.5, 0.9, -0.4, -0.5], [2.5, 0.0, 1.5, 3.0]], dtype)
    correct = device.empty((3,), dtype)
    device.kernels(dtype).binary_accuracy_rows(device.asarray(t), device.asarray(p), correct)
    expected = (np.round(p) == t).mean(axis=1)
    np.testing.assert_allclose(device.to_host(correct), expected, **tolerance(dtype))
    np.testing.assert_allclose(expected, [1.0, 0.75, 0.5])


@pytest.mark.parametrize("length", [1, 37, 300])
def test_weighted_sum(device, dtype, length):
    generator = rng()
    values = generator.standard_normal(length).astype(dtype)
    weights = generator.uniform(0, 1, length).astype(dtype)
    out = device.asarray(np.array([123.0], dtype))  # overwritten, not accumulated
    device.kernels(dtype).weighted_sum(device.asarray(values), device.asarray(weights), out)
    expected = values.astype(np.float64) @ weights.astype(np.float64)
    np.testing.assert_allclose(device.to_host(out), [expected], **tolerance(dtype))


#: one loss of each loop shape: a per-element term, rows coupled by sums (with and without
#: a softmax), a cosine, and both sparse forms; every loss of a shape runs the same
#: generated loop, and each formula is checked above through the serial loops
PARALLEL_CASES = [
    "mean_squared_error",
    "categorical_crossentropy",
    "softmax_crossentropy",
    "cosine_proximity",
]


def test_two_core_cpu_loops_match_the_serial_ones(monkeypatch):
    """The parallel CPU variants (used for large batches) give the serial results."""
    device = get_device("cpu")
    dtype = np.dtype(np.float64)
    generator = rng()
    row_scale = row_scale_of(generator, dtype)
    cases = [(name, *REFERENCES[name][1](generator)) for name in PARALLEL_CASES]
    cases += [
        (name, labels_of(generator), SPARSE_INPUTS[name](generator)[1]) for name in SPARSE_INPUTS
    ]
    results = {}
    for threshold in (1 << 62, 0):
        monkeypatch.setattr(toolkit, "PARALLEL_MIN_WORK", threshold)
        results[threshold] = [
            (
                run_forward(device, dtype, name, target, p),
                run_backward(device, dtype, name, target, p, row_scale),
                # the one-call loop of each shape of loss (an averaged term, a row-coupled)
                *(
                    run_forward_backward(device, dtype, name, target, p, row_scale)
                    if name in ("mean_squared_error", "softmax_crossentropy")
                    else ()
                ),
            )
            for name, target, p in cases
        ]
    for serial, parallel in zip(results[1 << 62], results[0], strict=True):
        for serial_array, parallel_array in zip(serial, parallel, strict=True):
            np.testing.assert_array_equal(serial_array, parallel_array)
