"""Catalogue rows of Convolution3D.

The reference pads the input with zeros in NumPy (the border modes' zeros computed
here, as for the 2-D rows) and sums, for each kernel tap, the strided slice under it
times that tap's weights (``np.einsum``): no depth gather and no 2-D kernel.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from numlayers.layers import Convolution3D
from numlayers.testing.catalogue import ACTIVATION_REFERENCES, LayerCase, Reference
from numlayers.testing.catalogue_convolutional import _output_and_padding, _random_bias


def correlate3d_reference(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    border_mode: str,
    strides: tuple[int, int, int],
) -> np.ndarray:
    """Cross-correlation of channels-first ``x (N, C, D1, D2, D3)`` with ``weight (F, C,
    K1, K2, K3)``, plus ``bias``, as ``(N, F, O1, O2, O3)``."""
    samples, channels, *sizes = x.shape
    filters, _, *kernel = weight.shape
    outputs, pads = zip(
        *(
            _output_and_padding(size, taps, border_mode, stride, 1)
            for size, taps, stride in zip(sizes, kernel, strides, strict=True)
        ),
        strict=True,
    )
    # room for every window, the zeros after the input included
    padded_shape = [
        pad + size + taps + count * stride
        for pad, size, taps, count, stride in zip(
            pads, sizes, kernel, outputs, strides, strict=True
        )
    ]
    padded = np.zeros((samples, channels, *padded_shape))
    inside = tuple(slice(pad, pad + size) for pad, size in zip(pads, sizes, strict=True))
    padded[(slice(None), slice(None), *inside)] = x
    out = np.zeros((samples, filters, *outputs))
    for taps in itertools.product(*(range(size) for size in kernel)):
        under = tuple(
            slice(tap, tap + count * stride, stride)
            for tap, count, stride in zip(taps, outputs, strides, strict=True)
        )
        window = padded[(slice(None), slice(None), *under)]
        tap_weight = weight[:, :, taps[0], taps[1], taps[2]]
        out += np.einsum("ncijl,fc->nfijl", window, tap_weight)
    return out + bias[None, :, None, None, None]


def _reference(
    dim_ordering: str, border_mode: str, strides: tuple[int, int, int], activation: str
) -> Reference:
    def reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        weight, bias = weights
        if dim_ordering == "th":
            y = correlate3d_reference(x, weight, bias, border_mode, strides)
        else:
            y = correlate3d_reference(
                x.transpose(0, 4, 1, 2, 3), weight.transpose(4, 3, 0, 1, 2), bias,
                border_mode, strides,
            ).transpose(0, 2, 3, 4, 1)  # fmt: skip
        return ACTIVATION_REFERENCES[activation](y)

    return reference


def _case(
    name: str,
    filters: int,
    kernel: tuple[int, int, int],
    input_shape: tuple[int, int, int, int],
    seed: int,
    activation: str,
    border_mode: str = "valid",
    dim_ordering: str = "th",
    subsample: tuple[int, int, int] = (1, 1, 1),
) -> LayerCase:
    """A row of two samples: the layer and its reference from the same settings."""
    settings: dict[str, Any] = dict(
        border_mode=border_mode, dim_ordering=dim_ordering, subsample=subsample,
        activation=activation, input_shape=input_shape, seed=seed,
    )  # fmt: skip
    return LayerCase(
        f"Convolution3D-{name}",
        _random_bias(
            lambda **kw: Convolution3D(filters, kernel[0], kernel[1], kernel[2], **settings, **kw)
        ),
        (2, *input_shape),
        _reference(dim_ordering, border_mode, subsample, activation),
    )


def convolution3d_cases() -> list[LayerCase]:
    # tiny: under the CUDA simulator the 2-D kernels' time grows with the samples times
    # depths (N * O1) and with the channels times taps (C * k1 * k2 * k3)
    return [
        _case("th-valid-kernel(2,1,2)-stride(2,2,2)-softmax", filters=2, kernel=(2, 1, 2),
              input_shape=(2, 4, 3, 4), seed=41, activation="softmax", subsample=(2, 2, 2)),
        _case("tf-same-kernel(3,2,1)-tanh", filters=3, kernel=(3, 2, 1),
              input_shape=(2, 3, 2, 2), seed=42, activation="tanh", border_mode="same",
              dim_ordering="tf"),
        # 6 channels x 3 depth taps: the CPU convolves the volumes whole (stride 1 over
        # the rows and columns, at least 16 folded channels, a sample per thread); the
        # depth's stride leaves the last input plane under no window
        _case("th-valid-kernel(3,1,2)-stride(2,1,1)-volumes-sigmoid", filters=2,
              kernel=(3, 1, 2), input_shape=(6, 6, 2, 3), seed=43, activation="sigmoid",
              subsample=(2, 1, 1)),
    ]  # fmt: skip
