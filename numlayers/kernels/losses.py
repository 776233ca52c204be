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
- ``NAME_forward_backward(y_true, y_pred, row_scale, loss_rows, grad_pred)``: both of
  the above in one call, a training step's (on the CPU one pass over the rows, a
  row-coupled loss computing its row sums once; on CUDA the two kernels)
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

Each helper is compiled inline into the CPU loops and as a CUDA device function, and
the loops are per-index bodies compiled by the toolkit: the forward passes take a row
per index on both devices, the averaged gradients an element per index on both. A
row-coupled gradient takes a row per index on the CPU, which computes the row's
``stats`` once, and an element per index on CUDA, which recomputes them per element
(rows are short) so that every thread has work.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
from numba import prange

from numlayers.kernels.optimizers import (
    KernelConstants,
    block_sum_launcher,
    cpu_sum,
    kernel_constants,
    product_term,
)
from numlayers.kernels.toolkit import (
    CpuLoop,
    CudaKernels,
    DeviceArray,
    cpu_index_loop,
    cpu_inline_early,
    cuda_kernels,
)

#: Work of one element, as the toolkit's parallel rule counts it
#: (:func:`~numlayers.kernels.toolkit.use_parallel`). Most entries take a logarithm or an
#: exponential per element (9 to 19 ns on one core, measured), yet a loss's batch is
#: short, and two cores overtook one only from about 2**18 elements: at 8 (the
#: logarithms' share of work) a 32 x 128 batch went parallel and took 0.5 ms instead of
#: 25 us on a busy 2-core machine. So the cost keeps that measured threshold.
LOSS_COST = 1 / 8


# ---------------------------------------------------------------- per-element terms


@cpu_inline_early
def squared_error(t, p, k):
    return (p - t) * (p - t)


@cpu_inline_early
def squared_error_gradient(t, p, k):
    return k.two * (p - t)


@cpu_inline_early
def absolute_error(t, p, k):
    return abs(p - t)


@cpu_inline_early
def absolute_error_gradient(t, p, k):
    return k.one if p > t else (-k.one if p < t else k.zero)


@cpu_inline_early
def absolute_percentage_error(t, p, k):
    return k.hundred * abs(t - p) / max(abs(t), k.eps)


@cpu_inline_early
def absolute_percentage_error_gradient(t, p, k):
    direction = k.one if p > t else (-k.one if p < t else k.zero)
    return k.hundred * direction / max(abs(t), k.eps)


@cpu_inline_early
def squared_logarithmic_error(t, p, k):
    difference = math.log(max(p, k.eps) + k.one) - math.log(max(t, k.eps) + k.one)
    return difference * difference


@cpu_inline_early
def squared_logarithmic_error_gradient(t, p, k):
    if p < k.eps:  # clipped: the loss does not depend on p here
        return k.zero
    difference = math.log(p + k.one) - math.log(max(t, k.eps) + k.one)
    return k.two * difference / (p + k.one)


@cpu_inline_early
def squared_hinge_term(t, p, k):
    margin = max(k.one - t * p, k.zero)
    return margin * margin


@cpu_inline_early
def squared_hinge_gradient(t, p, k):
    return -k.two * t * max(k.one - t * p, k.zero)


@cpu_inline_early
def hinge_term(t, p, k):
    return max(k.one - t * p, k.zero)


@cpu_inline_early
def hinge_gradient(t, p, k):
    return -t if k.one - t * p > k.zero else k.zero


@cpu_inline_early
def binary_crossentropy_term(t, p, k):
    q = min(max(p, k.eps), k.one_minus_eps)
    # A 0/1 target (the only finite t with t * (1 - t) == 0) needs one logarithm, of q
    # or 1 - q, picked by arithmetic: a branch on random labels would mispredict half.
    if t * (k.one - t) == k.zero:
        return -math.log(t * q + (k.one - t) * (k.one - q))
    return -(t * math.log(q) + (k.one - t) * math.log(k.one - q))


@cpu_inline_early
def binary_crossentropy_gradient(t, p, k):
    if p < k.eps or p > k.one_minus_eps:
        return k.zero
    return (p - t) / (p * (k.one - p))


@cpu_inline_early
def poisson_term(t, p, k):
    return p - t * math.log(p + k.eps)


@cpu_inline_early
def poisson_gradient(t, p, k):
    return k.one - t / (p + k.eps)


@cpu_inline_early
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


@cpu_inline_early
def no_stats(target, pred, i, k):
    return (k.zero,)


