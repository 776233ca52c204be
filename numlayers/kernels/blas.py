"""BLAS matrix products called from ``@njit`` code, split over Numba's threads.

The CPU kernels multiply matrices through :func:`gemm`, a BLAS ``sgemm``/``dgemm``
call on row-major views of any row stride, with transposes and an
``out = alpha * product + beta * out`` update, so a kernel can multiply column
blocks and accumulate without copies. :func:`product` cuts ``out`` into blocks, one
BLAS call each, and runs the blocks on Numba's threads.

Which BLAS (:data:`BLAS_NAME`): Intel MKL, sequential, where the ``mkl`` package is
installed (a dependency on x86-64); otherwise scipy's (the OpenBLAS behind Numba's
own ``np.dot``), set to one thread. ``NUMLAYERS_BLAS=scipy`` picks scipy's even
with MKL present. Products of a 784-1024-1024-10 training step ran 10 to 30 %
faster through MKL than through OpenBLAS, split the same way, on 2 AVX-512 cores.

One thread pool, not two: numlayers splits its products over Numba's threads and
the BLAS runs single-threaded inside them. With both pools, BLAS worker threads kept
spinning on the cores after each product, and a Numba loop that followed (a ReLU,
an optimizer update) ran several times slower than alone (a 256 x 1024 ReLU: 17 us
alone, 330 us after a product, on 2 cores).

Block sizes (:func:`block_count`): products of up to :data:`SERIAL_WORK`
multiply-adds run in one call on the calling thread; medium ones are cut into blocks
of at most 64 x 64 x 64 (:data:`SMALL_BLOCK_WORK`), which both BLAS run through their
small-matrix code (``32 x 128 x 64`` at 150 GFLOP/s on one core, where one
``32 x 128 x 512`` call through OpenBLAS ran at 85); large ones into one block per
thread.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import llvmlite.binding
import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import get_cython_function_address

#: multiply-adds of a block that takes the BLAS's small-matrix path (64 ** 3)
SMALL_BLOCK_WORK = 1 << 18
#: products of up to this many multiply-adds are cut into small blocks
SMALL_PRODUCT_WORK = 1 << 23
#: products of up to this many multiply-adds run in one call on the calling thread:
#: waking Numba's sleeping threads from Python cost about 20 us, the time one core
#: takes for about 2 million multiply-adds
SERIAL_WORK = 1 << 21
#: Numba's thread count, a constant of the compiled (and cached) code: calling
#: ``numba.get_num_threads()`` inside it would keep Numba from caching it
THREADS: int = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
#: MKL's ``MKL_Set_Threading_Layer`` value for its sequential library
MKL_THREADING_SEQUENTIAL = 1


#: a digest of this file, in the cached names of functions that call into it: Numba's
#: cache notices edits only to the file of the function it caches
def source_digest(*files: str) -> str:
    """A short digest of the bytes of ``files``, for cached names that must change when
    code compiled into them (from other files) changes."""
    return hashlib.sha256(b"".join(Path(file).read_bytes() for file in files)).hexdigest()[:16]


DIGEST = source_digest(__file__)


def njit_calling_blas(function: Any) -> Any:
    """``njit(cache=True)`` for a function that calls this module (cached under a name
    that changes with this file)."""
    function.__qualname__ = f"{function.__qualname__}_{DIGEST}"
    return njit(cache=True)(function)


def _mkl_runtime() -> ctypes.CDLL | None:
    """MKL's single dynamic library from the ``mkl`` package, set sequential; None
    where it is not installed (or ``NUMLAYERS_BLAS=scipy``)."""
    if os.environ.get("NUMLAYERS_BLAS", "").lower() == "scipy":
        return None
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        name = Path(str(file)).name
        if name.startswith(("libmkl_rt.so", "mkl_rt.")) or name == "libmkl_rt.dylib":
            try:
                runtime = ctypes.CDLL(str(file.locate()))
            except OSError:
                continue
            runtime.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
            runtime.MKL_Set_Threading_Layer(MKL_THREADING_SEQUENTIAL)
            return runtime
    return None


def _bind_blas() -> str:
    """Make ``numlayers_sgemm``/``numlayers_dgemm`` symbols that Numba links against
    when it loads compiled code (from memory or its cache: a ctypes pointer would not
    cache), and return the BLAS's name."""
    runtime = _mkl_runtime()
    for routine in ("sgemm", "dgemm"):
        if runtime is not None:
            address = ctypes.cast(getattr(runtime, f"{routine}_"), ctypes.c_void_p).value
        else:
            address = get_cython_function_address("scipy.linalg.cython_blas", routine)
        llvmlite.binding.add_symbol(f"numlayers_{routine}", address)
    return "mkl" if runtime is not None else "scipy"


