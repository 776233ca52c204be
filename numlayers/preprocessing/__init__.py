"""Keras 0.3's data helpers for training scripts (``from numlayers.preprocessing import
image, sequence, text``): augmenting image batches, padding token sequences, and turning
texts into word indices."""

from numlayers.preprocessing import image, sequence, text

__all__ = ["image", "sequence", "text"]
