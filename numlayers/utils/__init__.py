"""Keras 0.3's helpers for training scripts (``from numlayers.utils import np_utils``,
``generic_utils``, ``data_utils``)."""

from numlayers.utils import data_utils, generic_utils, np_utils

__all__ = ["data_utils", "generic_utils", "np_utils"]
