"""Keras 0.3's advanced activations on 256 x 4096: the elementwise ones (fixed parameters)
and the trainable ones, whose backward also sums a gradient per feature over the batch."""

from __future__ import annotations

from typing import Any

from numlayers.layers import (
    ELU,
    Layer,
    LeakyReLU,
    ParametricSoftplus,
    PReLU,
    SReLU,
    ThresholdedLinear,
    ThresholdedReLU,
)

from . import common

#: each activation at Keras 0.3's defaults (PReLU's slopes away from zero, SReLU seeded)
ADVANCED_ACTIVATIONS: dict[str, Any] = {
    "LeakyReLU": LeakyReLU,
    "ELU": ELU,
    "ThresholdedLinear": ThresholdedLinear,
    "ThresholdedReLU": ThresholdedReLU,
    "PReLU": lambda **kw: PReLU("glorot_uniform", seed=0, **kw),
    "ParametricSoftplus": ParametricSoftplus,
    "SReLU": lambda **kw: SReLU(seed=0, **kw),
}


class AdvancedActivationBench(common.LayerBenchmark):
    """Forward and backward of each advanced activation on 256 x 4096."""

    params = [list(ADVANCED_ACTIVATIONS), common.DEVICES, common.DTYPES]
    param_names = ["activation", "device", "dtype"]
    layer_classes = (
        LeakyReLU,
        ELU,
        ThresholdedLinear,
        ThresholdedReLU,
        PReLU,
        ParametricSoftplus,
        SReLU,
    )
    shape = (256, 4096)
    tiny_shape = (4, 6)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        make = ADVANCED_ACTIVATIONS[case["activation"]]
        layer: Layer = make(input_shape=shape[1:], dtype=dtype)
        return layer
