"""BLAS matrix products called from ``@njit`` code, split over Numba's threads.

The CPU kernels multiply matrices through :func:`gemm`, a BLAS ``sgemm``/``dgemm``
call on row-major views of any row stride, with transposes and an
``out = alpha * product + beta * out`` update, so a kernel can multiply column
blocks and accumulate without copies. :func:`product` cuts ``out`` into blocks, one
BLAS call each, and runs the blocks on Numba's threads. Underneath both,
:func:`gemm_region` is the BLAS call itself, written in LLVM: it compiles in a few
milliseconds for any array layout, where Numba code doing the same (views, arrays
holding the scalars, ``.ctypes`` pointers) took about half a second per layout, a
third of the digits example's first training batch from a cold cache.

Which BLAS (:data:`BLAS_NAME`): Intel MKL, sequential, where the ``mkl`` package is
installed (a dependency on x86-64); otherwise scipy's (the OpenBLAS behind Numba's
own ``np.dot``), set to one thread. ``NUMLAYERS_BLAS=scipy`` picks scipy's even
with MKL present. Products of a 784-1024-1024-10 training step ran 10 to 30 %
faster through MKL than through OpenBLAS, split the same way, on 2 AVX-512 cores.
Beside MKL, products of 2 to 15 output columns (:data:`NARROW_COLUMNS`) go to
scipy's OpenBLAS, on one thread, which MKL trailed there by 3 to 7 times.

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
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from numlayers.kernels.toolkit import KERNEL_OPTIONS, overload_helper


def load_numba_array_functions_without_scipy() -> None:
    """Import ``numba.np.arraymath`` now, without the ``import scipy.linalg`` it runs.

    Numba imports it when its CPU target starts (the first compile or cache load) and
    it asks, once, whether ``np.dot`` can have a BLAS by importing
    ``scipy.linalg.cython_blas``: 0.3 s of SciPy's own start-up, half of the digits
    example's first training batch with the disk cache warm, for a BLAS numlayers does
    not take from there (:func:`gemm` calls MKL, or binds scipy's only when MKL is
    missing). Here the question is answered by whether SciPy is installed, without
    importing it; Numba's linear algebra still imports it, through the same function
    (put back), when compiled code first uses ``np.dot`` or ``np.linalg``.
    """
    if "numba.np.arraymath" in sys.modules:
        return
    import numba.np.linalg as numba_linalg

    probe = numba_linalg.ensure_blas

    def scipy_installed() -> None:
        if importlib.util.find_spec("scipy") is None:
            raise ImportError("scipy is not installed")

    numba_linalg.ensure_blas = scipy_installed
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        numba_linalg.ensure_blas = probe


load_numba_array_functions_without_scipy()


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
    """``njit`` with :data:`~numlayers.kernels.toolkit.KERNEL_OPTIONS` for a function that
    calls this module (cached under a name that changes with this file)."""
    function.__qualname__ = f"{function.__qualname__}_{DIGEST}"
    return njit(**KERNEL_OPTIONS)(function)


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


#: A product whose block of ``out`` has 2 to ``NARROW_COLUMNS - 1`` columns goes to
#: the narrow BLAS (:data:`NARROW_BLAS_NAME`). MKL (2026.2, sequential, on the 2-core
#: AMD machine these were measured on) is slow for such outputs: a 256 x 1024 by
#: 1024 x 10 float32 product took 610 us against 149 us through scipy's OpenBLAS on
#: one thread (2 to 14 columns: 3 to 7 times slower; 16 or more: within 20 %, and MKL
#: ahead from 32; one column: MKL 34 us, OpenBLAS 86). A classifier's last layer is
#: such a product, forward and weight gradient.
NARROW_COLUMNS = 16


def _scipy_openblas() -> ctypes.CDLL | None:
    """The OpenBLAS that scipy's wheels bundle, loaded directly (without importing
    scipy.linalg: 0.3 s) and set to one thread, as :func:`use_one_blas_thread` sets
    the fallback (``NUMLAYERS_BLAS_THREADS=keep`` leaves it alone; scipy's own linear
    algebra shares the setting); None where there is none."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    libraries = Path(next(iter(spec.submodule_search_locations))).parent / "scipy.libs"
    for file in sorted(libraries.glob("libscipy_openblas*")) if libraries.is_dir() else []:
        try:
            library = ctypes.CDLL(str(file))
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            if hasattr(library, name):
                if os.environ.get("NUMLAYERS_BLAS_THREADS", "") != "keep":
                    getattr(library, name)(1)
                return library
    return None


