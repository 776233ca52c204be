"""Keras 0.3's data helpers for training scripts (``from numlayers.utils import np_utils``)."""

from numlayers.utils import np_utils

__all__ = ["np_utils"]
