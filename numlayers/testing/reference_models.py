"""Models the benchmarks and the GPU check measure alike, built in one place.

:func:`siamese_graph` is Keras 0.3's Siamese graph (its ``mnist_siamese_graph``
example): a base network of three ``Dense(width, relu)`` with dropout 0.1, shared over
two inputs, joined into a Lambda Euclidean distance and trained with a contrastive loss
written as a function, with RMSprop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers import backend as K
from numlayers.graph import Graph
from numlayers.layers import Dense, Dropout, Lambda
from numlayers.models import Sequential
from numlayers.optimizers import RMSprop


def euclidean_distance(inputs: dict[str, Any]) -> Any:
    """The distance between the two arrays of a join, one value a sample."""
    u, v = inputs.values()
    return K.sqrt(K.sum(K.square(u - v), axis=1, keepdims=True))


def contrastive_loss(y: Any, d: Any) -> Any:
    """Hadsell, Chopra and LeCun (2006): ``d**2`` for a matching pair, ``max(1 - d, 0)**2``
    for another."""
    return K.mean(y * K.square(d) + (1 - y) * K.square(K.maximum(1.0 - d, 0)))


def siamese_graph(inputs: int, width: int, device: Any = "cpu", cuda_graphs: bool = True) -> Graph:
    """Keras 0.3's Siamese graph (module doc), compiled.

    Example:
        >>> siamese_graph(6, 5).output_shape
        (None, 1)
    """
    base = Sequential(device=device)
    base.add(Dense(width, input_shape=(inputs,), activation="relu", seed=0))
    base.add(Dropout(0.1, seed=1))
    base.add(Dense(width, activation="relu", seed=2))
    base.add(Dropout(0.1, seed=3))
    base.add(Dense(width, activation="relu", seed=4))
    graph = Graph(device=device)
    graph.add_input(name="input_a", input_shape=(inputs,))
    graph.add_input(name="input_b", input_shape=(inputs,))
    graph.add_shared_node(base, name="shared", inputs=["input_a", "input_b"], merge_mode="join")
    graph.add_node(Lambda(euclidean_distance), name="d", input="shared")
    graph.add_output(name="output", input="d")
    graph.compile(loss={"output": contrastive_loss}, optimizer=RMSprop(), cuda_graphs=cuda_graphs)
    return graph


def siamese_data(inputs: int, batch: int) -> dict[str, np.ndarray]:
    """A batch of ``batch`` pairs (half matching) for :func:`siamese_graph`."""
    rng = np.random.default_rng(0)
    return {
        "input_a": rng.random((batch, inputs), dtype=np.float32),
        "input_b": rng.random((batch, inputs), dtype=np.float32),
        "output": (np.arange(batch) % 2).astype(np.float32),
    }


def torch_siamese(torch: Any, graph: Graph) -> tuple[Any, Any]:
    """The same model in PyTorch with ``graph``'s weights: ``(parameters, step)``, where
    ``step(a, b, y)`` is one RMSprop training step on tensors, returning the loss."""
    nn = torch.nn
    weights = graph.get_weights()
    layers: list[Any] = []
    for position in range(0, len(weights), 2):
        W, b = weights[position], weights[position + 1]
        linear = nn.Linear(*W.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear, nn.ReLU()]
        if position + 2 < len(weights):
            layers.append(nn.Dropout(0.1))
    base = nn.Sequential(*layers)
    if graph.device.name == "cuda":
        base = base.cuda()
    optimizer = torch.optim.RMSprop(base.parameters(), lr=0.001, alpha=0.9, eps=1e-6)

    def step(a: Any, b: Any, y: Any) -> float:
        optimizer.zero_grad()
        d = torch.sqrt(torch.clamp(((base(a) - base(b)) ** 2).sum(1, keepdim=True), min=0))
        loss = (y * d**2 + (1 - y) * torch.clamp(1.0 - d, min=0) ** 2).mean()
        loss.backward()
        optimizer.step()
        return float(loss.item())

    return list(base.parameters()), step