@cpu_inline_early
def inverse_row_sum(p, i, k):
    """``1 / sum(p[i])``, which scales row ``i`` to a distribution."""
    total = k.zero
    for j in range(p.shape[1]):
        total += p[i, j]
    return k.one / total


@cpu_inline_early
def log_sum_exp(z, i, k):
    """``log(sum(exp(z[i])))``, shifted by the row's maximum so that exp never overflows."""
    top = z[i, 0]
    for j in range(1, z.shape[1]):
        top = max(top, z[i, j])
    exp_total = k.zero
    for j in range(z.shape[1]):
        exp_total += math.exp(z[i, j] - top)
    return top + math.log(exp_total)


@cpu_inline_early
def categorical_crossentropy_stats(t, p, i, k):
    """``(1 / sum(p), sum of t where q = p / sum(p) is not clipped)``."""
    inverse_total = inverse_row_sum(p, i, k)
    unclipped_target = k.zero
    for j in range(p.shape[1]):
        if k.eps <= p[i, j] * inverse_total <= k.one_minus_eps:
            unclipped_target += t[i, j]
    return (inverse_total, unclipped_target)


@cpu_inline_early
def categorical_crossentropy_row(t, p, i, stats, k):
    loss = k.zero
    for j in range(p.shape[1]):
        if t[i, j] != k.zero:  # one-hot targets need one logarithm per row
            q = min(max(p[i, j] * stats[0], k.eps), k.one_minus_eps)
            loss -= t[i, j] * math.log(q)
    return loss


@cpu_inline_early
def categorical_crossentropy_row_gradient(t, p, i, j, stats, k):
    # q = p / S: d loss / d p_j = (d loss / d q_j - sum_l d loss / d q_l * q_l) / S,
    # where d loss / d q_l = -t_l / q_l on unclipped l and 0 on clipped l
    inverse_total, unclipped_target = stats
    unclipped = k.eps <= p[i, j] * inverse_total <= k.one_minus_eps
    direct = -t[i, j] / p[i, j] if unclipped else k.zero
    return direct + unclipped_target * inverse_total


@cpu_inline_early
def sparse_categorical_crossentropy_stats(labels, p, i, k):
    """``(1 / sum(p), q = p[label] / sum(p), 1 if q is not clipped else 0)``."""
    inverse_total = inverse_row_sum(p, i, k)
    q = p[i, labels[i]] * inverse_total
    return (inverse_total, q, k.one if k.eps <= q <= k.one_minus_eps else k.zero)


@cpu_inline_early
def sparse_categorical_crossentropy_row(labels, p, i, stats, k):
    return -math.log(min(max(stats[1], k.eps), k.one_minus_eps))


@cpu_inline_early
def sparse_categorical_crossentropy_row_gradient(labels, p, i, j, stats, k):
    inverse_total, q, unclipped = stats
    if unclipped == k.zero:
        return k.zero
    direct = -k.one / p[i, j] if j == labels[i] else k.zero
    return direct + inverse_total


@cpu_inline_early
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


@cpu_inline_early
def cosine_proximity_row(t, p, i, stats, k):
    return -stats[2]


@cpu_inline_early
def cosine_proximity_row_gradient(t, p, i, j, stats, k):
    norm_t, norm_p, cosine, coupling = stats
    return -(t[i, j] / norm_t - coupling * p[i, j] / norm_p) / norm_p


@cpu_inline_early
def softmax_crossentropy_stats(t, z, i, k):
    """``(log(sum(exp(z))), sum(t))`` of the row."""
    target_total = k.zero
    for j in range(z.shape[1]):
        target_total += t[i, j]
    return (log_sum_exp(z, i, k), target_total)


@cpu_inline_early
def softmax_crossentropy_row(t, z, i, stats, k):
    # -sum t * (z - lse): every factor is finite, so a zero target gives exactly 0
    loss = k.zero
    for j in range(z.shape[1]):
        loss += t[i, j] * (stats[0] - z[i, j])
    return loss


@cpu_inline_early
def softmax_crossentropy_row_gradient(t, z, i, j, stats, k):
    return math.exp(z[i, j] - stats[0]) * stats[1] - t[i, j]


@cpu_inline_early
def sparse_softmax_crossentropy_stats(labels, z, i, k):
    """``(log(sum(exp(z))),)`` of the row."""
    return (log_sum_exp(z, i, k),)


