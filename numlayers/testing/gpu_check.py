"""GPU check: the project's CUDA tests on a real GPU, then its speed against PyTorch CUDA.

On a machine with an NVIDIA GPU, from the repository root, with nothing installed
but numba, numba-cuda, numpy, pytest, pytest-xdist and (for the comparisons) torch::

    PYTHONPATH=. python -m numlayers.testing.gpu_check            # 3 to 6 minutes
    PYTHONPATH=. python -m numlayers.testing.gpu_check --quick --no-tests --cases gemm,mlp

It first runs the tests' CUDA selection (``pytest -k "cuda and not ptx" -n <cores>``,
leaving out the ``extended`` ones and the PTX check, which compiles for a GPU it
does not need) in a child process on the GPU: the tests' ``conftest`` picks Numba's
simulator only where no GPU answers, and the child gets no ``NUMBA_ENABLE_CUDASIM``.
Then, in this process and in float32, it times each case against what a PyTorch
user runs (TF32 off), warm-up calls first, the median of several samples, each
sample ending with a synchronisation:

- ``gemm``: ``out = a @ b`` through the Numba GEMM and, where nvmath-python is
  installed, through the ``matmul`` operation, which then calls cuBLAS, against
  ``torch.mm``, at 4096 and at 1024 (TFLOP/s of each);
- ``tilings``: the Numba GEMM at the same sizes with each of a few tilings (the two a
  float32 product picks from and neighbours of the widest: half its depth, half its
  columns, half its rows), so that one run tells which suits the GPU;
- ``elementwise``: relu, tanh and sigmoid forward on 4096 x 4096 (GB/s, and the share
  of the device's copy bandwidth, measured as a device-to-device copy), called from
  Python and replayed as a CUDA graph (the kernel alone, as a model's step runs it);
- ``mlp``: SGD ``train_on_batch`` of 64-128-128-10 at batch 32, 784-1024-1024-10 at
  256 and 784-4096-4096-10 at 1024 against the same ``nn.Linear``/``nn.ReLU`` model
  with ``CrossEntropyLoss``, ``SGD.step`` and ``loss.item()``, both taking the batch
  from host (NumPy) memory each step, with the kernel launches and copies of one of our
  steps (:func:`numlayers.devices.cuda_activity`), each replayed as a CUDA graph (the
  default) and launched from Python; the note also gives PyTorch's time with the
  batch already on the GPU;
- ``recurrent``: LSTM and GRU over 50 steps, batch 32, 64 -> 128, forward and backward
  of the last output, against ``nn.LSTM``/``nn.GRU`` (cuDNN), with launches per pass,
  launched from Python and replayed as a CUDA graph (as a model's step runs them);
- ``conv``: Convolution2D, 3 x 3, 32 -> 32 channels, 32 x 32 "same", batch 256: the
  forward in channels first, and forward + backward in both layouts, against
  ``nn.Conv2d`` (cuDNN);
- ``lambda``: the traced Lambda ``tanh(x) * 2 + x * x`` forward on 4096 x 4096, as a
  share of the copy bandwidth, against the same expression in eager PyTorch (called
  and replayed, as above).

Ratios are our time over PyTorch's: above 1 we are slower. A case that fails prints
an error row and the others still run. Without torch the PyTorch columns read n/a.

Options: ``--quick`` (fewer samples), ``--no-tests``, ``--cases a,b`` (a selection of
the cases above), ``--smoke`` (tiny sizes, one sample: what the test suite runs
under the simulator, where it is the default), ``--workers`` and ``--tests-timeout``
for the test run, and ``--profile``: after the table, the GPU time of the recurrent
passes and of the largest MLP step, kernel by kernel (PyTorch's profiler, which records
Numba's kernels too; about 10 seconds).

NumPy 2.5 has no ``np.row_stack``, which numba-cuda 0.30 still names when it is
imported: this module aliases it to ``np.vstack`` before ``numba.cuda`` is imported
(here, and through a generated ``sitecustomize`` in the test process).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: the statement that gives NumPy 2.5 back its ``row_stack`` (the child's sitecustomize)
ROW_STACK_SHIM = (
    "import numpy\nif not hasattr(numpy, 'row_stack'):\n    numpy.row_stack = numpy.vstack\n"
)


def restore_row_stack() -> None:
    """Alias ``np.row_stack`` to ``np.vstack`` where NumPy removed it (2.5), before
    ``numba.cuda`` (which names it at import) is imported."""
    if not hasattr(np, "row_stack"):
        setattr(np, "row_stack", np.vstack)  # noqa: B010 (ruff would rename the attribute)


restore_row_stack()

from numba.core.errors import NumbaPerformanceWarning  # noqa: E402

from numlayers.cuda_graphs import capture  # noqa: E402
from numlayers.devices import Device, cuda_activity, get_device, simulator_enabled  # noqa: E402
from numlayers.kernels import matmul  # noqa: E402
from numlayers.kernels.cublas import cublas  # noqa: E402
from numlayers.kernels.toolkit import launch_size  # noqa: E402
from numlayers.layers import GRU, LSTM, Convolution2D, Dense, Lambda  # noqa: E402
from numlayers.models import Sequential  # noqa: E402
from numlayers.optimizers import SGD  # noqa: E402
from numlayers.testing.reference_models import (  # noqa: E402
    siamese_data,
    siamese_graph,
    torch_siamese,
)

REPOSITORY = Path(__file__).resolve().parents[2]
CASES = ("gemm", "tilings", "elementwise", "mlp", "recurrent", "conv", "lambda", "siamese")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Sizes:
    """The shapes of every case: the issue's on a GPU, tiny ones for a smoke run."""

    gemm: tuple[int, ...]
    elementwise: int  # the side of a square matrix
    mlps: tuple[tuple[int, ...], ...]  # (input, hidden..., classes, batch)
    recurrent: tuple[int, int, int, int]  # steps, batch, features, units
    conv: tuple[int, int, int]  # batch, channels (= filters), image side
    siamese: tuple[int, int, int]  # inputs, width, batch
    samples: int


