"""Shape arithmetic in Python integers: sizes that wrap NumPy's int64, or that no memory
holds, get an error naming the layer instead of a wrong shape or NumPy's own message."""

from __future__ import annotations

import pytest

from numlayers.layers import Dense, Flatten, Reshape


def test_reshape_to_a_size_that_wraps_at_2_to_the_64_is_refused():
    # 3 * 6148914691236517206 is 2 modulo 2**64: NumPy's product said it fits 2 values
    with pytest.raises(ValueError, match="Reshape layer .* more than an array holds"):
        Reshape((3, 6148914691236517206), input_shape=(2,))


def test_flatten_of_more_elements_than_an_array_holds_is_refused():
    with pytest.raises(ValueError, match="Flatten .* more elements than an array can hold"):
        Flatten(input_shape=(2**32, 2**32))


def test_weights_larger_than_memory_name_the_layer():
    with pytest.raises(ValueError, match="Dense layer .* larger than an array can be"):
        Dense(2**40, input_shape=(2**30,))
    with pytest.raises(MemoryError, match="Dense layer .* no memory for its weights"):
        Dense(2**20, input_shape=(2**20,))
