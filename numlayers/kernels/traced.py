"""Kernels of traced programs (:mod:`numlayers.tracing`): fused elementwise groups,
reductions, index maps and scans.

Operations (both devices; arrays are flat and C-contiguous, outputs overwritten):

- ``traced_fused(source, name, kinds)``: the loop of a generated per-index body (see
  :func:`fused_source`), compiled through the toolkit on first use and cached by its
  source; returns ``run(count, *arguments)``, ``kinds`` naming each argument's type
  (``"array"``, ``"index"`` for int64 arrays, ``"scalar"``).
- ``traced_reduce(x, out, length, inner, kind)``: ``x`` seen as ``(outer, length,
  inner)``; ``out[o, i]`` is the sum (``kind`` "sum"), max, min or prod over the middle axis.
- ``traced_gather(x, source, out)``: ``out[i] = x[source[i]]`` (transposes, slices,
  integer indexing, repeats and tiles are index maps made on the host).
- ``traced_scatter(x, target, out)``: ``out[target[i]] = x[i]`` (a concatenation's parts).
- ``traced_segment_sum(grad_out, offsets, positions, grad_x)``: ``grad_x[j]`` is the sum
  of ``grad_out[positions[p]]`` for ``p`` in ``offsets[j]:offsets[j + 1]``: the gradient of
  a gather, with repeated indices summed in a fixed order (no atomics).
- ``traced_cumsum(x, out, length, inner, reverse)``: running sums along the middle axis of
  ``(outer, length, inner)`` (from the end when ``reverse``).

A fused body reads each input at the element's index, or, for an input broadcast to the
group's shape, at :func:`~numlayers.kernels.reshaping.strided_offset` of it; every constant
in it is an argument or a captured scalar of the dtype, so float32 kernels do no float64
arithmetic.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numba
import numpy as np
from numba import float32
from numba.extending import register_jitable

from numlayers.kernels import reshaping
from numlayers.kernels.blas import source_digest
from numlayers.kernels.reshaping import strided_offset
from numlayers.kernels.toolkit import (
    CudaKernels,
    DeviceArray,
    cpu_inline,
    cuda_kernels,
    device_index_loop,
    generated_index_loop,
)

#: The fused loops are filed under this module, which Numba's cache watches; the digest
#: of the other file whose code they inline goes into their names, so that an edit
#: there compiles them afresh.
HELPERS_DIGEST = source_digest(reshaping.__file__)

#: the work of one element of a reduction or scan, per element of its axis (toolkit units)
REDUCE_COST = 1.0
#: the work of one gathered element (an indexed read) and of a fused operation
GATHER_COST = 2.0
FUSED_OPERATION_COST = 1.0
#: transcendental operations cost about this many multiply-adds each
TRANSCENDENTAL_COST = 8.0


@cpu_inline
def reduce_sum_element(index, x, length, inner, zero, out):
    outer = index // inner
    base = outer * length * inner + (index - outer * inner)
    total = zero
    for step in range(length):
        total += x[base + step * inner]
    out[index] = total


@cpu_inline
def reduce_prod_element(index, x, length, inner, one, out):
    outer = index // inner
    base = outer * length * inner + (index - outer * inner)
    total = one
    for step in range(length):
        total *= x[base + step * inner]
    out[index] = total


@cpu_inline
def reduce_max_element(index, x, length, inner, unused, out):
    outer = index // inner
    base = outer * length * inner + (index - outer * inner)
    best = x[base]
    for step in range(1, length):
        value = x[base + step * inner]
        if value > best or value != value:
            best = value
    out[index] = best


@cpu_inline
def reduce_min_element(index, x, length, inner, unused, out):
    outer = index // inner
    base = outer * length * inner + (index - outer * inner)
    best = x[base]
    for step in range(1, length):
        value = x[base + step * inner]
        if value < best or value != value:
            best = value
    out[index] = best


@cpu_inline
def gather_element(index, x, source, out):
    out[index] = x[source[index]]


@cpu_inline
def scatter_element(index, x, target, out):
    out[target[index]] = x[index]


@cpu_inline
def segment_sum_element(index, grad_out, offsets, positions, zero, grad_x):
    total = zero
    for p in range(offsets[index], offsets[index + 1]):
        total += grad_out[positions[p]]
    grad_x[index] = total


@cpu_inline
def cumsum_element(index, x, length, inner, reverse, zero, out):
    outer = index // inner
    base = outer * length * inner + (index - outer * inner)
    total = zero
    for step in range(length):
        position = base + ((length - 1 - step) if reverse else step) * inner
        total += x[position]
        out[position] = total


#: float32 ``tanh`` on the CPU: ``x P(x^2) / Q(x^2)`` for ``|x| <= 9`` (beyond, tanh is 1 to
#: within 3e-8, under float32's resolution there). A weighted least-squares rational fit
#: made for numlayers (largest error 3.6e-7 in float32). Unlike the C library's ``tanhf``
#: (a call per element, 40 ns on the development machine) it is arithmetic that LLVM
#: vectorises: 20 times faster.
TANH_CLAMP = 9.0
TANH_NUMERATOR = (1.0, 0.13377457857131958, 0.0034913993440568447, 2.05424330488313e-05,
                  1.326719889505057e-08)  # fmt: skip
TANH_DENOMINATOR = (1.0, 0.46710771322250366, 0.025860914960503578, 0.00032788788666948676,
                    7.739696457065293e-07)  # fmt: skip


@register_jitable
def rational_tanh(value, c):
    """tanh by the rational fit; ``c`` is (clamp, one, numerator..., denominator...)."""
    x = value
    if x > c[0]:
        x = c[0]
    elif x < -c[0]:
        x = -c[0]
    z = x * x
    numerator = (((c[6] * z + c[5]) * z + c[4]) * z + c[3]) * z + c[2]
    denominator = (((c[11] * z + c[10]) * z + c[9]) * z + c[8]) * z + c[7]
    result = x * numerator / denominator
    if result > c[1]:
        result = c[1]
    elif result < -c[1]:
        result = -c[1]
    return result


@cpu_inline
def library_tanh(value, c):
    return math.tanh(value)


#: float32 sin and cos on CUDA: libdevice's ``sinf``/``cosf`` reduce large arguments in
#: float64, so these reduce by pi/2 in three float32 parts (exact products for
#: ``|x| < 6000``; accuracy falls slowly beyond) and sum Taylor series on [-pi/4, pi/4]
#: (truncation under 2e-9 there).
HALF_PI_PARTS = (1.5703125, 0.0004837512969970703, 7.549790126404332e-08)
SINE_SERIES = (1.0, -1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880)
COSINE_SERIES = (1.0, -0.5, 1.0 / 24, -1.0 / 720, 1.0 / 40320, -1.0 / 3628800)


def reduced_sine_cosine(value, c):
    """``(sin(r), cos(r), quadrant)`` with ``value = quadrant * pi/2 + r`` (see above);
    ``c`` is :func:`trig_constants`."""
    turns = int(math.floor(value * c[0] + c[1]))
    k = float32(turns)
    r = ((value - k * c[2]) - k * c[3]) - k * c[4]
    z = r * r
    sine = r * ((((c[9] * z + c[8]) * z + c[7]) * z + c[6]) * z + c[5])
    cosine = (((((c[15] * z + c[14]) * z + c[13]) * z + c[12]) * z + c[11]) * z) + c[10]
    return sine, cosine, turns & 3


def reduced_sine(value, c):
    sine, cosine, quadrant = reduced_sine_cosine(value, c)
    if quadrant == 0:
        return sine
    if quadrant == 1:
        return cosine
    return -sine if quadrant == 2 else -cosine


def reduced_cosine(value, c):
    sine, cosine, quadrant = reduced_sine_cosine(value, c)
    if quadrant == 0:
        return cosine
    if quadrant == 1:
        return -sine
    return -cosine if quadrant == 2 else sine


@cpu_inline
def library_sine(value, c):
    return math.sin(value)


@cpu_inline
def library_cosine(value, c):
    return math.cos(value)


def trig_constants(dtype: np.dtype) -> tuple[Any, ...]:
    cast = np.dtype(dtype).type
    values = (2.0 / math.pi, 0.5, *HALF_PI_PARTS, *SINE_SERIES, *COSINE_SERIES)
    return tuple(cast(v) for v in values)


def tanh_constants(dtype: np.dtype) -> tuple[Any, ...]:
    cast = np.dtype(dtype).type
    return tuple(cast(v) for v in (TANH_CLAMP, 1.0, *TANH_NUMERATOR, *TANH_DENOMINATOR))


# Selections are small functions the fused bodies call, not conditional expressions
# written into them: Numba's compile time grows quickly with the branches of one
# function (100 written-in maximums took 7 s, 100 additions 0.6 s), while a call costs
# nothing once LLVM inlines it.


@register_jitable
def choose(condition, a, b):
    return a if condition else b


@register_jitable
def larger(a, b):
    """``np.maximum``: NaN if either is."""
    return a if (a >= b or a != a) else b


@register_jitable
def smaller(a, b):
    """``np.minimum``: NaN if either is."""
    return a if (a <= b or a != a) else b


@register_jitable
def floor_of(a, one):
    """``np.floor`` in ``a``'s own dtype (``math.floor`` returns an integer): ``a`` less
    its floored remainder; infinities and NaN stay as they are."""
    remainder = a % one
    return a - remainder if remainder == remainder else a


@register_jitable
def signum(a, one, zero):
    """``np.sign``: NaN stays NaN."""
    if a > zero:
        return one
    if a < zero:
        return -one
    return a


REDUCE_BODIES = {
    "sum": reduce_sum_element,
    "prod": reduce_prod_element,
    "max": reduce_max_element,
    "min": reduce_min_element,
}

# ---------------------------------------------------------------- generated bodies

#: the expression of each elementwise operation of a traced program; ``zero`` and ``one``
#: are scalars of the kernel's dtype and ``tanh_of``, ``sin_of``, ``cos_of`` the device's
#: versions of those functions, all captured by the body (see :func:`fused_builder`)
EXPRESSIONS: dict[str, str] = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "div": "{0} / {1}",
    "pow": "{0} ** {1}",
    "maximum": "larger({0}, {1})",
    "minimum": "smaller({0}, {1})",
    "gt": "choose({0} > {1}, one, zero)",
    "ge": "choose({0} >= {1}, one, zero)",
    "lt": "choose({0} < {1}, one, zero)",
    "le": "choose({0} <= {1}, one, zero)",
    "eq": "choose({0} == {1}, one, zero)",
    "ne": "choose({0} != {1}, one, zero)",
    "where": "choose({0} != zero, {1}, {2})",
    "neg": "-{0}",
    "copy": "{0}",
    "abs": "abs({0})",
    "exp": "math.exp({0})",
    "log": "math.log({0})",
    "log1p": "math.log1p({0})",
    "expm1": "math.expm1({0})",
    "sqrt": "math.sqrt({0})",
    "square": "{0} * {0}",
    "tanh": "tanh_of({0}, tanh_constants)",
    "sin": "sin_of({0}, trig_constants)",
    "cos": "cos_of({0}, trig_constants)",
    "sign": "signum({0}, one, zero)",
    "floor": "floor_of({0}, one)",
    "ceil": "-floor_of(-{0}, one)",
    "sigmoid": "one / (one + math.exp(-{0}))",
    "reciprocal": "one / {0}",
}

#: the most arguments a fused body takes, ``index`` included: CPython passes a call of more
#: than 30 arguments as a tuple, which CUDA kernels cannot unpack (a kernel calls its body)
MAX_FUSED_ARGUMENTS = 30

#: a fused body: per input whether it is read at the index (True) or broadcast (False),
#: the scalar count, each operation as (op, operand names), and the values stored
FusedStatement = tuple[str, tuple[str, ...]]


def fused_source(
    direct: Sequence[bool],
    scalar_count: int,
    statements: Sequence[FusedStatement],
    stored: Sequence[str],
) -> tuple[str, str, tuple[str, ...]]:
    """The source of a fused per-index body, its name and the kinds of its arguments.

    Operand names are ``a<k>`` (input ``k``), ``s<k>`` (scalar ``k``) and ``t<k>`` (the
    value of statement ``k``); ``stored`` names the values written to the outputs.
    The body is ``name(index, shape, a0.., strides of broadcast inputs.., s0.., out0..)``.
    """
    inputs = [f"a{k}" for k in range(len(direct))]
    strides = [f"strides{k}" for k, is_direct in enumerate(direct) if not is_direct]
    scalars = [f"s{k}" for k in range(scalar_count)]
    outputs = [f"out{k}" for k in range(len(stored))]
    lines = []
    for k, is_direct in enumerate(direct):
        where = "index" if is_direct else f"strided_offset(index, shape, strides{k})"
        lines.append(f"    v_a{k} = a{k}[{where}]")
    for k, (op, operands) in enumerate(statements):
        names = [f"v_{name}" if name[0] in "at" else name for name in operands]
        lines.append(f"    v_t{k} = {EXPRESSIONS[op].format(*names)}")
    for k, name in enumerate(stored):
        lines.append(f"    out{k}[index] = {'v_' + name if name[0] in 'at' else name}")
    arguments = ", ".join(["index", "shape", *inputs, *strides, *scalars, *outputs])
    body = "\n".join(lines)
    digest = hashlib.sha1(f"{HELPERS_DIGEST}\n{arguments}\n{body}".encode()).hexdigest()[:16]
    name = f"fused_{digest}_element"
    kinds = ("index",) + ("array",) * len(inputs) + ("index",) * len(strides)
    kinds += ("scalar",) * scalar_count + ("array",) * len(outputs)
    return f"def {name}({arguments}):\n{body}\n", name, kinds


def fused_cost(source: str) -> float:
    """The work of one element of a fused body (its source), in the toolkit's units."""
    statements = source.count("\n    v_t")
    transcendental = source.count("math.") + source.count("_of(")
    return FUSED_OPERATION_COST * max(1, statements) + TRANSCENDENTAL_COST * transcendental


