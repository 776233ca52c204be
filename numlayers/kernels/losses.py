"""Losses per row and their gradients, accuracy metrics, and the weighted sum of row values.

Every loss works on a 2-D ``(rows, cols)`` batch (the caller reshapes sequence outputs)
and gives one value per row, with Keras 0.3's formulas (``eps`` is ``1e-7``, ``n`` is
``cols``, sums and means run over a row):

=================================  ===================================================
name                               ``loss_rows[i]``
=================================  ===================================================
``mean_squared_error``             ``mean((p - t)**2)``
``mean_absolute_error``            ``mean(|p - t|)``
``mean_absolute_percentage_error`` ``100 * mean(|t - p| / max(|t|, eps))``
``mean_squared_logarithmic_error`` ``mean((log(max(p, eps) + 1) - log(max(t, eps) + 1))**2)``
``squared_hinge``                  ``mean(max(1 - t * p, 0)**2)``
``hinge``                          ``mean(max(1 - t * p, 0))``
``binary_crossentropy``            ``mean(-(t * log(q) + (1 - t) * log(1 - q)))``,
                                   ``q = clip(p, eps, 1 - eps)``
``categorical_crossentropy``       ``-sum(t * log(clip(p / sum(p), eps, 1 - eps)))``
``poisson``                        ``mean(p - t * log(p + eps))``
``cosine_proximity``               ``-sum(t / |t| * p / |p|)``, ``|x| = sqrt(max(sum x**2,
                                   1e-12))``
=================================  ===================================================

Operations (both devices), for each ``NAME`` above:

- ``NAME_forward(y_true, y_pred, loss_rows)``: ``loss_rows[i]`` as in the table
- ``NAME_backward(y_true, y_pred, row_scale, grad_pred)``:
  ``grad_pred[i, j] = row_scale[i] * d loss_rows[i] / d y_pred[i, j]``, the exact
  derivative of the forward (zero where a clip is active)
- ``sparse_categorical_crossentropy_forward(labels, y_pred, loss_rows)`` and
  ``sparse_categorical_crossentropy_backward(labels, y_pred, row_scale, grad_pred)``:
  ``categorical_crossentropy`` against one-hot rows of the int64 ``labels``
- ``softmax_crossentropy_forward(y_true, logits, loss_rows)``:
  ``-sum(t * log_softmax(logits))``, through the log-sum-exp (finite for any finite logits)
- ``softmax_crossentropy_backward(y_true, logits, row_scale, grad_logits)``:
  ``row_scale[i] * (softmax(logits[i]) * sum(t[i]) - t[i])``
- ``sparse_softmax_crossentropy_forward(labels, logits, loss_rows)`` and
  ``sparse_softmax_crossentropy_backward(labels, logits, row_scale, grad_logits)``
- ``categorical_accuracy_rows(y_true, y_pred, correct_rows)``: ``1`` where the first
  maximum of the row of ``y_pred`` is where the first maximum of ``y_true`` is, else ``0``
- ``sparse_categorical_accuracy_rows(labels, y_pred, correct_rows)``: the same against labels
- ``binary_accuracy_rows(y_true, y_pred, correct_rows)``: ``mean(round(p) == t)``, with
  ``round`` taking halves to even (as NumPy and TensorFlow)
- ``weighted_sum(values, weights, out)``: ``out[0] = sum(values * weights)`` (on CUDA
  ``out`` stays on the device until the caller copies it)

``p / sum(p)`` is computed as ``p * (1 / sum(p))``. ``cosine_proximity`` sums the
products of the normalised rows (a true cosine, as Keras 2); Keras 0.3 and 1 averaged
them, which is the cosine divided by ``n``.

The caller validates shapes and labels. How the formulas are shared:

- Losses that average a per-element term (the first seven, ``poisson`` and binary
  accuracy) are a plain-Python ``term(t, p, k)`` and its derivative
  ``term_gradient(t, p, k)``, ``k`` being the dtype's constants.
- The others couple a row: ``stats(target, pred, i, k)`` computes the row's sums once
  (a tuple), ``row_loss(target, pred, i, stats, k)`` the loss and
  ``row_gradient(target, pred, i, j, stats, k)`` one element of the gradient.

Each helper is compiled inline into the CPU loops and as a CUDA device function.
On the CPU a loop runs over the rows (both cores for large batches); on CUDA the
forward kernels take one thread per row and the backward kernels one thread per
element, so a row-coupled gradient recomputes its row's ``stats`` per element (rows
are short).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numba import prange

from numlayers.kernels.cuda_support import (
    THREADS_PER_BLOCK,
    CudaKernelRegistry,
    blocks_for,
    new_registry,
)
from numlayers.kernels.optimizers import (
    KernelConstants,
    block_sum_launcher,
    compile_cpu,
    cpu_inline,
    cpu_sum,
    kernel_constants,
    product_term,
)

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None

#: Batches of at least this many elements use the two-core CPU loops. The rows of the
#: logarithmic losses cost ~10 ns an element on one core (NumPy's SIMD logarithms are
#: faster), so from here the second core's wake-up is a small part of the work.
PARALLEL_MIN_SIZE = 1 << 18


# ---------------------------------------------------------------- per-element terms


@cpu_inline
def squared_error(t, p, k):
    return (p - t) * (p - t)


@cpu_inline
def squared_error_gradient(t, p, k):
    return k.two * (p - t)


@cpu_inline
def absolute_error(t, p, k):
    return abs(p - t)


@cpu_inline
def absolute_error_gradient(t, p, k):
    return k.one if p > t else (-k.one if p < t else k.zero)


@cpu_inline
def absolute_percentage_error(t, p, k):
    return k.hundred * abs(t - p) / max(abs(t), k.eps)


@cpu_inline
def absolute_percentage_error_gradient(t, p, k):
    direction = k.one if p > t else (-k.one if p < t else k.zero)
    return k.hundred * direction / max(abs(t), k.eps)


@cpu_inline
def squared_logarithmic_error(t, p, k):
    difference = math.log(max(p, k.eps) + k.one) - math.log(max(t, k.eps) + k.one)
    return difference * difference


@cpu_inline
def squared_logarithmic_error_gradient(t, p, k):
    if p < k.eps:  # clipped: the loss does not depend on p here
        return k.zero
    difference = math.log(p + k.one) - math.log(max(t, k.eps) + k.one)
    return k.two * difference / (p + k.one)


@cpu_inline
def squared_hinge_term(t, p, k):
    margin = max(k.one - t * p, k.zero)
    return margin * margin


@cpu_inline
def squared_hinge_gradient(t, p, k):
    return -k.two * t * max(k.one - t * p, k.zero)


@cpu_inline
def hinge_term(t, p, k):
    return max(k.one - t * p, k.zero)


@cpu_inline
def hinge_gradient(t, p, k):
    return -t if k.one - t * p > k.zero else k.zero


@cpu_inline
def binary_crossentropy_term(t, p, k):
    q = min(max(p, k.eps), k.one_minus_eps)
    # A 0/1 target (the only finite t with t * (1 - t) == 0) needs one logarithm, of q
    # or 1 - q, picked by arithmetic: a branch on random labels would mispredict half.
    if t * (k.one - t) == k.zero:
        return -math.log(t * q + (k.one - t) * (k.one - q))
    return -(t * math.log(q) + (k.one - t) * math.log(k.one - q))


@cpu_inline
def binary_crossentropy_gradient(t, p, k):
    if p < k.eps or p > k.one_minus_eps:
        return k.zero
    return (p - t) / (p * (k.one - p))


@cpu_inline
def poisson_term(t, p, k):
    return p - t * math.log(p + k.eps)


@cpu_inline
def poisson_gradient(t, p, k):
    return k.one - t / (p + k.eps)


@cpu_inline
def binary_match(t, p, k):
    """``1`` where ``p`` rounds (halves to even) to ``t``, else ``0``."""
    rounded = abs(p)
    if rounded < k.round_shift:
        # the sum has no fraction bits left, and IEEE addition rounds halves to even
        rounded = (rounded + k.round_shift) - k.round_shift
    if p < k.zero:
        rounded = -rounded
    return k.one if rounded == t else k.zero


class ElementwiseLoss(NamedTuple):
    term: Callable[..., Any]
    gradient: Callable[..., Any] | None


ELEMENTWISE = {
    "mean_squared_error": ElementwiseLoss(squared_error, squared_error_gradient),
    "mean_absolute_error": ElementwiseLoss(absolute_error, absolute_error_gradient),
    "mean_absolute_percentage_error": ElementwiseLoss(
        absolute_percentage_error, absolute_percentage_error_gradient
    ),
    "mean_squared_logarithmic_error": ElementwiseLoss(
        squared_logarithmic_error, squared_logarithmic_error_gradient
    ),
    "squared_hinge": ElementwiseLoss(squared_hinge_term, squared_hinge_gradient),
    "hinge": ElementwiseLoss(hinge_term, hinge_gradient),
    "binary_crossentropy": ElementwiseLoss(binary_crossentropy_term, binary_crossentropy_gradient),
    "poisson": ElementwiseLoss(poisson_term, poisson_gradient),
    "binary_accuracy": ElementwiseLoss(binary_match, None),
}


# ---------------------------------------------------------------- row-coupled losses


@cpu_inline
def no_stats(target, pred, i, k):
    return (k.zero,)


@cpu_inline
def categorical_crossentropy_stats(t, p, i, k):
    """``(1 / sum(p), sum of t where q = p / sum(p) is not clipped)``."""
    total = k.zero
    for j in range(p.shape[1]):
        total += p[i, j]
    inverse_total = k.one / total
    unclipped_target = k.zero
    for j in range(p.shape[1]):
        if k.eps <= p[i, j] * inverse_total <= k.one_minus_eps:
            unclipped_target += t[i, j]
    return (inverse_total, unclipped_target)


@cpu_inline
def categorical_crossentropy_row(t, p, i, stats, k):
    loss = k.zero
    for j in range(p.shape[1]):
        if t[i, j] != k.zero:  # one-hot targets need one logarithm per row
            q = min(max(p[i, j] * stats[0], k.eps), k.one_minus_eps)
            loss -= t[i, j] * math.log(q)
    return loss


@cpu_inline
def categorical_crossentropy_row_gradient(t, p, i, j, stats, k):
    # q = p / S: d loss / d p_j = (d loss / d q_j - sum_l d loss / d q_l * q_l) / S,
    # where d loss / d q_l = -t_l / q_l on unclipped l and 0 on clipped l
    inverse_total, unclipped_target = stats
    unclipped = k.eps <= p[i, j] * inverse_total <= k.one_minus_eps
    direct = -t[i, j] / p[i, j] if unclipped else k.zero
    return direct + unclipped_target * inverse_total


@cpu_inline
def sparse_categorical_crossentropy_stats(labels, p, i, k):
    """``(1 / sum(p), q = p[label] / sum(p), 1 if q is not clipped else 0)``."""
    total = k.zero
    for j in range(p.shape[1]):
        total += p[i, j]
    inverse_total = k.one / total
    q = p[i, labels[i]] * inverse_total
    return (inverse_total, q, k.one if k.eps <= q <= k.one_minus_eps else k.zero)


@cpu_inline
def sparse_categorical_crossentropy_row(labels, p, i, stats, k):
    return -math.log(min(max(stats[1], k.eps), k.one_minus_eps))


@cpu_inline
def sparse_categorical_crossentropy_row_gradient(labels, p, i, j, stats, k):
    inverse_total, q, unclipped = stats
    if unclipped == k.zero:
        return k.zero
    direct = -k.one / p[i, j] if j == labels[i] else k.zero
    return direct + inverse_total


@cpu_inline
def cosine_proximity_stats(t, p, i, k):
    """``(|t|, |p|, cosine, cosine where |p| follows p else 0)``."""
    tt = k.zero
    pp = k.zero
    tp = k.zero
    for j in range(p.shape[1]):
        tt += t[i, j] * t[i, j]
        pp += p[i, j] * p[i, j]
        tp += t[i, j] * p[i, j]
    norm_t = math.sqrt(max(tt, k.norm_floor))
    norm_p = math.sqrt(max(pp, k.norm_floor))
    cosine = tp / (norm_t * norm_p)
    # below the floor |p| is a constant: no gradient flows through it
    return (norm_t, norm_p, cosine, cosine if pp >= k.norm_floor else k.zero)


@cpu_inline
def cosine_proximity_row(t, p, i, stats, k):
    return -stats[2]


@cpu_inline
def cosine_proximity_row_gradient(t, p, i, j, stats, k):
    norm_t, norm_p, cosine, coupling = stats
    return -(t[i, j] / norm_t - coupling * p[i, j] / norm_p) / norm_p


@cpu_inline
def softmax_crossentropy_stats(t, z, i, k):
    """``(log(sum(exp(z))), sum(t))`` of the row, shifted by its maximum so exp never overflows."""
    top = z[i, 0]
    for j in range(1, z.shape[1]):
        top = max(top, z[i, j])
    exp_total = k.zero
    target_total = k.zero
    for j in range(z.shape[1]):
        exp_total += math.exp(z[i, j] - top)
        target_total += t[i, j]
    return (top + math.log(exp_total), target_total)


@cpu_inline
def softmax_crossentropy_row(t, z, i, stats, k):
    # -sum t * (z - lse): every factor is finite, so a zero target gives exactly 0
    loss = k.zero
    for j in range(z.shape[1]):
        loss += t[i, j] * (stats[0] - z[i, j])
    return loss


@cpu_inline
def softmax_crossentropy_row_gradient(t, z, i, j, stats, k):
    return math.exp(z[i, j] - stats[0]) * stats[1] - t[i, j]


@cpu_inline
def sparse_softmax_crossentropy_stats(labels, z, i, k):
    """``(log(sum(exp(z))),)`` of the row, shifted by its maximum."""
    top = z[i, 0]
    for j in range(1, z.shape[1]):
        top = max(top, z[i, j])
    exp_total = k.zero
    for j in range(z.shape[1]):
        exp_total += math.exp(z[i, j] - top)
    return (top + math.log(exp_total),)


@cpu_inline
def sparse_softmax_crossentropy_row(labels, z, i, stats, k):
    return stats[0] - z[i, labels[i]]


@cpu_inline
def sparse_softmax_crossentropy_row_gradient(labels, z, i, j, stats, k):
    return math.exp(z[i, j] - stats[0]) - (k.one if j == labels[i] else k.zero)


@cpu_inline
def categorical_match(t, p, i, stats, k):
    best_t = 0
    best_p = 0
    for j in range(1, p.shape[1]):
        if t[i, j] > t[i, best_t]:
            best_t = j
        if p[i, j] > p[i, best_p]:
            best_p = j
    return k.one if best_t == best_p else k.zero


@cpu_inline
def sparse_categorical_match(labels, p, i, stats, k):
    best_p = 0
    for j in range(1, p.shape[1]):
        if p[i, j] > p[i, best_p]:
            best_p = j
    return k.one if best_p == labels[i] else k.zero


class RowLoss(NamedTuple):
    stats: Callable[..., Any]
    row: Callable[..., Any]
    gradient: Callable[..., Any] | None
    sparse: bool  # targets are int64 labels, one per row


ROW_COUPLED = {
    "categorical_crossentropy": RowLoss(
        categorical_crossentropy_stats,
        categorical_crossentropy_row,
        categorical_crossentropy_row_gradient,
        False,
    ),
    "sparse_categorical_crossentropy": RowLoss(
        sparse_categorical_crossentropy_stats,
        sparse_categorical_crossentropy_row,
        sparse_categorical_crossentropy_row_gradient,
        True,
    ),
    "cosine_proximity": RowLoss(
        cosine_proximity_stats, cosine_proximity_row, cosine_proximity_row_gradient, False
    ),
    "softmax_crossentropy": RowLoss(
        softmax_crossentropy_stats,
        softmax_crossentropy_row,
        softmax_crossentropy_row_gradient,
        False,
    ),
    "sparse_softmax_crossentropy": RowLoss(
        sparse_softmax_crossentropy_stats,
        sparse_softmax_crossentropy_row,
        sparse_softmax_crossentropy_row_gradient,
        True,
    ),
    "categorical_accuracy": RowLoss(no_stats, categorical_match, None, False),
    "sparse_categorical_accuracy": RowLoss(no_stats, sparse_categorical_match, None, True),
}


def operation_names(name: str) -> tuple[str, str]:
    """The public names of the forward and backward operations of ``name``."""
    if name.endswith("accuracy"):
        return f"{name}_rows", ""
    return f"{name}_forward", f"{name}_backward"


# ---------------------------------------------------------------- CPU


def cpu_mean_loop(term: Callable[..., Any], k: KernelConstants) -> Callable[..., None]:
    cast = type(k.zero)

    def mean_rows(y_true, y_pred, out):
        cols = y_pred.shape[1]
        for i in prange(y_pred.shape[0]):
            total = k.zero
            for j in range(cols):
                total += term(y_true[i, j], y_pred[i, j], k)
            out[i] = total / cast(cols)

    return mean_rows


def cpu_mean_gradient_loop(gradient: Callable[..., Any], k: KernelConstants) -> Callable[..., None]:
    cast = type(k.zero)

    def mean_gradient_rows(y_true, y_pred, row_scale, grad):
        cols = y_pred.shape[1]
        for i in prange(y_pred.shape[0]):
            scale = row_scale[i] / cast(cols)
            for j in range(cols):
                grad[i, j] = scale * gradient(y_true[i, j], y_pred[i, j], k)

    return mean_gradient_rows


def cpu_row_loop(
    stats: Callable[..., Any], row: Callable[..., Any], k: KernelConstants
) -> Callable[..., None]:
    def rows(target, pred, out):
        for i in prange(pred.shape[0]):
            out[i] = row(target, pred, i, stats(target, pred, i, k), k)

    return rows


def cpu_row_gradient_loop(
    stats: Callable[..., Any], gradient: Callable[..., Any], k: KernelConstants
) -> Callable[..., None]:
    def row_gradients(target, pred, row_scale, grad):
        for i in prange(pred.shape[0]):
            row_stats = stats(target, pred, i, k)
            for j in range(pred.shape[1]):
                grad[i, j] = row_scale[i] * gradient(target, pred, i, j, row_stats, k)

    return row_gradients


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    k = kernel_constants(dtype)
    operations: dict[str, Any] = {}

    def add(public_name: str, template: Callable[..., None]) -> None:
        serial = compile_cpu(template, public_name)
        parallel = compile_cpu(template, public_name, parallel=True)

        def operation(target: np.ndarray, pred: np.ndarray, *outputs: np.ndarray) -> None:
            loop = parallel if pred.size >= PARALLEL_MIN_SIZE else serial
            loop(target, pred, *outputs)

        operations[public_name] = operation

    for name, elementwise in ELEMENTWISE.items():
        forward_name, backward_name = operation_names(name)
        add(forward_name, cpu_mean_loop(elementwise.term, k))
        if elementwise.gradient is not None:
            add(backward_name, cpu_mean_gradient_loop(elementwise.gradient, k))
    for name, row_loss in ROW_COUPLED.items():
        forward_name, backward_name = operation_names(name)
        add(forward_name, cpu_row_loop(row_loss.stats, row_loss.row, k))
        if row_loss.gradient is not None:
            add(backward_name, cpu_row_gradient_loop(row_loss.stats, row_loss.gradient, k))

    products = cpu_sum(dtype, product_term)

    def weighted_sum(values: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
        out[0] = products(values, weights, k.zero, k.zero)

    operations["weighted_sum"] = weighted_sum
    return operations


# ---------------------------------------------------------------- CUDA


def cuda_mean_kernels(
    registry: CudaKernelRegistry, name: str, loss: ElementwiseLoss, k: KernelConstants
) -> tuple[Any, Any]:
    """The forward kernel (a thread per row) and the backward kernel (a thread per element)."""
    cast = registry.dtype.type
    matrix = registry.array(2)
    vector = registry.array(1)
    term = registry.device(loss.term)

    def mean_forward(y_true, y_pred, out):
        i = cuda.grid(1)
        if i < y_pred.shape[0]:
            total = k.zero
            for j in range(y_pred.shape[1]):
                total += term(y_true[i, j], y_pred[i, j], k)
            out[i] = total / cast(y_pred.shape[1])

    mean_forward.__name__ = f"{name}_forward_kernel"
    forward = registry.jit(matrix, matrix, vector)(mean_forward)
    if loss.gradient is None:
        return forward, None
    gradient = registry.device(loss.gradient)

    def mean_backward(y_true, y_pred, row_scale, grad):
        index = cuda.grid(1)
        if index < y_pred.size:
            i = index // y_pred.shape[1]
            j = index % y_pred.shape[1]
            scale = row_scale[i] / cast(y_pred.shape[1])
            grad[i, j] = scale * gradient(y_true[i, j], y_pred[i, j], k)

    mean_backward.__name__ = f"{name}_backward_kernel"
    return forward, registry.jit(matrix, matrix, vector, matrix)(mean_backward)


def cuda_row_kernels(
    registry: CudaKernelRegistry, name: str, loss: RowLoss, k: KernelConstants
) -> tuple[Any, Any]:
    """The forward kernel (a thread per row) and the backward kernel (a thread per element)."""
    matrix = registry.array(2)
    vector = registry.array(1)
    target_type = registry.array(1, np.int64) if loss.sparse else matrix
    stats = registry.device(loss.stats)
    row = registry.device(loss.row)

    def row_forward(target, pred, out):
        i = cuda.grid(1)
        if i < pred.shape[0]:
            out[i] = row(target, pred, i, stats(target, pred, i, k), k)

    row_forward.__name__ = f"{name}_forward_kernel"
    forward = registry.jit(target_type, matrix, vector)(row_forward)
    if loss.gradient is None:
        return forward, None
    gradient = registry.device(loss.gradient)

    def row_backward(target, pred, row_scale, grad):
        index = cuda.grid(1)
        if index < pred.size:
            i = index // pred.shape[1]
            j = index % pred.shape[1]
            row_stats = stats(target, pred, i, k)
            grad[i, j] = row_scale[i] * gradient(target, pred, i, j, row_stats, k)

    row_backward.__name__ = f"{name}_backward_kernel"
    return forward, registry.jit(target_type, matrix, vector, matrix)(row_backward)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    k = kernel_constants(dtype)
    operations: dict[str, Any] = {}

    def add(name: str, forward_kernel: Any, backward_kernel: Any) -> None:
        forward_name, backward_name = operation_names(name)

        def forward(target: Any, pred: Any, out: Any) -> None:
            forward_kernel[blocks_for(pred.shape[0]), THREADS_PER_BLOCK](target, pred, out)

        def backward(target: Any, pred: Any, row_scale: Any, grad: Any) -> None:
            backward_kernel[blocks_for(pred.size), THREADS_PER_BLOCK](target, pred, row_scale, grad)

        operations[forward_name] = forward
        if backward_kernel is not None:
            operations[backward_name] = backward

    for name, elementwise in ELEMENTWISE.items():
        add(name, *cuda_mean_kernels(registry, name, elementwise, k))
    for name, row_loss in ROW_COUPLED.items():
        add(name, *cuda_row_kernels(registry, name, row_loss, k))

    products = block_sum_launcher(cuda_api, dtype, product_term, False)

    def weighted_sum(values: Any, weights: Any, out: Any) -> None:
        products(values, weights, k.zero, k.zero, out)

    operations["weighted_sum"] = weighted_sum
    return operations
