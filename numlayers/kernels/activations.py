"""Activation functions (Keras 0.3 definitions) and their gradients.

Operations (both devices). The elementwise ones take arrays of any shape as flat,
C-contiguous; ``NAME`` is each of :data:`ELEMENTWISE_ACTIVATIONS`:

- ``NAME_forward(x, out)``: ``out = f(x)``
- ``NAME_backward(x, y, grad_out, grad_x)``: ``grad_x = grad_out * f'(x)``, where ``y``
  is the forward output (``tanh`` and ``sigmoid`` take their derivative from ``y``,
  the others from ``x``)
- ``softmax_forward(x, out)``: softmax over the last axis of a 2-D ``x``
- ``softmax_backward(y, grad_out, grad_x)``:
  ``grad_x[i, :] = y[i, :] * (grad_out[i, :] - sum_j grad_out[i, j] * y[i, j])``

The functions are

- ``relu = max(x, 0)``, derivative ``1`` where ``x > 0`` else ``0``
- ``tanh``; ``sigmoid = 1 / (1 + exp(-x))``
- ``hard_sigmoid = clip(0.2 x + 0.5, 0, 1)``, derivative ``0.2`` on ``(-2.5, 2.5)``
  else ``0``
- ``softplus = log(1 + exp(x))``, derivative ``sigmoid(x)``
- ``linear``: the identity

Everything that exponentiates only ever takes ``exp`` of a non-positive number
(``exp(-|x|)``, ``exp(x - max)``), so nothing overflows for any finite input and the
saturated limits (sigmoid 0 or 1, softplus ``x`` or ``exp(x)``, softmax rows of one
1) come out exact.

CPU: Numba cannot vectorise calls into libm, and NumPy's ``exp`` and ``tanh`` are
SIMD, so the CPU kernels use :func:`exp_nonpositive`, :func:`expm1_nonpositive`
and :func:`log1p_unit`: range reductions, polynomials and exponents built from
bits, all of which LLVM vectorises (to within 2 units in the last place). Large
arrays use both cores. CUDA: the hardware ``exp`` is fast, so the same formulas
call ``math.exp``; softmax runs one block per row with shared-memory tree
reductions (no warp shuffles, so the simulator runs it too).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from numlayers.kernels.cuda_support import (
    THREADS_PER_BLOCK,
    CudaKernelRegistry,
    blocks_for,
    new_registry,
)

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None

#: the activations with elementwise ``NAME_forward`` / ``NAME_backward`` operations
ELEMENTWISE_ACTIVATIONS = ("relu", "tanh", "sigmoid", "hard_sigmoid", "softplus", "linear")

#: flat arrays at least this long use the two-core CPU loops
PARALLEL_MIN_SIZE = 1 << 15

#: threads of a CUDA softmax block (a power of two: the tree reductions halve it)
SOFTMAX_MAX_THREADS = 256
#: fewest threads of a softmax block: short rows still fill a warp
SOFTMAX_MIN_THREADS = 32


class Constants(NamedTuple):
    """The activations' constants, in the dtype of the kernels that use them."""

    zero: Any
    one: Any
    two: Any
    half: Any
    hard_slope: Any
    hard_limit: Any


def constants_for(dtype: np.dtype) -> Constants:
    cast = np.dtype(dtype).type
    return Constants(cast(0), cast(1), cast(2), cast(0.5), cast(0.2), cast(2.5))


