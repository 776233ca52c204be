"""Pooling, upsampling and zero-padding layers, 1-D and 2-D (Keras 0.3's).

The 1-D layers take sequences ``(samples, steps, features)`` and work along the steps;
the 2-D layers take image batches in ``dim_ordering``: ``"th"`` is channels first,
``(samples, channels, rows, cols)``, ``"tf"`` channels last, ``(samples, rows, cols,
channels)``. Every layer hands its arrays to the kernels of
:mod:`numlayers.kernels.pooling` as 4-D ``(outer, rows, cols, inner)`` views (a 1-D
layer's are ``(samples, steps, 1, features)``), so the same kernels serve all of them.

Pooling windows follow :mod:`numlayers.layers.spatial`: ``"valid"`` puts them only
where they fit in the input, ``"same"`` gives ``ceil(length / stride)`` outputs and pads
the input as evenly as it can, the smaller half before. Padded positions are no values:
they never win a maximum and do not count in an average (a window at a border averages
the inputs it covers).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

import numpy as np

from numlayers.kernels.pooling import PoolWindow
from numlayers.layers.base import Layer, Shape
from numlayers.layers.spatial import (
    check_dim_ordering,
    output_length,
    padding_before,
    positive_ints,
)

#: the border modes of the pooling layers (Keras 0.3 has no "full" pooling)
POOLING_BORDER_MODES = ("valid", "same")


def _pair(sizes: tuple[int, ...], fill: int) -> tuple[int, int]:
    """The kernels' ``(rows, cols)`` of a layer's spatial ``sizes``: a 1-D layer's
    columns are ``fill`` (one wide, no padding)."""
    return sizes[0], sizes[1] if len(sizes) > 1 else fill


class _Spatial(Layer):
    """The layers of this module: where an input's spatial axes lie, and its 4-D view.

    ``spatial_rank`` is 1 (sequences, along the steps) or 2 (images, in
    ``dim_ordering``). A 1-D layer's one spatial axis is the kernels' rows, and its
    columns axis has size 1.
    """

    spatial_rank: ClassVar[int]
    dim_ordering = "tf"

    def _first_spatial_axis(self) -> int:
        return 2 if self.spatial_rank == 2 and self.dim_ordering == "th" else 1

    def _spatial_sizes(self, shape: Shape) -> tuple[int | None, int | None]:
        """``(rows, cols)`` of an input shape (batch axis included), its rank checked."""
        if len(shape) != self.spatial_rank + 2:
            what = "(samples, steps, features)" if self.spatial_rank == 1 else "image batches"
            raise ValueError(
                f"{self.label} expects inputs of rank {self.spatial_rank + 2} ({what}), "
                f"received input shape {shape}"
            )
        first = self._first_spatial_axis()
        if self.spatial_rank == 1:
            return shape[first], 1
        return shape[first], shape[first + 1]

    def _with_spatial(self, shape: Shape, rows: int | None, cols: int | None) -> Shape:
        """``shape`` with its spatial sizes replaced by ``rows`` and ``cols``."""
        first = self._first_spatial_axis()
        sizes = (rows,) if self.spatial_rank == 1 else (rows, cols)
        return (*shape[:first], *sizes, *shape[first + self.spatial_rank :])

    def _view(self, array: Any) -> Any:
        """``array`` as the kernels' ``(outer, rows, cols, inner)``."""
        shape = tuple(array.shape)
        first = self._first_spatial_axis()
        rows, cols = self._spatial_sizes(shape)
        outer = math.prod(shape[:first])
        inner = math.prod(shape[first + self.spatial_rank :])
        return array.reshape(outer, rows, cols, inner)

    def _output_buffer(self, x: Any) -> Any:
        """The output's buffer, for input array ``x`` (whose sizes are all known)."""
        shape = self.compute_output_shape(tuple(x.shape))
        return self.buffer("out", tuple(int(d or 0) for d in shape))

    def _grad_buffer(self) -> Any:
        """The input gradient's buffer: shaped like the saved input."""
        return self.buffer("grad_x", self.saved()["input_shape"])