def fused_builder(dtype: np.dtype, cuda: CudaKernels | None) -> Callable[..., Any]:
    """``traced_fused(source, name, kinds)`` for one device, caching the loops by source."""
    cast = dtype.type
    if cuda is not None:  # the GPU's tanhf is fast
        tanh_of = cuda.device(library_tanh)
        single = dtype == np.float32
        sin_of = cuda.device(reduced_sine if single else library_sine)
        cos_of = cuda.device(reduced_cosine if single else library_cosine)
    else:
        tanh_of = rational_tanh if dtype == np.float32 else library_tanh
        sin_of, cos_of = library_sine, library_cosine
    captured = {
        "sin_of": sin_of,
        "cos_of": cos_of,
        "trig_constants": trig_constants(dtype),
        "zero": cast(0),
        "one": cast(1),
        "tanh_of": tanh_of,
        "tanh_constants": tanh_constants(dtype),
    }
    globals_ = {
        "math": math,
        "strided_offset": strided_offset,
        "choose": choose,
        "larger": larger,
        "smaller": smaller,
        "signum": signum,
        "floor_of": floor_of,
    }
    loops: dict[str, Callable[..., None]] = {}

    def traced_fused(source: str, name: str, kinds: Sequence[str]) -> Callable[..., None]:
        loop = loops.get(source)
        if loop is None:
            argtypes = [_argtype(cuda, kind) for kind in kinds] if cuda is not None else []
            loop = loops[source] = generated_index_loop(
                source, name, choose, captured, globals_, cuda, argtypes,
                cost=fused_cost(source),
            )  # fmt: skip
        return loop

    return traced_fused


