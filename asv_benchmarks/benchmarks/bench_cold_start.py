"""Cold start: import numlayers, build a small Sequential and run its first forward.

Each sample runs in a fresh interpreter (asv's ``timeraw_``), so it is what a
user waits for before the first result. Two cases:

- ``disk_cache``: Numba's on-disk cache is warm (setup primes it once), so the
  kernels are loaded, not compiled: every start after the first.
- ``no_cache``: Numba caches into a new empty folder, so every kernel the
  first forward needs is compiled: the very first start after an install.
"""

from __future__ import annotations

import subprocess
import sys

from . import common

#: the timed program; asv pastes it into a triple-quoted string, so it holds
#: neither backslashes nor triple quotes
MODEL_CODE = """
import numpy as np
import numlayers
from numlayers.layers import Dense, Dropout
from numlayers.models import Sequential
model = Sequential([
    Dense(64, input_shape=(32,), activation="relu"),
    Dropout(0.5),
    Dense(10, activation="softmax"),
])
model.forward(np.ones((16, 32), dtype="float32"), train=False)
"""

#: prefix of the ``no_cache`` case (NUMBA_CACHE_DIR must be set before numba is imported)
FRESH_CACHE_CODE = """
import os
import shutil
import tempfile
cache_dir = tempfile.mkdtemp(prefix="numlayers-cold-start-")
os.environ["NUMBA_CACHE_DIR"] = cache_dir
"""

CLEANUP_CODE = """
shutil.rmtree(cache_dir, ignore_errors=True)
"""

CASES = ["disk_cache", "no_cache"]


def cold_start_code(numba_cache: str) -> str:
    """The program one sample of the ``numba_cache`` case runs."""
    if numba_cache == "no_cache":
        return FRESH_CACHE_CODE + MODEL_CODE + CLEANUP_CODE
    return MODEL_CODE


class ColdStart:
    """Seconds from a new interpreter to the first forward's output."""

    params = [CASES]
    param_names = ["numba_cache"]
    number = 1
    repeat = (3, 10, 60.0)
    warmup_time = 0.0
    timeout = 300

    def setup(self, numba_cache: str) -> None:
        if numba_cache == "disk_cache" and not common.TINY:
            subprocess.run([sys.executable, "-c", MODEL_CODE], check=True)

    def timeraw_import_build_forward(self, numba_cache: str) -> str:
        return cold_start_code(numba_cache)
