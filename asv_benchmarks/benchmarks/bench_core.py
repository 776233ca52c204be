"""Core layers: Dense (without and with an activation), Activation (each activation),
Dropout in training, Lambda."""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.activations import ACTIVATIONS
from numlayers.layers import Activation, Dense, Dropout, Lambda, Layer

from . import common


class DenseBench(common.LayerBenchmark):
    """Dense 1024 -> 1024 without activation, batch 256: a GEMM forward, two backward."""

    shape = (256, 1024)
    tiny_shape = (4, 6)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Dense(common.pick(1024, 5), input_shape=shape[1:], seed=0, dtype=dtype)


class DenseActivationBench(common.LayerBenchmark):
    """Dense 1024 -> 1024 with relu or softmax, batch 256: the products in blocks on
    every core, then the activation's own operation."""

    params = [["relu", "softmax"], common.DEVICES, common.DTYPES]
    param_names = ["activation", "device", "dtype"]
    shape = (256, 1024)
    tiny_shape = (4, 6)
    units = 1024

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        units = common.pick(self.units, 5)
        activation = case["activation"]
        return Dense(units, input_shape=shape[1:], activation=activation, seed=0, dtype=dtype)


class SmallDenseActivationBench(DenseActivationBench):
    """Dense 128 -> 128 with relu or softmax, batch 32: on the CPU one compiled call per
    pass (product, bias and activation together)."""

    shape = (32, 128)
    units = 128


class ActivationBench(common.LayerBenchmark):
    """Each activation on 256 x 4096 (softmax over rows of 4096)."""

    params = [list(ACTIVATIONS), common.DEVICES, common.DTYPES]
    param_names = ["activation", "device", "dtype"]
    shape = (256, 4096)
    tiny_shape = (4, 6)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Activation(case["activation"], input_shape=shape[1:], dtype=dtype)


class DropoutBench(common.LayerBenchmark):
    """Dropout p = 0.5 in training (a fresh mask every forward) on 256 x 4096."""

    shape = (256, 4096)
    tiny_shape = (4, 6)
    train = True

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Dropout(0.5, seed=0, input_shape=shape[1:], dtype=dtype)


def _square(x: np.ndarray) -> np.ndarray:
    return x * x


def _square_backward(x: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return 2 * x * grad


class LambdaBench(common.LayerBenchmark):
    """Lambda(x * x) on 256 x 4096: NumPy plus the layer's checks (and copies on CUDA)."""

    shape = (256, 4096)
    tiny_shape = (4, 6)

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Lambda(_square, backward=_square_backward, input_shape=shape[1:], dtype=dtype)