# ---------------------------------------------------------------- pooling


class _Pooling(_Spatial):
    """Max and average pooling, 1-D and 2-D: windows, shapes and kernel calls.

    ``reduction`` is ``"max"`` or ``"average"``. The forward pass of max pooling
    records, per use of the layer, where each window's maximum was (an int32 buffer);
    its backward sends each gradient there.
    """

    reduction: ClassVar[str]

    def _set_windows(
        self, pool: Any, strides: Any, border_mode: Any, names: tuple[str, str]
    ) -> None:
        """Validate and keep the pool, strides (None: the pool) and border mode;
        ``names`` are the arguments' names, for messages."""
        count = self.spatial_rank
        pool_sizes = positive_ints(pool, count, names[0], self.label)
        stride_sizes = (
            pool_sizes if strides is None else positive_ints(strides, count, names[1], self.label)
        )
        if border_mode not in POOLING_BORDER_MODES:
            raise ValueError(
                f"{self.label}: border_mode must be one of {POOLING_BORDER_MODES}, "
                f"received {border_mode!r}"
            )
        self.border_mode = str(border_mode)
        self._pool = _pair(pool_sizes, 1)
        self._strides = _pair(stride_sizes, 1)

    def _output_sizes(self, rows: int | None, cols: int | None) -> tuple[int | None, int | None]:
        """The output's spatial sizes; an error when a valid window does not fit."""
        sizes = []
        for length, pool, stride in zip((rows, cols), self._pool, self._strides, strict=True):
            if length is not None and self.border_mode == "valid" and length < pool:
                raise ValueError(
                    f"{self.label}: its {self._pool_text()} pool does not fit in inputs of "
                    f"spatial size {self._size_text(rows, cols)} with border_mode 'valid' "
                    "(use a smaller pool, or border_mode 'same')"
                )
            sizes.append(output_length(length, pool, self.border_mode, stride))
        return sizes[0], sizes[1]

    def _pool_text(self) -> str:
        return "x".join(str(p) for p in self._pool[: self.spatial_rank])

    def _size_text(self, rows: int | None, cols: int | None) -> str:
        return str(rows) if self.spatial_rank == 1 else f"{rows}x{cols}"

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        rows, cols = self._spatial_sizes(input_shape)
        return self._with_spatial(input_shape, *self._output_sizes(rows, cols))

    def _window(self, rows: int | None, cols: int | None) -> PoolWindow:
        """The kernels' window for an input of ``rows`` by ``cols`` (an array's: known)."""
        pad_rows, pad_cols = (
            padding_before(length or 0, pool, self.border_mode, stride)
            for length, pool, stride in zip((rows, cols), self._pool, self._strides, strict=True)
        )
        return PoolWindow(*self._pool, *self._strides, pad_rows, pad_cols)

    def _forward(self, x: Any, train: bool) -> Any:
        shape = tuple(x.shape)
        out = self._output_buffer(x)
        window = self._window(*self._spatial_sizes(shape))
        if self.reduction == "max":
            argmax = self.buffer("argmax", tuple(out.shape), np.int32)
            self.kernels.max_pool_forward(
                self._view(x), window, self._view(out), self._view(argmax)
            )
            self.save(argmax=argmax)
        else:
            self.kernels.average_pool_forward(self._view(x), window, self._view(out))
        self.save(input_shape=shape, window=window)
        return out

    def _backward(self, grad_output: Any) -> Any:
        if not self.needs_input_gradient:
            return None
        saved = self.saved()
        grad_x = self._grad_buffer()
        grad = self._view(grad_output)
        if self.reduction == "max":
            argmax = self._view(saved["argmax"])
            self.kernels.max_pool_backward(grad, argmax, saved["window"], self._view(grad_x))
        else:
            self.kernels.average_pool_backward(grad, saved["window"], self._view(grad_x))
        return grad_x


