"""The kernel toolkit: the one way a kernel family compiles its loops on each device.

A family writes its mathematics once, as plain Python, and the toolkit turns it into
CPU loops (``@njit``, serial or over every core) and CUDA kernels (``@cuda.jit``):

- :func:`cpu_inline` marks a scalar or per-index helper: it is inlined into CPU
  loops, and compiled again as a CUDA device function by :meth:`CudaKernels.device`.
- :class:`CpuLoop` compiles a ``prange`` loop twice, serial and parallel, and picks
  one per call by :func:`use_parallel` (the one rule for when to go parallel).
- :func:`cpu_index_loop` and :meth:`CudaKernels.index_loop` run a per-index body
  ``body(index, *arguments)`` (or ``body(row, column, *arguments)`` over a 2-D index
  space) for every index: the CPU as a ``prange`` loop, CUDA as a grid-stride kernel
  with the bounds check written here once and the block size :data:`BLOCK_SIZE`.
- :class:`Elementwise` describes an elementwise function by its formula and its
  derivative (with run-time parameters such as ``alpha``); :func:`elementwise_operations`
  builds its ``NAME_forward`` and ``NAME_backward`` operations for either device.

Numba's on-disk cache keys a function by its qualified name, its bytecode and the
pickled contents of its closure, and looks for stale entries by the time stamp of
its source file. So the generated loops are named after their body, are filed under
the body's module (an edit there recompiles them), and capture module-level plain
functions (pickled by name), never compiled dispatchers (pickled with a random id,
which would miss the cache in every new process).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeAlias

import numba
import numpy as np
from numba import njit, prange
from numba.extending import overload, register_jitable

from numlayers.devices import (
    CUDA_ACTIVITY,
    active_capture,
    cuda_module,
    launch_kernel,
    set_dynamic_shared_limit,
    simulator_enabled,
)

#: An array on a device: a C-contiguous NumPy array on the CPU, a Numba device array (or
#: any ``__cuda_array_interface__`` array wrapped as one) on CUDA. The family interfaces
#: type their arrays with it; the operations check nothing about them (layers validate).
DeviceArray: TypeAlias = Any

# ---------------------------------------------------------------- the parallel rule

#: A CPU loop runs over every core when its work is at least this much. Work is the
#: number of indices times the family's ``cost`` of one index, in units of one element
#: of ``scale_add_into`` (``out[i] += alpha * x[i]``, vectorised: a fraction of a
#: nanosecond). Waking Numba's threads from Python and joining them costs 5 to 20 us on
#: the two-core machines this was measured on; below this much work the parallel twin
#: did not beat the serial one there, and above it it did, for copies and
#: elementwise activations alike. A family states its cost per index (measured against
#: that unit, serially) in a named constant with a comment.
PARALLEL_MIN_WORK = 1 << 15


def use_parallel(count: int, cost: float = 1.0) -> bool:
    """Whether a loop over ``count`` indices of ``cost`` each should use every core."""
    return count * cost >= PARALLEL_MIN_WORK


#: Marks a plain-Python helper for inlining into the CPU loops. It returns the function
#: itself, so the same helper is compiled again for CUDA by :meth:`CudaKernels.device`.
#: Numba inlines it after type inference, having first compiled it to machine code on
#: its own, once per argument types (to check it): right for large helpers called from
#: many places (the recurrent cells); small ones cost less as :func:`cpu_inline_early`.
cpu_inline = register_jitable(inline="always")


def cpu_inline_early(function: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`cpu_inline`, but inlined before type inference and never compiled on its own.

    Numba's untyped ``inline_inlinables`` pass replaces a call by the callee's body
    when the callee, found by name (a global or a captured variable), has
    ``targetoptions`` that say ``inline="always"`` and a ``py_func``, as a jitted
    function has; this gives the plain function both. A call the pass cannot resolve
    falls back to :func:`cpu_inline`'s typed route.

    For small helpers and per-index bodies (a loss term, a dropout element, an update
    rule): the typed route compiled each to machine code first, over half of the
    compile time of the digits example's first training batch. The untyped route
    copies the helper's code into every call site, so helpers that are large or
    called from many places (the recurrent cells) stay :func:`cpu_inline`.
    """
    cpu_inline(function)
    function.targetoptions = INLINE_EARLY  # type: ignore[attr-defined]
    function.py_func = function  # type: ignore[attr-defined]
    return function


#: the jit options Numba's untyped inlining pass looks for on a callee
INLINE_EARLY = {"inline": "always"}


#: The ``njit`` options of every CPU kernel: cached on disk, and no C-callable wrapper
#: (nothing takes a kernel's address, and building one was about a sixth of a small
#: kernel's compile time).
KERNEL_OPTIONS: dict[str, Any] = {"cache": True, "no_cfunc_wrapper": True}

