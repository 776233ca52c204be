"""Matrix products: BLAS (:mod:`numlayers.kernels.blas`) on the CPU, a tiled GEMM of ours on CUDA.

Operations (both devices, ``out`` is overwritten):

- ``matmul(a, b, bias, out)``: ``out = a @ b + bias`` (``bias`` may have length 0)
- ``matmul_transpose_a(a, b, out)``: ``out = a.T @ b``
- ``matmul_transpose_b(a, b, out)``: ``out = a @ b.T``

The CUDA kernel is register blocked. A block computes one ``rows x cols`` tile of
``out`` (a :class:`Tiling`); its threads stage ``depth``-deep slices of both operands in
shared memory and each thread accumulates a ``per_thread_m x per_thread_n`` tile of
outputs in registers, reading runs of 4 consecutive rows (columns) of each slice, so
the shared-memory reads are wide and free of bank conflicts. The slices are double
buffered: the next slice's global loads are in flight (in registers) while the
current one is multiplied, and one barrier per slice suffices. Transposes are
compile-time constants of separate kernels, so the loads are specialised, not
branched. The launcher picks the tiling by the shape of ``out``
(:func:`pick_tiling`): the widest one that still gives the GPU :data:`FULL_GRID`
blocks, so a 4096 x 4096 product runs 128 x 128 tiles of 8 x 8 per thread and a
smaller layer's product 64 x 64 tiles of 4 x 4, which keep more of the GPU busy.

The tile product is pluggable (:func:`make_tile_product`): its tile loaders take an
``element`` function, so an operand need not be a stored matrix, and its ``store``
decides where each result goes. The convolutions of
:mod:`numlayers.kernels.convolutional` are this product with loaders that compute
patch elements from the image (implicit GEMM) and stores that add the bias per filter
or accumulate split-K slices atomically; they use :data:`DEFAULT_TILING` (a loader and
its product must be made with the same tiling).

A product may end with an elementwise activation (:func:`gemm_launcher`'s ``activated``,
what a Dense layer's forward pass runs): each result is stored, and its activation
(:func:`~numlayers.kernels.activations.apply_activation`, chosen by a run-time code)
stored beside it, so the layer's forward pass is one launch, not a product and an
activation kernel.

The same kernel multiplies batches of matrices (:func:`batched_gemm_launcher`, for the
'dot' merge of :mod:`numlayers.kernels.merges`): on 3-D operands the grid's z axis
walks the batch. The tiled GEMM is hand-written (``cuda`` bound by :func:`bind_cuda`),
not a toolkit index loop: its threads cooperate through shared memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numba
import numpy as np

from numlayers.devices import refuse_in_capture
from numlayers.kernels.activations import apply_activation, constants_for
from numlayers.kernels.blas import product
from numlayers.kernels.cublas import goes_through_cublas, large_product_launcher
from numlayers.kernels.toolkit import (
    SIMULATOR,
    CudaKernels,
    DeviceArray,
    bind_cuda,
    empty_vector,
    launch_size,
)

#: ``numba.cuda``, bound by :func:`bind_cuda` (kernels must see it as a module global)
cuda: Any = None

#: consecutive rows (columns) of a slice one thread reads: four float32 make one
#: 16-byte shared-memory load
RUN = 4
#: extra elements at the end of each row of a shared slice: loaders that walk the depth
#: write a slice's column, and a row length that is a multiple of 32 banks would put
#: all of those writes in one bank (4 keeps the rows 16-byte aligned)
SHARED_PAD = 4
#: alignment of the shared slices in bytes, so runs load as one wide access (the
#: simulator refuses the argument)
SHARED_ALIGNMENT = None if SIMULATOR else 16
#: at most this much static shared memory per block (CUDA's limit without opting in)
MAX_SHARED_BYTES = 48 * 1024


@dataclass(frozen=True)
class Tiling:
    """How a GEMM block covers ``out``: a ``rows x cols`` tile, staged ``depth`` deep, by
    ``threads_x x threads_y`` threads (x along the columns), each accumulating
    ``per_thread_m x per_thread_n`` outputs. Its kernels are compiled to let an SM hold
    ``blocks_per_sm`` blocks at once (a launch bound: the compiler keeps the registers
    within that, spilling if it must)."""

    rows: int
    cols: int
    depth: int
    threads_x: int
    threads_y: int
    blocks_per_sm: int = 1

    def __post_init__(self) -> None:
        threads = self.threads_x * self.threads_y
        if self.rows % self.threads_y or self.cols % self.threads_x:
            raise ValueError(f"{self}: the tile must split evenly over the threads")
        if (self.rows * self.depth) % threads or (self.cols * self.depth) % threads:
            raise ValueError(f"{self}: each thread must load as many elements as the others")
        if self.depth % 2:
            raise ValueError(f"{self}: the product takes the depth two slices at a time")
        if self.shared_bytes(4) > MAX_SHARED_BYTES:
            raise ValueError(f"{self}: more than {MAX_SHARED_BYTES} bytes of shared memory")

    @property
    def per_thread_m(self) -> int:
        return self.rows // self.threads_y

    @property
    def per_thread_n(self) -> int:
        return self.cols // self.threads_x

    @property
    def block_threads(self) -> int:
        return self.threads_x * self.threads_y

    def jit(self, kernels: CudaKernels, *argtypes: Any) -> Callable[[Callable[..., None]], Any]:
        """:meth:`CudaKernels.jit <numlayers.kernels.toolkit.CudaKernels.jit>` for a kernel
        of this tiling: bound to its block and to :attr:`blocks_per_sm` blocks an SM."""
        return kernels.jit(*argtypes, threads=self.block_threads, blocks_per_sm=self.blocks_per_sm)

    @property
    def threads(self) -> tuple[int, int]:
        """The block's shape, ``(x, y)``."""
        return self.threads_x, self.threads_y

    @property
    def a_loads(self) -> int:
        """Elements of ``op(a)``'s slice each thread loads."""
        return self.rows * self.depth // self.block_threads

    @property
    def b_loads(self) -> int:
        return self.cols * self.depth // self.block_threads

    def shared_bytes(self, itemsize: int) -> int:
        """Static shared memory of a block: both operands' slices, twice (the tiling
        refuses more than :data:`MAX_SHARED_BYTES` in float32)."""
        return 2 * self.depth * (self.rows + self.cols + 2 * SHARED_PAD) * itemsize

    def blocks(self, rows: int, cols: int) -> tuple[int, int]:
        """The tiles covering a ``rows x cols`` product, as a grid's ``(x, y)``."""
        return (cols + self.cols - 1) // self.cols, (rows + self.rows - 1) // self.rows


