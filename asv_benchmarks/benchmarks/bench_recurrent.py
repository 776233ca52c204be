"""Recurrent layers: SimpleRNN, GRU and LSTM forward and backward, with and without a mask.

Sequences of 50 steps, batch 32, 64 input features, 128 units, float32, the
last output only (``return_sequences=False``), Keras 0.3's default activations.
The masked case passes a (batch, time) 0/1 mask to ``forward``: each sample
keeps a random prefix of 25 to 50 steps, so about 25 % of the steps (the
trailing ones) are masked. Backward computes the weight gradients and the input
gradient (as a recurrent layer above another layer does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.devices import Device
from numlayers.layers import GRU, LSTM, SimpleRNN
from numlayers.layers.recurrent import Recurrent

from . import common

LAYERS = {"SimpleRNN": SimpleRNN, "GRU": GRU, "LSTM": LSTM}
MASKS = ["no_mask", "mask"]

#: (steps, batch, input features, units), full and tiny
SIZES = ((50, 32, 64, 128), (2, 2, 3, 4))


def recurrent_layer(kind: str, steps: int, features: int, units: int, **options: Any) -> Recurrent:
    """A SimpleRNN, GRU or LSTM of ``units`` for (batch, steps, features) float32 inputs."""
    return LAYERS[kind](units, input_shape=(steps, features), seed=0, dtype="float32", **options)


def trailing_mask(batch: int, steps: int, seed: int = 0) -> np.ndarray:
    """(batch, steps) float32 0/1: each sample keeps its first 50 % to 100 % of the steps."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers((steps + 1) // 2, steps + 1, batch)
    return (np.arange(steps)[None, :] < lengths[:, None]).astype(np.float32)


class RecurrentBench:
    """Forward and backward of each recurrent layer, 50 x 32 x 64 -> 128, float32."""

    params = [list(LAYERS), MASKS, common.DEVICES]
    param_names = ["layer", "mask", "device"]
    timeout = 240

    def setup(self, layer: str, mask: str, device: str) -> None:
        dev = common.bench_device(device)
        key = ("recurrent", layer, mask, device)
        state = common.prepared(key, lambda: self._prepare(layer, mask == "mask", dev))
        self.device = dev
        self.layer = state["layer"]
        self.x = state["x"]
        self.mask = state["mask"]
        self.grad = state["grad"]

    def _prepare(self, kind: str, masked: bool, device: Device) -> dict[str, Any]:
        steps, batch, features, units = common.pick(*SIZES)
        layer = recurrent_layer(kind, steps, features, units)
        layer.to(device)
        rng = np.random.default_rng(0)
        x = device.asarray(rng.uniform(-1.0, 1.0, (batch, steps, features)), np.float32)
        mask = device.asarray(trailing_mask(batch, steps), np.float32) if masked else None
        y = layer.run_forward(x, True, mask=mask)
        grad = device.asarray(rng.standard_normal(tuple(y.shape)), np.float32)
        for _ in range(common.WARMUP_CALLS):
            layer.run_forward(x, True, mask=mask)
            layer.backward(grad)
        device.synchronize()
        return {"layer": layer, "x": x, "mask": mask, "grad": grad}

    def time_forward(self, layer: str, mask: str, device: str) -> None:
        self.layer.run_forward(self.x, True, mask=self.mask)
        self.device.synchronize()

    def time_backward(self, layer: str, mask: str, device: str) -> None:
        self.layer.backward(self.grad)
        self.device.synchronize()