@cpu_inline_early
def sparse_softmax_crossentropy_row(labels, z, i, stats, k):
    return stats[0] - z[i, labels[i]]


@cpu_inline_early
def sparse_softmax_crossentropy_row_gradient(labels, z, i, j, stats, k):
    return math.exp(z[i, j] - stats[0]) - (k.one if j == labels[i] else k.zero)


@cpu_inline_early
def categorical_match(t, p, i, stats, k):
    best_t = 0
    best_p = 0
    for j in range(1, p.shape[1]):
        if t[i, j] > t[i, best_t]:
            best_t = j
        if p[i, j] > p[i, best_p]:
            best_p = j
    return k.one if best_t == best_p else k.zero


@cpu_inline_early
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


# ---------------------------------------------------------------- per-index bodies
# Each builds a loss's body from its formulas (compiled for the device that runs it)
# and the dtype's constants ``k``, named after the operation (the toolkit names the
# loops and kernels after their body).


def named(body: Callable[..., None], name: str) -> Callable[..., None]:
    body.__name__ = body.__qualname__ = name
    return body


def mean_row_body(term: Callable[..., Any], k: KernelConstants, name: str) -> Callable[..., None]:
    """``body(row, y_true, y_pred, loss_rows)``: the row's mean of ``term``."""
    cast = type(k.zero)

    def mean_row(row, y_true, y_pred, loss_rows):
        total = k.zero
        for j in range(y_pred.shape[1]):
            total += term(y_true[row, j], y_pred[row, j], k)
        loss_rows[row] = total / cast(y_pred.shape[1])

    return named(mean_row, name)


def mean_gradient_body(
    gradient: Callable[..., Any], k: KernelConstants, name: str
) -> Callable[..., None]:
    """``body(row, column, y_true, y_pred, row_scale, grad_pred)``: one element of the
    gradient of a row's mean."""
    cast = type(k.zero)

    def mean_gradient(row, column, y_true, y_pred, row_scale, grad_pred):
        # a division of shapes only, which the CPU loop hoists out of its rows
        scale = row_scale[row] * (k.one / cast(y_pred.shape[1]))
        grad_pred[row, column] = scale * gradient(y_true[row, column], y_pred[row, column], k)

    return named(mean_gradient, name)


def row_body(
    stats: Callable[..., Any], row_loss: Callable[..., Any], k: KernelConstants, name: str
) -> Callable[..., None]:
    """``body(row, y_true, y_pred, loss_rows)``: a row-coupled loss of one row."""

    def row_value(row, y_true, y_pred, loss_rows):
        loss_rows[row] = row_loss(y_true, y_pred, row, stats(y_true, y_pred, row, k), k)

    return named(row_value, name)


def gradient_row_writer(gradient: Callable[..., Any], k: KernelConstants) -> Callable[..., None]:
    """``write(row, y_true, y_pred, row_scale, grad_pred, row_stats)``: row ``row`` of a
    row-coupled gradient from the row's ``stats`` (inlined where the CPU bodies call it)."""

    def write_gradient_row(row, y_true, y_pred, row_scale, grad_pred, row_stats):
        for j in range(y_pred.shape[1]):
            grad_pred[row, j] = row_scale[row] * gradient(y_true, y_pred, row, j, row_stats, k)

    return cpu_inline_early(write_gradient_row)


def row_gradient_body(
    stats: Callable[..., Any], gradient: Callable[..., Any], k: KernelConstants, name: str
) -> Callable[..., None]:
    """``body(row, y_true, y_pred, row_scale, grad_pred)``: a row of a row-coupled
    gradient, its ``stats`` computed once (the CPU's)."""
    write = gradient_row_writer(gradient, k)

    def row_gradient(row, y_true, y_pred, row_scale, grad_pred):
        write(row, y_true, y_pred, row_scale, grad_pred, stats(y_true, y_pred, row, k))

    return named(row_gradient, name)


def row_value_and_gradient_body(
    stats: Callable[..., Any],
    row_loss: Callable[..., Any],
    gradient: Callable[..., Any],
    k: KernelConstants,
    name: str,
) -> Callable[..., None]:
    """``body(row, y_true, y_pred, row_scale, loss_rows, grad_pred)``: a row's loss and
    its row of the gradient, the row's ``stats`` computed once for both (the CPU's)."""
    write = gradient_row_writer(gradient, k)

    def row_value_and_gradient(row, y_true, y_pred, row_scale, loss_rows, grad_pred):
        row_stats = stats(y_true, y_pred, row, k)
        loss_rows[row] = row_loss(y_true, y_pred, row, row_stats, k)
        write(row, y_true, y_pred, row_scale, grad_pred, row_stats)

    return named(row_value_and_gradient, name)


