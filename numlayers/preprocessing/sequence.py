"""Padding token sequences to one length, as Keras 0.3's ``keras.preprocessing.sequence``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def pad_sequences(
    sequences: Sequence[Any],
    maxlen: int | None = None,
    dtype: Any = "int32",
    padding: str = "pre",
    truncating: str = "pre",
    value: float = 0.0,
) -> np.ndarray:
    """An array ``(len(sequences), maxlen)`` of the sequences, each cut to ``maxlen``
    (``truncating="pre"`` drops its first values, ``"post"`` its last) and filled with
    ``value`` before (``padding="pre"``) or after (``"post"``) it. ``maxlen`` defaults
    to the longest sequence.

    Example:
        >>> pad_sequences([[1, 2, 3], [4]], maxlen=2)
        array([[2, 3],
               [0, 4]], dtype=int32)
    """
    for name, given in (("padding", padding), ("truncating", truncating)):
        if given not in ("pre", "post"):
            raise ValueError(f"pad_sequences: {name} must be 'pre' or 'post', received {given!r}")
    if isinstance(sequences, str | bytes) or not hasattr(sequences, "__len__"):
        raise TypeError(f"pad_sequences expects a list of sequences, received {sequences!r}")
    rows = [np.asarray(row) for row in sequences]
    for index, row in enumerate(rows):
        if row.ndim != 1:
            raise ValueError(
                f"pad_sequences: sequence {index} must be one-dimensional, received shape "
                f"{row.shape}"
            )
    if maxlen is None:
        maxlen = max((len(row) for row in rows), default=0)
    elif isinstance(maxlen, bool) or not isinstance(maxlen, int | np.integer) or maxlen < 0:
        raise ValueError(f"pad_sequences: maxlen must be an int >= 0, received {maxlen!r}")
    padded = np.full((len(rows), int(maxlen)), value, dtype=dtype)
    for index, row in enumerate(rows):
        kept = row[len(row) - maxlen :] if truncating == "pre" else row[:maxlen]
        if maxlen == 0 or not len(kept):
            continue
        if padding == "pre":
            padded[index, maxlen - len(kept) :] = kept
        else:
            padded[index, : len(kept)] = kept
    return padded
