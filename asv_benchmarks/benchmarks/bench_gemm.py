"""GPU only: our tiled GEMM (the ``matmul`` kernel op) against cuBLAS through torch.mm.

4096 x 4096 float32, ``out = a @ b``; TF32 is off in PyTorch so both compute in
full float32. Both cases skip without a GPU (and the torch case without torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import common

IMPLEMENTATIONS = ["numlayers", "torch"]


def _numlayers_gemm(a: np.ndarray, b: np.ndarray) -> tuple[Callable[[], Any], Callable[[], Any]]:
    device = common.bench_device("cuda")
    kernels = device.kernels(np.float32)
    a_dev, b_dev = device.asarray(a), device.asarray(b)
    bias = device.empty((0,), np.float32)
    out = device.empty((a.shape[0], b.shape[1]), np.float32)
    return (lambda: kernels.matmul(a_dev, b_dev, bias, out)), device.synchronize


def _torch_gemm(a: np.ndarray, b: np.ndarray) -> tuple[Callable[[], Any], Callable[[], Any]]:
    torch = common.import_torch(cuda=True)
    common.disable_tf32(torch)
    a_dev, b_dev = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    out = torch.empty((a.shape[0], b.shape[1]), dtype=torch.float32, device="cuda")
    return (lambda: torch.mm(a_dev, b_dev, out=out)), torch.cuda.synchronize


class GemmBench:
    """``out = a @ b`` at 4096 x 4096 float32 on the GPU."""

    params = [IMPLEMENTATIONS]
    param_names = ["implementation"]
    timeout = 180

    def setup(self, implementation: str) -> None:
        # skip before making 128 MB of operands
        if implementation == "numlayers":
            common.bench_device("cuda")
        else:
            common.import_torch(cuda=True)
        state = common.prepared(("gemm", implementation), lambda: self._prepare(implementation))
        self.multiply = state["multiply"]
        self.synchronize = state["synchronize"]

    def _prepare(self, implementation: str) -> dict[str, Any]:
        size = common.pick(4096, 8)
        rng = np.random.default_rng(0)
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        make = _numlayers_gemm if implementation == "numlayers" else _torch_gemm
        multiply, synchronize = make(a, b)
        for _ in range(common.WARMUP_CALLS):
            multiply()
        synchronize()
        return {"multiply": multiply, "synchronize": synchronize}

    def time_gemm(self, implementation: str) -> None:
        self.multiply()
        self.synchronize()
