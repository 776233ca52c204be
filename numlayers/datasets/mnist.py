"""MNIST digits: ``load_data()`` gives ``(X_train, y_train), (X_test, y_test)``, 60,000
and 10,000 images of ``28 x 28`` ``uint8`` pixels and their ``uint8`` labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.utils.data_utils import get_file

#: the digits as one NumPy archive (x_train, y_train, x_test, y_test), no pickles
ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"


def load_data(path: str = "mnist.npz") -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The digits, downloaded once to ``path`` in the dataset cache."""
    if not path.endswith(".npz"):
        raise ValueError(
            f"mnist.load_data: {path!r} is not a NumPy archive; numlayers reads the digits "
            "from mnist.npz (Keras 0.3's mnist.pkl.gz is a pickle, which runs code as it loads)"
        )
    with np.load(get_file(path, origin=ORIGIN), allow_pickle=False) as data:
        return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
