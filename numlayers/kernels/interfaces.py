"""The typed kernel set: each family's interface, merged into :class:`Kernels`.

Every family module ends with a ``Protocol`` naming its operations and their
arguments; both devices' builders must return exactly those operations with exactly
those signatures (:func:`interface_mismatches`, checked by the tests for every family
on both devices). Layers reach their device's kernels as a :class:`Kernels`, so mypy
rejects a misspelt or mis-called operation.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from numlayers.kernels.activations import ActivationKernels
from numlayers.kernels.arrays import ArrayKernels
from numlayers.kernels.convolutional import ConvolutionalKernels
from numlayers.kernels.convolutional.depth import DepthKernels
from numlayers.kernels.dense import DenseKernels
from numlayers.kernels.dense_variants import DenseVariantKernels
from numlayers.kernels.dropout import DropoutKernels
from numlayers.kernels.embeddings import EmbeddingKernels
from numlayers.kernels.losses import LossKernels
from numlayers.kernels.masking import MaskingKernels
from numlayers.kernels.matmul import MatmulKernels
from numlayers.kernels.merges import MergeKernels
from numlayers.kernels.normalization import NormalizationKernels
from numlayers.kernels.optimizers import OptimizerKernels
from numlayers.kernels.parametric_activations import ParametricActivationKernels
from numlayers.kernels.pooling import PoolingKernels
from numlayers.kernels.recurrent import RecurrentKernels
from numlayers.kernels.regularization import RegularizationKernels
from numlayers.kernels.reshaping import ReshapingKernels
from numlayers.kernels.time_merge import TimeMergeKernels
from numlayers.kernels.traced import TracedKernels


class Kernels(
    ArrayKernels,
    MatmulKernels,
    DenseKernels,
    DenseVariantKernels,
    ActivationKernels,
    ParametricActivationKernels,
    DropoutKernels,
    ReshapingKernels,
    LossKernels,
    OptimizerKernels,
    RegularizationKernels,
    MergeKernels,
    RecurrentKernels,
    EmbeddingKernels,
    MaskingKernels,
    NormalizationKernels,
    TimeMergeKernels,
    ConvolutionalKernels,
    DepthKernels,
    PoolingKernels,
    TracedKernels,
    Protocol,
):
    """The operations of every family for one device and dtype."""

    device_name: str
    dtype: np.dtype


#: each family module's interface, by the family's name in ``kernels.FAMILIES``
FAMILY_INTERFACES: dict[str, type] = {
    "arrays": ArrayKernels,
    "matmul": MatmulKernels,
    "dense": DenseKernels,
    "dense_variants": DenseVariantKernels,
    "activations": ActivationKernels,
    "parametric_activations": ParametricActivationKernels,
    "dropout": DropoutKernels,
    "reshaping": ReshapingKernels,
    "losses": LossKernels,
    "optimizers": OptimizerKernels,
    "regularization": RegularizationKernels,
    "merges": MergeKernels,
    "recurrent": RecurrentKernels,
    "embeddings": EmbeddingKernels,
    "masking": MaskingKernels,
    "normalization": NormalizationKernels,
    "time_merge": TimeMergeKernels,
    "convolutional": ConvolutionalKernels,
    "convolutional.depth": DepthKernels,
    "pooling": PoolingKernels,
    "traced": TracedKernels,
}


def interface_signatures(interface: type) -> dict[str, inspect.Signature]:
    """The signature of each operation of ``interface`` (without ``self``).

    An operation is a method, or an attribute annotated with a callable protocol
    (the elementwise families type each generated operation so).
    """
    signatures: dict[str, inspect.Signature] = {}
    hints = typing.get_type_hints(interface)
    for name, hint in hints.items():
        if isinstance(hint, type) and "__call__" in vars(hint):
            signatures[name] = _without_self(inspect.signature(hint.__call__))
    for name, member in vars(interface).items():
        if inspect.isfunction(member) and not name.startswith("_"):
            signatures[name] = _without_self(inspect.signature(member))
    for base in interface.__mro__[1:]:
        if base is not object and base is not Protocol and hasattr(base, "_is_protocol"):
            for name, signature in interface_signatures(base).items():
                signatures.setdefault(name, signature)
    return signatures


def _without_self(signature: inspect.Signature) -> inspect.Signature:
    parameters = list(signature.parameters.values())[1:]
    return signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)


def _shape(signature: inspect.Signature) -> list[tuple[str, Any, Any]]:
    """What must agree between an interface and an operation: names, kinds, defaults."""
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def interface_mismatches(interface: type, operations: dict[str, Callable[..., Any]]) -> list[str]:
    """How ``operations`` (one family, one device) differ from ``interface``; empty if not."""
    expected = interface_signatures(interface)
    found = []
    for name in sorted(set(expected) - set(operations)):
        found.append(f"{name}: in the interface, not built")
    for name in sorted(set(operations) - set(expected)):
        found.append(f"{name}: built, not in the interface")
    for name in sorted(set(expected) & set(operations)):
        built = inspect.signature(operations[name])
        if _shape(built) != _shape(expected[name]):
            found.append(f"{name}: built as {built}, interface says {expected[name]}")
    return found
