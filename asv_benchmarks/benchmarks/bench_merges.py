"""Merge modes: a MergeNode (what a Graph node with ``inputs=[...]`` gets) of two inputs.

Each mode (sum, mul, ave, concat, dot, cos) merges two (256, 1024) arrays, fed by
two Graph input layers; forward and backward are timed apart, as for layers.
``concat`` joins the feature axis (256 x 2048 out); ``dot`` and ``cos`` contract
it (256 x 1 out), so their backward writes two 256 x 1024 gradients from 256
numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.devices import Device
from numlayers.graph import InputLayer
from numlayers.layers.merging import MERGE_MODES, MergeNode

from . import common


class MergeBench:
    """Forward and backward of each merge mode on two 256 x 1024 inputs."""

    params = [list(MERGE_MODES), common.DEVICES, common.DTYPES]
    param_names = ["mode", "device", "dtype"]
    layer_classes = (MergeNode,)
    shape = (256, 1024)
    tiny_shape = (4, 6)
    timeout = 180

    def setup(self, mode: str, device: str, dtype: str) -> None:
        dev = common.bench_device(device)
        key = ("merge", mode, device, dtype)
        state = common.prepared(key, lambda: self._prepare(mode, dev, dtype))
        self.device = dev
        self.node = state["node"]
        self.inputs = state["inputs"]
        self.grad = state["grad"]

    def _prepare(self, mode: str, device: Device, dtype: str) -> dict[str, Any]:
        shape = common.pick(self.shape, self.tiny_shape)
        sources = [
            InputLayer(input_shape=shape[1:], name=f"merge_input_{i}", dtype=dtype, device=device)
            for i in range(2)
        ]
        node = MergeNode(sources, mode, name=f"merge_{mode}")
        rng = np.random.default_rng(0)
        # away from zero, so cos has no near-zero norms
        inputs = [device.asarray(rng.uniform(0.5, 1.5, shape), dtype) for _ in sources]
        y = node.run_forward(inputs, False)
        grad = device.asarray(rng.standard_normal(tuple(y.shape)), dtype)
        for _ in range(common.WARMUP_CALLS):
            node.run_forward(inputs, False)
            node.backward(grad)
        device.synchronize()
        return {"node": node, "inputs": inputs, "grad": grad}

    def time_forward(self, mode: str, device: str, dtype: str) -> None:
        self.node.run_forward(self.inputs, False)
        self.device.synchronize()

    def time_backward(self, mode: str, device: str, dtype: str) -> None:
        self.node.backward(self.grad)
        self.device.synchronize()