def scalar_formulas(
    compile_function: Callable[[Callable[..., Any]], Any],
    exp: Any,
    expm1: Any,
    log1p: Any,
) -> dict[str, tuple[Any, Any]]:
    """Each activation's ``(f(x, c), derivative(x, y, c))``, compiled with ``compile_function``.

    Written once for both devices: the CPU passes ``njit(inline="always")`` and its
    vectorisable ``exp``; CUDA passes ``device_function`` and ``math.exp``. ``c`` is
    a :class:`Constants` in the kernel's dtype. ``exp`` and ``expm1`` are only called
    on non-positive numbers.
    """

    def relu(x, c):
        return c.zero if x <= c.zero else x  # NaN stays NaN, as in np.maximum

    def relu_derivative(x, y, c):
        return c.one if x > c.zero else c.zero

    def tanh(x, c):
        # tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)): no cancellation near 0
        t = expm1(-c.two * abs(x))
        return math.copysign(-t / (c.two + t), x)

    def tanh_derivative(x, y, c):
        return c.one - y * y

    def sigmoid(x, c):
        e = exp(-abs(x))
        positive = c.one / (c.one + e)
        return positive if x >= c.zero else e * positive

    def sigmoid_derivative(x, y, c):
        return y * (c.one - y)

    def hard_sigmoid(x, c):
        y = c.hard_slope * x + c.half
        y = y if y > c.zero else c.zero
        return y if y < c.one else c.one

    def hard_sigmoid_derivative(x, y, c):
        inside = x > -c.hard_limit and x < c.hard_limit
        return c.hard_slope if inside else c.zero

    def softplus(x, c):
        # max(x, 0) + log(1 + exp(-|x|)): x for large x, exp(x) for very negative x
        return (x if x > c.zero else c.zero) + log1p(exp(-abs(x)))

    def linear(x, c):
        return x

    def linear_derivative(x, y, c):
        return c.one

    compiled = {
        formula.__name__: compile_function(formula)
        for formula in (relu, relu_derivative, tanh, tanh_derivative, sigmoid, sigmoid_derivative)
        + (hard_sigmoid, hard_sigmoid_derivative, softplus, linear, linear_derivative)
    }
    logistic = compiled["sigmoid"]

    def softplus_derivative(x, y, c):
        return logistic(x, c)

    compiled["softplus_derivative"] = compile_function(softplus_derivative)
    return {
        name: (compiled[name], compiled[f"{name}_derivative"]) for name in ELEMENTWISE_ACTIVATIONS
    }


# --------------------------------------------------------------------------- CPU math


class CpuMath(NamedTuple):
    """Constants of the vectorisable ``exp`` and ``log1p``, all in one dtype."""

    zero: Any
    one: Any
    two: Any
    half: Any
    log2e: Any
    ln2: Any
    ln2_high: Any  # few significant bits, so that n * ln2_high is exact
    ln2_low: Any  # ln2 - ln2_high
    lowest: Any  # exp(x) is 0 below this (where it is smaller than any normal number)
    exp_taylor: tuple[Any, ...]  # 1 / k! for k = degree, ..., 1
    sqrt2_minus_1: Any
    atanh_series: tuple[Any, ...]  # 1 / (2k + 1) for k = terms - 1, ..., 0


def cpu_math(
    dtype: Any, ln2_split: tuple[float, float], lowest: float, exp_degree: int, atanh_terms: int
) -> CpuMath:
    cast = np.dtype(dtype).type
    return CpuMath(
        zero=cast(0),
        one=cast(1),
        two=cast(2),
        half=cast(0.5),
        log2e=cast(1 / math.log(2)),
        ln2=cast(math.log(2)),
        ln2_high=cast(ln2_split[0]),
        ln2_low=cast(ln2_split[1]),
        lowest=cast(lowest),
        exp_taylor=tuple(cast(1 / math.factorial(k)) for k in range(exp_degree, 0, -1)),
        sqrt2_minus_1=cast(math.sqrt(2) - 1),
        atanh_series=tuple(cast(1 / (2 * k + 1)) for k in range(atanh_terms - 1, -1, -1)),
    )


# ln2 split as in fdlibm (the float64 low part must be the exact remainder, not a
# difference of rounded numbers). ``lowest`` keeps n >= the smallest normal exponent,
# so that 2**n can be built from bits; results between it and log(smallest normal)
# come out as correctly rounded sub-normal numbers.
# The series lengths put each truncation error below the type's epsilon: the exp
# polynomial runs on |r| <= ln2 / 2, the atanh series on s**2 <= 0.03.
CPU_MATH = {
    types.float32: cpu_math(np.float32, (0.693145751953125, 1.428606765330187045e-06), -87.6, 7, 6),
    types.float64: cpu_math(
        np.float64, (6.93147180369123816490e-01, 1.90821492927058770002e-10), -708.7, 13, 12
    ),
}


def power_of_two(n):
    """``2 ** n`` for an integral float ``n`` in the normal exponent range."""
    return 2.0**n


@overload(power_of_two, inline="always")
def power_of_two_overload(n):
    # the exponent field written directly: a shift and an add, which vectorise
    if n == types.float32:
        return lambda n: np.int32((np.int32(n) + 127) << 23).view(np.float32)
    if n == types.float64:
        return lambda n: np.int64((np.int64(n) + 1023) << 52).view(np.float64)
    return None


