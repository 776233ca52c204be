"""Activations with trainable parameters, one of each per feature, and their gradients:
Keras 0.3's PReLU and ParametricSoftplus, and 0.3.3's SReLU.

A sample's features are its elements: ``x`` is ``(batch, *features)`` and each parameter
has the shape ``features`` (Keras 0.3's: the input shape without the batch axis). The
operations see ``x`` as ``(batch, F)`` and each parameter as ``(F,)``; every array is
C-contiguous. Operations (both devices; ``NAME`` is each of :data:`FEATURE_ACTIVATIONS`,
``parameters`` the sequence of its parameter arrays in the order listed below):

- ``NAME_forward(x, parameters, out)``: ``out = f(x; p_1, ..., p_k)``, each ``p`` taken
  at the element's feature
- ``NAME_backward(x, parameters, grad_out, grad_x, grad_parameters, need_grad_x)``:
  ``grad_x = grad_out * df/dx`` when ``need_grad_x`` (else ``grad_x`` is not touched,
  and may be any array), and each ``grad_parameters[k]`` overwritten with the sum over
  the batch of ``grad_out * df/dp_k``

The functions (Keras' definitions, built from the formulas of
:mod:`numlayers.kernels.activations`):

- ``prelu(x; alpha) = x if x > 0 else alpha x``
- ``parametric_softplus(x; alpha, beta) = alpha log(1 + exp(beta x))``
- ``srelu(x; t_left, a_left, t_right, a_right)``: with ``d = x - t_left`` and
  ``m = |t_right|`` (Keras' ``t_right_actual`` is ``t_left + m``),
  ``t_left + min(leaky_relu(d, a_left), m) + a_right max(d - m, 0)``: slope ``a_left``
  left of ``t_left``, the identity up to ``t_left + m``, slope ``a_right`` beyond.

Each function is a formula and its gradients, written once as scalar functions
(:class:`FeatureActivation`); the loops are generated from them. The forward pass is
elementwise. The backward pass sums over the batch, so each of its indices owns whole
features, and no two threads ever add into the same sum (no atomics, no races). CUDA
runs one thread per feature looping over the batch: neighbouring threads read
neighbouring features (coalesced) and keep their sums in registers. The CPU runs one
index per block of :data:`FEATURE_BLOCK` features, a row segment of the block at a
time (contiguous and vectorised), the sums kept in the gradient arrays, and spreads
the blocks over every core when the work is large.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numba
import numpy as np
from numba import prange

from numlayers.kernels import activations
from numlayers.kernels.activations import (
    clipped_leaky_relu,
    clipped_leaky_relu_derivative,
    leaky_relu,
    leaky_relu_derivative,
    sigmoid,
    softplus,
)
from numlayers.kernels.blas import source_digest
from numlayers.kernels.toolkit import (
    CpuLoop,
    CudaKernels,
    DeviceArray,
    constants_for,
    cpu_index_loop,
    cpu_inline,
    cuda_kernels,
    generate_function,
)

#: the formulas inline those of activations.py: the cached loops' names change with it
ACTIVATIONS_DIGEST = source_digest(activations.__file__)

#: features of one CPU backward index: 1 KiB of float32 per row segment, long enough to
#: vectorise, and 4096 features still make 16 blocks to share between the cores
FEATURE_BLOCK = 256


# --------------------------------------------------------------------------- formulas
# ``f(x, c, *parameters)`` and ``gradients(x, c, *parameters) -> (df/dx, df/dp_1, ...)``,
# ``c`` the toolkit's Constants in the kernel's dtype.


@cpu_inline
def prelu(x, c, alpha):
    return leaky_relu(x, c, alpha)


@cpu_inline
def prelu_gradients(x, c, alpha):
    # Keras: alpha (x - |x|) / 2, so d/d alpha is min(x, 0)
    return leaky_relu_derivative(x, x, c, alpha), (c.zero if x > c.zero else x)


@cpu_inline
def parametric_softplus(x, c, alpha, beta):
    return alpha * softplus(beta * x, c)


@cpu_inline
def parametric_softplus_gradients(x, c, alpha, beta):
    slope = sigmoid(beta * x, c)  # softplus' derivative
    return alpha * beta * slope, softplus(beta * x, c), alpha * x * slope


@cpu_inline
def srelu(x, c, t_left, a_left, t_right, a_right):
    d = x - t_left
    m = abs(t_right)
    beyond = d - m if d > m else c.zero
    return t_left + clipped_leaky_relu(d, c, a_left, m) + a_right * beyond


@cpu_inline
def srelu_gradients(x, c, t_left, a_left, t_right, a_right):
    d = x - t_left
    m = abs(t_right)
    clipped = leaky_relu(d, c, a_left) > m  # the min takes m
    slope_right = a_right if d > m else c.zero
    slope = clipped_leaky_relu_derivative(d, d, c, a_left, m) + slope_right
    # y = t_left + g(x - t_left), so dy/dt_left = 1 - g'(d); m = |t_right|
    sign = c.zero if t_right == c.zero else (c.one if t_right > c.zero else -c.one)
    return (
        slope,
        c.one - slope,
        c.zero if clipped or d > c.zero else d,
        sign * ((c.one if clipped else c.zero) - slope_right),
        d - m if d > m else c.zero,
    )


@dataclass(frozen=True)
class FeatureActivation:
    """A function ``y = f(x; p_1, ..., p_k)`` with one of each parameter per feature.

    Attributes:
        name: the operation prefix (``NAME_forward``, ``NAME_backward``).
        forward: ``forward(x, c, *parameters) -> y``, a module-level :func:`cpu_inline`
            function (``c`` is a :class:`~numlayers.kernels.toolkit.Constants`).
        gradients: ``gradients(x, c, *parameters) -> (df/dx, df/dp_1, ..., df/dp_k)``.
        parameters: the parameters' names, in the operations' order.
        forward_cost, backward_cost: the work of one element of each pass, in the units
            of :data:`~numlayers.kernels.toolkit.PARALLEL_MIN_WORK`.
    """

    name: str
    forward: Callable[..., Any]
    gradients: Callable[..., Any]
    parameters: tuple[str, ...]
    forward_cost: float = 1.0
    backward_cost: float = 1.0


#: every activation of this family, by name. Costs: each pass's time per element on one
#: core against ``scale_add_into``'s, on 256 x 4096 float32 on the 2-core development
#: machine (softplus' exponential and logarithm dominate its passes).
FEATURE_ACTIVATIONS = {
    function.name: function
    for function in (
        FeatureActivation(
            "prelu", prelu, prelu_gradients, ("alpha",), forward_cost=1.2, backward_cost=4.0
        ),
        FeatureActivation(
            "parametric_softplus",
            parametric_softplus,
            parametric_softplus_gradients,
            ("alpha", "beta"),
            forward_cost=12.0,
            backward_cost=16.0,
        ),
        FeatureActivation(
            "srelu",
            srelu,
            srelu_gradients,
            ("t_left", "a_left", "t_right", "a_right"),
            forward_cost=2.0,
            backward_cost=11.0,
        ),
    )
}


# ----------------------------------------------------------------- generated loops


class Sources:
    """The source of ``function``'s per-index bodies (the forward's on both devices, the
    backward's on CUDA) and of the CPU's backward loop."""

    def __init__(self, function: FeatureActivation) -> None:
        self.name = function.name
        self.names = function.parameters
        self.parameters = ", ".join(self.names)
        self.backward_arguments = (
            f"x, {self.parameters}, grad_out, grad_x, "
            + ", ".join(f"grad_{name}" for name in self.names)
            + ", need_grad_x"
        )

    def forward_element(self) -> str:
        at_feature = ", ".join(f"{name}[column]" for name in self.names)
        return (
            f"def {self.name}_forward_element(row, column, x, {self.parameters}, out):\n"
            f"    out[row, column] = forward(x[row, column], c, {at_feature})\n"
        )

    def gradient_step(self, indent: str, element: str, parameter: str, total: str) -> str:
        """One element's gradients into ``grad_x`` and each parameter's sum. The formats
        name what to index: ``element`` the element of ``x``, ``grad_out`` and ``grad_x``
        (``{array}``), ``parameter`` the parameters (``{name}``), ``total`` the sums."""
        array = element.format
        partials = ", ".join(f"d_{name}" for name in self.names)
        at_feature = ", ".join(parameter.format(name=name) for name in self.names)
        return (
            f"{indent}d_x, {partials} = gradients({array(array='x')}, c, {at_feature})\n"
            f"{indent}g = {array(array='grad_out')}\n"
            f"{indent}if need_grad_x:\n"
            f"{indent}    {array(array='grad_x')} = g * d_x\n"
            + "".join(f"{indent}{total.format(name=name)} += g * d_{name}\n" for name in self.names)
        )

    def backward_feature(self) -> str:
        """CUDA's body: one feature, the batch in the inner loop, the sums in registers."""
        return (
            f"def {self.name}_backward_feature(column, {self.backward_arguments}):\n"
            + "".join(f"    sum_{name} = c.zero\n" for name in self.names)
            + "    for row in range(x.shape[0]):\n"
            + self.gradient_step(" " * 8, "{array}[row, column]", "{name}[column]", "sum_{name}")
            + "".join(f"    grad_{name}[column] = sum_{name}\n" for name in self.names)
        )

    def backward_blocks(self, loop_name: str) -> str:
        """The CPU's loop over blocks of features (serial or parallel, by the work), each
        a row segment at a time. The segments are slices (a loop over a slice from 0
        vectorises, one indexing from ``start`` does not) and the sums fresh arrays
        (adding into arrays that may alias the others does not vectorise either). The
        block's body is written into the loop: compiled on its own, it doubled the
        compile time."""
        return (
            f"def {loop_name}({self.backward_arguments}):\n"
            "    for block in prange((x.shape[1] + width - 1) // width):\n"
            "        start = block * width\n"
            "        stop = min(start + width, x.shape[1])\n"
            + "".join(
                f"        sum_{name} = np.zeros(stop - start, x.dtype)\n"
                f"        {name}_block = {name}[start:stop]\n"
                for name in self.names
            )
            + "        for row in range(x.shape[0]):\n"
            + "".join(
                f"            {array}_row = {array}[row, start:stop]\n" for array in ROW_ARRAYS
            )
            + "            for column in range(stop - start):\n"
            + self.gradient_step(
                " " * 16, "{array}_row[column]", "{name}_block[column]", "sum_{name}[column]"
            )
            + "".join(f"        grad_{name}[start:stop] = sum_{name}\n" for name in self.names)
        )


