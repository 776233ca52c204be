"""Words from texts, as Keras 0.3's ``keras.preprocessing.text``.

``text_to_word_sequence`` cuts a text into words, ``one_hot`` hashes each word of a text
to an index, and ``Tokenizer`` learns a vocabulary ranked by word frequency, then turns
texts into sequences of word indices or into a (texts, words) matrix of binary, count,
frequency or tf-idf values. Index 0 is never a word's: it is left for padding.

Where Keras 0.3 gave wrong or unstable results this module differs, and says so where
it does: ``one_hot`` hashes with MD5 instead of Python's per-process salted ``hash()``,
tf-idf weights are never negative, ``split`` may be longer than one character, words
with equal counts rank by first appearance, and calling ``fit_on_texts`` again adds to
``document_count`` as it adds to the word counts.
"""

from __future__ import annotations

import hashlib
import reprlib
import string
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import numpy as np

#: the vectorization modes of ``Tokenizer.sequences_to_matrix``
MODES: tuple[str, ...] = ("binary", "count", "freq", "tfidf")

_BASE_FILTER: str = string.punctuation.replace("'", "") + "\t\n"


def base_filter() -> str:
    """The characters removed from texts by default: ASCII punctuation except the
    apostrophe (so that ``don't`` stays one word), plus tab and newline.

    Example:
        >>> "'" in base_filter(), "," in base_filter(), "\\n" in base_filter()
        (False, True, True)
    """
    return _BASE_FILTER


def _short(value: Any) -> str:
    """A repr of ``value`` short enough for an error message."""
    return reprlib.repr(value)


def _translation(filters: Any, split: Any, caller: str) -> dict[int, str]:
    """The ``str.translate`` table that turns each filtered character into ``split``."""
    if not isinstance(split, str) or not split:
        raise ValueError(f"{caller}: split must be a non-empty str, received {split!r}")
    if isinstance(filters, str):
        characters: Iterable[Any] = filters
    elif isinstance(filters, list | tuple | set | frozenset):
        characters = filters
    else:
        raise TypeError(
            f"{caller}: filters must be a str of characters to remove, received {_short(filters)}"
        )
    table: dict[int, str] = {}
    for character in characters:
        if not isinstance(character, str) or len(character) != 1:
            raise TypeError(
                f"{caller}: filters must hold single characters, received {character!r}"
            )
        table[ord(character)] = split
    return table


def _words(text: str, table: dict[int, str], lower: bool, split: str) -> list[str]:
    """The non-empty pieces of ``text`` between ``split``s once filtered characters are
    turned into ``split``."""
    if lower:
        text = text.lower()
    return [word for word in text.translate(table).split(split) if word]


def _check_text(text: Any, caller: str) -> str:
    if not isinstance(text, str):
        raise TypeError(
            f"{caller}: text must be a str, received {type(text).__name__} {_short(text)}"
        )
    return text


def text_to_word_sequence(
    text: str, filters: str | Collection[str] = _BASE_FILTER, lower: bool = True, split: str = " "
) -> list[str]:
    """The words of ``text``: every character of ``filters`` becomes a separator, the text
    is cut at each ``split`` and the empty pieces are dropped.

    Args:
        text: the text.
        filters: the characters to remove (a str, or a list of single characters).
        lower: whether to lowercase the text first.
        split: the separator between words; any non-empty str, several characters
            included.

    Example:
        >>> text_to_word_sequence("The cat, the HAT.\\nDon't!")
        ['the', 'cat', 'the', 'hat', "don't"]
        >>> text_to_word_sequence("red--green,blue", filters=",", split="--")
        ['red', 'green', 'blue']
    """
    caller = "text_to_word_sequence"
    return _words(_check_text(text, caller), _translation(filters, split, caller), lower, split)


def _stable_index(word: str, n: int) -> int:
    """``word``'s index in ``[1, n - 1]`` from the MD5 digest of its UTF-8 bytes."""
    digest = hashlib.md5(word.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % (n - 1) + 1


def one_hot(
    text: str,
    n: int,
    filters: str | Collection[str] = _BASE_FILTER,
    lower: bool = True,
    split: str = " ",
) -> list[int]:
    """The index in ``[1, n - 1]`` of each word of ``text`` (words as
    ``text_to_word_sequence`` finds them), by hashing: two words may share an index.

    A word's index is the first 8 bytes of the MD5 digest of its UTF-8 encoding, read
    as a big-endian integer, modulo ``n - 1``, plus 1. It is the same in every process
    and on every machine (Keras 0.3 used Python's ``hash()``, which Python 3 salts
    differently in each process).

    Args:
        text: the text.
        n: one more than the largest index (an int >= 2); index 0 is never used.
        filters, lower, split: as ``text_to_word_sequence``.

    Example:
        >>> one_hot("The cat sat on the mat.", 10)
        [5, 5, 3, 8, 5, 6]
    """
    caller = "one_hot"
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"one_hot: n must be an int >= 2 (indices 1 to n - 1), received {n!r}")
    words = _words(_check_text(text, caller), _translation(filters, split, caller), lower, split)
    return [_stable_index(word, int(n)) for word in words]


