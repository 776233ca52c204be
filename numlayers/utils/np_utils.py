"""Class labels, probabilities, norms and log losses as Keras 0.3's ``keras.utils.np_utils``
has them."""

from __future__ import annotations

from typing import Any

import numpy as np

#: how far from 0 and 1 the log losses clip probabilities, as Keras 0.3's ``binary_logloss``
LOGLOSS_EPSILON = 1e-15


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


def normalize(a: Any, axis: int = -1, order: Any = 2) -> np.ndarray:
    """``a`` divided by its ``order`` norm (``numpy.linalg.norm``'s ``ord``) along ``axis``.
    A slice whose norm is 0 (an all-zero row) is left as it is, zeros rather than NaN.
    As in Keras, a one-dimensional ``a`` comes back as one row, shape ``(1, n)``.

    Example:
        >>> normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
        array([[0.6, 0.8],
               [0. , 0. ]])
    """
    values = np.asarray(a)
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise TypeError(f"normalize: axis must be an int, received {axis!r}")
    if not -max(values.ndim, 1) <= axis < max(values.ndim, 1):
        raise ValueError(f"normalize: axis {axis} is out of range for {values.ndim} dimensions")
    with np.errstate(divide="ignore"):
        norms = np.atleast_1d(np.linalg.norm(values, order, int(axis)))
    norms[norms == 0] = 1
    return values / np.expand_dims(norms, int(axis))


def _clipped(p: Any) -> np.ndarray:
    """Probabilities kept within ``[LOGLOSS_EPSILON, 1 - LOGLOSS_EPSILON]``."""
    return np.clip(np.asarray(p, dtype=np.float64), LOGLOSS_EPSILON, 1 - LOGLOSS_EPSILON)


def _is_column(values: np.ndarray) -> bool:
    """Whether ``values`` is one value per sample: shape ``(n,)`` or ``(n, 1)``."""
    return values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)


def binary_logloss(p: Any, y: Any) -> float | np.ndarray:
    """The mean binary cross-entropy of probabilities ``p`` for labels ``y`` (0 or 1),
    ``p`` clipped to ``[1e-15, 1 - 1e-15]`` so a sure wrong answer costs about 34.5, not
    infinity. Shapes ``(n,)`` and ``(n, 1)`` (``model.predict``'s) both give one float;
    wider two-dimensional inputs give one loss per column, as in Keras.

    Example:
        >>> round(binary_logloss([0.5, 0.5], [1, 0]), 6)
        0.693147
    """
    probabilities = _clipped(p)
    labels = np.asarray(y, dtype=np.float64)
    if labels.ndim == 0 or not len(labels):
        raise ValueError(f"binary_logloss needs at least one label, received {y!r}")
    if _is_column(probabilities) and _is_column(labels):
        probabilities, labels = probabilities.reshape(-1), labels.reshape(-1)
    if probabilities.shape != labels.shape:
        raise ValueError(
            f"binary_logloss: probabilities of shape {probabilities.shape} for labels of "
            f"shape {labels.shape}"
        )
    terms = labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities)
    loss = -np.sum(terms, axis=0) / len(labels)
    return float(loss) if np.ndim(loss) == 0 else loss


def multiclass_logloss(P: Any, Y: Any) -> float:
    """The mean negative log probability ``P[i, Y[i] - 1]`` of each row's class, classes
    numbered from 1 as in Keras; probabilities are clipped to ``[1e-15, 1 - 1e-15]`` as
    :func:`binary_logloss` does (Keras did not clip here, a probability of 0 gave infinity).

    Example:
        >>> round(multiclass_logloss([[0.5, 0.5], [0.25, 0.75]], [1, 2]), 6)
        0.490415
    """
    probabilities = np.asarray(P, dtype=np.float64)
    classes = np.asarray(Y)
    if probabilities.ndim != 2:
        raise ValueError(
            f"multiclass_logloss expects rows of class probabilities, received shape "
            f"{probabilities.shape}"
        )
    if classes.dtype.kind == "f" and np.all(np.mod(classes, 1) == 0):
        classes = classes.astype(np.int64)
    if classes.ndim != 1 or classes.dtype.kind not in "iu":
        raise ValueError(
            f"multiclass_logloss expects one integer class per row, received shape "
            f"{classes.shape} of {classes.dtype}"
        )
    if not len(classes) or len(classes) != len(probabilities):
        raise ValueError(
            f"multiclass_logloss: {len(classes)} classes for {len(probabilities)} rows of "
            "probabilities (needs one per row, at least one)"
        )
    nb_classes = probabilities.shape[1]
    if classes.min() < 1 or classes.max() > nb_classes:
        raise ValueError(
            f"multiclass_logloss: classes are numbered 1 to {nb_classes}, received "
            f"{classes.min()} to {classes.max()}"
        )
    chosen = _clipped(probabilities[np.arange(len(classes)), classes.astype(np.int64) - 1])
    return float(-np.mean(np.log(chosen)))