#: 128 x 128 tiles 16 deep, 8 x 8 outputs per thread: large float32 products. On an
#: H200 at 4096 it ran 23.8 TFLOP/s (cuBLAS 50.7, the 64 x 64 tiling 17.9, the earlier
#: 64 x 64 kernel 13.5); 8 deep was 5% slower, 128 x 64 tiles 8%. Those were one block
#: per SM (222 to 254 registers); its kernels now take 122 to 128, and two blocks of it
#: fit an SM (64 K registers, 2 x 34 KB of shared memory in float32; too much in float64).
WIDE_TILING = Tiling(
    launch_size(128, 8), launch_size(128, 8), launch_size(16, 2), launch_size(16, 2),
    launch_size(16, 2), blocks_per_sm=2,
)  # fmt: skip
#: 64 x 64 tiles, 4 x 4 per thread: products too small to give the wide tiling a full
#: grid, the convolutions, and float64
DEFAULT_TILING = Tiling(
    launch_size(64, 4), launch_size(64, 4), launch_size(16, 2), launch_size(16, 2),
    launch_size(16, 2),
)  # fmt: skip
#: the tilings a plain GEMM picks from (:func:`pick_tiling`), widest first, per dtype
#: (each within :data:`MAX_SHARED_BYTES` in its dtype). On an H200, 1024 x 1024 x 1024
#: ran at 15 to 16 TFLOP/s on 64 x 64 tiles (256 blocks), 12 on 128 x 128 (64). (Narrower
#: tiles than 64 x 64 would not make a small product faster: its time is the chain of
#: depth slices each block walks, the same for any tile, plus the launch.)
GEMM_TILINGS = {
    np.dtype(np.float32): (WIDE_TILING, DEFAULT_TILING),
    np.dtype(np.float64): (DEFAULT_TILING,),
}
#: blocks that keep the GPU busy: one per SM of an H100 or H200 (132)
FULL_GRID = launch_size(132, 4)

