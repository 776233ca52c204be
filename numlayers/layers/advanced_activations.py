"""Activations with parameters of their own (Keras 0.3's ``advanced_activations``).

Fixed parameters (LeakyReLU, ELU, ThresholdedLinear, ThresholdedReLU) are arguments of
an elementwise function of :mod:`numlayers.kernels.activations`; trainable ones
(PReLU, ParametricSoftplus, SReLU) are weights with one value per feature, run by
:mod:`numlayers.kernels.parametric_activations`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from numlayers import initializations
from numlayers.kernels.parametric_activations import (
    FeatureActivationBackward,
    FeatureActivationForward,
)
from numlayers.layers.base import Layer, Shape
from numlayers.layers.core import ParametricActivation, _seed_config
from numlayers.random import get_generator


class LeakyReLU(ParametricActivation):
    """Leaky rectifier: ``x`` where ``x > 0``, else ``alpha * x``.

    Args:
        alpha: the slope below zero (default 0.3).

    Input shape: any. Output shape: the input shape. Masks pass through.

    Example:
        >>> LeakyReLU(0.5, input_shape=(2,))(np.array([[-2.0, 3.0]])).tolist()
        [[-1.0, 3.0]]
    """

    function_name = "leaky_relu"


class ELU(ParametricActivation):
    """Exponential linear unit: ``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``.

    Args:
        alpha: the scale of the negative part (default 1.0).

    Input shape: any. Output shape: the input shape. Masks pass through.

    Example:
        >>> ELU(2.0, input_shape=(2,))(np.array([[-np.log(2), 3.0]])).tolist()
        [[-1.0, 3.0]]
    """

    function_name = "elu"


class ThresholdedLinear(ParametricActivation):
    """The identity where ``|x| > theta``, else ``0``.

    Args:
        theta: the threshold (default 1.0).

    Input shape: any. Output shape: the input shape. Masks pass through.

    Example:
        >>> ThresholdedLinear(0.5, input_shape=(3,))(np.array([[-2.0, 0.25, 3.0]])).tolist()
        [[-2.0, 0.0, 3.0]]
    """

    function_name = "thresholded_linear"


class ThresholdedReLU(ParametricActivation):
    """The identity where ``x > theta``, else ``0``.

    Args:
        theta: the threshold (default 1.0).

    Input shape: any. Output shape: the input shape. Masks pass through.

    Example:
        >>> ThresholdedReLU(0.5, input_shape=(3,))(np.array([[-2.0, 0.25, 3.0]])).tolist()
        [[0.0, 0.0, 3.0]]
    """

    function_name = "thresholded_relu"


def _check_initializer(init: Any, name: str, owner: str) -> None:
    """Fail unless ``init`` is an initialisation name (or function) or a finite number."""
    if isinstance(init, bool):
        raise TypeError(
            f"{owner}: the init of {name} must be a name or a number, received {init!r}"
        )
    if isinstance(init, int | float):
        if not math.isfinite(init):
            raise ValueError(f"{owner}: the init of {name} must be finite, received {init!r}")
        return
    try:
        initializations.get(init)
    except ValueError as error:
        raise ValueError(f"{owner}: {name}: {error}") from None


def _initial_value(init: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A weight of ``shape`` from an initialisation name (or function), or a number that
    fills it."""
    if isinstance(init, int | float) and not isinstance(init, bool):
        return np.full(shape, float(init))
    return np.asarray(initializations.draw(init, shape, rng))


class TrainableActivation(Layer):
    """An activation with trainable parameters, one of each per feature: the weights have
    the input shape without the batch axis (Keras 0.3's), a weight per parameter.

    A subclass names its parameters (the weights, in the kernels' order) in
    ``parameter_names`` and returns its kernel operations from :meth:`operations`; it
    passes one initialiser per parameter (an initialisation name, or a number that fills
    the weight) to ``__init__``.

    Args:
        initializers: one initialiser per parameter.
        weights: initial weights, in the order of ``parameter_names``.
        seed: int or numpy Generator for the initial weights (default: the global seed).
    """

    passes_mask = True
    parameter_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        initializers: Sequence[Any],
        weights: Sequence[Any] | None = None,
        seed: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, init in zip(self.parameter_names, initializers, strict=True):
            _check_initializer(init, name, self.label)
        self.initializers = tuple(initializers)
        self.seed = seed
        self.initial_weights = weights
        self._finish_init()

    def operations(self) -> tuple[FeatureActivationForward, FeatureActivationBackward]:
        """The forward and backward operations of this activation, on this layer's device."""
        raise NotImplementedError(f"{type(self).__name__} names no operations")

    def build(self) -> None:
        features = self.input_shape[1:]
        if not features or any(size is None for size in features):
            raise ValueError(
                f"{self.label} needs every input dimension but the batch to be known (one "
                f"parameter per feature), received input shape {self.input_shape}"
            )
        shape = tuple(int(size) for size in features if size is not None)
        rng = get_generator(self.seed)
        for name, init in zip(self.parameter_names, self.initializers, strict=True):
            self.add_weight(name, _initial_value(init, shape, rng))
        if self.initial_weights is not None:
            self.set_weights(self.initial_weights)
            self.initial_weights = None

    def _check_rebuild(self, shape: Shape) -> None:
        built_for = tuple(self.params[0].shape)
        if tuple(shape[1:]) != built_for:
            raise ValueError(
                f"{self.label} has parameters for features of shape {built_for}, "
                f"received input shape {shape}"
            )

    def _forward(self, x: Any, train: bool) -> Any:
        forward, _ = self.operations()
        y = self.buffer("y", tuple(x.shape))
        forward(x, self.params, y)
        self.save(x=x)
        return y

    def _backward(self, grad_output: Any) -> Any:
        _, backward = self.operations()
        x = self.saved()["x"]
        need = self.needs_input_gradient
        # without the input gradient the kernels never touch grad_x: x stands in for it
        grad_x = self.buffer("grad_x", tuple(x.shape)) if need else x
        backward(x, self.params, grad_output, grad_x, self.grads, need)
        return grad_x if need else None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["seed"] = _seed_config(self.seed)
        return config


