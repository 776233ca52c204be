"""Side-by-side timings of numlayers against what a user would write instead, in one process.

Usage::

    python asv_benchmarks/compare.py [--quick] [--tiny] [--strict]

Sections (float32; each time is the best of many short samples after warm-up
calls, taken in rounds that alternate the two sides so slow drifts of a shared
machine hurt both alike):

a. CPU, batch 256, Dense 1024 -> 1024 forward + backward against the same
   matrix products in NumPy (``x @ W``, ``g @ W.T``, ``x.T @ g``), with and
   without NumPy's bias add and bias sum. Target: ratio <= 1.15.
b. CPU, each activation's forward (the Activation layer) on 256 x 4096 against
   the NumPy expression a user would write. Target: ratio <= 1.0.
c. When torch is importable: Dense and each activation forward + backward
   against PyTorch CPU autograd (``torch.set_num_threads`` = number of cores).
d. When a GPU is present: ``out = a @ b`` at 4096 x 4096 through our tiled GEMM
   (the ``matmul`` kernel op) against ``torch.mm`` with TF32 off.
e. When torch is importable: one training step of an MLP (Dense/relu layers, a
   softmax output with categorical crossentropy, SGD): ``train_on_batch`` against
   ``nn.Linear``/``nn.ReLU`` with ``CrossEntropyLoss`` on the logits and
   ``zero_grad``/``backward``/``step`` (and ``loss.item()``, as ours returns the
   loss). Small 64 -> 128 -> 128 -> 10 at batch 32: target ratio <= 0.5; large
   784 -> 1024 -> 1024 -> 10 at batch 256: target <= 1.0.
f. When torch is importable: Embedding(50000, 128) forward + backward on 64 x 64
   ids against ``nn.Embedding`` with its dense gradient. Target <= 0.7.
g. The same chain of 8 Dense(32) layers at batch 32 as a Graph (ours) and as a
   Sequential (theirs): ``predict_on_batch`` and ``train_on_batch``. The ratio is
   the Graph's per-node overhead; target <= 1.2. No torch needed.
h. When torch is importable: LSTM and GRU (50 steps, batch 32, 64 -> 128 units,
   tanh with sigmoid gates, as PyTorch's) forward + backward of the last output
   against ``nn.LSTM``/``nn.GRU`` (``batch_first=True``), neither computing an
   input gradient. Target <= 1.0 each. And the stacked-LSTM case: an LSTM with
   ``return_sequences=True`` and Keras's default activations (tanh, hard_sigmoid
   gates) forward + backward of every output, computing its input gradient, against
   ``nn.LSTM`` on an input that requires grad. Target <= 1.0.
i. When torch is importable: each advanced activation forward + backward (the input
   gradient, and the parameters' for the trainable ones) on 256 x 4096 against what a
   PyTorch user writes: ``nn.LeakyReLU``, ``nn.ELU``, ``nn.Threshold``, ``x * (|x| >
   theta)``, ``nn.PReLU(4096)``, ``alpha * softplus(beta * x)`` and Keras' SReLU
   expression with trainable per-feature tensors. Target <= 1.0 each.
j. When torch is importable: BatchNormalization (mode 0, training: batch statistics,
   running statistics updated) forward + backward, input and gamma/beta gradients, on
   256 x 1024 against ``nn.BatchNorm1d`` and on a 64 x 32 x 32 x 32 channels-first
   image batch (``axis=1``) against ``nn.BatchNorm2d``. Target <= 1.0 each.
k. When torch is importable: Convolution2D, Convolution1D and MaxPooling2D forward +
   backward, and a training step of the digits CNN, against PyTorch CPU (targets 1.3,
   1.3, 1.0, 1.0); with a GPU, the convolution's forward against cuDNN. See
   ``compare_convolutional.py``.
l. A traced Lambda (``tanh(x) * 2 + x * x``) on 256 x 4096: forward against NumPy and,
   when torch is importable, forward + backward against PyTorch autograd (targets 0.5);
   and a training step of the seed Graph against the same model in PyTorch (target 1.0).
   See ``compare_tracing.py``.
m. One epoch of ``fit_generator`` against ``fit`` on the same batches (target 1.15), and
   when torch is importable a training step of Keras 0.3's Siamese graph (a shared base
   network, a join, a Lambda distance, a contrastive loss function) against PyTorch
   (target 1.0). See ``compare_data.py``.

The sides alternate in blocks of samples, never call by call, with a pause
before each block: NumPy's and Numba's BLAS are two OpenBLAS builds with thread
pools of their own, and the idle threads of one spin for a while after each
call, stealing cores from the other (alternating call by call slowed both by
about 40 % on 2 cores). A user's program runs one or the other.

Layers run as a model runs them: ``run_forward`` (``Layer.forward`` adds one copy of
its input, which a user calling a layer directly pays). Ratios are ours / theirs:
below 1 we are faster. ``--quick`` takes fewer and
shorter samples; ``--tiny`` shrinks every shape (a smoke test, not a
measurement); ``--strict`` exits with status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

import numlayers
from numlayers.layers import (
    ELU,
    GRU,
    LSTM,
    Activation,
    BatchNormalization,
    Dense,
    Embedding,
    Layer,
    LeakyReLU,
    ParametricSoftplus,
    PReLU,
    SReLU,
    ThresholdedLinear,
    ThresholdedReLU,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmarks.bench_embeddings import token_ids  # noqa: E402
from benchmarks.bench_graph import chain_data, chain_model  # noqa: E402
from benchmarks.bench_training import classification_batch, mlp  # noqa: E402
from benchmarks.common import disable_tf32, real_gpu  # noqa: E402
from compare_convolutional import convolutional_vs_torch  # noqa: E402
from compare_data import data_vs_fit_and_torch  # noqa: E402
from compare_tracing import tracing_vs_numpy_and_torch  # noqa: E402
from harness import (  # noqa: E402
    Row,
    Settings,
    Timed,
    measure,
    print_table,
    rng_array,
    settings,
)

DENSE_TARGET = 1.15
ACTIVATION_TARGET = 1.0
SMALL_MLP_TARGET = 0.5
LARGE_MLP_TARGET = 1.0
EMBEDDING_TARGET = 0.7
GRAPH_TARGET = 1.2
RECURRENT_TARGET = 1.0
STACKED_LSTM_TARGET = 1.0
ADVANCED_ACTIVATION_TARGET = 1.0
BATCH_NORM_TARGET = 1.0


# --------------------------------------------------------------- (a) Dense vs NumPy
def dense_vs_numpy(config: Settings) -> list[Row]:
    n, d = config.batch, config.features
    layer = Dense(d, input_dim=d, seed=0, dtype="float32")
    x = rng_array((n, d), 1)
    g = rng_array((n, d), 2)
    W = layer.get_weights()[0]
    b = rng_array((d,), 3)
    layer.set_weights([W, b])

    def ours_forward() -> None:
        layer.run_forward(x)

    def ours_backward() -> None:
        layer.backward(g)

    def ours() -> None:
        layer.run_forward(x)
        layer.backward(g)

    def numpy_forward() -> None:
        x @ W + b

    def numpy_backward() -> None:
        g @ W.T
        x.T @ g
        g.sum(axis=0)

    def numpy_full() -> None:
        x @ W + b
        g @ W.T
        x.T @ g
        g.sum(axis=0)

    def numpy_products() -> None:
        x @ W
        g @ W.T
        x.T @ g

    layer.run_forward(x)
    t = measure(
        {
            "ours": ours,
            "numpy_full": numpy_full,
            "numpy_products": numpy_products,
            "ours_forward": ours_forward,
            "numpy_forward": numpy_forward,
            "ours_backward": ours_backward,
            "numpy_backward": numpy_backward,
        },
        config,
    )
    shape = f"{n}x{d}->{d}"
    return [
        Row(
            "a",
            f"Dense {shape} fwd+bwd vs NumPy (3 products + bias add/sum)",
            t["ours"],
            t["numpy_full"],
            DENSE_TARGET,
        ),
        Row(
            "a",
            f"Dense {shape} fwd+bwd vs NumPy (3 products only)",
            t["ours"],
            t["numpy_products"],
            DENSE_TARGET,
        ),
        Row("a", "  of which forward vs x @ W + b", t["ours_forward"], t["numpy_forward"]),
        Row(
            "a",
            "  of which backward vs g @ W.T, x.T @ g, g.sum(0)",
            t["ours_backward"],
            t["numpy_backward"],
        ),
    ]


# ---------------------------------------------------------- (b) activations vs NumPy
def _numpy_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _numpy_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


#: what a NumPy user writes for each activation (softplus: the overflow-safe form)
NUMPY_ACTIVATIONS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "relu": ("np.maximum(x, 0)", lambda x: np.maximum(x, 0)),
    "tanh": ("np.tanh(x)", np.tanh),
    "sigmoid": ("1 / (1 + np.exp(-x))", _numpy_sigmoid),
    "hard_sigmoid": ("np.clip(0.2 * x + 0.5, 0, 1)", lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    "softplus": ("np.logaddexp(0, x)", lambda x: np.logaddexp(0, x)),
    "softmax": ("exp(x - max) / sum", _numpy_softmax),
    "linear": ("x (identity, no work)", lambda x: x),
}


def activations_vs_numpy(config: Settings) -> list[Row]:
    shape = (config.batch, config.width)
    x = rng_array(shape, 4)
    rows = []
    for name, (expression, reference) in NUMPY_ACTIVATIONS.items():
        layer = Activation(name, input_shape=shape[1:], dtype="float32")
        np.testing.assert_allclose(layer.run_forward(x), reference(x), rtol=2e-4, atol=2e-5)
        functions: dict[str, Timed] = {
            "ours": functools.partial(layer.forward, x),
            "numpy": functools.partial(reference, x),
        }
        t = measure(functions, config)
        identity = name == "linear"
        rows.append(
            Row(
                "b",
                f"{name} forward {shape[0]}x{shape[1]} vs {expression}",
                t["ours"],
                t["numpy"],
                None if identity else ACTIVATION_TARGET,
                "both return x: the ratio is layer overhead" if identity else "",
            )
        )
    return rows


# ---------------------------------------------------------------- (c) vs PyTorch CPU
def torch_activations(torch: Any) -> dict[str, Callable[[Any], Any]]:
    return {
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        # torch's own hardsigmoid is x / 6 + 1 / 2; Keras' is this one
        "hard_sigmoid": lambda x: torch.clamp(x * 0.2 + 0.5, 0.0, 1.0),
        "softplus": torch.nn.functional.softplus,
        "softmax": lambda x: torch.softmax(x, dim=-1),
    }


def versus_torch(torch: Any, config: Settings) -> list[Row]:
    rows = []
    n, d = config.batch, config.features
    layer = Dense(d, input_dim=d, seed=0, dtype="float32")
    x, g = rng_array((n, d), 1), rng_array((n, d), 2)
    W = layer.get_weights()[0]
    tx = torch.from_numpy(x).requires_grad_()
    tW = torch.from_numpy(W.copy()).requires_grad_()
    tb = torch.zeros(d, requires_grad=True)
    tg = torch.from_numpy(g)

    def ours_dense() -> None:
        layer.run_forward(x)
        layer.backward(g)

    def torch_dense() -> None:
        tx.grad = tW.grad = tb.grad = None  # zero_grad(set_to_none=True): no accumulation
        (tx @ tW + tb).backward(tg)

    t = measure({"ours": ours_dense, "torch": torch_dense}, config)
    rows.append(Row("c", f"Dense {n}x{d}->{d} fwd+bwd vs torch autograd", t["ours"], t["torch"]))

    shape = (config.batch, config.width)
    x = rng_array(shape, 4)
    g = rng_array(shape, 5)
    tx = torch.from_numpy(x).requires_grad_()
    tg = torch.from_numpy(g)
    for name, function in torch_activations(torch).items():
        activation = Activation(name, input_shape=shape[1:], dtype="float32")

        def ours(layer: Activation = activation) -> None:
            layer.run_forward(x)
            layer.backward(g)

        def theirs(function: Callable[[Any], Any] = function) -> None:
            tx.grad = None
            function(tx).backward(tg)

        t = measure({"ours": ours, "torch": theirs}, config)
        rows.append(
            Row(
                "c",
                f"{name} fwd+bwd {shape[0]}x{shape[1]} vs torch autograd",
                t["ours"],
                t["torch"],
            )
        )
    return rows


# -------------------------------------------------------------------- (d) GPU GEMM
def gemm_vs_cublas(torch: Any | None, config: Settings) -> list[Row]:
    device = numlayers.get_device("cuda")
    kernels = device.kernels(np.float32)
    size = config.gemm
    a, b = rng_array((size, size), 6), rng_array((size, size), 7)
    a_dev, b_dev = device.asarray(a), device.asarray(b)
    bias = device.empty((0,), np.float32)
    out = device.empty((size, size), np.float32)

    def ours() -> None:
        kernels.matmul(a_dev, b_dev, bias, out)
        device.synchronize()

    functions: dict[str, Timed] = {"ours": ours}
    if torch is not None and torch.cuda.is_available():
        disable_tf32(torch)
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        tout = torch.empty((size, size), dtype=torch.float32, device="cuda")

        def theirs() -> None:
            torch.mm(ta, tb, out=tout)
            torch.cuda.synchronize()

        functions["torch"] = theirs
    ours()
    expected = a.astype(np.float64) @ b.astype(np.float64)
    error = np.abs(device.to_host(out) - expected).max() / np.abs(expected).max()
    t = measure(functions, config)
    flops = 2.0 * size**3
    note = f"ours {flops / t['ours'] / 1e12:.1f} TFLOP/s, max rel. error {error:.1e}"
    if "torch" not in t:
        return [
            Row(
                "d",
                f"GEMM {size} float32 (no torch CUDA to compare)",
                t["ours"],
                t["ours"],
                note=note,
            )
        ]
    note += f"; cuBLAS {flops / t['torch'] / 1e12:.1f} TFLOP/s"
    return [
        Row(
            "d",
            f"GEMM {size}x{size} float32 vs torch.mm (TF32 off)",
            t["ours"],
            t["torch"],
            note=note,
        )
    ]


# ------------------------------------------------------ (e) MLP training vs PyTorch
def torch_mlp(torch: Any, model: Any) -> Any:
    """nn.Linear/nn.ReLU layers holding a copy of the Sequential ``model``'s weights."""
    modules = []
    for index, layer in enumerate(model.layers):
        W, b = layer.get_weights()
        linear = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        if index < len(model.layers) - 1:
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules)


