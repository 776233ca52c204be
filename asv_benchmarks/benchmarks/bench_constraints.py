"""Weight constraints after an update: MaxNorm and UnitNorm along each orientation their
kernels take, and NonNeg, on a 1024 x 1024 weight (a Dense layer's), in place.

``maxnorm_constraint`` and ``unitnorm_columns_constraint`` scale each column (norms over
axis 0), ``maxnorm_rows_constraint`` and ``unitnorm_constraint`` each row (every axis but
the first, or the last), ``nonneg_constraint`` each element.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.devices import Device

from . import common

#: the weight's side, full and tiny
SIDE = (1024, 6)
RULES = [
    "maxnorm_constraint",
    "maxnorm_rows_constraint",
    "unitnorm_constraint",
    "unitnorm_columns_constraint",
    "nonneg_constraint",
]


class ConstraintBench:
    """One constraint over a 1024 x 1024 weight."""

    params = [RULES, common.DEVICES, common.DTYPES]
    param_names = ["rule", "device", "dtype"]
    timeout = 180

    def setup(self, rule: str, device: str, dtype: str) -> None:
        dev = common.bench_device(device)
        state = common.prepared(
            ("constraint", rule, device, dtype), lambda: self._prepare(dev, dtype)
        )
        self.device = dev
        self.weight = state["weight"]
        self.apply = getattr(dev.kernels(np.dtype(dtype)), rule)
        self.arguments = (1.5,) if rule.startswith("maxnorm") else ()

    def _prepare(self, device: Device, dtype: str) -> dict[str, Any]:
        side = common.pick(*SIDE)
        weight = np.random.default_rng(0).standard_normal((side, side))
        return {"weight": device.asarray(weight, dtype)}

    def time_constraint(self, rule: str, device: str, dtype: str) -> None:
        self.apply(self.weight, *self.arguments)
        self.device.synchronize()
