"""Keras 0.3's wrappers for other libraries (``numlayers.wrappers.scikit_learn``)."""
