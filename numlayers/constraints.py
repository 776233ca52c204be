"""Weight constraints applied in place after every update (Keras 0.3's maxnorm, nonneg, unitnorm).

As in Keras 0.3, MaxNorm takes norms over axis 0 (one per output unit) and UnitNorm
over the last axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Constraint:
    """Base class: ``apply(kernels, weight)`` projects the weight in place."""

    name = "constraint"

    def apply(self, kernels: Any, weight: Any) -> None:
        raise NotImplementedError

    def __call__(self, weight: Any) -> np.ndarray:
        """The constrained copy of the array ``weight`` (Keras 0.3's constraints were
        functions of a weight), computed by the CPU kernels layers use.

        Example:
            >>> MaxNorm(1.0)(np.array([[3.0], [4.0]])).ravel().round(6).tolist()
            [0.6, 0.8]
        """
        from numlayers.devices import get_device

        array = np.array(weight, dtype=np.result_type(np.asarray(weight).dtype, np.float32))
        if array.dtype not in (np.float32, np.float64):
            array = array.astype(np.float64)
        self.apply(get_device("cpu").kernels(array.dtype), array)
        return array

    def get_config(self) -> dict[str, Any]:
        return {"class_name": type(self).__name__}

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def _as_matrix(weight: Any) -> Any:
    """Columns are output units: a vector is one column, higher ranks fold into rows."""
    if weight.ndim == 1:
        return weight.reshape(weight.shape[0], 1)
    return weight.reshape(weight.shape[0], weight.size // weight.shape[0])


class MaxNorm(Constraint):
    """Rescale each column whose L2 norm exceeds ``m`` to norm ``m``."""

    def __init__(self, m: float = 2.0) -> None:
        if isinstance(m, bool) or not isinstance(m, int | float) or m <= 0:
            raise ValueError(f"MaxNorm: m must be a positive number, received {m!r}")
        self.m = float(m)

    def apply(self, kernels: Any, weight: Any) -> None:
        kernels.maxnorm_constraint(_as_matrix(weight), np.dtype(weight.dtype).type(self.m))

    def get_config(self) -> dict[str, Any]:
        return {"class_name": "MaxNorm", "m": self.m}


class NonNeg(Constraint):
    """Set negative weights to zero."""

    def apply(self, kernels: Any, weight: Any) -> None:
        kernels.nonneg_constraint(weight.reshape(weight.size))


class UnitNorm(Constraint):
    """Scale the weight to unit L2 norm along its last axis, as Keras 0.3 (each embedding
    vector, or each input's row of a Dense weight)."""

    def apply(self, kernels: Any, weight: Any) -> None:
        last = weight.shape[-1] if weight.ndim else 1
        kernels.unitnorm_constraint(weight.reshape(weight.size // max(last, 1), last))


class Identity(Constraint):
    """Leaves the weight as it is (Keras 0.3's ``constraints.identity``)."""

    name = "identity"

    def apply(self, kernels: Any, weight: Any) -> None:
        pass


maxnorm = MaxNorm
nonneg = NonNeg
unitnorm = UnitNorm
identity = Identity
CONSTRAINTS: dict[str, type[Constraint]] = {
    "maxnorm": MaxNorm,
    "nonneg": NonNeg,
    "unitnorm": UnitNorm,
    "identity": Identity,
    "MaxNorm": MaxNorm,
    "NonNeg": NonNeg,
    "UnitNorm": UnitNorm,
    "Identity": Identity,
}


def get(identifier: Any) -> Constraint | None:
    """A constraint from None, an instance, a name or a config dict (None for the
    identity, which does nothing)."""
    if isinstance(identifier, Identity):
        return None
    if identifier is None or isinstance(identifier, Constraint):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        cls = CONSTRAINTS.get(config.pop("class_name", ""))
        if cls is not None:
            return get(cls(**config))
    if isinstance(identifier, str) and identifier in CONSTRAINTS:
        return get(CONSTRAINTS[identifier]())
    raise ValueError(
        f"unknown constraint {identifier!r}; use maxnorm, nonneg, unitnorm or identity"
    )


def config_of(constraint: Constraint | None) -> dict[str, Any] | None:
    return None if constraint is None else constraint.get_config()
