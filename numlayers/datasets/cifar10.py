"""CIFAR-10: ``load_data()`` gives ``(X_train, y_train), (X_test, y_test)``, 50,000 and
10,000 colour images as ``(samples, 3, 32, 32)`` ``uint8`` (channels first, as Keras 0.3
gave them) and their labels 0 to 9 as ``(samples, 1)`` ``uint8``."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from numlayers.utils.data_utils import get_file

#: the binary version: records of one label byte and 3 x 32 x 32 pixel bytes
ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
RECORD_BYTES = 1 + 3 * 32 * 32


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The images ``(n, 3, 32, 32)`` and labels ``(n,)`` of one binary batch file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % RECORD_BYTES:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 records "
            f"({RECORD_BYTES} bytes each)"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.size and labels.max() > 9:
        raise ValueError(f"{path}: label {labels.max()} is not a CIFAR-10 class (0 to 9)")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def load_data() -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The images, downloaded and unpacked once in the dataset cache."""
    folder = get_file(FOLDER, origin=ORIGIN, untar=True)
    batches = [read_batch(os.path.join(folder, f"data_batch_{i}.bin")) for i in range(1, 6)]
    X_test, y_test = read_batch(os.path.join(folder, "test_batch.bin"))
    X_train = np.concatenate([images for images, _ in batches])
    y_train = np.concatenate([labels for _, labels in batches])
    return (X_train, y_train.reshape(-1, 1)), (X_test, y_test.reshape(-1, 1))