def _check_nb_words(nb_words: Any, caller: str) -> int | None:
    """``nb_words`` as an int >= 1, or None."""
    if nb_words is None:
        return None
    if isinstance(nb_words, bool) or not isinstance(nb_words, int | np.integer):
        raise TypeError(f"{caller}: nb_words must be None or an int >= 1, received {nb_words!r}")
    if nb_words < 1:
        raise ValueError(f"{caller}: nb_words must be None or an int >= 1, received {nb_words!r}")
    return int(nb_words)


def _items(values: Any, caller: str, expected: str) -> Iterator[Any]:
    """An iterator over ``values``; a single str or bytes (which would otherwise be read
    one character at a time) and a non-iterable are refused, saying ``expected``."""
    single = isinstance(values, str | bytes)
    if not single:
        try:
            return iter(values)
        except TypeError:
            pass
    kind = f"a single {type(values).__name__}" if single else type(values).__name__
    raise TypeError(f"{caller} expects {expected}, received {kind} {_short(values)}")


def _texts(texts: Any, caller: str) -> Iterator[str]:
    """The texts of ``texts`` one by one, each checked to be a str. A single str (which
    would otherwise be read as one text per character) is refused at once."""
    items = _items(texts, caller, "a list (or other iterable) of str")

    def checked() -> Iterator[str]:
        for position, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(
                    f"{caller}: text {position} must be a str, received "
                    f"{type(text).__name__} {_short(text)}"
                )
            yield text

    return checked()


def _sequences(sequences: Any, caller: str) -> list[np.ndarray]:
    """Each sequence of ``sequences`` as a 1-D array of integer word indices >= 0."""
    items = list(_items(sequences, caller, "a list of sequences of word indices"))
    rows: list[np.ndarray] = []
    for position, sequence in enumerate(items):
        row = None if isinstance(sequence, str | bytes) else np.asarray(sequence)
        if row is None or row.ndim != 1:
            raise TypeError(
                f"{caller}: sequence {position} must be a list of word indices, received "
                f"{type(sequence).__name__} {_short(sequence)}"
            )
        if row.size == 0:
            rows.append(np.zeros(0, dtype=np.int64))
            continue
        if row.dtype.kind not in "iu":
            raise TypeError(
                f"{caller}: word indices must be integers, sequence {position} is "
                f"{_short(sequence)} ({row.dtype})"
            )
        if row.min() < 0:
            raise ValueError(
                f"{caller}: word indices must be >= 0, sequence {position} holds {int(row.min())}"
            )
        rows.append(row)
    return rows