def _argtype(cuda: CudaKernels, kind: str) -> Any:
    if kind == "index":
        return cuda.array(1, np.int64)
    if kind == "array":
        return cuda.array(1)
    return cuda.scalar


def flat(array: Any) -> Any:
    return array.reshape(array.size)


def traced_operations(dtype: np.dtype, cuda: CudaKernels | None) -> dict[str, Any]:
    """The family's operations on the CPU (``cuda`` None) or on CUDA."""
    cast = dtype.type
    zero, one = cast(0), cast(1)
    scalar = numba.from_dtype(dtype)
    vector = scalar[::1]
    index_vector = numba.int64[::1]
    count = numba.int64

    def loop(body: Any, *argtypes: Any, cost: float = REDUCE_COST) -> Any:
        return device_index_loop(cuda, body, argtypes, cost=cost)

    reduce_loops = {
        kind: loop(body, vector, count, count, scalar, vector, cost=REDUCE_COST * 8)
        for kind, body in REDUCE_BODIES.items()
    }
    gather_loop = loop(gather_element, vector, index_vector, vector, cost=GATHER_COST)
    scatter_loop = loop(scatter_element, vector, index_vector, vector, cost=GATHER_COST)
    segment_loop = loop(
        segment_sum_element, vector, index_vector, index_vector, scalar, vector, cost=GATHER_COST
    )
    cumsum_loop = loop(cumsum_element, vector, count, count, numba.boolean, scalar, vector)

    def traced_reduce(x: Any, out: Any, length: int, inner: int, kind: str) -> None:
        reduce_loops[kind](
            out.size, flat(x), length, inner, one if kind == "prod" else zero, flat(out)
        )

    def traced_gather(x: Any, source: Any, out: Any) -> None:
        gather_loop(out.size, flat(x), source, flat(out))

    def traced_scatter(x: Any, target: Any, out: Any) -> None:
        scatter_loop(x.size, flat(x), target, flat(out))

    def traced_segment_sum(grad_out: Any, offsets: Any, positions: Any, grad_x: Any) -> None:
        segment_loop(grad_x.size, flat(grad_out), offsets, positions, zero, flat(grad_x))

    def traced_cumsum(x: Any, out: Any, length: int, inner: int, reverse: bool) -> None:
        lines = out.size // length if length else 0
        cumsum_loop(lines, flat(x), length, inner, bool(reverse), zero, flat(out))

    return {
        "traced_fused": fused_builder(dtype, cuda),
        "traced_reduce": traced_reduce,
        "traced_gather": traced_gather,
        "traced_scatter": traced_scatter,
        "traced_segment_sum": traced_segment_sum,
        "traced_cumsum": traced_cumsum,
    }


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    return traced_operations(dtype, None)


