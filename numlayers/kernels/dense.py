"""Fully connected layer: ``out = x @ weight + bias`` and its gradients.

Operations (both devices):

- ``dense_forward(x, weight, bias, out)``; ``bias`` may have length 0 (no bias)
- ``dense_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, need_grad_x)``:
  ``grad_weight = x.T @ grad_out``, ``grad_bias = grad_out.sum(0)`` and, when
  ``need_grad_x``, ``grad_x = grad_out @ weight.T`` (the first layer of a model
  skips that product).
- ``dense_activation_forward(x, weight, bias, z, y, activation)``: ``dense_forward``
  into ``z``, then ``y = f(z)`` for the activation named ``activation`` (any of
  :data:`numlayers.activations.ACTIVATIONS`; softmax over the rows)
- ``dense_activation_backward(x, weight, z, y, grad_y, grad_z, grad_x, grad_weight,
  grad_bias, need_grad_x, activation)``: ``grad_z`` from ``grad_y`` through the
  activation, then ``dense_backward`` from ``grad_z``

CPU: :func:`~numlayers.kernels.blas.product` (BLAS in blocks on every core; the bias
is added to each block while it is in cache, and summed as a product with ones). A
layer small enough for one block runs each pass as one compiled call
(:func:`fused_cpu_passes`): per layer and pass, that saves a call through Python and
a trip over memory. Larger layers follow the products with the activation operations
of :mod:`numlayers.kernels.activations`, which use every core.
CUDA: the tiled GEMM of :mod:`numlayers.kernels.matmul`, then the activation kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from numlayers.kernels import activations, blas
from numlayers.kernels.activations import (
    activate_rows,
    activation_gradient_rows,
    constants_for,
)
from numlayers.kernels.arrays import sum_rows_launcher
from numlayers.kernels.blas import (
    block_count,
    gemm,
    gemm_one_block,
    njit_calling_blas,
    product,
)
from numlayers.kernels.cuda_support import empty_vector
from numlayers.kernels.matmul import gemm_launcher

#: the fused passes inline activations.py's formulas and call blas.py: their cached
#: names change with either file
FUSED_DIGEST = blas.source_digest(activations.__file__, blas.__file__)


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    ones: dict[int, np.ndarray] = {}

    def dense_forward(x: Any, weight: Any, bias: Any, out: Any) -> None:
        product(x, weight, out, bias=bias)

    def dense_backward(
        x: Any,
        weight: Any,
        grad_out: Any,
        grad_x: Any,
        grad_weight: Any,
        grad_bias: Any,
        need_grad_x: bool,
    ) -> None:
        rows, inputs = x.shape
        if block_count(rows, inputs, grad_out.shape[1]) == 1:  # all three products small
            dense_backward_serial(x, weight, grad_out, grad_x, grad_weight, grad_bias, need_grad_x)
            return
        if need_grad_x:
            product(grad_out, weight, grad_x, transpose_b=True)
        product(x, grad_out, grad_weight, transpose_a=True)
        if grad_bias.shape[0] > 0:  # column sums, as a product with a row of ones
            if rows not in ones:
                ones[rows] = np.ones((1, rows), dtype)
            product(ones[rows], grad_out, grad_bias.reshape(1, -1))

    composed = activation_passes(dense_forward, dense_backward, activations.build_cpu(dtype))
    fused: dict[str, tuple[Any, Any]] = {}

    def fused_passes(x: Any, out_columns: int, name: str) -> tuple[Any, Any] | None:
        """The one-call passes of ``name`` where they apply, else None."""
        rows, inputs = x.shape
        if block_count(rows, out_columns, inputs) > 1:
            return None
        if name not in fused:
            fused[name] = fused_cpu_passes(dtype, name)
        return fused[name]

    # the public signatures (module doc) end with the activation's name, which the
    # fused passes have compiled in
    def dense_activation_forward(x: Any, weight: Any, bias: Any, z: Any, *arguments: Any) -> None:
        passes = fused_passes(x, z.shape[1], arguments[-1])
        if passes is None:
            composed["dense_activation_forward"](x, weight, bias, z, *arguments)
        else:
            passes[0](x, weight, bias, z, *arguments[:-1])

    def dense_activation_backward(x: Any, weight: Any, z: Any, *arguments: Any) -> None:
        passes = fused_passes(x, z.shape[1], arguments[-1])
        if passes is None:
            composed["dense_activation_backward"](x, weight, z, *arguments)
        else:
            passes[1](x, weight, z, *arguments[:-1])

    return {
        "dense_forward": dense_forward,
        "dense_backward": dense_backward,
        "dense_activation_forward": dense_activation_forward,
        "dense_activation_backward": dense_activation_backward,
    }


def activation_passes(
    dense_forward: Any, dense_backward: Any, activation_operations: dict[str, Any]
) -> dict[str, Any]:
    """``dense_activation_forward`` and ``_backward`` as a product and an activation
    operation in turn (both devices)."""

    def dense_activation_forward(
        x: Any, weight: Any, bias: Any, z: Any, y: Any, activation: str
    ) -> None:
        dense_forward(x, weight, bias, z)
        activation_operations[f"{activation}_forward"](z, y)

    def dense_activation_backward(
        x: Any,
        weight: Any,
        z: Any,
        y: Any,
        grad_y: Any,
        grad_z: Any,
        grad_x: Any,
        grad_weight: Any,
        grad_bias: Any,
        need_grad_x: bool,
        activation: str,
    ) -> None:
        if activation == "softmax":
            activation_operations["softmax_backward"](y, grad_y, grad_z)
        else:
            activation_operations[f"{activation}_backward"](z, y, grad_y, grad_z)
        dense_backward(x, weight, grad_z, grad_x, grad_weight, grad_bias, need_grad_x)

    return {
        "dense_activation_forward": dense_activation_forward,
        "dense_activation_backward": dense_activation_backward,
    }


def fused_cpu_passes(dtype: np.dtype, name: str) -> tuple[Any, Any]:
    """The forward and backward of a one-block layer with activation ``name``, each one
    compiled call on the calling thread."""
    c = constants_for(dtype)

    def forward(x, weight, bias, z, y):
        gemm_one_block(x, weight, z, False, False, 1, 0, bias)
        activate_rows(name, z, y, c)

    def backward(x, weight, z, y, grad_y, grad_z, grad_x, grad_weight, grad_bias, need_grad_x):
        activation_gradient_rows(name, z, y, grad_y, grad_z, c)
        dense_backward_serial(x, weight, grad_z, grad_x, grad_weight, grad_bias, need_grad_x)

    passes = []
    for function in (forward, backward):
        function.__qualname__ = f"dense_{name}_{function.__name__}_{FUSED_DIGEST}"
        # as the activation loops: contract fuses multiply-adds only, and the numpy
        # error model lets the divisions vectorise
        compile_pass = njit(cache=True, fastmath={"contract"}, error_model="numpy")
        passes.append(compile_pass(function))
    return passes[0], passes[1]


@njit_calling_blas
def dense_backward_serial(x, weight, grad_out, grad_x, grad_weight, grad_bias, need_grad_x):
    """The gradients on the calling thread, in one compiled call (small layers)."""
    if need_grad_x:
        gemm(grad_out, weight, grad_x, False, True, 1, 0)
    gemm(x, grad_out, grad_weight, True, False, 1, 0)
    if grad_bias.shape[0] > 0:
        grad_bias[:] = 0
        for i in range(grad_out.shape[0]):
            for j in range(np.uint64(grad_out.shape[1])):
                grad_bias[j] += grad_out[i, j]


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    no_bias = empty_vector(cuda_api, dtype)
    gemm_nn = gemm_launcher(cuda_api, dtype, False, False)
    gemm_tn = gemm_launcher(cuda_api, dtype, True, False)
    gemm_nt = gemm_launcher(cuda_api, dtype, False, True)
    sum_rows = sum_rows_launcher(cuda_api, dtype)

    def dense_forward(x: Any, weight: Any, bias: Any, out: Any) -> None:
        gemm_nn(x, weight, bias, out)

    def dense_backward(
        x: Any,
        weight: Any,
        grad_out: Any,
        grad_x: Any,
        grad_weight: Any,
        grad_bias: Any,
        need_grad_x: bool,
    ) -> None:
        if need_grad_x:
            gemm_nt(grad_out, weight, no_bias(), grad_x)
        gemm_tn(x, grad_out, no_bias(), grad_weight)
        if grad_bias.shape[0] > 0:
            sum_rows(grad_out, grad_bias)

    return {
        "dense_forward": dense_forward,
        "dense_backward": dense_backward,
        **activation_passes(dense_forward, dense_backward, activations.build_cuda(dtype, cuda_api)),
    }