class _Pooling1D(_Pooling):
    """Keras 0.3's 1-D pooling arguments: ``pool_length``, ``stride``, ``border_mode``."""

    input_ndim = 3
    spatial_rank = 1

    def __init__(
        self,
        pool_length: int = 2,
        stride: int | None = None,
        border_mode: str = "valid",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._set_windows(pool_length, stride, border_mode, ("pool_length", "stride"))
        self.pool_length = self._pool[0]
        self.stride = self._strides[0]
        self._finish_init()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            pool_length=self.pool_length, stride=self.stride, border_mode=self.border_mode
        )
        return config


class _Pooling2D(_Pooling):
    """Keras 0.3's 2-D pooling arguments: ``pool_size``, ``strides``, ``border_mode``,
    ``dim_ordering``."""

    input_ndim = 4
    spatial_rank = 2

    def __init__(
        self,
        pool_size: tuple[int, int] = (2, 2),
        strides: tuple[int, int] | None = None,
        border_mode: str = "valid",
        dim_ordering: str = "th",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dim_ordering = check_dim_ordering(dim_ordering, self.label)
        self._set_windows(pool_size, strides, border_mode, ("pool_size", "strides"))
        self.pool_size = self._pool
        self.strides = self._strides
        self._finish_init()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            pool_size=list(self.pool_size),
            strides=list(self.strides),
            border_mode=self.border_mode,
            dim_ordering=self.dim_ordering,
        )
        return config


class MaxPooling1D(_Pooling1D):
    """Max pooling along the steps of a sequence.

    Each output step is the maximum of a window of ``pool_length`` input steps, for
    each feature. The backward pass sends each output's gradient to the input that was
    the maximum (the first of equal ones; a NaN in a window gives a NaN maximum).

    Args:
        pool_length: steps per window.
        stride: steps between windows (None: ``pool_length``, windows side by side).
        border_mode: ``"valid"`` (only whole windows) or ``"same"`` (``ceil(steps /
            stride)`` outputs; padded steps are never the maximum).

    Input shape: ``(samples, steps, features)``.
    Output shape: ``(samples, pooled_steps, features)``.

    Example:
        >>> layer = MaxPooling1D(pool_length=2, input_shape=(5, 1))
        >>> layer(np.array([[[1], [3], [2], [0], [9]]], "float32"))[..., 0]
        array([[3., 2.]], dtype=float32)
    """

    reduction = "max"


class AveragePooling1D(_Pooling1D):
    """Average pooling along the steps of a sequence.

    Each output step is the mean of a window of ``pool_length`` input steps, for each
    feature (with ``border_mode="same"``, the mean of the steps a border window covers:
    padded steps do not count).

    Args:
        pool_length: steps per window.
        stride: steps between windows (None: ``pool_length``).
        border_mode: ``"valid"`` or ``"same"``.

    Input shape: ``(samples, steps, features)``.
    Output shape: ``(samples, pooled_steps, features)``.

    Example:
        >>> layer = AveragePooling1D(pool_length=2, border_mode="same", input_shape=(3, 1))
        >>> layer(np.array([[[1], [3], [8]]], "float32"))[..., 0]
        array([[2., 8.]], dtype=float32)
    """

    reduction = "average"


class MaxPooling2D(_Pooling2D):
    """Max pooling over the rows and columns of images.

    Each output pixel is the maximum of a ``pool_size`` window of input pixels, for
    each channel. The backward pass sends each output's gradient to the input that was
    the maximum (the first of equal ones in row-major order; a NaN in a window gives a
    NaN maximum).

    Args:
        pool_size: ``(rows, cols)`` of a window (or one int for both).
        strides: ``(rows, cols)`` between windows (None: ``pool_size``).
        border_mode: ``"valid"`` (only whole windows) or ``"same"`` (``ceil(size /
            stride)`` outputs along each axis; padded pixels are never the maximum).
        dim_ordering: ``"th"`` (channels first) or ``"tf"`` (channels last).

    Input shape: ``(samples, channels, rows, cols)`` with ``"th"``,
    ``(samples, rows, cols, channels)`` with ``"tf"``.
    Output shape: the same with the pooled rows and cols.

    Example:
        >>> layer = MaxPooling2D(pool_size=(2, 2), input_shape=(1, 2, 4))
        >>> layer(np.arange(8, dtype="float32").reshape(1, 1, 2, 4))
        array([[[[5., 7.]]]], dtype=float32)
    """

    reduction = "max"