FULL = Sizes(
    gemm=(4096, 1024),
    elementwise=4096,
    mlps=((64, 128, 128, 10, 32), (784, 1024, 1024, 10, 256), (784, 4096, 4096, 10, 1024)),
    recurrent=(50, 32, 64, 128),
    conv=(256, 32, 32),
    siamese=(784, 128, 128),
    samples=15,
)
SMOKE = Sizes(
    gemm=(5,),
    elementwise=8,
    mlps=((4, 3, 2, 2),),
    recurrent=(2, 2, 3, 2),
    conv=(1, 1, 3),
    siamese=(6, 5, 4),
    samples=1,
)


@dataclass
class Context:
    """What every case needs: the CUDA device, torch (or None) and the sizes."""

    device: Device
    torch: Any
    sizes: Sizes
    samples: int
    warm: bool = True  # warm-up calls before timing (not in a smoke run)
    copy_bandwidth: float | None = None  # bytes per second, once measured


@dataclass
class Row:
    case: str
    ours: str
    theirs: str = "n/a"
    ratio: str = ""
    note: str = ""


# --------------------------------------------------------------------------- timing


def median_seconds(
    function: Callable[[], Any], synchronize: Callable[[], Any], samples: int, warm: bool = True
) -> float:
    """The median time of one call of ``function``: with ``warm``, warm-up calls and then
    ``samples`` samples of enough calls to take a few milliseconds; else (a smoke run)
    ``samples`` single calls. Each sample ends with ``synchronize``."""
    calls = 1
    if warm:
        function()
        function()
        synchronize()
        start = time.perf_counter()
        function()
        synchronize()
        calls = max(1, min(50, int(0.003 / max(time.perf_counter() - start, 1e-7))))
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        synchronize()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def compare(
    context: Context, ours: Callable[[], Any], theirs: Callable[[], Any] | None
) -> tuple[float, float | None]:
    """Median times of our call and (when torch is there) theirs."""
    ours_time = median_seconds(ours, context.device.synchronize, context.samples, context.warm)
    if theirs is None:
        return ours_time, None
    synchronize = context.torch.cuda.synchronize
    return ours_time, median_seconds(theirs, synchronize, context.samples, context.warm)


def milliseconds(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.3f} ms"


def ratio(ours: float, theirs: float | None) -> str:
    return "" if theirs is None else f"{ours / theirs:.2f}"


def timed_row(case: str, ours: float, theirs: float | None, note: str = "") -> Row:
    return Row(case, milliseconds(ours), milliseconds(theirs), ratio(ours, theirs), note)


def random_array(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)


def compare_with_activity(
    context: Context, ours: Callable[[], Any], theirs: Callable[[], Any] | None
) -> tuple[float, float | None, str]:
    """:func:`compare`, and the launches and copies of one of our (warm) steps: in a
    smoke run that step is also the timed one."""
    ours()  # buffers allocated: the counts are those of every later step
    started = time.perf_counter()
    with cuda_activity() as activity:
        ours()
    context.device.synchronize()
    note = (
        f"{activity.launches} launches, {activity.to_host} to host, "
        f"{activity.to_device} to device, {activity.synchronizations} syncs per step"
    )
    if not context.warm and theirs is None:
        return time.perf_counter() - started, None, note
    return (*compare(context, ours, theirs), note)


