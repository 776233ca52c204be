"""Fully connected layer: ``out = x @ weight + bias`` and its gradients.

Operations (both devices):

- ``dense_forward(x, weight, bias, out)``; ``bias`` may have length 0 (no bias)
- ``dense_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, need_grad_x)``:
  ``grad_weight = x.T @ grad_out``, ``grad_bias = grad_out.sum(0)`` and, when
  ``need_grad_x``, ``grad_x = grad_out @ weight.T`` (the first layer of a model
  skips that product).
- ``dense_activation_forward(x, weight, bias, z, y, activation)``: ``dense_forward``
  into ``z``, then ``y = f(z)`` for the activation named ``activation`` (any of
  :data:`numlayers.activations.ACTIVATIONS`; softmax over the rows)
- ``dense_activation_backward(x, weight, z, y, grad_y, grad_z, grad_x, grad_weight,
  grad_bias, need_grad_x, activation)``: ``grad_z`` from ``grad_y`` through the
  activation, then ``dense_backward`` from ``grad_z``

CPU: :func:`~numlayers.kernels.blas.product` (BLAS in blocks on every core; the bias
is added to each block while it is in cache, and summed as a product with ones). A
layer small enough for one block runs each pass as one compiled call
(:func:`fused_cpu_passes`): per layer and pass, that saves a call through Python and
a trip over memory. Larger layers follow the products with the activation operations
of :mod:`numlayers.kernels.activations`, which use every core.
CUDA: the tiled GEMM of :mod:`numlayers.kernels.matmul`; its activation epilogue
applies an elementwise activation as it stores (one launch per forward pass), while
softmax (whole rows) and products through cuBLAS are followed by the activation kernels.
Both devices' operations are :func:`dense_operations` over the device's products.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
from numba import njit

from numlayers.kernels import activations, blas, matmul
from numlayers.kernels.activations import ELEMENTWISE_CODES, constants_for
from numlayers.kernels.arrays import sum_rows_launcher
from numlayers.kernels.blas import (
    block_count,
    gemm_one_block,
    gemm_region,
    njit_calling_blas,
    product,
    require_contiguous_rows,
)
from numlayers.kernels.toolkit import KERNEL_OPTIONS, DeviceArray, generate_function

#: the fused passes inline activations.py's formulas and call blas.py: their cached
#: names change with either file
FUSED_DIGEST = blas.source_digest(activations.__file__, blas.__file__)


class OneCallPasses(NamedTuple):
    """The CPU's passes of a layer whose products are one BLAS block each, as one
    compiled call per pass (:func:`~numlayers.kernels.blas.block_count`)."""

    #: ``(x, weight, grad_out, grad_x, grad_weight, grad_bias, need_grad_x)``
    backward: Callable[..., None]
    #: the forward and backward passes with the activation of that name
    with_activation: Callable[[str], tuple[Any, Any]]


def dense_operations(
    matmul_operations: dict[str, Any],
    column_sums: Callable[[Any, Any], None],
    activation_operations: dict[str, Any],
    one_call: OneCallPasses | None = None,
    activated_product: Callable[..., bool] | None = None,
) -> dict[str, Any]:
    """The dense operations (module doc) from a device's :mod:`~numlayers.kernels.matmul`
    operations, its ``column_sums(x, out)`` and its activation operations; with
    ``one_call`` (the CPU), small layers run each pass as one call; with
    ``activated_product`` (CUDA's :func:`~numlayers.kernels.matmul.gemm_launcher`),
    the forward pass of an elementwise activation is one product that activates too."""
    matmul = matmul_operations["matmul"]
    matmul_transpose_a = matmul_operations["matmul_transpose_a"]
    matmul_transpose_b = matmul_operations["matmul_transpose_b"]

    def dense_forward(x: Any, weight: Any, bias: Any, out: Any) -> None:
        matmul(x, weight, bias, out)

    def dense_backward(
        x: Any,
        weight: Any,
        grad_out: Any,
        grad_x: Any,
        grad_weight: Any,
        grad_bias: Any,
        need_grad_x: bool,
    ) -> None:
        rows, inputs = x.shape
        if one_call is not None and block_count(rows, inputs, grad_out.shape[1]) == 1:
            one_call.backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, need_grad_x)
            return
        if need_grad_x:
            matmul_transpose_b(grad_out, weight, grad_x)
        matmul_transpose_a(x, grad_out, grad_weight)
        if grad_bias.shape[0] > 0:
            column_sums(grad_out, grad_bias)

    def one_call_passes(x: Any, out_columns: int, activation: str) -> tuple[Any, Any] | None:
        """The one-call passes with ``activation`` where they apply, else None."""
        if one_call is None or block_count(x.shape[0], out_columns, x.shape[1]) > 1:
            return None
        return one_call.with_activation(activation)

    def dense_activation_forward(
        x: Any, weight: Any, bias: Any, z: Any, y: Any, activation: str
    ) -> None:
        passes = one_call_passes(x, z.shape[1], activation)
        if passes is not None:
            passes[0](x, weight, bias, z, y)
            return
        code = ELEMENTWISE_CODES.get(activation)
        if (
            activated_product is not None
            and code is not None
            and activated_product(x, weight, bias, z, y, code)
        ):
            return
        matmul(x, weight, bias, z)
        activation_operations[f"{activation}_forward"](z, y)

    def dense_activation_backward(
        x: Any,
        weight: Any,
        z: Any,
        y: Any,
        grad_y: Any,
        grad_z: Any,
        grad_x: Any,
        grad_weight: Any,
        grad_bias: Any,
        need_grad_x: bool,
        activation: str,
    ) -> None:
        passes = one_call_passes(x, z.shape[1], activation)
        if passes is not None:
            passes[1](x, weight, z, y, grad_y, grad_z, grad_x, grad_weight, grad_bias, need_grad_x)
            return
        if activation == "softmax":
            activation_operations["softmax_backward"](y, grad_y, grad_z)
        else:
            activation_operations[f"{activation}_backward"](z, y, grad_y, grad_z)
        dense_backward(x, weight, grad_z, grad_x, grad_weight, grad_bias, need_grad_x)

    return {
        "dense_forward": dense_forward,
        "dense_backward": dense_backward,
        "dense_activation_forward": dense_activation_forward,
        "dense_activation_backward": dense_activation_backward,
    }


def fused_cpu_passes(dtype: np.dtype, name: str) -> tuple[Any, Any]:
    """The forward and backward of a one-block layer with activation ``name``, each one
    compiled call on the calling thread (generated around the activation's
    :func:`~numlayers.kernels.activations.row_passes`)."""
    activation = activations.row_passes(name)
    forward, backward = (f"dense_{name}_{role}_{FUSED_DIGEST}" for role in ("forward", "backward"))
    sources = {
        forward: f"def {forward}(x, weight, bias, z, y):\n"
        "    gemm_one_block(x, weight, z, False, False, 1, 0, bias)\n"
        + textwrap.indent(activation.forward, "    "),
        backward: f"def {backward}(x, weight, z, y, grad_y, grad_z, grad_x, grad_weight, "
        "grad_bias, need_grad_x):\n"
        + textwrap.indent(activation.gradient, "    ")
        + "\n    dense_backward_serial(x, weight, grad_z, grad_x, grad_weight, grad_bias, "
        "need_grad_x)",
    }
    names = {
        **activation.names,
        "gemm_one_block": gemm_one_block,
        "dense_backward_serial": dense_backward_serial,
    }
    passes = []
    for qualified, source in sources.items():
        function = generate_function(
            source, qualified, fused_cpu_passes, {"c": constants_for(dtype)}, names
        )
        # as the activation loops: contract fuses multiply-adds only, and the numpy
        # error model lets the divisions vectorise
        compile_pass = njit(**KERNEL_OPTIONS, fastmath={"contract"}, error_model="numpy")
        passes.append(compile_pass(function))
    return passes[0], passes[1]


@njit_calling_blas
def dense_backward_serial(x, weight, grad_out, grad_x, grad_weight, grad_bias, need_grad_x):
    """The gradients on the calling thread, in one compiled call (small layers); each
    product is one BLAS call (:func:`~numlayers.kernels.blas.gemm_region`)."""
    require_contiguous_rows(x, grad_out, grad_weight)
    rows, inputs = x.shape
    if need_grad_x:
        require_contiguous_rows(weight, grad_out, grad_x)
        gemm_region(grad_out, weight, grad_x, False, True, 1, 0, (0, rows), (0, inputs))
    outputs = grad_out.shape[1]
    gemm_region(x, grad_out, grad_weight, True, False, 1, 0, (0, inputs), (0, outputs))
    if grad_bias.shape[0] > 0:
        grad_bias[:] = 0
        for i in range(grad_out.shape[0]):
            for j in range(np.uint64(grad_out.shape[1])):
                grad_bias[j] += grad_out[i, j]


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    matmul_operations = matmul.build_cpu(dtype)
    ones: dict[int, np.ndarray] = {}

    def column_sums(x: Any, out: Any) -> None:
        # a product with a row of ones: BLAS in blocks on every core
        if x.shape[0] not in ones:
            ones[x.shape[0]] = np.ones((1, x.shape[0]), dtype)
        product(ones[x.shape[0]], x, out.reshape(1, -1))

    fused: dict[str, tuple[Any, Any]] = {}

    def with_activation(name: str) -> tuple[Any, Any]:
        if name not in fused:
            fused[name] = fused_cpu_passes(dtype, name)
        return fused[name]

    return dense_operations(
        matmul_operations,
        column_sums,
        activations.build_cpu(dtype),
        OneCallPasses(dense_backward_serial, with_activation),
    )


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    return dense_operations(
        matmul.build_cuda(dtype, cuda_api),
        sum_rows_launcher(cuda_api, dtype),
        activations.build_cuda(dtype, cuda_api),
        activated_product=matmul.gemm_launcher(cuda_api, dtype, False, False),
    )


class DenseKernels(Protocol):
    """The dense family's operations, the same on both devices (module doc)."""

    def dense_forward(
        self, x: DeviceArray, weight: DeviceArray, bias: DeviceArray, out: DeviceArray
    ) -> None: ...

    def dense_backward(
        self,
        x: DeviceArray,
        weight: DeviceArray,
        grad_out: DeviceArray,
        grad_x: DeviceArray,
        grad_weight: DeviceArray,
        grad_bias: DeviceArray,
        need_grad_x: bool,
    ) -> None: ...

    def dense_activation_forward(
        self,
        x: DeviceArray,
        weight: DeviceArray,
        bias: DeviceArray,
        z: DeviceArray,
        y: DeviceArray,
        activation: str,
    ) -> None: ...

    def dense_activation_backward(
        self,
        x: DeviceArray,
        weight: DeviceArray,
        z: DeviceArray,
        y: DeviceArray,
        grad_y: DeviceArray,
        grad_z: DeviceArray,
        grad_x: DeviceArray,
        grad_weight: DeviceArray,
        grad_bias: DeviceArray,
        need_grad_x: bool,
        activation: str,
    ) -> None: ...