# the default tiling under the names the convolutions use
TILE_M = DEFAULT_TILING.rows
TILE_N = DEFAULT_TILING.cols
TILE_K = DEFAULT_TILING.depth
#: threads of a GEMM block of the default tiling (x along the columns, y along the rows)
GEMM_THREADS = DEFAULT_TILING.threads
#: the most blocks a CUDA grid may have along z; larger batches are walked in strides
MAX_GRID_Z = 65535


def pick_tiling(rows: int, cols: int, tilings: tuple[Tiling, ...]) -> Tiling:
    """The widest of ``tilings`` (widest first) that covers a ``rows x cols`` product with
    at least :data:`FULL_GRID` blocks, else the narrowest."""
    for tiling in tilings:
        across, down = tiling.blocks(rows, cols)
        if across * down >= FULL_GRID:
            return tiling
    return tilings[-1]


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
        # other branches before typing, so each kernel indexes its operands directly.
        # The loader calls it within the operand's bounds: unsigned indices spare each
        # load Numba's negative-index wraparound (ten instructions of about twenty)
        row, column = (k, e) if depth_major else (e, k)
        row, column = numba.uint64(row), numba.uint64(column)
        return operand[numba.uint64(z), row, column] if batched else operand[row, column]

    return element


def make_tile_loader(
    zero: Any,
    element: Any,
    depth_major: bool,
    tiling: Tiling = DEFAULT_TILING,
    stored: bool = False,
) -> Any:
    """Return ``load_tile``, which stages one operand's slices in shared memory through
    registers: each call puts the slice fetched by the previous call into a shared
    buffer, then fetches the slice at depth ``k0`` into registers, so that its global
    loads are in flight while the product multiplies the slice just put.

    ``element(operand, z, k, e, geometry)`` is the value at depth ``k`` and position ``e``
    of the operand (the matrix product's operand need not be stored: a convolution's
    patches are computed from its input). ``depth_major`` says which of ``k`` and ``e``
    walks the operand's memory contiguously: consecutive threads walk that one, so the
    loads coalesce. ``tiling`` must be the product's.

    ``stored`` says the operand is a stored, C-contiguous matrix (item ``z`` of a stack
    of them when 3-D), which ``element`` reads as :func:`matrix_element`'s does: a slice
    inside it is then read through its flat storage, each load's index the previous
    one's plus a step, instead of a row times the row length per load (six of the
    eight instructions a load took).
    """
    depth_step = tiling.depth
    block_threads = tiling.block_threads

    def load_tile(operand, z, k0, depth, start, extent, width, loads, thread, staged, tile,
                  geometry):  # fmt: skip
        """``tile[k, e] = staged[load]``, then ``staged[load] = element(operand, z, k0 + k,
        start + e)`` (zero past ``depth`` and ``extent``), for this thread's ``loads``
        positions ``(k, e)`` of a slice. A slice inside the operand, as all but the
        edges of a large product are, skips the per-element bounds checks."""
        inside = k0 + depth_step <= depth and start + width <= extent
        # Consecutive threads walk the minor index (``width`` long when depth-major,
        # else the slice's depth); load ``load`` is ``load`` blocks of threads past the
        # thread's first. Both indices are unsigned and counted on from the first
        # position, so a thread keeps two numbers, not a pair per load (it kept 100 more
        # registers in the 128 x 128 tiling, which ran one block per SM), and nothing is
        # divided per load.
        span = numba.uint64(width if depth_major else depth_step)
        minor, major = numba.uint64(thread) % span, numba.uint64(thread) // span
        minor_step = numba.uint64(block_threads) % span
        major_step = numba.uint64(block_threads) // span
        # a stored operand's flat index of the position: the major index walks its rows
        # (``row_length`` apart), the minor one its columns
        index = row_length = numba.uint64(0)
        if stored:
            row_length = numba.uint64(operand.shape[operand.ndim - 1])
            rows_before = numba.uint64(k0 if depth_major else start) + major
            if operand.ndim == 3:  # the rows of the items before item ``z``
                rows_before += numba.uint64(z) * numba.uint64(operand.shape[1])
            index = rows_before * row_length
            index += numba.uint64(start if depth_major else k0) + minor
        index_step = minor_step + major_step * row_length
        for load in range(loads):
            k, e = (major, minor) if depth_major else (minor, major)
            tile[k, e] = staged[load]
            at_depth, at = k0 + numba.int64(k), start + numba.int64(e)
            value = zero
            if stored and inside:
                value = operand.flat[index]
            elif inside or (at_depth < depth and at < extent):
                value = element(operand, z, at_depth, at, geometry)
            staged[load] = value
            minor += minor_step
            major += major_step
            if stored:
                index += index_step
            if minor >= span:  # only where a block of threads is not a whole number of runs
                minor -= span
                major += numba.uint64(1)
                if stored:  # (the index is at least the minor index: no wraparound)
                    index = index - span + row_length

    return load_tile