# --------------------------------------------------------------------------- cases


@dataclass
class GemmProblem:
    """``out = a @ b`` at one size: device operands, the float64 result to check against
    and (where torch is there) ``torch.mm`` of the same operands."""

    size: int
    operands: tuple[Any, Any, Any, Any]  # a, b, an empty bias, out (on the device)
    expected: np.ndarray
    theirs: Callable[[], None] | None


def gemm_problem(context: Context, size: int) -> GemmProblem:
    device, torch = context.device, context.torch
    a, b = random_array((size, size), 1), random_array((size, size), 2)
    operands = (
        device.asarray(a),
        device.asarray(b),
        device.empty((0,), np.float32),
        device.empty((size, size), np.float32),
    )
    if torch is None:
        return GemmProblem(size, operands, a.astype(np.float64) @ b.astype(np.float64), None)
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    tout = torch.empty((size, size), dtype=torch.float32, device="cuda")

    def theirs() -> None:
        torch.mm(ta, tb, out=tout)

    theirs()
    return GemmProblem(size, operands, tout.cpu().numpy().astype(np.float64), theirs)


def gemm_row(context: Context, problem: GemmProblem, path: str, launch: Callable[..., Any]) -> Row:
    """``launch(a, b, bias, out)`` timed against ``torch.mm``, in TFLOP/s, with its
    largest difference from the expected product."""
    ours = functools.partial(launch, *problem.operands)
    ours()
    result = context.device.to_host(problem.operands[3])
    expected = problem.expected
    error = np.abs(result - expected).max() / max(np.abs(expected).max(), 1e-30)
    ours_time, theirs_time = compare(context, ours, problem.theirs)
    flops = 2.0 * problem.size**3
    theirs_rate = "n/a" if theirs_time is None else f"{flops / theirs_time / 1e12:.1f} TFLOP/s"
    return Row(
        f"GEMM {problem.size} x {problem.size} ({path} vs torch.mm)",
        f"{flops / ours_time / 1e12:.1f} TFLOP/s",
        theirs_rate,
        ratio(ours_time, theirs_time),
        f"{milliseconds(ours_time)}, max relative difference {error:.1e}",
    )


def gemm_rows(context: Context) -> list[Row]:
    """``out = a @ b`` through the Numba GEMM (the tiling its launcher picks) and, where
    nvmath-python's cuBLAS is there, through ``matmul``, which hands it large products."""
    rows = []
    device = context.device
    dtype = np.dtype(np.float32)
    through_cublas = cublas(device.cuda) is not None  # type: ignore[attr-defined]
    for size in context.sizes.gemm:
        problem = gemm_problem(context, size)
        tiling = matmul.pick_tiling(size, size, matmul.GEMM_TILINGS[dtype])
        numba_gemm = matmul.gemm_kernel(device.cuda, dtype, False, False, tiling)  # type: ignore[attr-defined]
        rows.append(gemm_row(context, problem, "Numba GEMM", numba_gemm))
        if through_cublas:
            path = "matmul through nvmath cuBLAS"
            rows.append(gemm_row(context, problem, path, device.kernels(dtype).matmul))
    if not through_cublas:
        rows.append(Row("matmul through nvmath cuBLAS", "n/a", "", "", "nvmath-python not found"))
    return rows


def candidate_tilings() -> dict[str, matmul.Tiling]:
    """The float32 tilings the ``tilings`` case times the Numba GEMM with: the two it
    picks from and neighbours of the widest, so that one GPU run shows which is fastest
    on that GPU (their simulator sizes are tiny, as every tiling's). The widest with one
    block an SM is not among them: ptxas gives it the same 128 registers a thread, so
    the GPU runs two of its blocks an SM all the same."""
    wide = matmul.WIDE_TILING
    return {
        "128x128x16, 2 blocks an SM": wide,
        "128x128x8, 2 blocks an SM": dataclasses.replace(wide, depth=launch_size(8, 2)),
        "128x64x16, 2 blocks an SM": dataclasses.replace(wide, cols=launch_size(64, 4)),
        "64x128x16, 2 blocks an SM": dataclasses.replace(wide, rows=launch_size(64, 4)),
        "64x64x16": matmul.DEFAULT_TILING,
    }


def tiling_rows(context: Context) -> list[Row]:
    """The Numba GEMM at each of :func:`candidate_tilings`, at each GEMM size."""
    rows = []
    dtype = np.dtype(np.float32)
    tilings = candidate_tilings()
    for size in context.sizes.gemm:
        problem = gemm_problem(context, size)
        for name, tiling in tilings.items():
            launch = matmul.gemm_kernel(context.device.cuda, dtype, False, False, tiling)  # type: ignore[attr-defined]
            rows.append(gemm_row(context, problem, f"Numba GEMM, {name}", launch))
    return rows


