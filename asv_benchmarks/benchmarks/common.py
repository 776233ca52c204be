"""Helpers shared by every benchmark module.

- :func:`bench_device` picks the device of a run and skips CUDA (by raising
  ``NotImplementedError``, asv's "skipped") where there is no GPU. Numba's CUDA
  simulator is never timed: it proves logic, not speed. Only tiny runs (the
  test suite) let it stand in for a GPU, so the CUDA path of each benchmark runs
  somewhere.
- :class:`LayerBenchmark` is the whole recipe for a layer: a subclass names its
  sizes and how to make the layer, and inherits ``setup``, ``time_forward`` and
  ``time_backward`` over every device and dtype. Layers run as a model runs them,
  through ``run_forward`` on arrays the caller keeps (``Layer.forward`` adds one copy
  of its input, so that a caller's later change cannot reach the backward pass).
  Compilation happens in
  ``setup`` (warm-up calls), never inside a timed call, and every timed call
  ends by synchronising the device so CUDA timings cover the kernels, not only
  their launches.
- ``NUMLAYERS_BENCH_TINY=1`` shrinks every size (see :func:`pick`) so
  ``tests/test_benchmarks.py`` can run each benchmark once in seconds.
- A benchmark class names the layer classes it times in a ``layer_classes``
  class attribute (a tuple of :class:`Layer` subclasses): ``tests/test_registry.py``
  requires every exported layer to be named by at least one benchmark.
  ``bench_catalogue.CatalogueBench`` names every layer of the catalogue.

asv re-runs ``setup`` before every sample, so what a setup prepares is kept in
:data:`_PREPARED` per class and parameters: the layer is built and warmed once
per process, and later setups only look it up.
"""

from __future__ import annotations

import abc
import os
from typing import Any

import numpy as np

from numlayers.devices import Device, DeviceError, get_device, simulator_enabled
from numlayers.layers import Layer

#: shrink every benchmark to a few elements (for the test suite)
TINY = os.environ.get("NUMLAYERS_BENCH_TINY", "") not in ("", "0")

DEVICES = ["cpu", "cuda"]
DTYPES = ["float32", "float64"]

#: untimed forward + backward calls in setup, which compile (or load from Numba's
#: cache) what the timed calls run; tiny runs (tests) time nothing, so they skip them
WARMUP_CALLS = 0 if TINY else 3

#: prepared benchmark state, per (class, parameters)
_PREPARED: dict[tuple[Any, ...], dict[str, Any]] = {}


def pick(full: Any, tiny: Any) -> Any:
    """``full`` for real runs, ``tiny`` when ``NUMLAYERS_BENCH_TINY`` is set."""
    return tiny if TINY else full


def bench_device(name: str) -> Device:
    """The device ``name``; raises NotImplementedError (asv: skipped) for CUDA without a GPU."""
    if name == "cpu":
        return get_device("cpu")
    if simulator_enabled() and not TINY:
        raise NotImplementedError("the CUDA simulator is not timed: no GPU")
    try:
        return get_device(name)
    except DeviceError as error:
        raise NotImplementedError(f"no GPU: {error}") from error


def real_gpu() -> bool:
    """True when CUDA runs on a GPU (not absent, not simulated)."""
    if simulator_enabled():
        return False
    try:
        get_device("cuda")
    except DeviceError:
        return False
    return True


def import_torch(cuda: bool = False) -> Any:
    """``torch``, or NotImplementedError (asv: skipped) when it (or its CUDA) is missing."""
    try:
        import torch
    except ImportError as error:
        raise NotImplementedError("torch is not installed") from error
    if cuda and not torch.cuda.is_available():
        raise NotImplementedError("torch has no CUDA device")
    return torch


def disable_tf32(torch: Any) -> None:
    """Make PyTorch multiply float32 matrices in float32 (cuBLAS would otherwise use TF32)."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9; the old flag is deprecated
        matmul.fp32_precision = "ieee"
    else:
        matmul.allow_tf32 = False


def prepared(key: tuple[Any, ...], prepare: Any) -> dict[str, Any]:
    """``prepare()``'s result, computed once per process for ``key``."""
    if key not in _PREPARED:
        _PREPARED[key] = prepare()
    return _PREPARED[key]


class LayerBenchmark(abc.ABC):
    """Forward and backward timings of one layer over devices and dtypes.

    Subclasses set ``shape`` (the input, batch axis included), ``tiny_shape``
    and, when the layer has parameters of its own, ``params``/``param_names``
    with extra entries BEFORE ``device`` and ``dtype``; :meth:`make_layer`
    receives those extra parameters by name. ``train`` is the flag forward runs
    with. ``time_backward`` times backward alone, after a forward made in setup.

    The class is abstract so asv does not collect it; concrete subclasses are.
    """

    params: list[list[Any]] = [DEVICES, DTYPES]
    param_names: list[str] = ["device", "dtype"]
    shape: tuple[int, ...] = (256, 1024)
    tiny_shape: tuple[int, ...] = (4, 6)
    train: bool = False
    #: range of the uniform random input
    low: float = -3.0
    high: float = 3.0
    #: seconds asv allows one benchmark, setup (and first compilation) included
    timeout = 180

    layer: Layer
    x: Any
    grad: Any
    device: Device

    @abc.abstractmethod
    def make_layer(self, shape: tuple[int, ...], dtype: str, **case: Any) -> Layer:
        """A new layer for inputs of ``shape`` (batch axis included) in ``dtype``."""

    def setup(self, *params: Any) -> None:
        named = dict(zip(self.param_names, params, strict=True))
        device = bench_device(named.pop("device"))
        dtype = named.pop("dtype")
        key = (type(self).__module__ + "." + type(self).__qualname__, *params)
        state = prepared(key, lambda: self._prepare(device, dtype, named))
        self.device = device
        self.layer = state["layer"]
        self.x = state["x"]
        self.grad = state["grad"]

    def _prepare(self, device: Device, dtype: str, case: dict[str, Any]) -> dict[str, Any]:
        shape = pick(self.shape, self.tiny_shape)
        layer = self.make_layer(shape, dtype, **case)
        layer.to(device)
        rng = np.random.default_rng(0)
        x = device.asarray(rng.uniform(self.low, self.high, shape), dtype)
        y = layer.run_forward(x, self.train)
        grad = device.asarray(rng.standard_normal(tuple(y.shape)), dtype)
        for _ in range(WARMUP_CALLS):
            layer.run_forward(x, self.train)
            layer.backward(grad)
        device.synchronize()
        # the layer keeps its last forward's state, so time_backward can run at once
        return {"layer": layer, "x": x, "grad": grad}

    def time_forward(self, *params: Any) -> None:
        self.layer.run_forward(self.x, self.train)
        self.device.synchronize()

    def time_backward(self, *params: Any) -> None:
        self.layer.backward(self.grad)
        self.device.synchronize()
