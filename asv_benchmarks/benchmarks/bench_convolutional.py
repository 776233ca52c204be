"""Convolution2D (3 x 3, 32 -> 32 channels, 32 x 32 images, batch 64, "same", both
orderings), Convolution1D (filter 5, 128 -> 128 features, 100 steps, batch 32) and
Convolution3D (3 x 3 x 3, 16 -> 16 channels, 16 x 16 x 16 volumes, batch 8, "same", both
orderings); their forward + backward against PyTorch CPU is section k of
``compare.py``."""

from __future__ import annotations

from typing import Any

from numlayers.layers import Convolution1D, Convolution2D, Convolution3D, Layer

from . import common


class Convolution2DBench(common.LayerBenchmark):
    """3 x 3 "same", 32 -> 32 channels, 64 images of 32 x 32, in either ordering."""

    params = [["th", "tf"], common.DEVICES, common.DTYPES]
    param_names = ["dim_ordering", "device", "dtype"]
    layer_classes = (Convolution2D,)
    shape = (64, 32, 32, 32)  # square: the same sizes in both orderings
    tiny_shape = (1, 2, 2, 2)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Convolution2D(
            shape[1], 3, 3, border_mode="same", dim_ordering=case["dim_ordering"],
            input_shape=shape[1:], dtype=dtype,
        )  # fmt: skip


class Convolution1DBench(common.LayerBenchmark):
    """Filter 5, 128 -> 128 features, 32 sequences of 100 steps ("valid")."""

    layer_classes = (Convolution1D,)
    shape = (32, 100, 128)
    tiny_shape = (1, 6, 2)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Convolution1D(shape[2], 5, input_shape=shape[1:], dtype=dtype)


class Convolution3DBench(common.LayerBenchmark):
    """3 x 3 x 3 "same", 16 -> 16 channels, 8 volumes of 16 x 16 x 16, in either ordering:
    on the CPU the volumes whole (the stride-1 path; channels last through a permute
    each way), on CUDA the depth gather and the 2-D kernels."""

    params = [["th", "tf"], common.DEVICES, common.DTYPES]
    param_names = ["dim_ordering", "device", "dtype"]
    layer_classes = (Convolution3D,)
    shape = (8, 16, 16, 16, 16)  # cubic: the same sizes in both orderings
    tiny_shape = (1, 2, 2, 2, 2)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Convolution3D(
            shape[1], 3, 3, 3, border_mode="same", dim_ordering=case["dim_ordering"],
            input_shape=shape[1:], dtype=dtype,
        )  # fmt: skip
