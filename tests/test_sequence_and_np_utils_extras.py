"""numlayers.preprocessing.sequence's sampling table and skip-grams, and np_utils'
normalize and log losses, against hand computations and plain loops."""

from __future__ import annotations

import math
import random
import warnings
from collections import Counter

import numpy as np
import pytest

import numlayers.random
from numlayers.preprocessing.sequence import make_sampling_table, skipgrams
from numlayers.utils.np_utils import binary_logloss, multiclass_logloss, normalize

#: word indices with zeros (no word) inside, at the start and between repeats
SEQUENCE = [3, 0, 5, 1, 2, 0, 7, 4, 4, 6, 0, 2, 5]
VOCABULARY = 8


def window_pairs(sequence: list[int], window_size: int) -> Counter[tuple[int, int]]:
    """Every (word, context) at most ``window_size`` places apart, neither of them 0."""
    pairs: Counter[tuple[int, int]] = Counter()
    for i, word in enumerate(sequence):
        for j, context in enumerate(sequence):
            if i != j and abs(i - j) <= window_size and word != 0 and context != 0:
                pairs[(word, context)] += 1
    return pairs


def split(couples: list[list[int]], labels: list[int]) -> tuple[list[tuple[int, int]], ...]:
    """The couples labelled 1 and those labelled 0."""
    assert len(couples) == len(labels)
    assert set(labels) <= {0, 1}
    positives = [(a, b) for (a, b), label in zip(couples, labels, strict=True) if label == 1]
    negatives = [(a, b) for (a, b), label in zip(couples, labels, strict=True) if label == 0]
    return positives, negatives


# make_sampling_table


def test_sampling_table_follows_the_zipf_formula() -> None:
    for factor in (1e-5, 1e-3):
        expected = []
        for index in range(12):
            rank = max(index, 1)
            inverse = rank * (math.log(rank) + 0.577) + 0.5 - 1 / (12 * rank)
            expected.append(min(1.0, math.sqrt(factor * inverse)))
        np.testing.assert_allclose(make_sampling_table(12, factor), expected, rtol=1e-12)


def test_sampling_table_values_and_cap() -> None:
    # rank 1: 0.577 + 0.5 - 1/12 = 0.99366..., sqrt(1e-5 * that) = 0.0031522...
    np.testing.assert_allclose(
        make_sampling_table(3), [0.00315225, 0.00315225, 0.00547597], rtol=1e-6
    )
    assert make_sampling_table(3).dtype == np.float64
    # large factors cap at 1 from rank 2 on; ranks 0 and 1 stay at sqrt(0.99366...)
    capped = make_sampling_table(5, sampling_factor=1.0)
    np.testing.assert_array_equal(capped[2:], np.ones(3))
    np.testing.assert_allclose(capped[:2], math.sqrt(0.577 + 0.5 - 1 / 12), rtol=1e-12)
    assert make_sampling_table(0).shape == (0,)
    with pytest.raises(ValueError, match="make_sampling_table: size .* received -1"):
        make_sampling_table(-1)
    with pytest.raises(ValueError, match="make_sampling_table: sampling_factor .* received 0"):
        make_sampling_table(3, sampling_factor=0)


# skipgrams


def test_skipgrams_by_hand_without_randomness() -> None:
    couples, labels = skipgrams(
        [1, 2, 0, 3], vocabulary_size=4, window_size=2, negative_samples=0.0, shuffle=False
    )
    assert couples == [[1, 2], [2, 1], [2, 3], [3, 2]]
    assert labels == [1, 1, 1, 1]
    assert skipgrams([], vocabulary_size=4, seed=0) == ([], [])
    assert skipgrams([0, 0, 0], vocabulary_size=4, seed=0) == ([], [])


@pytest.mark.parametrize("window_size", [1, 2, 4, 50])
def test_positive_couples_are_exactly_the_window_pairs(window_size: int) -> None:
    couples, labels = skipgrams(SEQUENCE, VOCABULARY, window_size=window_size, seed=11)
    positives, negatives = split(couples, labels)
    # shuffled, yet every couple labelled 1 is a window pair, each as often as it occurs
    assert Counter(positives) == window_pairs(SEQUENCE, window_size)
    assert all(word != 0 and context != 0 for word, context in positives)
    assert len(negatives) == len(positives)
    assert all(1 <= context < VOCABULARY for _, context in negatives)