#: the BLAS behind :func:`gemm`: ``"mkl"`` or ``"scipy"``
BLAS_NAME = _bind_blas()
_GEMM_SIGNATURE = types.void(*([types.voidptr] * 13))
_sgemm: Any = types.ExternalFunction("numlayers_sgemm", _GEMM_SIGNATURE)
_dgemm: Any = types.ExternalFunction("numlayers_dgemm", _GEMM_SIGNATURE)

_NO_TRANSPOSE = ord("N")
_TRANSPOSE = ord("T")


@functools.cache
def use_one_blas_thread() -> None:
    """Run scipy's BLAS on one thread when :func:`gemm` calls it (see the module doc);
    done when this module is imported.

    NumPy's own BLAS is a separate library and is not touched unless scipy shares it
    (a system BLAS). ``NUMLAYERS_BLAS_THREADS=keep`` leaves the thread count alone.
    """
    if BLAS_NAME != "scipy" or os.environ.get("NUMLAYERS_BLAS_THREADS", "") == "keep":
        return
    import scipy
    from threadpoolctl import ThreadpoolController

    def installed_with(package: ModuleType) -> str:
        site = os.path.dirname(os.path.dirname(os.path.abspath(str(package.__file__))))
        return os.path.join(site, package.__name__)

    libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    scipy_prefix = installed_with(scipy)  # scipy/ and a wheel's scipy.libs/
    numpy_prefix = installed_with(np)
    controllers = [c for c in libraries if c.filepath.startswith(scipy_prefix)] or [
        c
        for c in libraries
        if not c.filepath.startswith(numpy_prefix)  # a shared system BLAS
    ]
    for controller in controllers:
        controller.set_num_threads(1)


use_one_blas_thread()  # before any kernel calls the BLAS