#: The ``njit`` options of a helper that only compiled code calls (and of the typed
#: implementations of ``overload``): no wrappers for calls from Python or C (building
#: them was a fifth of such a helper's compile time).
HELPER_OPTIONS: dict[str, Any] = {
    "error_model": "numpy",
    "no_cpython_wrapper": True,
    "no_cfunc_wrapper": True,
}


def overload_helper(function: Callable[..., Any]) -> Callable[[Callable[..., Any]], Any]:
    """``numba.extending.overload`` of ``function`` whose typed implementations compile
    with :data:`HELPER_OPTIONS`."""
    # Numba's stubs type jit_options as a TypedDict without the wrapper flags
    return overload(function, jit_options=HELPER_OPTIONS)  # type: ignore[arg-type]


def compile_cpu(template: Any, name: str, parallel: bool = False, **options: Any) -> Any:
    """Compile the CPU loop ``template`` with ``njit`` and :data:`KERNEL_OPTIONS`, under its
    own ``name``.

    Numba's cache names its files after the function's qualified name and does not key
    on ``parallel``, so a parallel variant (a ``prange`` loop) gets a name of its own.
    """
    copy = types.FunctionType(
        template.__code__,
        template.__globals__,
        name,
        template.__defaults__,
        template.__closure__,
    )
    copy.__qualname__ = f"{name}_parallel" if parallel else name
    copy.__module__ = template.__module__
    options.setdefault("error_model", "numpy")
    return njit(parallel=parallel, **KERNEL_OPTIONS, **options)(copy)


class CpuLoop:
    """A loop written with ``prange``, compiled serial and parallel (both lazily).

    Calling it runs the parallel twin when :func:`use_parallel` says so for the size of
    argument ``size_argument`` (by default the last, the output) times ``cost``.
    """

    def __init__(
        self,
        template: Callable[..., Any],
        name: str | None = None,
        *,
        cost: float = 1.0,
        size_argument: int = -1,
        **options: Any,
    ) -> None:
        self.name = name or template.__name__
        self.template = template
        self.options = options
        self.cost = cost
        self.size_argument = size_argument

    # Each twin's dispatcher is made on first use: a family defines many loops that a
    # process never runs, and making their dispatchers (with their disk caches) took
    # a fifth of the digits example's first batch with a warm cache.
    @functools.cached_property
    def serial(self) -> Any:
        return compile_cpu(self.template, self.name, **self.options)

    @functools.cached_property
    def parallel(self) -> Any:
        return compile_cpu(self.template, self.name, parallel=True, **self.options)

    def twin_for(self, count: int) -> Any:
        """The twin to run over ``count`` indices: parallel where :func:`use_parallel`
        says so for this loop's ``cost``, else serial."""
        return self.parallel if use_parallel(count, self.cost) else self.serial

    def __call__(self, *arguments: Any) -> Any:
        return self.twin_for(arguments[self.size_argument].size)(*arguments)


def cpu_loop(
    *, cost: float = 1.0, size_argument: int = -1, **options: Any
) -> Callable[[Callable[..., Any]], CpuLoop]:
    """Decorator form of :class:`CpuLoop`."""

    def decorate(template: Callable[..., Any]) -> CpuLoop:
        return CpuLoop(template, cost=cost, size_argument=size_argument, **options)

    return decorate


# ---------------------------------------------------------------- generated loops


def generate_function(
    source: str,
    name: str,
    home: Callable[..., Any],
    captured: dict[str, Any],
    global_names: dict[str, Any],
) -> Callable[..., Any]:
    """Define function ``name`` from ``source`` as a closure over ``captured``.

    The function is filed under ``home``'s source file and module (so that Numba's
    cache finds a file to stamp, and an edit of ``home`` recompiles it).
    """
    outer = f"def make_{name}({', '.join(captured)}):\n"
    body = "".join(f"    {line}\n" for line in source.strip("\n").splitlines())
    namespace = dict(global_names)
    code = compile(outer + body + f"    return {name}\n", inspect.getfile(home), "exec")
    exec(code, namespace)
    function: Callable[..., Any] = namespace[f"make_{name}"](**captured)
    function.__module__ = home.__module__
    function.__qualname__ = name
    return function


def argument_list(count: int) -> str:
    return ", ".join(f"argument_{k}" for k in range(count))


def index_loop_source(name: str, arity: int, dims: int, device: str) -> str:
    """The source of a loop calling ``body`` at every index of a 1-D or 2-D space."""
    arguments = argument_list(arity)
    if dims == 1:
        header = f"def {name}(count, {arguments}):\n"
        if device == "cpu":
            return header + f"    for index in prange(count):\n        body(index, {arguments})\n"
        return (
            header
            + "    for index in range(cuda.grid(1), count, cuda.gridsize(1)):\n"
            + f"        body(index, {arguments})\n"
        )
    header = f"def {name}(rows, columns, {arguments}):\n"
    if device == "cpu":
        return header + (
            "    for row in prange(rows):\n"
            "        for column in range(columns):\n"
            f"            body(row, column, {arguments})\n"
        )
    # grid-stride in both axes: the grid's y extent is limited (65535 blocks)
    return header + (
        "    start_column, start_row = cuda.grid(2)\n"
        "    column_stride, row_stride = cuda.gridsize(2)\n"
        "    for row in range(start_row, rows, row_stride):\n"
        "        for column in range(start_column, columns, column_stride):\n"
        f"            body(row, column, {arguments})\n"
    )


