"""Cold start: from a new interpreter to a small model's first forward, and to the digits
example's first training batch.

Each sample runs in a fresh interpreter (asv's ``timeraw_``), so it is what a
user waits for before the first result. Two cases each:

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

#: the digits example's model (examples/digits_mlp.py) and its first training batch
DIGITS_FIRST_BATCH_CODE = """
import numpy as np
from numlayers.layers import Dense, Dropout
from numlayers.models import Sequential
from numlayers.optimizers import Adam
model = Sequential()
model.add(Dense(256, input_shape=(64,), activation="relu"))
model.add(Dropout(0.3))
model.add(Dense(128, activation="relu"))
model.add(Dropout(0.3))
model.add(Dense(10, activation="softmax"))
model.compile(optimizer=Adam(lr=1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
X = np.random.default_rng(0).random((32, 64), dtype=np.float32)
Y = np.eye(10, dtype=np.float32)[np.arange(32) % 10]
model.train_on_batch(X, Y)
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


def cold_start_code(numba_cache: str, program: str = MODEL_CODE) -> str:
    """The program one sample of the ``numba_cache`` case runs."""
    if numba_cache == "no_cache":
        return FRESH_CACHE_CODE + program + CLEANUP_CODE
    return program


class ColdStartSettings:
    """The cases and asv settings of a cold-start benchmark (no benchmark itself)."""

    params = [CASES]
    param_names = ["numba_cache"]
    number = 1
    repeat = (3, 10, 60.0)
    warmup_time = 0.0
    timeout = 300


class ColdStart(ColdStartSettings):
    """Seconds from a new interpreter to the first forward's output."""

    def setup(self, numba_cache: str) -> None:
        if numba_cache == "disk_cache" and not common.TINY:
            subprocess.run([sys.executable, "-c", MODEL_CODE], check=True)

    def timeraw_import_build_forward(self, numba_cache: str) -> str:
        return cold_start_code(numba_cache)


class DigitsFirstBatch(ColdStartSettings):
    """Seconds from a new interpreter to the digits example's first ``train_on_batch``
    (targets: at most 5 s with no cache, 0.5 s with the disk cache warm)."""

    def setup(self, numba_cache: str) -> None:
        if numba_cache == "disk_cache" and not common.TINY:
            subprocess.run([sys.executable, "-c", DIGITS_FIRST_BATCH_CODE], check=True)

    def timeraw_first_training_batch(self, numba_cache: str) -> str:
        return cold_start_code(numba_cache, DIGITS_FIRST_BATCH_CODE)


#: the digits program with its first ``train_on_batch`` timed, the seconds printed
TIMED_FIRST_BATCH_CODE = DIGITS_FIRST_BATCH_CODE.replace(
    "model.train_on_batch(X, Y)\n",
    "import time\nstart = time.perf_counter()\nmodel.train_on_batch(X, Y)\n"
    "print(time.perf_counter() - start)\n",
)


class DigitsFirstBatchAlone(ColdStartSettings):
    """Seconds of the digits example's first ``train_on_batch`` call alone, in a new
    interpreter (its start, the imports and building the model excluded): what the
    targets of :class:`DigitsFirstBatch` bound, without the interpreter around it."""

    def setup(self, numba_cache: str) -> None:
        if common.TINY and numba_cache == "no_cache":
            # the test command runs the cold case once already (DigitsFirstBatch)
            raise NotImplementedError
        if numba_cache == "disk_cache":
            subprocess.run([sys.executable, "-c", DIGITS_FIRST_BATCH_CODE], check=True)

    def track_seconds(self, numba_cache: str) -> float:
        result = subprocess.run(
            [sys.executable, "-c", cold_start_code(numba_cache, TIMED_FIRST_BATCH_CODE)],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(result.stdout.split()[-1])

    track_seconds.unit = "seconds"  # type: ignore[attr-defined]
