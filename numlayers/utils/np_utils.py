"""Class labels and probabilities as Keras 0.3's ``keras.utils.np_utils`` has them."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_categorical(y: Any, nb_classes: int | None = None) -> np.ndarray:
    """One-hot rows (float64) of the integer class labels ``y``: ``nb_classes`` columns,
    by default one more than the largest label.

    Example:
        >>> to_categorical([0, 2, 1])
        array([[1., 0., 0.],
               [0., 0., 1.],
               [0., 1., 0.]])
    """
    labels = np.asarray(y)
    if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iub":
        raise TypeError(f"to_categorical expects integer class labels, received {labels.dtype}")
    labels = labels.reshape(-1).astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"to_categorical: class labels must be >= 0, received {labels.min()}")
    largest = int(labels.max()) if labels.size else -1
    if nb_classes is None:
        nb_classes = largest + 1
    elif isinstance(nb_classes, bool) or not isinstance(nb_classes, int | np.integer):
        raise TypeError(f"to_categorical: nb_classes must be an int, received {nb_classes!r}")
    elif largest >= nb_classes:
        raise ValueError(
            f"to_categorical: label {largest} does not fit {nb_classes} classes (0 to "
            f"{nb_classes - 1})"
        )
    one_hot = np.zeros((labels.size, int(nb_classes)))
    one_hot[np.arange(labels.size), labels] = 1.0
    return one_hot


def categorical_probas_to_classes(p: Any) -> np.ndarray:
    """The class of each row of class probabilities (its largest column)."""
    return np.argmax(np.asarray(p), axis=1)


def probas_to_classes(y_pred: Any) -> np.ndarray:
    """Classes from predictions: the largest column of rows of several classes, else a
    probability above 0.5 (class 1) or not (class 0)."""
    predictions = np.asarray(y_pred)
    if predictions.ndim > 1 and predictions.shape[1] > 1:
        return categorical_probas_to_classes(predictions)
    return (predictions.reshape(len(predictions)) > 0.5).astype(np.int32)


def accuracy(p: Any, y: Any) -> float:
    """The share of predicted classes ``p`` equal to the classes ``y``."""
    predicted, expected = np.asarray(p).reshape(-1), np.asarray(y).reshape(-1)
    if predicted.shape != expected.shape:
        raise ValueError(f"accuracy: {predicted.size} predictions for {expected.size} classes")
    return float(np.mean(predicted == expected)) if predicted.size else 0.0