def cpu_index_loop(
    body: Callable[..., Any],
    arity: int | None = None,
    *,
    dims: int = 1,
    cost: float = 1.0,
    name: str | None = None,
    **options: Any,
) -> Callable[..., None]:
    """A CPU loop calling ``body(index, *arguments)`` for ``index`` in ``range(count)``.

    Returns ``loop(count, *arguments)`` (``loop(rows, columns, *arguments)`` when
    ``dims`` is 2, the body then taking ``(row, column, *arguments)``), serial or
    parallel by :func:`use_parallel`. ``body`` must be a module-level :func:`cpu_inline`
    function; ``arity`` (the number of ``arguments``) defaults to its own. A 1-D loop
    whose body handles several elements (a row) takes ``loop(count, *arguments,
    elements=n)``: the parallel rule then counts ``count * n`` elements of ``cost``.
    """
    arity = arity if arity is not None else body_arity(body, dims)
    loop_name = name or f"{body.__name__}_loop"
    template = generate_function(
        index_loop_source(loop_name, arity, dims, "cpu"),
        loop_name,
        body,
        {"body": body},
        {"prange": prange},
    )
    twins = CpuLoop(template, loop_name, cost=cost, **options)

    if dims == 1:

        def run(count: int, *arguments: Any, elements: int = 1) -> None:
            twins.twin_for(count * elements)(count, *arguments)

    else:

        def run(rows: int, columns: int, *arguments: Any) -> None:  # type: ignore[misc]
            twins.twin_for(rows * columns)(rows, columns, *arguments)

    return run


def body_arity(body: Callable[..., Any], dims: int) -> int:
    """The number of arguments of a per-index body after its ``dims`` indices."""
    return len(inspect.signature(body).parameters) - dims


# ---------------------------------------------------------------- CUDA

#: True where Numba's CUDA simulator stands in for a GPU (see :func:`launch_size`)
SIMULATOR = simulator_enabled()


def launch_size(gpu: int, simulator: int) -> int:
    """A launch constant: its ``gpu`` value, or its ``simulator`` value under the simulator.

    The simulator runs every thread of a launch as a Python thread, so a launch costs
    about 0.3 ms per thread, however little each does: a 256-thread block took 80 ms
    for 12 elements, an 8-thread block 4 ms. Under the simulator every launch constant
    (block sizes, grid caps, GEMM tiles, reduction widths) shrinks to a few threads.
    The kernels are the same code with smaller constants, so the tiny test shapes still
    cross tile edges, stride through grids and run multi-step tree reductions. The
    PTX check and a real GPU use the ``gpu`` values.
    """
    return simulator if SIMULATOR else gpu


#: threads of a 1-D block, for every kernel launched through the toolkit
BLOCK_SIZE = launch_size(256, 8)
#: threads of a 2-D block: 32 columns (one warp reads a row segment) by 8 rows
BLOCK_SHAPE_2D = (launch_size(32, 4), launch_size(8, 2))
#: A grid-stride kernel needs no more blocks than this: 16 blocks of 256 threads on
#: each of the 132 SMs of an H100 keep it full; more would only add block overhead.
MAX_BLOCKS = launch_size(132 * 16, 2)


