"""Weight and activity regularizers (Keras 0.3's l1, l2, l1l2 and activity_* forms).

A weight regularizer adds ``l1 * sum|W| + l2 * sum W**2`` to the loss; an
activity regularizer adds the same of a layer's output, averaged over the
batch as in Keras 0.3. Penalties and their gradients are kernels
(:mod:`numlayers.kernels.regularization`) on the weights' device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class Regularizer:
    """``l1 * sum(|x|) + l2 * sum(x**2)`` of a weight, or of an activity averaged over the batch.

    Args:
        l1: L1 factor.
        l2: L2 factor.
        activity: regularise a layer's output instead of a weight.
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0, activity: bool = False) -> None:
        for name, value in (("l1", l1), ("l2", l2)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(
                    f"Regularizer: {name} must be a non-negative number, received {value!r}"
                )
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.activity = bool(activity)

    def __repr__(self) -> str:
        kind = "activity" if self.activity else "weight"
        return f"<Regularizer {kind} l1={self.l1} l2={self.l2}>"

    def _factors(self, array: Any, dtype: np.dtype) -> tuple[Any, Any]:
        scale = 1.0 / array.shape[0] if self.activity else 1.0
        return dtype.type(self.l1 * scale), dtype.type(self.l2 * scale)

    def add_penalty(self, kernels: Any, array: Any, total: Any) -> None:
        """``total[0] += penalty(array)`` on the array's device."""
        l1, l2 = self._factors(array, np.dtype(array.dtype))
        kernels.l1l2_penalty(array.reshape(array.size), l1, l2, total)

    def add_gradient(self, kernels: Any, array: Any, grad: Any) -> None:
        """``grad += d penalty / d array``, in place."""
        l1, l2 = self._factors(array, np.dtype(array.dtype))
        kernels.l1l2_gradient(array.reshape(array.size), l1, l2, grad.reshape(grad.size))

    def get_config(self) -> dict[str, Any]:
        return {
            "class_name": "Regularizer",
            "l1": self.l1,
            "l2": self.l2,
            "activity": self.activity,
        }


class WeightRegularizer(Regularizer):
    """Keras 0.3's class of weight regularizers: ``l1 * sum|W| + l2 * sum W**2``."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        super().__init__(l1, l2, activity=False)


class ActivityRegularizer(Regularizer):
    """Keras 0.3's class of activity regularizers: the same of a layer's output, averaged
    over the batch."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        super().__init__(l1, l2, activity=True)


def l1(l: float = 0.01) -> Regularizer:  # noqa: E741 - Keras 0.3's argument name
    return Regularizer(l1=l)


def l2(l: float = 0.01) -> Regularizer:  # noqa: E741
    return Regularizer(l2=l)


def l1l2(l1: float = 0.01, l2: float = 0.01) -> Regularizer:
    return Regularizer(l1=l1, l2=l2)


def activity_l1(l: float = 0.01) -> Regularizer:  # noqa: E741
    return Regularizer(l1=l, activity=True)


def activity_l2(l: float = 0.01) -> Regularizer:  # noqa: E741
    return Regularizer(l2=l, activity=True)


def activity_l1l2(l1: float = 0.01, l2: float = 0.01) -> Regularizer:
    return Regularizer(l1=l1, l2=l2, activity=True)


#: Keras 0.3's ``regularizers.identity()``: a regularizer that adds nothing
identity = Regularizer


def get(identifier: Any, activity: bool = False) -> Regularizer | None:
    """A regularizer from None, an instance, a name ("l1", "l2", "l1l2") or a config dict
    (None for one that adds nothing, such as ``identity()``, so it costs no kernel)."""
    if isinstance(identifier, Regularizer) and identifier.l1 == identifier.l2 == 0:
        return None
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict):
        config = {k: v for k, v in identifier.items() if k != "class_name"}
        return Regularizer(**config)
    factories: dict[str, Callable[[], Regularizer]] = {"l1": l1, "l2": l2, "l1l2": l1l2}
    if isinstance(identifier, str) and identifier in factories:
        regularizer = factories[identifier]()
        regularizer.activity = activity
        return regularizer
    raise ValueError(f"unknown regularizer {identifier!r}; use l1, l2, l1l2 or a Regularizer")


def config_of(regularizer: Regularizer | None) -> dict[str, Any] | None:
    return None if regularizer is None else regularizer.get_config()
