"""Large matrix products through cuBLAS, when nvmath-python is installed.

The ``[cuda]`` extra installs nvmath-python, whose ``nvmath.bindings.cublas`` calls
cuBLAS from Python. Where it imports and a cuBLAS handle can be made (on a GPU; never
under the simulator), :mod:`numlayers.kernels.matmul` hands it the float products of at
least :data:`MIN_CUBLAS_WORK` multiply-adds, as the CPU path hands large products to
MKL; smaller products, and every product without nvmath, run the Numba GEMM, which the
tests check cuBLAS against. ``NUMLAYERS_CUBLAS=0`` keeps every product on the Numba
GEMM.

Each call is put on the stream that numlayers' own kernels use: the default stream, or
the stream of a step being recorded as a CUDA graph (:mod:`numlayers.cuda_graphs`), so a
recorded step holds its cuBLAS calls too. cuBLAS gets a workspace of its own, allocated
once, so that it allocates nothing while a step is recorded. Its math mode is the
default one: float32 products are not rounded through TF32.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from numlayers.devices import CUDA_ACTIVITY, active_capture, simulator_enabled

#: multiply-adds (``m * n * k``) from which a product goes to cuBLAS (256 ** 3): below,
#: the Numba GEMM's single launch costs about as much
MIN_CUBLAS_WORK = 1 << 24
#: bytes of the workspace cuBLAS is given (its documented recommendation on Hopper)
WORKSPACE_BYTES = 32 << 20


class Cublas:
    """The ``nvmath.bindings.cublas`` module, a handle, its workspace and the host
    scalars ``alpha = 1`` and ``beta = 0 or 1`` of each dtype (kept alive: cuBLAS reads
    them through pointers)."""

    def __init__(self, module: Any, cuda: Any) -> None:
        self.module = module
        self.handle = module.create()
        module.set_math_mode(self.handle, module.Math.DEFAULT_MATH)
        self.workspace = cuda.device_array(WORKSPACE_BYTES, dtype=np.uint8)
        module.set_workspace(self.handle, device_pointer(self.workspace), WORKSPACE_BYTES)
        self.scalars = {
            np.dtype(dtype): (np.ones(1, dtype), np.zeros(1, dtype))
            for dtype in (np.float32, np.float64)
        }
        self.stream = -1  # the stream the handle was last given

    def gemm(self, transpose_a: bool, transpose_b: bool, a: Any, b: Any, out: Any,
             accumulate: bool) -> None:  # fmt: skip
        """``out = op(a) @ op(b)`` (``+ out`` when ``accumulate``), row-major 2-D arrays."""
        capture = active_capture()
        stream = 0 if capture is None else int(capture.stream.handle)
        if stream != self.stream:
            self.module.set_stream(self.handle, stream)
            self.stream = stream
        rows, cols = out.shape
        depth = a.shape[0] if transpose_a else a.shape[1]
        one, zero = self.scalars[np.dtype(out.dtype)]
        operation = self.module.Operation
        routine = self.module.sgemm if out.dtype == np.float32 else self.module.dgemm
        # Row-major out = op(a) @ op(b) is column-major out.T = op(b).T @ op(a).T, and a
        # row-major array read column-major is its transpose: b first, flags as given.
        routine(
            self.handle,
            operation.T if transpose_b else operation.N,
            operation.T if transpose_a else operation.N,
            cols, rows, depth,
            one.ctypes.data,
            device_pointer(b), b.shape[1],
            device_pointer(a), a.shape[1],
            (one if accumulate else zero).ctypes.data,
            device_pointer(out), cols,
        )  # fmt: skip
        if capture is None:
            CUDA_ACTIVITY.launches += 1


def device_pointer(array: Any) -> int:
    return int(array.__cuda_array_interface__["data"][0])


@functools.cache
def cublas(cuda: Any) -> Cublas | None:
    """The process's :class:`Cublas`, or None where nvmath-python or a GPU is missing or
    ``NUMLAYERS_CUBLAS=0`` (then every product runs the Numba GEMM)."""
    if simulator_enabled() or os.environ.get("NUMLAYERS_CUBLAS", "1") == "0":
        return None
    try:
        module = importlib.import_module("nvmath.bindings.cublas")
        return Cublas(module, cuda)
    except Exception:  # not installed, no cuBLAS library found, no GPU: the Numba GEMM
        return None


def goes_through_cublas(cuda: Any, rows: int, cols: int, depth: int) -> bool:
    """Whether a ``rows x cols`` product of depth ``depth`` runs through cuBLAS: it is
    there, and the product has at least :data:`MIN_CUBLAS_WORK` multiply-adds."""
    return rows * cols * depth >= MIN_CUBLAS_WORK and cublas(cuda) is not None


def large_product_launcher(
    cuda: Any, transpose_a: bool, transpose_b: bool, fill_with_bias: Callable[..., None]
) -> Callable[[Any, Any, Any, Any], bool]:
    """Return ``launch(a, b, bias, out) -> bool``: the product through cuBLAS when it is
    there and the product has at least :data:`MIN_CUBLAS_WORK` multiply-adds (True), else
    nothing (False: the caller runs the Numba GEMM). A bias is first broadcast into
    ``out`` by ``fill_with_bias(bias, out)``, and the product added to it."""

    def launch(a: Any, b: Any, bias: Any, out: Any) -> bool:
        rows, cols = out.shape
        depth = a.shape[0] if transpose_a else a.shape[1]
        if not goes_through_cublas(cuda, rows, cols, depth):
            return False
        library = cublas(cuda)
        assert library is not None
        if bias.shape[0] > 0:
            fill_with_bias(bias, out)
        library.gemm(transpose_a, transpose_b, a, b, out, accumulate=bias.shape[0] > 0)
        return True

    return launch
