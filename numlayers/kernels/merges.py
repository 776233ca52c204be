"""Merge modes of Keras 0.3 (``Merge`` layers, Graph nodes with several inputs).

Operations (both devices; outputs are overwritten unless the name says ``into``):

- ``multiply_into(x, out)``: ``out *= x`` (any shape, taken as flat)
- ``multiply_two(a, b, out)``: ``out = a * b`` (any shape, taken as flat); with
  ``multiply_into`` it builds the 'mul' gradients ``grad_i = grad * prod_{j != i} x_j``
- ``scale_into(x, alpha, out)``: ``out = alpha * x`` (any shape, taken as flat); 'ave'
  is ``copy`` and ``add_into`` of :mod:`numlayers.kernels.arrays`, then this
- ``concat_forward_part(x, out, offset)``: on 3-D views ``(outer, length, inner)``,
  ``out[o, offset:offset + x.shape[1], i] = x[o, :, i]``
- ``concat_backward_part(grad_out, offset, grad_x)``: the slice back,
  ``grad_x[o, :, i] = grad_out[o, offset:offset + grad_x.shape[1], i]``
- ``batched_matmul(a, b, out, transpose_a, transpose_b)``: ``out[z] = op(a[z]) @ op(b[z])``
  for 3-D ``a``, ``b``, ``out``, where ``op`` transposes the last two axes when its flag
  is set: ``a`` is ``(batch, M, K)`` or ``(batch, K, M)``, ``b`` is ``(batch, K, N)`` or
  ``(batch, N, K)``, ``out`` is ``(batch, M, N)`` ('dot' mode; its gradients are
  ``dA = dOut @ B^T`` and ``dB = A^T @ dOut``)
- ``cosine_forward(a, b, out)``: for 2-D ``a``, ``b`` of shape ``(batch, d)``,
  ``out[i, 0] = <a_i, b_i> / sqrt(max(|a_i|^2 |b_i|^2, COSINE_EPSILON))`` ('cos' mode;
  Keras 0.3 has no guard, so the two agree wherever its result is finite)
- ``cosine_backward(a, b, grad_out, grad_a, grad_b)``: the exact gradient of
  ``cosine_forward`` for the incoming ``grad_out`` of shape ``(batch, 1)``

A concat part is copied through 2-D views ``(outer, length * inner)``, so each
``x[o]`` moves as one contiguous run. On the CPU the batched product is a BLAS call
per batch item (:func:`~numlayers.kernels.blas.gemm`); on CUDA it is
:mod:`numlayers.kernels.matmul`'s tiling (64 x 64 output tiles, 4 x 4 per thread)
with ``blockIdx.z`` walking the batch. A batch of 1 x 1 results (the 'dot' of two
vectors per sample, whatever the transposes) is a row-wise dot product instead: a
vectorised loop on the CPU, where a BLAS call per sample costs more than its sum, and
the cosine's row reduction on CUDA.
The cosine's row sums and gradient formula are written once and compiled for both
devices; on CUDA a block of :data:`ROW_THREADS` threads reduces each row in shared
memory.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from numlayers.kernels.blas import gemm, njit_calling_blas
from numlayers.kernels.cuda_support import CudaKernelRegistry, blocks_for, new_registry
from numlayers.kernels.dropout import compile_serial_and_parallel
from numlayers.kernels.matmul import (
    A_LOADS,
    B_LOADS,
    BLOCK_THREADS,
    PER_THREAD_M,
    PER_THREAD_N,
    THREADS_X,
    THREADS_Y,
    TILE_K,
    TILE_M,
    TILE_N,
)

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None

#: guard of the cosine's denominator, ``sqrt(max(|a|^2 |b|^2, COSINE_EPSILON))``
COSINE_EPSILON = 1e-7
#: threads of the CUDA block that reduces one row (a cosine, or a product of vectors)
ROW_THREADS = 128
#: arrays at least this long go through the CPU loops over both cores (measured: two
#: cores overtake one at about 2**15 float64 or 2**16 float32 elements)
PARALLEL_MIN_SIZE = 1 << 16
#: the most blocks a CUDA grid may have along z; larger batches are walked in strides
MAX_GRID_Z = 65535


def row_sums(a, b, row, start, step, zero):
    """``(<a_row, b_row>, |a_row|^2, |b_row|^2)`` over columns ``start, start + step, ...``."""
    dot = zero
    sq_a = zero
    sq_b = zero
    for j in range(start, a.shape[1], step):
        x = a[row, j]
        y = b[row, j]
        dot += x * y
        sq_a += x * x
        sq_b += y * y
    return dot, sq_a, sq_b


def cosine_terms(dot, sq_a, sq_b, epsilon, zero, one):
    """Return ``(cosine, inv_norm, coef_a, coef_b)`` of one row from its sums.

    ``cosine = dot * inv_norm``; its derivatives are ``inv_norm * b - coef_a * a``
    with respect to ``a`` and ``inv_norm * a - coef_b * b`` with respect to ``b``.
    Below the guard the denominator is the constant ``sqrt(epsilon)``, so the
    coefficients of the norms' derivatives vanish.
    """
    product = sq_a * sq_b
    if product > epsilon:
        inv_norm = one / math.sqrt(product)
        cosine = dot * inv_norm
        # d/da (|a|^2 |b|^2)^(-1/2) = -a |b|^2 (|a|^2 |b|^2)^(-3/2), times dot
        return cosine, inv_norm, cosine / sq_a, cosine / sq_b
    inv_norm = one / math.sqrt(epsilon)
    return dot * inv_norm, inv_norm, zero, zero


def write_cosine_gradients(a, b, row, start, step, grad, terms, grad_a, grad_b):
    """Row ``row`` of both gradients over columns ``start, start + step, ...``."""
    inv_norm = terms[1]
    scale_a = grad * terms[2]
    scale_b = grad * terms[3]
    scale = grad * inv_norm
    for j in range(start, a.shape[1], step):
        x = a[row, j]
        y = b[row, j]
        grad_a[row, j] = scale * y - scale_a * x
        grad_b[row, j] = scale * x - scale_b * y


row_sums_cpu = njit(inline="always")(row_sums)
cosine_terms_cpu = njit(inline="always")(cosine_terms)
write_cosine_gradients_cpu = njit(inline="always")(write_cosine_gradients)


def flat(array: Any) -> Any:
    """A 1-D view of a C-contiguous array (NumPy or CUDA)."""
    return array.reshape(array.size)


def is_vector_product(out: Any) -> bool:
    """True when each item of a batched product is a dot product of two vectors (1 x 1)."""
    return bool(out.shape[1] == 1 and out.shape[2] == 1)


def merge_last_axes(array: Any) -> Any:
    """The 2-D view ``(n0, n1 * n2)`` of a C-contiguous 3-D array.

    A concat part's ``x[o]`` becomes one contiguous row, and so does a ``(batch, 1, K)``
    or ``(batch, K, 1)`` operand of a product of vectors.
    """
    return array.reshape(array.shape[0], array.shape[1] * array.shape[2])


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    cast = dtype.type
    zero = dtype.type(0)
    one = dtype.type(1)
    epsilon = dtype.type(COSINE_EPSILON)

    def multiply_into_loop(x, out):
        for i in prange(out.size):
            out[i] *= x[i]

    def multiply_two_loop(a, b, out):
        for i in prange(out.size):
            out[i] = a[i] * b[i]

    def scale_into_loop(x, alpha, out):
        for i in prange(out.size):
            out[i] = alpha * x[i]

    # The rows are indexed through views that start at column ``start``: an index
    # ``start + c`` could be negative as far as Numba knows, and its wraparound
    # check keeps LLVM from vectorising the copy (3x slower than NumPy, measured).
    def copy_columns(x, out, start):
        for o in prange(x.shape[0]):
            target = out[o, start:]
            for c in range(x.shape[1]):
                target[c] = x[o, c]

    def take_columns(grad_out, start, grad_x):
        for o in prange(grad_x.shape[0]):
            source = grad_out[o, start:]
            for c in range(grad_x.shape[1]):
                grad_x[o, c] = source[c]

    def cosine_rows(a, b, out):
        for row in prange(a.shape[0]):
            sums = row_sums_cpu(a, b, row, 0, 1, zero)
            out[row, 0] = cosine_terms_cpu(sums[0], sums[1], sums[2], epsilon, zero, one)[0]

    def cosine_gradient_rows(a, b, grad_out, grad_a, grad_b):
        for row in prange(a.shape[0]):
            sums = row_sums_cpu(a, b, row, 0, 1, zero)
            terms = cosine_terms_cpu(sums[0], sums[1], sums[2], epsilon, zero, one)
            write_cosine_gradients_cpu(a, b, row, 0, 1, grad_out[row, 0], terms, grad_a, grad_b)

    # reassociating the sum lets LLVM vectorise it, as BLAS would
    @njit(cache=True, fastmath={"reassoc", "contract"})
    def row_dots(a, b, out):
        for z in range(a.shape[0]):
            total = zero
            for k in range(a.shape[1]):
                total += a[z, k] * b[z, k]
            out[z] = total

    @njit_calling_blas
    def blas_products(a, b, out, transpose_a, transpose_b):
        for z in range(out.shape[0]):
            gemm(a[z], b[z], out[z], transpose_a, transpose_b, 1.0, 0.0)

    multiply_into_serial, multiply_into_parallel = compile_serial_and_parallel(multiply_into_loop)
    multiply_two_serial, multiply_two_parallel = compile_serial_and_parallel(multiply_two_loop)
    scale_into_serial, scale_into_parallel = compile_serial_and_parallel(scale_into_loop)
    copy_serial, copy_parallel = compile_serial_and_parallel(copy_columns)
    take_serial, take_parallel = compile_serial_and_parallel(take_columns)
    cosine_serial, cosine_parallel = compile_serial_and_parallel(cosine_rows)
    gradient_serial, gradient_parallel = compile_serial_and_parallel(cosine_gradient_rows)

    def multiply_into(x: np.ndarray, out: np.ndarray) -> None:
        loop = multiply_into_parallel if out.size >= PARALLEL_MIN_SIZE else multiply_into_serial
        loop(flat(x), flat(out))

    def multiply_two(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        loop = multiply_two_parallel if out.size >= PARALLEL_MIN_SIZE else multiply_two_serial
        loop(flat(a), flat(b), flat(out))

    def scale_into(x: np.ndarray, alpha: float, out: np.ndarray) -> None:
        loop = scale_into_parallel if out.size >= PARALLEL_MIN_SIZE else scale_into_serial
        loop(flat(x), cast(alpha), flat(out))

    def concat_forward_part(x: np.ndarray, out: np.ndarray, offset: int) -> None:
        loop = copy_parallel if x.size >= PARALLEL_MIN_SIZE else copy_serial
        loop(merge_last_axes(x), merge_last_axes(out), offset * x.shape[2])

    def concat_backward_part(grad_out: np.ndarray, offset: int, grad_x: np.ndarray) -> None:
        loop = take_parallel if grad_x.size >= PARALLEL_MIN_SIZE else take_serial
        loop(merge_last_axes(grad_out), offset * grad_x.shape[2], merge_last_axes(grad_x))

    def batched_matmul(
        a: np.ndarray, b: np.ndarray, out: np.ndarray, transpose_a: bool, transpose_b: bool
    ) -> None:
        if is_vector_product(out):  # a BLAS call per sample would cost more than its sum
            row_dots(merge_last_axes(a), merge_last_axes(b), flat(out))
        else:
            blas_products(a, b, out, bool(transpose_a), bool(transpose_b))

    def cosine_forward(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        (cosine_parallel if a.size >= PARALLEL_MIN_SIZE else cosine_serial)(a, b, out)

    def cosine_backward(
        a: np.ndarray,
        b: np.ndarray,
        grad_out: np.ndarray,
        grad_a: np.ndarray,
        grad_b: np.ndarray,
    ) -> None:
        loop = gradient_parallel if a.size >= PARALLEL_MIN_SIZE else gradient_serial
        loop(a, b, grad_out, grad_a, grad_b)

    return {
        "multiply_into": multiply_into,
        "multiply_two": multiply_two,
        "scale_into": scale_into,
        "concat_forward_part": concat_forward_part,
        "concat_backward_part": concat_backward_part,
        "batched_matmul": batched_matmul,
        "cosine_forward": cosine_forward,
        "cosine_backward": cosine_backward,
    }


def make_tile_loader(zero: Any) -> Any:
    """Return ``load_tile``, which stages one operand's slice for the batched GEMM."""

    def load_tile(operand, z, k0, depth, start, extent, width, loads, depth_major, thread, tile):
        """``tile[k, e] = op(operand[z])[k0 + k, start + e]``, zero past the edges.

        ``op(operand[z])`` is ``(depth, extent)``: ``operand[z]`` itself when
        ``depth_major``, else its transpose. Consecutive threads walk the stored
        array's contiguous axis, so the loads coalesce either way.
        """
        for load in range(loads):
            index = thread + load * BLOCK_THREADS
            if depth_major:
                e = index % width
                k = index // width
            else:
                k = index % TILE_K
                e = index // TILE_K
            value = zero
            if k0 + k < depth and start + e < extent:
                if depth_major:
                    value = operand[z, k0 + k, start + e]
                else:
                    value = operand[z, start + e, k0 + k]
            tile[k, e] = value

    return load_tile


