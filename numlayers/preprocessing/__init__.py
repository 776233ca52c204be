"""Keras 0.3's sequence helper for training scripts
(``from numlayers.preprocessing import sequence``)."""

from numlayers.preprocessing import sequence

__all__ = ["sequence"]
