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
- with run-time parameters (Keras 0.3's advanced activations and ``relu`` arguments):
  ``leaky_relu = x if x > 0 else alpha x``; ``elu = x if x > 0 else alpha (exp(x) - 1)``,
  derivative ``y + alpha`` below 0; ``thresholded_linear = x if |x| > theta else 0``;
  ``thresholded_relu = x if x > theta else 0``; ``clipped_leaky_relu =
  min(leaky_relu(x), max_value)`` (Keras 0.3's ``relu(x, alpha, max_value)``),
  derivative ``0`` where clipped

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
from typing import Any, NamedTuple, Protocol

import numpy as np
from numba import njit, prange, types

from numlayers.kernels.toolkit import (
    DEVICE_SUBSTITUTES,
    HELPER_OPTIONS,
    CpuLoop,
    CudaKernels,
    DeviceArray,
    Elementwise,
    ElementwiseBackward,
    ElementwiseForward,
    bind_cuda,
    cpu_inline,
    cpu_inline_early,
    elementwise_operations,
    launch_size,
    overload_helper,
)

#: ``numba.cuda``, bound by :func:`bind_cuda` (softmax's kernels see it as a module global)
cuda: Any = None

#: a softmax row element: an ``exp``, a max and a sum (in multiply-adds, see the toolkit)
SOFTMAX_COST = 4.0

#: threads of a CUDA softmax block (a power of two: the tree reductions halve it)
SOFTMAX_MAX_THREADS = launch_size(256, 8)
#: fewest threads of a softmax block: short rows still fill a warp
SOFTMAX_MIN_THREADS = launch_size(32, 2)


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


# --------------------------------------------------------------------------- formulas
# Each activation's ``f(x, c)`` and ``f'(x, y, c)``, written once for both devices:
# ``c`` is a :class:`Constants` in the kernel's dtype and ``y`` the forward output.
# The CPU inlines them with its vectorisable ``exp``; CUDA compiles them as device
# functions with the hardware's (``exp_nonpositive`` and friends are swapped for
# ``math.exp`` there, see :data:`CUDA_MATH`). ``exp`` and ``expm1`` only ever see
# non-positive numbers.


@cpu_inline
def relu(x, c):
    return c.zero if x <= c.zero else x  # NaN stays NaN, as in np.maximum


@cpu_inline
def relu_derivative(x, y, c):
    return c.one if x > c.zero else c.zero


@cpu_inline
def tanh(x, c):
    # tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)): no cancellation near 0
    t = expm1_nonpositive(-c.two * abs(x))
    return math.copysign(-t / (c.two + t), x)


@cpu_inline
def tanh_derivative(x, y, c):
    return c.one - y * y


@cpu_inline
def sigmoid(x, c):
    e = exp_nonpositive(-abs(x))
    positive = c.one / (c.one + e)
    return positive if x >= c.zero else e * positive


@cpu_inline
def sigmoid_derivative(x, y, c):
    return y * (c.one - y)


@cpu_inline
def hard_sigmoid(x, c):
    y = c.hard_slope * x + c.half
    # NaN fails both comparisons and stays NaN (clipping must not make it finite)
    y = c.zero if y < c.zero else y
    return c.one if y > c.one else y


@cpu_inline
def hard_sigmoid_derivative(x, y, c):
    inside = x > -c.hard_limit and x < c.hard_limit
    return c.hard_slope if inside else c.zero


@cpu_inline
def softplus(x, c):
    # max(x, 0) + log(1 + exp(-|x|)): x for large x, exp(x) for very negative x
    return (x if x > c.zero else c.zero) + log1p_unit(exp_nonpositive(-abs(x)))


@cpu_inline
def softplus_derivative(x, y, c):
    return sigmoid(x, c)


@cpu_inline
def linear(x, c):
    return x


@cpu_inline
def linear_derivative(x, y, c):
    return c.one


#: run-time codes of the activations that apply element by element, as the recurrent
#: cells and the CUDA product's activation epilogue take them
ELEMENTWISE_CODES = {
    "linear": 0,
    "relu": 1,
    "tanh": 2,
    "sigmoid": 3,
    "hard_sigmoid": 4,
    "softplus": 5,
}
RELU, TANH, SIGMOID, HARD_SIGMOID, SOFTPLUS = (
    ELEMENTWISE_CODES[name] for name in ("relu", "tanh", "sigmoid", "hard_sigmoid", "softplus")
)


@cpu_inline
def apply_activation(code, x, c):
    """The activation of ``code`` at ``x`` (an unknown code is linear: callers validate
    codes). Loops that must vectorise call it with a constant ``code``."""
    if code == TANH:
        return tanh(x, c)
    if code == SIGMOID:
        return sigmoid(x, c)
    if code == HARD_SIGMOID:
        return hard_sigmoid(x, c)
    if code == RELU:
        return relu(x, c)
    if code == SOFTPLUS:
        return softplus(x, c)
    return x


@cpu_inline
def leaky_relu(x, c, alpha):
    return x if x > c.zero else alpha * x


@cpu_inline
def leaky_relu_derivative(x, y, c, alpha):
    return c.one if x > c.zero else alpha


@cpu_inline
def elu(x, c, alpha):
    negative = x if x < c.zero else c.zero  # expm1 only ever sees non-positive numbers
    return alpha * expm1_nonpositive(negative) if x <= c.zero else x


@cpu_inline
def elu_derivative(x, y, c, alpha):
    return c.one if x > c.zero else y + alpha  # alpha exp(x) = y + alpha


@cpu_inline
def thresholded_linear(x, c, theta):
    return c.zero if abs(x) <= theta else x


@cpu_inline
def thresholded_linear_derivative(x, y, c, theta):
    return c.zero if abs(x) <= theta else c.one


@cpu_inline
def thresholded_relu(x, c, theta):
    return c.zero if x <= theta else x


@cpu_inline
def thresholded_relu_derivative(x, y, c, theta):
    return c.zero if x <= theta else c.one


@cpu_inline
def clipped_leaky_relu(x, c, alpha, max_value):
    leaky = leaky_relu(x, c, alpha)
    return max_value if leaky > max_value else leaky  # NaN stays NaN, as in np.minimum


@cpu_inline
def clipped_leaky_relu_derivative(x, y, c, alpha, max_value):
    return c.zero if leaky_relu(x, c, alpha) > max_value else leaky_relu_derivative(x, y, c, alpha)


def elementwise_function(
    forward: Callable[..., Any], derivative: Callable[..., Any]
) -> Elementwise:
    return Elementwise(forward.__name__, forward, derivative, constants=constants_for)


#: every elementwise activation, by name (the operations ``NAME_forward`` and ``NAME_backward``)
ELEMENTWISE_FUNCTIONS = {
    function.name: function
    for function in (
        elementwise_function(relu, relu_derivative),
        elementwise_function(tanh, tanh_derivative),
        elementwise_function(sigmoid, sigmoid_derivative),
        elementwise_function(hard_sigmoid, hard_sigmoid_derivative),
        elementwise_function(softplus, softplus_derivative),
        elementwise_function(linear, linear_derivative),
        Elementwise("leaky_relu", leaky_relu, leaky_relu_derivative, (("alpha", 0.3),)),
        Elementwise("elu", elu, elu_derivative, (("alpha", 1.0),)),
        Elementwise(
            "thresholded_linear",
            thresholded_linear,
            thresholded_linear_derivative,
            (("theta", 1.0),),
        ),
        Elementwise(
            "thresholded_relu", thresholded_relu, thresholded_relu_derivative, (("theta", 1.0),)
        ),
        Elementwise(
            "clipped_leaky_relu",
            clipped_leaky_relu,
            clipped_leaky_relu_derivative,
            (("alpha", 0.0), ("max_value", math.inf)),
        ),
    )
}


#: the names of :data:`ELEMENTWISE_FUNCTIONS`
ELEMENTWISE_ACTIVATIONS = tuple(ELEMENTWISE_FUNCTIONS)


def scalar_formulas(
    compile_function: Callable[[Callable[..., Any]], Any],
) -> dict[str, tuple[Any, Any]]:
    """Each activation's ``(f, f')``, compiled with ``compile_function`` (for the
    recurrent cells: ``cpu_inline`` on the CPU, a device compiler on CUDA)."""
    return {
        name: (compile_function(function.forward), compile_function(function.derivative))
        for name, function in ELEMENTWISE_FUNCTIONS.items()
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


def power_of_two_float32(n):
    """``2 ** n`` for an integral float32 ``n`` in the normal exponent range: the
    exponent field written directly (a shift and an add, which vectorise)."""
    return np.int32((np.int32(n) + 127) << 23).view(np.float32)


def power_of_two_float64(n):
    """``2 ** n`` for an integral float64 ``n``, as :func:`power_of_two_float32`."""
    return np.int64((np.int64(n) + 1023) << 52).view(np.float64)


def exp_reduction(x, k):
    """``(n, expm1(r))`` where ``x = n ln2 + r``, ``|r| <= ln2 / 2``, for ``x >= k.lowest``.

    So ``exp(x) = 2**n (1 + expm1(r))``.
    """
    n = np.floor(x * k.log2e + k.half)
    r = (x - n * k.ln2_high) - n * k.ln2_low
    p = k.exp_taylor[0]
    for coefficient in k.exp_taylor[1:]:
        p = p * r + coefficient
    return n, p * r


# Inlined before type inference (the typed route compiled each to machine code first,
# a quarter of a softmax's compile time); ``power_of_two`` is picked per dtype below.
for _helper in (power_of_two_float32, power_of_two_float64, exp_reduction):
    cpu_inline_early(_helper)


def exp_nonpositive(x):
    """``exp(x)`` for ``x <= 0`` (0 below ``lowest``), vectorisable inside ``@njit`` code."""
    return math.exp(x)


def expm1_nonpositive(x):
    """``exp(x) - 1`` for ``x <= 0`` (-1 below ``lowest``), vectorisable inside ``@njit`` code."""
    return math.expm1(x)


def log1p_unit(x):
    """``log(1 + x)`` for ``0 <= x <= 1``, vectorisable inside ``@njit`` code."""
    return math.log1p(x)


def power_of_two_for(k: CpuMath) -> Callable[..., Any]:
    """The ``2 ** n`` helper of ``k``'s dtype."""
    return power_of_two_float32 if isinstance(k.one, np.float32) else power_of_two_float64


def overload_per_dtype(function: Callable[..., Any]) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: ``make(k)`` returns ``function``'s implementation for the :class:`CpuMath`
    ``k`` of the argument's type; the overload serves float32 and float64 arguments."""

    def register(make: Callable[[CpuMath], Callable[..., Any]]) -> Any:
        @overload_helper(function)
        def typed(x):
            k = CPU_MATH.get(x)
            return None if k is None else make(k)

        return make

    return register


@overload_per_dtype(exp_nonpositive)
def exp_implementation(k: CpuMath) -> Callable[..., Any]:
    power_of_two = power_of_two_for(k)

    def exp_impl(x):
        n, p = exp_reduction(k.lowest if x < k.lowest else x, k)
        scale = power_of_two(n)
        return k.zero if x < k.lowest else scale * p + scale

    return exp_impl


@overload_per_dtype(expm1_nonpositive)
def expm1_implementation(k: CpuMath) -> Callable[..., Any]:
    power_of_two = power_of_two_for(k)

    def expm1_impl(x):
        n, p = exp_reduction(k.lowest if x < k.lowest else x, k)
        scale = power_of_two(n)
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


# The CUDA versions of the CPU's vectorisable ``exp`` and ``log1p``: the hardware's.
DEVICE_SUBSTITUTES.update(
    {exp_nonpositive: math.exp, expm1_nonpositive: math.expm1, log1p_unit: math.log1p}
)


def larger(a, b):
    return a if a > b else b


# Row reductions of the CPU softmax. Numba passes a caller's fastmath flags on to
# what it inlines, so the sums are compiled on their own with reassociation (which
# lets them vectorise) and the loops around the exponentials use no flags.


@njit(fastmath={"reassoc"}, **HELPER_OPTIONS)
def row_sum(row):
    total = row[0] - row[0]
    for j in range(row.shape[0]):
        total += row[j]
    return total


@njit(fastmath={"reassoc", "contract"}, **HELPER_OPTIONS)
def row_dot(a, b):
    total = a[0] - a[0]
    for j in range(a.shape[0]):
        total += a[j] * b[j]
    return total


@cpu_inline_early
def row_max(row):
    """The largest element of ``row`` (a plain scan: the 8-wide comparison tree it
    replaced was faster on rows of hundreds of classes, but took 0.3 to 0.5 s longer
    to compile, a tenth of the digits example's first batch; inlined, as compiling
    even this loop on its own cost 0.1 s)."""
    largest = row[0]
    for j in range(1, row.shape[0]):
        if row[j] > largest:
            largest = row[j]
    return largest


@njit(**HELPER_OPTIONS)
def softmax_row(x, out, i, one):
    """Row ``i`` of ``softmax(x)`` into ``out`` (``one`` in the dtype)."""
    largest = row_max(x[i])
    for j in range(x.shape[1]):
        out[i, j] = exp_nonpositive(x[i, j] - largest)
    scale = one / row_sum(out[i])
    for j in range(x.shape[1]):
        out[i, j] *= scale


@njit(**HELPER_OPTIONS)
def softmax_gradient_row(y, grad_out, grad_x, i):
    """Row ``i`` of the gradient through a softmax whose output is ``y``."""
    dot = row_dot(grad_out[i], y[i])
    for j in range(y.shape[1]):
        grad_x[i, j] = y[i, j] * (grad_out[i, j] - dot)


class RowPasses(NamedTuple):
    """An activation over the rows of 2-D arrays, as statements for generated ``@njit``
    code (the dense family's one-call passes): ``forward`` sets ``y = f(z)``,
    ``gradient`` sets ``grad_z`` from ``grad_y`` (``z`` and ``y`` as forward left them),
    with the constants ``c`` of :func:`constants_for` in scope and the functions they
    call in ``names``. Generated code states the activation directly, where a Numba
    overload chosen by the name compiled its implementation on its own first."""

    forward: str
    gradient: str
    names: dict[str, Any]


def row_passes(name: str) -> RowPasses:
    """Activation ``name`` (softmax or an elementwise one) as :class:`RowPasses`."""
    if name == "softmax":
        return RowPasses(
            "for i in range(z.shape[0]):\n    softmax_row(z, y, i, c.one)",
            "for i in range(y.shape[0]):\n    softmax_gradient_row(y, grad_y, grad_z, i)",
            {"softmax_row": softmax_row, "softmax_gradient_row": softmax_gradient_row},
        )
    function = ELEMENTWISE_FUNCTIONS[name]
    columns = "for i in range(z.shape[0]):\n    for j in range(np.uint64(z.shape[1])):\n"
    return RowPasses(
        columns + "        y[i, j] = f(z[i, j], c)",
        columns + "        grad_z[i, j] = grad_y[i, j] * f_prime(z[i, j], y[i, j], c)",
        {"np": np, "f": function.forward, "f_prime": function.derivative},
    )


def softmax_cpu_loops(dtype: np.dtype) -> tuple[CpuLoop, CpuLoop]:
    """Softmax forward and backward loops over the rows of a 2-D array."""
    one = np.dtype(dtype).type(1)

    def softmax_forward_rows(x, out):
        for i in prange(x.shape[0]):
            softmax_row(x, out, i, one)

    def softmax_backward_rows(y, grad_out, grad_x):
        for i in prange(y.shape[0]):
            softmax_gradient_row(y, grad_out, grad_x, i)

    return (
        CpuLoop(softmax_forward_rows, cost=SOFTMAX_COST),
        CpuLoop(softmax_backward_rows, cost=SOFTMAX_COST),
    )


@functools.cache  # the dense family composes its activations from these operations
def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    dtype = np.dtype(dtype)
    operations: dict[str, Any] = {}
    for function in ELEMENTWISE_FUNCTIONS.values():
        operations.update(elementwise_operations(function, dtype))
    softmax_forward_rows, softmax_backward_rows = softmax_cpu_loops(dtype)

    def softmax_forward(x: DeviceArray, out: DeviceArray) -> None:
        if out.size > 0:  # the row loops read each row's first element
            softmax_forward_rows(x, out)

    def softmax_backward(y: DeviceArray, grad_out: DeviceArray, grad_x: DeviceArray) -> None:
        if grad_x.size > 0:
            softmax_backward_rows(y, grad_out, grad_x)

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


def softmax_cuda_operations(registry: CudaKernels, c: Constants) -> dict[str, Any]:
    """One block per row: a block-wide max, then the exponentials and their sum."""
    matrix = registry.array(2)
    scalar = registry.scalar
    reduce = registry.device(block_reduce)
    larger_device = registry.device(larger)

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
    kernels = bind_cuda(globals(), cuda_api, dtype)  # softmax's kernels name ``cuda``
    operations: dict[str, Any] = {}
    for function in ELEMENTWISE_FUNCTIONS.values():
        operations.update(elementwise_operations(function, dtype, kernels))
    operations.update(softmax_cuda_operations(kernels, constants_for(dtype)))
    return operations


class ActivationKernels(Protocol):
    """The activation family's operations, the same on both devices (module doc)."""

    relu_forward: ElementwiseForward
    relu_backward: ElementwiseBackward
    tanh_forward: ElementwiseForward
    tanh_backward: ElementwiseBackward
    sigmoid_forward: ElementwiseForward
    sigmoid_backward: ElementwiseBackward
    hard_sigmoid_forward: ElementwiseForward
    hard_sigmoid_backward: ElementwiseBackward
    softplus_forward: ElementwiseForward
    softplus_backward: ElementwiseBackward
    linear_forward: ElementwiseForward
    linear_backward: ElementwiseBackward
    leaky_relu_forward: ElementwiseForward
    leaky_relu_backward: ElementwiseBackward
    elu_forward: ElementwiseForward
    elu_backward: ElementwiseBackward
    thresholded_linear_forward: ElementwiseForward
    thresholded_linear_backward: ElementwiseBackward
    thresholded_relu_forward: ElementwiseForward
    thresholded_relu_backward: ElementwiseBackward
    clipped_leaky_relu_forward: ElementwiseForward
    clipped_leaky_relu_backward: ElementwiseBackward

    def softmax_forward(self, x: DeviceArray, out: DeviceArray) -> None: ...

    def softmax_backward(
        self, y: DeviceArray, grad_out: DeviceArray, grad_x: DeviceArray
    ) -> None: ...
