"""Layers that move values around: Flatten, Reshape, Permute, RepeatVector.

Flatten and Reshape are views of their C-contiguous input (no copy, no kernel:
the fastest correct reshape is none); Permute and RepeatVector run kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers.layers.base import MAX_ELEMENTS, Layer, Shape
from numlayers.layers.core import _positive_int


def _known_size(shape: Shape, owner: str) -> int:
    known = [d for d in shape if d is not None]
    if len(known) != len(shape):
        raise ValueError(f"{owner} needs fully known sample dimensions, received {shape}")
    return _checked_size(known, shape, owner)


def _checked_size(dims: Sequence[int], shape: Any, owner: str) -> int:
    """The product of ``dims`` in Python integers (NumPy's would wrap at 2**64), refused
    when no array could have that many elements."""
    size = math.prod(dims)
    if size > MAX_ELEMENTS:
        raise ValueError(
            f"{owner}: {shape} has {size} elements per sample, more than an array holds"
        )
    return size


class Flatten(Layer):
    """Flattens each sample: ``(batch, d1, d2, ...)`` to ``(batch, d1 * d2 * ...)``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._finish_init()

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 2:
            raise ValueError(f"{self.label} expects inputs of rank >= 2, received {input_shape}")
        return (input_shape[0], _known_size(input_shape[1:], self.label))

    def _forward(self, x: Any, train: bool) -> Any:
        self.save(input_shape=tuple(x.shape))
        return x.reshape(x.shape[0], x.size // x.shape[0])

    def _backward(self, grad_output: Any) -> Any:
        return grad_output.reshape(*self.saved()["input_shape"])


class Reshape(Layer):
    """Reshapes each sample to ``dims`` (one entry may be -1, inferred).

    Args:
        dims: target sample shape, without the batch axis.
    """

    def __init__(self, dims: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(dims, tuple | list) or not dims:
            raise TypeError(f"{self.label}: dims must be a non-empty tuple, received {dims!r}")
        if sum(1 for d in dims if d == -1) > 1 or any(
            not isinstance(d, int | np.integer) or (d <= 0 and d != -1) for d in dims
        ):
            raise ValueError(
                f"{self.label}: dims must be positive ints and at most one -1, received {dims!r}"
            )
        self.dims = tuple(int(d) for d in dims)
        self._finish_init()

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        size = _known_size(input_shape[1:], self.label)
        known = _checked_size([d for d in self.dims if d != -1], self.dims, self.label)
        dims = tuple(size // known if d == -1 else d for d in self.dims)
        if math.prod(dims) != size:
            raise ValueError(
                f"{self.label} cannot reshape samples of shape {input_shape[1:]} "
                f"({size} values) to {self.dims}"
            )
        return (input_shape[0], *dims)

    def _forward(self, x: Any, train: bool) -> Any:
        self.save(input_shape=tuple(x.shape))
        return x.reshape(x.shape[0], *self.output_shape[1:])

    def _backward(self, grad_output: Any) -> Any:
        return grad_output.reshape(*self.saved()["input_shape"])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["dims"] = list(self.dims)
        return config


class Permute(Layer):
    """Permutes the sample axes; ``dims`` is 1-indexed as in Keras (``(2, 1)`` swaps two axes).

    Args:
        dims: a permutation of ``1 .. rank - 1``.
    """

    def __init__(self, dims: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(dims, tuple | list) or sorted(dims) != list(range(1, len(dims) + 1)):
            raise ValueError(f"{self.label}: dims must be a permutation of 1..n, received {dims!r}")
        self.dims = tuple(int(d) for d in dims)
        self._axes = (0, *self.dims)
        self._inverse_axes = tuple(int(a) for a in np.argsort(self._axes))
        self._finish_init()

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != len(self.dims) + 1:
            raise ValueError(
                f"{self.label} permutes {len(self.dims)} sample axes, "
                f"received input shape {input_shape}"
            )
        return (input_shape[0], *(input_shape[d] for d in self.dims))

    def _permute(self, x: Any, inverse: bool, slot: str) -> Any:
        return self.permuted(x, self._inverse_axes if inverse else self._axes, slot)

    def _forward(self, x: Any, train: bool) -> Any:
        return self._permute(x, inverse=False, slot="y")

    def _backward(self, grad_output: Any) -> Any:
        return self._permute(grad_output, inverse=True, slot="grad_x")

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["dims"] = list(self.dims)
        return config


class RepeatVector(Layer):
    """Repeats each input vector ``n`` times: ``(batch, dim)`` to ``(batch, n, dim)``.

    Args:
        n: number of repetitions.
    """

    input_ndim = 2

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = _positive_int(n, "n", self.label)
        self._finish_init()

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], self.n, input_shape[1])

    def _forward(self, x: Any, train: bool) -> Any:
        out = self.buffer("y", (x.shape[0], self.n, x.shape[1]))
        self.kernels.repeat_vector_forward(x, out)
        return out

    def _backward(self, grad_output: Any) -> Any:
        grad_x = self.buffer("grad_x", (grad_output.shape[0], grad_output.shape[2]))
        self.kernels.repeat_vector_backward(grad_output, grad_x)
        return grad_x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["n"] = self.n
        return config