def mlp_training_vs_torch(torch: Any, config: Settings) -> list[Row]:
    rows = []
    cases = (
        ("small", config.mlp_small, SMALL_MLP_TARGET),
        ("large", config.mlp_large, LARGE_MLP_TARGET),
    )
    for label, sizes, target in cases:
        *widths, batch = sizes
        lr = 0.01
        model = mlp(tuple(widths), lr=lr)
        x, y = classification_batch(batch, widths[0], widths[-1])
        network = torch_mlp(torch, model)
        optimizer = torch.optim.SGD(network.parameters(), lr=lr)
        loss_function = torch.nn.CrossEntropyLoss()
        tx = torch.from_numpy(x)
        labels = torch.from_numpy(y.argmax(axis=1))

        def ours(model: Any = model, x: np.ndarray = x, y: np.ndarray = y) -> float:
            return model.train_on_batch(x, y)

        def theirs(
            network: Any = network,
            optimizer: Any = optimizer,
            loss_function: Any = loss_function,
            tx: Any = tx,
            labels: Any = labels,
        ) -> float:
            optimizer.zero_grad()  # set_to_none
            loss = loss_function(network(tx), labels)
            loss.backward()
            optimizer.step()
            return loss.item()

        # same weights, same first loss: both sides compute the same thing
        first_ours, first_theirs = ours(), theirs()
        note = f"first losses {first_ours:.5f} / {first_theirs:.5f}"
        if not np.isclose(first_ours, first_theirs, rtol=1e-4, atol=1e-5):
            note += " DIFFER"
        t = measure({"ours": ours, "torch": theirs}, config)
        shape = "-".join(str(w) for w in widths)
        rows.append(
            Row(
                "e",
                f"MLP {shape} batch {batch} train step vs torch ({label})",
                t["ours"],
                t["torch"],
                target,
                note,
            )
        )
    return rows