class PReLU(TrainableActivation):
    """Parametric rectifier: ``x`` where ``x > 0``, else ``alpha * x``, with a trainable
    slope ``alpha`` per feature.

    Args:
        init: initialisation of the slopes (default ``"zero"``: a relu at first).
        weights: initial ``[alphas]``.
        seed: int or numpy Generator for the initial slopes.

    Input shape: any, every dimension but the batch known. Output shape: the input shape.
    Masks pass through.

    Example:
        >>> layer = PReLU(input_shape=(2,), weights=[np.array([0.5, 0.25])])
        >>> layer(np.array([[-2.0, -2.0], [3.0, 3.0]])).tolist()
        [[-1.0, -0.5], [3.0, 3.0]]
    """

    parameter_names = ("alphas",)

    def __init__(
        self,
        init: Any = "zero",
        weights: Sequence[Any] | None = None,
        seed: Any = None,
        **kwargs: Any,
    ) -> None:
        self.init = init
        super().__init__((init,), weights, seed, **kwargs)

    def operations(self) -> tuple[FeatureActivationForward, FeatureActivationBackward]:
        kernels = self.kernels
        return kernels.prelu_forward, kernels.prelu_backward

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "init": self.init}


class ParametricSoftplus(TrainableActivation):
    """``alpha * log(1 + exp(beta * x))``, with a trainable ``alpha`` and ``beta`` per
    feature.

    Args:
        alpha_init: the initial value of every ``alpha`` (default 0.2).
        beta_init: the initial value of every ``beta`` (default 5.0).
        weights: initial ``[alphas, betas]``.

    Input shape: any, every dimension but the batch known. Output shape: the input shape.
    Masks pass through.

    Example:
        >>> layer = ParametricSoftplus(2.0, 1.0, input_shape=(2,), dtype="float64")
        >>> layer(np.array([[0.0, 50.0]])).round(4).tolist()  # 2 log(2), 2 x far above 0
        [[1.3863, 100.0]]
    """

    parameter_names = ("alphas", "betas")

    def __init__(
        self,
        alpha_init: float = 0.2,
        beta_init: float = 5.0,
        weights: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        for name, value in (("alpha_init", alpha_init), ("beta_init", beta_init)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"ParametricSoftplus: {name} must be a number, received {value!r}")
        self.alpha_init = float(alpha_init)
        self.beta_init = float(beta_init)
        super().__init__((self.alpha_init, self.beta_init), weights, **kwargs)

    def operations(self) -> tuple[FeatureActivationForward, FeatureActivationBackward]:
        kernels = self.kernels
        return kernels.parametric_softplus_forward, kernels.parametric_softplus_backward

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha_init": self.alpha_init, "beta_init": self.beta_init}


class SReLU(TrainableActivation):
    """S-shaped rectifier (Keras 0.3.3): three linear pieces per feature, with trainable
    thresholds and slopes.

    With ``t_right_actual = t_left + |t_right|``: ``t_left + a_left * (x - t_left)`` below
    ``t_left``, ``x`` up to ``t_right_actual``, and ``t_right_actual + a_right * (x -
    t_right_actual)`` beyond.

    Args:
        t_left_init, a_left_init, t_right_init, a_right_init: initialisations of the
            left threshold, the left slope, the right threshold's distance from the left
            one (its absolute value) and the right slope.
        weights: initial ``[t_left, a_left, t_right, a_right]``.
        seed: int or numpy Generator for the initial weights.

    Input shape: any, every dimension but the batch known. Output shape: the input shape.
    Masks pass through.

    Example:
        >>> weights = [np.zeros(1), np.full(1, 0.5), np.ones(1), np.full(1, 2.0)]
        >>> layer = SReLU(input_shape=(1,), weights=weights)
        >>> layer(np.array([[-2.0], [0.5], [3.0]])).ravel().tolist()
        [-1.0, 0.5, 5.0]
    """

    parameter_names = ("t_left", "a_left", "t_right", "a_right")

    def __init__(
        self,
        t_left_init: Any = "zero",
        a_left_init: Any = "glorot_uniform",
        t_right_init: Any = "glorot_uniform",
        a_right_init: Any = "one",
        weights: Sequence[Any] | None = None,
        seed: Any = None,
        **kwargs: Any,
    ) -> None:
        self.inits = {
            "t_left_init": t_left_init,
            "a_left_init": a_left_init,
            "t_right_init": t_right_init,
            "a_right_init": a_right_init,
        }
        super().__init__(tuple(self.inits.values()), weights, seed, **kwargs)

    def operations(self) -> tuple[FeatureActivationForward, FeatureActivationBackward]:
        kernels = self.kernels
        return kernels.srelu_forward, kernels.srelu_backward

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.inits}