def test_negative_count_truncates_like_keras() -> None:
    # 4 positive couples; 0.9 * 4 = 3.6 gives 3 negatives (int(), as Keras 0.3)
    for negative_samples, expected in ((0.9, 3), (0.5, 2), (2.0, 8), (0.0, 0), (0.2, 0)):
        couples, labels = skipgrams(
            [1, 2, 3], 4, window_size=1, negative_samples=negative_samples, seed=0
        )
        positives, negatives = split(couples, labels)
        assert len(positives) == 4
        assert len(negatives) == expected


def test_negatives_reuse_the_positive_words_in_turn() -> None:
    couples, labels = skipgrams(
        SEQUENCE, VOCABULARY, window_size=2, negative_samples=2.0, shuffle=False, seed=5
    )
    positives, negatives = split(couples, labels)
    # unshuffled: the positives come first, in order of the sequence
    assert labels == [1] * len(positives) + [0] * len(negatives)
    assert [tuple(c) for c in couples[: len(positives)]] == positives
    first_words = Counter(word for word, _ in positives)
    # two negatives per positive: each first word of a positive comes back twice
    assert Counter(word for word, _ in negatives) == first_words + first_words


def test_same_seed_same_pairs_and_different_seeds_differ() -> None:
    long_sequence = [(7 * i) % 50 for i in range(200)]
    first = skipgrams(long_sequence, 50, seed=42)
    assert skipgrams(long_sequence, 50, seed=42) == first
    assert skipgrams(long_sequence, 50, seed=np.random.default_rng(42)) == first
    assert skipgrams(long_sequence, 50, seed=43) != first
    table = make_sampling_table(50, sampling_factor=0.05)
    assert skipgrams(long_sequence, 50, sampling_table=table, seed=1) == skipgrams(
        long_sequence, 50, sampling_table=table, seed=1
    )


def test_global_random_states_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    numpy_state = np.random.get_state()  # noqa: NPY002
    python_state = random.getstate()
    numlayers_generator = np.random.default_rng(7)
    monkeypatch.setattr(numlayers.random, "_global_generator", numlayers_generator)
    before = numlayers_generator.bit_generator.state
    skipgrams(SEQUENCE, VOCABULARY, sampling_table=np.full(VOCABULARY, 0.5), seed=3)
    assert numlayers_generator.bit_generator.state == before
    # seed=None draws from numlayers' generator, seeded 7 here
    assert skipgrams(SEQUENCE, VOCABULARY) == skipgrams(SEQUENCE, VOCABULARY, seed=7)
    after_numpy = np.random.get_state()  # noqa: NPY002
    assert after_numpy[0] == numpy_state[0]
    np.testing.assert_array_equal(after_numpy[1], numpy_state[1])
    assert after_numpy[2:] == numpy_state[2:]
    assert random.getstate() == python_state


def test_categorical_labels_are_one_hot() -> None:
    couples, labels = skipgrams(SEQUENCE, VOCABULARY, window_size=2, categorical=True, seed=9)
    plain_couples, plain_labels = skipgrams(SEQUENCE, VOCABULARY, window_size=2, seed=9)
    assert couples == plain_couples
    assert labels == [[1 - label, label] for label in plain_labels]
    assert {tuple(label) for label in labels} == {(0, 1), (1, 0)}


def test_sampling_table_drops_words_of_probability_zero() -> None:
    table = np.ones(VOCABULARY)
    table[[2, 5]] = 0.0
    for seed in range(5):
        couples, labels = skipgrams(
            SEQUENCE, VOCABULARY, window_size=2, sampling_table=table, seed=seed
        )
        positives, _ = split(couples, labels)
        expected = window_pairs(SEQUENCE, 2)
        # 2 and 5 are never kept as the first word, still seen as context
        assert Counter(positives) == Counter(
            {pair: n for pair, n in expected.items() if pair[0] not in (2, 5)}
        )
        assert any(context in (2, 5) for _, context in positives)
    assert skipgrams(SEQUENCE, VOCABULARY, sampling_table=np.zeros(VOCABULARY), seed=0) == (
        [],
        [],
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"vocabulary_size": 1}, "skipgrams: vocabulary_size must be an int >= 2, received 1"),
        ({"vocabulary_size": 8.0}, "vocabulary_size must be an int >= 2, received 8.0"),
        ({"window_size": 0}, "skipgrams: window_size must be an int >= 1, received 0"),
        ({"window_size": 1.5}, "window_size must be an int >= 1, received 1.5"),
        ({"negative_samples": -1.0}, "skipgrams: negative_samples .* >= 0, received -1.0"),
        ({"negative_samples": float("nan")}, "negative_samples .* received nan"),
        ({"sampling_table": np.ones(5)}, "skipgrams: sampling_table .* received shape \\(5,\\)"),
        ({"sequence": [1, 8]}, "skipgrams: word indices .* 0 to .* 7, received 1 to 8"),
        ({"sequence": [[1, 2]]}, "skipgrams: sequence must be one-dimensional"),
        ({"seed": -1}, "seed must be None"),
    ],
)
def test_skipgrams_rejects_bad_arguments(arguments: dict[str, object], message: str) -> None:
    call: dict[str, object] = {"sequence": SEQUENCE, "vocabulary_size": VOCABULARY, **arguments}
    with pytest.raises(ValueError, match=message):
        skipgrams(**call)  # type: ignore[arg-type]


