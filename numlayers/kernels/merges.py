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
The products, the scaling and the concat copies are per-index bodies written once and
compiled for both devices by the toolkit. The cosine's row sums and gradient formula
are written once too; on CUDA a block of :data:`ROW_THREADS` threads reduces each row
in shared memory (hand-written kernels, as threads of a block cooperate).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numba
import numpy as np
from numba import njit, prange

from numlayers.kernels.blas import gemm, njit_calling_blas
from numlayers.kernels.matmul import batched_gemm_launcher
from numlayers.kernels.toolkit import (
    KERNEL_OPTIONS,
    CpuLoop,
    CudaKernels,
    DeviceArray,
    bind_cuda,
    cpu_inline,
    device_index_loop,
    launch_size,
)

#: ``numba.cuda``, bound by :func:`bind_cuda` (the row reductions name it as a module global)
cuda: Any = None

#: guard of the cosine's denominator, ``sqrt(max(|a|^2 |b|^2, COSINE_EPSILON))``
COSINE_EPSILON = 1e-7
#: threads of the CUDA block that reduces one row (a cosine, or a product of vectors)
ROW_THREADS = launch_size(128, 4)
#: Work of one element (see :func:`~numlayers.kernels.toolkit.use_parallel`): the products,
#: copies and row sums here are memory-bound, and two cores overtook one at about 2**15
#: float64 or 2**16 float32 elements (measured), half the toolkit's threshold's worth
MERGE_COST = 0.5


# ---------------------------------------------------------------- per-index bodies


@cpu_inline
def multiply_into_element(index, x, out):
    out[index] *= x[index]


@cpu_inline
def multiply_two_element(index, a, b, out):
    out[index] = a[index] * b[index]


@cpu_inline
def scale_into_element(index, x, alpha, out):
    out[index] = alpha * x[index]


# ``start`` is unsigned: with a signed ``start + column`` Numba checks for a negative
# index, which keeps LLVM from vectorising the copy (3x slower than NumPy, measured)


@cpu_inline
def copy_into_columns(row, column, x, out, start):
    out[row, start + np.uint64(column)] = x[row, column]


@cpu_inline
def take_from_columns(row, column, grad_out, start, grad_x):
    grad_x[row, column] = grad_out[row, start + np.uint64(column)]


# ---------------------------------------------------------------- cosine formulas


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


row_sums_cpu = cpu_inline(row_sums)
cosine_terms_cpu = cpu_inline(cosine_terms)
write_cosine_gradients_cpu = cpu_inline(write_cosine_gradients)


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


def index_operations(dtype: np.dtype, kernels: CudaKernels | None) -> dict[str, Any]:
    """The products, the scaling and the concat parts, on the CPU or (with ``kernels``)
    on CUDA."""
    cast = dtype.type
    vector = matrix = scalar = None
    if kernels is not None:
        vector, matrix, scalar = kernels.array(1), kernels.array(2), kernels.scalar
    offset = numba.types.uint64

    def loop(body: Any, argtypes: tuple[Any, ...], dims: int = 1) -> Any:
        return device_index_loop(kernels, body, argtypes, dims=dims, cost=MERGE_COST)

    multiply_into_loop = loop(multiply_into_element, (vector, vector))
    multiply_two_loop = loop(multiply_two_element, (vector, vector, vector))
    scale_into_loop = loop(scale_into_element, (vector, scalar, vector))
    copy_loop = loop(copy_into_columns, (matrix, matrix, offset), dims=2)
    take_loop = loop(take_from_columns, (matrix, offset, matrix), dims=2)

    def multiply_into(x: Any, out: Any) -> None:
        multiply_into_loop(out.size, flat(x), flat(out))

    def multiply_two(a: Any, b: Any, out: Any) -> None:
        multiply_two_loop(out.size, flat(a), flat(b), flat(out))

    def scale_into(x: Any, alpha: float, out: Any) -> None:
        scale_into_loop(out.size, flat(x), cast(alpha), flat(out))

    def concat_forward_part(x: Any, out: Any, offset: int) -> None:
        rows, columns = x.shape[0], x.shape[1] * x.shape[2]
        start = np.uint64(offset * x.shape[2])
        copy_loop(rows, columns, merge_last_axes(x), merge_last_axes(out), start)

    def concat_backward_part(grad_out: Any, offset: int, grad_x: Any) -> None:
        rows, columns = grad_x.shape[0], grad_x.shape[1] * grad_x.shape[2]
        start = np.uint64(offset * grad_x.shape[2])
        take_loop(rows, columns, merge_last_axes(grad_out), start, merge_last_axes(grad_x))

    return {
        "multiply_into": multiply_into,
        "multiply_two": multiply_two,
        "scale_into": scale_into,
        "concat_forward_part": concat_forward_part,
        "concat_backward_part": concat_backward_part,
    }


