"""Activation functions by name, shared by the Activation layer and layers' ``activation=``.

Each name maps to the kernel operations ``NAME_forward(x, out)`` and
``NAME_backward(x, y, grad_out, grad_x)`` of :mod:`numlayers.kernels.activations`
(softmax: ``softmax_forward(x, out)`` and ``softmax_backward(y, grad_out, grad_x)``
over the last axis of a 2-D view).

``relu`` takes Keras 0.3's arguments ``alpha`` (the slope below zero) and ``max_value``
(where the output is clipped), given as ``get("relu", alpha=0.1, max_value=6.0)``, as
the config ``{"name": "relu", "alpha": 0.1, "max_value": 6.0}``, or as a
``functools.partial`` of a function named ``relu`` with those keywords (Keras 0.3 code
passes ``activations.relu`` itself). With either argument set it runs the kernels'
``clipped_leaky_relu``; plain ``relu`` keeps its own kernels.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

ACTIVATIONS = ("softmax", "softplus", "relu", "tanh", "sigmoid", "hard_sigmoid", "linear")

#: the activations that take arguments: their arguments with Keras 0.3's defaults, and
#: the kernel function that runs them when an argument differs from its default
ACTIVATION_ARGUMENTS: dict[str, tuple[dict[str, float | None], str]] = {
    "relu": ({"alpha": 0.0, "max_value": None}, "clipped_leaky_relu"),
}


def _rows(array: Any) -> Any:
    """A 2-D view that puts the last axis in the columns (softmax works per row)."""
    if len(array.shape) == 2:
        return array
    last = tuple(array.shape)[-1]  # the simulator's shapes do not take negative indices
    return array.reshape(array.size // last, last)


def _number(value: Any, what: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner}: {what} must be a number, received {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {what} must be finite, received {value!r}")
    return float(value)


def _name_and_arguments(spec: Any) -> tuple[Any, dict[str, Any]]:
    """The activation name and arguments of a config dict, a partial or a name."""
    if isinstance(spec, dict):
        arguments = dict(spec)
        return arguments.pop("name", None), arguments
    if isinstance(spec, functools.partial) and not spec.args:
        return spec.func, dict(spec.keywords)
    return spec, {}


class ActivationFunction:
    """One named activation: forward and backward through the device's kernels.

    Args:
        name: an activation name, a function with that ``__name__``, None (linear), a
            config ``{"name": ..., **arguments}`` or a ``functools.partial`` with
            keyword arguments (see the module doc), or an ActivationFunction.
        owner: how error messages name the layer that asked.
        parameters: the run-time parameters of a kernel function that takes them
            (LeakyReLU's ``alpha``): then ``name`` is that function's.
    """

    def __init__(
        self, name: Any, owner: str = "Activation", parameters: tuple[float, ...] = ()
    ) -> None:
        if isinstance(name, ActivationFunction):
            name = name.config
        name, arguments = _name_and_arguments(name)
        if callable(name) and hasattr(name, "__name__"):
            name = name.__name__  # Keras code passes activations.relu and the like
        if name is None:
            name = "linear"
        if name not in ACTIVATIONS and not parameters:
            raise ValueError(f"{owner}: unknown activation {name!r}; choose one of {ACTIVATIONS}")
        #: the config of this activation: its name, or a dict with its arguments too
        self.config: str | dict[str, Any] = name
        if arguments:
            name, parameters = self._with_arguments(name, arguments, owner)
        #: the kernel function's name
        self.name: str = name
        #: run-time parameters of a parametric function (LeakyReLU's ``alpha``)
        self.parameters = parameters
        self.is_identity = name == "linear"
        self._forward_operation = f"{name}_forward"
        self._backward_operation = f"{name}_backward"

    def _with_arguments(
        self, name: str, arguments: dict[str, Any], owner: str
    ) -> tuple[str, tuple[float, ...]]:
        """The kernel function and parameters of activation ``name`` with ``arguments``."""
        if name not in ACTIVATION_ARGUMENTS:
            raise ValueError(
                f"{owner}: activation {name!r} takes no arguments, received {arguments}"
            )
        defaults, function = ACTIVATION_ARGUMENTS[name]
        unknown = sorted(set(arguments) - set(defaults))
        if unknown:
            raise ValueError(
                f"{owner}: activation {name!r} takes the arguments {list(defaults)}, "
                f"received {unknown}"
            )
        chosen = {**defaults, **arguments}
        values = {
            key: None if value is None else _number(value, f"{name} {key}", owner)
            for key, value in chosen.items()
        }
        if values == defaults:
            return name, ()
        self.config = {"name": name, **values}
        # an absent bound is an infinite one for the kernels
        return function, tuple(math.inf if value is None else value for value in values.values())

    def __call__(self, x: Any) -> np.ndarray:
        """The activation of the NumPy array ``x`` on the CPU, by the same kernels (in
        ``x``'s float dtype, float64 for other dtypes): Keras 0.3's activations were
        functions of arrays."""
        from numlayers.devices import get_device

        values = np.asarray(x)
        dtype = values.dtype if values.dtype in (np.float32, np.float64) else np.float64
        values = np.ascontiguousarray(values, dtype)
        out = np.empty_like(values)
        if values.size:
            self.forward(get_device("cpu").kernels(dtype), values, out)
        return out

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


def get(name: Any, **arguments: Any) -> ActivationFunction:
    """The activation named ``name`` (Keras 0.3's ``activations.get``), with
    ``arguments`` for those that take them (``get("relu", alpha=0.1, max_value=6.0)``).

    Example:
        >>> get("relu", alpha=0.1).config
        {'name': 'relu', 'alpha': 0.1, 'max_value': None}
        >>> get("relu", alpha=0.0).config
        'relu'
    """
    if arguments:
        return ActivationFunction({"name": name, **arguments})
    return ActivationFunction(name)


# Keras 0.3's activations as functions of arrays (``activations.relu(x)``); passed to a
# layer (``activation=activations.relu``) they name its kernels.


def softmax(x: Any) -> np.ndarray:
    """Softmax over the last axis of ``x``."""
    return ActivationFunction("softmax")(x)


def softplus(x: Any) -> np.ndarray:
    """``log(1 + exp(x))``."""
    return ActivationFunction("softplus")(x)


def relu(x: Any, alpha: float = 0.0, max_value: float | None = None) -> np.ndarray:
    """``max(x, 0)``, with slope ``alpha`` below zero and clipped at ``max_value``."""
    return get("relu", alpha=alpha, max_value=max_value)(x)


def tanh(x: Any) -> np.ndarray:
    """The hyperbolic tangent."""
    return ActivationFunction("tanh")(x)


def sigmoid(x: Any) -> np.ndarray:
    """``1 / (1 + exp(-x))``."""
    return ActivationFunction("sigmoid")(x)


def hard_sigmoid(x: Any) -> np.ndarray:
    """``clip(0.2 * x + 0.5, 0, 1)``."""
    return ActivationFunction("hard_sigmoid")(x)


def linear(x: Any) -> np.ndarray:
    """The identity (a copy of ``x``)."""
    return ActivationFunction("linear")(x)
