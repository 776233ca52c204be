"""Pooling, upsampling and zero-padding layers, 1-D, 2-D and 3-D (Keras 0.3's).

The 1-D layers take sequences ``(samples, steps, features)`` and work along the steps;
the 2-D layers take image batches and the 3-D layers batches of volumes in
``dim_ordering``: ``"th"`` is channels first, ``(samples, channels, rows, cols)`` or
``(samples, channels, dim1, dim2, dim3)``, ``"tf"`` channels last. Every layer hands
its arrays to the kernels of :mod:`numlayers.kernels.pooling` as 4-D ``(outer, rows,
cols, inner)`` views (a 1-D layer's are ``(samples, steps, 1, features)``), so the same
kernels serve all of them. A 3-D pass is two kernel calls, since each of these
operations is separable over the axes: one over dim2 and dim3 of each dim1 slice
(channels first: the view ``(samples * channels * dim1, dim2, dim3, 1)``), then one
along dim1 with dim2 and dim3 merged into the columns, one wide there (``(samples *
channels, dim1, dim2 * dim3, 1)``). The array between the two is a layer buffer, and
the backward pass runs the two calls' backward kernels in reverse order.

Pooling windows follow :mod:`numlayers.layers.spatial`: ``"valid"`` puts them only
where they fit in the input, ``"same"`` gives ``ceil(length / stride)`` outputs and pads
the input as evenly as it can, the smaller half before. Padded positions are no values:
they never win a maximum and do not count in an average (a window at a border averages
the inputs it covers).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar, NamedTuple

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

#: What each input rank's layers take, for messages.
SPATIAL_INPUTS = {
    1: "(samples, steps, features)",
    2: "image batches",
    3: "batches of volumes",
}


class _Stage(NamedTuple):
    """One kernel call of a pass: the spatial axis that is the kernels' rows, and the
    one that is their columns (None: the columns are the spatial axes after the rows,
    merged, and the window spans one of them, as a 1-D layer's single column)."""

    rows: int
    cols: int | None


#: The kernel calls of a pass, in forward order, by spatial rank. A 3-D window is the
#: product of per-axis intervals, so pooling over it is pooling over its last two axes
#: (each first-axis position apart), then along the first axis: the maximum of
#: maxima, the mean of means (a clipped window's count is the product of its axes'),
#: the first of equal maxima still the first in row-major order. Upsampling and
#: padding split the same way.
STAGES: dict[int, tuple[_Stage, ...]] = {
    1: (_Stage(0, None),),
    2: (_Stage(0, 1),),
    3: (_Stage(1, 2), _Stage(0, None)),
}

Sizes = tuple[int | None, ...]


class _Spatial(Layer):
    """The layers of this module: where an input's spatial axes lie, their kernel views,
    and the passes of one kernel call per stage (:data:`STAGES`).

    ``spatial_rank`` is 1 (sequences, along the steps), 2 (images) or 3 (volumes), the
    last two in ``dim_ordering``. Per-axis arguments (pools, strides, factors, padding)
    are tuples of ``spatial_rank`` ints. A stage's view of an array is the kernels'
    ``(outer, rows, cols, inner)``: the axes before its rows' axis merged into
    ``outer``, the spatial axes after it into ``cols``, the channels into ``outer``
    ("th") or ``inner`` ("tf"). Subclasses give an axis's output size
    (:meth:`_axis_output`) and a stage's kernel calls (:meth:`_forward_stage`,
    :meth:`_backward_stage`); the arrays between stages are layer buffers.
    """

    spatial_rank: ClassVar[int]
    dim_ordering = "tf"

    def _first_spatial_axis(self) -> int:
        return 2 if self.spatial_rank > 1 and self.dim_ordering == "th" else 1

    def _spatial_sizes(self, shape: Shape) -> Sizes:
        """The spatial sizes of an input shape (batch axis included), its rank checked."""
        if len(shape) != self.spatial_rank + 2:
            raise ValueError(
                f"{self.label} expects inputs of rank {self.spatial_rank + 2} "
                f"({SPATIAL_INPUTS[self.spatial_rank]}), received input shape {shape}"
            )
        first = self._first_spatial_axis()
        return tuple(shape[first : first + self.spatial_rank])

    def _with_spatial(self, shape: Shape, sizes: Sizes) -> Shape:
        """``shape`` with its spatial sizes replaced by ``sizes``."""
        first = self._first_spatial_axis()
        return (*shape[:first], *sizes, *shape[first + self.spatial_rank :])

    def _axis_output(self, axis: int, length: int | None) -> int | None:
        """The output's size along spatial ``axis`` for an input ``length`` (None: unknown)."""
        raise NotImplementedError

    def _output_sizes(self, sizes: Sizes) -> Sizes:
        return tuple(self._axis_output(axis, length) for axis, length in enumerate(sizes))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return self._with_spatial(input_shape, self._output_sizes(self._spatial_sizes(input_shape)))

    def _stage_view(self, array: Any, stage: _Stage) -> Any:
        """``array`` as the kernels' ``(outer, rows, cols, inner)`` for ``stage``."""
        shape = tuple(array.shape)
        first = self._first_spatial_axis()
        sizes = shape[first : first + self.spatial_rank]
        outer = math.prod(shape[:first]) * math.prod(sizes[: stage.rows])
        cols = math.prod(sizes[stage.rows + 1 :])
        inner = math.prod(shape[first + self.spatial_rank :])
        return array.reshape(outer, sizes[stage.rows], cols, inner)

    @staticmethod
    def _stage_pair(values: tuple[int, ...], stage: _Stage, fill: int) -> tuple[int, int]:
        """The kernels' ``(rows, cols)`` of per-axis ``values``: ``fill`` for merged
        columns (one wide, no padding)."""
        return values[stage.rows], fill if stage.cols is None else values[stage.cols]

    def _stage_shapes(self, input_shape: Shape) -> list[Shape]:
        """The shapes of a pass's arrays: the input, then each stage's output."""
        shapes = [input_shape]
        sizes = list(self._spatial_sizes(input_shape))
        output_sizes = self._output_sizes(tuple(sizes))
        for stage in STAGES[self.spatial_rank]:
            for axis in (stage.rows, stage.cols):
                if axis is not None:
                    sizes[axis] = output_sizes[axis]
            shapes.append(self._with_spatial(input_shape, tuple(sizes)))
        return shapes

    def _forward(self, x: Any, train: bool) -> Any:
        input_shape = tuple(x.shape)
        shapes = self._stage_shapes(input_shape)
        stages = STAGES[self.spatial_rank]
        source = x
        for index, stage in enumerate(stages):
            slot = "out" if index == len(stages) - 1 else f"after_stage_{index}"
            target = self.buffer(slot, tuple(int(d or 0) for d in shapes[index + 1]))
            self._forward_stage(index, stage, source, target)
            source = target
        self.save(input_shape=input_shape)
        return source

    def _backward(self, grad_output: Any) -> Any:
        if not self.needs_input_gradient:
            return None
        shapes = self._stage_shapes(self.saved()["input_shape"])
        grad = grad_output
        for index, stage in reversed(list(enumerate(STAGES[self.spatial_rank]))):
            slot = "grad_x" if index == 0 else f"grad_after_stage_{index - 1}"
            grad_source = self.buffer(slot, tuple(int(d or 0) for d in shapes[index]))
            self._backward_stage(index, stage, grad, grad_source)
            grad = grad_source
        return grad

    def _forward_stage(self, index: int, stage: _Stage, source: Any, target: Any) -> None:
        """Stage ``index``'s kernel call: ``target`` from ``source``."""
        raise NotImplementedError

    def _backward_stage(
        self, index: int, stage: _Stage, grad_target: Any, grad_source: Any
    ) -> None:
        """Stage ``index``'s backward kernel call: ``grad_source`` from ``grad_target``."""
        raise NotImplementedError


def _sizes_text(sizes: Sizes) -> str:
    """``5`` or ``3x4`` or ``2x3x4``, as messages write spatial sizes and pools."""
    return "x".join(str(n) for n in sizes)


# ---------------------------------------------------------------- pooling


class _Pooling(_Spatial):
    """Max and average pooling: windows, shapes and kernel calls.

    ``reduction`` is ``"max"`` or ``"average"``. The forward pass of max pooling
    records, per use of the layer and per stage, where each window's maximum was (an
    int32 buffer); its backward sends each gradient there, the stages in reverse.
    """

    reduction: ClassVar[str]

    def _set_windows(
        self, pool: Any, strides: Any, border_mode: Any, names: tuple[str, str]
    ) -> None:
        """Validate and keep the pool, strides (None: the pool) and border mode;
        ``names`` are the arguments' names, for messages."""
        count = self.spatial_rank
        self._pool = positive_ints(pool, count, names[0], self.label)
        self._strides = (
            self._pool if strides is None else positive_ints(strides, count, names[1], self.label)
        )
        if border_mode not in POOLING_BORDER_MODES:
            raise ValueError(
                f"{self.label}: border_mode must be one of {POOLING_BORDER_MODES}, "
                f"received {border_mode!r}"
            )
        self.border_mode = str(border_mode)

    def _output_sizes(self, sizes: Sizes) -> Sizes:
        """The output's spatial sizes; an error when a valid window does not fit."""
        for length, pool in zip(sizes, self._pool, strict=True):
            if length is not None and self.border_mode == "valid" and length < pool:
                raise ValueError(
                    f"{self.label}: its {_sizes_text(self._pool)} pool does not fit in inputs "
                    f"of spatial size {_sizes_text(sizes)} with border_mode 'valid' "
                    "(use a smaller pool, or border_mode 'same')"
                )
        return super()._output_sizes(sizes)

    def _axis_output(self, axis: int, length: int | None) -> int | None:
        return output_length(length, self._pool[axis], self.border_mode, self._strides[axis])

    def _window(self, stage: _Stage, rows: int, cols: int) -> PoolWindow:
        """The kernels' window of ``stage`` on a view of ``rows`` by ``cols``."""
        pools = self._stage_pair(self._pool, stage, 1)
        strides = self._stage_pair(self._strides, stage, 1)
        pad_rows, pad_cols = (
            padding_before(length, pool, self.border_mode, stride)
            for length, pool, stride in zip((rows, cols), pools, strides, strict=True)
        )
        return PoolWindow(*pools, *strides, pad_rows, pad_cols)

    def _forward_stage(self, index: int, stage: _Stage, source: Any, target: Any) -> None:
        x = self._stage_view(source, stage)
        out = self._stage_view(target, stage)
        window = self._window(stage, x.shape[1], x.shape[2])
        if self.reduction == "max":
            argmax = self.buffer(f"argmax_{index}", tuple(target.shape), np.int32)
            self.kernels.max_pool_forward(x, window, out, self._stage_view(argmax, stage))
            self.save(**{f"argmax_{index}": argmax})
        else:
            self.kernels.average_pool_forward(x, window, out)

    def _backward_stage(
        self, index: int, stage: _Stage, grad_target: Any, grad_source: Any
    ) -> None:
        grad_out = self._stage_view(grad_target, stage)
        grad_x = self._stage_view(grad_source, stage)
        window = self._window(stage, grad_x.shape[1], grad_x.shape[2])
        if self.reduction == "max":
            argmax = self._stage_view(self.saved()[f"argmax_{index}"], stage)
            self.kernels.max_pool_backward(grad_out, argmax, window, grad_x)
        else:
            self.kernels.average_pool_backward(grad_out, window, grad_x)


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


class _DimOrderedPooling(_Pooling):
    """Keras 0.3's pooling arguments of images and volumes: ``pool_size``, ``strides``,
    ``border_mode``, ``dim_ordering`` (the 2-D and 3-D layers differ in their defaults)."""

    def __init__(
        self,
        pool_size: tuple[int, ...],
        strides: tuple[int, ...] | None,
        border_mode: str,
        dim_ordering: str,
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


class _Pooling2D(_DimOrderedPooling):
    """Keras 0.3's 2-D pooling arguments and their defaults."""

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
        super().__init__(pool_size, strides, border_mode, dim_ordering, **kwargs)


class _Pooling3D(_DimOrderedPooling):
    """Keras 0.3's 3-D pooling arguments and their defaults."""

    input_ndim = 5
    spatial_rank = 3

    def __init__(
        self,
        pool_size: tuple[int, int, int] = (2, 2, 2),
        strides: tuple[int, int, int] | None = None,
        border_mode: str = "valid",
        dim_ordering: str = "th",
        **kwargs: Any,
    ) -> None:
        super().__init__(pool_size, strides, border_mode, dim_ordering, **kwargs)


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


class MaxPooling3D(_Pooling3D):
    """Max pooling over the three spatial axes of volumes (spatial or spatio-temporal).

    Each output voxel is the maximum of a ``pool_size`` window of input voxels, for each
    channel. The backward pass sends each output's gradient to the input that was the
    maximum (the first of equal ones in row-major order over ``(dim1, dim2, dim3)``; a
    NaN in a window gives a NaN maximum).

    Args:
        pool_size: ``(dim1, dim2, dim3)`` of a window (or one int for all three).
        strides: ``(dim1, dim2, dim3)`` between windows (None: ``pool_size``).
        border_mode: ``"valid"`` (only whole windows) or ``"same"`` (``ceil(size /
            stride)`` outputs along each axis; padded voxels are never the maximum).
        dim_ordering: ``"th"`` (channels first) or ``"tf"`` (channels last).

    Input shape: ``(samples, channels, dim1, dim2, dim3)`` with ``"th"``,
    ``(samples, dim1, dim2, dim3, channels)`` with ``"tf"``.
    Output shape: the same with the pooled dim1, dim2 and dim3.

    Example:
        >>> layer = MaxPooling3D(pool_size=(2, 2, 2), input_shape=(1, 2, 2, 4))
        >>> layer(np.arange(16, dtype="float32").reshape(1, 1, 2, 2, 4))
        array([[[[[13., 15.]]]]], dtype=float32)
    """

    reduction = "max"


class AveragePooling3D(_Pooling3D):
    """Average pooling over the three spatial axes of volumes (spatial or
    spatio-temporal).

    Each output voxel is the mean of a ``pool_size`` window of input voxels, for each
    channel (with ``border_mode="same"``, the mean of the voxels a border window
    covers: padded voxels do not count).

    Args:
        pool_size: ``(dim1, dim2, dim3)`` of a window (or one int for all three).
        strides: ``(dim1, dim2, dim3)`` between windows (None: ``pool_size``).
        border_mode: ``"valid"`` or ``"same"``.
        dim_ordering: ``"th"`` (channels first) or ``"tf"`` (channels last).

    Input shape: ``(samples, channels, dim1, dim2, dim3)`` with ``"th"``,
    ``(samples, dim1, dim2, dim3, channels)`` with ``"tf"``.
    Output shape: the same with the pooled dim1, dim2 and dim3.

    Example:
        >>> layer = AveragePooling3D(pool_size=(2, 2, 2), input_shape=(1, 2, 2, 4))
        >>> layer(np.arange(16, dtype="float32").reshape(1, 1, 2, 2, 4))
        array([[[[[6.5, 8.5]]]]], dtype=float32)
    """

    reduction = "average"


# ---------------------------------------------------------------- upsampling


class _UpSampling(_Spatial):
    """Nearest-neighbour upsampling: each input repeated ``size`` times along each
    spatial axis; the backward pass sums each block of repeats."""

    def _set_size(self, size: Any, name: str) -> None:
        self._size = positive_ints(size, self.spatial_rank, name, self.label)

    def _axis_output(self, axis: int, length: int | None) -> int | None:
        return None if length is None else length * self._size[axis]

    def _forward_stage(self, index: int, stage: _Stage, source: Any, target: Any) -> None:
        self.kernels.upsample_forward(
            self._stage_view(source, stage), self._stage_view(target, stage)
        )

    def _backward_stage(
        self, index: int, stage: _Stage, grad_target: Any, grad_source: Any
    ) -> None:
        self.kernels.upsample_backward(
            self._stage_view(grad_target, stage), self._stage_view(grad_source, stage)
        )


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


class _DimOrderedUpSampling(_UpSampling):
    """Keras 0.3's upsampling arguments of images and volumes: ``size``,
    ``dim_ordering`` (the 2-D and 3-D layers differ in their defaults)."""

    def __init__(self, size: tuple[int, ...], dim_ordering: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim_ordering = check_dim_ordering(dim_ordering, self.label)
        self._set_size(size, "size")
        self.size = self._size
        self._finish_init()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(size=list(self.size), dim_ordering=self.dim_ordering)
        return config


class UpSampling2D(_DimOrderedUpSampling):
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
        super().__init__(size, dim_ordering, **kwargs)


class UpSampling3D(_DimOrderedUpSampling):
    """Repeats each voxel of volumes ``size`` times along dim1, dim2 and dim3.

    Args:
        size: ``(dim1, dim2, dim3)`` repeats (or one int for all three).
        dim_ordering: ``"th"`` (channels first) or ``"tf"`` (channels last).

    Input shape: ``(samples, channels, dim1, dim2, dim3)`` with ``"th"``,
    ``(samples, dim1, dim2, dim3, channels)`` with ``"tf"``.
    Output shape: the same with ``dim1 * size[0]``, ``dim2 * size[1]`` and
    ``dim3 * size[2]``.

    Example:
        >>> layer = UpSampling3D(size=(2, 1, 2), input_shape=(1, 1, 1, 2))
        >>> layer(np.array([[[[[1, 2]]]]], "float32"))
        array([[[[[1., 1., 2., 2.]],
        <BLANKLINE>
                 [[1., 1., 2., 2.]]]]], dtype=float32)
    """

    input_ndim = 5
    spatial_rank = 3

    def __init__(
        self, size: tuple[int, int, int] = (2, 2, 2), dim_ordering: str = "th", **kwargs: Any
    ) -> None:
        super().__init__(size, dim_ordering, **kwargs)


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
        self._padding = _padding_ints(padding, self.spatial_rank, self.label)

    def _axis_output(self, axis: int, length: int | None) -> int | None:
        return None if length is None else length + 2 * self._padding[axis]

    def _forward_stage(self, index: int, stage: _Stage, source: Any, target: Any) -> None:
        padding = self._stage_pair(self._padding, stage, 0)
        self.kernels.zero_pad_forward(
            self._stage_view(source, stage), padding, self._stage_view(target, stage)
        )

    def _backward_stage(
        self, index: int, stage: _Stage, grad_target: Any, grad_source: Any
    ) -> None:
        padding = self._stage_pair(self._padding, stage, 0)
        self.kernels.zero_pad_backward(
            self._stage_view(grad_target, stage), padding, self._stage_view(grad_source, stage)
        )


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


class _DimOrderedZeroPadding(_ZeroPadding):
    """Keras 0.3's zero-padding arguments of images and volumes: ``padding``,
    ``dim_ordering`` (the 2-D and 3-D layers differ in their defaults)."""

    def __init__(self, padding: tuple[int, ...], dim_ordering: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim_ordering = check_dim_ordering(dim_ordering, self.label)
        self._set_padding(padding)
        self.padding = self._padding
        self._finish_init()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(padding=list(self.padding), dim_ordering=self.dim_ordering)
        return config


class ZeroPadding2D(_DimOrderedZeroPadding):
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
        super().__init__(padding, dim_ordering, **kwargs)


class ZeroPadding3D(_DimOrderedZeroPadding):
    """Adds zeros around volumes, on both sides of dim1, dim2 and dim3.

    Args:
        padding: ``(dim1, dim2, dim3)`` zeros on each side (or one int for all three;
            non-negative).
        dim_ordering: ``"th"`` (channels first) or ``"tf"`` (channels last).

    Input shape: ``(samples, channels, dim1, dim2, dim3)`` with ``"th"``,
    ``(samples, dim1, dim2, dim3, channels)`` with ``"tf"``.
    Output shape: the same with ``dim1 + 2 * padding[0]``, ``dim2 + 2 * padding[1]``
    and ``dim3 + 2 * padding[2]``.

    Example:
        >>> layer = ZeroPadding3D(padding=(0, 0, 1), input_shape=(1, 1, 1, 2))
        >>> layer(np.array([[[[[1, 2]]]]], "float32"))
        array([[[[[0., 1., 2., 0.]]]]], dtype=float32)
    """

    input_ndim = 5
    spatial_rank = 3

    def __init__(
        self,
        padding: tuple[int, int, int] = (1, 1, 1),
        dim_ordering: str = "th",
        **kwargs: Any,
    ) -> None:
        super().__init__(padding, dim_ordering, **kwargs)
