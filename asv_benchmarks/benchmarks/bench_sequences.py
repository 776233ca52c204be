"""Sequence layers without a family of their own: TimeDistributedDense, Masking,
ActivityRegularization, and the Bidirectional and TimeDistributed wrappers."""

from __future__ import annotations

from typing import Any

from numlayers.layers import (
    LSTM,
    ActivityRegularization,
    Bidirectional,
    Dense,
    Layer,
    Masking,
    TimeDistributed,
    TimeDistributedDense,
)

from . import common


class TimeDistributedDenseBench(common.LayerBenchmark):
    """Dense on every step of (batch 32, time 50, 256 features) to 256 units."""

    shape = (32, 50, 256)
    tiny_shape = (2, 3, 4)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        units = common.pick(256, 3)
        return TimeDistributedDense(units, input_shape=shape[1:], seed=0, dtype=dtype)


class TimeDistributedBench(common.LayerBenchmark):
    """The same Dense through the generic TimeDistributed wrapper."""

    shape = (32, 50, 256)
    tiny_shape = (2, 3, 4)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        inner = Dense(common.pick(256, 3), seed=0)
        return TimeDistributed(inner, input_shape=shape[1:], dtype=dtype)


class MaskingBench(common.LayerBenchmark):
    """Masking of (batch 64, time 100, 128 features); random inputs mask nothing."""

    shape = (64, 100, 128)
    tiny_shape = (2, 3, 4)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Masking(0.0, input_shape=shape[1:], dtype=dtype)


class ActivityRegularizationBench(common.LayerBenchmark):
    """Identity plus an L1/L2 activity gradient on 256 x 4096."""

    shape = (256, 4096)
    tiny_shape = (4, 6)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return ActivityRegularization(0.01, 0.01, input_shape=shape[1:], dtype=dtype)


class BidirectionalBench(common.LayerBenchmark):
    """Bidirectional LSTM, sequence 50, batch 32, input 64, 128 units each way."""

    shape = (32, 50, 64)
    tiny_shape = (2, 2, 3)
    low = -1.0
    high = 1.0

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        inner = LSTM(common.pick(128, 2), seed=0)
        return Bidirectional(inner, input_shape=shape[1:], dtype=dtype)