def copy_bandwidth(context: Context) -> float:
    """The device's copy bandwidth in bytes per second (read + write) of a device-to-device
    copy: PyTorch's ``copy_`` where torch is there (a Numba device-to-device copy of
    64 MB measured a quarter of PyTorch's relu rate on an H200), else Numba's."""
    if context.copy_bandwidth is None:
        side = context.sizes.elementwise
        source = random_array((side, side), 3)
        copy: Callable[[], Any]
        if context.torch is not None:
            torch_source = context.torch.from_numpy(source).cuda()
            torch_target = context.torch.empty_like(torch_source)
            copy = functools.partial(torch_target.copy_, torch_source)
            synchronize = context.torch.cuda.synchronize
        else:
            device_source = context.device.asarray(source)
            device_target = context.device.empty((side, side), np.float32)
            copy = functools.partial(context.device.copy, device_source, device_target)
            synchronize = context.device.synchronize
        seconds = median_seconds(copy, synchronize, context.samples, context.warm)
        context.copy_bandwidth = 2.0 * source.size * 4 / seconds
    return context.copy_bandwidth


def bandwidth_row(
    context: Context, case: str, ours: Callable[[], Any], theirs: Callable[[], Any] | None,
    elements: int,
) -> Row:  # fmt: skip
    """A memory-bound case: GB/s (one read and one write of ``elements`` float32) and
    its share of the copy bandwidth."""
    ours_time, theirs_time = compare(context, ours, theirs)
    rate = 2.0 * elements * 4 / ours_time
    theirs_rate = (
        "n/a" if theirs_time is None else f"{2.0 * elements * 4 / theirs_time / 1e9:.0f} GB/s"
    )
    share = rate / copy_bandwidth(context)
    return Row(
        case,
        f"{rate / 1e9:.0f} GB/s",
        theirs_rate,
        ratio(ours_time, theirs_time),
        f"{share:.0%} of the copy bandwidth ({copy_bandwidth(context) / 1e9:.0f} GB/s)",
    )


#: the suffix of a case whose call is recorded as a CUDA graph and replayed
REPLAYED = "(replayed as a CUDA graph)"


def replayed(context: Context, call: Callable[[], Any]) -> Callable[[], None]:
    """``call`` recorded once as a CUDA graph (:mod:`numlayers.cuda_graphs`), as a model's
    step runs it: the kernel's own speed, without the 20 to 60 us that launching it from
    Python costs (more than the kernel takes at 4096 x 4096 on an H200)."""
    call()  # compiled and allocated before the recording
    graph, _ = capture(context.device, call)
    return graph.launch


def elementwise_rows(context: Context) -> list[Row]:
    device, torch = context.device, context.torch
    side = context.sizes.elementwise
    kernels = device.kernels(np.float32)
    x = random_array((side, side), 4)
    x_dev, out = device.asarray(x), device.empty((side, side), np.float32)
    if torch is not None:
        tx = torch.from_numpy(x).cuda()
        tout = torch.empty_like(tx)
    rows = []
    for name in ("relu", "tanh", "sigmoid"):
        forward = getattr(kernels, f"{name}_forward")
        theirs = None
        if torch is not None:
            functions: dict[str, Any] = {
                "relu": lambda t, out: torch.clamp(t, min=0.0, out=out),
                "tanh": torch.tanh,
                "sigmoid": torch.sigmoid,
            }

            def theirs(function: Any = functions[name]) -> None:
                function(tx, out=tout)

        def ours(forward: Any = forward) -> None:
            forward(x_dev, out)

        case = f"{name} forward {side} x {side}"
        rows.append(bandwidth_row(context, case, ours, theirs, x.size))
        rows.append(
            bandwidth_row(context, f"{case} {REPLAYED}", replayed(context, ours), theirs, x.size)
        )
    how = "torch copy_" if torch is not None else "Numba device copy"
    rows.append(Row(f"device-to-device copy ({how})", f"{copy_bandwidth(context) / 1e9:.0f} GB/s"))
    return rows


def traced_expression(x: Any) -> Any:
    """The traced Lambda of the check (as ``bench_tracing``'s)."""
    return np.tanh(x) * 2.0 + x * x