def mean_row_and_gradient_body(
    mean_row: Callable[..., None], mean_gradient: Callable[..., None], name: str
) -> Callable[..., None]:
    """``body(row, y_true, y_pred, row_scale, loss_rows, grad_pred)``: a row's mean of a
    term and its row of the gradient, from the two bodies (the CPU's)."""
    value = cpu_inline_early(mean_row)
    element = cpu_inline_early(mean_gradient)

    def mean_row_and_gradient(row, y_true, y_pred, row_scale, loss_rows, grad_pred):
        value(row, y_true, y_pred, loss_rows)
        for j in range(y_pred.shape[1]):
            element(row, j, y_true, y_pred, row_scale, grad_pred)

    return named(mean_row_and_gradient, name)


def row_gradient_element_body(
    stats: Callable[..., Any], gradient: Callable[..., Any], k: KernelConstants, name: str
) -> Callable[..., None]:
    """``body(row, column, y_true, y_pred, row_scale, grad_pred)``: one element of a
    row-coupled gradient, its row's ``stats`` computed for it (CUDA's)."""

    def row_gradient_element(row, column, y_true, y_pred, row_scale, grad_pred):
        row_stats = stats(y_true, y_pred, row, k)
        value = gradient(y_true, y_pred, row, column, row_stats, k)
        grad_pred[row, column] = row_scale[row] * value

    return named(row_gradient_element, name)


# ---------------------------------------------------------------- loops


def cpu_rows(body: Callable[..., None], arity: int) -> CpuLoop:
    """``loop(y_true, y_pred, *rest)`` running ``body`` for every row of ``y_pred``
    (``rest``: ``loss_rows``; ``row_scale, grad_pred``; or ``row_scale, loss_rows,
    grad_pred``, by ``arity``).

    A :class:`CpuLoop`, not a toolkit index loop: a row's work is its length, so the
    parallel rule weighs the size of ``y_pred``, not the number of rows.
    """
    if arity == 3:

        def forward_rows(y_true, y_pred, loss_rows):
            for row in prange(y_pred.shape[0]):
                body(row, y_true, y_pred, loss_rows)

        return CpuLoop(forward_rows, body.__name__, cost=LOSS_COST, size_argument=1)

    if arity == 4:

        def backward_rows(y_true, y_pred, row_scale, grad_pred):
            for row in prange(y_pred.shape[0]):
                body(row, y_true, y_pred, row_scale, grad_pred)

        return CpuLoop(backward_rows, body.__name__, cost=LOSS_COST, size_argument=1)

    def forward_backward_rows(y_true, y_pred, row_scale, loss_rows, grad_pred):
        for row in prange(y_pred.shape[0]):
            body(row, y_true, y_pred, row_scale, loss_rows, grad_pred)

    return CpuLoop(forward_backward_rows, body.__name__, cost=LOSS_COST, size_argument=1)