def make_tile_product(
    kernels: CudaKernels, load_a: Any, load_b: Any, store: Any, tiling: Tiling = DEFAULT_TILING
) -> Any:
    """Return the device function ``tile_product(a, b, bias, out, z, rows, cols, k_begin,
    k_end, geometry)``: this block's tile of ``op(a) @ op(b)`` over depths ``k_begin`` to
    ``k_end`` (``blockIdx.x`` walks the tiles along the columns, ``blockIdx.y`` along
    the rows), each value handed to ``store(out, bias, z, row, col, value, geometry)``.

    ``load_a`` and ``load_b`` are :func:`make_tile_loader`'s loaders (compiled as device
    functions, with the same ``tiling``) of ``op(a)`` (``rows`` by depth) and ``op(b)``
    (depth by ``cols``). Launch it with ``tiling.threads`` threads per block. The plain
    GEMM below and the implicit-GEMM convolutions of
    :mod:`numlayers.kernels.convolutional` are this one product with other loaders and
    stores.

    A thread owns the rows ``ty * run + r + q * threads_y * run`` (``r`` below ``run``,
    ``q`` below ``per_thread_m / run``), and likewise the columns: runs of consecutive
    rows, read from a slice as one wide load. The indices of the shared slices are
    unsigned, so Numba drops its negative-index checks, which cost more instructions
    than the loads they guard.
    """
    scalar = kernels.scalar
    zero = kernels.dtype.type(0)
    # the product reads ``cuda`` as a global of this module, whichever family builds it
    globals()["cuda"] = kernels.cuda
    tile_m, tile_n, tile_k = tiling.rows, tiling.cols, tiling.depth
    threads_x, threads_y = tiling.threads
    per_m, per_n = tiling.per_thread_m, tiling.per_thread_n
    run_m, run_n = min(RUN, per_m), min(RUN, per_n)
    stride_m, stride_n = threads_y * run_m, threads_x * run_n
    a_loads, b_loads = tiling.a_loads, tiling.b_loads
    a_shape = (2, tile_k, tile_m + SHARED_PAD)
    b_shape = (2, tile_k, tile_n + SHARED_PAD)
    alignment = SHARED_ALIGNMENT

    def tile_product(a, b, bias, out, z, rows, cols, k_begin, k_end, geometry):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        thread = ty * threads_x + tx
        row0 = cuda.blockIdx.y * tile_m
        col0 = cuda.blockIdx.x * tile_n
        first_row = ty * run_m  # of this thread's rows in the tile
        first_col = tx * run_n

        a_tiles = cuda.shared.array(a_shape, scalar, alignment)
        b_tiles = cuda.shared.array(b_shape, scalar, alignment)
        a_staged = cuda.local.array(a_loads, scalar)
        b_staged = cuda.local.array(b_loads, scalar)
        acc = cuda.local.array((per_m, per_n), scalar)
        a_values = cuda.local.array(per_m, scalar)
        b_values = cuda.local.array(per_n, scalar)
        for i in range(per_m):
            for j in range(per_n):
                acc[i, j] = zero
        for load in range(a_loads):
            a_staged[load] = zero
        for load in range(b_loads):
            b_staged[load] = zero

        # Step s puts slice s - 1 (fetched by step s - 1) into buffer s & 1, fetches
        # slice s and multiplies slice s - 1. The buffer a put overwrites was last read
        # two steps before, by threads that have all passed the barrier of the step
        # between, so one barrier per step suffices.
        for step in range((k_end - k_begin + tile_k - 1) // tile_k + 1):
            buffer = numba.uint64(step & 1)
            k0 = k_begin + step * tile_k
            load_a(a, z, k0, k_end, row0, rows, tile_m, a_loads, thread, a_staged,
                   a_tiles[buffer], geometry)  # fmt: skip
            load_b(b, z, k0, k_end, col0, cols, tile_n, b_loads, thread, b_staged,
                   b_tiles[buffer], geometry)  # fmt: skip
            cuda.syncthreads()
            if step > 0:
                # two depths an iteration: the compiler unrolls the inner pair, which
                # halves the loop's own instructions (a dozen per 64 FMAs)
                for depth_index in range(0, tile_k, 2):
                    for half in range(2):
                        k = numba.uint64(depth_index + half)
                        for i in range(per_m):
                            row = first_row + i % run_m + (i // run_m) * stride_m
                            a_values[i] = a_tiles[buffer, k, numba.uint64(row)]
                        for j in range(per_n):
                            col = first_col + j % run_n + (j // run_n) * stride_n
                            b_values[j] = b_tiles[buffer, k, numba.uint64(col)]
                        for i in range(per_m):
                            for j in range(per_n):
                                acc[i, j] += a_values[i] * b_values[j]
        # a caller's next product (the next item of a batch) puts into these buffers again
        cuda.syncthreads()

        for i in range(per_m):
            row = row0 + first_row + i % run_m + (i // run_m) * stride_m
            if row < rows:
                for j in range(per_n):
                    col = col0 + first_col + j % run_n + (j // run_n) * stride_n
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


def activation_store(out, bias, z, row, col, value, geometry):
    """``out[row, col] = value + bias[col]``, and ``activated[row, col]`` its activation,
    ``geometry`` being ``(activated, code, c)``: the activation epilogue."""
    activated, code, c = geometry
    if bias.shape[0] > 0:
        value += bias[col]
    out[row, col] = value
    activated[row, col] = apply_activation(code, value, c)


#: the plain GEMM's ``geometry`` argument: it has none
NO_GEOMETRY = (0,)


def matrix_tile_product(
    kernels: CudaKernels,
    transpose_a: bool,
    transpose_b: bool,
    batched_operands: bool,
    batched_out: bool,
    tiling: Tiling,
    epilogue: bool = False,
) -> Any:
    """:func:`make_tile_product` of stored matrices ``op(a) @ op(b)`` (3-D operands or
    output where batched: item ``z`` of the tile product's ``z``), with the
    :func:`activation_store` when ``epilogue``."""
    zero = kernels.dtype.type(0)

    def loader(depth_major: bool) -> Any:
        element = kernels.device(matrix_element(batched_operands, depth_major))
        return kernels.device(make_tile_loader(zero, element, depth_major, tiling, stored=True))

    store = kernels.device(activation_store if epilogue else matrix_store(batched_out))
    # a is (depth, rows) when transposed, b is (depth, cols) when not
    return make_tile_product(kernels, loader(transpose_a), loader(not transpose_b), store, tiling)


def make_gemm_kernel(
    kernels: CudaKernels,
    transpose_a: bool,
    transpose_b: bool,
    batched: bool = False,
    tiling: Tiling = DEFAULT_TILING,
) -> Any:
    """Return a tiled GEMM kernel ``out = op(a) @ op(b) + bias`` for fixed transposes,
    launched with ``tiling.blocks`` of ``out`` and ``tiling.threads``.

    With ``batched`` the operands are 3-D and ``out[z] = op(a[z]) @ op(b[z]) + bias`` for
    every ``z`` (in strides of ``gridDim.z``).
    """
    operand = kernels.array(3 if batched else 2)
    product_of_tiles = matrix_tile_product(
        kernels, transpose_a, transpose_b, batched, batched, tiling
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
    size = f"{tiling.rows}x{tiling.cols}x{tiling.depth}"
    gemm.__name__ = f"{'batched_' if batched else ''}gemm_{transposes}_{size}"
    return tiling.jit(kernels, operand, operand, kernels.array(1), operand)(gemm)


def make_activation_gemm_kernel(kernels: CudaKernels, tiling: Tiling = DEFAULT_TILING) -> Any:
    """Return the tiled kernel ``(a, b, bias, out, activated, code, c)``: ``out = a @ b +
    bias`` and ``activated`` its elementwise activation of ``code`` (``c`` the dtype's
    constants), launched as :func:`make_gemm_kernel`'s."""
    operand = kernels.array(2)
    product_of_tiles = matrix_tile_product(kernels, False, False, False, False, tiling, True)

    def gemm_activation(a, b, bias, out, activated, code, c):
        epilogue = (activated, code, c)
        product_of_tiles(a, b, bias, out, 0, out.shape[0], out.shape[1], 0, a.shape[1], epilogue)

    size = f"{tiling.rows}x{tiling.cols}x{tiling.depth}"
    gemm_activation.__name__ = f"gemm_activation_nn_{size}"
    constants = numba.typeof(constants_for(kernels.dtype))
    return tiling.jit(
        kernels, operand, operand, kernels.array(1), operand, operand, numba.types.int64,
        constants,
    )(gemm_activation)  # fmt: skip


def gemm_blocks(out: Any, tiling: Tiling = DEFAULT_TILING) -> tuple[int, int, int]:
    """The GEMM's grid: ``tiling``'s tiles of the last two axes of ``out`` by items of the
    batch (if any)."""
    batch, rows, cols = out.shape if out.ndim == 3 else (1, *out.shape)
    return (*tiling.blocks(rows, cols), min(batch, MAX_GRID_Z))


@functools.cache
def gemm_kernel(
    cuda_api: Any, dtype: np.dtype, transpose_a: bool, transpose_b: bool, tiling: Tiling
) -> Any:
    """Return ``launch(a, b, bias, out)``: the tiled GEMM over ``out`` with ``tiling``."""
    kernels = bind_cuda(globals(), cuda_api, dtype)
    kernel = make_gemm_kernel(kernels, transpose_a, transpose_b, tiling=tiling)

    def launch(a: Any, b: Any, bias: Any, out: Any) -> None:
        if out.size > 0:  # a grid with no blocks cannot be launched
            kernel[gemm_blocks(out, tiling), tiling.threads](a, b, bias, out)

    return launch


@functools.cache
def activation_gemm_kernel(cuda_api: Any, dtype: np.dtype, tiling: Tiling) -> Any:
    """Return ``launch(a, b, bias, out, activated, code)``: the tiled GEMM with the
    activation epilogue (:func:`make_activation_gemm_kernel`) over ``out``."""
    kernels = bind_cuda(globals(), cuda_api, dtype)
    kernel = make_activation_gemm_kernel(kernels, tiling)
    c = constants_for(dtype)

    def launch(a: Any, b: Any, bias: Any, out: Any, activated: Any, code: int) -> None:
        if out.size > 0:
            kernel[gemm_blocks(out, tiling), tiling.threads](a, b, bias, out, activated, code, c)

    return launch


#: the most slices a product's depth is cut into (:func:`depth_splits`)
MAX_SPLITS = launch_size(8, 4)
#: the least depth a slice walks, in tile depths: a shorter one spends its time loading.
#: Under the simulator a slice must be long, so that only the tests meant for it cut a
#: product (each simulated thread costs about 0.3 ms, and cutting the tests' tiny
#: products multiplied their threads by up to five)
MIN_SPLIT_STEPS = launch_size(4, 16)


def depth_splits(rows: int, cols: int, depth: int, tiling: Tiling = DEFAULT_TILING) -> int:
    """Into how many slices a ``rows x cols`` product of depth ``depth`` is cut (1: not
    cut). A product whose tiles are too few to fill the GPU (a layer of a small batch:
    256 x 1024 outputs are 64 tiles of 64 x 64 for 132 SMs) has each tile's depth walked
    by several blocks, so that about two blocks per SM run; each slice's partial sums go
    to a buffer, which the tile's last block adds up in slice order (the result does not
    depend on the order the blocks run in: :func:`make_split_gemm_kernel`)."""
    across, down = tiling.blocks(rows, cols)
    tiles = across * down
    if tiles >= FULL_GRID:
        return 1
    wanted = -(-2 * FULL_GRID // tiles)
    return max(1, min(wanted, depth // (MIN_SPLIT_STEPS * tiling.depth), MAX_SPLITS))


def make_split_gemm_kernel(
    kernels: CudaKernels, transpose_a: bool, transpose_b: bool, tiling: Tiling = DEFAULT_TILING
) -> Any:
    """Return a kernel ``(a, b, no_bias, bias, partial, out, arrivals, slice_depth,
    activated, code, c)``: block ``z`` of the grid writes ``op(a)[:, k] @ op(b)[k, :]``
    over the depths ``k`` of slice ``z`` (``slice_depth`` each) into ``partial[z]``; the
    last block of a tile to finish then adds that tile's slices up into ``out`` (plus
    ``bias``), and where ``activated`` is not empty, their activation of ``code`` into it.

    The sum runs in slice order whichever block does it, so the result does not depend
    on the order the blocks ran in. ``arrivals`` (one zeroed ``int32`` per tile) counts
    the tile's finished slices; the block that adds them sets it back to zero, ready for
    the next launch. One launch per product, where a second kernel adding the slices
    made the launch count of a step depend on the sizes of its products.
    """
    operand = kernels.array(2)
    product_of_tiles = matrix_tile_product(kernels, transpose_a, transpose_b, False, True, tiling)
    add_slices = kernels.device(sum_of_slices)
    tile_rows, tile_cols = tiling.rows, tiling.cols
    threads_x, threads_y = tiling.threads

    def gemm_slice(a, b, no_bias, bias, partial, out, arrivals, slice_depth, activated, code, c):
        depth = a.shape[0] if transpose_a else a.shape[1]
        z = cuda.blockIdx.z
        k_begin = z * slice_depth
        k_end = min(depth, k_begin + slice_depth)
        product_of_tiles(
            a, b, no_bias, partial, z, partial.shape[1], partial.shape[2], k_begin, k_end,
            NO_GEOMETRY,
        )  # fmt: skip
        # this block's partial sums reach global memory before its arrival is counted
        cuda.threadfence()
        cuda.syncthreads()
        tile = cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x
        last = cuda.shared.array(1, numba.int32)
        first_thread = cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0
        if first_thread:
            arrived = cuda.atomic.add(arrivals, tile, 1)
            last[0] = 1 if arrived == cuda.gridDim.z - 1 else 0
        cuda.syncthreads()
        if last[0] == 0:
            return
        row0 = cuda.blockIdx.y * tile_rows
        col0 = cuda.blockIdx.x * tile_cols
        for r in range(cuda.threadIdx.y, tile_rows, threads_y):
            for col in range(cuda.threadIdx.x, tile_cols, threads_x):
                if row0 + r < out.shape[0] and col0 + col < out.shape[1]:
                    add_slices(row0 + r, col0 + col, partial, bias, out, activated, code, c)
        if first_thread:
            arrivals[tile] = 0

    transposes = f"{'t' if transpose_a else 'n'}{'t' if transpose_b else 'n'}"
    gemm_slice.__name__ = f"gemm_slice_{transposes}_{tiling.rows}x{tiling.cols}x{tiling.depth}"
    vector = kernels.array(1)
    return tiling.jit(
        kernels,
        operand,
        operand,
        vector,
        vector,
        kernels.array(3),
        operand,
        kernels.array(1, np.int32),
        numba.types.int64,
        operand,
        numba.types.int64,
        numba.typeof(constants_for(kernels.dtype)),
    )(gemm_slice)


def sum_of_slices(row, col, partial, bias, out, activated, code, c):
    """``out[row, col]``: the slices' partial sums, plus ``bias[col]`` (``bias`` may be
    empty); and its activation of ``code`` into ``activated`` unless that is empty."""
    total = partial[0, row, col]
    for z in range(1, partial.shape[0]):
        total += partial[z, row, col]
    if bias.shape[0] > 0:
        total += bias[col]
    out[row, col] = total
    if activated.shape[0] > 0:
        activated[row, col] = apply_activation(code, total, c)


@functools.cache
def split_gemm_launcher(
    cuda_api: Any, dtype: np.dtype, transpose_a: bool, transpose_b: bool
) -> Any:
    """Return ``launch(a, b, bias, out, splits, activated=None, code=0)``: the product cut
    into ``splits`` depth slices (:func:`depth_splits`) and summed, in one launch
    (:func:`make_split_gemm_kernel`), with the activation epilogue where ``activated`` is
    given. The buffers of partial sums and the tiles' arrival counts are kept by shape
    (the launches of a stream run in order, so products share them; each launch leaves
    the counts at zero)."""
    kernels = bind_cuda(globals(), cuda_api, dtype)
    tiling = DEFAULT_TILING
    kernel = make_split_gemm_kernel(kernels, transpose_a, transpose_b, tiling)
    no_bias = empty_vector(cuda_api, dtype)
    no_activation = empty_vector(cuda_api, dtype, ndim=2)
    c = constants_for(dtype)
    partials: dict[tuple[int, ...], Any] = {}
    arrivals: dict[tuple[int, int], Any] = {}

    def launch(
        a: Any, b: Any, bias: Any, out: Any, splits: int, activated: Any = None, code: int = 0
    ) -> None:
        rows, cols = out.shape
        depth = a.shape[0] if transpose_a else a.shape[1]
        slice_depth = -(-depth // splits)
        splits = -(-depth // slice_depth)  # none left empty
        shape = (splits, rows, cols)
        partial = partials.get(shape)
        if partial is None:
            partial = partials[shape] = cuda_api.device_array(shape, dtype=dtype)
        tiles = tiling.blocks(rows, cols)
        counts = arrivals.get(tiles)
        if counts is None:
            refuse_in_capture("a new GEMM shape's first allocation")
            counts = arrivals[tiles] = cuda_api.to_device(np.zeros(tiles[0] * tiles[1], np.int32))
        activated = no_activation() if activated is None else activated
        kernel[(*tiles, splits), tiling.threads](
            a, b, no_bias(), bias, partial, out, counts, slice_depth, activated, code, c
        )

    return launch


def bias_row(row, col, bias, out):
    out[row, col] = bias[col]


@functools.cache
def bias_broadcaster(cuda_api: Any, dtype: np.dtype) -> Any:
    """Return ``fill(bias, out)``: every row of the 2-D ``out`` set to ``bias``."""
    kernels = bind_cuda(globals(), cuda_api, dtype)
    loop = kernels.index_loop(bias_row, (kernels.array(1), kernels.array(2)), dims=2)

    def fill(bias: Any, out: Any) -> None:
        loop(out.shape[0], out.shape[1], bias, out)

    return fill


@functools.cache
def gemm_launcher(cuda_api: Any, dtype: np.dtype, transpose_a: bool, transpose_b: bool) -> Any:
    """Return ``launch(a, b, bias, out, activated=None, code=0) -> bool`` running the tiled
    GEMM over ``out``, with the tiling :func:`pick_tiling` picks for its shape, its depth
    cut into slices when its tiles cannot fill the GPU (:func:`depth_splits`).

    With ``activated`` (no transposes only), ``activated`` also gets ``out``'s elementwise
    activation of ``code`` (:data:`~numlayers.kernels.activations.ELEMENTWISE_CODES`), in
    the same launch. A large product goes through cuBLAS where it is there; with
    ``activated`` that one returns False, with nothing done, and the caller multiplies and
    activates apart. Cached, so every family that multiplies matrices shares the
    compiled kernels.
    """
    tilings = GEMM_TILINGS[np.dtype(dtype)]
    launchers = {
        tiling: gemm_kernel(cuda_api, dtype, transpose_a, transpose_b, tiling) for tiling in tilings
    }
    # the activation epilogue's kernels (built here, so that the PTX check sees them)
    activating = (
        {}
        if transpose_a or transpose_b
        else {tiling: activation_gemm_kernel(cuda_api, dtype, tiling) for tiling in tilings}
    )
    split = split_gemm_launcher(cuda_api, dtype, transpose_a, transpose_b)
    large = large_product_launcher(
        cuda_api, transpose_a, transpose_b, bias_broadcaster(cuda_api, dtype)
    )

    def launch(a: Any, b: Any, bias: Any, out: Any, activated: Any = None, code: int = 0) -> bool:
        rows, cols = out.shape
        depth = a.shape[0] if transpose_a else a.shape[1]
        if activated is None:
            if large(a, b, bias, out):  # through cuBLAS (nvmath-python installed, on a GPU)
                return True
        elif goes_through_cublas(cuda_api, rows, cols, depth):
            return False
        splits = depth_splits(rows, cols, depth) if out.size > 0 else 1
        tiling = pick_tiling(rows, cols, tilings)
        if splits > 1:
            split(a, b, bias, out, splits, activated, code)
        elif activated is None:
            launchers[tiling](a, b, bias, out)
        else:
            activating[tiling](a, b, bias, out, activated, code)
        return True

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
