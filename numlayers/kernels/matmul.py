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

The tile product is pluggable (:func:`make_tile_product`): its tile loaders take an
``element`` function, so an operand need not be a stored matrix, and its ``store``
decides where each result goes. The convolutions of
:mod:`numlayers.kernels.convolutional` are this product with loaders that compute
patch elements from the image (implicit GEMM) and stores that add the bias per filter
or accumulate split-K slices atomically.

The same kernel multiplies batches of matrices (:func:`batched_gemm_launcher`, for the
'dot' merge of :mod:`numlayers.kernels.merges`): on 3-D operands the grid's z axis
walks the batch. The tiled GEMM is hand-written (``cuda`` bound by :func:`bind_cuda`),
not a toolkit index loop: its threads cooperate through shared memory.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import numpy as np

from numlayers.kernels.blas import product
from numlayers.kernels.toolkit import (
    CudaKernels,
    DeviceArray,
    bind_cuda,
    empty_vector,
    launch_size,
)

#: ``numba.cuda``, bound by :func:`bind_cuda` (kernels must see it as a module global)
cuda: Any = None

TILE_M = launch_size(64, 4)
TILE_N = launch_size(64, 4)
TILE_K = launch_size(16, 2)
THREADS_X = launch_size(16, 2)  # threads along the columns of a tile
THREADS_Y = launch_size(16, 2)  # threads along the rows of a tile
PER_THREAD_M = TILE_M // THREADS_Y
PER_THREAD_N = TILE_N // THREADS_X
BLOCK_THREADS = THREADS_X * THREADS_Y
A_LOADS = TILE_M * TILE_K // BLOCK_THREADS
B_LOADS = TILE_N * TILE_K // BLOCK_THREADS
#: the most blocks a CUDA grid may have along z; larger batches are walked in strides
MAX_GRID_Z = 65535


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


def matrix_element(batched: bool, depth_major: bool) -> Any:
    """Return ``element(operand, z, k, e, geometry)``: ``op(operand)[k, e]`` of a stored
    matrix (of batch item ``z`` when ``batched``), ``op`` the identity when
    ``depth_major``, else the transpose (``geometry`` unused)."""

    def element(operand, z, k, e, geometry):
        # ``batched`` and ``depth_major`` are constants of the closure: Numba drops the
        # other branches before typing, so each kernel indexes its operands directly
        row, column = (k, e) if depth_major else (e, k)
        return operand[z, row, column] if batched else operand[row, column]

    return element


def make_tile_loader(zero: Any, element: Any, depth_major: bool) -> Any:
    """Return ``load_tile``, which stages one operand's slice in shared memory.

    ``element(operand, z, k, e, geometry)`` is the value at depth ``k`` and position ``e``
    of the operand (the matrix product's operand need not be stored: a convolution's
    patches are computed from its input). ``depth_major`` says which of ``k`` and ``e``
    walks the operand's memory contiguously: consecutive threads walk that one, so the
    loads coalesce.
    """

    def load_tile(operand, z, k0, depth, start, extent, width, loads, thread, tile, geometry):
        """``tile[k, e] = element(operand, z, k0 + k, start + e)``, zero past ``depth``
        and ``extent``."""
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
                value = element(operand, z, k0 + k, start + e, geometry)
            tile[k, e] = value

    return load_tile


def make_tile_product(kernels: CudaKernels, load_a: Any, load_b: Any, store: Any) -> Any:
    """Return the device function ``tile_product(a, b, bias, out, z, rows, cols, k_begin,
    k_end, geometry)``: this block's 64 x 64 tile of ``op(a) @ op(b)`` over depths
    ``k_begin`` to ``k_end``, each value handed to ``store(out, bias, z, row, col, value,
    geometry)``.

    ``load_a`` and ``load_b`` are :func:`make_tile_loader`'s loaders (compiled as device
    functions) of ``op(a)`` (``rows`` by depth) and ``op(b)`` (depth by ``cols``). The
    plain GEMM below and the implicit-GEMM convolutions of
    :mod:`numlayers.kernels.convolutional` are this one product with other loaders and
    stores.
    """
    scalar = kernels.scalar
    zero = kernels.dtype.type(0)
    # the product reads ``cuda`` as a global of this module, whichever family builds it
    globals()["cuda"] = kernels.cuda

    def tile_product(a, b, bias, out, z, rows, cols, k_begin, k_end, geometry):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        thread = ty * THREADS_X + tx
        row0 = cuda.blockIdx.y * TILE_M
        col0 = cuda.blockIdx.x * TILE_N

        a_tile = cuda.shared.array((TILE_K, TILE_M), scalar)
        b_tile = cuda.shared.array((TILE_K, TILE_N), scalar)
        acc = cuda.local.array((PER_THREAD_M, PER_THREAD_N), scalar)
        a_values = cuda.local.array(PER_THREAD_M, scalar)
        b_values = cuda.local.array(PER_THREAD_N, scalar)
        for i in range(PER_THREAD_M):
            for j in range(PER_THREAD_N):
                acc[i, j] = zero

        for k0 in range(k_begin, k_end, TILE_K):
            load_a(a, z, k0, k_end, row0, rows, TILE_M, A_LOADS, thread, a_tile, geometry)
            load_b(b, z, k0, k_end, col0, cols, TILE_N, B_LOADS, thread, b_tile, geometry)
            cuda.syncthreads()
            for k in range(TILE_K):
                for i in range(PER_THREAD_M):
                    a_values[i] = a_tile[k, ty + i * THREADS_Y]
                for j in range(PER_THREAD_N):
                    b_values[j] = b_tile[k, tx + j * THREADS_X]
                for i in range(PER_THREAD_M):
                    for j in range(PER_THREAD_N):
                        acc[i, j] += a_values[i] * b_values[j]
            # the next slice's (or item's) loads must wait for every thread's reads
            cuda.syncthreads()

        for i in range(PER_THREAD_M):
            row = row0 + ty + i * THREADS_Y
            if row < rows:
                for j in range(PER_THREAD_N):
                    col = col0 + tx + j * THREADS_X
                    if col < cols:
                        store(out, bias, z, row, col, acc[i, j], geometry)

    return kernels.device(tile_product)