class AveragePooling2D(_Pooling2D):
    """Average pooling over the rows and columns of images.

    Each output pixel is the mean of a ``pool_size`` window of input pixels, for each
    channel (with ``border_mode="same"``, the mean of the pixels a border window
    covers: padded pixels do not count).

    Args:
        pool_size: ``(rows, cols)`` of a window (or one int for both).
        strides: ``(rows, cols)`` between windows (None: ``pool_size``).
        border_mode: ``"valid"`` or ``"same"``.
        dim_ordering: ``"th"`` (channels first) or ``"tf"`` (channels last).

    Input shape: ``(samples, channels, rows, cols)`` with ``"th"``,
    ``(samples, rows, cols, channels)`` with ``"tf"``.
    Output shape: the same with the pooled rows and cols.

    Example:
        >>> layer = AveragePooling2D(pool_size=(2, 2), input_shape=(1, 2, 4))
        >>> layer(np.arange(8, dtype="float32").reshape(1, 1, 2, 4))
        array([[[[2.5, 4.5]]]], dtype=float32)
    """

    reduction = "average"


# ---------------------------------------------------------------- upsampling


class _UpSampling(_Spatial):
    """Nearest-neighbour upsampling: each input repeated ``size`` times along each
    spatial axis; the backward pass sums each block of repeats."""

    def _set_size(self, size: Any, name: str) -> None:
        sizes = positive_ints(size, self.spatial_rank, name, self.label)
        self._size = _pair(sizes, 1)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        sizes = self._spatial_sizes(input_shape)
        rows, cols = (None if n is None else n * k for n, k in zip(sizes, self._size, strict=True))
        return self._with_spatial(input_shape, rows, cols)

    def _forward(self, x: Any, train: bool) -> Any:
        shape = tuple(x.shape)
        out = self._output_buffer(x)
        self.kernels.upsample_forward(self._view(x), self._view(out))
        self.save(input_shape=shape)
        return out

    def _backward(self, grad_output: Any) -> Any:
        if not self.needs_input_gradient:
            return None
        grad_x = self._grad_buffer()
        self.kernels.upsample_backward(self._view(grad_output), self._view(grad_x))
        return grad_x


