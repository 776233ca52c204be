"""Activations with parameters of their own (Keras 0.3's ``advanced_activations``)."""

from __future__ import annotations

from numlayers.layers.core import ParametricActivation


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
