"""Graph models: a small two-input training step, and Graph against Sequential per node.

- ``GraphTrainStep``: inputs ``a`` (32 features) and ``b`` (16), a Dense(64, relu)
  on each, a concat merge into Dense(32, relu), then Dense(10, softmax) with
  categorical crossentropy and SGD; one ``train_on_batch`` of 32 samples.
- ``SiameseTrainStep``: Keras 0.3's Siamese graph (mnist_siamese_graph): a base
  network 784 -> 128 -> 128 -> 128 (relu, dropout 0.1) shared over two inputs, joined
  into a Lambda Euclidean distance, trained with a contrastive loss function and
  RMSprop; one ``train_on_batch`` of 128 pairs.
- ``ChainOverhead``: the same chain of 8 Dense(32) layers (tanh, the last softmax),
  batch 32, built as a Sequential and as a Graph of one node per layer, timed for
  ``predict_on_batch`` and ``train_on_batch``. The layers are small, so the
  difference between the two containers is their per-node bookkeeping.

float32 only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.devices import Device
from numlayers.layers import Dense
from numlayers.models import Graph, Sequential
from numlayers.optimizers import SGD
from numlayers.testing.reference_models import siamese_data, siamese_graph

from . import common

CONTAINERS = ["sequential", "graph"]

#: (layers, units, batch) of the chain, full and tiny
CHAIN = ((8, 32, 32), (3, 4, 4))


def two_input_graph(
    features: tuple[int, int], hidden: int, joint: int, classes: int, device: Any = "cpu"
) -> Graph:
    """Two inputs, a Dense each, merged (concat) into a Dense, a softmax output."""
    graph = Graph(device=device, dtype="float32")
    graph.add_input("a", input_shape=(features[0],))
    graph.add_input("b", input_shape=(features[1],))
    graph.add_node(Dense(hidden, activation="relu", seed=0), name="ha", input="a")
    graph.add_node(Dense(hidden, activation="relu", seed=1), name="hb", input="b")
    graph.add_node(
        Dense(joint, activation="relu", seed=2),
        name="joint",
        inputs=["ha", "hb"],
        merge_mode="concat",
    )
    graph.add_node(Dense(classes, activation="softmax", seed=3), name="out", input="joint")
    graph.add_output("output", input="out")
    graph.compile(SGD(lr=0.01), {"output": "categorical_crossentropy"})
    return graph


def chain_layers(layers: int, units: int) -> list[Dense]:
    """``layers`` Dense(units) layers, tanh then softmax last, seeded alike every call."""
    return [
        Dense(
            units,
            activation="softmax" if index == layers - 1 else "tanh",
            seed=index,
            **({"input_shape": (units,)} if index == 0 else {}),
        )
        for index in range(layers)
    ]


def chain_model(container: str, layers: int, units: int, device: Any = "cpu") -> Any:
    """The chain as a ``"sequential"`` or a ``"graph"`` (nodes ``d0``..., input x, output y)."""
    if container == "sequential":
        model: Any = Sequential(chain_layers(layers, units), device=device, dtype="float32")
        model.compile(SGD(lr=0.01), "categorical_crossentropy")
        return model
    graph = Graph(device=device, dtype="float32")
    graph.add_input("x", input_shape=(units,))
    previous = "x"
    for index, layer in enumerate(chain_layers(layers, units)):
        graph.add_node(layer, name=f"d{index}", input=previous)
        previous = f"d{index}"
    graph.add_output("y", input=previous)
    graph.compile(SGD(lr=0.01), {"y": "categorical_crossentropy"})
    return graph


def chain_data(container: str, batch: int, units: int) -> tuple[Any, Any]:
    """(what predict_on_batch takes, what train_on_batch takes) for the container."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, units)).astype(np.float32)
    y = np.eye(units, dtype=np.float32)[rng.integers(0, units, batch)]
    if container == "sequential":
        return x, (x, y)
    return {"x": x}, ({"x": x, "y": y},)


class GraphTrainStep:
    """One SGD ``train_on_batch`` of the two-input Graph, batch 32."""

    params = [common.DEVICES]
    param_names = ["device"]
    timeout = 180
    #: the key its prepared graph and data are kept under
    state_key = "graph_train"

    def setup(self, device: str) -> None:
        dev = common.bench_device(device)
        state = common.prepared((self.state_key, device), lambda: self._prepare(dev))
        self.device = dev
        self.graph = state["graph"]
        self.data = state["data"]

    def _graph_and_data(self, device: Device) -> tuple[Graph, dict[str, np.ndarray]]:
        features = common.pick((32, 16), (5, 3))
        hidden, joint, classes, batch = common.pick((64, 32, 10, 32), (4, 4, 3, 4))
        graph = two_input_graph(features, hidden, joint, classes, device)
        rng = np.random.default_rng(0)
        data = {
            "a": rng.standard_normal((batch, features[0])).astype(np.float32),
            "b": rng.standard_normal((batch, features[1])).astype(np.float32),
            "output": np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)],
        }
        return graph, data

    def _prepare(self, device: Device) -> dict[str, Any]:
        graph, data = self._graph_and_data(device)
        for _ in range(common.WARMUP_CALLS):
            graph.train_on_batch(data)
        device.synchronize()
        return {"graph": graph, "data": data}

    def time_train_on_batch(self, device: str) -> None:
        self.graph.train_on_batch(self.data)
        self.device.synchronize()


class SiameseTrainStep(GraphTrainStep):
    """One RMSprop ``train_on_batch`` of the Siamese graph, 128 pairs of 784 features."""

    state_key = "siamese_train"

    def _graph_and_data(self, device: Device) -> tuple[Graph, dict[str, np.ndarray]]:
        inputs, width, batch = common.pick((784, 128, 128), (6, 5, 4))
        return siamese_graph(inputs, width, device), siamese_data(inputs, batch)


class ChainOverhead:
    """8 Dense(32) layers at batch 32 as a Sequential or a Graph: same work, two containers."""

    params = [CONTAINERS, common.DEVICES]
    param_names = ["container", "device"]
    timeout = 180

    def setup(self, container: str, device: str) -> None:
        dev = common.bench_device(device)
        key = ("chain", container, device)
        state = common.prepared(key, lambda: self._prepare(container, dev))
        self.device = dev
        self.model = state["model"]
        self.inputs = state["inputs"]
        self.train_args = state["train_args"]

    def _prepare(self, container: str, device: Device) -> dict[str, Any]:
        layers, units, batch = common.pick(*CHAIN)
        model = chain_model(container, layers, units, device)
        inputs, train_args = chain_data(container, batch, units)
        for _ in range(common.WARMUP_CALLS):
            model.predict_on_batch(inputs)
            model.train_on_batch(*train_args)
        device.synchronize()
        return {"model": model, "inputs": inputs, "train_args": train_args}

    def time_predict_on_batch(self, container: str, device: str) -> None:
        self.model.predict_on_batch(self.inputs)
        self.device.synchronize()

    def time_train_on_batch(self, container: str, device: str) -> None:
        self.model.train_on_batch(*self.train_args)
        self.device.synchronize()
