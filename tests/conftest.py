"""Test setup: CUDA tests run on a real GPU when there is one, else in Numba's simulator.

The simulator must be chosen before numba is imported, so this runs first.
"""

from __future__ import annotations

import ctypes
import os


def _gpu_present() -> bool:
    """True when a CUDA driver answers with at least one device (no numba import)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0:
            return count.value > 0
    return False


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _gpu_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from numlayers.devices import get_device, simulator_enabled  # noqa: E402

DEVICES = ["cpu", "cuda"]
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest):
    """Each device in turn; the CUDA one is the simulator on a machine with no GPU."""
    return get_device(request.param)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest):
    return np.dtype(request.param)


def pytest_report_header(config: pytest.Config) -> str:
    return "CUDA: " + ("Numba simulator (no GPU)" if simulator_enabled() else "real GPU")


# --- Compile-time report -----------------------------------------------------------------
# NUMLAYERS_COMPILE_REPORT=DIR writes, per test process, one line per Numba compilation
# (seconds spent in it excluding nested compilations, function, signature) to DIR, so that
# the suite's compile budget can be read off a cold run:
#   sort -rn DIR/*.tsv | head -40


def _install_compile_report(directory: str) -> None:
    import atexit
    import time

    from numba.core import event

    rows: list[tuple[float, str, str]] = []
    stack: list[list[float]] = []  # [start, time spent in nested compilations]

    class CompileReport(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            stack.append([time.perf_counter(), 0.0])

        def on_end(self, ev: event.Event) -> None:
            start, nested = stack.pop()
            spent = time.perf_counter() - start
            if stack:
                stack[-1][1] += spent
            dispatcher = ev.data.get("dispatcher")
            name = getattr(getattr(dispatcher, "py_func", None), "__qualname__", repr(dispatcher))
            module = getattr(getattr(dispatcher, "py_func", None), "__module__", "?")
            rows.append((spent - nested, f"{module}.{name}", str(ev.data.get("args"))))

    event.register("numba:compile", CompileReport())

    def write() -> None:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"{os.getpid()}.tsv")
        with open(path, "w") as handle:
            for seconds, name, signature in rows:
                handle.write(f"{seconds:.3f}\t{name}\t{signature}\n")

    atexit.register(write)


if os.environ.get("NUMLAYERS_COMPILE_REPORT"):
    _install_compile_report(os.environ["NUMLAYERS_COMPILE_REPORT"])
