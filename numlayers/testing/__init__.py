"""Public test helpers: tolerances and float64 gradient checks."""

from __future__ import annotations

from typing import Any

import numpy as np


def tolerance(dtype: Any) -> dict[str, float]:
    """``assert_allclose`` tolerances for comparing results computed in ``dtype``."""
    if np.dtype(dtype) == np.float32:
        return {"rtol": 2e-4, "atol": 2e-5}
    return {"rtol": 1e-9, "atol": 1e-11}
