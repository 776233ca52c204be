"""Catalogue rows of layers whose forward is traced (Lambda, custom layers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers import register_function
from numlayers.layers import Lambda
from numlayers.testing.catalogue import LayerCase
from numlayers.tracing import TracedLayer


@register_function
def _centred_tanh(x: Any) -> Any:
    """A Lambda with a fused elementwise part, a reduction with keepdims and broadcasting."""
    return np.tanh(x * 2.0) - x.mean(axis=-1, keepdims=True) + x * x


class ScaledTanh(TracedLayer):
    """A custom layer written as a NumPy-style ``call``: ``tanh(x @ W + b) * gain``; its
    backward pass and kernels come from tracing ``call`` (weights included)."""

    def __init__(self, output_dim: int, **kwargs: Any) -> None:
        self.output_dim = int(output_dim)
        super().__init__(**kwargs)

    def build(self) -> None:
        rng = np.random.default_rng(0)
        features = self.input_shape[-1]
        assert features is not None
        self.add_weight("W", rng.uniform(-0.5, 0.5, (features, self.output_dim)))
        self.add_weight("b", np.linspace(-0.1, 0.1, self.output_dim))
        self.add_weight("gain", np.linspace(0.5, 1.5, self.output_dim))

    def call(self, x: Any, W: Any, b: Any, gain: Any) -> Any:  # noqa: N803 - Keras' names
        return np.tanh(x @ W + b) * gain

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["output_dim"] = self.output_dim
        return config


def _scaled_tanh_reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    weight, bias, gain = weights
    return np.tanh(x @ weight + bias) * gain


def tracing_cases() -> list[LayerCase]:
    return [
        LayerCase(
            "Lambda-traced",
            lambda **kw: Lambda(_centred_tanh, input_shape=(2, 3), **kw),
            (2, 2, 3),
            lambda x, weights: np.tanh(x * 2.0) - x.mean(axis=-1, keepdims=True) + x * x,
        ),
        LayerCase(
            "TracedLayer-ScaledTanh",
            lambda **kw: ScaledTanh(2, input_shape=(3,), **kw),
            (2, 3),
            _scaled_tanh_reference,
        ),
    ]
