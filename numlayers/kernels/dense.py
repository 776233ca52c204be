"""Fully connected layer: ``out = x @ weight + bias`` and its gradients.

Operations (both devices):

- ``dense_forward(x, weight, bias, out)``; ``bias`` may have length 0 (no bias)
- ``dense_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, need_grad_x)``:
  ``grad_weight = x.T @ grad_out``, ``grad_bias = grad_out.sum(0)`` and, when
  ``need_grad_x``, ``grad_x = grad_out @ weight.T`` (the first layer of a model
  skips that product).

CPU: :func:`~numlayers.kernels.blas.product` (BLAS in blocks on every core; the bias
is added to each block while it is in cache, and summed as a product with ones).
CUDA: the tiled GEMM of :mod:`numlayers.kernels.matmul`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.kernels.arrays import sum_rows_launcher
from numlayers.kernels.blas import (
    block_count,
    gemm,
    njit_calling_blas,
    product,
)
from numlayers.kernels.cuda_support import empty_vector
from numlayers.kernels.matmul import gemm_launcher


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

    return {"dense_forward": dense_forward, "dense_backward": dense_backward}


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

    return {"dense_forward": dense_forward, "dense_backward": dense_backward}
