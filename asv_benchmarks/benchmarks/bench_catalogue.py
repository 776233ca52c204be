"""Every row of the layer catalogue (:mod:`numlayers.testing.catalogue`): forward and
backward of its layer on the CPU in float32.

The rows are tiny configurations (a few features, a few units), so even with the
batch axis tiled to 256 samples these time what each layer costs per call (checks,
dispatch, small kernels), the cost a small model pays for every layer it holds.
The hand-written modules time the layers at large sizes. A row added to the
catalogue is benchmarked here with no further code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.layers import Layer
from numlayers.testing.catalogue import CATALOGUE, LayerCase, catalogue_case

from . import common

#: samples per timed call: each row's sample repeated along the batch axis (a few,
#: not a multiple of the samples' batch, in tiny runs)
BATCH = common.pick(256, 5)

#: the rows tiny runs (tests) time, one per path through setup: weights and an
#: activation, training mode, integer ids with no input gradient, a float sampler;
#: every row's layer is checked on its own by tests/test_layer_catalogue.py
TINY_CASE_IDS = ["Dense-relu", "Dropout-p0-training", "Embedding-mask-zero", "Masking"]


def batch_of(sample: np.ndarray, layer: Layer, batch: int) -> np.ndarray:
    """``sample`` repeated along its batch axis to ``batch`` samples, when ``layer``
    takes any batch size; otherwise ``sample`` itself."""
    if layer.input_shape[0] is not None:
        return sample
    repeats = -(-batch // len(sample))
    return np.tile(sample, (repeats,) + (1,) * (sample.ndim - 1))[:batch]


class CatalogueBench:
    """Forward and backward of each catalogue row's layer, batch 256, CPU, float32."""

    params = [common.pick([case.id for case in CATALOGUE], TINY_CASE_IDS)]
    param_names = ["case"]
    #: the layer classes of every row, tiny runs or not (``tests/test_registry.py``
    #: reads this)
    layer_classes = tuple(dict.fromkeys(case.layer_class() for case in CATALOGUE))
    timeout = 120

    layer: Layer
    x: Any
    grad: Any
    train: bool

    def setup(self, case: str) -> None:
        state = common.prepared(("catalogue", case), lambda: self._prepare(catalogue_case(case)))
        self.layer = state["layer"]
        self.x = state["x"]
        self.grad = state["grad"]
        self.train = state["train"]

    def _prepare(self, case: LayerCase) -> dict[str, Any]:
        device = common.bench_device("cpu")
        layer = case.make(dtype="float32").to(device)
        layer.needs_input_gradient = case.input_gradient
        sample = case.sample(np.float32)
        x = layer.prepare_input(batch_of(sample, layer, BATCH))
        y = layer.run_forward(x, case.train)
        rng = np.random.default_rng(0)
        grad = device.asarray(rng.standard_normal(tuple(y.shape)), "float32")
        for _ in range(common.WARMUP_CALLS):
            layer.run_forward(x, case.train)
            layer.backward(grad)
        device.synchronize()
        return {"layer": layer, "x": x, "grad": grad, "train": case.train}

    def time_forward(self, case: str) -> None:
        self.layer.run_forward(self.x, self.train)
        self.layer.device.synchronize()

    def time_backward(self, case: str) -> None:
        self.layer.backward(self.grad)
        self.layer.device.synchronize()
