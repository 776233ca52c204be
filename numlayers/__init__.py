"""numlayers: Keras-0.3-style layers whose forward and backward passes are Numba kernels."""

from __future__ import annotations

import os

# Numba's parallel loops run on OpenMP threads that spin for a long while after each
# loop, taking a core from the BLAS calls that follow (on 2 cores this tripled the
# time of a 784-1024-1024-10 training step). A short spin keeps both fast; a value the
# user set wins. Read by libgomp when Numba first starts its threads.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from numlayers import activations, initializations, layers, models  # noqa: E402
from numlayers.devices import cuda_available, get_device  # noqa: E402
from numlayers.random import set_seed  # noqa: E402
from numlayers.serialization import register_function  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "activations",
    "cuda_available",
    "get_device",
    "initializations",
    "layers",
    "models",
    "register_function",
    "set_seed",
]
