"""Fully connected layer: ``out = x @ weight + bias`` and its gradients.

Operations (both devices):

- ``dense_forward(x, weight, bias, out)``; ``bias`` may have length 0 (no bias)
- ``dense_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, need_grad_x)``:
  ``grad_weight = x.T @ grad_out``, ``grad_bias = grad_out.sum(0)`` and, when
  ``need_grad_x``, ``grad_x = grad_out @ weight.T`` (the first layer of a model
  skips that product).

CPU: BLAS (:func:`~numlayers.kernels.blas.parallel_gemm`) with the bias add and bias
reduction fused in one compiled function each way. CUDA: the tiled GEMM of
:mod:`numlayers.kernels.matmul`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from numlayers.kernels.arrays import sum_rows_launcher
from numlayers.kernels.blas import parallel_gemm, use_one_blas_thread
from numlayers.kernels.cuda_support import empty_vector
from numlayers.kernels.matmul import gemm_launcher


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    use_one_blas_thread()

    @njit(cache=True)
    def dense_forward(x, weight, bias, out):
        parallel_gemm(x, weight, out, False, False, 1.0, 0.0)
        if bias.shape[0] > 0:
            for i in range(out.shape[0]):
                for j in range(out.shape[1]):
                    out[i, j] += bias[j]

    @njit(cache=True)
    def dense_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, need_grad_x):
        if need_grad_x:
            parallel_gemm(grad_out, weight, grad_x, False, True, 1.0, 0.0)
        parallel_gemm(x, grad_out, grad_weight, True, False, 1.0, 0.0)
        if grad_bias.shape[0] > 0:
            grad_bias[:] = 0
            for i in range(grad_out.shape[0]):
                for j in range(grad_out.shape[1]):
                    grad_bias[j] += grad_out[i, j]

    return {"dense_forward": dense_forward, "dense_backward": dense_backward}


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