# --------------------------------------------------- (f) Embedding vs nn.Embedding
def embedding_vs_torch(torch: Any, config: Settings) -> list[Row]:
    vocabulary, dim, batch, length = config.embedding
    layer = Embedding(vocabulary, dim, input_length=length, seed=0, dtype="float32")
    layer.needs_input_gradient = False
    ids = token_ids(vocabulary, batch, length)
    g = rng_array((batch, length, dim), 8)
    embedding = torch.nn.Embedding(vocabulary, dim)  # sparse=False: a dense gradient
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(layer.get_weights()[0]))
    tids, tg = torch.from_numpy(ids), torch.from_numpy(g)

    def ours() -> None:
        layer.run_forward(ids, True)
        layer.backward(g)

    def theirs() -> None:
        embedding.weight.grad = None  # zero_grad(set_to_none=True)
        embedding(tids).backward(tg)

    ours()
    theirs()
    assert embedding.weight.grad is not None
    error = np.abs(layer.get_gradients()[0] - embedding.weight.grad.numpy()).max()
    t = measure({"ours": ours, "torch": theirs}, config)
    return [
        Row(
            "f",
            f"Embedding {vocabulary}x{dim}, {batch}x{length} ids fwd+bwd vs nn.Embedding",
            t["ours"],
            t["torch"],
            EMBEDDING_TARGET,
            f"dense gradient, max abs difference {error:.1e}",
        )
    ]


