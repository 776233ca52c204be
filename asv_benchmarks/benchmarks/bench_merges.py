"""Merge modes: a MergeNode (what a Graph node with ``inputs=[...]`` gets) of two inputs;
and a Siamese (one layer shared by two branches) in a training step.

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
from numlayers.layers import Dense, Siamese
from numlayers.layers.merging import MERGE_MODES, MergeNode
from numlayers.models import Sequential
from numlayers.optimizers import SGD

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


class SiameseBench:
    """One shared Dense(256, relu) applied to two Dense branches (256 x 512 inputs) and
    summed: ``predict_on_batch`` (forward) and ``train_on_batch`` (forward, backward with
    the shared weights' gradients summed, SGD update) of the Sequential it starts."""

    params = [common.DEVICES]
    param_names = ["device"]
    layer_classes = (Siamese,)
    timeout = 180

    def setup(self, device: str) -> None:
        dev = common.bench_device(device)
        state = common.prepared(("siamese", device), lambda: self._prepare(dev))
        self.device = dev
        self.model = state["model"]
        self.inputs = state["inputs"]
        self.target = state["target"]

    def _prepare(self, device: Device) -> dict[str, Any]:
        batch, features, units = common.pick((256, 512, 256), (4, 3, 2))
        branches = [
            Sequential([Dense(units, input_shape=(features,), seed=i)], device=device)
            for i in range(2)
        ]
        model = Sequential(device=device)
        model.add(Siamese(Dense(units, activation="relu", seed=2), branches, merge_mode="sum"))
        model.compile(SGD(lr=0.01), "mse")
        rng = np.random.default_rng(0)
        inputs = [rng.standard_normal((batch, features)).astype(np.float32) for _ in branches]
        target = rng.standard_normal((batch, units)).astype(np.float32)
        for _ in range(common.WARMUP_CALLS):
            model.train_on_batch(inputs, target)
        device.synchronize()
        return {"model": model, "inputs": inputs, "target": target}

    def time_predict_on_batch(self, device: str) -> None:
        self.model.predict_on_batch(self.inputs)
        self.device.synchronize()

    def time_train_on_batch(self, device: str) -> None:
        self.model.train_on_batch(self.inputs, self.target)
        self.device.synchronize()
