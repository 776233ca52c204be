"""Numba kernels, one module per layer family.

Each family module defines two builders with the same result shape::

    build_cpu(dtype)        -> dict of operations made of @njit functions
    build_cuda(dtype, cuda) -> dict of operations that launch @cuda.jit kernels

Both dicts have the same operation names and signatures: every operation takes
its arrays (inputs first, outputs last) and writes its results into the output
arrays it is given. Layers call operations through :func:`kernel_set`, which
merges the families for one device and dtype, so no layer names a device.

Builders receive the dtype so that constants inside kernels are built from it
(a bare float literal would be float64 and silently slow float32 code on a GPU).
"""

from __future__ import annotations

import functools
import importlib
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from numlayers.devices import Device
    from numlayers.kernels.interfaces import Kernels

FAMILIES = (
    "arrays",
    "matmul",
    "dense",
    "activations",
    "dropout",
    "reshaping",
    "losses",
    "optimizers",
    "regularization",
    "merges",
    "recurrent",
    "embeddings",
    "masking",
)


class KernelSet(SimpleNamespace):
    """The operations of every kernel family for one device and dtype."""

    device_name: str
    dtype: np.dtype


def build_family(family: str, device: Device, dtype: np.dtype) -> dict[str, Any]:
    """Build one family's operations for ``device`` and ``dtype``."""
    module = importlib.import_module(f"numlayers.kernels.{family}")
    builder = getattr(module, device.kernel_builder)
    operations: dict[str, Any] = builder(dtype, *device.builder_args())
    return operations


@functools.cache
def kernel_set(device: Device, dtype: np.dtype) -> Kernels:
    """Return the merged operations of all families for ``device`` and ``dtype``, typed by
    the families' interfaces (:class:`~numlayers.kernels.interfaces.Kernels`)."""
    operations: dict[str, Any] = {}
    for family in FAMILIES:
        for name, operation in build_family(family, device, dtype).items():
            if name in operations:
                raise RuntimeError(f"kernel operation {name!r} is defined by two families")
            operations[name] = operation
    return cast("Kernels", KernelSet(device_name=device.name, dtype=dtype, **operations))
