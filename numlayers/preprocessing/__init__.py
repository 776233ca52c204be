"""Keras 0.3's data helpers for training scripts (``from numlayers.preprocessing import
sequence, text``): padding token sequences, and turning texts into word indices."""

from numlayers.preprocessing import sequence, text

__all__ = ["sequence", "text"]
