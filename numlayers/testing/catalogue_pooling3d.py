"""Catalogue rows of the 3-D pooling, upsampling and zero-padding layers.

The references work on channels-last volume batches ``(samples, dim1, dim2, dim3,
channels)`` (a channels-first batch is transposed there and back), with explicit loops
over the output positions and each 3-D window taken whole, its bounds computed here
from the border mode: independently of :mod:`numlayers.layers.spatial` and of the
layers' split of a 3-D pass into two kernel calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from numlayers.layers import AveragePooling3D, MaxPooling3D, UpSampling3D, ZeroPadding3D
from numlayers.testing.catalogue import LayerCase, Reference
from numlayers.testing.catalogue_pooling import _case, _starts

Volumes = Callable[[np.ndarray], np.ndarray]
Triple = tuple[int, int, int]


def _in_ordering(dim_ordering: str, function: Volumes) -> Reference:
    """``function`` of channels-last volumes, applied to inputs in ``dim_ordering``."""

    def reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        if dim_ordering == "th":
            return function(x.transpose(0, 2, 3, 4, 1)).transpose(0, 4, 1, 2, 3)
        return function(x)

    return reference


def _pool(reduce: str, pool: Triple, strides: Triple, border_mode: str) -> Volumes:
    """Max or mean over each 3-D window's input positions (padding is no position)."""

    def function(x: np.ndarray) -> np.ndarray:
        starts = [
            _starts(x.shape[axis + 1], pool[axis], strides[axis], border_mode) for axis in range(3)
        ]
        out = np.empty((x.shape[0], *(len(s) for s in starts), x.shape[4]))
        for a, first in enumerate(starts[0]):
            for b, second in enumerate(starts[1]):
                for c, third in enumerate(starts[2]):
                    window = x[
                        :,
                        max(first, 0) : first + pool[0],
                        max(second, 0) : second + pool[1],
                        max(third, 0) : third + pool[2],
                        :,
                    ]
                    axes = (1, 2, 3)
                    out[:, a, b, c, :] = (
                        window.max(axis=axes) if reduce == "max" else window.mean(axis=axes)
                    )
        return out

    return function


def _upsample(size: Triple) -> Volumes:
    def function(x: np.ndarray) -> np.ndarray:
        sizes = [x.shape[axis + 1] * size[axis] for axis in range(3)]
        out = np.empty((x.shape[0], *sizes, x.shape[4]))
        for a in range(sizes[0]):
            for b in range(sizes[1]):
                for c in range(sizes[2]):
                    out[:, a, b, c, :] = x[:, a // size[0], b // size[1], c // size[2], :]
        return out

    return function


def _zero_pad(padding: Triple) -> Volumes:
    def function(x: np.ndarray) -> np.ndarray:
        d1, d2, d3 = x.shape[1:4]
        p1, p2, p3 = padding
        out = np.zeros((x.shape[0], d1 + 2 * p1, d2 + 2 * p2, d3 + 2 * p3, x.shape[4]))
        out[:, p1 : p1 + d1, p2 : p2 + d2, p3 : p3 + d3, :] = x
        return out

    return function


def pooling3d_cases() -> list[LayerCase]:
    # (id, class, arguments, sample shape, (pool, strides, border mode)); th unless
    # the arguments say tf
    pooling: list[tuple[str, type, dict[str, Any], tuple[int, ...], Any]] = [
        (  # odd sizes: a remainder along dim1 and dim3
            "MaxPooling3D-th-defaults",
            MaxPooling3D,
            {},
            (2, 2, 3, 4, 5),
            ((2, 2, 2), (2, 2, 2), "valid"),
        ),
        (  # a non-cubic pool, overlapping along dim1, apart along dim3
            "MaxPooling3D-tf-2x3x2-strides1x2x3",
            MaxPooling3D,
            {"pool_size": (2, 3, 2), "strides": (1, 2, 3), "dim_ordering": "tf"},
            (2, 3, 5, 5, 2),
            ((2, 3, 2), (1, 2, 3), "valid"),
        ),
        (  # padding before and after along every axis
            "MaxPooling3D-th-3x2x3-strides2x1x2-same",
            MaxPooling3D,
            {"pool_size": (3, 2, 3), "strides": (2, 1, 2), "border_mode": "same"},
            (2, 2, 5, 3, 4),
            ((3, 2, 3), (2, 1, 2), "same"),
        ),
        (
            "AveragePooling3D-tf-3x2x2-strides2x2x1-same",
            AveragePooling3D,
            {
                "pool_size": (3, 2, 2),
                "strides": (2, 2, 1),
                "border_mode": "same",
                "dim_ordering": "tf",
            },
            (2, 4, 3, 5, 2),
            ((3, 2, 2), (2, 2, 1), "same"),
        ),
        (
            "AveragePooling3D-th-2x1x3-strides1x2x2",
            AveragePooling3D,
            {"pool_size": (2, 1, 3), "strides": (1, 2, 2)},
            (2, 2, 3, 3, 5),
            ((2, 1, 3), (1, 2, 2), "valid"),
        ),
    ]
    cases = [
        _case(
            case_id,
            lambda cls=cls, arguments=arguments, **kw: cls(**arguments, **kw),
            shape,
            _in_ordering(
                arguments.get("dim_ordering", "th"),
                _pool("max" if cls is MaxPooling3D else "mean", *windows),
            ),
        )
        for case_id, cls, arguments, shape, windows in pooling
    ]
    cases += [
        _case(
            "UpSampling3D-th-size2x1x3",
            lambda **kw: UpSampling3D(size=(2, 1, 3), **kw),
            (2, 2, 2, 3, 2),
            _in_ordering("th", _upsample((2, 1, 3))),
        ),
        _case(
            "UpSampling3D-tf-defaults",
            lambda **kw: UpSampling3D(dim_ordering="tf", **kw),
            (2, 3, 1, 2, 2),
            _in_ordering("tf", _upsample((2, 2, 2))),
        ),
        _case(
            "ZeroPadding3D-th-defaults",
            lambda **kw: ZeroPadding3D(**kw),
            (2, 2, 3, 2, 3),
            _in_ordering("th", _zero_pad((1, 1, 1))),
        ),
        _case(  # no padding along dim1: its stage only copies
            "ZeroPadding3D-tf-padding0x2x1",
            lambda **kw: ZeroPadding3D(padding=(0, 2, 1), dim_ordering="tf", **kw),
            (2, 3, 2, 3, 2),
            _in_ordering("tf", _zero_pad((0, 2, 1))),
        ),
    ]
    return cases
