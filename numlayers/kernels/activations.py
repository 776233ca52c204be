"""(being written) activations kernels."""

from __future__ import annotations

from typing import Any

import numpy as np


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    return {}


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    return {}