def _routine_address(library: ctypes.CDLL, routine: str) -> int | None:
    """The address of BLAS ``routine`` (``sgemm``) in ``library``, under the names MKL
    and scipy's OpenBLAS give it; None where it has neither."""
    for name in (f"{routine}_", f"scipy_{routine}_"):
        if hasattr(library, name):
            return ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    return None


def _bind_blas() -> tuple[str, str]:
    """Make ``numlayers_sgemm``/``numlayers_dgemm`` symbols that Numba links against
    when it loads compiled code (from memory or its cache: a ctypes pointer would not
    cache), and the ``numlayers_narrow_*`` symbols of the narrow products
    (:data:`NARROW_COLUMNS`); return the names of the two BLAS."""
    runtime = _mkl_runtime()
    narrow = _scipy_openblas() if runtime is not None else None
    narrow_addresses = {}
    if narrow is not None:
        narrow_addresses = {r: _routine_address(narrow, r) for r in ("sgemm", "dgemm")}
        if None in narrow_addresses.values():
            narrow, narrow_addresses = None, {}
    for routine in ("sgemm", "dgemm"):
        if runtime is not None:
            address = _routine_address(runtime, routine)
        else:
            address = get_cython_function_address("scipy.linalg.cython_blas", routine)
        llvmlite.binding.add_symbol(f"numlayers_{routine}", address)
        narrow_address = narrow_addresses.get(routine) or address
        llvmlite.binding.add_symbol(f"numlayers_narrow_{routine}", narrow_address)
    name = "mkl" if runtime is not None else "scipy"
    return name, "openblas" if narrow is not None else name


#: the BLAS behind :func:`gemm`: ``"mkl"`` or ``"scipy"``; and the one behind its
#: products of 2 to ``NARROW_COLUMNS - 1`` columns: ``"openblas"`` (scipy's, beside
#: MKL) or the same
BLAS_NAME, NARROW_BLAS_NAME = _bind_blas()

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


class _Operand:
    """A 2-D array argument of :func:`gemm_region` as LLVM values: its data pointer and
    BLAS's leading dimension (its row stride in elements; at least its row length and
    at least 1, as BLAS requires, since an array of one row or none may have any row
    stride)."""

    def __init__(self, context: Any, builder: Any, array_type: Any, value: Any) -> None:
        array = context.make_array(array_type)(context, builder, value)
        self.builder = builder
        self.data = array.data
        self.rows, self.columns = cgutils.unpack_tuple(builder, array.shape, 2)
        row_stride = cgutils.unpack_tuple(builder, array.strides, 2)[0]
        itemsize = context.get_abi_sizeof(context.get_data_type(array_type.dtype))
        one = ir.Constant(row_stride.type, 1)
        stride = builder.sdiv(row_stride, ir.Constant(row_stride.type, itemsize))
        several_rows = builder.icmp_signed(">", self.rows, one)
        leading = builder.select(several_rows, stride, self.columns)
        for floor in (self.columns, one):
            leading = builder.select(builder.icmp_signed(">", leading, floor), leading, floor)
        self.leading = leading

    def at(self, row: Any, column: Any) -> Any:
        """A ``void*`` to element ``(row, column)``."""
        offset = self.builder.add(self.builder.mul(row, self.leading), column)
        return self.builder.bitcast(self.builder.gep(self.data, [offset]), cgutils.voidptr_t)