class LossLoops:
    """How a device compiles the losses' formulas and runs their bodies."""

    def __init__(self, kernels: CudaKernels | None) -> None:
        self.kernels = kernels

    def formula(self, function: Callable[..., Any]) -> Any:
        return cpu_inline_early(function) if self.kernels is None else self.kernels.device(function)

    def argtypes(self, sparse: bool, backward: bool) -> tuple[Any, ...]:
        """CUDA's types of ``(y_true, y_pred, loss_rows)``, or of ``(y_true, y_pred,
        row_scale, grad_pred)`` for a ``backward`` pass."""
        if self.kernels is None:
            return ()
        matrix, vector = self.kernels.array(2), self.kernels.array(1)
        target = self.kernels.array(1, np.int64) if sparse else matrix
        return (target, matrix, vector, matrix) if backward else (target, matrix, vector)

    def forward(self, body: Callable[..., None], sparse: bool) -> Callable[..., None]:
        """``NAME_forward(y_true, y_pred, loss_rows)`` from a per-row body."""
        if self.kernels is None:
            loop = cpu_rows(cpu_inline_early(body), 3)

            def cpu_forward(y_true: Any, y_pred: Any, loss_rows: Any) -> None:
                loop(y_true, y_pred, loss_rows)

            return cpu_forward
        launch = self.kernels.index_loop(body, self.argtypes(sparse, False))

        def forward(y_true: Any, y_pred: Any, loss_rows: Any) -> None:
            launch(y_pred.shape[0], y_true, y_pred, loss_rows)

        return forward

    def element_gradient(self, body: Callable[..., None], sparse: bool) -> Callable[..., None]:
        """``NAME_backward(y_true, y_pred, row_scale, grad_pred)`` from a per-element body."""
        if self.kernels is None:
            launch = cpu_index_loop(cpu_inline_early(body), dims=2, cost=LOSS_COST)
        else:
            launch = self.kernels.index_loop(body, self.argtypes(sparse, True), dims=2)

        def backward(y_true: Any, y_pred: Any, row_scale: Any, grad_pred: Any) -> None:
            launch(y_pred.shape[0], y_pred.shape[1], y_true, y_pred, row_scale, grad_pred)

        return backward

    def row_gradient(self, body: Callable[..., None]) -> Callable[..., None]:
        """``NAME_backward(y_true, y_pred, row_scale, grad_pred)`` from a per-row body (CPU)."""
        loop = cpu_rows(cpu_inline_early(body), 4)

        def backward(y_true: Any, y_pred: Any, row_scale: Any, grad_pred: Any) -> None:
            loop(y_true, y_pred, row_scale, grad_pred)

        return backward

    def forward_backward(
        self,
        cpu_body: Callable[[], Callable[..., None]],
        forward: Callable[..., None],
        backward: Callable[..., None],
    ) -> Callable[..., None]:
        """``NAME_forward_backward(y_true, y_pred, row_scale, loss_rows, grad_pred)``: on
        the CPU one pass over the rows with the body ``cpu_body()`` makes; on CUDA the
        forward and backward kernels, one launch each (each thread has one element's
        work in the backward)."""
        if self.kernels is None:
            loop = cpu_rows(cpu_inline_early(cpu_body()), 5)

            def cpu_forward_backward(
                y_true: Any, y_pred: Any, row_scale: Any, loss_rows: Any, grad_pred: Any
            ) -> None:
                loop(y_true, y_pred, row_scale, loss_rows, grad_pred)

            return cpu_forward_backward

        def forward_backward(
            y_true: Any, y_pred: Any, row_scale: Any, loss_rows: Any, grad_pred: Any
        ) -> None:
            forward(y_true, y_pred, loss_rows)
            backward(y_true, y_pred, row_scale, grad_pred)

        return forward_backward


