"""Section m of ``compare.py``: feeding data and custom objectives.

- One epoch of ``fit_generator`` (batches from a Python generator, one worker thread)
  against one epoch of ``fit`` on the same batches, in the same order, of the digits
  MLP (64 -> 256 -> 128 -> 10 with dropout, Adam, 1,437 samples of batch 32): the
  ratio is the cost of checking each batch as it comes (fit checks the arrays once) and
  of the worker thread. Target <= 1.15.
- When torch is importable: one training step of Keras 0.3's Siamese graph (a shared
  base network 784 -> 128 -> 128 -> 128 with relu and dropout 0.1, joined into a Lambda
  Euclidean distance, the contrastive loss written as a function, RMSprop, batch 128)
  against the same model in PyTorch (one ``nn.Sequential`` applied to both inputs,
  the same distance and loss, ``RMSprop``, ``loss.item()``). Target <= 1.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from benchmarks.bench_training import digits_model, looping_batches
from harness import Row, Settings, measure, rng_array

import numlayers
from numlayers.testing.reference_models import siamese_data, siamese_graph, torch_siamese

GENERATOR_TARGET = 1.15
SIAMESE_TARGET = 1.0
#: (samples, batch) of the digits-size epoch
DIGITS_SIZES = (1437, 32)
#: (input, width, batch) of the Siamese graph
SIAMESE_SIZES = (784, 128, 128)


def data_vs_fit_and_torch(torch: Any | None, config: Settings) -> list[Row]:
    """Every row of the section (the PyTorch row only when ``torch`` is given)."""
    rows = [generator_vs_fit(config)]
    if torch is not None:
        rows.append(siamese_step_vs_torch(torch, config))
    return rows


def generator_vs_fit(config: Settings) -> Row:
    tiny = config.width <= 100
    samples, batch = (12, 4) if tiny else DIGITS_SIZES
    x = rng_array((samples, 64), 0)
    y = np.eye(10, dtype=np.float32)[np.arange(samples) % 10]
    numlayers.set_seed(0)
    model = digits_model("cpu", (5, 4) if tiny else (256, 128))
    stream = looping_batches(x, y, batch)

    def ours() -> Any:
        return model.fit_generator(stream, samples, 1, verbose=0)

    def theirs() -> Any:
        return model.fit(x, y, batch_size=batch, nb_epoch=1, verbose=0, shuffle=False)

    t = measure({"ours": ours, "fit": theirs}, config)
    return Row(
        "m",
        f"fit_generator epoch {samples}x64 batch {batch} vs fit",
        t["ours"],
        t["fit"],
        GENERATOR_TARGET,
        "1 worker; same batches, same order",
    )


def siamese_step_vs_torch(torch: Any, config: Settings) -> Row:
    inputs, width, batch = SIAMESE_SIZES if config.width > 100 else (6, 5, 4)
    graph = siamese_graph(inputs, width)
    data = siamese_data(inputs, batch)
    _, torch_step = torch_siamese(torch, graph)
    ta, tb = torch.from_numpy(data["input_a"]), torch.from_numpy(data["input_b"])
    ty = torch.from_numpy(data["output"])[:, None]

    def ours() -> float:
        return float(graph.train_on_batch(data))

    t = measure({"ours": ours, "torch": lambda: torch_step(ta, tb, ty)}, config)
    return Row(
        "m",
        f"Siamese graph {inputs}->{width}x3 batch {batch} train step vs torch",
        t["ours"],
        t["torch"],
        SIAMESE_TARGET,
        "shared base network, join, Lambda distance, contrastive loss function",
    )
