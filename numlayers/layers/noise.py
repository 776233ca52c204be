"""Noise layers: GaussianNoise and GaussianDropout, active in training only.

Their noise comes from the counter-based hash of :mod:`numlayers.kernels.dropout`
(a standard normal number per element, from ``(seed, element index)``), seeded like
:class:`~numlayers.layers.core.Dropout`: the same seed gives the same noise on the
CPU and on CUDA, and nothing random is stored.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from numlayers.layers.core import TrainingNoise


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)


class GaussianNoise(TrainingNoise):
    """Additive zero-centred Gaussian noise: in training, ``x + sigma * N(0, 1)``.

    Outside training (``train=False``) the layer is the identity; its gradient is
    always the identity. A regulariser against overfitting, and a way to augment
    real-valued inputs.

    Args:
        sigma: standard deviation of the noise, a finite number >= 0.
        seed: int or numpy Generator for the per-pass seeds (default: the global seed).

    Input shape: any. Output shape: the input shape. Masks pass through.

    Example:
        >>> layer = GaussianNoise(0.1, seed=0, input_shape=(3,))
        >>> layer(np.ones((1, 3))).tolist()  # not training: the identity
        [[1.0, 1.0, 1.0]]
    """

    def __init__(self, sigma: float, seed: Any = None, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        if not _is_number(sigma) or not math.isfinite(sigma) or sigma < 0:
            raise ValueError(
                f"{self.label}: sigma must be a finite number >= 0, received {sigma!r}"
            )
        self.sigma = float(sigma)
        self._finish_init()

    def _forward(self, x: Any, train: bool) -> Any:
        if not train or self.sigma == 0:
            return x
        seed = self.pass_seed()
        out = self.buffer("y", tuple(x.shape))
        self.kernels.gaussian_noise_forward(x, seed, self.dtype.type(self.sigma), out)
        return out

    def _backward(self, grad_output: Any) -> Any:
        return grad_output

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["sigma"] = self.sigma
        return config


class GaussianDropout(TrainingNoise):
    """Multiplicative one-centred Gaussian noise: in training,
    ``x * N(1, sqrt(p / (1 - p)))``.

    The noise has the variance of inverted dropout's scaled mask with drop
    probability ``p``. Outside training (``train=False``) the layer is the identity;
    in training the gradient is multiplied by the same noise.

    Args:
        p: drop probability the noise imitates, in [0, 1).
        seed: int or numpy Generator for the per-pass seeds (default: the global seed).

    Input shape: any. Output shape: the input shape. Masks pass through.

    Example:
        >>> layer = GaussianDropout(0.5, seed=0, input_shape=(3,))
        >>> layer(np.ones((1, 3))).tolist()  # not training: the identity
        [[1.0, 1.0, 1.0]]
    """

    def __init__(self, p: float, seed: Any = None, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        if not _is_number(p) or not 0 <= p < 1:
            raise ValueError(f"{self.label}: p must be a number in [0, 1), received {p!r}")
        self.p = float(p)
        self._finish_init()

    @property
    def std(self) -> float:
        """The standard deviation of the multiplicative noise, ``sqrt(p / (1 - p))``."""
        return math.sqrt(self.p / (1.0 - self.p))

    def _forward(self, x: Any, train: bool) -> Any:
        if not train or self.p == 0:
            return x
        seed = self.pass_seed()
        std = self.dtype.type(self.std)
        out = self.buffer("y", tuple(x.shape))
        self.kernels.gaussian_dropout_forward(x, seed, std, out)
        self.save(seed=seed, std=std)
        return out

    def _backward(self, grad_output: Any) -> Any:
        saved = self.saved()
        if "seed" not in saved:
            return grad_output
        grad_x = self.buffer("grad_x", tuple(grad_output.shape))
        # the incoming gradient times the very same noise
        self.kernels.gaussian_dropout_forward(grad_output, saved["seed"], saved["std"], grad_x)
        return grad_x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["p"] = self.p
        return config
