"""Weight and activity penalties, and the weight constraints applied after an update.

Operations (both devices):

- ``l1l2_penalty(weight, l1, l2, out)``: ``out[0] += l1 * sum|w| + l2 * sum w**2``
  (``weight`` of any shape; the caller zeroes ``out`` before the first penalty)
- ``l1l2_gradient(weight, l1, l2, grad)``: ``grad += l1 * sign(w) + 2 * l2 * w``
  (``sign(0) = 0``)
- ``activity_l1l2_gradient(activation, l1, l2, grad)``: the same operation, on an
  activation (the caller folds Keras 0.3's mean over the batch into ``l1`` and ``l2``)
- ``maxnorm_constraint(weight, max_value)``: for a 2-D ``(input_dim, output_dim)``
  weight, each column ``w[:, j]`` times ``clip(norm_j, 0, max_value) / (eps + norm_j)``
  where ``norm_j = sqrt(sum_i w[i, j]**2)``: Keras 0.3's MaxNorm (axis 0)
- ``maxnorm_rows_constraint(weight, max_value)``: the same for each row ``w[i, :]``
  (MaxNorm over every axis but the first: a convolution's filters)
- ``nonneg_constraint(weight)``: negative elements become ``0``
- ``unitnorm_constraint(weight)``: each row ``w[i, :]`` divided by ``eps + norm_i``
  (Keras 0.3.0's UnitNorm normalises along the last axis: an embedding vector, or the
  weights out of one input of a Dense layer)
- ``unitnorm_columns_constraint(weight)``: each column divided by ``eps + norm_j``
  (UnitNorm along axis 0, Keras 0.3.2's default)

``eps`` is Keras' ``1e-7``. The constraints work in place. The CPU reads the weight row
by row (the column norms go to a buffer of one row, the only allocation of these
kernels); CUDA takes one thread per column, so neighbouring threads read neighbouring
elements of a row. UnitNorm's rows are contiguous: one index per row on both devices.
The elementwise and row rules are per-index bodies compiled for both devices by the
toolkit, as is CUDA's column rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from numlayers.kernels.optimizers import (
    KernelConstants,
    block_sum_launcher,
    cpu_sum,
    kernel_constants,
    l1l2_term,
)
from numlayers.kernels.toolkit import (
    CudaKernels,
    DeviceArray,
    compile_cpu,
    cpu_inline,
    cuda_kernels,
    device_index_loop,
    empty_vector,
)

#: Work of one element of a rule (see :func:`~numlayers.kernels.toolkit.use_parallel`):
#: a multiply-add or a comparison on one or two arrays, memory-bound, as an optimizer
#: update's element (:data:`~numlayers.kernels.optimizers.UPDATE_COST`)
ELEMENT_COST = 0.5


@cpu_inline
def l1l2_gradient_step(weight, grad, i, l1, l2, k):
    w = weight[i]
    sign = k.one if w > k.zero else (-k.one if w < k.zero else k.zero)
    grad[i] += l1 * sign + k.two * l2 * w


@cpu_inline
def nonneg_step(weight, grad, i, l1, l2, k):
    """Zero a negative element (``grad``, ``l1`` and ``l2`` unused)."""
    if weight[i] < k.zero:
        weight[i] = k.zero


ELEMENT_RULES = {"l1l2_gradient": l1l2_gradient_step, "nonneg_constraint": nonneg_step}


@cpu_inline
def maxnorm_scale(norm, max_value, k):
    # norms are never negative, so clip(norm, 0, max_value) is a minimum
    return min(norm, max_value) / (k.eps + norm)


@cpu_inline
def unit_scale(norm, max_value, k):
    """UnitNorm's factor (``max_value`` unused)."""
    return k.one / (k.eps + norm)


#: the rules that scale each column, or each row, of a 2-D weight by a factor of its norm
COLUMN_RULES = {"maxnorm_constraint": maxnorm_scale, "unitnorm_columns_constraint": unit_scale}
ROW_RULES = {"unitnorm_constraint": unit_scale, "maxnorm_rows_constraint": maxnorm_scale}


def row_body(scale: Callable[..., Any], k: KernelConstants, name: str) -> Callable[..., None]:
    """Row rule ``scale`` (compiled for its device) as a per-row body ``name(i, weight,
    max_value)``: row ``i`` times ``scale`` of its L2 norm (rows are contiguous)."""

    def row(i, weight, max_value):
        squares = weight[i, 0] - weight[i, 0]
        for j in range(weight.shape[1]):
            squares += weight[i, j] * weight[i, j]
        factor = scale(math.sqrt(squares), max_value, k)
        for j in range(weight.shape[1]):
            weight[i, j] *= factor

    row.__name__ = row.__qualname__ = name
    return row