class UpSampling1D(_UpSampling):
    """Repeats each step of a sequence ``length`` times.

    Args:
        length: repeats of each step.

    Input shape: ``(samples, steps, features)``.
    Output shape: ``(samples, steps * length, features)``.

    Example:
        >>> layer = UpSampling1D(length=2, input_shape=(2, 1))
        >>> layer(np.array([[[1], [2]]], "float32"))[..., 0]
        array([[1., 1., 2., 2.]], dtype=float32)
    """

    input_ndim = 3
    spatial_rank = 1

    def __init__(self, length: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._set_size(length, "length")
        self.length = self._size[0]
        self._finish_init()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["length"] = self.length
        return config


class UpSampling2D(_UpSampling):
    """Repeats each row and column of images ``size`` times.

    Args:
        size: ``(rows, cols)`` repeats (or one int for both).
        dim_ordering: ``"th"`` (channels first) or ``"tf"`` (channels last).

    Input shape: ``(samples, channels, rows, cols)`` with ``"th"``,
    ``(samples, rows, cols, channels)`` with ``"tf"``.
    Output shape: the same with ``rows * size[0]`` rows and ``cols * size[1]`` cols.

    Example:
        >>> layer = UpSampling2D(size=(1, 2), input_shape=(1, 1, 2))
        >>> layer(np.array([[[[1, 2]]]], "float32"))
        array([[[[1., 1., 2., 2.]]]], dtype=float32)
    """

    input_ndim = 4
    spatial_rank = 2

    def __init__(
        self, size: tuple[int, int] = (2, 2), dim_ordering: str = "th", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.dim_ordering = check_dim_ordering(dim_ordering, self.label)
        self._set_size(size, "size")
        self.size = self._size
        self._finish_init()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(size=list(self.size), dim_ordering=self.dim_ordering)
        return config


# ---------------------------------------------------------------- zero padding


def _padding_ints(value: Any, count: int, owner: str) -> tuple[int, ...]:
    """``padding`` (an int, or ``count`` ints) as ``count`` non-negative ints."""

    def is_size(n: Any) -> bool:
        return isinstance(n, numbers.Integral) and not isinstance(n, bool) and int(n) >= 0

    items = (value,) * count if is_size(value) else value
    try:
        found = tuple(items)
    except TypeError:
        found = ()
    if len(found) != count or not all(is_size(n) for n in found):
        wanted = "a non-negative int" if count == 1 else f"{count} non-negative ints"
        raise ValueError(f"{owner}: padding must be {wanted}, received {value!r}")
    return tuple(int(n) for n in found)


class _ZeroPadding(_Spatial):
    """Zeros added on both sides of each spatial axis; the backward pass crops."""

    def _set_padding(self, padding: Any) -> None:
        sizes = _padding_ints(padding, self.spatial_rank, self.label)
        self._padding = _pair(sizes, 0)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        sizes = self._spatial_sizes(input_shape)
        rows, cols = (
            None if n is None else n + 2 * p for n, p in zip(sizes, self._padding, strict=True)
        )
        return self._with_spatial(input_shape, rows, cols)

    def _forward(self, x: Any, train: bool) -> Any:
        shape = tuple(x.shape)
        out = self._output_buffer(x)
        self.kernels.zero_pad_forward(self._view(x), self._padding, self._view(out))
        self.save(input_shape=shape)
        return out

    def _backward(self, grad_output: Any) -> Any:
        if not self.needs_input_gradient:
            return None
        grad_x = self._grad_buffer()
        self.kernels.zero_pad_backward(self._view(grad_output), self._padding, self._view(grad_x))
        return grad_x


class ZeroPadding1D(_ZeroPadding):
    """Adds ``padding`` zero steps at the start and at the end of a sequence.

    Args:
        padding: zero steps on each side (a non-negative int).

    Input shape: ``(samples, steps, features)``.
    Output shape: ``(samples, steps + 2 * padding, features)``.

    Example:
        >>> layer = ZeroPadding1D(padding=1, input_shape=(2, 1))
        >>> layer(np.array([[[1], [2]]], "float32"))[..., 0]
        array([[0., 1., 2., 0.]], dtype=float32)
    """

    input_ndim = 3
    spatial_rank = 1

    def __init__(self, padding: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._set_padding(padding)
        self.padding = self._padding[0]
        self._finish_init()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["padding"] = self.padding
        return config


class ZeroPadding2D(_ZeroPadding):
    """Adds rows and columns of zeros around images.

    Args:
        padding: ``(rows, cols)`` of zeros on each side (or one int for both;
            non-negative).
        dim_ordering: ``"th"`` (channels first) or ``"tf"`` (channels last).

    Input shape: ``(samples, channels, rows, cols)`` with ``"th"``,
    ``(samples, rows, cols, channels)`` with ``"tf"``.
    Output shape: the same with ``rows + 2 * padding[0]`` rows and
    ``cols + 2 * padding[1]`` cols.

    Example:
        >>> layer = ZeroPadding2D(padding=(0, 1), input_shape=(1, 1, 2))
        >>> layer(np.array([[[[1, 2]]]], "float32"))
        array([[[[0., 1., 2., 0.]]]], dtype=float32)
    """

    input_ndim = 4
    spatial_rank = 2

    def __init__(
        self, padding: tuple[int, int] = (1, 1), dim_ordering: str = "th", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.dim_ordering = check_dim_ordering(dim_ordering, self.label)
        self._set_padding(padding)
        self.padding = self._padding
        self._finish_init()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(padding=list(self.padding), dim_ordering=self.dim_ordering)
        return config
