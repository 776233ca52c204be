"""Pooling, upsampling and zero padding: the 2-D layers with their defaults on a
64 x 32 x 32 x 32 channels-first image batch (MaxPooling2D's is the batch compared with
PyTorch's ``nn.MaxPool2d(2)``), the 1-D layers on 256 sequences of 128 steps x 64
features, the 3-D layers on 8 channels-first volumes of 16 channels x 16 x 32 x 32
(MaxPooling3D's is compared with ``nn.MaxPool3d(2)`` in section k of ``compare.py``)."""

from __future__ import annotations

from typing import Any

from numlayers.layers import (
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    Layer,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)

from . import common

IMAGE_LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls for cls in (MaxPooling2D, AveragePooling2D, UpSampling2D, ZeroPadding2D)
}
VOLUME_LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls for cls in (MaxPooling3D, AveragePooling3D, UpSampling3D, ZeroPadding3D)
}
SEQUENCE_LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls for cls in (MaxPooling1D, AveragePooling1D, UpSampling1D, ZeroPadding1D)
}


class ImagePoolingBench(common.LayerBenchmark):
    """Each 2-D layer with Keras 0.3's defaults (2 x 2 windows, 2 x 2 repeats, one zero
    on each side), channels first, forward and backward."""

    params = [list(IMAGE_LAYERS), common.DEVICES, common.DTYPES]
    param_names = ["layer", "device", "dtype"]
    layer_classes = tuple(IMAGE_LAYERS.values())
    shape = (64, 32, 32, 32)
    tiny_shape = (2, 3, 4, 4)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return IMAGE_LAYERS[case["layer"]](input_shape=shape[1:], dtype=dtype)


class SequencePoolingBench(common.LayerBenchmark):
    """Each 1-D layer with Keras 0.3's defaults, forward and backward."""

    params = [list(SEQUENCE_LAYERS), common.DEVICES, common.DTYPES]
    param_names = ["layer", "device", "dtype"]
    layer_classes = tuple(SEQUENCE_LAYERS.values())
    shape = (256, 128, 64)
    tiny_shape = (2, 5, 3)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return SEQUENCE_LAYERS[case["layer"]](input_shape=shape[1:], dtype=dtype)


class VolumePoolingBench(common.LayerBenchmark):
    """Each 3-D layer with Keras 0.3's defaults (2 x 2 x 2 windows and repeats, one zero
    on each side), channels first, forward and backward: two kernel calls a pass."""

    params = [list(VOLUME_LAYERS), common.DEVICES, common.DTYPES]
    param_names = ["layer", "device", "dtype"]
    layer_classes = tuple(VOLUME_LAYERS.values())
    shape = (8, 16, 16, 32, 32)
    tiny_shape = (1, 2, 2, 2, 2)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return VOLUME_LAYERS[case["layer"]](input_shape=shape[1:], dtype=dtype)