@njit(inline="always")
def exp_parts(x, k):
    """``(2**n, expm1(r))`` where ``x = n ln2 + r``, ``|r| <= ln2 / 2``, for ``x >= k.lowest``.

    So ``exp(x) = 2**n (1 + expm1(r))``.
    """
    n = np.floor(x * k.log2e + k.half)
    r = (x - n * k.ln2_high) - n * k.ln2_low
    p = k.exp_taylor[0]
    for coefficient in k.exp_taylor[1:]:
        p = p * r + coefficient
    return power_of_two(n), p * r


def exp_nonpositive(x):
    """``exp(x)`` for ``x <= 0`` (0 below ``lowest``), vectorisable inside ``@njit`` code."""
    return math.exp(x)


def expm1_nonpositive(x):
    """``exp(x) - 1`` for ``x <= 0`` (-1 below ``lowest``), vectorisable inside ``@njit`` code."""
    return math.expm1(x)


def log1p_unit(x):
    """``log(1 + x)`` for ``0 <= x <= 1``, vectorisable inside ``@njit`` code."""
    return math.log1p(x)


def overload_per_dtype(function: Callable[..., Any]) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: ``make(k)`` returns ``function``'s implementation for the :class:`CpuMath`
    ``k`` of the argument's type; the overload serves float32 and float64 arguments."""

    def register(make: Callable[[CpuMath], Callable[..., Any]]) -> Any:
        @overload(function)
        def typed(x):
            k = CPU_MATH.get(x)
            return None if k is None else make(k)

        return make

    return register


@overload_per_dtype(exp_nonpositive)
def exp_implementation(k: CpuMath) -> Callable[..., Any]:
    def exp_impl(x):
        scale, p = exp_parts(k.lowest if x < k.lowest else x, k)
        return k.zero if x < k.lowest else scale * p + scale

    return exp_impl


@overload_per_dtype(expm1_nonpositive)
def expm1_implementation(k: CpuMath) -> Callable[..., Any]:
    def expm1_impl(x):
        scale, p = exp_parts(k.lowest if x < k.lowest else x, k)
        # scale - 1 is exact, so the result keeps its accuracy near x = 0
        return -k.one if x < k.lowest else scale * p + (scale - k.one)

    return expm1_impl


@overload_per_dtype(log1p_unit)
def log1p_implementation(k: CpuMath) -> Callable[..., Any]:
    def log1p_impl(x):
        # log(1 + v) = 2 atanh(v / (2 + v)); above sqrt(2) - 1, 1 + x = 2 (1 + v)
        # with v = (x - 1) / 2 (exact), so that |v / (2 + v)| <= 0.18 either way
        big = x > k.sqrt2_minus_1
        v = (x - k.one) * k.half if big else x
        s = v / (k.two + v)
        s2 = s * s
        p = k.atanh_series[0]
        for coefficient in k.atanh_series[1:]:
            p = p * s2 + coefficient
        return k.two * s * p + (k.ln2 if big else k.zero)

    return log1p_impl


CPU_FORMULAS = scalar_formulas(
    njit(inline="always"), exp_nonpositive, expm1_nonpositive, log1p_unit
)


def activation(name, x, c):
    """``f(x)`` of activation ``name`` (a compile-time constant in ``@njit`` code)."""
    raise NotImplementedError("only callable from @njit code")


def activation_derivative(name, x, y, c):
    """``f'(x)`` of activation ``name`` (a compile-time constant in ``@njit`` code)."""
    raise NotImplementedError("only callable from @njit code")


# The cached loops capture the activation's name, not its compiled formula, and
# these overloads look the formula up while compiling: a loop that captured a
# compiled function in its closure would get a new cache key in every process
# (Numba pickles a compiled function with a random id), so it would never hit.
@overload(activation, inline="always")
def activation_overload(name, x, c):
    if not isinstance(name, types.StringLiteral):
        return None
    forward = CPU_FORMULAS[name.literal_value][0]
    return lambda name, x, c: forward(x, c)


@overload(activation_derivative, inline="always")
def activation_derivative_overload(name, x, y, c):
    if not isinstance(name, types.StringLiteral):
        return None
    derivative = CPU_FORMULAS[name.literal_value][1]
    return lambda name, x, y, c: derivative(x, y, c)


