"""Shapes of sliding windows, shared by the convolution and pooling layers.

A window of ``size`` taps spaced ``dilation`` apart covers ``(size - 1) * dilation + 1``
input positions (its *extent*) and moves ``stride`` positions at a time. The border
modes say where it may stand:

- ``"valid"``: only where it lies wholly inside the input, no padding;
  ``(length - extent) // stride + 1`` outputs.
- ``"same"``: ``ceil(length / stride)`` outputs (the input's length at stride 1); the
  zeros needed are split with the smaller half before the input and the larger after
  it, so an even window (2, 4, ...) at stride 1 pads one more at the end than at the
  start, as TensorFlow and PyTorch's ``padding="same"`` do.
- ``"full"``: every position where the window touches the input, ``extent - 1``
  zeros on each side; ``(length + extent - 2) // stride + 1`` outputs.

``dim_ordering`` is Keras 0.3's: ``"th"`` puts channels first, ``(samples, channels,
rows, cols)``; ``"tf"`` last, ``(samples, rows, cols, channels)``.
"""

from __future__ import annotations

import numbers
from typing import Any

BORDER_MODES = ("valid", "same", "full")
DIM_ORDERINGS = ("th", "tf")


def window_extent(size: int, dilation: int = 1) -> int:
    """Input positions a window of ``size`` taps, ``dilation`` apart, covers."""
    return (size - 1) * dilation + 1


def output_length(
    length: int | None, size: int, border_mode: str, stride: int, dilation: int = 1
) -> int | None:
    """Outputs along an axis of ``length`` inputs (None stays None: unknown)."""
    if length is None:
        return None
    extent = window_extent(size, dilation)
    if border_mode == "valid":
        return max(0, (length - extent) // stride + 1) if length >= extent else 0
    if border_mode == "same":
        return (length + stride - 1) // stride
    if border_mode == "full":
        return (length + extent - 2) // stride + 1
    raise ValueError(f"unknown border_mode {border_mode!r}; expected one of {BORDER_MODES}")


def padding_before(length: int, size: int, border_mode: str, stride: int, dilation: int = 1) -> int:
    """Zeros before the first input along an axis (the window's first position starts
    this many positions before input 0)."""
    extent = window_extent(size, dilation)
    if border_mode == "valid":
        return 0
    if border_mode == "full":
        return extent - 1
    outputs = (length + stride - 1) // stride
    total = max(0, (outputs - 1) * stride + extent - length)
    return total // 2


def check_border_mode(value: Any, owner: str) -> str:
    """``value`` if it is a border mode, else a ValueError naming ``owner``."""
    if value not in BORDER_MODES:
        raise ValueError(f"{owner}: border_mode must be one of {BORDER_MODES}, received {value!r}")
    return str(value)


def check_dim_ordering(value: Any, owner: str) -> str:
    """``value`` if it is a dim ordering, else a ValueError naming ``owner``."""
    if value not in DIM_ORDERINGS:
        raise ValueError(
            f"{owner}: dim_ordering must be 'th' (channels first) or 'tf' (channels last), "
            f"received {value!r}"
        )
    return str(value)


def positive_ints(value: Any, count: int, what: str, owner: str) -> tuple[int, ...]:
    """``value`` (an int, or a sequence of ``count`` ints) as ``count`` positive ints."""

    def is_positive_int(n: Any) -> bool:
        return isinstance(n, numbers.Integral) and not isinstance(n, bool) and int(n) >= 1

    items = (value,) * count if is_positive_int(value) else value
    try:
        found = tuple(items)
    except TypeError:
        found = ()
    if len(found) != count or not all(is_positive_int(n) for n in found):
        wanted = "a positive int" if count == 1 else f"{count} positive ints"
        raise ValueError(f"{owner}: {what} must be {wanted}, received {value!r}")
    return tuple(int(n) for n in found)