def _gemm_region(typingctx, a, b, out, transpose_a, transpose_b, alpha, beta, rows, columns):
    """:func:`gemm` for the block ``out[rows[0]:rows[1], columns[0]:columns[1]]`` only:
    ``alpha * op(a)[rows] @ op(b)[:, columns] + beta * out[rows, columns]``, one BLAS
    call on the calling thread (none for an empty block; a depth of 0 goes to the BLAS
    too, which then scales the block by ``beta``). Every row of every operand must be
    contiguous (:func:`require_contiguous_rows`).

    Written in LLVM, not as Numba code: Numba compiles this to a few integer operations
    and one call (each Fortran argument is a pointer to a stack slot), where its own
    route (views of the block, arrays holding the scalars, ``.ctypes`` pointers)
    allocated three arrays per call and took ten times as long to compile, once per
    array layout of the views.
    """
    signature = types.void(a, b, out, transpose_a, transpose_b, alpha, beta, rows, columns)
    dtype = out.dtype

    def codegen(context: Any, builder: Any, signature: Any, arguments: Any) -> Any:
        a_type, b_type, out_type, *_ = signature.args
        flags = [
            context.cast(builder, value, kind, types.boolean)
            for value, kind in zip(arguments[3:5], signature.args[3:5], strict=True)
        ]
        scalars = [
            context.cast(builder, value, kind, dtype)
            for value, kind in zip(arguments[5:7], signature.args[5:7], strict=True)
        ]
        bounds = [
            context.cast(builder, bound, kind, types.intp)
            for pair, pair_type in zip(arguments[7:9], signature.args[7:9], strict=True)
            for bound, kind in zip(cgutils.unpack_tuple(builder, pair, 2), pair_type, strict=True)
        ]
        row_start, row_stop, column_start, column_stop = bounds
        a_operand = _Operand(context, builder, a_type, arguments[0])
        b_operand = _Operand(context, builder, b_type, arguments[1])
        out_operand = _Operand(context, builder, out_type, arguments[2])
        m = builder.sub(row_stop, row_start)
        n = builder.sub(column_stop, column_start)
        zero = ir.Constant(m.type, 0)
        k = builder.select(flags[0], a_operand.rows, a_operand.columns)
        empty = builder.or_(builder.icmp_signed("<=", m, zero), builder.icmp_signed("<=", n, zero))
        with builder.if_then(builder.not_(empty)):

            def on_stack(value: Any) -> Any:
                slot = cgutils.alloca_once(builder, value.type)
                builder.store(value, slot)
                return builder.bitcast(slot, cgutils.voidptr_t)

            def size(value: Any) -> Any:
                return on_stack(builder.trunc(value, ir.IntType(32)))

            def flag(transposed: Any) -> Any:
                character = ir.IntType(8)
                no, yes = ir.Constant(character, _NO_TRANSPOSE), ir.Constant(character, _TRANSPOSE)
                return on_stack(builder.select(transposed, yes, no))

            # the first element of the rows of op(a), of the columns of op(b), of the block
            a_start = builder.select(
                flags[0], a_operand.at(zero, row_start), a_operand.at(row_start, zero)
            )
            b_start = builder.select(
                flags[1], b_operand.at(column_start, zero), b_operand.at(zero, column_start)
            )
            out_start = out_operand.at(row_start, column_start)
            # Row-major out = op(a) @ op(b) is column-major out.T = op(b).T @ op(a).T, and
            # a row-major array read column-major is its transpose: b first, flags as given.
            blas_arguments = [
                flag(flags[1]), flag(flags[0]), size(n), size(m), size(k), on_stack(scalars[0]),
                b_start, size(b_operand.leading), a_start, size(a_operand.leading),
                on_stack(scalars[1]), out_start, size(out_operand.leading),
            ]  # fmt: skip
            routine = "sgemm" if dtype == types.float32 else "dgemm"
            function_type = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t] * 13)
            wide, narrow = (
                cgutils.get_or_insert_function(builder.module, function_type, name)
                for name in (f"numlayers_{routine}", f"numlayers_narrow_{routine}")
            )
            is_narrow = builder.and_(
                builder.icmp_signed(">", n, ir.Constant(n.type, 1)),
                builder.icmp_signed("<", n, ir.Constant(n.type, NARROW_COLUMNS)),
            )
            builder.call(builder.select(is_narrow, narrow, wide), blas_arguments)
        return context.get_dummy_value()

    return signature, codegen


#: (typed ``Any``: called from compiled code, where Numba supplies ``typingctx``)
gemm_region: Any = intrinsic(_gemm_region)


def require_contiguous_rows(a, b, out):
    """Raise unless every row of the non-empty operands is contiguous, as BLAS reads
    them (compiled code only: :func:`_typed_require_contiguous_rows`)."""
    raise NotImplementedError("require_contiguous_rows is called from compiled code")


@overload_helper(require_contiguous_rows)
def _typed_require_contiguous_rows(a, b, out):
    """Nothing to check where every operand's type is C-contiguous (what the layers
    pass); otherwise a check of the strides. A helper compiled once per signature,
    not inlined: Numba copied an inlined check into each caller at 0.06 s a call site,
    a tenth of the first training batch's dense backward compile."""
    if all(operand.layout == "C" for operand in (a, b, out)):
        return lambda a, b, out: None

    def check(a, b, out):
        a_strided = a.shape[0] > 0 and a.shape[1] > 1 and a.strides[1] != a.itemsize
        b_strided = b.shape[0] > 0 and b.shape[1] > 1 and b.strides[1] != b.itemsize
        out_strided = out.shape[0] > 0 and out.shape[1] > 1 and out.strides[1] != out.itemsize
        if a_strided or b_strided or out_strided:
            raise ValueError("gemm: the rows of every operand must be contiguous")

    return check