# ------------------------------------------------------ (g) Graph vs Sequential
def graph_vs_sequential(config: Settings) -> list[Row]:
    layers, units, batch = config.chain
    models = {name: chain_model(name, layers, units) for name in ("graph", "sequential")}
    data = {name: chain_data(name, batch, units) for name in models}
    predicted = {name: models[name].predict_on_batch(data[name][0]) for name in models}
    assert np.allclose(predicted["graph"]["y"], predicted["sequential"], rtol=1e-5, atol=1e-6)
    rows = []
    for method in ("predict_on_batch", "train_on_batch"):
        functions: dict[str, Timed] = {}
        for name, model in models.items():
            inputs, train_args = data[name]
            if method == "predict_on_batch":
                functions[name] = functools.partial(model.predict_on_batch, inputs)
            else:
                functions[name] = functools.partial(model.train_on_batch, *train_args)
        t = measure(functions, config)
        per_node = (t["graph"] - t["sequential"]) / layers
        rows.append(
            Row(
                "g",
                f"Graph vs Sequential, {layers} x Dense({units}) batch {batch}: {method}",
                t["graph"],
                t["sequential"],
                GRAPH_TARGET,
                f"{per_node * 1e6:+.1f} us per node",
            )
        )
    return rows


# ------------------------------------------------- (h) LSTM and GRU vs PyTorch
def torch_recurrent(torch: Any, kind: str, layer: Any) -> Any:
    """nn.LSTM / nn.GRU (batch_first) with our layer's weights.

    Both order the LSTM gates i, f, c (g), o and take ``W.T``, ``U.T``; our bias
    goes into ``bias_ih`` (``bias_hh`` is zero). Our GRU is Keras 0.3's, whose
    reset gate multiplies the state before ``U_h`` (PyTorch: after ``W_hn h``),
    so its outputs differ slightly from nn.GRU's; the work is the same.
    """
    weights = layer.get_weights()
    W, b = weights[0], weights[-1]
    U = np.concatenate(weights[1:-1], axis=1)  # GRU: U_zr then U_h (z, r, h blocks)
    units = layer.output_dim
    module = (torch.nn.LSTM if kind == "LSTM" else torch.nn.GRU)(
        W.shape[0], units, batch_first=True
    )
    if kind == "GRU":  # torch's gate order is r, z, n; ours z, r, h
        order = np.r_[units : 2 * units, 0:units, 2 * units : 3 * units]
        W, U, b = W[:, order], U[:, order], b[order]
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(W.T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(U.T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy(b))
        module.bias_hh_l0.zero_()
    return module


def recurrent_vs_torch(torch: Any, config: Settings) -> list[Row]:
    steps, batch, features, units = config.rnn
    x = rng_array((batch, steps, features), 9, -1.0, 1.0)
    g = rng_array((batch, units), 10, -1.0, 1.0)
    tx, tg = torch.from_numpy(x), torch.from_numpy(g)
    rows = []
    for kind, cls in (("LSTM", LSTM), ("GRU", GRU)):
        layer = cls(
            units,
            activation="tanh",
            inner_activation="sigmoid",
            input_shape=(steps, features),
            seed=0,
            dtype="float32",
        )
        layer.needs_input_gradient = False  # x is data, as for torch's x without grad
        module = torch_recurrent(torch, kind, layer)
        parameters = list(module.parameters())

        def ours_forward(layer: Any = layer) -> None:
            layer.run_forward(x, True)

        def ours(layer: Any = layer) -> None:
            layer.run_forward(x, True)
            layer.backward(g)

        def torch_forward(module: Any = module) -> None:
            module(tx)

        def theirs(module: Any = module, parameters: list[Any] = parameters) -> None:
            for parameter in parameters:
                parameter.grad = None
            output, _ = module(tx)
            output[:, -1].backward(tg)

        difference = np.abs(
            layer.run_forward(x, True) - module(tx)[0][:, -1].detach().numpy()
        ).max()
        note = f"max abs output difference {difference:.1e}"
        if kind == "GRU":
            note += " (Keras 0.3 GRU: reset before U_h)"
        t = measure(
            {
                "ours": ours,
                "torch": theirs,
                "ours_forward": ours_forward,
                "torch_forward": torch_forward,
            },
            config,
        )
        shape = f"{steps} steps, {batch}x{features}->{units}"
        rows.append(
            Row(
                "h",
                f"{kind} {shape} fwd+bwd vs nn.{kind}",
                t["ours"],
                t["torch"],
                RECURRENT_TARGET,
                note,
            )
        )
        rows.append(
            Row(
                "h",
                "  of which forward (train) vs autograd forward",
                t["ours_forward"],
                t["torch_forward"],
            )
        )
    return rows


def stacked_lstm_vs_torch(torch: Any, config: Settings) -> list[Row]:
    """An LSTM inside a stack: every output and the input gradient, as a layer with
    another recurrent layer above and below it needs them."""
    steps, batch, features, units = config.rnn
    x = rng_array((batch, steps, features), 9, -1.0, 1.0)
    g = rng_array((batch, steps, units), 11, -1.0, 1.0)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tg = torch.from_numpy(g)
    layer = LSTM(
        units, return_sequences=True, input_shape=(steps, features), seed=0, dtype="float32"
    )
    layer.needs_input_gradient = True
    module = torch_recurrent(torch, "LSTM", layer)
    parameters = list(module.parameters())

    def ours() -> None:
        layer.run_forward(x, True)
        layer.backward(g)

    def theirs() -> None:
        for parameter in parameters:
            parameter.grad = None
        tx.grad = None
        output, _ = module(tx)
        output.backward(tg)

    t = measure({"ours": ours, "torch": theirs}, config)
    return [
        Row(
            "h",
            f"LSTM {steps} steps, {batch}x{features}->{units} return_sequences + input "
            "gradient fwd+bwd vs nn.LSTM",
            t["ours"],
            t["torch"],
            STACKED_LSTM_TARGET,
            "Keras defaults (hard_sigmoid gates; torch's are sigmoid): same work",
        )
    ]


# ------------------------------------------ (i) advanced activations vs PyTorch
def srelu_torch(torch: Any) -> Callable[..., Any]:
    """Keras 0.3.3's SReLU.call in torch operations."""

    def srelu(x: Any, t_left: Any, a_left: Any, t_right: Any, a_right: Any) -> Any:
        d = x - t_left
        width = t_right.abs()
        left_and_center = t_left + torch.minimum(torch.where(d > 0, d, a_left * d), width)
        return left_and_center + torch.relu(d - width) * a_right

    return srelu


def advanced_activations_vs_torch(torch: Any, config: Settings) -> list[Row]:
    shape = (config.batch, config.width)
    x, g = rng_array(shape, 12), rng_array(shape, 13)
    tx = torch.from_numpy(x).requires_grad_()
    tg = torch.from_numpy(g)
    features = shape[1:]
    # (our layer, their function of x and the parameters, what they write)
    cases: list[tuple[Layer, Callable[..., Any], str]] = [
        (LeakyReLU(0.3, input_shape=features), torch.nn.LeakyReLU(0.3), "nn.LeakyReLU"),
        (ELU(1.0, input_shape=features), torch.nn.ELU(1.0), "nn.ELU"),
        (ThresholdedReLU(1.0, input_shape=features), torch.nn.Threshold(1.0, 0.0), "nn.Threshold"),
        (
            ThresholdedLinear(1.0, input_shape=features),
            lambda x: x * (x.abs() > 1.0),
            "x * (|x| > theta)",
        ),
        (
            PReLU("glorot_uniform", input_shape=features, seed=0),
            lambda x, weight: torch.nn.functional.prelu(x, weight),
            f"nn.PReLU({shape[1]})'s F.prelu",
        ),
        (
            ParametricSoftplus(input_shape=features),
            lambda x, alpha, beta: alpha * torch.nn.functional.softplus(beta * x),
            "alpha * softplus(beta * x)",
        ),
        (SReLU(input_shape=features, seed=0), srelu_torch(torch), "Keras' SReLU expression"),
    ]
    rows = []
    for layer, function, expression in cases:
        parameters = [torch.from_numpy(w).requires_grad_() for w in layer.get_weights()]

        def ours(layer: Layer = layer) -> None:
            layer.run_forward(x, True)
            layer.backward(g)

        def theirs(
            function: Callable[..., Any] = function, parameters: list[Any] = parameters
        ) -> None:
            tx.grad = None
            for parameter in parameters:
                parameter.grad = None
            function(tx, *parameters).backward(tg)

        expected = function(tx, *parameters).detach().numpy()
        difference = np.abs(layer.run_forward(x, True) - expected).max()
        t = measure({"ours": ours, "torch": theirs}, config)
        rows.append(
            Row(
                "i",
                f"{type(layer).__name__} fwd+bwd {shape[0]}x{shape[1]} vs {expression}",
                t["ours"],
                t["torch"],
                ADVANCED_ACTIVATION_TARGET,
                f"max abs output difference {difference:.1e}",
            )
        )
    return rows


# ------------------------------------------------ (j) BatchNormalization vs PyTorch
def batch_norm_vs_torch(torch: Any, config: Settings) -> list[Row]:
    return [
        batch_norm_row(torch, config, (config.batch, config.features), -1, "BatchNorm1d"),
        batch_norm_row(torch, config, config.batch_norm_image, 1, "BatchNorm2d"),
    ]


def batch_norm_row(
    torch: Any, config: Settings, shape: tuple[int, ...], axis: int, module_name: str
) -> Row:
    x, g = rng_array(shape, 14), rng_array(shape, 15)
    tx = torch.from_numpy(x).requires_grad_()
    tg = torch.from_numpy(g)
    # PyTorch's momentum weighs the batch: Keras' 0.9 is its 0.1
    layer = BatchNormalization(epsilon=1e-5, axis=axis, input_shape=shape[1:])
    module = getattr(torch.nn, module_name)(shape[1], eps=1e-5, momentum=0.1)
    parameters = list(module.parameters())

    def ours() -> None:
        layer.run_forward(x, True)
        layer.backward(g)

    def theirs() -> None:
        tx.grad = None
        for parameter in parameters:
            parameter.grad = None
        module(tx).backward(tg)

    difference = np.abs(layer.run_forward(x, True) - module(tx).detach().numpy()).max()
    t = measure({"ours": ours, "torch": theirs}, config)
    return Row(
        "j",
        f"BatchNormalization(axis={axis}) train fwd+bwd {'x'.join(map(str, shape))} "
        f"vs nn.{module_name}",
        t["ours"],
        t["torch"],
        BATCH_NORM_TARGET,
        f"max abs output difference {difference:.1e}",
    )


def header(torch: Any | None) -> None:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    print(
        f"numlayers {numlayers.__version__}, numpy {np.__version__}, numba {numba.__version__}, "
        f"python {platform.python_version()}"
    )
    print(f"CPU: {cpu}, {os.cpu_count()} cores, numba threads {numba.get_num_threads()}")
    if torch is None:
        print("torch: not importable (sections c, e, f, h-k and the cuBLAS side of d skipped)")
    else:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (busy neighbours slow threaded code)")
    print("times are the best seconds per call; ratio = ours / theirs (below 1: we are faster)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    config = settings(args.quick, args.tiny)

    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)

    header(torch)
    rows = dense_vs_numpy(config) + activations_vs_numpy(config)
    if torch is not None:
        rows += versus_torch(torch, config)
    if real_gpu():
        rows += gemm_vs_cublas(torch, config)
    else:
        print("GPU: none (section d skipped)")
    if torch is not None:
        rows += mlp_training_vs_torch(torch, config) + embedding_vs_torch(torch, config)
    rows += graph_vs_sequential(config)
    if torch is not None:
        rows += recurrent_vs_torch(torch, config) + stacked_lstm_vs_torch(torch, config)
        rows += advanced_activations_vs_torch(torch, config)
        rows += batch_norm_vs_torch(torch, config)
        rows += convolutional_vs_torch(torch, config, real_gpu())
    rows += tracing_vs_numpy_and_torch(torch, config)
    rows += data_vs_fit_and_torch(torch, config)
    print()
    print_table(rows, args.tiny)

    missed = [row for row in rows if row.verdict == "MISS"]
    print()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.tiny:
        print("tiny shapes: a smoke test, targets not judged")
    elif missed:
        print(
            f"{len(missed)} target(s) missed: "
            + "; ".join(f"{row.case.strip()} ({row.ratio:.3f} > {row.target})" for row in missed)
        )
    else:
        print("every target met")
    return 1 if (args.strict and missed and not args.tiny) else 0


if __name__ == "__main__":
    sys.exit(main())
