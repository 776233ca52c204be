"""Normalization layers: BatchNormalization."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers import initializations
from numlayers.layers.base import Layer, Shape
from numlayers.random import get_generator

#: the input ranks (batch axis included) the layer normalises: features, sequences, images
SUPPORTED_RANKS = (2, 3, 4)


class BatchNormalization(Layer):
    """Normalise the activations of the previous layer, then scale and shift them.

    ``output = gamma * (x - mean) / sqrt(variance + epsilon) + beta``, with a trainable
    ``gamma`` and ``beta`` per feature (the features lie along ``axis``).

    Mode 0 (feature-wise): each feature is normalised over the batch and over every axis
    but ``axis`` (the timesteps of a sequence, the pixels of an image: ``axis=1`` after a
    channels-first convolution, ``axis=-1`` after a channels-last one). Training uses
    the batch's mean and (biased) variance and moves the running statistics towards
    them, ``running = momentum * running + (1 - momentum) * batch``; prediction
    (``train=False``) uses the running statistics. Mode 1 (sample-wise): each sample
    (each position of a sequence or image) is normalised over its features, in
    training and prediction alike.

    The weights are ``[gamma, beta, running_mean, running_var]``. The running
    statistics are not trained (no optimizer is given them, ``summary()`` counts them
    as non-trainable): they are saved, loaded and moved with the others. Their
    gradients are zero after a training pass (the output does not depend on them then)
    and the true gradients after a prediction pass.
    Keras 0.3 kept a running standard deviation and divided by ``std + epsilon``; this
    layer keeps the variance, as its name and the later Keras versions do.

    Args:
        epsilon: added to the variance before its square root (positive).
        mode: 0 (feature-wise) or 1 (sample-wise), as above.
        axis: the features' axis (not the batch axis), negative from the end.
        momentum: weight of the old running statistics in each update, in ``[0, 1]``.
        weights: initial ``[gamma, beta, running_mean, running_var]``.
        beta_init, gamma_init: initialisation names (see
            :mod:`numlayers.initializations`).

    Input shape: ``(batch, features)``, ``(batch, steps, features)`` or an image batch
    ``(batch, d1, d2, d3)``. Output shape: the same.

    Example:
        >>> layer = BatchNormalization(input_shape=(3,))
        >>> x = np.array([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]], "float32")
        >>> layer(x, train=True).round(3)
        array([[-1., -1., -1.],
               [ 1.,  1.,  1.]], dtype=float32)
        >>> layer.get_weights()[2].round(3)  # the running mean: a tenth of the way there
        array([0.2, 0.4, 0.6], dtype=float32)
    """

    untrained_weight_count = 2  # running_mean and running_var

    def __init__(
        self,
        epsilon: float = 1e-6,
        mode: int = 0,
        axis: int = -1,
        momentum: float = 0.9,
        weights: Sequence[Any] | None = None,
        beta_init: Any = "zero",
        gamma_init: Any = "one",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or epsilon <= 0:
            raise ValueError(
                f"{self.label}: epsilon must be a positive number, received {epsilon!r}"
            )
        if mode not in (0, 1) or isinstance(mode, bool):
            raise ValueError(
                f"{self.label}: mode must be 0 (feature-wise) or 1 (sample-wise), received {mode!r}"
            )
        if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
            raise TypeError(f"{self.label}: axis must be an int, received {axis!r}")
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, int | float)
            or not 0 <= momentum <= 1
        ):
            raise ValueError(f"{self.label}: momentum must be in [0, 1], received {momentum!r}")
        initializations.get(beta_init)  # fails early on an unknown name
        initializations.get(gamma_init)
        self.epsilon = float(epsilon)
        self.mode = int(mode)
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.beta_init = beta_init
        self.gamma_init = gamma_init
        self.initial_weights = weights
        self._finish_init()

    def _feature_axis(self, shape: Shape) -> tuple[int, int]:
        """``axis`` as a positive index into ``shape`` and the number of features there,
        checked along with the rank."""
        rank = len(shape)
        if rank not in SUPPORTED_RANKS:
            raise ValueError(
                f"{self.label} expects inputs of rank 2, 3 or 4 (batch axis included), "
                f"received input shape {shape}"
            )
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(
                f"{self.label}: axis {self.axis} is not a feature axis of inputs of shape "
                f"{shape} (it must be one of 1..{rank - 1}, or negative from the end)"
            )
        axis = self.axis % rank
        features = shape[axis]
        if features is None:
            raise ValueError(
                f"{self.label} needs a known size along axis {self.axis}, received {shape}"
            )
        return axis, features

    def build(self) -> None:
        shape = self.input_shape
        features = (self._feature_axis(shape)[1],)
        rng = get_generator()
        self.add_weight("gamma", initializations.draw(self.gamma_init, features, rng))
        self.add_weight("beta", initializations.draw(self.beta_init, features, rng))
        self.add_weight("running_mean", np.zeros(features))
        self.add_weight("running_var", np.ones(features))
        if self.initial_weights is not None:
            self.set_weights(self.initial_weights)
            self.initial_weights = None

    def _check_rebuild(self, shape: Shape) -> None:
        if self._feature_axis(shape)[1] != self.params[0].shape[0]:
            raise ValueError(
                f"{self.label} was built for {self.params[0].shape[0]} features, "
                f"received input shape {shape}"
            )

    def _as_3d(self, array: Any) -> Any:
        """The ``(outer, features, inner)`` view the kernels take."""
        shape = tuple(array.shape)
        axis = self.axis % len(shape)
        outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
        return array.reshape(outer, shape[axis], inner)

    def _forward(self, x: Any, train: bool) -> Any:
        gamma, beta, running_mean, running_var = self.params
        x3 = self._as_3d(x)
        out = self.buffer("out", tuple(x.shape))
        if self.mode == 0:
            statistics_shape: tuple[int, ...] = (x3.shape[1],)
        else:
            statistics_shape = (x3.shape[0], x3.shape[2])
        mean = self.buffer("mean", statistics_shape)
        inv_std = self.buffer("inv_std", statistics_shape)
        if self.mode == 0:
            self.kernels.batch_norm_forward(
                x3, gamma, beta, running_mean, running_var, self.epsilon, self.momentum,
                train, mean, inv_std, self._as_3d(out),
            )  # fmt: skip
        else:
            self.kernels.sample_norm_forward(
                x3, gamma, beta, self.epsilon, mean, inv_std, self._as_3d(out)
            )
        self.save(x=x3, mean=mean, inv_std=inv_std, train=train)
        return out

    def _backward(self, grad_output: Any) -> Any:
        saved = self.saved()
        x3 = saved["x"]
        grad_x = self.buffer("grad_x", tuple(grad_output.shape))
        arguments = (x3, self._as_3d(grad_output), self.params[0], saved["mean"], saved["inv_std"])
        if self.mode == 0:
            self.kernels.batch_norm_backward(
                *arguments, saved["train"], self._as_3d(grad_x), *self.grads
            )
        else:  # the running statistics' gradients stay zero, as add_weight made them
            self.kernels.sample_norm_backward(
                *arguments, self._as_3d(grad_x), self.grads[0], self.grads[1]
            )
        return grad_x if self.needs_input_gradient else None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            epsilon=self.epsilon,
            mode=self.mode,
            axis=self.axis,
            momentum=self.momentum,
            beta_init=self.beta_init,
            gamma_init=self.gamma_init,
        )
        return config
