"""Variants of the fully connected layer: MaxoutDense and Highway.

Their products are the matmul operations :class:`~numlayers.layers.core.Dense` uses;
the steps between them are those of :mod:`numlayers.kernels.dense_variants`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers import initializations
from numlayers.activations import ActivationFunction
from numlayers.layers.base import Shape
from numlayers.layers.core import FullyConnected, _positive_int
from numlayers.random import get_generator


class MaxoutDense(FullyConnected):
    """Maxout over ``nb_feature`` linear pieces: ``output = max_k(input @ W[k] + b[k])``.

    Args:
        output_dim: number of output units.
        nb_feature: number of linear pieces the maximum is taken over.
        init: weight initialisation name (see :mod:`numlayers.initializations`).
        weights: initial ``[W, b]``, of shapes ``(nb_feature, input_dim, output_dim)``
            and ``(nb_feature, output_dim)``.
        W_regularizer, b_regularizer: weight regularizers (:mod:`numlayers.regularizers`).
        activity_regularizer: a regularizer of the output.
        W_constraint, b_constraint: constraints (:mod:`numlayers.constraints`).
        input_dim: shortcut for ``input_shape=(input_dim,)``.
        seed: int or numpy Generator for the initial weights (default: the global seed).

    Input shape: ``(batch, input_dim)``. Output shape: ``(batch, output_dim)``. The
    gradient of each output goes to its first maximal piece.

    Example:
        >>> layer = MaxoutDense(3, nb_feature=2, input_dim=4)
        >>> [w.shape for w in layer.get_weights()]
        [(2, 4, 3), (2, 3)]
        >>> layer(np.ones((5, 4), "float32")).shape
        (5, 3)
    """

    def __init__(
        self,
        output_dim: int,
        nb_feature: int = 4,
        init: Any = "glorot_uniform",
        weights: Sequence[Any] | None = None,
        W_regularizer: Any = None,
        b_regularizer: Any = None,
        activity_regularizer: Any = None,
        W_constraint: Any = None,
        b_constraint: Any = None,
        input_dim: int | None = None,
        seed: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            init=init,
            weights=weights,
            input_dim=input_dim,
            W_regularizer=W_regularizer,
            b_regularizer=b_regularizer,
            activity_regularizer=activity_regularizer,
            W_constraint=W_constraint,
            b_constraint=b_constraint,
            seed=seed,
            **kwargs,
        )
        self.output_dim = _positive_int(output_dim, "output_dim", self.label)
        self.nb_feature = _positive_int(nb_feature, "nb_feature", self.label)
        self._finish_init()

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], self.output_dim)

    def build(self) -> None:
        rng = get_generator(self.seed)
        shape = (self.nb_feature, self.known_input_dim(), self.output_dim)
        self.add_weight(
            "W", initializations.draw(self.init, shape, rng), self.W_regularizer, self.W_constraint
        )
        bias = np.zeros((self.nb_feature, self.output_dim))
        self.add_weight("b", bias, self.b_regularizer, self.b_constraint)
        self.set_initial_weights()

    def _forward(self, x: Any, train: bool) -> Any:
        kernels = self.kernels
        weight, bias = self.params
        rows = x.shape[0]
        z = self.buffer("z", (self.nb_feature, rows, self.output_dim))
        for feature in range(self.nb_feature):
            kernels.matmul(x, weight[feature], bias[feature], z[feature])
        y = self.buffer("y", (rows, self.output_dim))
        argmax = self.buffer("argmax", (rows, self.output_dim), np.int32)
        kernels.maxout_forward(z, y, argmax)
        self.save(x=x, argmax=argmax)
        return y

    def _backward(self, grad_output: Any) -> Any:
        kernels = self.kernels
        saved = self.saved()
        x = saved["x"]
        weight, bias = self.params
        grad_weight, grad_bias = self.grads
        grad_z = self.buffer("grad_z", (self.nb_feature, *grad_output.shape))
        kernels.maxout_backward(grad_output, saved["argmax"], grad_z)
        for feature in range(self.nb_feature):
            kernels.matmul_transpose_a(x, grad_z[feature], grad_weight[feature])
            kernels.sum_rows(grad_z[feature], grad_bias[feature])
        if not self.needs_input_gradient:
            return None
        grad_x = self.buffer("grad_x", tuple(x.shape))
        kernels.matmul_transpose_b(grad_z[0], weight[0], grad_x)
        if self.nb_feature > 1:
            part = self.buffer("grad_x_part", tuple(x.shape))
            for feature in range(1, self.nb_feature):
                kernels.matmul_transpose_b(grad_z[feature], weight[feature], part)
                kernels.add_into(part, grad_x)
        return grad_x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(output_dim=self.output_dim, nb_feature=self.nb_feature)
        return config


class Highway(FullyConnected):
    """Highway layer: ``y = activation(x @ W + b) * t + x * (1 - t)`` with the transform
    gate ``t = sigmoid(x @ W_carry + b_carry)``.

    Args:
        init: weight initialisation name of ``W`` and ``W_carry``.
        transform_bias: the initial value of every element of ``b_carry`` (negative: the
            layer starts close to carrying its input through).
        activation: activation name (see :mod:`numlayers.activations`), default linear.
        weights: initial ``[W, b, W_carry, b_carry]``, of shapes ``(d, d)``, ``(d,)``,
            ``(d, d)`` and ``(d,)``.
        W_regularizer, b_regularizer: regularizers of ``W`` and ``b`` (as in Keras 0.3,
            not of the gate's weights).
        activity_regularizer: a regularizer of the output.
        W_constraint, b_constraint: constraints of ``W`` and ``b``.
        input_dim: shortcut for ``input_shape=(input_dim,)``.
        seed: int or numpy Generator for the initial weights (default: the global seed).

    Input shape: ``(batch, d)``. Output shape: ``(batch, d)``.

    Example:
        >>> layer = Highway(activation="relu", input_dim=3)
        >>> layer.get_weights()[3]
        array([-2., -2., -2.], dtype=float32)
        >>> layer(np.ones((2, 3), "float32")).shape
        (2, 3)
    """

    def __init__(
        self,
        init: Any = "glorot_uniform",
        transform_bias: float = -2,
        activation: Any = "linear",
        weights: Sequence[Any] | None = None,
        W_regularizer: Any = None,
        b_regularizer: Any = None,
        activity_regularizer: Any = None,
        W_constraint: Any = None,
        b_constraint: Any = None,
        input_dim: int | None = None,
        seed: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            init=init,
            weights=weights,
            input_dim=input_dim,
            W_regularizer=W_regularizer,
            b_regularizer=b_regularizer,
            activity_regularizer=activity_regularizer,
            W_constraint=W_constraint,
            b_constraint=b_constraint,
            seed=seed,
            **kwargs,
        )
        if isinstance(transform_bias, bool) or not isinstance(
            transform_bias, int | float | np.integer | np.floating
        ):
            raise TypeError(
                f"{self.label}: transform_bias must be a number, received {transform_bias!r}"
            )
        if not np.isfinite(transform_bias):
            raise ValueError(
                f"{self.label}: transform_bias must be finite, received {transform_bias!r}"
            )
        self.transform_bias = float(transform_bias)
        self.activation = ActivationFunction(activation, self.label)
        self._finish_init()

    def build(self) -> None:
        dim = self.known_input_dim()
        rng = get_generator(self.seed)
        weight = initializations.draw(self.init, (dim, dim), rng)
        self.add_weight("W", weight, self.W_regularizer, self.W_constraint)
        self.add_weight("b", np.zeros(dim), self.b_regularizer, self.b_constraint)
        self.add_weight("W_carry", initializations.draw(self.init, (dim, dim), rng))
        self.add_weight("b_carry", np.full(dim, self.transform_bias))
        self.set_initial_weights()

    def _forward(self, x: Any, train: bool) -> Any:
        kernels = self.kernels
        weight, bias, weight_carry, bias_carry = self.params
        shape = tuple(x.shape)
        z = self.buffer("z", shape)
        kernels.matmul(x, weight, bias, z)
        h = z
        if not self.activation.is_identity:
            h = self.buffer("h", shape)
            self.activation.forward(kernels, z, h)
        gate_input = self.buffer("gate_input", shape)
        kernels.matmul(x, weight_carry, bias_carry, gate_input)
        gate = self.buffer("gate", shape)
        kernels.sigmoid_forward(gate_input, gate)
        y = self.buffer("y", shape)
        kernels.highway_forward(h, gate, x, y)
        self.save(x=x, z=z, h=h, gate=gate)
        return y

    def _backward(self, grad_output: Any) -> Any:
        kernels = self.kernels
        saved = self.saved()
        x, z, h, gate = saved["x"], saved["z"], saved["h"], saved["gate"]
        weight, _, weight_carry, _ = self.params
        grad_weight, grad_bias, grad_weight_carry, grad_bias_carry = self.grads
        shape = tuple(x.shape)
        grad_h = self.buffer("grad_h", shape)
        grad_gate_input = self.buffer("grad_gate_input", shape)
        grad_x = self.buffer("grad_x", shape)
        kernels.highway_backward(grad_output, h, gate, x, grad_h, grad_gate_input, grad_x)
        grad_z = grad_h
        if not self.activation.is_identity:
            grad_z = self.buffer("grad_z", shape)
            self.activation.backward(kernels, z, h, grad_h, grad_z)
        kernels.matmul_transpose_a(x, grad_z, grad_weight)
        kernels.sum_rows(grad_z, grad_bias)
        kernels.matmul_transpose_a(x, grad_gate_input, grad_weight_carry)
        kernels.sum_rows(grad_gate_input, grad_bias_carry)
        if not self.needs_input_gradient:
            return None
        part = self.buffer("grad_x_part", shape)
        kernels.matmul_transpose_b(grad_z, weight, part)
        kernels.add_into(part, grad_x)
        kernels.matmul_transpose_b(grad_gate_input, weight_carry, part)
        kernels.add_into(part, grad_x)
        return grad_x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(transform_bias=self.transform_bias, activation=self.activation.config)
        return config