#: the arrays of the backward pass indexed like ``x``
ROW_ARRAYS = ("x", "grad_out", "grad_x")


def generate(
    function: FeatureActivation, source: str, name: str, captured: dict[str, Any]
) -> Callable[..., Any]:
    return generate_function(source, name, function.forward, captured, {"prange": prange, "np": np})


def formulas(
    function: FeatureActivation, dtype: np.dtype, compile_formula: Callable[[Any], Any]
) -> dict[str, Any]:
    """What the generated bodies capture: the formulas (compiled by ``compile_formula``)
    and the constants in ``dtype``."""
    return {
        "forward": compile_formula(function.forward),
        "gradients": compile_formula(function.gradients),
        "c": constants_for(dtype),
    }


def feature_operations(
    function: FeatureActivation,
    forward_loop: Callable[..., None],
    backward_loop: Callable[..., None],
) -> dict[str, Callable[..., None]]:
    """``NAME_forward`` and ``NAME_backward`` from a device's loops:
    ``forward_loop(rows, features, x, *parameters, out)`` and
    ``backward_loop(features, x, *parameters, grad_out, grad_x, *grad_parameters,
    need_grad_x)`` (2-D ``x`` and gradients, 1-D parameters)."""
    count = len(function.parameters)

    def flat(arrays: Sequence[Any], what: str) -> list[Any]:
        if len(arrays) != count:
            raise TypeError(
                f"{function.name} takes {count} {what} arrays {list(function.parameters)}, "
                f"received {len(arrays)}"
            )
        return [array.reshape(array.size) for array in arrays]

    def forward(x: Any, parameters: Sequence[Any], out: Any) -> None:
        rows, features = x.shape[0], x.size // x.shape[0]
        flat_parameters = flat(parameters, "parameter")
        forward_loop(
            rows, features, x.reshape(rows, features), *flat_parameters, out.reshape(rows, features)
        )

    def backward(
        x: Any,
        parameters: Sequence[Any],
        grad_out: Any,
        grad_x: Any,
        grad_parameters: Sequence[Any],
        need_grad_x: bool,
    ) -> None:
        rows, features = x.shape[0], x.size // x.shape[0]
        x_rows = x.reshape(rows, features)
        # without need_grad_x the loops never write grad_x: x stands in for its type
        grad_x_rows = grad_x.reshape(rows, features) if need_grad_x else x_rows
        backward_loop(
            features,
            x_rows,
            *flat(parameters, "parameter"),
            grad_out.reshape(rows, features),
            grad_x_rows,
            *flat(grad_parameters, "gradient"),
            bool(need_grad_x),
        )

    return {f"{function.name}_forward": forward, f"{function.name}_backward": backward}