class Tokenizer:
    """A vocabulary learnt from texts, which turns texts into sequences of word indices
    and texts or sequences into matrices.

    ``fit_on_texts`` counts the words; the most frequent word gets index 1, the next
    index 2, and so on (index 0 is no word's). Words with equal counts rank in the
    order they first appeared, so the same texts always give the same indices. Only
    indices below ``nb_words``, when it is set, are ever written into a sequence or a
    matrix.

    Args:
        nb_words: None, or an int >= 1: then indices from ``nb_words`` up are left
            out, and matrices have ``nb_words`` columns (else one more than the
            number of words learnt).
        filters: the characters to remove from texts, as ``text_to_word_sequence``.
        lower: whether to lowercase the texts.
        split: the separator between words, any non-empty str.
        char_level: whether each character of a text (as written, neither filtered nor
            lowercased) is a word.

    Attributes:
        word_counts: how many times each word was seen by ``fit_on_texts``.
        word_docs: in how many texts each word was seen.
        word_index: each word's index (1 for the most frequent).
        index_docs: in how many texts (or sequences, after ``fit_on_sequences``) each
            index was seen; tf-idf reads it.
        document_count: the number of texts (or sequences) fitted, which tf-idf reads.

    Example:
        >>> tokenizer = Tokenizer()
        >>> tokenizer.fit_on_texts(["The cat sat.", "The dog sat down."])
        >>> tokenizer.word_index
        {'the': 1, 'sat': 2, 'cat': 3, 'dog': 4, 'down': 5}
        >>> tokenizer.texts_to_sequences(["the dog ran"])
        [[1, 4]]
        >>> tokenizer.texts_to_matrix(["the dog ran"], mode="count")
        array([[0., 1., 0., 0., 1., 0.]])
    """

    def __init__(
        self,
        nb_words: int | None = None,
        filters: str | Collection[str] = _BASE_FILTER,
        lower: bool = True,
        split: str = " ",
        char_level: bool = False,
    ) -> None:
        self.nb_words = _check_nb_words(nb_words, "Tokenizer")
        _translation(filters, split, "Tokenizer")
        self.filters = filters
        self.lower = lower
        self.split = split
        self.char_level = char_level
        self.word_counts: dict[str, int] = {}
        self.word_docs: dict[str, int] = {}
        self.word_index: dict[str, int] = {}
        self.index_docs: dict[int, int] = {}
        self.document_count = 0
        self._texts_fitted = 0

    def _tokenize(self, caller: str) -> Callable[[str], list[str]]:
        """A function from a text to its words under this tokenizer's settings."""
        if self.char_level:
            return list
        table = _translation(self.filters, self.split, caller)
        lower, split = self.lower, self.split
        return lambda text: _words(text, table, lower, split)

    def fit_on_texts(self, texts: Iterable[str]) -> None:
        """Counts the words of ``texts`` (a list of str, or a generator of them) into
        ``word_counts`` and ``word_docs``, and ranks every word seen so far into
        ``word_index``. A second call adds to the counts of the first.

        Example:
            >>> tokenizer = Tokenizer()
            >>> tokenizer.fit_on_texts(iter(["b a b", "a c"]))
            >>> tokenizer.word_counts, tokenizer.word_docs
            ({'b': 2, 'a': 2, 'c': 1}, {'b': 1, 'a': 2, 'c': 1})
            >>> tokenizer.word_index, tokenizer.index_docs, tokenizer.document_count
            ({'b': 1, 'a': 2, 'c': 3}, {1: 1, 2: 2, 3: 1}, 2)
        """
        caller = "Tokenizer.fit_on_texts"
        tokenize = self._tokenize(caller)
        for text in _texts(texts, caller):
            words = tokenize(text)
            self._texts_fitted += 1
            for word in words:
                self.word_counts[word] = self.word_counts.get(word, 0) + 1
            for word in dict.fromkeys(words):
                self.word_docs[word] = self.word_docs.get(word, 0) + 1
        # sorted() is stable: words with equal counts keep their order of first appearance
        ranked = sorted(self.word_counts, key=lambda word: -self.word_counts[word])
        self.word_index = {word: index for index, word in enumerate(ranked, start=1)}
        self.index_docs = {self.word_index[word]: docs for word, docs in self.word_docs.items()}
        self.document_count = self._texts_fitted

    def fit_on_sequences(self, sequences: Iterable[Any]) -> None:
        """Counts in how many of ``sequences`` (lists of word indices) each index
        appears, for ``mode="tfidf"``: ``index_docs`` and ``document_count`` become
        these counts, replacing those of earlier fits.

        Example:
            >>> tokenizer = Tokenizer(nb_words=4)
            >>> tokenizer.fit_on_sequences([[1, 2, 1], [3, 1]])
            >>> tokenizer.index_docs, tokenizer.document_count
            ({1: 2, 2: 1, 3: 1}, 2)
        """
        rows = _sequences(sequences, "Tokenizer.fit_on_sequences")
        index_docs: dict[int, int] = {}
        if rows:
            indices, docs = np.unique(
                np.concatenate([np.unique(row) for row in rows]), return_counts=True
            )
            index_docs = dict(zip(indices.tolist(), docs.tolist(), strict=True))
        self.index_docs = index_docs
        self.document_count = len(rows)

    def _check_fitted(self, caller: str) -> None:
        if not self.word_index and not self._texts_fitted:
            raise ValueError(
                f"{caller}: the tokenizer has no vocabulary (word_index is empty); call "
                f"fit_on_texts first"
            )

    def texts_to_sequences_generator(self, texts: Iterable[str]) -> Iterator[list[int]]:
        """Yields, for each text of ``texts``, the indices of its words, leaving out
        the words not learnt and those whose index is not below ``nb_words``.

        Example:
            >>> tokenizer = Tokenizer(nb_words=3)
            >>> tokenizer.fit_on_texts(["a a a b b c"])
            >>> list(tokenizer.texts_to_sequences_generator(["c b a", "d a"]))
            [[2, 1], [1]]
        """
        return self._text_sequences(texts, "Tokenizer.texts_to_sequences_generator")

    def _text_sequences(self, texts: Iterable[str], caller: str) -> Iterator[list[int]]:
        """What ``texts_to_sequences_generator`` returns, its errors naming ``caller``."""
        nb_words = _check_nb_words(self.nb_words, caller)
        self._check_fitted(caller)
        tokenize = self._tokenize(caller)
        word_index = self.word_index
        checked_texts = _texts(texts, caller)

        def generate() -> Iterator[list[int]]:
            for text in checked_texts:
                sequence = []
                for word in tokenize(text):
                    index = word_index.get(word)
                    if index is not None and (nb_words is None or index < nb_words):
                        sequence.append(index)
                yield sequence

        return generate()

    def texts_to_sequences(self, texts: Iterable[str]) -> list[list[int]]:
        """The list of what ``texts_to_sequences_generator`` yields.

        Example:
            >>> tokenizer = Tokenizer()
            >>> tokenizer.fit_on_texts(["one two two"])
            >>> tokenizer.texts_to_sequences(["two one three", ""])
            [[1, 2], []]
        """
        return list(self._text_sequences(texts, "Tokenizer.texts_to_sequences"))

    def _width(self, caller: str) -> int:
        """The number of columns of a matrix: ``nb_words``, else one more than the
        number of words learnt."""
        nb_words = _check_nb_words(self.nb_words, caller)
        if nb_words is not None:
            return nb_words
        if self.word_index or self._texts_fitted:
            return len(self.word_index) + 1
        raise ValueError(
            f"{caller}: the number of columns is unknown (received nb_words=None and no "
            f"fit_on_texts); pass nb_words to Tokenizer or call fit_on_texts first"
        )

    def _check_mode(self, mode: Any, caller: str) -> None:
        if mode not in MODES:
            names = ", ".join(repr(name) for name in MODES)
            raise ValueError(f"{caller}: mode must be one of {names}, received {mode!r}")
        if mode == "tfidf" and not self.document_count:
            raise ValueError(
                f"{caller}: mode 'tfidf' needs document counts (document_count is 0); call "
                f"fit_on_texts or fit_on_sequences first"
            )

    def _matrix(self, sequences: Any, mode: str, caller: str) -> np.ndarray:
        self._check_mode(mode, caller)
        width = self._width(caller)
        rows = _sequences(sequences, caller)
        matrix = np.zeros((len(rows), width))
        idf = np.zeros(0)
        if mode == "tfidf":
            docs = np.zeros(width)
            for index, count in self.index_docs.items():
                if 0 <= index < width:
                    docs[index] = count
            idf = np.log(1.0 + self.document_count / (1.0 + docs))
        for position, row in enumerate(rows):
            if not row.size:
                continue
            columns, counts = np.unique(row[row < width], return_counts=True)
            if mode == "binary":
                matrix[position, columns] = 1.0
            elif mode == "count":
                matrix[position, columns] = counts
            elif mode == "freq":
                matrix[position, columns] = counts / row.size
            else:
                matrix[position, columns] = (1.0 + np.log(counts)) * idf[columns]
        return matrix

    def sequences_to_matrix(self, sequences: Iterable[Any], mode: str = "binary") -> np.ndarray:
        """A float64 matrix with a row per sequence of ``sequences`` (lists of word
        indices) and a column per index: ``nb_words`` columns, else one more than the
        number of words learnt. Indices not below that are left out.

        Args:
            sequences: lists (or 1-D arrays) of integer word indices >= 0.
            mode: what a row holds for each index of its sequence:

                - ``"binary"``: 1.
                - ``"count"``: how many times it appears.
                - ``"freq"``: that count divided by the length of the sequence.
                - ``"tfidf"``: ``(1 + log(count)) * log(1 + document_count /
                  (1 + index_docs[index]))``, which needs a fit first. (Keras 0.3 took
                  ``log(count / length)`` as the term frequency, a negative weight;
                  this is the weighting later Keras versions use.)

        Example:
            >>> Tokenizer(nb_words=4).sequences_to_matrix([[1, 3, 3, 9], []], mode="count")
            array([[0., 1., 0., 2.],
                   [0., 0., 0., 0.]])
        """
        return self._matrix(sequences, mode, "Tokenizer.sequences_to_matrix")

    def texts_to_matrix(self, texts: Iterable[str], mode: str = "binary") -> np.ndarray:
        """``sequences_to_matrix`` of ``texts_to_sequences(texts)``.

        Example:
            >>> tokenizer = Tokenizer()
            >>> tokenizer.fit_on_texts(["a b", "a c"])
            >>> tokenizer.texts_to_matrix(["a a b", "c"], mode="freq")
            array([[0.        , 0.66666667, 0.33333333, 0.        ],
                   [0.        , 0.        , 0.        , 1.        ]])
        """
        caller = "Tokenizer.texts_to_matrix"
        self._check_mode(mode, caller)
        self._width(caller)
        sequences = list(self._text_sequences(texts, caller))
        return self._matrix(sequences, mode, caller)