def lambda_rows(context: Context) -> list[Row]:
    device, torch = context.device, context.torch
    side = context.sizes.elementwise
    layer = Lambda(traced_expression, input_shape=(side,)).to(device)
    x = random_array((side, side), 5)
    x_dev = device.asarray(x)
    theirs = None
    if torch is not None:
        tx = torch.from_numpy(x).cuda()

        def theirs() -> None:
            torch.tanh(tx) * 2.0 + tx * tx

    difference = np.abs(device.to_host(layer.run_forward(x_dev, False)) - traced_expression(x))
    case = f"Lambda tanh(x) * 2 + x * x forward {side} x {side}"
    rows = []
    for name, ours in [
        (case, lambda: layer.run_forward(x_dev, False)),
        (f"{case} {REPLAYED}", replayed(context, lambda: layer.run_forward(x_dev, False))),
    ]:
        rows.append(bandwidth_row(context, name, ours, theirs, x.size))
        rows[-1].note += f"; max abs difference {difference.max():.1e}"
    return rows


def mlp_model(widths: Sequence[int], device: Device, cuda_graphs: bool = True) -> Sequential:
    """Dense/relu layers and a softmax output with categorical crossentropy and SGD,
    its steps replayed as CUDA graphs unless ``cuda_graphs`` is False."""
    model = Sequential(device=device, dtype="float32")
    model.add(Dense(widths[1], input_shape=(widths[0],), activation="relu", seed=0))
    for index, width in enumerate(widths[2:-1], start=1):
        model.add(Dense(width, activation="relu", seed=index))
    model.add(Dense(widths[-1], activation="softmax", seed=len(widths)))
    model.compile(SGD(lr=0.01), "categorical_crossentropy", cuda_graphs=cuda_graphs)
    return model


def torch_mlp(torch: Any, model: Sequential) -> Any:
    """The same model in PyTorch, holding a copy of ``model``'s weights, on the GPU."""
    modules = []
    for index, layer in enumerate(model.layers):
        weight, bias = layer.get_weights()
        linear = torch.nn.Linear(*weight.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias))
        modules.append(linear)
        if index < len(model.layers) - 1:
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules).cuda()


