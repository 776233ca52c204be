"""Every CUDA kernel compiles to PTX for cc 9.0, and float32 kernels do no float64 math.

The simulator replaces ``numba.cuda`` in the test process, so the check runs in
a child process with the simulator off; it needs NVVM from the ``[cuda]`` extra,
not a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from numlayers.kernels import FAMILIES

#: the families in two halves, each checked in its own process per dtype, so that the
#: test processes share the compilation (it takes minutes in one)
HALVES = {"first-half": FAMILIES[::2], "second-half": FAMILIES[1::2]}


# Extended (CI runs it apart from the test command): each half compiles every kernel of
# its families for a real GPU, about a minute on one core, which the test command's
# 10-minute budget on two cores cannot hold along with the rest.
@pytest.mark.extended
@pytest.mark.parametrize("half", list(HALVES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_cuda_kernel_compiles_to_ptx_without_float64_in_float32(dtype, half):
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    families = ",".join(HALVES[half])
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "numlayers.testing.ptx_check",
            "--dtype",
            dtype,
            "--families",
            families,
        ],  # fmt: skip
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = completed.stdout + completed.stderr
    assert completed.returncode == 0, report
    assert "0 problems" in report, report


def test_ptxas_figures_are_read_from_its_verbose_report():
    from numlayers.testing.ptx_check import PTXAS_FIGURES

    report = (
        "ptxas info    : Compiling entry function 'kernel' for 'sm_90'\n"
        "ptxas info    : Function properties for kernel\n"
        "    16 bytes stack frame, 16 bytes spill stores, 16 bytes spill loads\n"
        "ptxas info    : Used 128 registers, used 1 barriers, 2048 bytes smem, 920 bytes cmem[0]"
    )
    assert ", ".join(PTXAS_FIGURES.findall(report)) == (
        "16 bytes spill stores, 16 bytes spill loads, Used 128 registers, 2048 bytes smem"
    )
