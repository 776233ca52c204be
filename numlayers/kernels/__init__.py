"""Numba kernels, one module per layer family.

Each family module defines two builders with the same result shape::

    build_cpu(dtype)        -> dict of operations made of @njit functions
    build_cuda(dtype, cuda) -> dict of operations that launch @cuda.jit kernels

Both dicts have the operations and signatures of the family's interface (a
``Protocol`` at the end of its module, see :mod:`numlayers.kernels.interfaces`):
every operation takes its arrays (inputs first, outputs last) and writes its
results into the output arrays it is given. Layers call operations through
:func:`kernel_set`, which merges the families for one device and dtype (building
each on first use), so no layer names a device.

Builders receive the dtype so that constants inside kernels are built from it
(a bare float literal would be float64 and silently slow float32 code on a GPU).
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from numlayers.devices import Device
    from numlayers.kernels.interfaces import Kernels

FAMILIES = (
    "arrays",
    "matmul",
    "dense",
    "dense_variants",
    "activations",
    "parametric_activations",
    "dropout",
    "reshaping",
    "losses",
    "optimizers",
    "regularization",
    "merges",
    "recurrent",
    "embeddings",
    "masking",
    "normalization",
    "time_merge",
    "convolutional",
    "convolutional.depth",
    "pooling",
    "traced",
)


class KernelSet:
    """The operations of every kernel family for one device and dtype.

    A family is built the first time one of its operations is asked for (its
    interface says which operations it has), and its operations then become plain
    attributes: a process that never runs a recurrent layer never builds that family,
    and a call costs one attribute lookup.
    """

    def __init__(self, device: Device, dtype: np.dtype) -> None:
        self.device_name = device.name
        self.dtype = dtype
        self._device = device

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not attributes yet
        family = operation_families().get(name)
        if family is None:
            raise AttributeError(f"no kernel operation {name!r}")
        operations = build_family(family, self._device, self.dtype)
        for operation_name, operation in operations.items():
            setattr(self, operation_name, operation)
        if name not in operations:
            raise RuntimeError(f"kernel family {family!r} did not build {name!r}")
        return operations[name]

    def __repr__(self) -> str:
        return f"<KernelSet {self.device_name} {self.dtype}>"


@functools.cache
def operation_families() -> dict[str, str]:
    """The family of each operation, from the families' interfaces."""
    from numlayers.kernels.interfaces import FAMILY_INTERFACES, interface_signatures

    families: dict[str, str] = {}
    for family, interface in FAMILY_INTERFACES.items():
        for name in interface_signatures(interface):
            if name in families:
                raise RuntimeError(f"kernel operation {name!r} is declared by two families")
            families[name] = family
    return families


def build_family(family: str, device: Device, dtype: np.dtype) -> dict[str, Any]:
    """Build one family's operations for ``device`` and ``dtype``."""
    module = importlib.import_module(f"numlayers.kernels.{family}")
    builder = getattr(module, device.kernel_builder)
    operations: dict[str, Any] = builder(dtype, *device.builder_args())
    return operations


@functools.cache
def kernel_set(device: Device, dtype: np.dtype) -> Kernels:
    """The operations of all families for ``device`` and ``dtype`` (each family built on
    first use), typed by the families' interfaces
    (:class:`~numlayers.kernels.interfaces.Kernels`)."""
    return cast("Kernels", KernelSet(device, dtype))
