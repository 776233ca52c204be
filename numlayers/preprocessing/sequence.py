"""Token sequences as Keras 0.3's ``keras.preprocessing.sequence`` handles them: padding
to one length, word2vec sampling probabilities and skip-gram pairs."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers.random import get_generator

#: the Euler-Mascheroni constant to the three digits Keras 0.3's sampling table uses
_ZIPF_GAMMA = 0.577


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


def make_sampling_table(size: int, sampling_factor: float = 1e-5) -> np.ndarray:
    """The probability (float64, ``size`` values) that word2vec's subsampling keeps a word
    of rank ``i``: ``min(1, sqrt(sampling_factor / frequency))``, frequencies following
    Zipf's law, ``1 / frequency(rank) ~ rank * (log(rank) + 0.577) + 1/2 - 1/(12 rank)``.
    Index 0 (no word) gets the value of rank 1, as in Keras.

    Example:
        >>> np.round(make_sampling_table(4), 6)
        array([0.003152, 0.003152, 0.005476, 0.007416])
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
        raise ValueError(f"make_sampling_table: size must be an int >= 0, received {size!r}")
    if (
        isinstance(sampling_factor, bool)
        or not isinstance(sampling_factor, numbers.Real)
        or not math.isfinite(sampling_factor)
        or sampling_factor <= 0
    ):
        raise ValueError(
            f"make_sampling_table: sampling_factor must be a finite number > 0, received "
            f"{sampling_factor!r}"
        )
    rank = np.arange(int(size), dtype=np.float64)
    rank[:1] = 1.0
    inverse_frequency = rank * (np.log(rank) + _ZIPF_GAMMA) + 0.5 - 1.0 / (12.0 * rank)
    return np.minimum(1.0, np.sqrt(float(sampling_factor) * inverse_frequency))


def skipgrams(
    sequence: Sequence[int] | np.ndarray,
    vocabulary_size: int,
    window_size: int = 4,
    negative_samples: float = 1.0,
    shuffle: bool = True,
    categorical: bool = False,
    sampling_table: Any = None,
    *,
    seed: Any = None,
) -> tuple[list[list[int]], list[Any]]:
    """Skip-gram ``(couples, labels)`` of a sequence of word indices: ``[word, context]``
    for every context word at most ``window_size`` places from ``word`` (label 1), then
    ``int(negative_samples * positives)`` couples of a word with a random index from 1 to
    ``vocabulary_size - 1`` (label 0), all shuffled together unless ``shuffle=False``.
    Index 0 is no word and is skipped; with a ``sampling_table`` a word is kept as the
    first of its couples with probability ``sampling_table[word]``. ``categorical=True``
    labels ``[0, 1]`` (context) and ``[1, 0]`` (random). Sampling, negatives and shuffle
    draw from one generator, ``seed`` (an int, a ``numpy.random.Generator`` or None for
    numlayers' own), never from NumPy's or Python's global random state.

    Example:
        >>> skipgrams([1, 2, 0, 3], vocabulary_size=4, window_size=2,
        ...           negative_samples=0.0, shuffle=False)
        ([[1, 2], [2, 1], [2, 3], [3, 2]], [1, 1, 1, 1])
    """
    if (
        isinstance(vocabulary_size, bool)
        or not isinstance(vocabulary_size, int | np.integer)
        or vocabulary_size < 2
    ):
        raise ValueError(
            f"skipgrams: vocabulary_size must be an int >= 2, received {vocabulary_size!r}"
        )
    if (
        isinstance(window_size, bool)
        or not isinstance(window_size, int | np.integer)
        or window_size < 1
    ):
        raise ValueError(f"skipgrams: window_size must be an int >= 1, received {window_size!r}")
    if (
        isinstance(negative_samples, bool)
        or not isinstance(negative_samples, numbers.Real)
        or not math.isfinite(negative_samples)
        or negative_samples < 0
    ):
        raise ValueError(
            f"skipgrams: negative_samples must be a finite number >= 0, received "
            f"{negative_samples!r}"
        )
    if isinstance(sequence, str | bytes) or not hasattr(sequence, "__len__"):
        raise TypeError(f"skipgrams expects a sequence of word indices, received {sequence!r}")
    words = np.asarray(sequence)
    if words.size == 0:
        words = words.astype(np.int64)
    if words.ndim != 1 or words.dtype.kind not in "iu":
        raise ValueError(
            f"skipgrams: sequence must be one-dimensional integer word indices, received "
            f"shape {words.shape} of {words.dtype}"
        )
    words = words.astype(np.int64)
    if words.size and (words.min() < 0 or words.max() >= vocabulary_size):
        raise ValueError(
            f"skipgrams: word indices must lie in 0 to vocabulary_size - 1 = "
            f"{vocabulary_size - 1}, received {words.min()} to {words.max()}"
        )
    table = None
    if sampling_table is not None:
        table = np.asarray(sampling_table, dtype=np.float64)
        if table.ndim != 1 or len(table) < vocabulary_size:
            raise ValueError(
                f"skipgrams: sampling_table needs one probability per word index (at least "
                f"vocabulary_size = {vocabulary_size}), received shape {table.shape}"
            )
    generator = get_generator(seed)

    length = len(words)
    keep = words != 0
    if table is not None:
        keep &= generator.random(length) < table[words]
    reach = min(int(window_size), max(length - 1, 0))
    offsets = np.concatenate([np.arange(-reach, 0), np.arange(1, reach + 1)])
    places = np.arange(length)[:, None] + offsets[None, :]
    inside = (places >= 0) & (places < length)
    context = words[np.where(inside, places, 0)]
    paired = inside & keep[:, None] & (context != 0)
    targets = np.broadcast_to(words[:, None], paired.shape)[paired]
    contexts = context[paired]
    labels = np.ones(len(targets), dtype=np.int64)

    nb_negative = int(len(targets) * negative_samples)
    if nb_negative:
        mixed = generator.permutation(targets)
        targets = np.concatenate([targets, mixed[np.arange(nb_negative) % len(mixed)]])
        contexts = np.concatenate(
            [contexts, generator.integers(1, vocabulary_size, size=nb_negative)]
        )
        labels = np.concatenate([labels, np.zeros(nb_negative, dtype=np.int64)])

    if shuffle:
        order = generator.permutation(len(targets))
        targets, contexts, labels = targets[order], contexts[order], labels[order]
    couples = np.stack([targets, contexts], axis=1).tolist()
    if categorical:
        return couples, np.stack([1 - labels, labels], axis=1).tolist()
    return couples, labels.tolist()
