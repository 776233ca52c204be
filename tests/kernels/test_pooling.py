"""Max pooling kernels at the edges of their contract, on both devices: ties go to the
first position of a window, a NaN wins its window, infinities of both signs do not
pass for a NaN, and overlapping windows add their gradients. (Every layer's values and
gradients are checked against NumPy by its catalogue rows.)"""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.kernels import build_family
from numlayers.kernels.pooling import PoolWindow

#: 1-D windows of 3 at stride 1 over 4 steps (the kernels' rows; one column, one
#: feature): every window overlaps the next
OVERLAPPING = PoolWindow(3, 1, 1, 1, 0, 0)


def max_pool(device, steps, window=OVERLAPPING):
    """``(out, argmax, grad_x)`` of max pooling ``steps`` (float32), with the gradient of
    ``sum(out * (1, 10, 100, ...))``, on the host."""
    operations = build_family("pooling", device, np.dtype(np.float32))
    x = device.asarray(np.asarray(steps, np.float32).reshape(1, -1, 1, 1))
    count = len(steps) - window.pool_rows + 1
    out = device.empty((1, count, 1, 1), np.float32)
    argmax = device.empty((1, count, 1, 1), np.int32)
    operations["max_pool_forward"](x, window, out, argmax)
    grad_out = device.asarray((10.0 ** np.arange(count, dtype=np.float32)).reshape(out.shape))
    grad_x = device.empty(x.shape, np.float32)
    operations["max_pool_backward"](grad_out, argmax, window, grad_x)
    return [device.to_host(a).reshape(-1) for a in (out, argmax, grad_x)]


def test_ties_go_to_the_first_position_of_each_window(device):
    out, argmax, grad_x = max_pool(device, [2.0, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(out, [2.0, 2.0])
    np.testing.assert_array_equal(argmax, [0, 0])
    np.testing.assert_array_equal(grad_x, [1.0, 10.0, 0.0, 0.0])


def test_overlapping_windows_add_their_gradients_at_a_shared_maximum(device):
    out, argmax, grad_x = max_pool(device, [0.0, 5.0, 1.0, 3.0])
    np.testing.assert_array_equal(out, [5.0, 5.0])
    np.testing.assert_array_equal(argmax, [1, 0])
    np.testing.assert_array_equal(grad_x, [0.0, 11.0, 0.0, 0.0])


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the simulator's inf - inf
@pytest.mark.parametrize(
    ("steps", "maxima", "argmax"),
    [
        ([1.0, np.nan, 7.0, np.nan], [np.nan, np.nan], [1, 0]),  # the first NaN wins
        ([-np.inf, np.inf, 2.0, -np.inf], [np.inf, np.inf], [1, 0]),  # inf - inf is no NaN
    ],
    ids=["nan", "infinities"],
)
def test_a_nan_wins_its_window_and_infinities_compare_as_numbers(device, steps, maxima, argmax):
    out, found, _ = max_pool(device, steps)
    np.testing.assert_array_equal(out, maxima)
    np.testing.assert_array_equal(found, argmax)


def test_padding_never_wins_even_against_negative_values(device):
    # "same" windows of 3 over 2 steps: one padded step before, none after
    window = PoolWindow(3, 1, 1, 1, 1, 0)
    operations = build_family("pooling", device, np.dtype(np.float32))
    x = device.asarray(np.array([-3.0, -5.0], np.float32).reshape(1, 2, 1, 1))
    out = device.empty((1, 2, 1, 1), np.float32)
    argmax = device.empty((1, 2, 1, 1), np.int32)
    operations["max_pool_forward"](x, window, out, argmax)
    np.testing.assert_array_equal(device.to_host(out).reshape(-1), [-3.0, -3.0])
    np.testing.assert_array_equal(device.to_host(argmax).reshape(-1), [1, 0])