@njit(cache=True)
def _leading_dimension(x):
    """BLAS's leading dimension of a row-major view (its row stride, in elements)."""
    rows, columns = x.shape
    if columns > 1 and x.strides[1] != x.itemsize:
        raise ValueError("gemm: the rows of every operand must be contiguous")
    if rows <= 1:
        return max(columns, 1)
    return max(x.strides[0] // x.itemsize, columns, 1)


@njit(cache=True)
def gemm(a, b, out, transpose_a, transpose_b, alpha, beta):
    """``out = alpha * op(a) @ op(b) + beta * out`` on the calling thread.

    ``op(x)`` is ``x.T`` where its flag is true. ``a``, ``b``, ``out`` are 2-D views
    of one float dtype whose rows are contiguous; ``beta = 0`` ignores ``out``'s
    contents (NaN included).
    """
    m, n = out.shape
    k = a.shape[0] if transpose_a else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        for i in range(m):
            for j in range(n):
                out[i, j] = beta * out[i, j] if beta != 0 else 0
        return
    # Row-major out = op(a) @ op(b) is column-major out.T = op(b).T @ op(a).T, and a
    # row-major view read column-major is its transpose: pass b first, flags as given.
    sizes = np.empty(6, np.int32)
    sizes[0] = n
    sizes[1] = m
    sizes[2] = k
    sizes[3] = _leading_dimension(b)
    sizes[4] = _leading_dimension(a)
    sizes[5] = _leading_dimension(out)
    flags = np.empty(2, np.uint8)
    flags[0] = _TRANSPOSE if transpose_b else _NO_TRANSPOSE
    flags[1] = _TRANSPOSE if transpose_a else _NO_TRANSPOSE
    scalars = np.empty(2, out.dtype)
    scalars[0] = alpha
    scalars[1] = beta
    arguments = (
        flags[0:1].ctypes,
        flags[1:2].ctypes,
        sizes[0:1].ctypes,
        sizes[1:2].ctypes,
        sizes[2:3].ctypes,
        scalars[0:1].ctypes,
        b.ctypes,
        sizes[3:4].ctypes,
        a.ctypes,
        sizes[4:5].ctypes,
        scalars[1:2].ctypes,
        out.ctypes,
        sizes[5:6].ctypes,
    )
    if out.itemsize == 4:
        _sgemm(*arguments)
    else:
        _dgemm(*arguments)


def block_count(m: int, n: int, k: int, threads: int = THREADS) -> int:
    """How many blocks :func:`product` cuts an ``m x n`` (depth ``k``) product into."""
    work = m * n * k
    if work <= SERIAL_WORK or threads <= 1:
        return 1
    if work <= SMALL_PRODUCT_WORK:
        blocks = (work + SMALL_BLOCK_WORK - 1) // SMALL_BLOCK_WORK
        return ((blocks + threads - 1) // threads) * threads
    return threads


@njit(cache=True)
def gemm_block(a, b, out, transpose_a, transpose_b, alpha, beta, block, blocks, bias):
    """Block ``block`` of ``blocks`` of :func:`gemm` (bounds multiples of 16): a column
    block of ``out`` where ``out`` is at least as wide as tall, else a row block; row
    blocks too for ``a.T @ b`` (a weight gradient), which measured faster that way.
    A non-empty ``bias`` is then added to every row of the block, while it is in cache."""
    m, n = out.shape
    by_columns = n >= m and not transpose_a
    extent = n if by_columns else m
    step = (extent + blocks - 1) // blocks
    step = ((step + 15) // 16) * 16
    lo = min(block * step, extent)
    hi = min(lo + step, extent)
    if lo >= hi:
        return
    if by_columns:
        b_part = b[lo:hi] if transpose_b else b[:, lo:hi]
        gemm(a, b_part, out[:, lo:hi], transpose_a, transpose_b, alpha, beta)
        if bias.shape[0] > 0:
            add_row_vector(bias[lo:hi], out[:, lo:hi])
    else:
        a_part = a[:, lo:hi] if transpose_a else a[lo:hi]
        gemm(a_part, b, out[lo:hi], transpose_a, transpose_b, alpha, beta)
        if bias.shape[0] > 0:
            add_row_vector(bias, out[lo:hi])


@njit(cache=True)
def add_row_vector(vector, out):
    """``out[i, :] += vector`` for every row.

    Indexed with unsigned offsets, not through row views: a view takes a reference to
    its array, and threads taking references to one array contend for its count."""
    for i in range(out.shape[0]):
        for j in range(np.uint64(out.shape[1])):
            out[i, j] += vector[j]


@njit(cache=True)
def gemm_one_block(a, b, out, transpose_a, transpose_b, alpha, beta, bias):
    """The whole product as one block, on the calling thread."""
    gemm_block(a, b, out, transpose_a, transpose_b, alpha, beta, 0, 1, bias)


@njit(cache=True, parallel=True)
def gemm_blocks(a, b, out, transpose_a, transpose_b, alpha, beta, blocks, bias):
    """The blocks of the product on Numba's threads.

    Called from Python (or from other parallel functions) only: a cached serial
    function that calls a parallel one can crash when it is loaded from Numba's
    cache (numba/numba#8578)."""
    for block in prange(blocks):
        gemm_block(a, b, out, transpose_a, transpose_b, alpha, beta, block, blocks, bias)


def product(
    a: np.ndarray,
    b: np.ndarray,
    out: np.ndarray,
    transpose_a: bool = False,
    transpose_b: bool = False,
    alpha: float = 1.0,
    beta: float = 0.0,
    bias: np.ndarray | None = None,
) -> None:
    """``out = alpha * op(a) @ op(b) + beta * out (+ bias)``, in blocks on Numba's
    threads (:func:`block_count`); ``bias`` is broadcast over the rows."""
    k = a.shape[0] if transpose_a else a.shape[1]
    blocks = block_count(out.shape[0], out.shape[1], k)
    row = _no_bias(out.dtype) if bias is None else bias
    if blocks == 1:
        gemm_one_block(a, b, out, transpose_a, transpose_b, alpha, beta, row)
    else:
        gemm_blocks(a, b, out, transpose_a, transpose_b, alpha, beta, blocks, row)


@functools.cache
def _no_bias(dtype: np.dtype) -> np.ndarray:
    return np.empty(0, dtype)