def loss_operations(dtype: np.dtype, kernels: CudaKernels | None) -> dict[str, Any]:
    """Every loss's and metric's operations, on the CPU or (with ``kernels``) on CUDA."""
    k = kernel_constants(dtype)
    device = LossLoops(kernels)
    operations: dict[str, Any] = {}
    for name, elementwise in ELEMENTWISE.items():
        forward_name, backward_name = operation_names(name)
        term = device.formula(elementwise.term)
        value_body = mean_row_body(term, k, forward_name)
        operations[forward_name] = device.forward(value_body, False)
        if elementwise.gradient is not None:
            gradient = device.formula(elementwise.gradient)
            body = mean_gradient_body(gradient, k, backward_name)
            operations[backward_name] = device.element_gradient(body, False)
            operations[f"{name}_forward_backward"] = device.forward_backward(
                functools.partial(
                    mean_row_and_gradient_body, value_body, body, f"{name}_forward_backward"
                ),
                operations[forward_name],
                operations[backward_name],
            )
    for name, row_loss in ROW_COUPLED.items():
        forward_name, backward_name = operation_names(name)
        stats = device.formula(row_loss.stats)
        row_value = device.formula(row_loss.row)
        operations[forward_name] = device.forward(
            row_body(stats, row_value, k, forward_name), row_loss.sparse
        )
        if row_loss.gradient is None:
            continue
        gradient = device.formula(row_loss.gradient)
        if kernels is None:
            body = row_gradient_body(stats, gradient, k, backward_name)
            operations[backward_name] = device.row_gradient(body)
        else:
            body = row_gradient_element_body(stats, gradient, k, backward_name)
            operations[backward_name] = device.element_gradient(body, row_loss.sparse)
        operations[f"{name}_forward_backward"] = device.forward_backward(
            functools.partial(
                row_value_and_gradient_body,
                stats,
                row_value,
                gradient,
                k,
                f"{name}_forward_backward",
            ),
            operations[forward_name],
            operations[backward_name],
        )
    return operations


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    k = kernel_constants(dtype)
    products = cpu_sum(dtype, product_term)

    def weighted_sum(values: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
        out[0] = products(values, weights, k.zero, k.zero)

    return {**loss_operations(dtype, None), "weighted_sum": weighted_sum}


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    k = kernel_constants(dtype)
    products = block_sum_launcher(cuda_api, dtype, product_term, False)

    def weighted_sum(values: Any, weights: Any, out: Any) -> None:
        products(values, weights, k.zero, k.zero, out)

    operations = loss_operations(dtype, cuda_kernels(cuda_api, dtype))
    return {**operations, "weighted_sum": weighted_sum}


class LossRowsForward(Protocol):
    """``NAME_forward(y_true, y_pred, loss_rows)`` (and the ``*_accuracy_rows``)."""

    def __call__(
        self, y_true: DeviceArray, y_pred: DeviceArray, loss_rows: DeviceArray
    ) -> None: ...


class LossRowsBackward(Protocol):
    """``NAME_backward(y_true, y_pred, row_scale, grad_pred)``."""

    def __call__(
        self,
        y_true: DeviceArray,
        y_pred: DeviceArray,
        row_scale: DeviceArray,
        grad_pred: DeviceArray,
    ) -> None: ...


class LossRowsForwardBackward(Protocol):
    """``NAME_forward_backward(y_true, y_pred, row_scale, loss_rows, grad_pred)``: what
    ``NAME_forward`` and ``NAME_backward`` write, in one call (a training step's)."""

    def __call__(
        self,
        y_true: DeviceArray,
        y_pred: DeviceArray,
        row_scale: DeviceArray,
        loss_rows: DeviceArray,
        grad_pred: DeviceArray,
    ) -> None: ...


class LossKernels(Protocol):
    """The loss family's operations, the same on both devices (module doc)."""

    mean_squared_error_forward: LossRowsForward
    mean_squared_error_backward: LossRowsBackward
    mean_absolute_error_forward: LossRowsForward
    mean_absolute_error_backward: LossRowsBackward
    mean_absolute_percentage_error_forward: LossRowsForward
    mean_absolute_percentage_error_backward: LossRowsBackward
    mean_squared_logarithmic_error_forward: LossRowsForward
    mean_squared_logarithmic_error_backward: LossRowsBackward
    squared_hinge_forward: LossRowsForward
    squared_hinge_backward: LossRowsBackward
    hinge_forward: LossRowsForward
    hinge_backward: LossRowsBackward
    binary_crossentropy_forward: LossRowsForward
    binary_crossentropy_backward: LossRowsBackward
    poisson_forward: LossRowsForward
    poisson_backward: LossRowsBackward
    categorical_crossentropy_forward: LossRowsForward
    categorical_crossentropy_backward: LossRowsBackward
    sparse_categorical_crossentropy_forward: LossRowsForward
    sparse_categorical_crossentropy_backward: LossRowsBackward
    cosine_proximity_forward: LossRowsForward
    cosine_proximity_backward: LossRowsBackward
    softmax_crossentropy_forward: LossRowsForward
    softmax_crossentropy_backward: LossRowsBackward
    sparse_softmax_crossentropy_forward: LossRowsForward
    sparse_softmax_crossentropy_backward: LossRowsBackward
    mean_squared_error_forward_backward: LossRowsForwardBackward
    mean_absolute_error_forward_backward: LossRowsForwardBackward
    mean_absolute_percentage_error_forward_backward: LossRowsForwardBackward
    mean_squared_logarithmic_error_forward_backward: LossRowsForwardBackward
    squared_hinge_forward_backward: LossRowsForwardBackward
    hinge_forward_backward: LossRowsForwardBackward
    binary_crossentropy_forward_backward: LossRowsForwardBackward
    poisson_forward_backward: LossRowsForwardBackward
    categorical_crossentropy_forward_backward: LossRowsForwardBackward
    sparse_categorical_crossentropy_forward_backward: LossRowsForwardBackward
    cosine_proximity_forward_backward: LossRowsForwardBackward
    softmax_crossentropy_forward_backward: LossRowsForwardBackward
    sparse_softmax_crossentropy_forward_backward: LossRowsForwardBackward
    binary_accuracy_rows: LossRowsForward
    categorical_accuracy_rows: LossRowsForward
    sparse_categorical_accuracy_rows: LossRowsForward

    def weighted_sum(self, values: DeviceArray, weights: DeviceArray, out: DeviceArray) -> None: ...