def compile_elementwise_loops(dtype: np.dtype, name: str, parallel: bool) -> tuple[Any, Any]:
    """Flat forward and backward loops of activation ``name`` (serial: prange is range)."""
    c = constants_for(dtype)

    def forward(x, out):
        for i in prange(out.size):
            out[i] = activation(name, x[i], c)

    def backward(x, y, grad_out, grad_x):
        for i in prange(grad_x.size):
            grad_x[i] = grad_out[i] * activation_derivative(name, x[i], y[i], c)

    loops = []
    for function in (forward, backward):
        # Numba's cache keys on the function's name, not its flags: keep the variants apart.
        variant = "parallel" if parallel else "serial"
        function.__qualname__ = f"{name}_{function.__name__}_{variant}"
        # contract only fuses multiply-adds; no flag assumes finite values
        compile_loop = njit(
            cache=True, parallel=parallel, fastmath={"contract"}, error_model="numpy"
        )
        loops.append(compile_loop(function))
    return loops[0], loops[1]


def elementwise_cpu_operations(dtype: np.dtype, name: str) -> dict[str, Any]:
    forward_serial, backward_serial = compile_elementwise_loops(dtype, name, parallel=False)
    forward_parallel, backward_parallel = compile_elementwise_loops(dtype, name, parallel=True)

    def forward(x: np.ndarray, out: np.ndarray) -> None:
        loop = forward_parallel if out.size >= PARALLEL_MIN_SIZE else forward_serial
        loop(x.reshape(-1), out.reshape(-1))

    def backward(x: np.ndarray, y: np.ndarray, grad_out: np.ndarray, grad_x: np.ndarray) -> None:
        loop = backward_parallel if grad_x.size >= PARALLEL_MIN_SIZE else backward_serial
        loop(x.reshape(-1), y.reshape(-1), grad_out.reshape(-1), grad_x.reshape(-1))

    return {f"{name}_forward": forward, f"{name}_backward": backward}


def larger(a, b):
    return a if a > b else b


larger_cpu = njit(inline="always")(larger)


# Row reductions of the CPU softmax. Numba passes a caller's fastmath flags on to
# what it inlines, so the sums are compiled on their own with reassociation (which
# lets them vectorise) and the loops around the exponentials use no flags. A max
# reduction does not vectorise without flags that assume no NaNs, so row_max keeps
# eight independent maxima instead, which runs as fast as NumPy's SIMD max.


@njit(fastmath={"reassoc"}, error_model="numpy")
def row_sum(row):
    total = row[0] - row[0]
    for j in range(row.shape[0]):
        total += row[j]
    return total


@njit(fastmath={"reassoc", "contract"}, error_model="numpy")
def row_dot(a, b):
    total = a[0] - a[0]
    for j in range(a.shape[0]):
        total += a[j] * b[j]
    return total


@njit(error_model="numpy")
def row_max(row):
    n = row.shape[0]
    whole = n - n % 8
    largest = row[0]
    for j in range(0, whole, 8):
        low = larger_cpu(larger_cpu(row[j], row[j + 1]), larger_cpu(row[j + 2], row[j + 3]))
        high = larger_cpu(larger_cpu(row[j + 4], row[j + 5]), larger_cpu(row[j + 6], row[j + 7]))
        largest = larger_cpu(largest, larger_cpu(low, high))
    for j in range(whole, n):
        largest = larger_cpu(largest, row[j])
    return largest


@njit(error_model="numpy")
def softmax_row(x, out, i, one):
    """Row ``i`` of ``softmax(x)`` into ``out`` (``one`` in the dtype)."""
    largest = row_max(x[i])
    for j in range(x.shape[1]):
        out[i, j] = exp_nonpositive(x[i, j] - largest)
    scale = one / row_sum(out[i])
    for j in range(x.shape[1]):
        out[i, j] *= scale


@njit(error_model="numpy")
def softmax_gradient_row(y, grad_out, grad_x, i):
    """Row ``i`` of the gradient through a softmax whose output is ``y``."""
    dot = row_dot(grad_out[i], y[i])
    for j in range(y.shape[1]):
        grad_x[i, j] = y[i, j] * (grad_out[i, j] - dot)