def cpu_operations(function: FeatureActivation, dtype: np.dtype) -> dict[str, Callable[..., None]]:
    sources = Sources(function)
    captured = formulas(function, dtype, cpu_inline)
    forward_body = cpu_inline(
        generate(function, sources.forward_element(), f"{function.name}_forward_element", captured)
    )
    forward_loop = cpu_index_loop(
        forward_body,
        dims=2,
        cost=function.forward_cost,
        name=f"{function.name}_forward_loop_{ACTIVATIONS_DIGEST}",
        fastmath={"contract"},
    )
    loop_name = f"{function.name}_backward_blocks_{ACTIVATIONS_DIGEST}"
    blocks = CpuLoop(
        generate(
            function,
            sources.backward_blocks(loop_name),
            loop_name,
            {**captured, "width": FEATURE_BLOCK},
        ),
        cost=function.backward_cost,
        size_argument=0,
        fastmath={"contract"},
    )

    def backward_loop(features: int, *arguments: Any) -> None:
        blocks(*arguments)

    return feature_operations(function, forward_loop, backward_loop)


def cuda_operations(
    function: FeatureActivation, cuda: CudaKernels
) -> dict[str, Callable[..., None]]:
    sources = Sources(function)
    captured = formulas(function, cuda.dtype, cuda.device)
    matrix, vector = cuda.array(2), cuda.array(1)
    vectors = (vector,) * len(function.parameters)
    forward_loop = cuda.index_loop(
        generate(function, sources.forward_element(), f"{function.name}_forward_element", captured),
        (matrix, *vectors, matrix),
        dims=2,
    )
    backward_loop = cuda.index_loop(
        generate(
            function, sources.backward_feature(), f"{function.name}_backward_feature", captured
        ),
        (matrix, *vectors, matrix, matrix, *vectors, numba.types.boolean),
    )
    return feature_operations(function, forward_loop, backward_loop)


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    dtype = np.dtype(dtype)
    operations: dict[str, Any] = {}
    for function in FEATURE_ACTIVATIONS.values():
        operations.update(cpu_operations(function, dtype))
    return operations


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    cuda = cuda_kernels(cuda_api, np.dtype(dtype))
    operations: dict[str, Any] = {}
    for function in FEATURE_ACTIVATIONS.values():
        operations.update(cuda_operations(function, cuda))
    return operations


class FeatureActivationForward(Protocol):
    """``NAME_forward(x, parameters, out)`` (module doc)."""

    def __call__(
        self, x: DeviceArray, parameters: Sequence[DeviceArray], out: DeviceArray
    ) -> None: ...


class FeatureActivationBackward(Protocol):
    """``NAME_backward(x, parameters, grad_out, grad_x, grad_parameters, need_grad_x)``
    (module doc)."""

    def __call__(
        self,
        x: DeviceArray,
        parameters: Sequence[DeviceArray],
        grad_out: DeviceArray,
        grad_x: DeviceArray,
        grad_parameters: Sequence[DeviceArray],
        need_grad_x: bool,
    ) -> None: ...


class ParametricActivationKernels(Protocol):
    """The parametric activation family's operations, the same on both devices (module doc)."""

    prelu_forward: FeatureActivationForward
    prelu_backward: FeatureActivationBackward
    parametric_softplus_forward: FeatureActivationForward
    parametric_softplus_backward: FeatureActivationBackward
    srelu_forward: FeatureActivationForward
    srelu_backward: FeatureActivationBackward