def mlp_batch(widths: Sequence[int], batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An MLP case's batch: inputs, class labels and their one-hot targets."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((batch, widths[0])).astype(np.float32)
    labels = rng.integers(0, widths[-1], batch)
    return x, labels, np.eye(widths[-1], dtype=np.float32)[labels]


def mlp_rows(context: Context) -> list[Row]:
    rows = []
    torch = context.torch
    for sizes, cuda_graphs in [
        (sizes, graphs) for sizes in context.sizes.mlps for graphs in (True, False)
    ]:
        *widths, batch = sizes
        model = mlp_model(widths, context.device, cuda_graphs)
        x, labels, y = mlp_batch(widths, batch)

        def ours(model: Sequential = model, x: np.ndarray = x, y: np.ndarray = y) -> Any:
            return model.train_on_batch(x, y)

        theirs = None
        note = ""
        if torch is not None:
            network = torch_mlp(torch, model)
            optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
            loss_function = torch.nn.CrossEntropyLoss()
            resident = torch.from_numpy(x).cuda(), torch.from_numpy(labels).cuda()

            def torch_step(tx: Any, tlabels: Any, network: Any = network,
                           optimizer: Any = optimizer, loss_function: Any = loss_function,
                           ) -> float:  # fmt: skip
                optimizer.zero_grad()
                loss = loss_function(network(tx), tlabels)
                loss.backward()
                optimizer.step()
                return float(loss.item())

            def theirs(torch_step: Any = torch_step, x: Any = x, labels: Any = labels) -> float:
                # the batch from host memory, as ours: train_on_batch takes NumPy arrays
                return torch_step(torch.from_numpy(x).cuda(), torch.from_numpy(labels).cuda())

            note = f"first losses {float(ours()):.4f} / {theirs():.4f}; "
            if cuda_graphs:  # PyTorch's step with the batch already on the GPU
                step_on_device = functools.partial(torch_step, *resident)
                on_device = median_seconds(
                    step_on_device, torch.cuda.synchronize, context.samples, context.warm
                )
                note += f"PyTorch with the batch already on the GPU {milliseconds(on_device)}; "
        ours_time, theirs_time, activity = compare_with_activity(context, ours, theirs)
        note += activity
        shape = "-".join(str(width) for width in widths)
        how = "CUDA graph" if cuda_graphs else "eager launches"
        rows.append(timed_row(f"MLP {shape}, batch {batch}, SGD train step ({how})", ours_time,
                              theirs_time, note))  # fmt: skip
    return rows


def torch_recurrent(torch: Any, kind: str, features: int, units: int) -> Any:
    """``nn.LSTM``/``nn.GRU`` (batch first) of the same sizes (the work, not the values,
    is what is compared)."""
    module = (torch.nn.LSTM if kind == "LSTM" else torch.nn.GRU)(features, units, batch_first=True)
    return module.cuda()


def recurrent_passes(context: Context) -> dict[str, Callable[[], None]]:
    """Our LSTM and GRU forward and backward pass (of the last output) on the case's
    data, by kind: the input is data, so no input gradient is made (as torch's ``x``
    without ``requires_grad``)."""
    device = context.device
    steps, batch, features, units = context.sizes.recurrent
    x_dev = device.asarray(random_array((batch, steps, features), 7))
    g_dev = device.asarray(random_array((batch, units), 8))

    def one_pass(layer: Any) -> None:
        layer.run_forward(x_dev, True)
        layer.backward(g_dev)

    passes: dict[str, Callable[[], None]] = {}
    for kind, layer_class in (("LSTM", LSTM), ("GRU", GRU)):
        layer = layer_class(
            units,
            activation="tanh",
            inner_activation="sigmoid",
            input_shape=(steps, features),
            seed=0,
            dtype="float32",
        ).to(device)
        layer.needs_input_gradient = False
        passes[kind] = functools.partial(one_pass, layer)
    return passes


def recurrent_rows(context: Context) -> list[Row]:
    torch = context.torch
    steps, batch, features, units = context.sizes.recurrent
    x = random_array((batch, steps, features), 7)
    g = random_array((batch, units), 8)
    if torch is not None:
        tx, tg = torch.from_numpy(x).cuda(), torch.from_numpy(g).cuda()
    rows = []
    for kind, ours in recurrent_passes(context).items():
        theirs = None
        if torch is not None:
            module = torch_recurrent(torch, kind, features, units)
            parameters = list(module.parameters())

            def theirs(module: Any = module, parameters: list[Any] = parameters) -> None:
                for parameter in parameters:
                    parameter.grad = None
                output, _ = module(tx)
                output[:, -1].backward(tg)

        ours_time, theirs_time, note = compare_with_activity(context, ours, theirs)
        case = f"{kind} {steps} steps, batch {batch}, {features} -> {units}, fwd + bwd"
        rows.append(timed_row(case, ours_time, theirs_time, note))
        # as a model's training step runs the layer: its kernels without the launches
        # from Python (which set an eager pass's pace at these sizes)
        ours_time, theirs_time, note = compare_with_activity(
            context, replayed(context, ours), theirs
        )
        rows.append(timed_row(f"{case} {REPLAYED}", ours_time, theirs_time, note))
    return rows


def conv_rows(context: Context) -> list[Row]:
    """Convolution2D 3 x 3 "same" forward, channels first, and forward + backward (the
    weight, bias and input gradients) in both layouts, against ``nn.Conv2d`` (cuDNN,
    channels first; its backward from ``y.backward(g)``)."""
    rows = conv_layout_rows(context, "th", ("forward", "fwd + bwd"))
    return rows + conv_layout_rows(context, "tf", ("fwd + bwd",))


def conv_layout_rows(context: Context, ordering: str, passes: Sequence[str]) -> list[Row]:
    device, torch = context.device, context.torch
    batch, channels, side = context.sizes.conv
    shape = (channels, side, side) if ordering == "th" else (side, side, channels)
    layer = Convolution2D(
        channels, 3, 3, border_mode="same", dim_ordering=ordering, input_shape=shape
    ).to(device)
    layer.needs_input_gradient = True
    x = random_array((batch, *shape), 9)
    x_dev, g_dev = device.asarray(x), device.asarray(random_array((batch, *shape), 10))
    module: Any = None
    tx: Any = None
    tg: Any = None
    note = ""
    if torch is not None:
        weight, bias = layer.get_weights()
        if ordering == "tf":  # the kernel (rows, cols, in, out) as torch's (out, in, ...)
            weight = weight.transpose(3, 2, 0, 1)
        module = torch.nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            module.bias.copy_(torch.from_numpy(bias))
        module = module.cuda()
        torch.backends.cudnn.benchmark = True
        first = x if ordering == "th" else x.transpose(0, 3, 1, 2)
        tx = torch.from_numpy(np.ascontiguousarray(first)).cuda().requires_grad_()
        tg = torch.rand(tx.shape, device="cuda")
        with torch.no_grad():
            expected = module(tx).cpu().numpy()
        ours = device.to_host(layer.run_forward(x_dev, False))
        if ordering == "tf":
            ours = ours.transpose(0, 3, 1, 2)
        note = f"max abs difference {np.abs(ours - expected).max():.1e}"
    rows = []
    for which in passes:
        forward_only = which == "forward"

        def ours_call(forward_only: bool = forward_only) -> None:
            layer.run_forward(x_dev, not forward_only)
            if not forward_only:
                layer.backward(g_dev)

        def theirs_call(forward_only: bool = forward_only) -> None:
            if forward_only:
                with torch.no_grad():
                    module(tx)
            else:
                module(tx).backward(tg)

        theirs = theirs_call if torch is not None else None
        ours_time, theirs_time = compare(context, ours_call, theirs)
        case = f"Conv2D 3x3 same {channels}->{channels} {side}x{side}, batch {batch}, {ordering}"
        rows.append(timed_row(f"{case}, {which}", ours_time, theirs_time, note))
    return rows


def siamese_rows(context: Context) -> list[Row]:
    """Keras 0.3's Siamese graph (a shared base network, a join into a traced Lambda
    distance, a contrastive loss function) train step, replayed as a CUDA graph and
    eagerly, against the same model and step in PyTorch."""
    inputs, width, batch = context.sizes.siamese
    data = siamese_data(inputs, batch)
    rows = []
    # a smoke run (the simulator) times one variant: its replay is checked by the tests
    for cuda_graphs in (True, False) if context.warm else (True,):
        graph = siamese_graph(inputs, width, context.device, cuda_graphs)

        def ours(graph: Any = graph) -> Any:
            return graph.train_on_batch(data)

        theirs = None
        note = ""
        if context.torch is not None:
            _, torch_step = torch_siamese(context.torch, graph)

            def theirs(torch_step: Any = torch_step, torch: Any = context.torch) -> float:
                # the batch from host memory, as ours
                a, b = (torch.from_numpy(data[name]).cuda() for name in ("input_a", "input_b"))
                return torch_step(a, b, torch.from_numpy(data["output"]).cuda()[:, None])

            note = f"first losses {float(ours()):.4f} / {theirs():.4f} (dropout differs); "
        ours_time, theirs_time, activity = compare_with_activity(context, ours, theirs)
        how = "CUDA graph" if cuda_graphs else "eager launches"
        case = f"Siamese graph {inputs}->{width}x3, batch {batch}, RMSprop train step ({how})"
        rows.append(timed_row(case, ours_time, theirs_time, note + activity))
    return rows


CASE_FUNCTIONS: dict[str, Callable[[Context], list[Row]]] = {
    "gemm": gemm_rows,
    "tilings": tiling_rows,
    "elementwise": elementwise_rows,
    "mlp": mlp_rows,
    "recurrent": recurrent_rows,
    "conv": conv_rows,
    "lambda": lambda_rows,
    "siamese": siamese_rows,
}


def run_cases(context: Context, cases: Sequence[str]) -> list[Row]:
    """Every case's rows; a case that raises gives one error row instead."""
    rows = []
    for case in cases:
        started = time.perf_counter()
        try:
            found = CASE_FUNCTIONS[case](context)
        except Exception as error:  # one broken case must not hide the others
            traceback.print_exc()
            found = [Row(case, "error", note=f"{type(error).__name__}: {error}"[:200])]
        rows.extend(found)
        print(f"  {case}: {time.perf_counter() - started:.1f} s", flush=True)
    return rows


# --------------------------------------------------------------------------- profile


def profiled_calls(context: Context) -> dict[str, Callable[[], Any]]:
    """What ``--profile`` splits into kernels: the recurrent passes and the largest MLP
    step (replayed as a CUDA graph), the cases furthest from PyTorch's time."""
    calls: dict[str, Callable[[], Any]] = {
        f"{kind} fwd + bwd": call for kind, call in recurrent_passes(context).items()
    }
    *widths, batch = context.sizes.mlps[-1]
    x, _, y = mlp_batch(widths, batch)
    model = mlp_model(widths, context.device)
    calls[f"MLP {'-'.join(map(str, widths))}, batch {batch}, SGD step (CUDA graph)"] = (
        functools.partial(model.train_on_batch, x, y)
    )
    return calls


def kernel_name(name: str) -> str:
    """A kernel's name as the profiler reports it, without Numba's mangling (the ABI
    tags and the builders' ``<locals>``) and without a C++ kernel's parameter list."""
    name = re.sub(r"\[abi:[^\]]*\]", "", name).replace("::_3clocals_3e::", "::")
    name = name.removeprefix("numlayers::kernels::").split("(")[0]
    return name[:100]


def print_kernel_profile(context: Context, repeats: int = 5, top: int = 8) -> None:
    """Each of :func:`profiled_calls`' GPU time per call and its ``top`` kernels and
    copies by time, through PyTorch's profiler (CUPTI records every kernel of the
    process, Numba's too)."""
    print("kernels per call (PyTorch's profiler):")
    if context.torch is None:
        print("  --profile needs torch with CUDA: its profiler records the kernels")
        return
    from torch.profiler import ProfilerActivity, profile

    for name, call in profiled_calls(context).items():
        call()
        call()
        context.device.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as profiler:
            for _ in range(repeats):
                call()
            context.device.synchronize()
        events = [e for e in profiler.key_averages() if e.self_device_time_total > 0]
        busy = sum(event.self_device_time_total for event in events) / repeats
        print(f"  {name}: GPU busy {busy / 1e3:.3f} ms per call")
        for event in sorted(events, key=lambda e: -e.self_device_time_total)[:top]:
            each = event.self_device_time_total / repeats / 1e3
            print(f"    {each:8.3f} ms  x{event.count // repeats:<3d} {kernel_name(event.key)}")


# --------------------------------------------------------------------------- tests


def test_environment(shim_directory: str) -> dict[str, str]:
    """The test process's environment: no simulator, the row_stack shim and the
    repository on the path."""
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    environment["COLUMNS"] = "200"  # room for the reason on pytest's FAILED lines
    with open(os.path.join(shim_directory, "sitecustomize.py"), "w") as handle:
        handle.write(ROW_STACK_SHIM)
    paths = [shim_directory, str(REPOSITORY), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    return environment


def run_tests(workers: int, timeout: float) -> Row:
    """The tests' CUDA selection on the GPU, in a child process: one summary row."""
    command = [
        sys.executable, "-m", "pytest", "-rf", "-p", "no:cacheprovider",
        "-n", str(workers), "-m", "not extended", "-k", "cuda and not ptx", "tests",
    ]  # fmt: skip
    print("  $", " ".join(command), flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as shim_directory:
        try:
            completed = subprocess.run(
                command,
                cwd=REPOSITORY,
                env=test_environment(shim_directory),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return Row("CUDA tests (real GPU)", "timed out", note=f"after {timeout:.0f} s")
    output = completed.stdout + completed.stderr
    failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    for line in failures:
        print("   ", line)
    if completed.returncode not in (0, 1) or not failures and completed.returncode:
        print(output[-4000:])
    seconds = time.perf_counter() - started
    # the tests' conftest names the device in pytest's header
    where = "real GPU" if "CUDA: real GPU" in output else "NOT on the GPU: see the header"
    note = f"{where}, {seconds:.0f} s, {workers} workers"
    return Row("CUDA tests (real GPU)", summary_line(output), note=note)


def summary_line(output: str) -> str:
    """pytest's counts (``718 passed, 12 skipped``) from its last summary line."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    if not lines:
        return "no summary (see the output above)"
    counts = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", lines[-1])
    return ", ".join(f"{number} {word}" for number, word in counts)


# --------------------------------------------------------------------------- main


def print_table(rows: Sequence[Row]) -> None:
    print("| case | numlayers | PyTorch CUDA | ratio | note |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.case} | {row.ours} | {row.theirs} | {row.ratio} | {row.note} |")


def import_torch(smoke: bool) -> Any:
    """torch with CUDA and TF32 off, or None (always None in a smoke run)."""
    if smoke:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples per case")
    parser.add_argument("--no-tests", action="store_true", help="skip the CUDA tests")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (default in simulator)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tests-timeout", type=float, default=240.0)
    parser.add_argument(
        "--profile", action="store_true", help="the slowest cases' kernels (needs torch)"
    )
    arguments = parser.parse_args(argv)
    arguments.cases = [case for case in arguments.cases.split(",") if case]
    unknown = sorted(set(arguments.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    # small grids warn at every launch; the table is what this check reports
    warnings.filterwarnings("ignore", category=NumbaPerformanceWarning)
    smoke = arguments.smoke or simulator_enabled()
    started = time.perf_counter()
    rows = []
    if not arguments.no_tests:
        if simulator_enabled():
            rows.append(Row("CUDA tests (real GPU)", "not run", note="simulator: no GPU"))
        else:
            print("CUDA tests on the GPU:", flush=True)
            rows.append(run_tests(arguments.workers, arguments.tests_timeout))
    device = get_device("cuda")
    torch = import_torch(smoke)
    sizes = SMOKE if smoke else FULL
    samples = sizes.samples if smoke or not arguments.quick else 5
    context = Context(device, torch, sizes, samples, warm=not smoke)
    print(f"cases ({'smoke, ' if smoke else ''}{samples} samples each):", flush=True)
    rows.extend(run_cases(context, arguments.cases))
    print_table(rows)
    if arguments.profile:
        print_kernel_profile(context)
    print(f"GPU check took {time.perf_counter() - started:.0f} s")
    return 1 if any(row.ours in ("error", "timed out") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
