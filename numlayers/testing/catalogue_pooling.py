"""Catalogue rows of the pooling, upsampling and zero-padding layers.

The references work on channels-last image batches ``(samples, rows, cols, channels)``
(a sequence is one column wide, a channels-first batch is transposed there and back),
with explicit loops over the output positions and the window bounds computed here
from the border mode, independently of :mod:`numlayers.layers.spatial`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from numlayers.layers import (
    AveragePooling1D,
    AveragePooling2D,
    MaxPooling1D,
    MaxPooling2D,
    UpSampling1D,
    UpSampling2D,
    ZeroPadding1D,
    ZeroPadding2D,
)
from numlayers.testing.catalogue import LayerCase, Reference

Images = Callable[[np.ndarray], np.ndarray]


def _in_layout(layout: str, function: Images) -> Reference:
    """``function`` of channels-last images, applied to inputs in ``layout``: ``"1d"``
    sequences, ``"th"`` or ``"tf"`` image batches."""

    def reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        if layout == "1d":
            return function(x[:, :, None, :])[:, :, 0, :]
        if layout == "th":
            return function(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        return function(x)

    return reference


def _starts(length: int, pool: int, stride: int, border_mode: str) -> list[int]:
    """Where each window starts along an axis (negative: in the padding before)."""
    if border_mode == "valid":
        count = (length - pool) // stride + 1
        return [k * stride for k in range(count)]
    count = -(-length // stride)
    padding = max(0, (count - 1) * stride + pool - length)
    return [k * stride - padding // 2 for k in range(count)]


def _pool(reduce: str, pool: tuple[int, int], strides: tuple[int, int], border_mode: str) -> Images:
    """Max or mean over each window's input positions (padding is no position)."""

    def function(x: np.ndarray) -> np.ndarray:
        row_starts = _starts(x.shape[1], pool[0], strides[0], border_mode)
        col_starts = _starts(x.shape[2], pool[1], strides[1], border_mode)
        out = np.empty((x.shape[0], len(row_starts), len(col_starts), x.shape[3]))
        for r, top in enumerate(row_starts):
            for c, left in enumerate(col_starts):
                window = x[:, max(top, 0) : top + pool[0], max(left, 0) : left + pool[1], :]
                out[:, r, c, :] = (
                    window.max(axis=(1, 2)) if reduce == "max" else window.mean((1, 2))
                )
        return out

    return function


def _upsample(size: tuple[int, int]) -> Images:
    def function(x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], x.shape[1] * size[0], x.shape[2] * size[1], x.shape[3]))
        for r in range(out.shape[1]):
            for c in range(out.shape[2]):
                out[:, r, c, :] = x[:, r // size[0], c // size[1], :]
        return out

    return function


def _zero_pad(padding: tuple[int, int]) -> Images:
    def function(x: np.ndarray) -> np.ndarray:
        rows, cols = x.shape[1], x.shape[2]
        out = np.zeros((x.shape[0], rows + 2 * padding[0], cols + 2 * padding[1], x.shape[3]))
        out[:, padding[0] : padding[0] + rows, padding[1] : padding[1] + cols, :] = x
        return out

    return function


def _case(
    case_id: str, make: Callable[..., Any], shape: tuple[int, ...], reference: Reference
) -> LayerCase:
    """A row with the sample's own size as the layer's input shape (uniform samples,
    so no two values of a max window tie, as the finite differences need)."""
    return LayerCase(case_id, lambda **kw: make(input_shape=shape[1:], **kw), shape, reference)


def pooling_cases() -> list[LayerCase]:
    # (id, class, arguments, sample shape, layout, (pool, strides, border mode))
    pooling: list[tuple[str, type, dict[str, Any], tuple[int, ...], str, Any]] = [
        # odd steps: the last is in no window
        ("MaxPooling1D-defaults", MaxPooling1D, {}, (2, 5, 3), "1d", ((2, 1), (2, 1), "valid")),
        (
            "MaxPooling1D-3-stride2-same",  # overlapping windows, padding at both ends
            MaxPooling1D,
            {"pool_length": 3, "stride": 2, "border_mode": "same"},
            (2, 6, 2),
            "1d",
            ((3, 1), (2, 1), "same"),
        ),
        (
            "AveragePooling1D-3-stride1-same",
            AveragePooling1D,
            {"pool_length": 3, "stride": 1, "border_mode": "same"},
            (2, 4, 2),
            "1d",
            ((3, 1), (1, 1), "same"),
        ),
        (  # a remainder along both axes
            "MaxPooling2D-th-defaults",
            MaxPooling2D,
            {},
            (2, 2, 5, 4),
            "th",
            ((2, 2), (2, 2), "valid"),
        ),
        (  # overlapping rows, windows apart along the columns
            "MaxPooling2D-tf-2x3-strides1x4",
            MaxPooling2D,
            {"pool_size": (2, 3), "strides": (1, 4), "dim_ordering": "tf"},
            (2, 4, 7, 2),
            "tf",
            ((2, 3), (1, 4), "valid"),
        ),
        (
            "MaxPooling2D-th-3x3-strides2-same",
            MaxPooling2D,
            {"pool_size": (3, 3), "strides": (2, 2), "border_mode": "same"},
            (2, 2, 5, 4),
            "th",
            ((3, 3), (2, 2), "same"),
        ),
        (
            "AveragePooling2D-tf-3x2-strides2x1-same",
            AveragePooling2D,
            {"pool_size": (3, 2), "strides": (2, 1), "border_mode": "same", "dim_ordering": "tf"},
            (2, 5, 3, 2),
            "tf",
            ((3, 2), (2, 1), "same"),
        ),
        (  # 2 x 2 windows clipped at the last row and column (the CPU's border paths)
            "AveragePooling2D-th-same",
            AveragePooling2D,
            {"border_mode": "same"},
            (2, 2, 5, 5),
            "th",
            ((2, 2), (2, 2), "same"),
        ),
    ]
    cases = []
    for case_id, cls, arguments, shape, layout, (pool, strides, border_mode) in pooling:
        reduce = "max" if cls in (MaxPooling1D, MaxPooling2D) else "mean"
        cases.append(
            _case(
                case_id,
                lambda cls=cls, arguments=arguments, **kw: cls(**arguments, **kw),
                shape,
                _in_layout(layout, _pool(reduce, pool, strides, border_mode)),
            )
        )
    cases += [
        _case(
            "UpSampling1D-length3",
            lambda **kw: UpSampling1D(length=3, **kw),
            (2, 3, 2),
            _in_layout("1d", _upsample((3, 1))),
        ),
        _case(
            "UpSampling2D-th-size2x3",
            lambda **kw: UpSampling2D(size=(2, 3), **kw),
            (2, 2, 2, 3),
            _in_layout("th", _upsample((2, 3))),
        ),
        _case(
            "ZeroPadding1D-padding2",
            lambda **kw: ZeroPadding1D(padding=2, **kw),
            (2, 3, 2),
            _in_layout("1d", _zero_pad((2, 0))),
        ),
        _case(
            "ZeroPadding2D-th-padding1x2",
            lambda **kw: ZeroPadding2D(padding=(1, 2), **kw),
            (2, 2, 3, 2),
            _in_layout("th", _zero_pad((1, 2))),
        ),
        _case(
            "ZeroPadding2D-tf-defaults",
            lambda **kw: ZeroPadding2D(dim_ordering="tf", **kw),
            (2, 3, 2, 2),
            _in_layout("tf", _zero_pad((1, 1))),
        ),
    ]
    return cases
