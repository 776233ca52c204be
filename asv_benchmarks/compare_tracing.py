"""Section l of ``compare.py``: traced Lambdas against NumPy and PyTorch CPU.

- ``Lambda(lambda x: np.tanh(x) * 2.0 + x * x)`` forward on 256 x 4096 float32 against
  the NumPy expression: target <= 0.5.
- The same Lambda forward plus backward against PyTorch CPU eager autograd on the same
  expression (``backward`` of a given output gradient): target <= 0.5.
- One training step of the Keras 0.3 seed Graph (two Embedding(5000, 32) of 10 ids,
  their product, a Lambda summing the features with no backward written, Dense(1,
  sigmoid), binary crossentropy, Adam) at batch 32 against the same model in PyTorch
  (two ``nn.Embedding``, product, sum, ``nn.Linear``, sigmoid, ``BCELoss``, Adam, and
  ``loss.item()``): target <= 1.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from benchmarks.bench_tracing import seed_data, seed_graph, tanh_expression
from harness import Row, Settings, measure, rng_array

import numlayers
from numlayers.layers import Lambda

LAMBDA_FORWARD_TARGET = 0.5
LAMBDA_TORCH_TARGET = 0.5
SEED_STEP_TARGET = 1.0
#: (vocabulary, dim, length, batch) of the seed Graph
SEED_SIZES = (5000, 32, 10, 32)


def tracing_vs_numpy_and_torch(torch: Any | None, config: Settings) -> list[Row]:
    """Every row of the section (the PyTorch rows only when ``torch`` is given)."""
    rows = [lambda_forward_vs_numpy(config)]
    if torch is not None:
        rows += [lambda_vs_torch(torch, config), seed_step_vs_torch(torch, config)]
    return rows


def lambda_forward_vs_numpy(config: Settings) -> Row:
    x = rng_array((config.batch, config.width), 0)
    layer = Lambda(tanh_expression, input_shape=(config.width,))
    y = layer.run_forward(x, False)
    error = float(np.abs(y - tanh_expression(x)).max())
    t = measure(
        {"ours": lambda: layer.run_forward(x, False), "numpy": lambda: tanh_expression(x)}, config
    )
    return Row(
        "l",
        f"Lambda tanh(x)*2+x*x fwd {config.batch}x{config.width} vs NumPy",
        t["ours"],
        t["numpy"],
        LAMBDA_FORWARD_TARGET,
        f"max abs difference {error:.1e}",
    )


def lambda_vs_torch(torch: Any, config: Settings) -> Row:
    x = rng_array((config.batch, config.width), 0)
    g = rng_array((config.batch, config.width), 1)
    layer = Lambda(tanh_expression, input_shape=(config.width,))
    tx = torch.from_numpy(x).requires_grad_(True)
    tg = torch.from_numpy(g)

    def ours() -> Any:
        layer.run_forward(x, True)
        return layer.backward(g)

    def theirs() -> Any:
        tx.grad = None
        (torch.tanh(tx) * 2.0 + tx * tx).backward(tg)
        return tx.grad

    error = float(np.abs(ours() - theirs().numpy()).max())
    t = measure({"ours": ours, "torch": theirs}, config)
    return Row(
        "l",
        f"Lambda tanh(x)*2+x*x fwd+bwd {config.batch}x{config.width} vs torch autograd",
        t["ours"],
        t["torch"],
        LAMBDA_TORCH_TARGET,
        f"max abs gradient difference {error:.1e}",
    )


def torch_seed_model(torch: Any, graph: Any) -> tuple[Any, Any]:
    """The seed Graph in PyTorch with the same weights: (modules, forward function)."""
    nn = torch.nn
    (words,), (points,), (weight, bias) = (
        graph.nodes[name].get_weights() for name in ("embedding", "embedpoint", "output")
    )
    embedding, embedpoint = nn.Embedding(*words.shape), nn.Embedding(*points.shape)
    linear = nn.Linear(weight.shape[0], 1)
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(words))
        embedpoint.weight.copy_(torch.from_numpy(points))
        linear.weight.copy_(torch.from_numpy(weight.T.copy()))
        linear.bias.copy_(torch.from_numpy(bias))
    modules = nn.ModuleList([embedding, embedpoint, linear])

    def forward(tw: Any, tp: Any) -> Any:
        return torch.sigmoid(linear((embedding(tw) * embedpoint(tp)).sum(2)))

    return modules, forward


def seed_step_vs_torch(torch: Any, config: Settings) -> Row:
    vocabulary, dim, length, batch = SEED_SIZES if config.width > 100 else (20, 4, 10, 4)
    numlayers.set_seed(0)
    graph = seed_graph(vocabulary, dim, length)
    data = seed_data(vocabulary, length, batch)
    modules, forward = torch_seed_model(torch, graph)
    optimizer = torch.optim.Adam(modules.parameters(), lr=0.001)
    loss_function = torch.nn.BCELoss()
    tw, tp = torch.from_numpy(data["words"]), torch.from_numpy(data["points"])
    ty = torch.from_numpy(data["output"])

    def ours() -> float:
        return float(graph.train_on_batch(data))

    def theirs() -> float:
        optimizer.zero_grad()
        loss = loss_function(forward(tw, tp), ty)
        loss.backward()
        optimizer.step()
        return loss.item()

    first_ours, first_theirs = ours(), theirs()
    note = f"first losses {first_ours:.5f} / {first_theirs:.5f}"
    if not np.isclose(first_ours, first_theirs, rtol=1e-4, atol=1e-5):
        note += " DIFFER"
    t = measure({"ours": ours, "torch": theirs}, config)
    return Row(
        "l",
        f"seed Graph {vocabulary}x{dim} len {length} batch {batch} train step vs torch",
        t["ours"],
        t["torch"],
        SEED_STEP_TARGET,
        note,
    )
