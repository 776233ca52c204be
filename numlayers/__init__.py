"""numlayers: Keras-0.3-style layers whose forward and backward passes are Numba kernels."""

from __future__ import annotations

from numlayers import activations, initializations, layers, models
from numlayers.devices import cuda_available, get_device
from numlayers.random import set_seed

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "activations",
    "cuda_available",
    "get_device",
    "initializations",
    "layers",
    "models",
    "set_seed",
]