#: a body using every elementwise operation, in a chain, and a broadcast input; registered
#: with the CUDA kernels so that the PTX check compiles the generator's output
_SAMPLE_STATEMENTS: tuple[FusedStatement, ...] = tuple(
    (op, (f"t{k - 1}" if k else "a0", "a1", "s0")[: 1 + ("{1}" in form) + ("{2}" in form)])
    for k, (op, form) in enumerate(EXPRESSIONS.items())
)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    cuda = cuda_kernels(cuda_api, dtype)
    operations = traced_operations(dtype, cuda)
    source, name, kinds = fused_source(
        (True, False), 1, _SAMPLE_STATEMENTS, [f"t{len(_SAMPLE_STATEMENTS) - 1}"]
    )
    operations["traced_fused"](source, name, kinds)
    return operations


class FusedLoop(Protocol):
    """``run(count, *arguments)``: a fused body at each of ``count`` indices."""

    def __call__(self, count: int, *arguments: Any) -> None: ...


class TracedKernels(Protocol):
    """The traced-program family's operations, the same on both devices (module doc)."""

    def traced_fused(self, source: str, name: str, kinds: Sequence[str]) -> FusedLoop: ...

    def traced_reduce(
        self, x: DeviceArray, out: DeviceArray, length: int, inner: int, kind: str
    ) -> None: ...

    def traced_gather(self, x: DeviceArray, source: DeviceArray, out: DeviceArray) -> None: ...

    def traced_scatter(self, x: DeviceArray, target: DeviceArray, out: DeviceArray) -> None: ...

    def traced_segment_sum(
        self, grad_out: DeviceArray, offsets: DeviceArray, positions: DeviceArray,
        grad_x: DeviceArray,
    ) -> None: ...  # fmt: skip

    def traced_cumsum(
        self, x: DeviceArray, out: DeviceArray, length: int, inner: int, reverse: bool
    ) -> None: ...