def make_batched_gemm_kernel(
    registry: CudaKernelRegistry, transpose_a: bool, transpose_b: bool
) -> Any:
    """Return a kernel ``out[z] = op(a[z]) @ op(b[z])`` for fixed transposes.

    The tiling of :func:`numlayers.kernels.matmul.make_gemm_kernel` on a grid whose
    z axis walks the batch (in strides of ``gridDim.z`` beyond :data:`MAX_GRID_Z`).
    """
    scalar = registry.scalar
    zero = registry.dtype.type(0)
    batch = registry.array(3)
    load_tile = registry.device(make_tile_loader(zero))

    def batched_gemm(a, b, out):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        thread = ty * THREADS_X + tx
        row0 = cuda.blockIdx.y * TILE_M
        col0 = cuda.blockIdx.x * TILE_N
        rows = out.shape[1]
        cols = out.shape[2]
        depth = a.shape[1] if transpose_a else a.shape[2]

        a_tile = cuda.shared.array((TILE_K, TILE_M), scalar)
        b_tile = cuda.shared.array((TILE_K, TILE_N), scalar)
        acc = cuda.local.array((PER_THREAD_M, PER_THREAD_N), scalar)
        a_values = cuda.local.array(PER_THREAD_M, scalar)
        b_values = cuda.local.array(PER_THREAD_N, scalar)

        for z in range(cuda.blockIdx.z, out.shape[0], cuda.gridDim.z):
            for i in range(PER_THREAD_M):
                for j in range(PER_THREAD_N):
                    acc[i, j] = zero
            for k0 in range(0, depth, TILE_K):
                # a[z] is (depth, rows) when transposed, b[z] is (depth, cols) when not
                load_tile(a, z, k0, depth, row0, rows, TILE_M, A_LOADS, transpose_a, thread, a_tile)
                load_tile(
                    b, z, k0, depth, col0, cols, TILE_N, B_LOADS, not transpose_b, thread, b_tile
                )
                cuda.syncthreads()
                for k in range(TILE_K):
                    for i in range(PER_THREAD_M):
                        a_values[i] = a_tile[k, ty + i * THREADS_Y]
                    for j in range(PER_THREAD_N):
                        b_values[j] = b_tile[k, tx + j * THREADS_X]
                    for i in range(PER_THREAD_M):
                        for j in range(PER_THREAD_N):
                            acc[i, j] += a_values[i] * b_values[j]
                # the next item's (or tile's) loads must wait for every thread's reads
                cuda.syncthreads()
            for i in range(PER_THREAD_M):
                row = row0 + ty + i * THREADS_Y
                if row < rows:
                    for j in range(PER_THREAD_N):
                        col = col0 + tx + j * THREADS_X
                        if col < cols:
                            out[z, row, col] = acc[i, j]

    batched_gemm.__name__ = (
        f"batched_gemm_{'t' if transpose_a else 'n'}{'t' if transpose_b else 'n'}"
    )
    return registry.jit(batch, batch, batch)(batched_gemm)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    cast = dtype.type
    zero = dtype.type(0)
    one = dtype.type(1)
    epsilon = dtype.type(COSINE_EPSILON)
    scalar = registry.scalar
    vector = registry.array(1)
    matrix = registry.array(2)
    sums_of = registry.device(row_sums)
    terms_of = registry.device(cosine_terms)
    write_gradients = registry.device(write_cosine_gradients)
    gemms = {
        (transpose_a, transpose_b): make_batched_gemm_kernel(registry, transpose_a, transpose_b)
        for transpose_a in (False, True)
        for transpose_b in (False, True)
    }

    @registry.jit(vector, vector)
    def multiply_into_kernel(x, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] *= x[i]

    @registry.jit(vector, vector, vector)
    def multiply_two_kernel(a, b, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a[i] * b[i]

    @registry.jit(vector, scalar, vector)
    def scale_into_kernel(x, alpha, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = alpha * x[i]

    @registry.jit(matrix, matrix, numba.types.int64)
    def copy_columns_kernel(x, out, start):
        i = cuda.grid(1)
        if i < x.size:
            width = x.shape[1]
            out[i // width, start + i % width] = x[i // width, i % width]

    @registry.jit(matrix, numba.types.int64, matrix)
    def take_columns_kernel(grad_out, start, grad_x):
        i = cuda.grid(1)
        if i < grad_x.size:
            width = grad_x.shape[1]
            grad_x[i // width, i % width] = grad_out[i // width, start + i % width]

    def block_row_sums(a, b, partial):
        """Every thread of the block gets the row's three sums, reduced in ``partial``."""
        t = cuda.threadIdx.x
        sums = sums_of(a, b, cuda.blockIdx.x, t, ROW_THREADS, zero)
        for s in range(3):
            partial[s, t] = sums[s]
        cuda.syncthreads()
        width = ROW_THREADS // 2
        while width > 0:
            if t < width:
                for s in range(3):
                    partial[s, t] += partial[s, t + width]
            cuda.syncthreads()
            width //= 2
        return partial[0, 0], partial[1, 0], partial[2, 0]

    reduce_row = registry.device(block_row_sums)

    @registry.jit(matrix, matrix, matrix)
    def cosine_forward_kernel(a, b, out):
        partial = cuda.shared.array((3, ROW_THREADS), scalar)
        sums = reduce_row(a, b, partial)
        if cuda.threadIdx.x == 0:
            out[cuda.blockIdx.x, 0] = terms_of(sums[0], sums[1], sums[2], epsilon, zero, one)[0]

    @registry.jit(matrix, matrix, vector)
    def row_dots_kernel(a, b, out):
        partial = cuda.shared.array((3, ROW_THREADS), scalar)
        sums = reduce_row(a, b, partial)
        if cuda.threadIdx.x == 0:
            out[cuda.blockIdx.x] = sums[0]

    @registry.jit(matrix, matrix, matrix, matrix, matrix)
    def cosine_backward_kernel(a, b, grad_out, grad_a, grad_b):
        partial = cuda.shared.array((3, ROW_THREADS), scalar)
        sums = reduce_row(a, b, partial)
        row = cuda.blockIdx.x
        terms = terms_of(sums[0], sums[1], sums[2], epsilon, zero, one)
        write_gradients(
            a, b, row, cuda.threadIdx.x, ROW_THREADS, grad_out[row, 0], terms, grad_a, grad_b
        )

    def multiply_into(x: Any, out: Any) -> None:
        multiply_into_kernel[blocks_for(out.size), 256](flat(x), flat(out))

    def multiply_two(a: Any, b: Any, out: Any) -> None:
        multiply_two_kernel[blocks_for(out.size), 256](flat(a), flat(b), flat(out))

    def scale_into(x: Any, alpha: float, out: Any) -> None:
        scale_into_kernel[blocks_for(out.size), 256](flat(x), cast(alpha), flat(out))

    def concat_forward_part(x: Any, out: Any, offset: int) -> None:
        copy_columns_kernel[blocks_for(x.size), 256](
            merge_last_axes(x), merge_last_axes(out), np.int64(offset * x.shape[2])
        )

    def concat_backward_part(grad_out: Any, offset: int, grad_x: Any) -> None:
        take_columns_kernel[blocks_for(grad_x.size), 256](
            merge_last_axes(grad_out), np.int64(offset * grad_x.shape[2]), merge_last_axes(grad_x)
        )

    def batched_matmul(a: Any, b: Any, out: Any, transpose_a: bool, transpose_b: bool) -> None:
        if out.size == 0:  # a grid with no blocks cannot be launched
            return
        if is_vector_product(out):  # a block per sample, not a 64 x 64 tile per 1 x 1 result
            row_dots_kernel[out.shape[0], ROW_THREADS](
                merge_last_axes(a), merge_last_axes(b), flat(out)
            )
            return
        blocks = (
            (out.shape[2] + TILE_N - 1) // TILE_N,
            (out.shape[1] + TILE_M - 1) // TILE_M,
            min(out.shape[0], MAX_GRID_Z),
        )
        gemms[bool(transpose_a), bool(transpose_b)][blocks, (THREADS_X, THREADS_Y)](a, b, out)

    def cosine_forward(a: Any, b: Any, out: Any) -> None:
        if a.shape[0] > 0:
            cosine_forward_kernel[a.shape[0], ROW_THREADS](a, b, out)

    def cosine_backward(a: Any, b: Any, grad_out: Any, grad_a: Any, grad_b: Any) -> None:
        if a.shape[0] > 0:
            cosine_backward_kernel[a.shape[0], ROW_THREADS](a, b, grad_out, grad_a, grad_b)

    return {
        "multiply_into": multiply_into,
        "multiply_two": multiply_two,
        "scale_into": scale_into,
        "concat_forward_part": concat_forward_part,
        "concat_backward_part": concat_backward_part,
        "batched_matmul": batched_matmul,
        "cosine_forward": cosine_forward,
        "cosine_backward": cosine_backward,
    }
