"""Traced Lambdas: the fused elementwise Lambda ``tanh(x) * 2 + x * x`` and a Lambda with a
reduction on 256 x 4096, LambdaMerge and the Keras 0.3 seed Graph's training step
(two Embeddings, their product, a summing Lambda with no backward written, Dense), and
the cold start of a new Lambda signature (trace, compile, first forward and backward)."""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.devices import Device
from numlayers.layers import Dense, Embedding, Lambda, LambdaMerge, Layer
from numlayers.models import Graph, Sequential

from . import common
from .bench_cold_start import ColdStartSettings, cold_start_code


def tanh_expression(x: Any) -> Any:
    return np.tanh(x) * 2.0 + x * x


def centred_square(x: Any) -> Any:
    return (x - x.mean(axis=-1, keepdims=True)) ** 2


LAMBDAS = {"elementwise": tanh_expression, "reduction": centred_square}


class LambdaBench(common.LayerBenchmark):
    """A traced Lambda, forward and backward, 256 x 4096: one fused kernel each way
    (``elementwise``), or with a mean over the features between two (``reduction``)."""

    params = [list(LAMBDAS), common.DEVICES, common.DTYPES]
    param_names = ["function", "device", "dtype"]
    layer_classes = (Lambda,)
    shape = (256, 4096)
    tiny_shape = (4, 6)
    train = True

    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        return Lambda(LAMBDAS[case["function"]], input_shape=shape[1:], dtype=dtype)


def product_minus(inputs: list[Any]) -> Any:
    return inputs[0] * inputs[1] - inputs[1]


def lambda_merge_model(features: int, units: int) -> Sequential:
    left, right = Sequential(), Sequential()
    left.add(Dense(units, input_shape=(features,)))
    right.add(Dense(units, input_shape=(features,)))
    model = Sequential()
    model.add(LambdaMerge([left, right], product_minus))
    model.add(Dense(1))
    model.compile("sgd", "mse")
    return model


class LambdaMergeBench:
    """One training step of two Dense(256) branches merged by ``a * b - b`` (LambdaMerge),
    batch 256 of 512 features."""

    params = [common.DEVICES]
    param_names = ["device"]
    layer_classes = (LambdaMerge,)
    timeout = 180

    def setup(self, device: str) -> None:
        bench_device = common.bench_device(device)
        features, units, batch = common.pick((512, 256, 256), (3, 2, 4))
        state = common.prepared(
            ("LambdaMergeBench", device),
            lambda: self._prepare(bench_device, features, units, batch),
        )
        self.model, self.inputs, self.target = state["model"], state["inputs"], state["target"]

    def _prepare(self, device: Device, features: int, units: int, batch: int) -> dict[str, Any]:
        model = lambda_merge_model(features, units).to(device)
        rng = np.random.default_rng(0)
        inputs = [rng.standard_normal((batch, features)).astype("float32") for _ in range(2)]
        target = rng.standard_normal((batch, 1)).astype("float32")
        for _ in range(common.WARMUP_CALLS):
            model.train_on_batch(inputs, target)
        return {"model": model, "inputs": inputs, "target": target}

    def time_train_on_batch(self, device: str) -> None:
        self.model.train_on_batch(self.inputs, self.target)


def sum_features(x: Any) -> Any:
    return x.sum(2)


def seed_graph(vocabulary: int, dim: int, length: int, device: Any = "cpu") -> Graph:
    """The Keras 0.3 seed Graph, as written: no backward for its Lambda."""
    graph = Graph(device=device)
    graph.add_input(name="words", input_shape=(length,), dtype="int")
    graph.add_input(name="points", input_shape=(length,), dtype="int")
    graph.add_node(Embedding(vocabulary, dim, input_length=length), name="embedding", input="words")
    graph.add_node(
        Embedding(vocabulary, dim, input_length=length), name="embedpoint", input="points"
    )
    graph.add_node(
        Lambda(sum_features), name="merge", inputs=["embedding", "embedpoint"], merge_mode="mul"
    )
    graph.add_node(Dense(1, activation="sigmoid"), name="output", input="merge", create_output=True)
    graph.compile(optimizer="adam", loss={"output": "binary_crossentropy"})
    return graph


def seed_data(vocabulary: int, length: int, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "words": rng.integers(0, vocabulary, (batch, length)),
        "points": rng.integers(0, vocabulary, (batch, length)),
        "output": (rng.random((batch, 1)) < 0.5).astype("float32"),
    }


class SeedGraphBench:
    """One training step (Adam) of the seed Graph: vocabulary 5000, dimension 32, length
    10, batch 32."""

    params = [common.DEVICES]
    param_names = ["device"]
    layer_classes = (Lambda, Embedding, Dense)
    timeout = 180

    def setup(self, device: str) -> None:
        bench_device = common.bench_device(device)
        state = common.prepared(("SeedGraphBench", device), lambda: self._prepare(bench_device))
        self.graph, self.data = state["graph"], state["data"]

    def _prepare(self, device: Device) -> dict[str, Any]:
        vocabulary, dim, length, batch = common.pick((5000, 32, 10, 32), (20, 4, 10, 4))
        graph = seed_graph(vocabulary, dim, length, device)
        data = seed_data(vocabulary, length, batch)
        for _ in range(common.WARMUP_CALLS):
            graph.train_on_batch(data)
        return {"graph": graph, "data": data}

    def time_train_on_batch(self, device: str) -> None:
        self.graph.train_on_batch(self.data)


#: a new Lambda signature traced, compiled, run forward and backward (in a fresh
#: interpreter, so that nothing of it is in memory)
NEW_LAMBDA_CODE = """
import numpy as np
from numlayers.layers import Lambda
layer = Lambda(lambda x: np.tanh(x) * 2.0 + x * x, input_shape=(64,))
x = np.ones((8, 64), dtype="float32")
layer.run_forward(x, train=True)
layer.backward(x)
"""


class TraceColdStart(ColdStartSettings):
    """Seconds from a new interpreter to a new traced Lambda's first forward and backward
    (targets: under 3 s with no cache, 0.3 s of it with the disk cache warm)."""

    def setup(self, numba_cache: str) -> None:
        if numba_cache == "disk_cache" and not common.TINY:
            import subprocess
            import sys

            subprocess.run([sys.executable, "-c", NEW_LAMBDA_CODE], check=True)

    def timeraw_new_lambda(self, numba_cache: str) -> str:
        return cold_start_code(numba_cache, NEW_LAMBDA_CODE)
