"""Weight constraints applied in place after every update (Keras 0.3's maxnorm, nonneg, unitnorm).

As in Keras 0.3, MaxNorm takes norms over axis 0 (one per output unit) and UnitNorm
over the last axis, unless given Keras 0.3.2's ``axis``: ``0``, the last axis, or every
axis but the first (``[1, 2, 3]`` for a convolution's filters).
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


def _checked_axis(axis: Any, owner: str) -> int | tuple[int, ...]:
    """``axis`` as an int or a tuple of ints (Keras 0.3.2 takes either)."""
    axes = axis if isinstance(axis, list | tuple) else [axis]
    if not axes or any(isinstance(a, bool) or not isinstance(a, int | np.integer) for a in axes):
        raise ValueError(f"{owner}: axis must be an int or a list of ints, received {axis!r}")
    return int(axes[0]) if not isinstance(axis, list | tuple) else tuple(int(a) for a in axes)


def _norm_layout(axis: int | tuple[int, ...], weight: Any, owner: str) -> tuple[str, Any]:
    """Where the norms of ``weight`` run: ``("columns", matrix)``, the columns of a
    ``(shape[0], rest)`` view (axis 0), or ``("rows", matrix)``, the rows of a view
    whose rows hold each norm's values (every axis but the first, or the last axis)."""
    ndim = max(weight.ndim, 1)
    axes = sorted({a % ndim for a in (axis if isinstance(axis, tuple) else (axis,))})
    if axes == [0] and weight.ndim >= 1:
        return "columns", _as_matrix(weight)
    if weight.ndim >= 2 and axes == list(range(1, weight.ndim)):
        return "rows", _as_matrix(weight)
    if weight.ndim >= 2 and axes == [weight.ndim - 1]:
        last = weight.shape[-1]
        return "rows", weight.reshape(weight.size // max(last, 1), last)
    raise ValueError(
        f"{owner}: norms over axis {axis} of a weight of shape {tuple(weight.shape)} are not "
        "supported: use 0, the last axis, or every axis but the first"
    )


class MaxNorm(Constraint):
    """Rescale each weight vector whose L2 norm exceeds ``m`` to norm ``m``: the columns
    (``axis=0``, each output unit's incoming weights), or the vectors along the axes
    ``axis`` names (see the module doc)."""

    def __init__(self, m: float = 2.0, axis: Any = 0) -> None:
        if isinstance(m, bool) or not isinstance(m, int | float) or m <= 0:
            raise ValueError(f"MaxNorm: m must be a positive number, received {m!r}")
        self.m = float(m)
        self.axis = _checked_axis(axis, "MaxNorm")

    def apply(self, kernels: Any, weight: Any) -> None:
        layout, matrix = _norm_layout(self.axis, weight, "MaxNorm")
        m = np.dtype(weight.dtype).type(self.m)
        if layout == "columns":
            kernels.maxnorm_constraint(matrix, m)
        else:
            kernels.maxnorm_rows_constraint(matrix, m)

    def get_config(self) -> dict[str, Any]:
        axis = list(self.axis) if isinstance(self.axis, tuple) else self.axis
        return {"class_name": "MaxNorm", "m": self.m, "axis": axis}


class NonNeg(Constraint):
    """Set negative weights to zero."""

    def apply(self, kernels: Any, weight: Any) -> None:
        kernels.nonneg_constraint(weight.reshape(weight.size))


class UnitNorm(Constraint):
    """Scale the weight to unit L2 norm along its last axis, as Keras 0.3.0 (each
    embedding vector, or each input's row of a Dense weight), or along ``axis``
    (``axis=0`` is Keras 0.3.2's default: each output unit's incoming weights)."""

    def __init__(self, axis: Any = -1) -> None:
        self.axis = _checked_axis(axis, "UnitNorm")

    def apply(self, kernels: Any, weight: Any) -> None:
        if weight.ndim < 2:
            kernels.unitnorm_constraint(weight.reshape(1, weight.size))
            return
        layout, matrix = _norm_layout(self.axis, weight, "UnitNorm")
        if layout == "columns":
            kernels.unitnorm_columns_constraint(matrix)
        else:
            kernels.unitnorm_constraint(matrix)

    def get_config(self) -> dict[str, Any]:
        axis = list(self.axis) if isinstance(self.axis, tuple) else self.axis
        return {"class_name": "UnitNorm", "axis": axis}


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