# normalize


def test_normalize_by_hand() -> None:
    np.testing.assert_allclose(
        normalize(np.array([[3.0, 4.0], [1.0, 0.0]])), [[0.6, 0.8], [1.0, 0.0]]
    )
    np.testing.assert_allclose(
        normalize(np.array([[3.0, 1.0], [4.0, 0.0]]), axis=0), [[0.6, 1.0], [0.8, 0.0]]
    )
    np.testing.assert_allclose(normalize(np.array([[1.0, -3.0]]), order=1), [[0.25, -0.75]])
    # a vector comes back as one row, as in Keras
    np.testing.assert_allclose(normalize([6, 8]), [[0.6, 0.8]])


def test_normalize_leaves_zero_rows_as_zeros() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = normalize(np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
        columns = normalize(np.zeros((2, 3)), axis=0)
    np.testing.assert_array_equal(result, [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(columns, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="normalize: axis 2 is out of range"):
        normalize(np.ones((2, 2)), axis=2)


# log losses

#: the clipped probability of a sure wrong answer, and of a sure right one
LOW, HIGH = 1e-15, 1 - 1e-15


def test_binary_logloss_by_hand() -> None:
    expected = -(math.log(0.8) + math.log(1 - 0.3)) / 2
    assert binary_logloss([0.8, 0.3], [1, 0]) == pytest.approx(expected, rel=1e-12)
    assert binary_logloss(np.array([[0.8], [0.3]]), [1, 0]) == pytest.approx(expected, rel=1e-12)
    assert binary_logloss(np.array([[0.8], [0.3]]), np.array([[1], [0]])) == pytest.approx(
        expected, rel=1e-12
    )
    columns = binary_logloss(np.array([[0.8, 0.5], [0.3, 0.5]]), np.array([[1, 0], [0, 1]]))
    np.testing.assert_allclose(columns, [expected, math.log(2)], rtol=1e-12)


def test_binary_logloss_clips_at_zero_and_one() -> None:
    # sure and wrong: -log(1e-15) for p = 0 with y = 1, -log(1 - (1 - 1e-15)) for p = 1, y = 0
    wrong = -(math.log(LOW) + math.log(1 - HIGH)) / 2
    assert binary_logloss([0.0, 1.0], [1, 0]) == pytest.approx(wrong, rel=1e-12)
    assert 34 < wrong < 35
    right = -(math.log(HIGH) + math.log(1 - LOW)) / 2
    assert binary_logloss([1.0, 0.0], [1, 0]) == pytest.approx(right, rel=1e-9)
    with pytest.raises(ValueError, match="binary_logloss: probabilities of shape"):
        binary_logloss([0.5, 0.5, 0.5], [1, 0])


def test_multiclass_logloss_by_hand_with_classes_from_one() -> None:
    probabilities = [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]
    expected = -(math.log(0.7) + math.log(0.6)) / 2
    assert multiclass_logloss(probabilities, [2, 1]) == pytest.approx(expected, rel=1e-12)
    assert multiclass_logloss(probabilities, [3, 3]) == pytest.approx(-math.log(0.1), rel=1e-12)
    assert multiclass_logloss([[0.0, 1.0]], [1]) == pytest.approx(-math.log(LOW), rel=1e-12)
    assert multiclass_logloss([[0.0, 1.0]], [2]) == pytest.approx(-math.log(HIGH), rel=1e-9)
    with pytest.raises(ValueError, match="classes are numbered 1 to 3, received 0 to 2"):
        multiclass_logloss(probabilities, [0, 2])
    with pytest.raises(ValueError, match="1 classes for 2 rows"):
        multiclass_logloss(probabilities, [1])