def matrix_store(batched: bool) -> Any:
    """Return ``store``: ``out[(z,) row, col] = value + bias[col]`` (``bias`` may be empty)."""

    def store(out, bias, z, row, col, value, geometry):
        if bias.shape[0] > 0:
            value += bias[col]
        if batched:
            out[z, row, col] = value
        else:
            out[row, col] = value

    return store


#: the plain GEMM's ``geometry`` argument: it has none
NO_GEOMETRY = (0,)


def make_gemm_kernel(
    kernels: CudaKernels, transpose_a: bool, transpose_b: bool, batched: bool = False
) -> Any:
    """Return a tiled GEMM kernel ``out = op(a) @ op(b) + bias`` for fixed transposes.

    With ``batched`` the operands are 3-D and ``out[z] = op(a[z]) @ op(b[z]) + bias`` for
    every ``z`` (in strides of ``gridDim.z``).
    """
    zero = kernels.dtype.type(0)
    operand = kernels.array(3 if batched else 2)
    # a is (depth, rows) when transposed, b is (depth, cols) when not
    load_a = kernels.device(
        make_tile_loader(zero, kernels.device(matrix_element(batched, transpose_a)), transpose_a)
    )
    b_depth_major = not transpose_b
    load_b = kernels.device(
        make_tile_loader(
            zero, kernels.device(matrix_element(batched, b_depth_major)), b_depth_major
        )
    )
    product_of_tiles = make_tile_product(
        kernels, load_a, load_b, kernels.device(matrix_store(batched))
    )
    axis = 1 if batched else 0  # the first axis of a matrix

    def gemm(a, b, bias, out):
        rows = out.shape[axis]
        cols = out.shape[axis + 1]
        depth = a.shape[axis] if transpose_a else a.shape[axis + 1]
        # A matrix's kernel has no loop over items: around the whole product, even one
        # that runs once slowed a 1024 x 1024 x 1024 GEMM by a third (H200, measured).
        if batched:
            for z in range(cuda.blockIdx.z, out.shape[0], cuda.gridDim.z):
                product_of_tiles(a, b, bias, out, z, rows, cols, 0, depth, NO_GEOMETRY)
        else:
            product_of_tiles(a, b, bias, out, 0, rows, cols, 0, depth, NO_GEOMETRY)

    transposes = f"{'t' if transpose_a else 'n'}{'t' if transpose_b else 'n'}"
    gemm.__name__ = f"{'batched_' if batched else ''}gemm_{transposes}"
    return kernels.jit(operand, operand, kernels.array(1), operand)(gemm)


#: threads of a GEMM block (x along the columns of a tile, y along its rows)
GEMM_THREADS = (THREADS_X, THREADS_Y)


def gemm_blocks(out: Any) -> tuple[int, int, int]:
    """The GEMM's grid: tiles of the last two axes of ``out`` by items of the batch (if any)."""
    batch, rows, cols = out.shape if out.ndim == 3 else (1, *out.shape)
    return (cols + TILE_N - 1) // TILE_N, (rows + TILE_M - 1) // TILE_M, min(batch, MAX_GRID_Z)


@functools.cache
def gemm_launcher(cuda_api: Any, dtype: np.dtype, transpose_a: bool, transpose_b: bool) -> Any:
    """Return ``launch(a, b, bias, out)`` running the tiled GEMM over ``out``.

    Cached, so every family that multiplies matrices shares one compiled kernel.
    """
    kernel = make_gemm_kernel(bind_cuda(globals(), cuda_api, dtype), transpose_a, transpose_b)

    def launch(a: Any, b: Any, bias: Any, out: Any) -> None:
        kernel[gemm_blocks(out), GEMM_THREADS](a, b, bias, out)

    return launch


@functools.cache
def batched_gemm_launcher(
    cuda_api: Any, dtype: np.dtype, transpose_a: bool, transpose_b: bool
) -> Any:
    """Return ``launch(a, b, out)``: ``out[z] = op(a[z]) @ op(b[z])`` for 3-D arrays."""
    kernels = bind_cuda(globals(), cuda_api, dtype)
    kernel = make_gemm_kernel(kernels, transpose_a, transpose_b, batched=True)
    no_bias = empty_vector(cuda_api, dtype)

    def launch(a: Any, b: Any, out: Any) -> None:
        if out.size > 0:  # a grid with no blocks cannot be launched
            kernel[gemm_blocks(out), GEMM_THREADS](a, b, no_bias(), out)

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


class MatmulKernels(Protocol):
    """The matrix-product family's operations, the same on both devices (module doc)."""

    def matmul(
        self, a: DeviceArray, b: DeviceArray, bias: DeviceArray, out: DeviceArray
    ) -> None: ...

    def matmul_transpose_a(self, a: DeviceArray, b: DeviceArray, out: DeviceArray) -> None: ...

    def matmul_transpose_b(self, a: DeviceArray, b: DeviceArray, out: DeviceArray) -> None: ...