@njit(**KERNEL_OPTIONS)
def gemm(a, b, out, transpose_a, transpose_b, alpha, beta):
    """``out = alpha * op(a) @ op(b) + beta * out`` on the calling thread.

    ``op(x)`` is ``x.T`` where its flag is true. ``a``, ``b``, ``out`` are 2-D views
    of one float dtype whose rows are contiguous; ``beta = 0`` ignores ``out``'s
    contents (NaN included). A function of its own, not inlined: it may raise, and a
    ``raise`` inlined into a ``prange`` loop would keep the loop serial.
    """
    require_contiguous_rows(a, b, out)
    gemm_region(
        a, b, out, transpose_a, transpose_b, alpha, beta, (0, out.shape[0]), (0, out.shape[1])
    )


def block_count(m: int, n: int, k: int, threads: int = THREADS) -> int:
    """How many blocks :func:`product` cuts an ``m x n`` (depth ``k``) product into."""
    work = m * n * k
    if work <= SERIAL_WORK or threads <= 1:
        return 1
    if work <= SMALL_PRODUCT_WORK:
        blocks = (work + SMALL_BLOCK_WORK - 1) // SMALL_BLOCK_WORK
        return ((blocks + threads - 1) // threads) * threads
    return threads


@njit(inline="always")
def block_bounds(m, n, transpose_a, block, blocks):
    """The rows and the columns of ``out`` in block ``block`` of ``blocks`` (bounds
    multiples of 16): a column block where ``out`` is at least as wide as tall, else a
    row block; row blocks too for ``a.T @ b`` (a weight gradient), which measured
    faster that way."""
    by_columns = n >= m and not transpose_a
    extent = n if by_columns else m
    step = (extent + blocks - 1) // blocks
    step = ((step + 15) // 16) * 16
    lo = min(block * step, extent)
    hi = min(lo + step, extent)
    if by_columns:
        return (0, m), (lo, hi)
    return (lo, hi), (0, n)


@njit(inline="always")
def add_row_vector(vector, out, rows, columns):
    """``out[i, j] += vector[j]`` over the block ``rows`` x ``columns`` of ``out``.

    Indexed with unsigned offsets, not through row views: a view takes a reference to
    its array, and threads taking references to one array contend for its count."""
    for i in range(rows[0], rows[1]):
        for j in range(np.uint64(columns[0]), np.uint64(columns[1])):
            out[i, j] += vector[j]


@njit(inline="always")
def gemm_block(a, b, out, transpose_a, transpose_b, alpha, beta, block, blocks, bias):
    """Block ``block`` of ``blocks`` of :func:`gemm` (:func:`block_bounds`); a non-empty
    ``bias`` is then added to every row of the block, while it is in cache. The
    operands' rows must be contiguous (:func:`require_contiguous_rows`: the callers
    check, outside their ``prange`` loops)."""
    rows, columns = block_bounds(out.shape[0], out.shape[1], transpose_a, block, blocks)
    gemm_region(a, b, out, transpose_a, transpose_b, alpha, beta, rows, columns)
    if bias.shape[0] > 0:
        add_row_vector(bias, out, rows, columns)


@njit(**KERNEL_OPTIONS)
def gemm_one_block(a, b, out, transpose_a, transpose_b, alpha, beta, bias):
    """The whole product as one block, on the calling thread (written out, not as
    :func:`gemm_block` of one block: its bounds took half of this kernel's compile
    time, which the first training batch of every small model waits for)."""
    require_contiguous_rows(a, b, out)
    whole_rows, whole_columns = (0, out.shape[0]), (0, out.shape[1])
    gemm_region(a, b, out, transpose_a, transpose_b, alpha, beta, whole_rows, whole_columns)
    if bias.shape[0] > 0:
        add_row_vector(bias, out, whole_rows, whole_columns)


@njit(**KERNEL_OPTIONS, parallel=True)
def gemm_blocks(a, b, out, transpose_a, transpose_b, alpha, beta, blocks, bias):
    """The blocks of the product on Numba's threads.

    Called from Python (or from other parallel functions) only: a cached serial
    function that calls a parallel one can crash when it is loaded from Numba's
    cache (numba/numba#8578)."""
    require_contiguous_rows(a, b, out)
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