def activate_rows(name, x, out, c):
    """``out = f(x)`` over 2-D arrays for activation ``name`` (a compile-time constant in
    ``@njit`` code; softmax works per row), on the calling thread."""
    raise NotImplementedError("only callable from @njit code")


def activation_gradient_rows(name, x, y, grad_out, grad_x, c):
    """``grad_x`` from ``grad_out`` through activation ``name`` over 2-D arrays, where ``y``
    is the forward output (as :func:`activate_rows`)."""
    raise NotImplementedError("only callable from @njit code")


@overload(activate_rows, inline="always")
def activate_rows_overload(name, x, out, c):
    if not isinstance(name, types.StringLiteral):
        return None
    if name.literal_value == "softmax":

        def softmax_rows(name, x, out, c):
            for i in range(x.shape[0]):
                softmax_row(x, out, i, c.one)

        return softmax_rows
    forward = CPU_FORMULAS[name.literal_value][0]

    def elementwise_rows(name, x, out, c):
        for i in range(x.shape[0]):
            for j in range(np.uint64(x.shape[1])):
                out[i, j] = forward(x[i, j], c)

    return elementwise_rows


@overload(activation_gradient_rows, inline="always")
def activation_gradient_rows_overload(name, x, y, grad_out, grad_x, c):
    if not isinstance(name, types.StringLiteral):
        return None
    if name.literal_value == "softmax":

        def softmax_gradient_rows(name, x, y, grad_out, grad_x, c):
            for i in range(y.shape[0]):
                softmax_gradient_row(y, grad_out, grad_x, i)

        return softmax_gradient_rows
    derivative = CPU_FORMULAS[name.literal_value][1]

    def elementwise_gradient_rows(name, x, y, grad_out, grad_x, c):
        for i in range(x.shape[0]):
            for j in range(np.uint64(x.shape[1])):
                grad_x[i, j] = grad_out[i, j] * derivative(x[i, j], y[i, j], c)

    return elementwise_gradient_rows


def compile_softmax_loops(dtype: np.dtype, parallel: bool) -> tuple[Any, Any]:
    """Softmax forward and backward loops over the rows of a 2-D array."""
    one = np.dtype(dtype).type(1)

    def softmax_forward(x, out):
        for i in prange(x.shape[0]):
            softmax_row(x, out, i, one)

    def softmax_backward(y, grad_out, grad_x):
        for i in prange(y.shape[0]):
            softmax_gradient_row(y, grad_out, grad_x, i)

    loops = []
    for function in (softmax_forward, softmax_backward):
        function.__qualname__ = f"{function.__name__}_{'parallel' if parallel else 'serial'}"
        loops.append(njit(cache=True, parallel=parallel, error_model="numpy")(function))
    return loops[0], loops[1]


@functools.cache  # the dense family composes its activations from these operations
def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    dtype = np.dtype(dtype)
    operations: dict[str, Any] = {}
    for name in ELEMENTWISE_ACTIVATIONS:
        operations.update(elementwise_cpu_operations(dtype, name))
    forward_serial, backward_serial = compile_softmax_loops(dtype, parallel=False)
    forward_parallel, backward_parallel = compile_softmax_loops(dtype, parallel=True)

    def softmax_forward(x: np.ndarray, out: np.ndarray) -> None:
        if out.size == 0:  # the row loops read each row's first element
            return
        loop = forward_parallel if out.size >= PARALLEL_MIN_SIZE else forward_serial
        loop(x, out)

    def softmax_backward(y: np.ndarray, grad_out: np.ndarray, grad_x: np.ndarray) -> None:
        if grad_x.size == 0:
            return
        loop = backward_parallel if grad_x.size >= PARALLEL_MIN_SIZE else backward_serial
        loop(y, grad_out, grad_x)

    operations["softmax_forward"] = softmax_forward
    operations["softmax_backward"] = softmax_backward
    return operations


# --------------------------------------------------------------------------- CUDA


def block_reduce(partial, value, take_max):
    """The max (``take_max``) or sum of ``value`` over the block's threads, for all of them.

    A shared-memory tree: ``partial`` holds one slot per thread and ``blockDim.x``
    must be a power of two. Every thread of the block must call it.
    """
    thread = cuda.threadIdx.x
    partial[thread] = value
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if thread < stride:
            mine = partial[thread]
            other = partial[thread + stride]
            if take_max:
                partial[thread] = other if other > mine else mine
            else:
                partial[thread] = mine + other
        cuda.syncthreads()
        stride //= 2
    result = partial[0]
    cuda.syncthreads()  # everyone has read the result before partial is reused
    return result