@cpu_inline
def column_norm(weight, j, k):
    squares = k.zero
    for i in range(weight.shape[0]):
        squares += weight[i, j] * weight[i, j]
    return math.sqrt(squares)


@cpu_inline
def scale_column(weight, j, factor):
    for i in range(weight.shape[0]):
        weight[i, j] *= factor


def element_body(step: Callable[..., None], k: KernelConstants, name: str) -> Callable[..., None]:
    """Elementwise rule ``step`` (compiled for its device) as a per-index body
    ``name(index, weight, grad, l1, l2)``."""

    def element(index, weight, grad, l1, l2):
        step(weight, grad, index, l1, l2, k)

    element.__name__ = element.__qualname__ = name  # the toolkit names its loops after it
    return element


def element_loops(dtype: np.dtype, kernels: CudaKernels | None) -> dict[str, Callable[..., None]]:
    """Each elementwise rule's loop ``(count, weight, grad, l1, l2)`` on the CPU, or on
    CUDA when ``kernels`` is given."""
    k = kernel_constants(dtype)
    compile_formula = cpu_inline if kernels is None else kernels.device
    argtypes: tuple[Any, ...] = ()
    if kernels is not None:
        argtypes = (kernels.array(1), kernels.array(1), kernels.scalar, kernels.scalar)
    loops = {}
    for rule, step in ELEMENT_RULES.items():
        body = element_body(compile_formula(step), k, f"{rule}_element")
        if kernels is None:
            body = cpu_inline(body)
        loops[rule] = device_index_loop(kernels, body, argtypes, cost=ELEMENT_COST)
    return loops


def cpu_column_loop(scale: Callable[..., Any], k: KernelConstants) -> Callable[..., None]:
    # Not CUDA's per-column body: a column of a row-major weight is strided, so the CPU
    # reads the weight row by row instead; the one allocation of the CPU kernels (a
    # row's worth) holds the column norms, then the column factors.
    def column_loop(weight, max_value):
        factors = np.zeros(weight.shape[1], weight.dtype)
        for i in range(weight.shape[0]):
            for j in range(weight.shape[1]):
                factors[j] += weight[i, j] * weight[i, j]
        for j in range(weight.shape[1]):
            factors[j] = scale(math.sqrt(factors[j]), max_value, k)
        for i in range(weight.shape[0]):
            for j in range(weight.shape[1]):
                weight[i, j] *= factors[j]

    return column_loop


def cuda_column_body(
    scale: Callable[..., Any], k: KernelConstants, name: str
) -> Callable[..., None]:
    """Column rule ``scale`` (a device function) as a per-column body ``name(j, weight,
    max_value)``, for CUDA: neighbouring threads read neighbouring elements of a row."""

    def column(j, weight, max_value):
        scale_column(weight, j, scale(column_norm(weight, j, k), max_value, k))

    column.__name__ = column.__qualname__ = name
    return column


def row_loops(dtype: np.dtype, kernels: CudaKernels | None) -> dict[str, Callable[..., None]]:
    """Each row rule's loop ``(weight, max_value)`` over a 2-D weight, on the CPU or (with
    ``kernels``) CUDA."""
    k = kernel_constants(dtype)
    compile_formula = cpu_inline if kernels is None else kernels.device
    argtypes = () if kernels is None else (kernels.array(2), kernels.scalar)
    loops = {}
    for rule, scale in ROW_RULES.items():
        body = row_body(compile_formula(scale), k, f"{rule}_row")
        if kernels is None:
            body = cpu_inline(body)
        # a row's sum of squares vectorises only if it may be reassociated
        loop = device_index_loop(
            kernels, body, argtypes, cost=ELEMENT_COST, fastmath={"reassoc", "contract"}
        )
        # bind through a default: a closure over the loop variable would see the last rule
        loops[rule] = lambda weight, max_value, loop=loop: loop(weight.shape[0], weight, max_value)
    return loops


