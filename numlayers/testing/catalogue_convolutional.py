"""Catalogue rows of the convolution layers.

The reference is a direct sum over the taps in NumPy (no patches, no products of the
kernels' shapes), with the border modes' zeros written out here again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from numlayers.layers import Convolution1D, Convolution2D, Layer
from numlayers.testing.catalogue import ACTIVATION_REFERENCES, LayerCase, Reference


def _output_and_padding(
    length: int, size: int, border_mode: str, stride: int, dilation: int
) -> tuple[int, int]:
    """Outputs along an axis and the zeros before the input (the larger half after)."""
    extent = (size - 1) * dilation + 1
    if border_mode == "valid":
        return (length - extent) // stride + 1, 0
    if border_mode == "full":
        return (length + extent - 2) // stride + 1, extent - 1
    outputs = -(-length // stride)
    return outputs, max(0, (outputs - 1) * stride + extent - length) // 2


def correlate_reference(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    border_mode: str,
    strides: tuple[int, int],
    dilations: tuple[int, int],
) -> np.ndarray:
    """Cross-correlation of channels-first ``x (N, C, H, W)`` with ``weight (F, C, KH,
    KW)``, plus ``bias``, as ``(N, F, OH, OW)``: every output a sum over its taps."""
    samples, _, rows, cols = x.shape
    filters, _, kernel_rows, kernel_cols = weight.shape
    out_rows, pad_rows = _output_and_padding(
        rows, kernel_rows, border_mode, strides[0], dilations[0]
    )
    out_cols, pad_cols = _output_and_padding(
        cols, kernel_cols, border_mode, strides[1], dilations[1]
    )
    out = np.zeros((samples, filters, out_rows, out_cols))
    for i in range(out_rows):
        for j in range(out_cols):
            for r in range(kernel_rows):
                for s in range(kernel_cols):
                    row = i * strides[0] - pad_rows + r * dilations[0]
                    col = j * strides[1] - pad_cols + s * dilations[1]
                    if 0 <= row < rows and 0 <= col < cols:
                        out[:, :, i, j] += x[:, :, row, col] @ weight[:, :, r, s].T
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def _convolution_reference(
    layout: str,
    border_mode: str,
    strides: tuple[int, int],
    dilations: tuple[int, int],
    activation: str = "linear",
) -> Reference:
    """The reference of a layer of ``layout`` (``"th"``, ``"tf"`` or ``"1d"``)."""

    def reference(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        weight, bias = weights[0], weights[1] if len(weights) > 1 else None
        if layout == "th":
            y = correlate_reference(x, weight, bias, border_mode, strides, dilations)
        elif layout == "tf":
            y = correlate_reference(
                x.transpose(0, 3, 1, 2), weight.transpose(3, 2, 0, 1), bias, border_mode,
                strides, dilations,
            ).transpose(0, 2, 3, 1)  # fmt: skip
        else:  # (N, steps, features) as channels-first rows of one column
            y = correlate_reference(
                x.transpose(0, 2, 1)[..., None], weight, bias, border_mode, strides, dilations
            )[..., 0].transpose(0, 2, 1)
        return ACTIVATION_REFERENCES[activation](y)

    return reference


def _random_bias(make: Callable[..., Layer]) -> Callable[..., Layer]:
    """``make``, with a bias that is not zero (so the forward check sees it added)."""

    def make_with_bias(**kwargs: Any) -> Layer:
        layer = make(**kwargs)
        weights = layer.get_weights()
        if len(weights) > 1:
            weights[1] = np.linspace(-0.5, 0.5, weights[1].size)
            layer.set_weights(weights)
        return layer

    return make_with_bias


def convolution_cases() -> list[LayerCase]:
    return [
        LayerCase(
            "Convolution1D-valid-stride2-relu",
            _random_bias(
                lambda **kw: Convolution1D(
                    3,
                    3,
                    subsample_length=2,
                    activation="relu",
                    input_dim=2,
                    input_length=7,
                    seed=31,
                    **kw,
                )  # fmt: skip
            ),
            (2, 7, 2),
            _convolution_reference("1d", "valid", (2, 1), (1, 1), "relu"),
        ),
        LayerCase(
            "Convolution1D-same-even-dilation2",
            _random_bias(
                lambda **kw: Convolution1D(
                    2, 2, border_mode="same", dilation=2, input_shape=(5, 3), seed=32, **kw
                )
            ),
            (2, 5, 3),
            _convolution_reference("1d", "same", (1, 1), (2, 1)),
        ),
        LayerCase(
            "Convolution1D-full-tanh",
            _random_bias(
                lambda **kw: Convolution1D(
                    2,
                    3,
                    border_mode="full",
                    activation="tanh",
                    input_shape=(4, 2),
                    seed=33,
                    **kw,
                )  # fmt: skip
            ),
            (2, 4, 2),
            _convolution_reference("1d", "full", (1, 1), (1, 1), "tanh"),
        ),
        LayerCase(
            "Convolution2D-th-valid-odd-3channels-dilation(2,1)-tanh",
            _random_bias(
                lambda **kw: Convolution2D(
                    2,
                    3,
                    3,
                    dilation=(2, 1),
                    activation="tanh",
                    input_shape=(3, 6, 4),
                    seed=34,
                    **kw,
                )  # fmt: skip
            ),
            (2, 3, 6, 4),
            _convolution_reference("th", "valid", (1, 1), (2, 1), "tanh"),
        ),
        LayerCase(
            "Convolution2D-th-same-even-stride2-no-bias",
            lambda **kw: Convolution2D(
                3,
                2,
                2,
                border_mode="same",
                subsample=(2, 2),
                bias=False,
                input_shape=(1, 5, 4),
                seed=35,
                **kw,
            ),  # fmt: skip
            (2, 1, 5, 4),
            _convolution_reference("th", "same", (2, 2), (1, 1)),
        ),
        LayerCase(
            "Convolution2D-th-full-stride(1,2)",
            _random_bias(
                lambda **kw: Convolution2D(
                    2,
                    2,
                    3,
                    border_mode="full",
                    subsample=(1, 2),
                    input_shape=(2, 3, 3),
                    seed=36,
                    **kw,
                )  # fmt: skip
            ),
            (1, 2, 3, 3),
            _convolution_reference("th", "full", (1, 2), (1, 1)),
        ),
        LayerCase(
            "Convolution2D-tf-full-even-dilation2-sigmoid",
            _random_bias(
                lambda **kw: Convolution2D(
                    2,
                    2,
                    3,
                    border_mode="full",
                    dilation=2,
                    dim_ordering="tf",
                    activation="sigmoid",
                    input_shape=(3, 4, 3),
                    seed=37,
                    **kw,
                )  # fmt: skip
            ),
            (2, 3, 4, 3),
            _convolution_reference("tf", "full", (1, 1), (2, 2), "sigmoid"),
        ),
        LayerCase(
            "Convolution2D-tf-same-odd-stride(2,1)-1channel",
            _random_bias(
                lambda **kw: Convolution2D(
                    2,
                    3,
                    3,
                    border_mode="same",
                    subsample=(2, 1),
                    dim_ordering="tf",
                    input_shape=(5, 4, 1),
                    seed=38,
                    **kw,
                )  # fmt: skip
            ),
            (2, 5, 4, 1),
            _convolution_reference("tf", "same", (2, 1), (1, 1)),
        ),
    ]
