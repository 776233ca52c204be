"""BatchNormalization in training (batch statistics, running statistics updated): mode 0
on 256 x 1024 features and on a 64 x 32 x 32 x 32 channels-first image batch (``axis=1``),
mode 1 on 256 x 1024."""

from __future__ import annotations

from typing import Any

from numlayers.layers import BatchNormalization, Layer

from . import common


class BatchNormalizationBench(common.LayerBenchmark):
    """Mode 0 (each feature over the batch) and mode 1 (each sample over its features),
    256 x 1024, training."""

    params = [[0, 1], common.DEVICES, common.DTYPES]
    param_names = ["mode", "device", "dtype"]
    layer_classes = (BatchNormalization,)
    shape = (256, 1024)
    tiny_shape = (4, 6)
    train = True

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return BatchNormalization(mode=case["mode"], input_shape=shape[1:], dtype=dtype)


class BatchNormalizationImageBench(common.LayerBenchmark):
    """Mode 0 over a channels-first image batch: 32 channels, each normalised over
    64 x 32 x 32 values, training."""

    layer_classes = (BatchNormalization,)
    shape = (64, 32, 32, 32)
    tiny_shape = (2, 3, 2, 2)
    train = True

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return BatchNormalization(axis=1, input_shape=shape[1:], dtype=dtype)
