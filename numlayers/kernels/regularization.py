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
- ``nonneg_constraint(weight)``: negative elements become ``0``
- ``unitnorm_constraint(weight)``: each column ``w[:, j]`` divided by ``eps + norm_j``

``eps`` is Keras' ``1e-7``. The constraints work in place. The CPU reads the weight row
by row (the column norms go to a buffer of one row, the only allocation of these
kernels); CUDA takes one thread per column, so neighbouring threads read neighbouring
elements of a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from numlayers.kernels.cuda_support import (
    THREADS_PER_BLOCK,
    CudaKernelRegistry,
    blocks_for,
    empty_vector,
    new_registry,
)
from numlayers.kernels.optimizers import (
    KernelConstants,
    block_sum_launcher,
    compile_cpu,
    cpu_inline,
    cpu_sum,
    kernel_constants,
    l1l2_term,
)

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None


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
def unitnorm_scale(norm, max_value, k):
    return k.one / (k.eps + norm)


COLUMN_RULES = {"maxnorm_constraint": maxnorm_scale, "unitnorm_constraint": unitnorm_scale}


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


def cpu_element_loop(step: Callable[..., None], k: KernelConstants) -> Callable[..., None]:
    def element_loop(weight, grad, l1, l2):
        for i in range(weight.size):
            step(weight, grad, i, l1, l2, k)

    return element_loop


def cpu_column_loop(scale: Callable[..., Any], k: KernelConstants) -> Callable[..., None]:
    def column_loop(weight, max_value):
        # Row by row, so memory is read in order; the one allocation of the CPU kernels
        # (a row's worth) holds the column norms, then the column factors.
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


def public_operations(
    elements: Callable[..., None],
    columns: Callable[..., None],
    penalty: Callable[..., None],
    empty: Callable[[], Any],
    cast: Callable[[float], Any],
) -> dict[str, Any]:
    """The public signatures, mapped onto the device's launchers.

    ``elements(rule, weight, grad, l1, l2)`` runs an elementwise rule over flat arrays,
    ``columns(rule, weight, max_value)`` a column rule over a 2-D weight, and
    ``penalty(weight, l1, l2, out)`` the penalty reduction over a flat weight.
    """

    def l1l2_penalty(weight: Any, l1: float, l2: float, out: Any) -> None:
        penalty(weight.reshape(weight.size), cast(l1), cast(l2), out)

    def l1l2_gradient(weight: Any, l1: float, l2: float, grad: Any) -> None:
        elements(
            "l1l2_gradient",
            weight.reshape(weight.size),
            grad.reshape(grad.size),
            cast(l1),
            cast(l2),
        )

    def maxnorm_constraint(weight: Any, max_value: float) -> None:
        columns("maxnorm_constraint", weight, cast(max_value))

    def nonneg_constraint(weight: Any) -> None:
        zero = cast(0)
        elements("nonneg_constraint", weight.reshape(weight.size), empty(), zero, zero)

    def unitnorm_constraint(weight: Any) -> None:
        columns("unitnorm_constraint", weight, cast(0))

    return {
        "l1l2_penalty": l1l2_penalty,
        "l1l2_gradient": l1l2_gradient,
        "activity_l1l2_gradient": l1l2_gradient,
        "maxnorm_constraint": maxnorm_constraint,
        "nonneg_constraint": nonneg_constraint,
        "unitnorm_constraint": unitnorm_constraint,
    }


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    k = kernel_constants(dtype)
    no_array = np.empty(0, dtype)
    element_loops = {
        rule: compile_cpu(cpu_element_loop(step, k), rule) for rule, step in ELEMENT_RULES.items()
    }
    column_loops = {
        rule: compile_cpu(cpu_column_loop(scale, k), rule) for rule, scale in COLUMN_RULES.items()
    }
    penalty_sum = cpu_sum(dtype, l1l2_term)

    def elements(rule: str, weight: np.ndarray, grad: np.ndarray, l1: Any, l2: Any) -> None:
        element_loops[rule](weight, grad, l1, l2)

    def columns(rule: str, weight: np.ndarray, max_value: Any) -> None:
        column_loops[rule](weight, max_value)

    def penalty(weight: np.ndarray, l1: Any, l2: Any, out: np.ndarray) -> None:
        out[0] += penalty_sum(weight, no_array, l1, l2)

    return public_operations(elements, columns, penalty, lambda: no_array, dtype.type)


def cuda_element_kernel(registry: CudaKernelRegistry, rule: str, k: KernelConstants) -> Any:
    step = registry.device(ELEMENT_RULES[rule])
    vector = registry.array(1)

    def element_kernel(weight, grad, l1, l2):
        i = cuda.grid(1)
        if i < weight.size:
            step(weight, grad, i, l1, l2, k)

    element_kernel.__name__ = f"{rule}_kernel"
    return registry.jit(vector, vector, registry.scalar, registry.scalar)(element_kernel)


def cuda_column_kernel(registry: CudaKernelRegistry, rule: str, k: KernelConstants) -> Any:
    scale = registry.device(COLUMN_RULES[rule])
    norm = registry.device(column_norm)
    scale_column_device = registry.device(scale_column)

    def column_kernel(weight, max_value):
        j = cuda.grid(1)
        if j < weight.shape[1]:
            scale_column_device(weight, j, scale(norm(weight, j, k), max_value, k))

    column_kernel.__name__ = f"{rule}_kernel"
    return registry.jit(registry.array(2), registry.scalar)(column_kernel)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    k = kernel_constants(dtype)
    no_array = empty_vector(cuda_api, dtype)
    element_kernels = {rule: cuda_element_kernel(registry, rule, k) for rule in ELEMENT_RULES}
    column_kernels = {rule: cuda_column_kernel(registry, rule, k) for rule in COLUMN_RULES}
    penalty_sum = block_sum_launcher(cuda_api, dtype, l1l2_term, True)

    def elements(rule: str, weight: Any, grad: Any, l1: Any, l2: Any) -> None:
        element_kernels[rule][blocks_for(weight.size), THREADS_PER_BLOCK](weight, grad, l1, l2)

    def columns(rule: str, weight: Any, max_value: Any) -> None:
        column_kernels[rule][blocks_for(weight.shape[1]), THREADS_PER_BLOCK](weight, max_value)

    def penalty(weight: Any, l1: Any, l2: Any, out: Any) -> None:
        penalty_sum(weight, no_array(), l1, l2, out)

    return public_operations(elements, columns, penalty, no_array, dtype.type)