def softmax_threads(columns: int) -> int:
    """Threads of a softmax block: a power of two, enough for a short row, at most 256."""
    threads = SOFTMAX_MIN_THREADS
    while threads < columns and threads < SOFTMAX_MAX_THREADS:
        threads *= 2
    return threads


def elementwise_cuda_operations(
    registry: CudaKernelRegistry, name: str, forward: Any, derivative: Any, c: Constants
) -> dict[str, Any]:
    vector = registry.array(1)

    def forward_kernel(x, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = forward(x[i], c)

    def backward_kernel(x, y, grad_out, grad_x):
        i = cuda.grid(1)
        if i < grad_x.size:
            grad_x[i] = grad_out[i] * derivative(x[i], y[i], c)

    forward_kernel.__name__ = f"{name}_forward_kernel"
    backward_kernel.__name__ = f"{name}_backward_kernel"
    forward_launch = registry.jit(vector, vector)(forward_kernel)
    backward_launch = registry.jit(vector, vector, vector, vector)(backward_kernel)

    def forward_operation(x: Any, out: Any) -> None:
        forward_launch[blocks_for(out.size), THREADS_PER_BLOCK](
            x.reshape(x.size), out.reshape(out.size)
        )

    def backward_operation(x: Any, y: Any, grad_out: Any, grad_x: Any) -> None:
        backward_launch[blocks_for(grad_x.size), THREADS_PER_BLOCK](
            x.reshape(x.size),
            y.reshape(y.size),
            grad_out.reshape(grad_out.size),
            grad_x.reshape(grad_x.size),
        )

    return {f"{name}_forward": forward_operation, f"{name}_backward": backward_operation}


def softmax_cuda_operations(registry: CudaKernelRegistry, c: Constants) -> dict[str, Any]:
    """One block per row: a block-wide max, then the exponentials and their sum."""
    matrix = registry.array(2)
    scalar = registry.scalar
    reduce = registry.device_function(block_reduce)
    larger_device = registry.device_function(larger)

    @registry.jit(matrix, matrix)
    def softmax_forward_kernel(x, out):
        partial = cuda.shared.array(SOFTMAX_MAX_THREADS, scalar)
        row = cuda.blockIdx.x
        largest = x[row, 0]
        for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
            largest = larger_device(largest, x[row, j])
        largest = reduce(partial, largest, True)
        total = c.zero
        for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
            e = math.exp(x[row, j] - largest)
            out[row, j] = e
            total += e
        scale = c.one / reduce(partial, total, False)
        for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
            out[row, j] *= scale

    @registry.jit(matrix, matrix, matrix)
    def softmax_backward_kernel(y, grad_out, grad_x):
        partial = cuda.shared.array(SOFTMAX_MAX_THREADS, scalar)
        row = cuda.blockIdx.x
        dot = c.zero
        for j in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
            dot += grad_out[row, j] * y[row, j]
        dot = reduce(partial, dot, False)
        for j in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
            grad_x[row, j] = y[row, j] * (grad_out[row, j] - dot)

    def softmax_forward(x: Any, out: Any) -> None:
        if out.size == 0:  # a block reads its row's first element
            return
        softmax_forward_kernel[out.shape[0], softmax_threads(out.shape[1])](x, out)

    def softmax_backward(y: Any, grad_out: Any, grad_x: Any) -> None:
        if grad_x.size == 0:
            return
        softmax_backward_kernel[grad_x.shape[0], softmax_threads(grad_x.shape[1])](
            y, grad_out, grad_x
        )

    return {"softmax_forward": softmax_forward, "softmax_backward": softmax_backward}


@functools.cache  # as build_cpu
def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    c = constants_for(dtype)
    # the hardware exp is fast: CUDA needs none of the CPU's vectorisable versions
    formulas = scalar_formulas(registry.device_function, math.exp, math.expm1, math.log1p)
    operations: dict[str, Any] = {}
    for name in ELEMENTWISE_ACTIVATIONS:
        forward, derivative = formulas[name]
        operations.update(elementwise_cuda_operations(registry, name, forward, derivative, c))
    operations.update(softmax_cuda_operations(registry, c))
    return operations
