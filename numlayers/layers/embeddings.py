"""Embedding: integer token ids to dense vectors (a gather forward, a scatter-add backward)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers import constraints, initializations, regularizers
from numlayers.layers.base import Layer, Shape
from numlayers.layers.core import _positive_int, _seed_config, _staged_seed
from numlayers.random import get_generator


class Embedding(Layer):
    """Turns token ids into vectors: ``output[b, t] = W[ids[b, t]]``.

    Indices are checked on the host (or by a reduction on the GPU) before any
    kernel runs: a non-integer array raises TypeError, an id outside
    ``[0, input_dim)`` raises IndexError naming the layer and the value.

    Args:
        input_dim: vocabulary size (ids run from 0 to input_dim - 1).
        output_dim: vector size.
        init: initialisation of W (default uniform, as in Keras 0.3).
        input_length: sequence length, when fixed (``input_shape=(input_length,)``).
        mask_zero: id 0 is padding: the output carries a mask that is 0 there.
        W_regularizer, W_constraint: for the embedding matrix.
        dropout: fraction of the vocabulary dropped (whole words) in training.
        weights: initial ``[W]``.
        seed: int or Generator for the initial weights and the word dropout.

    Input shape: ``(batch, length)`` integers. Output shape: ``(batch, length, output_dim)``.

    Example:
        >>> Embedding(10, 4, input_length=3)(np.array([[1, 2, 0]])).shape
        (1, 3, 4)
    """

    input_ndim = 2
    index_input = True

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        init: Any = "uniform",
        input_length: int | None = None,
        mask_zero: bool = False,
        W_regularizer: Any = None,
        W_constraint: Any = None,
        dropout: float = 0.0,
        weights: Sequence[Any] | None = None,
        seed: Any = None,
        **kwargs: Any,
    ) -> None:
        if "input_shape" not in kwargs and "batch_input_shape" not in kwargs:
            kwargs["input_shape"] = (input_length,)
        super().__init__(**kwargs)
        self.input_dim = _positive_int(input_dim, "input_dim", self.label)
        self.output_dim = _positive_int(output_dim, "output_dim", self.label)
        self.input_length = input_length
        initializations.get(init)
        self.init = init
        self.mask_zero = bool(mask_zero)
        self.W_regularizer = regularizers.get(W_regularizer)
        self.W_constraint = constraints.get(W_constraint)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not 0 <= dropout < 1
        ):
            raise ValueError(f"{self.label}: dropout must be in [0, 1), received {dropout!r}")
        self.dropout = float(dropout)
        self.seed = seed
        self._dropout_generator = None if seed is None else get_generator(seed)
        self.initial_weights = weights
        self._finish_init()

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], input_shape[1], self.output_dim)

    def build(self) -> None:
        rng = get_generator(self.seed)
        weight = initializations.draw(self.init, (self.input_dim, self.output_dim), rng)
        self.add_weight("W", weight, self.W_regularizer, self.W_constraint)
        if self.initial_weights is not None:
            self.set_weights(self.initial_weights)
            self.initial_weights = None

    def produces_mask(self) -> bool:
        return self.mask_zero

    # ------------------------------------------------------------ indices
    def prepare_input(self, x: Any) -> Any:
        if self._on_a_gpu(x):
            return self.device.asarray(x)
        host = np.asarray(x)
        if host.dtype.kind not in "iu":
            raise TypeError(f"{self.label} expects integer token ids, received dtype {host.dtype}")
        return self.device.asarray(host, np.int64)

    def _check_input(self, x: Any) -> None:
        if not self.device.is_device_array(x):
            raise TypeError(
                f"{self.label} runs on {self.device.name} and expects its input there, "
                f"received {type(x).__name__}"
            )
        if np.dtype(x.dtype) != np.int64:
            raise TypeError(f"{self.label} expects int64 token ids, received dtype {x.dtype}")
        self._check_layout(x, "input")
        expected = self.input_shape
        shape = tuple(x.shape)
        if len(shape) != 2 or (expected[1] is not None and shape[1] != expected[1]):
            raise ValueError(f"{self.label} expects ids of shape {expected}, received {shape}")
        if shape[0] == 0:
            raise ValueError(f"{self.label} received an empty batch (shape {shape})")
        low, high = self._index_range(x)
        if low < 0 or high >= self.input_dim:
            bad = low if low < 0 else high
            raise IndexError(
                f"{self.label}: token id {bad} is outside [0, {self.input_dim}) "
                f"(input_dim={self.input_dim})"
            )

    def _index_range(self, x: Any) -> tuple[int, int]:
        """Smallest and largest id, reduced on the array's device (two numbers come back)."""
        bounds = self.buffer("index_range", (2,), np.int64)
        self.kernels.index_range(x.reshape(x.size), bounds)
        low, high = self.device.to_host(bounds)
        return int(low), int(high)

    # ---------------------------------------------------- forward/backward
    def _forward(self, x: Any, train: bool) -> Any:
        batch, length = x.shape
        out = self.buffer("y", (batch, length, self.output_dim))
        self.kernels.embedding_forward(x, self.params[0], out)
        if self.mask_zero:
            mask = self.buffer("mask", (batch, length))
            self.kernels.nonzero_mask(x, mask)
            self.save(output_mask=mask)
        word_scale = None
        if train and self.dropout > 0:
            word_scale = self._word_dropout_scale(x)
            self.kernels.apply_time_mask(out, word_scale, out)
        # backward scatters into the weights at these ids: keep a copy of the ids checked
        # here, so a caller changing its array in between cannot send them out of range
        indices = self.buffer("indices", tuple(x.shape), x.dtype)
        self.device.copy(x, indices)
        self.save(indices=indices, word_scale=word_scale)
        return out

    def _word_dropout_scale(self, x: Any) -> Any:
        """Per-token scale: 0 for tokens whose word is dropped this pass, 1/(1-p) otherwise."""
        keep = self.buffer("word_keep", (self.input_dim, 1))
        seed = _staged_seed(self, "word_dropout_seed", self._dropout_generator)
        self.kernels.dropout_mask(seed, int(self.dropout * 2**24), keep)
        self.kernels.scale_into(keep, 1.0 / (1.0 - self.dropout), keep)
        scale = self.buffer("word_scale", (x.shape[0], x.shape[1], 1))
        self.kernels.embedding_forward(x, keep, scale)
        return scale.reshape(x.shape[0], x.shape[1])

    def _backward(self, grad_output: Any) -> None:
        saved = self.saved()
        if saved["word_scale"] is not None:
            scaled = self.buffer("grad_scaled", tuple(grad_output.shape))
            self.kernels.apply_time_mask(grad_output, saved["word_scale"], scaled)
            grad_output = scaled
        self.kernels.embedding_backward(saved["indices"], grad_output, self.grads[0])
        return None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            init=self.init,
            input_length=self.input_length,
            mask_zero=self.mask_zero,
            W_regularizer=regularizers.config_of(self.W_regularizer),
            W_constraint=constraints.config_of(self.W_constraint),
            dropout=self.dropout,
            seed=_seed_config(self.seed),
        )
        return config
