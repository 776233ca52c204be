"""Activation functions by name, shared by the Activation layer and layers' ``activation=``.

Each name maps to the kernel operations ``NAME_forward(x, out)`` and
``NAME_backward(x, y, grad_out, grad_x)`` of :mod:`numlayers.kernels.activations`
(softmax: ``softmax_forward(x, out)`` and ``softmax_backward(y, grad_out, grad_x)``
over the last axis of a 2-D view).
"""

from __future__ import annotations

from typing import Any

ACTIVATIONS = ("softmax", "softplus", "relu", "tanh", "sigmoid", "hard_sigmoid", "linear")


def _rows(array: Any) -> Any:
    """A 2-D view that puts the last axis in the columns (softmax works per row)."""
    if len(array.shape) == 2:
        return array
    last = tuple(array.shape)[-1]  # the simulator's shapes do not take negative indices
    return array.reshape(array.size // last, last)


class ActivationFunction:
    """One named activation: forward and backward through the device's kernels."""

    def __init__(
        self, name: Any, owner: str = "Activation", parameters: tuple[float, ...] = ()
    ) -> None:
        if callable(name) and hasattr(name, "__name__"):
            name = name.__name__  # Keras code passes activations.relu and the like
        if name is None:
            name = "linear"
        if name not in ACTIVATIONS and not parameters:
            raise ValueError(f"{owner}: unknown activation {name!r}; choose one of {ACTIVATIONS}")
        self.name: str = name
        #: run-time parameters of a parametric function (LeakyReLU's ``alpha``)
        self.parameters = parameters
        self.is_identity = name == "linear"
        self._forward_operation = f"{name}_forward"
        self._backward_operation = f"{name}_backward"

    def forward(self, kernels: Any, x: Any, out: Any) -> None:
        if self.name == "softmax":
            kernels.softmax_forward(_rows(x), _rows(out))
        else:
            getattr(kernels, self._forward_operation)(x, out, *self.parameters)

    def backward(self, kernels: Any, x: Any, y: Any, grad_out: Any, grad_x: Any) -> None:
        if self.name == "softmax":
            kernels.softmax_backward(_rows(y), _rows(grad_out), _rows(grad_x))
        else:
            getattr(kernels, self._backward_operation)(x, y, grad_out, grad_x, *self.parameters)


def get(name: Any) -> ActivationFunction:
    """The activation named ``name`` (Keras 0.3's ``activations.get``)."""
    return ActivationFunction(name)