def blocks_for(count: int, threads: int = BLOCK_SIZE) -> int:
    """Number of blocks of ``threads`` that cover ``count`` threads (at least one)."""
    return max(1, (count + threads - 1) // threads)


#: CPU helpers and the functions CUDA code calls in their place (a family registers
#: its own: the CPU's vectorisable ``exp``, say, is ``math.exp`` on a GPU)
DEVICE_SUBSTITUTES: dict[Callable[..., Any], Callable[..., Any]] = {}


#: a kernel's launch bound, as ``cuda.jit(launch_bounds=...)`` takes it: none, the
#: largest block, or that and the least number of such blocks an SM must hold at once
LaunchBound = int | tuple[int, int] | None


@dataclass
class CudaKernels:
    """Compiles a family's CUDA kernels for one dtype and remembers their argument types.

    The argument types are what the PTX check compiles each kernel with, in the
    dtype this was built for, so a float32 kernel that does float64 arithmetic is
    caught without a GPU. ``cuda`` is the ``numba.cuda`` module that
    :mod:`numlayers.devices` imported (real or simulated).
    """

    cuda: Any
    dtype: np.dtype
    #: name -> (function, argument types, launch bound: None, the largest block, or
    #: that and the blocks an SM must hold at once)
    kernels: dict[str, tuple[Any, tuple[Any, ...], LaunchBound]] = field(default_factory=dict)
    _devices: dict[Any, Any] = field(default_factory=dict)

    @property
    def scalar(self) -> Any:
        """The numba scalar type of the dtype."""
        return numba.from_dtype(self.dtype)

    def array(self, ndim: int, dtype: Any = None) -> Any:
        """A C-contiguous numba array type of ``ndim`` dimensions."""
        scalar = self.scalar if dtype is None else numba.from_dtype(np.dtype(dtype))
        return numba.types.Array(scalar, ndim, "C")

    def jit(
        self,
        *argtypes: Any,
        threads: int | None = None,
        blocks_per_sm: int = 1,
        dynamic_shared: bool = False,
    ) -> Callable[[Callable[..., None]], Any]:
        """Decorator: compile a hand-written kernel lazily and record ``argtypes``.

        ``threads``, where given, is the largest block the kernel is launched with: the
        compiler then keeps its registers within what a block that large may have
        (a kernel needing more would fail to launch), and within what lets an SM hold
        ``blocks_per_sm`` such blocks at once (spilling rather than exceeding it). The
        simulator has no registers and takes no such bound.

        ``dynamic_shared`` marks a kernel launched as ``kernel[grid, block, 0, bytes]``
        with up to :func:`dynamic_shared_budget` bytes of dynamic shared memory (beyond
        the 48 KB a block gets unless its kernel opts in).

        The kernel's module must have ``cuda`` as a global (see :func:`bind_cuda`).
        """
        bound: LaunchBound = threads
        if threads is not None and blocks_per_sm > 1:
            bound = (threads, blocks_per_sm)
        options = {} if bound is None or SIMULATOR else {"launch_bounds": bound}
        before_launch = allow_dynamic_shared if dynamic_shared and not SIMULATOR else None

        def decorate(function: Callable[..., None]) -> Any:
            kernel = self.cuda.jit(**options)(function)
            self.kernels[function.__name__] = (function, argtypes, bound)
            return CountedKernel(kernel, before_launch)

        return decorate

    def device(self, function: Callable[..., Any]) -> Any:
        """Compile ``function`` as an inlined ``cuda.jit(device=True)`` helper.

        The plain-Python helpers it calls (module globals that are functions of
        numlayers) are compiled the same way, and those named in
        :data:`DEVICE_SUBSTITUTES` are replaced by their CUDA versions.
        """
        compiled = self._devices.get(function)
        if compiled is None:
            compiled = self.cuda.jit(device=True, inline=True)(self._with_device_globals(function))
            self._devices[function] = compiled
        return compiled

    def _with_device_globals(self, function: Callable[..., Any]) -> Callable[..., Any]:
        replaced = {}
        for name in function.__code__.co_names:
            value = function.__globals__.get(name)
            if value is None or isinstance(value, type):
                continue
            substitute = DEVICE_SUBSTITUTES.get(value) if callable(value) else None
            if substitute is not None:
                replaced[name] = self.device(substitute) if _ours(substitute) else substitute
            elif _ours(value):
                replaced[name] = self.device(value)
        if not replaced:
            return function
        copy = types.FunctionType(
            function.__code__,
            {**function.__globals__, **replaced},
            function.__name__,
            function.__defaults__,
            function.__closure__,
        )
        copy.__qualname__ = function.__qualname__
        return copy

    def index_loop(
        self,
        body: Callable[..., Any],
        argtypes: Sequence[Any],
        *,
        dims: int = 1,
        name: str | None = None,
        device_body: Any = None,
    ) -> Callable[..., None]:
        """A kernel calling ``body(index, *arguments)`` at every index, and its launcher.

        Returns ``launch(count, *arguments)`` (``launch(rows, columns, *arguments)`` for
        ``dims`` 2), the CUDA twin of :func:`cpu_index_loop`. ``argtypes`` are the
        numba types of ``arguments``. ``device_body`` is an already compiled body
        (by default ``body`` is compiled with :meth:`device`).
        """
        kernel_name = name or f"{body.__name__}_kernel"
        compiled_body = device_body if device_body is not None else self.device(body)
        source = index_loop_source(kernel_name, len(argtypes), dims, "cuda")
        function = generate_function(
            source, kernel_name, body, {"body": compiled_body}, {"cuda": self.cuda}
        )
        if dims == 1:
            kernel = self.jit(numba.types.int64, *argtypes)(function)

            return grid_stride_launcher(kernel)
        kernel = self.jit(numba.types.int64, numba.types.int64, *argtypes)(function)

        def launch_2d(rows: int, columns: int, *arguments: Any) -> None:
            if rows > 0 and columns > 0:
                kernel[grid_2d(rows, columns), BLOCK_SHAPE_2D](rows, columns, *arguments)

        return launch_2d


def _ours(value: Any) -> bool:
    """Whether ``value`` is a plain function of numlayers (compiled as a device function
    where a kernel calls it), rather than one Numba compiles for CUDA itself."""
    return inspect.isfunction(value) and value.__module__.startswith("numlayers.")


def grid_stride_launcher(kernel: Any) -> Callable[..., None]:
    """``launch(count, *arguments)`` of a 1-D grid-stride ``kernel(count, *arguments)``:
    enough blocks of :data:`BLOCK_SIZE` for ``count`` threads, at most
    :data:`MAX_BLOCKS` (nothing for ``count`` 0)."""

    def launch(count: int, *arguments: Any) -> None:
        if count > 0:
            kernel[min(blocks_for(count), MAX_BLOCKS), BLOCK_SIZE](count, *arguments)

    return launch


class CountedKernel:
    """A CUDA kernel whose launches ``kernel[grid, block](*arguments)`` are counted in
    :data:`numlayers.devices.CUDA_ACTIVITY` (every kernel of every family is one), or
    recorded into the CUDA graph being captured (:mod:`numlayers.cuda_graphs`)."""

    def __init__(self, kernel: Any, before_launch: Callable[[Any, Any], None] | None = None):
        self.kernel = kernel
        self.before_launch = before_launch

    def __getitem__(self, configuration: Any) -> Callable[..., None]:
        kernel, before_launch = self.kernel, self.before_launch

        def launch(*arguments: Any) -> None:
            capture = active_capture()
            if capture is not None:
                capture.launch(kernel, configuration, arguments, before_launch)
                return
            CUDA_ACTIVITY.launches += 1
            launch_kernel(kernel, configuration, arguments, before_launch)

        return launch


# ---------------------------------------------------------------- dynamic shared memory

#: the dynamic shared memory each compiled kernel (a Numba overload) has been allowed,
#: by kernel and device
_SHARED_LIMITS: dict[tuple[int, int], int] = {}


def dynamic_shared_budget(static_bytes: int, simulator_bytes: int) -> int:
    """Bytes of dynamic shared memory a kernel launched with ``dynamic_shared`` (see
    :meth:`CudaKernels.jit`) may ask for, beside ``static_bytes`` of static shared
    arrays: the current GPU's opt-in maximum per block (227 KB on an H100 or H200).
    Under the simulator, which has no such limit, ``simulator_bytes``: a family sets
    it small enough that its tiny test shapes cross the budget's edges."""
    if SIMULATOR:
        return simulator_bytes
    return max(0, shared_memory_per_block() - static_bytes)


@functools.cache
def _device_attribute(device_id: int, name: str) -> int:  # the id keys the cache
    return int(getattr(cuda_module().get_current_device(), name))


def device_attribute(name: str) -> int:
    """A CUDA device attribute of the current GPU (``MULTIPROCESSOR_COUNT``, say), read
    from the driver once."""
    return _device_attribute(cuda_module().get_current_device().id, name)


def shared_memory_per_block() -> int:
    """The shared memory a block of the current GPU may have when its kernel opts in."""
    return device_attribute("MAX_SHARED_MEMORY_PER_BLOCK_OPTIN")


def multiprocessor_count(simulator_count: int) -> int:
    """The current GPU's SM count (132 on an H100 or H200); ``simulator_count`` under
    the simulator."""
    return simulator_count if SIMULATOR else device_attribute("MULTIPROCESSOR_COUNT")


def allow_dynamic_shared(kernel: Any, configuration: Any) -> None:
    """Numba pre-launch callback: let the compiled ``kernel`` take all the dynamic
    shared memory the GPU allows a block beside its static arrays (once per kernel and
    device: without it CUDA refuses a block over 48 KB in all), and refuse a launch
    asking more than that with a clear error instead of the driver's."""
    function = kernel._codelibrary.get_cufunc()  # numba-cuda has no public accessor
    key = (id(kernel), function.device.id)
    limit = _SHARED_LIMITS.get(key)
    if limit is None:
        limit = shared_memory_per_block() - kernel.shared_mem_per_block
        set_dynamic_shared_limit(function, limit)  # numlayers.devices: the driver call
        _SHARED_LIMITS[key] = limit
    if configuration.sharedmem > limit:
        raise ValueError(
            f"CUDA kernel {function.name} asked for {configuration.sharedmem} bytes of "
            f"dynamic shared memory; this GPU allows it {limit}"
        )


#: the most blocks of a 2-D grid along y (CUDA allows 65535); the kernels stride past it
MAX_BLOCKS_Y = 1 << 15


def grid_2d(rows: int, columns: int) -> tuple[int, int]:
    """Blocks of :data:`BLOCK_SHAPE_2D` covering ``columns`` (x) by ``rows`` (y), at most
    :data:`MAX_BLOCKS` in all (the 2-D kernels are grid-stride in both axes)."""
    across = min(blocks_for(columns, BLOCK_SHAPE_2D[0]), MAX_BLOCKS)
    down = min(blocks_for(rows, BLOCK_SHAPE_2D[1]), MAX_BLOCKS_Y, max(1, MAX_BLOCKS // across))
    return across, down


#: every :class:`CudaKernels` made by a CUDA builder, for the PTX check
REGISTRIES: list[CudaKernels] = []


def cuda_kernels(cuda: Any, dtype: np.dtype) -> CudaKernels:
    """Start a :class:`CudaKernels` for a family's builder (recorded for the PTX check)."""
    kernels = CudaKernels(cuda=cuda, dtype=np.dtype(dtype))
    REGISTRIES.append(kernels)
    return kernels


def bind_cuda(module_globals: dict[str, Any], cuda: Any, dtype: np.dtype) -> CudaKernels:
    """:func:`cuda_kernels` for a module with hand-written kernels (a shared-memory
    reduction, a tiled product) that name ``cuda`` as a module global.

    Numba resolves ``cuda.grid`` and friends from a kernel's globals, and the CUDA
    simulator swaps exactly those globals for its per-thread fake, so the module's
    ``cuda`` global is bound here to the ``numba.cuda`` that :mod:`numlayers.devices`
    imported.
    """
    module_globals["cuda"] = cuda
    return cuda_kernels(cuda, dtype)


def empty_vector(cuda: Any, dtype: np.dtype, ndim: int = 1) -> Callable[[], Any]:
    """Return a function giving an empty device array of ``ndim`` dimensions (a
    length-0 vector by default), allocated on first use.

    Builders must not touch the GPU (the PTX check builds them on machines with
    none), so constant device arrays are made when a kernel first runs.
    """
    return functools.cache(lambda: cuda.device_array((0,) * ndim, dtype=dtype))


def device_index_loop(
    cuda: CudaKernels | None,
    body: Callable[..., Any],
    argtypes: Sequence[Any],
    *,
    dims: int = 1,
    cost: float = 1.0,
    **options: Any,
) -> Callable[..., None]:
    """``body``'s loop on the CPU when ``cuda`` is None, else on CUDA: for a family that
    builds both devices' operations with one function, as :func:`elementwise_operations`
    does.

    The CPU loop is :func:`cpu_index_loop` (with ``cost`` and the ``njit`` ``options``;
    ``argtypes`` unused), the CUDA one :meth:`CudaKernels.index_loop` (with ``argtypes``,
    the numba types of the arguments after the indices; ``cost`` unused).
    """
    if cuda is None:
        return cpu_index_loop(body, dims=dims, cost=cost, **options)
    return cuda.index_loop(body, argtypes, dims=dims)


def generated_index_loop(
    source: str,
    name: str,
    home: Callable[..., Any],
    captured: dict[str, Any],
    global_names: dict[str, Any],
    cuda: CudaKernels | None,
    argtypes: Sequence[Any] = (),
    *,
    cost: float = 1.0,
) -> Callable[..., None]:
    """The loop of a per-index body generated from ``source`` (defining function ``name``,
    a closure over ``captured`` with ``global_names``, filed under ``home``): on the CPU
    when ``cuda`` is None (:func:`cpu_index_loop`), else on CUDA
    (:meth:`CudaKernels.index_loop` with ``argtypes``). For bodies made at run time, such
    as the fused groups of a traced program; the module-level plain functions among
    ``global_names`` are compiled for CUDA as device functions, as any body's helpers are.
    """
    if cuda is None:
        # the body's statements written into the loop: one function to compile, not two
        # (a long body compiled as its own inlined function doubled the compile time)
        loop_name = f"{name}_loop"
        template = generate_function(
            inline_index_loop_source(source, loop_name),
            loop_name,
            home,
            captured,
            {**global_names, "prange": prange},
        )
        twins = CpuLoop(template, loop_name, cost=cost, fastmath={"contract"})

        def run(count: int, *arguments: Any) -> None:
            twins.twin_for(count)(count, *arguments)

        return run
    body = generate_function(source, name, home, captured, global_names)
    return cuda.index_loop(body, argtypes)


def inline_index_loop_source(source: str, loop_name: str) -> str:
    """The source of :func:`index_loop_source`'s 1-D CPU loop with the per-index body
    ``source`` (``def body(index, *arguments):`` and statements, no ``return``) written
    into it."""
    header, statements = source.strip("\n").split("\n", 1)
    parameters = header[header.index("(") + 1 : header.rindex(")")].split(", ", 1)
    if parameters[0] != "index":
        raise ValueError(f"a per-index body takes index first, received {header!r}")
    arguments = parameters[1] if len(parameters) > 1 else ""
    indented = "".join(f"    {line}\n" for line in statements.splitlines())
    return f"def {loop_name}(count, {arguments}):\n    for index in prange(count):\n{indented}"


# ---------------------------------------------------------------- elementwise functions


class Constants(NamedTuple):
    """Scalars in a kernel's dtype, so that no formula writes a float64 literal."""

    zero: Any
    one: Any
    two: Any
    half: Any


def constants_for(dtype: Any) -> Constants:
    cast = np.dtype(dtype).type
    return Constants(cast(0), cast(1), cast(2), cast(0.5))


class ElementwiseForward(Protocol):
    """``NAME_forward(x, out, *parameters)``: ``out = f(x)``, flat."""

    def __call__(self, x: DeviceArray, out: DeviceArray, *parameters: float) -> None: ...


class ElementwiseBackward(Protocol):
    """``NAME_backward(x, y, grad_out, grad_x, *parameters)``: ``grad_x = grad_out * f'(x)``."""

    def __call__(
        self,
        x: DeviceArray,
        y: DeviceArray,
        grad_out: DeviceArray,
        grad_x: DeviceArray,
        *parameters: float,
    ) -> None: ...


@dataclass(frozen=True)
class Elementwise:
    """An elementwise function ``y = f(x)`` by its formula and derivative.

    Attributes:
        name: the operation prefix (``NAME_forward``, ``NAME_backward``).
        forward: ``forward(x, c, *parameters) -> y``, a module-level plain function
            (``c`` is a :class:`Constants` in the kernel's dtype).
        derivative: ``derivative(x, y, c, *parameters) -> dy/dx``, given ``x`` and the
            forward output ``y`` (use whichever is cheaper).
        parameters: the run-time parameters' names and default values, e.g.
            ``(("alpha", 0.3),)``; the operations take them after their arrays.
        cost: the work of one element, in the units of :data:`PARALLEL_MIN_WORK`.
    """

    name: str
    forward: Callable[..., Any]
    derivative: Callable[..., Any]
    parameters: tuple[tuple[str, float], ...] = ()
    cost: float = 1.0
    constants: Callable[[Any], Any] = constants_for


def elementwise_sources(function: Elementwise) -> tuple[str, str]:
    """The per-index bodies of ``function``'s forward and backward passes."""
    parameters = "".join(f", {name}" for name, _ in function.parameters)
    forward = (
        f"def {function.name}_forward_element(index, x, out{parameters}):\n"
        f"    out[index] = forward(x[index], c{parameters})\n"
    )
    backward = (
        f"def {function.name}_backward_element(index, x, y, grad_out, grad_x{parameters}):\n"
        f"    grad_x[index] = grad_out[index] * derivative(x[index], y[index], c{parameters})\n"
    )
    return forward, backward


def elementwise_bodies(
    function: Elementwise, dtype: np.dtype, compile_formula: Callable[[Any], Any]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``function``'s forward and backward per-index bodies, with the formulas compiled
    by ``compile_formula`` (identity for the CPU, where they are inlined)."""
    forward_source, backward_source = elementwise_sources(function)
    captured = {
        "forward": compile_formula(function.forward),
        "derivative": compile_formula(function.derivative),
        "c": function.constants(dtype),
    }
    forward = generate_function(
        forward_source, f"{function.name}_forward_element", function.forward, captured, {}
    )
    backward = generate_function(
        backward_source, f"{function.name}_backward_element", function.forward, captured, {}
    )
    return forward, backward


#: elements each thread of a forward kernel loads before it computes any: a thread
#: has one load in flight per element it holds, and the GPU holds 2048 threads per SM,
#: too few single loads to cover the memory's latency (on an H200, one element per step
#: of the grid-stride loop reached 59 to 69% of the copy bandwidth, four 69 to 86%). A
#: backward kernel loads three arrays per element, so it keeps one element per step:
#: four would compile its formula five times for little gain.
ELEMENTS_IN_FLIGHT = 4


def unrolled_elementwise_source(name: str, inputs: tuple[str, ...], output: str,
                                value: str, parameters: str, unroll: int) -> str:  # fmt: skip
    """A CUDA grid-stride kernel ``name(count, *inputs, output, *parameters)`` setting
    ``output[i] = value`` at every index, where ``value`` names each input's element
    ``{input}_k``: ``unroll`` indices at a time, their loads first, then one at a time.

    Its indices are unsigned: Numba then drops the wrap-around of negative indices that
    every signed load and store carries. In sm_90 machine code that halves the float32
    tanh forward kernel (824 to 424 instructions, 35 to 28 registers); on an H200 it
    went from 50.4 to 42.2 us over 4096 x 4096 floats, 69 to 82% of the copy bandwidth."""
    lines = [
        f"def {name}(count, {', '.join(inputs)}, {output}{parameters}):",
        "    end = uint64(count)",
        "    stride = uint64(cuda.gridsize(1))",
        "    index = uint64(cuda.grid(1))",
    ]
    if unroll > 1:
        lines.append(f"    while index + uint64({unroll - 1}) * stride < end:")
        offsets = ["index", *(f"index + uint64({k}) * stride" for k in range(1, unroll))]
        lines += [
            f"        {array}_{k} = {array}[{offset}]"
            for k, offset in enumerate(offsets)
            for array in inputs
        ]
        lines += [f"        {output}[{offsets[k]}] = {value.format(k=k)}" for k in range(unroll)]
        lines.append(f"        index += uint64({unroll}) * stride")
    lines.append("    while index < end:")
    lines += [f"        {array}_0 = {array}[index]" for array in inputs]
    lines += [f"        {output}[index] = {value.format(k=0)}", "        index += stride"]
    return "\n".join(lines) + "\n"


def cuda_elementwise_loops(
    function: Elementwise, dtype: np.dtype, cuda: CudaKernels
) -> tuple[Callable[..., None], Callable[..., None]]:
    """``function``'s forward and backward CUDA loops, called as ``(count, *arrays,
    *parameters)`` like :meth:`CudaKernels.index_loop`'s, each one grid-stride kernel;
    the forward's threads keep :data:`ELEMENTS_IN_FLIGHT` elements' loads in flight."""
    parameters = "".join(f", {name}" for name, _ in function.parameters)
    captured = {
        "forward": cuda.device(function.forward),
        "derivative": cuda.device(function.derivative),
        "c": function.constants(dtype),
    }
    scalars = (cuda.scalar,) * len(function.parameters)
    vector = cuda.array(1)
    kernels = []
    for direction, inputs, output, value, unroll in (
        ("forward", ("x",), "out", f"forward(x_{{k}}, c{parameters})", ELEMENTS_IN_FLIGHT),
        (
            "backward",
            ("x", "y", "grad_out"),
            "grad_x",
            f"grad_out_{{k}} * derivative(x_{{k}}, y_{{k}}, c{parameters})",
            1,
        ),
    ):
        name = f"{function.name}_{direction}_kernel"
        source = unrolled_elementwise_source(name, inputs, output, value, parameters, unroll)
        global_names = {"cuda": cuda.cuda, "uint64": numba.types.uint64}
        generated = generate_function(source, name, function.forward, captured, global_names)
        kernel = cuda.jit(numba.types.int64, *(vector,) * (len(inputs) + 1), *scalars)(generated)

        kernels.append(grid_stride_launcher(kernel))
    return kernels[0], kernels[1]


def parameter_values(function: Elementwise, given: Sequence[float], cast: Any) -> tuple[Any, ...]:
    """The run-time parameters of a call, cast to the dtype, defaults filled in."""
    if len(given) > len(function.parameters):
        raise TypeError(
            f"{function.name} takes {len(function.parameters)} parameter(s) "
            f"{[name for name, _ in function.parameters]}, received {len(given)}"
        )
    defaults = [default for _, default in function.parameters[len(given) :]]
    return tuple(cast(value) for value in (*given, *defaults))


def elementwise_operations(
    function: Elementwise, dtype: np.dtype, cuda: CudaKernels | None = None
) -> dict[str, Callable[..., None]]:
    """``NAME_forward(x, out, *parameters)`` and
    ``NAME_backward(x, y, grad_out, grad_x, *parameters)`` on the CPU, or on CUDA when
    ``cuda`` is given. Arrays of any shape are taken as flat and C-contiguous."""
    dtype = np.dtype(dtype)
    cast = dtype.type
    if cuda is None:
        bodies = elementwise_bodies(function, dtype, cpu_inline)
        forward_body, backward_body = (cpu_inline(body) for body in bodies)
        forward_loop = cpu_index_loop(forward_body, cost=function.cost, fastmath={"contract"})
        backward_loop = cpu_index_loop(backward_body, cost=function.cost, fastmath={"contract"})
    else:
        forward_loop, backward_loop = cuda_elementwise_loops(function, dtype, cuda)

    def forward(x: Any, out: Any, *parameters: float) -> None:
        values = parameter_values(function, parameters, cast)
        forward_loop(out.size, x.reshape(x.size), out.reshape(out.size), *values)

    def backward(x: Any, y: Any, grad_out: Any, grad_x: Any, *parameters: float) -> None:
        values = parameter_values(function, parameters, cast)
        flat = (array.reshape(array.size) for array in (x, y, grad_out, grad_x))
        backward_loop(grad_x.size, *flat, *values)

    return {f"{function.name}_forward": forward, f"{function.name}_backward": backward}


__all__ = [
    "BLOCK_SIZE",
    "HELPER_OPTIONS",
    "KERNEL_OPTIONS",
    "PARALLEL_MIN_WORK",
    "SIMULATOR",
    "Constants",
    "CpuLoop",
    "CudaKernels",
    "DeviceArray",
    "Elementwise",
    "ElementwiseBackward",
    "ElementwiseForward",
    "bind_cuda",
    "blocks_for",
    "compile_cpu",
    "constants_for",
    "cpu_index_loop",
    "cpu_inline",
    "cpu_inline_early",
    "cpu_loop",
    "cuda_kernels",
    "device_index_loop",
    "elementwise_operations",
    "empty_vector",
    "generated_index_loop",
    "inline_index_loop_source",
    "launch_size",
    "overload_helper",
    "use_parallel",
]
