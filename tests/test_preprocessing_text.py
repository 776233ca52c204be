"""numlayers.preprocessing.text: words, hashed indices and the Tokenizer of Keras 0.3,
with its unstable hash, negative tf-idf and one-character split put right."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from numlayers.preprocessing import text as text_module
from numlayers.preprocessing.text import (
    Tokenizer,
    base_filter,
    one_hot,
    text_to_word_sequence,
)

#: the texts of Keras 0.3's own tokenizer test
TEXTS = [
    "The cat sat on the mat.",
    "The dog sat on the log.",
    "Dogs and cats living together.",
]
#: their words by count (the: 4; sat, on: 2; the rest 1), equal counts in order of
#: first appearance
RANKED = ["the", "sat", "on", "cat", "mat", "dog", "log", "dogs", "and", "cats", "living"]
RANKED += ["together"]


def fitted(nb_words: int | None = None) -> Tokenizer:
    tokenizer = Tokenizer(nb_words=nb_words)
    tokenizer.fit_on_texts(TEXTS)
    return tokenizer


# ---------------------------------------------------------------- words


def test_base_filter_keeps_apostrophes_and_removes_punctuation_tabs_newlines() -> None:
    filters = base_filter()
    assert "'" not in filters
    for character in '.,!?;:-()[]{}"#\t\n':
        assert character in filters
    assert " " not in filters and "a" not in filters


def test_text_to_word_sequence_lowers_filters_and_drops_empty_words() -> None:
    text = "The cat,  sat.\tOn\nthe MAT! Don't"
    assert text_to_word_sequence(text) == ["the", "cat", "sat", "on", "the", "mat", "don't"]
    assert text_to_word_sequence("The MAT.", lower=False) == ["The", "MAT"]
    assert text_to_word_sequence("a.b,c", filters=",") == ["a.b", "c"]
    assert text_to_word_sequence("a.b,c", filters=[",", "."]) == ["a", "b", "c"]
    assert text_to_word_sequence("") == []


def test_split_on_another_character() -> None:
    # split by "," only: spaces stay inside words, the filtered "." becomes a ","
    assert text_to_word_sequence("big cat,red.dog", split=",") == ["big cat", "red", "dog"]


def test_split_longer_than_one_character() -> None:
    # Keras 0.3 built str.maketrans(filters, split * len(filters)), which fails when
    # split is longer than one character
    words = text_to_word_sequence("a--b, c--d", filters=",", split="--")
    assert words == ["a", "b", " c", "d"]
    tokenizer = Tokenizer(filters="!", split=" | ")
    tokenizer.fit_on_texts(["x | y!z | x"])
    assert tokenizer.word_index == {"x": 1, "y": 2, "z": 3}


def test_word_sequence_errors_name_the_function() -> None:
    with pytest.raises(TypeError, match=r"text_to_word_sequence: text must be a str.*int 3"):
        text_to_word_sequence(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"text_to_word_sequence: split .* received ''"):
        text_to_word_sequence("a b", split="")
    with pytest.raises(TypeError, match=r"text_to_word_sequence: filters .* received 'ab'"):
        text_to_word_sequence("a b", filters=["ab"])


# ---------------------------------------------------------------- one_hot


def test_one_hot_indices_lie_in_one_to_n_minus_one() -> None:
    words = [f"word{i}" for i in range(300)]
    indices = one_hot(" ".join(words), 5)
    assert len(indices) == 300
    assert set(indices) == {1, 2, 3, 4}
    assert one_hot("a b c d", 2) == [1, 1, 1, 1]


def test_one_hot_is_the_documented_md5_index() -> None:
    def expected(word: str, n: int) -> int:
        value = int(hashlib.md5(word.encode("utf-8")).hexdigest()[:16], 16)
        return value % (n - 1) + 1

    text = "The cat sat on the mat. Café naïve"
    words = ["the", "cat", "sat", "on", "the", "mat", "café", "naïve"]
    assert one_hot(text, 1000) == [expected(word, 1000) for word in words]
    first = one_hot(text, 1000)
    assert first[0] == first[4]  # "the" twice


def test_one_hot_is_the_same_in_other_processes() -> None:
    # Python's hash() of a str differs between processes with different seeds, so an
    # implementation on hash() would disagree with this process in one of these runs
    text = "the quick brown fox jumps over the lazy dog héllo"
    script = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('text', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.one_hot(sys.argv[2], 100003))\n"
    )
    here = one_hot(text, 100003)
    for seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script, text_module.__file__, text],
            capture_output=True,
            text=True,
            env=environment,
            check=True,
        )
        assert result.stdout.strip() == str(here)


def test_one_hot_errors() -> None:
    for n in (1, 0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match=rf"one_hot: n must be an int >= 2.*{n!r}"):
            one_hot("a b", n)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one_hot: text must be a str, received bytes"):
        one_hot(b"a b", 5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- fitting


def test_fit_on_texts_counts_and_ranks_the_words() -> None:
    tokenizer = fitted()
    assert tokenizer.document_count == 3
    assert tokenizer.word_counts == {
        "the": 4, "cat": 1, "sat": 2, "on": 2, "mat": 1, "dog": 1, "log": 1,
        "dogs": 1, "and": 1, "cats": 1, "living": 1, "together": 1,
    }  # fmt: skip
    assert tokenizer.word_docs == {word: 1 for word in RANKED} | {"the": 2, "sat": 2, "on": 2}
    assert tokenizer.word_index == {word: index for index, word in enumerate(RANKED, 1)}
    assert tokenizer.index_docs == {1: 2, 2: 2, 3: 2} | {index: 1 for index in range(4, 13)}


def test_equal_counts_rank_by_first_appearance() -> None:
    tokenizer = Tokenizer()
    tokenizer.fit_on_texts(["zebra apple", "mango apple zebra", "kiwi"])
    # zebra and apple twice, zebra first; mango and kiwi once, mango first
    assert tokenizer.word_index == {"zebra": 1, "apple": 2, "mango": 3, "kiwi": 4}


def test_fit_on_a_generator_and_fitting_again_adds_up() -> None:
    from_generator = Tokenizer()
    from_generator.fit_on_texts(text for text in TEXTS)
    assert from_generator.word_index == fitted().word_index

    twice = Tokenizer()
    twice.fit_on_texts(TEXTS[:2])
    twice.fit_on_texts(TEXTS[2:])
    reference = fitted()
    assert twice.word_counts == reference.word_counts
    assert twice.word_docs == reference.word_docs
    assert twice.index_docs == reference.index_docs
    # Keras 0.3 set document_count to the last call's texts only (1 here)
    assert twice.document_count == 3


def test_char_level_tokens_are_the_characters_as_written() -> None:
    tokenizer = Tokenizer(char_level=True)
    tokenizer.fit_on_texts(["abca", "A."])
    assert tokenizer.word_index == {"a": 1, "b": 2, "c": 3, "A": 4, ".": 5}
    assert tokenizer.texts_to_sequences(["cab!"]) == [[3, 1, 2]]


def test_fit_on_sequences_counts_documents_per_index() -> None:
    tokenizer = fitted()
    tokenizer.fit_on_sequences([[1, 2, 1], [2, 7], [], np.array([7, 7, 0])])
    assert tokenizer.document_count == 4
    assert tokenizer.index_docs == {0: 1, 1: 1, 2: 2, 7: 2}
    assert tokenizer.word_index == fitted().word_index


# ---------------------------------------------------------------- sequences


def test_texts_to_sequences_keep_indices_below_nb_words() -> None:
    tokenizer = fitted(nb_words=5)  # the 1, sat 2, on 3, cat 4
    assert tokenizer.texts_to_sequences(TEXTS + ["The unicorn sat"]) == [
        [1, 4, 2, 3, 1],
        [1, 2, 3, 1],
        [],
        [1, 2],
    ]
    generator = tokenizer.texts_to_sequences_generator(iter(TEXTS))
    assert not isinstance(generator, list)
    assert next(generator) == [1, 4, 2, 3, 1]
    assert list(generator) == [[1, 2, 3, 1], []]


def test_texts_to_sequences_without_nb_words_keep_every_known_word() -> None:
    assert fitted().texts_to_sequences(["Dogs and cats, together; the end"]) == [[8, 9, 10, 12, 1]]


def test_keras_03_tokenizer_test_runs() -> None:
    tokenizer = fitted(nb_words=10)
    sequences = list(tokenizer.texts_to_sequences_generator(TEXTS))
    assert max(max(sequence) for sequence in sequences if sequence) == 9
    assert min(min(sequence) for sequence in sequences if sequence) == 1
    tokenizer.fit_on_sequences(sequences)
    for mode in ("binary", "count", "tfidf", "freq"):
        assert tokenizer.texts_to_matrix(TEXTS, mode).shape == (3, 10)


# ---------------------------------------------------------------- matrices


def test_sequences_to_matrix_without_a_fit_as_the_reuters_example() -> None:
    tokenizer = Tokenizer(nb_words=6)
    sequences = [[1, 2, 2, 6], [], [0, 5], np.array([3, 3, 3], dtype=np.int32)]
    binary = tokenizer.sequences_to_matrix(sequences, mode="binary")
    assert binary.dtype == np.float64
    np.testing.assert_array_equal(
        binary,
        [[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0]],
    )
    np.testing.assert_array_equal(
        tokenizer.sequences_to_matrix(sequences, mode="count"),
        [[0, 1, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1], [0, 0, 0, 3, 0, 0]],
    )
    # the length divided by includes the index 6 that is left out
    np.testing.assert_allclose(
        tokenizer.sequences_to_matrix(sequences, mode="freq"),
        np.array([[0, 0.25, 0.5, 0, 0, 0], [0.0] * 6, [0.5, 0, 0, 0, 0, 0.5], [0, 0, 0, 1, 0, 0]]),
    )
    padded = np.array([[0, 0, 4, 1], [2, 2, 2, 2]])
    np.testing.assert_array_equal(
        tokenizer.sequences_to_matrix(padded, mode="count"),
        [[2, 1, 0, 0, 1, 0], [0, 0, 4, 0, 0, 0]],
    )


def test_texts_to_matrix_has_a_column_per_word_and_one_more() -> None:
    matrix = fitted().texts_to_matrix(["the cat and the cat", "nothing known"])
    expected = np.zeros((2, 13))
    expected[0, [1, 4, 9]] = 1.0
    np.testing.assert_array_equal(matrix, expected)
    assert fitted(nb_words=4).texts_to_matrix(TEXTS).shape == (3, 4)


def test_tfidf_after_fit_on_texts_is_positive_and_as_documented() -> None:
    matrix = fitted().texts_to_matrix(["the the cat", "together"], mode="tfidf")
    expected = np.zeros((2, 13))
    # 3 documents: "the" is in 2 of them, "cat" and "together" in 1
    expected[0, 1] = (1 + math.log(2)) * math.log(1 + 3 / 3)
    expected[0, 4] = 1 * math.log(1 + 3 / 2)
    expected[1, 12] = 1 * math.log(1 + 3 / 2)
    np.testing.assert_allclose(matrix, expected, rtol=1e-12)
    assert (matrix >= 0).all()


def test_tfidf_after_fit_on_sequences() -> None:
    tokenizer = Tokenizer(nb_words=4)
    tokenizer.fit_on_sequences([[1, 2], [1], [3, 3], [2, 9]])
    matrix = tokenizer.sequences_to_matrix([[1, 3, 3, 9], [0]], mode="tfidf")
    expected = np.zeros((2, 4))
    expected[0, 1] = math.log(1 + 4 / 3)
    expected[0, 3] = (1 + math.log(2)) * math.log(1 + 4 / 2)
    expected[1, 0] = math.log(1 + 4 / 1)  # index 0 was in no fitted sequence
    np.testing.assert_allclose(matrix, expected, rtol=1e-12)


def test_a_tokenizer_pickles() -> None:
    tokenizer = fitted(nb_words=5)
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.word_index == tokenizer.word_index
    assert copy.texts_to_sequences(TEXTS) == tokenizer.texts_to_sequences(TEXTS)


# ---------------------------------------------------------------- errors


def test_a_bad_mode_is_refused_by_name() -> None:
    message = (
        "Tokenizer.sequences_to_matrix: mode must be one of 'binary', 'count', 'freq', "
        "'tfidf', received 'bogus'"
    )
    with pytest.raises(ValueError, match=message):
        Tokenizer(nb_words=3).sequences_to_matrix([[1]], mode="bogus")
    with pytest.raises(ValueError, match=r"Tokenizer.texts_to_matrix: mode .* received 'Binary'"):
        fitted().texts_to_matrix(TEXTS, mode="Binary")


def test_matrix_needs_nb_words_or_a_fit() -> None:
    with pytest.raises(ValueError, match=r"Tokenizer.sequences_to_matrix: .*nb_words=None"):
        Tokenizer().sequences_to_matrix([[1, 2]])
    only_sequences = Tokenizer()
    only_sequences.fit_on_sequences([[1, 2]])
    with pytest.raises(ValueError, match="call fit_on_texts first"):
        only_sequences.sequences_to_matrix([[1, 2]])


def test_tfidf_needs_a_fit() -> None:
    with pytest.raises(ValueError, match=r"Tokenizer.sequences_to_matrix: mode 'tfidf' needs"):
        Tokenizer(nb_words=5).sequences_to_matrix([[1, 2]], mode="tfidf")


def test_texts_must_be_strings() -> None:
    tokenizer = Tokenizer()
    with pytest.raises(TypeError, match=r"Tokenizer.fit_on_texts: text 1 must be a str.*int 5"):
        tokenizer.fit_on_texts(["a b", 5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"Tokenizer.fit_on_texts expects .* single str 'a b'"):
        tokenizer.fit_on_texts("a b")
    with pytest.raises(TypeError, match=r"Tokenizer.fit_on_texts expects .* received int 3"):
        tokenizer.fit_on_texts(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Tokenizer.texts_to_sequences: text 0 .* NoneType"):
        fitted().texts_to_sequences([None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"Tokenizer.texts_to_matrix: text 0 .* bytes"):
        fitted().texts_to_matrix([b"the cat"])  # type: ignore[list-item]


def test_converting_texts_needs_a_vocabulary() -> None:
    with pytest.raises(ValueError, match=r"Tokenizer.texts_to_sequences: .*fit_on_texts first"):
        Tokenizer(nb_words=10).texts_to_sequences(["a b"])


def test_nb_words_must_be_a_positive_int() -> None:
    for bad, error in ((0, ValueError), (-2, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match=rf"Tokenizer: nb_words .* received {bad!r}"):
            Tokenizer(nb_words=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Tokenizer: nb_words .* received '10'"):
        Tokenizer(nb_words="10")  # type: ignore[arg-type]
    assert Tokenizer(nb_words=np.int64(7)).nb_words == 7  # type: ignore[arg-type]
    changed = Tokenizer(nb_words=3)
    changed.nb_words = 0
    with pytest.raises(ValueError, match=r"Tokenizer.sequences_to_matrix: nb_words .* 0"):
        changed.sequences_to_matrix([[1]])


def test_word_indices_must_be_non_negative_integers() -> None:
    tokenizer = Tokenizer(nb_words=5)
    with pytest.raises(ValueError, match=r"sequences_to_matrix: .*>= 0, sequence 1 holds -1"):
        tokenizer.sequences_to_matrix([[1], [2, -1]])
    with pytest.raises(TypeError, match=r"sequences_to_matrix: .*integers, sequence 0 is \[1.5"):
        tokenizer.sequences_to_matrix([[1.5, 2]])
    with pytest.raises(TypeError, match=r"fit_on_sequences: .*integers, sequence 0"):
        tokenizer.fit_on_sequences([["a"]])
    with pytest.raises(TypeError, match=r"fit_on_sequences: .*integers, sequence 0"):
        tokenizer.fit_on_sequences([[True, False]])
    with pytest.raises(ValueError, match=r"fit_on_sequences: .*>= 0, sequence 0 holds -3"):
        tokenizer.fit_on_sequences([[-3]])
    with pytest.raises(TypeError, match=r"sequences_to_matrix: sequence 0 must be a list .*int 1"):
        tokenizer.sequences_to_matrix([1, 2])
    with pytest.raises(TypeError, match=r"sequences_to_matrix expects a list of sequences"):
        tokenizer.sequences_to_matrix("1 2")
