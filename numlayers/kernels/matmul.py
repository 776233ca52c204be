"""Matrix products: BLAS (:mod:`numlayers.kernels.blas`) on the CPU, a tiled GEMM of ours on CUDA.

Operations (both devices, ``out`` is overwritten):

- ``matmul(a, b, bias, out)``: ``out = a @ b + bias`` (``bias`` may have length 0)
- ``matmul_transpose_a(a, b, out)``: ``out = a.T @ b``
- ``matmul_transpose_b(a, b, out)``: ``out = a @ b.T``

The CUDA kernel tiles ``out`` into 64 x 64 blocks; 256 threads stage 64 x 16
slices of both operands in shared memory and each thread accumulates a 4 x 4
register tile (rows ``ty + 16 i``, columns ``tx + 16 j``, so shared-memory reads
are conflict-free and global writes coalesced). Transposes are compile-time
constants of separate kernels, so the loads are specialised, not branched.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from numlayers.kernels.blas import product
from numlayers.kernels.cuda_support import CudaKernelRegistry, empty_vector, new_registry

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None

TILE_M = 64
TILE_N = 64
TILE_K = 16
THREADS_X = 16  # threads along the columns of a tile
THREADS_Y = 16  # threads along the rows of a tile
PER_THREAD_M = TILE_M // THREADS_Y
PER_THREAD_N = TILE_N // THREADS_X
BLOCK_THREADS = THREADS_X * THREADS_Y
A_LOADS = TILE_M * TILE_K // BLOCK_THREADS
B_LOADS = TILE_N * TILE_K // BLOCK_THREADS


def build_cpu(dtype: np.dtype) -> dict[str, Any]:

    def matmul(a: Any, b: Any, bias: Any, out: Any) -> None:
        product(a, b, out, bias=bias)

    def matmul_transpose_a(a: Any, b: Any, out: Any) -> None:
        product(a, b, out, transpose_a=True)

    def matmul_transpose_b(a: Any, b: Any, out: Any) -> None:
        product(a, b, out, transpose_b=True)

    return {
        "matmul": matmul,
        "matmul_transpose_a": matmul_transpose_a,
        "matmul_transpose_b": matmul_transpose_b,
    }


def make_gemm_kernel(registry: CudaKernelRegistry, transpose_a: bool, transpose_b: bool) -> Any:
    """Return a tiled GEMM kernel ``out = op(a) @ op(b) + bias`` for fixed transposes."""
    scalar = registry.scalar
    zero = registry.dtype.type(0)
    matrix = registry.array(2)
    vector = registry.array(1)

    def gemm(a, b, bias, out):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        thread = ty * THREADS_X + tx
        row0 = cuda.blockIdx.y * TILE_M
        col0 = cuda.blockIdx.x * TILE_N
        rows = out.shape[0]
        cols = out.shape[1]
        depth = a.shape[0] if transpose_a else a.shape[1]

        a_tile = cuda.shared.array((TILE_K, TILE_M), scalar)
        b_tile = cuda.shared.array((TILE_K, TILE_N), scalar)
        acc = cuda.local.array((PER_THREAD_M, PER_THREAD_N), scalar)
        a_values = cuda.local.array(PER_THREAD_M, scalar)
        b_values = cuda.local.array(PER_THREAD_N, scalar)
        for i in range(PER_THREAD_M):
            for j in range(PER_THREAD_N):
                acc[i, j] = zero

        for k0 in range(0, depth, TILE_K):
            for load in range(A_LOADS):
                index = thread + load * BLOCK_THREADS
                if transpose_a:  # a is (depth, rows): consecutive threads walk the rows
                    m = index % TILE_M
                    k = index // TILE_M
                    value = zero
                    if k0 + k < depth and row0 + m < rows:
                        value = a[k0 + k, row0 + m]
                else:  # a is (rows, depth): consecutive threads walk the depth
                    k = index % TILE_K
                    m = index // TILE_K
                    value = zero
                    if k0 + k < depth and row0 + m < rows:
                        value = a[row0 + m, k0 + k]
                a_tile[k, m] = value
            for load in range(B_LOADS):
                index = thread + load * BLOCK_THREADS
                if transpose_b:  # b is (cols, depth)
                    k = index % TILE_K
                    n = index // TILE_K
                    value = zero
                    if k0 + k < depth and col0 + n < cols:
                        value = b[col0 + n, k0 + k]
                else:  # b is (depth, cols)
                    n = index % TILE_N
                    k = index // TILE_N
                    value = zero
                    if k0 + k < depth and col0 + n < cols:
                        value = b[k0 + k, col0 + n]
                b_tile[k, n] = value
            cuda.syncthreads()
            for k in range(TILE_K):
                for i in range(PER_THREAD_M):
                    a_values[i] = a_tile[k, ty + i * THREADS_Y]
                for j in range(PER_THREAD_N):
                    b_values[j] = b_tile[k, tx + j * THREADS_X]
                for i in range(PER_THREAD_M):
                    for j in range(PER_THREAD_N):
                        acc[i, j] += a_values[i] * b_values[j]
            cuda.syncthreads()

        has_bias = bias.shape[0] > 0
        for i in range(PER_THREAD_M):
            row = row0 + ty + i * THREADS_Y
            if row < rows:
                for j in range(PER_THREAD_N):
                    col = col0 + tx + j * THREADS_X
                    if col < cols:
                        value = acc[i, j]
                        if has_bias:
                            value += bias[col]
                        out[row, col] = value

    gemm.__name__ = f"gemm_{'t' if transpose_a else 'n'}{'t' if transpose_b else 'n'}"
    return registry.jit(matrix, matrix, vector, matrix)(gemm)


@functools.cache
def gemm_launcher(cuda_api: Any, dtype: np.dtype, transpose_a: bool, transpose_b: bool) -> Any:
    """Return ``launch(a, b, bias, out)`` running the tiled GEMM over ``out``.

    Cached, so every family that multiplies matrices shares one compiled kernel.
    """
    kernel = make_gemm_kernel(new_registry(globals(), cuda_api, dtype), transpose_a, transpose_b)
    threads = (THREADS_X, THREADS_Y)

    def launch(a: Any, b: Any, bias: Any, out: Any) -> None:
        blocks = ((out.shape[1] + TILE_N - 1) // TILE_N, (out.shape[0] + TILE_M - 1) // TILE_M)
        kernel[blocks, threads](a, b, bias, out)

    return launch


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    no_bias = empty_vector(cuda_api, dtype)
    gemm_nn = gemm_launcher(cuda_api, dtype, False, False)
    gemm_tn = gemm_launcher(cuda_api, dtype, True, False)
    gemm_nt = gemm_launcher(cuda_api, dtype, False, True)

    def matmul(a: Any, b: Any, bias: Any, out: Any) -> None:
        gemm_nn(a, b, bias, out)

    def matmul_transpose_a(a: Any, b: Any, out: Any) -> None:
        gemm_tn(a, b, no_bias(), out)

    def matmul_transpose_b(a: Any, b: Any, out: Any) -> None:
        gemm_nt(a, b, no_bias(), out)

    return {
        "matmul": matmul,
        "matmul_transpose_a": matmul_transpose_a,
        "matmul_transpose_b": matmul_transpose_b,
    }