# ---------------------------------------------------------------- CPU


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    zero = dtype.type(0)
    one = dtype.type(1)
    epsilon = dtype.type(COSINE_EPSILON)

    def cosine_rows(a, b, out):
        for row in prange(a.shape[0]):
            sums = row_sums_cpu(a, b, row, 0, 1, zero)
            out[row, 0] = cosine_terms_cpu(sums[0], sums[1], sums[2], epsilon, zero, one)[0]

    def cosine_gradient_rows(a, b, grad_out, grad_a, grad_b):
        for row in prange(a.shape[0]):
            sums = row_sums_cpu(a, b, row, 0, 1, zero)
            terms = cosine_terms_cpu(sums[0], sums[1], sums[2], epsilon, zero, one)
            write_cosine_gradients_cpu(a, b, row, 0, 1, grad_out[row, 0], terms, grad_a, grad_b)

    # a row per iteration: the work is the size of ``a``, not the number of rows
    cosine_loop = CpuLoop(cosine_rows, cost=MERGE_COST, size_argument=0)
    cosine_gradient_loop = CpuLoop(cosine_gradient_rows, cost=MERGE_COST, size_argument=0)

    # reassociating the sum lets LLVM vectorise it, as BLAS would
    @njit(**KERNEL_OPTIONS, fastmath={"reassoc", "contract"})
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

    def cosine_forward(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        cosine_loop(a, b, out)

    def cosine_backward(
        a: np.ndarray,
        b: np.ndarray,
        grad_out: np.ndarray,
        grad_a: np.ndarray,
        grad_b: np.ndarray,
    ) -> None:
        cosine_gradient_loop(a, b, grad_out, grad_a, grad_b)

    def batched_matmul(
        a: np.ndarray, b: np.ndarray, out: np.ndarray, transpose_a: bool, transpose_b: bool
    ) -> None:
        if is_vector_product(out):  # a BLAS call per sample would cost more than its sum
            row_dots(merge_last_axes(a), merge_last_axes(b), flat(out))
        else:
            blas_products(a, b, out, bool(transpose_a), bool(transpose_b))

    return {
        **index_operations(dtype, None),
        "batched_matmul": batched_matmul,
        "cosine_forward": cosine_forward,
        "cosine_backward": cosine_backward,
    }


# ---------------------------------------------------------------- CUDA


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    # the row reductions are hand-written: a block's threads sum a row in shared memory
    kernels = bind_cuda(globals(), cuda_api, dtype)
    zero = dtype.type(0)
    one = dtype.type(1)
    epsilon = dtype.type(COSINE_EPSILON)
    scalar = kernels.scalar
    vector = kernels.array(1)
    matrix = kernels.array(2)
    sums_of = kernels.device(row_sums)
    terms_of = kernels.device(cosine_terms)
    write_gradients = kernels.device(write_cosine_gradients)
    gemms = {
        (transpose_a, transpose_b): batched_gemm_launcher(cuda_api, dtype, transpose_a, transpose_b)
        for transpose_a in (False, True)
        for transpose_b in (False, True)
    }

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

    reduce_row = kernels.device(block_row_sums)

    @kernels.jit(matrix, matrix, matrix)
    def cosine_forward_kernel(a, b, out):
        partial = cuda.shared.array((3, ROW_THREADS), scalar)
        sums = reduce_row(a, b, partial)
        if cuda.threadIdx.x == 0:
            out[cuda.blockIdx.x, 0] = terms_of(sums[0], sums[1], sums[2], epsilon, zero, one)[0]

    @kernels.jit(matrix, matrix, vector)
    def row_dots_kernel(a, b, out):
        partial = cuda.shared.array((3, ROW_THREADS), scalar)
        sums = reduce_row(a, b, partial)
        if cuda.threadIdx.x == 0:
            out[cuda.blockIdx.x] = sums[0]

    @kernels.jit(matrix, matrix, matrix, matrix, matrix)
    def cosine_backward_kernel(a, b, grad_out, grad_a, grad_b):
        partial = cuda.shared.array((3, ROW_THREADS), scalar)
        sums = reduce_row(a, b, partial)
        row = cuda.blockIdx.x
        terms = terms_of(sums[0], sums[1], sums[2], epsilon, zero, one)
        write_gradients(
            a, b, row, cuda.threadIdx.x, ROW_THREADS, grad_out[row, 0], terms, grad_a, grad_b
        )

    def batched_matmul(a: Any, b: Any, out: Any, transpose_a: bool, transpose_b: bool) -> None:
        if out.size == 0:  # a grid with no blocks cannot be launched
            return
        if is_vector_product(out):  # a block per sample, not a 64 x 64 tile per 1 x 1 result
            row_dots_kernel[out.shape[0], ROW_THREADS](
                merge_last_axes(a), merge_last_axes(b), flat(out)
            )
            return
        gemms[bool(transpose_a), bool(transpose_b)](a, b, out)

    def cosine_forward(a: Any, b: Any, out: Any) -> None:
        if a.shape[0] > 0:
            cosine_forward_kernel[a.shape[0], ROW_THREADS](a, b, out)

    def cosine_backward(a: Any, b: Any, grad_out: Any, grad_a: Any, grad_b: Any) -> None:
        if a.shape[0] > 0:
            cosine_backward_kernel[a.shape[0], ROW_THREADS](a, b, grad_out, grad_a, grad_b)

    return {
        **index_operations(dtype, kernels),
        "batched_matmul": batched_matmul,
        "cosine_forward": cosine_forward,
        "cosine_backward": cosine_backward,
    }


class MergeKernels(Protocol):
    """The merge family's operations, the same on both devices (module doc)."""

    def multiply_into(self, x: DeviceArray, out: DeviceArray) -> None: ...

    def multiply_two(self, a: DeviceArray, b: DeviceArray, out: DeviceArray) -> None: ...

    def scale_into(self, x: DeviceArray, alpha: float, out: DeviceArray) -> None: ...

    def concat_forward_part(self, x: DeviceArray, out: DeviceArray, offset: int) -> None: ...

    def concat_backward_part(
        self, grad_out: DeviceArray, offset: int, grad_x: DeviceArray
    ) -> None: ...

    def batched_matmul(
        self, a: DeviceArray, b: DeviceArray, out: DeviceArray, transpose_a: bool, transpose_b: bool
    ) -> None: ...

    def cosine_forward(self, a: DeviceArray, b: DeviceArray, out: DeviceArray) -> None: ...

    def cosine_backward(
        self,
        a: DeviceArray,
        b: DeviceArray,
        grad_out: DeviceArray,
        grad_a: DeviceArray,
        grad_b: DeviceArray,
    ) -> None: ...
