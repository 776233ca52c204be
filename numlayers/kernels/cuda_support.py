"""Launch helpers and PTX bookkeeping shared by the CUDA builders.

Nothing here imports ``numba.cuda``: the builders pass in the module they were
given by :mod:`numlayers.devices`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

THREADS_PER_BLOCK = 256


def empty_vector(cuda: Any, dtype: np.dtype) -> Callable[[], Any]:
    """Return a function giving a length-0 device vector, allocated on first use.

    Builders must not touch the GPU (the PTX check builds them on machines with
    none), so constant device arrays are made when a kernel first runs.
    """
    return functools.cache(lambda: cuda.device_array(0, dtype=dtype))


def blocks_for(count: int, threads: int = THREADS_PER_BLOCK) -> int:
    """Number of blocks that cover ``count`` threads (at least one)."""
    return max(1, (count + threads - 1) // threads)


@dataclass
class CudaKernelRegistry:
    """Creates ``cuda.jit`` kernels and remembers their argument types.

    The argument types are what the PTX check compiles each kernel with, in the
    dtype the registry was built for, so a float32 kernel that does float64
    arithmetic is caught without a GPU.
    """

    cuda: Any
    dtype: np.dtype
    kernels: dict[str, tuple[Any, tuple[Any, ...]]] = field(default_factory=dict)

    @property
    def scalar(self) -> Any:
        """The numba scalar type of the registry's dtype."""
        return numba.from_dtype(self.dtype)

    def array(self, ndim: int, dtype: Any = None) -> Any:
        """A C-contiguous numba array type of ``ndim`` dimensions."""
        scalar = self.scalar if dtype is None else numba.from_dtype(np.dtype(dtype))
        return numba.types.Array(scalar, ndim, "C")

    def jit(self, *argtypes: Any) -> Callable[[Callable[..., None]], Any]:
        """Decorator: compile lazily with ``cuda.jit`` and record ``argtypes``."""

        def decorate(function: Callable[..., None]) -> Any:
            kernel = self.cuda.jit(function)
            self.kernels[function.__name__] = (function, argtypes)
            return kernel

        return decorate

    def device_function(self, function: Callable[..., Any]) -> Any:
        """Compile ``function`` as a ``cuda.jit(device=True)`` helper, inlined."""
        return self.cuda.jit(device=True, inline=True)(function)


#: every registry created by a CUDA builder, for the PTX check
REGISTRIES: list[CudaKernelRegistry] = []


def new_registry(module_globals: dict[str, Any], cuda: Any, dtype: np.dtype) -> CudaKernelRegistry:
    """Start a registry for kernels defined in the module whose globals are given.

    Kernels refer to ``cuda`` as a global of their own module: Numba resolves
    ``cuda.grid`` and friends from there, and the CUDA simulator swaps exactly
    those globals for its per-thread fake. So the module's ``cuda`` global is
    bound here, to the ``numba.cuda`` that :mod:`numlayers.devices` imported.
    """
    module_globals["cuda"] = cuda
    registry = CudaKernelRegistry(cuda=cuda, dtype=np.dtype(dtype))
    REGISTRIES.append(registry)
    return registry
