"""Reshaping layers: Flatten, Reshape (views: the layer's own overhead), Permute, RepeatVector."""

from __future__ import annotations

from typing import Any

from numlayers.layers import Flatten, Layer, Permute, RepeatVector, Reshape

from . import common


class FlattenBench(common.LayerBenchmark):
    """Flatten (256, 64, 64) to (256, 4096): a view, so this times the layer's overhead."""

    shape = (256, 64, 64)
    tiny_shape = (4, 2, 3)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Flatten(input_shape=shape[1:], dtype=dtype)


class ReshapeBench(common.LayerBenchmark):
    """Reshape (256, 4096) to (256, 64, 64): a view as well."""

    shape = (256, 4096)
    tiny_shape = (4, 6)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Reshape(common.pick((64, -1), (2, -1)), input_shape=shape[1:], dtype=dtype)


class PermuteBench(common.LayerBenchmark):
    """Permute((2, 1)) of (256, 64, 64): a batched transpose, the inverse one backward."""

    shape = (256, 64, 64)
    tiny_shape = (4, 2, 3)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Permute((2, 1), input_shape=shape[1:], dtype=dtype)


class RepeatVectorBench(common.LayerBenchmark):
    """RepeatVector(16) of (256, 256): 1 M outputs forward, a sum over 16 copies backward."""

    shape = (256, 256)
    tiny_shape = (4, 6)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return RepeatVector(common.pick(16, 3), input_shape=shape[1:], dtype=dtype)
