"""Embedding: vocabulary 50,000, vectors of 128, batch 64 x 64 token ids.

Forward is the id range check (a reduction, two numbers to the host) and a row
gather; backward writes the dense gradient of the whole 50,000 x 128 matrix (a
clear, then a scatter-add of the 4,096 tokens' rows). The input gradient of
integer ids does not exist, so backward computes only the weight gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.devices import Device
from numlayers.layers import Embedding

from . import common

#: (vocabulary, dim, batch, length), full and tiny
SIZES = ((50_000, 128, 64, 64), (11, 3, 2, 5))


def token_ids(vocabulary: int, batch: int, length: int, seed: int = 0) -> np.ndarray:
    """Uniformly drawn int64 token ids, (batch, length)."""
    return np.random.default_rng(seed).integers(0, vocabulary, (batch, length), dtype=np.int64)


class EmbeddingBench:
    """Forward and backward of Embedding(50000, 128) on 64 x 64 ids."""

    params = [common.DEVICES, common.DTYPES]
    param_names = ["device", "dtype"]
    timeout = 180

    def setup(self, device: str, dtype: str) -> None:
        dev = common.bench_device(device)
        state = common.prepared(("embedding", device, dtype), lambda: self._prepare(dev, dtype))
        self.device = dev
        self.layer = state["layer"]
        self.ids = state["ids"]
        self.grad = state["grad"]

    def _prepare(self, device: Device, dtype: str) -> dict[str, Any]:
        vocabulary, dim, batch, length = common.pick(*SIZES)
        layer = Embedding(vocabulary, dim, input_length=length, seed=0, dtype=dtype)
        layer.to(device)
        layer.needs_input_gradient = False
        ids = device.asarray(token_ids(vocabulary, batch, length))
        y = layer.run_forward(ids, True)
        rng = np.random.default_rng(1)
        grad = device.asarray(rng.standard_normal(tuple(y.shape)), dtype)
        for _ in range(common.WARMUP_CALLS):
            layer.run_forward(ids, True)
            layer.backward(grad)
        device.synchronize()
        return {"layer": layer, "ids": ids, "grad": grad}

    def time_forward(self, device: str, dtype: str) -> None:
        self.layer.run_forward(self.ids, True)
        self.device.synchronize()

    def time_backward(self, device: str, dtype: str) -> None:
        self.layer.backward(self.grad)
        self.device.synchronize()