def public_operations(
    elements: dict[str, Callable[..., None]],
    columns: dict[str, Callable[..., None]],
    rows: dict[str, Callable[..., None]],
    penalty: Callable[..., None],
    empty: Callable[[], Any],
    cast: Callable[[float], Any],
) -> dict[str, Any]:
    """The public signatures, mapped onto the device's loops.

    ``elements[rule](count, weight, grad, l1, l2)`` runs an elementwise rule over flat
    arrays, ``columns[rule](weight, max_value)`` and ``rows[rule](weight, max_value)`` a
    column or row rule over a 2-D weight, and ``penalty(weight, l1, l2, out)`` the
    penalty reduction over a flat weight.
    """

    def l1l2_penalty(weight: Any, l1: float, l2: float, out: Any) -> None:
        penalty(weight.reshape(weight.size), cast(l1), cast(l2), out)

    def l1l2_gradient(weight: Any, l1: float, l2: float, grad: Any) -> None:
        flat_weight = weight.reshape(weight.size)
        flat_grad = grad.reshape(grad.size)
        elements["l1l2_gradient"](weight.size, flat_weight, flat_grad, cast(l1), cast(l2))

    def maxnorm_constraint(weight: Any, max_value: float) -> None:
        columns["maxnorm_constraint"](weight, cast(max_value))

    def maxnorm_rows_constraint(weight: Any, max_value: float) -> None:
        if weight.shape[1] > 0:
            rows["maxnorm_rows_constraint"](weight, cast(max_value))

    def unitnorm_columns_constraint(weight: Any) -> None:
        columns["unitnorm_columns_constraint"](weight, cast(0))

    def nonneg_constraint(weight: Any) -> None:
        zero = cast(0)
        elements["nonneg_constraint"](weight.size, weight.reshape(weight.size), empty(), zero, zero)

    def unitnorm_constraint(weight: Any) -> None:
        if weight.shape[1] > 0:
            rows["unitnorm_constraint"](weight, cast(0))

    return {
        "l1l2_penalty": l1l2_penalty,
        "l1l2_gradient": l1l2_gradient,
        "activity_l1l2_gradient": l1l2_gradient,
        "maxnorm_constraint": maxnorm_constraint,
        "maxnorm_rows_constraint": maxnorm_rows_constraint,
        "nonneg_constraint": nonneg_constraint,
        "unitnorm_constraint": unitnorm_constraint,
        "unitnorm_columns_constraint": unitnorm_columns_constraint,
    }


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    k = kernel_constants(dtype)
    no_array = np.empty(0, dtype)
    column_loops = {
        rule: compile_cpu(cpu_column_loop(scale, k), rule) for rule, scale in COLUMN_RULES.items()
    }
    penalty_sum = cpu_sum(dtype, l1l2_term)

    def penalty(weight: np.ndarray, l1: Any, l2: Any, out: np.ndarray) -> None:
        out[0] += penalty_sum(weight, no_array, l1, l2)

    loops = element_loops(dtype, None)
    rows = row_loops(dtype, None)
    return public_operations(loops, column_loops, rows, penalty, lambda: no_array, dtype.type)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    kernels = cuda_kernels(cuda_api, dtype)
    k = kernel_constants(dtype)
    no_array = empty_vector(cuda_api, dtype)
    column_loops = {}
    for rule, scale in COLUMN_RULES.items():
        body = cuda_column_body(kernels.device(scale), k, f"{rule}_column")
        launch = kernels.index_loop(body, (kernels.array(2), kernels.scalar))
        # bind through a default: a closure over the loop variable would see the last rule
        column_loops[rule] = lambda weight, max_value, launch=launch: launch(
            weight.shape[1], weight, max_value
        )
    penalty_sum = block_sum_launcher(cuda_api, dtype, l1l2_term, True)

    def penalty(weight: Any, l1: Any, l2: Any, out: Any) -> None:
        penalty_sum(weight, no_array(), l1, l2, out)

    loops = element_loops(dtype, kernels)
    rows = row_loops(dtype, kernels)
    return public_operations(loops, column_loops, rows, penalty, no_array, dtype.type)


class RegularizationKernels(Protocol):
    """The regularizer and constraint family's operations, the same on both devices."""

    def l1l2_penalty(self, weight: DeviceArray, l1: float, l2: float, out: DeviceArray) -> None: ...

    def l1l2_gradient(
        self, weight: DeviceArray, l1: float, l2: float, grad: DeviceArray
    ) -> None: ...

    def activity_l1l2_gradient(
        self, weight: DeviceArray, l1: float, l2: float, grad: DeviceArray
    ) -> None: ...

    def maxnorm_constraint(self, weight: DeviceArray, max_value: float) -> None: ...

    def maxnorm_rows_constraint(self, weight: DeviceArray, max_value: float) -> None: ...

    def nonneg_constraint(self, weight: DeviceArray) -> None: ...

    def unitnorm_constraint(self, weight: DeviceArray) -> None: ...

    def unitnorm_columns_constraint(self, weight: DeviceArray) -> None: ...
