"""The elementwise steps of the dense variants (MaxoutDense, Highway); their products are
those of :mod:`numlayers.kernels.matmul`.

Operations (both devices; arrays C-contiguous, ``out`` arrays overwritten):

- ``maxout_forward(z, out, argmax)``: for ``z`` of shape ``(features, *shape)`` and
  ``out`` of ``shape``, ``out = z.max(0)`` and ``argmax = z.argmax(0)`` (int32, the
  first maximal feature; a NaN among the features gives NaN)
- ``maxout_backward(grad_out, argmax, grad_z)``: ``grad_z[k] = grad_out`` where
  ``argmax == k``, else ``0``: the gradient goes to the first maximal feature only
- ``highway_forward(h, gate, x, out)``: ``out = h * gate + x * (1 - gate)``
- ``highway_backward(grad_out, h, gate, x, grad_h, grad_gate_input, grad_x)``: with
  ``gate = sigmoid(a)``, the gradients ``grad_h = grad_out * gate``,
  ``grad_gate_input = grad_out * (h - x) * gate * (1 - gate)`` (of ``a``) and
  ``grad_x = grad_out * (1 - gate)`` (the carried part of the input's gradient)

Each is one per-index body, run by the toolkit's index loops on either device.
"""

from __future__ import annotations

from typing import Any, Protocol

import numba
import numpy as np

from numlayers.kernels.toolkit import (
    CudaKernels,
    DeviceArray,
    cpu_inline,
    cuda_kernels,
    device_index_loop,
)

#: The work of one index in the toolkit's units (one elementwise multiply-add): a pass
#: over the features (four by default) with a load and a compare or a store each.
MAXOUT_COST = 8.0
#: the highway steps are a few multiply-adds over four or five arrays
HIGHWAY_COST = 4.0


@cpu_inline
def maxout_forward_element(index, z, out, argmax):
    best = z[0, index]
    chosen = 0
    for feature in range(1, z.shape[0]):
        value = z[feature, index]
        # strictly greater keeps the first maximum; a NaN, once met, stays
        if value > best or (value != value and best == best):
            best = value
            chosen = feature
    out[index] = best
    argmax[index] = chosen


@cpu_inline
def maxout_backward_element(index, grad_out, argmax, zero, grad_z):
    chosen = argmax[index]
    for feature in range(grad_z.shape[0]):
        grad_z[feature, index] = grad_out[index] if feature == chosen else zero


@cpu_inline
def highway_forward_element(index, h, gate, x, one, out):
    t = gate[index]
    out[index] = h[index] * t + x[index] * (one - t)


@cpu_inline
def highway_backward_element(index, grad_out, h, gate, x, one, grad_h, grad_gate_input, grad_x):
    g = grad_out[index]
    t = gate[index]
    carry = one - t
    grad_h[index] = g * t
    grad_gate_input[index] = g * (h[index] - x[index]) * t * carry
    grad_x[index] = g * carry


def flat(array: Any) -> Any:
    """``array`` as a 1-D view (NumPy and CUDA device arrays alike)."""
    return array.reshape(array.size)


def by_feature(array: Any) -> Any:
    """``array`` of shape ``(features, ...)`` as a 2-D view ``(features, rest)``."""
    return array.reshape(array.shape[0], array.size // max(array.shape[0], 1))


def dense_variant_operations(dtype: np.dtype, cuda: CudaKernels | None) -> dict[str, Any]:
    """The dense variants' operations on the CPU (``cuda`` None) or on CUDA."""
    cast = dtype.type
    zero = cast(0)
    one = cast(1)
    scalar = numba.from_dtype(dtype)
    vector = scalar[::1]
    matrix = scalar[:, ::1]
    indices = numba.int32[::1]

    def loop(body: Any, cost: float, *argtypes: Any) -> Any:
        return device_index_loop(cuda, body, argtypes, cost=cost)

    maxout_forward_loop = loop(maxout_forward_element, MAXOUT_COST, matrix, vector, indices)
    maxout_backward_loop = loop(
        maxout_backward_element, MAXOUT_COST, vector, indices, scalar, matrix
    )
    highway_forward_loop = loop(
        highway_forward_element, HIGHWAY_COST, vector, vector, vector, scalar, vector
    )
    highway_backward_loop = loop(
        highway_backward_element,
        HIGHWAY_COST,
        *(vector, vector, vector, vector, scalar, vector, vector, vector),
    )

    def maxout_forward(z: Any, out: Any, argmax: Any) -> None:
        maxout_forward_loop(out.size, by_feature(z), flat(out), flat(argmax))

    def maxout_backward(grad_out: Any, argmax: Any, grad_z: Any) -> None:
        maxout_backward_loop(grad_out.size, flat(grad_out), flat(argmax), zero, by_feature(grad_z))

    def highway_forward(h: Any, gate: Any, x: Any, out: Any) -> None:
        highway_forward_loop(out.size, flat(h), flat(gate), flat(x), one, flat(out))

    def highway_backward(
        grad_out: Any,
        h: Any,
        gate: Any,
        x: Any,
        grad_h: Any,
        grad_gate_input: Any,
        grad_x: Any,
    ) -> None:
        highway_backward_loop(
            grad_out.size,
            *(flat(grad_out), flat(h), flat(gate), flat(x), one),
            *(flat(grad_h), flat(grad_gate_input), flat(grad_x)),
        )

    return {
        "maxout_forward": maxout_forward,
        "maxout_backward": maxout_backward,
        "highway_forward": highway_forward,
        "highway_backward": highway_backward,
    }


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    return dense_variant_operations(dtype, None)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    return dense_variant_operations(dtype, cuda_kernels(cuda_api, dtype))


class DenseVariantKernels(Protocol):
    """The dense variants' operations, the same on both devices (module doc)."""

    def maxout_forward(self, z: DeviceArray, out: DeviceArray, argmax: DeviceArray) -> None: ...

    def maxout_backward(
        self, grad_out: DeviceArray, argmax: DeviceArray, grad_z: DeviceArray
    ) -> None: ...

    def highway_forward(
        self, h: DeviceArray, gate: DeviceArray, x: DeviceArray, out: DeviceArray
    ) -> None: ...

    def highway_backward(
        self,
        grad_out: DeviceArray,
        h: DeviceArray,
        gate: DeviceArray,
        x: DeviceArray,
        grad_h: DeviceArray,
        grad_gate_input: DeviceArray,
        grad_x: DeviceArray,
    ) -> None: ...
