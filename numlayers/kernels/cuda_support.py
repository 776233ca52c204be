"""Former home of the CUDA launch helpers: now :mod:`numlayers.kernels.toolkit`.

Kept as aliases while the families move onto the toolkit.
"""

from __future__ import annotations

from numlayers.kernels.toolkit import BLOCK_SIZE as THREADS_PER_BLOCK
from numlayers.kernels.toolkit import REGISTRIES, blocks_for, empty_vector
from numlayers.kernels.toolkit import CudaKernels as CudaKernelRegistry
from numlayers.kernels.toolkit import bind_cuda as new_registry

__all__ = [
    "REGISTRIES",
    "THREADS_PER_BLOCK",
    "CudaKernelRegistry",
    "blocks_for",
    "empty_vector",
    "new_registry",
]
