"""Every CUDA kernel compiles to PTX for cc 9.0, and float32 kernels do no float64 math.

The simulator replaces ``numba.cuda`` in the test process, so the check runs in
a child process with the simulator off; it needs NVVM from the ``[cuda]`` extra,
not a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys


def test_every_cuda_kernel_compiles_to_ptx_without_float64_in_float32():
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    completed = subprocess.run(
        [sys.executable, "-m", "numlayers.testing.ptx_check"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = completed.stdout + completed.stderr
    assert completed.returncode == 0, report
    assert "0 problems" in report, report
