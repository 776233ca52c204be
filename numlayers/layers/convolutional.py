"""Convolution layers: Convolution1D, Convolution2D, and :func:`convert_kernel`.

Both compute cross-correlation, as TensorFlow and PyTorch do: output position ``o``
sums ``weight[tap] * input[o * stride - pad + tap * dilation]`` over the taps. Keras
0.3 on Theano computed true convolution (the kernel flipped along its spatial axes),
so a kernel trained there gives the same outputs here once flipped by
:func:`convert_kernel`; a kernel trained by Keras 0.3 on TensorFlow (or by these
layers) is used as it is.

The weights have Keras 0.3's layouts, so its saved weights load as they are:
Convolution1D ``W (nb_filter, input_dim, filter_length, 1)``; Convolution2D
``W (nb_filter, stack_size, nb_row, nb_col)`` for ``dim_ordering="th"`` and
``W (nb_row, nb_col, stack_size, nb_filter)`` for ``"tf"``; ``b (nb_filter,)``.

Border modes, strides and dilation follow :mod:`numlayers.layers.spatial`: ``"valid"``
slides the window over the input only; ``"same"`` pads so that the output has
``ceil(length / stride)`` positions, the zeros split with the larger half at the end
(an even filter at stride 1 gets one more zero after the input than before it, as
TensorFlow and PyTorch's ``padding="same"``); ``"full"`` pads ``extent - 1`` zeros on
both sides (every position where the window touches the input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers import initializations
from numlayers.activations import ActivationFunction
from numlayers.kernels.convolutional import ConvolutionGeometry
from numlayers.layers.base import Shape
from numlayers.layers.core import FullyConnected
from numlayers.layers.keras_paths import forwarded_names, homes_in
from numlayers.layers.spatial import (
    check_border_mode,
    check_dim_ordering,
    output_length,
    padding_before,
    positive_ints,
    window_extent,
)
from numlayers.random import get_generator


def convert_kernel(kernel: Any, dim_ordering: str = "th") -> np.ndarray:
    """Flip a convolution kernel along its spatial axes (a new NumPy array).

    Keras 0.3 on Theano computed true convolution; these layers compute
    cross-correlation. Pass a Theano-trained Keras 0.3 kernel (``W``, the first weight
    of a Convolution1D or Convolution2D) through this before ``set_weights`` to get
    the outputs it gave there; the bias needs no change. Flipping twice is the identity.

    Args:
        kernel: a 4-D kernel in Keras 0.3's layout.
        dim_ordering: ``"th"`` for ``(nb_filter, stack_size, rows, cols)`` (also
            Convolution1D's ``(nb_filter, input_dim, filter_length, 1)``), ``"tf"`` for
            ``(rows, cols, stack_size, nb_filter)``.

    Example:
        >>> convert_kernel(np.arange(4.0).reshape(1, 1, 2, 2))[0, 0].tolist()
        [[3.0, 2.0], [1.0, 0.0]]
    """
    dim_ordering = check_dim_ordering(dim_ordering, "convert_kernel")
    values = np.asarray(kernel)
    if values.ndim != 4:
        raise ValueError(
            f"convert_kernel expects a 4-D kernel, received an array of shape {values.shape}"
        )
    spatial = (2, 3) if dim_ordering == "th" else (0, 1)
    return np.ascontiguousarray(np.flip(values, axis=spatial))


class _Convolution(FullyConnected):
    """What Convolution1D, Convolution2D and Convolution3D share: the weights (through
    :class:`~numlayers.layers.core.FullyConnected`'s init, regularizers, constraints and
    ``weights``), shapes, the kernels' calls and the config.

    A subclass sets ``input_ndim`` and ``layout`` and implements the conversions between
    its shapes and the kernels' 4-D layouts: :meth:`kernel_view` for arrays that are
    the kernels' arrays by a reshape, and, where a reshape is not enough
    (Convolution3D), :meth:`kernel_input`, :meth:`kernel_weight` and the output's
    arrangement (:meth:`arranged_output_shape` and its conversions).
    """

    #: the kernels' layout (:class:`~numlayers.kernels.convolutional.ConvolutionGeometry`)
    layout = "th"

    def __init__(
        self,
        nb_filter: int,
        kernel_size: tuple[int, ...],
        strides: tuple[int, ...],
        dilation: tuple[int, ...],
        *,
        init: Any,
        activation: Any,
        border_mode: str,
        bias: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(init=init, **kwargs)
        self.nb_filter = positive_ints(nb_filter, 1, "nb_filter", self.label)[0]
        self.border_mode = check_border_mode(border_mode, self.label)
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilations = dilation
        self.activation = ActivationFunction(activation, self.label)
        self.bias = bool(bias)

    # ------------------------------------------------------------ shapes
    def channel_axis(self) -> int:
        """The input's channel axis (batch axis included)."""
        raise NotImplementedError

    def spatial_axes(self) -> tuple[int, ...]:
        """The input's spatial axes (batch axis included)."""
        raise NotImplementedError

    def output_sizes(self, sizes: Sequence[int | None]) -> tuple[int | None, ...]:
        """The output's spatial sizes for input spatial ``sizes`` (refuses too small)."""
        found = []
        for size, kernel, stride, dilation in zip(
            sizes, self.kernel_size, self.strides, self.dilations, strict=False
        ):
            length = output_length(size, kernel, self.border_mode, stride, dilation)
            if length == 0:
                raise ValueError(
                    f"{self.label}: an input of spatial size {tuple(sizes)} is smaller than "
                    f"the filter {self.kernel_size[: len(sizes)]} (dilation "
                    f"{self.dilations[: len(sizes)]} spans "
                    f"{window_extent(kernel, dilation)}) in border_mode 'valid'"
                )
            found.append(length)
        return tuple(found)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        spatial = [input_shape[axis] for axis in self.spatial_axes()]
        sizes = self.output_sizes(spatial)
        if self.layout == "th":
            return (input_shape[0], self.nb_filter, *sizes)
        return (input_shape[0], *sizes, self.nb_filter)

    def known_input_dim(self) -> int:
        """The input channels the weights are built for (refused when unknown)."""
        channels = self.input_shape[self.channel_axis()]
        if channels is None:
            raise ValueError(
                f"{self.label} needs a known number of input channels (axis "
                f"{self.channel_axis()}), received input shape {self.input_shape}"
            )
        self._built_input_dim = channels
        return channels

    def _check_rebuild(self, shape: Shape) -> None:
        if len(shape) != self.input_ndim or shape[self.channel_axis()] != self._built_input_dim:
            raise ValueError(
                f"{self.label} was built for {self._built_input_dim} input channels "
                f"(axis {self.channel_axis()}), received input shape {shape}"
            )

    def geometry(self, input_shape: tuple[int, ...]) -> ConvolutionGeometry:
        """The kernels' description of the 2-D convolution that computes the output for
        an input of ``input_shape``: over the last two spatial axes (Convolution1D: its
        steps and one column), the taps along any axis before them folded into the
        channels (Convolution3D's depth, gathered by :meth:`kernel_input`)."""
        spatial = [input_shape[axis] for axis in self.spatial_axes()]
        sizes = self.output_sizes(spatial)
        folded = len(self.kernel_size) - 2
        rows, cols = (*spatial, 1)[folded : folded + 2]
        out_rows, out_cols = (*sizes, 1)[folded : folded + 2]
        kernel_rows, kernel_cols = self.kernel_size[folded:]
        return ConvolutionGeometry(
            self.layout,
            channels=input_shape[self.channel_axis()] * math.prod(self.kernel_size[:folded]),
            rows=rows,
            cols=cols,
            filters=self.nb_filter,
            kernel_rows=kernel_rows,
            kernel_cols=kernel_cols,
            out_rows=out_rows or 0,
            out_cols=out_cols or 0,
            stride_rows=self.strides[folded],
            stride_cols=self.strides[folded + 1],
            dilation_rows=self.dilations[folded],
            dilation_cols=self.dilations[folded + 1],
            pad_rows=padding_before(rows, kernel_rows, self.border_mode, *self._axis(folded)),
            pad_cols=padding_before(cols, kernel_cols, self.border_mode, *self._axis(folded + 1)),
        )

    def _axis(self, axis: int) -> tuple[int, int]:
        return self.strides[axis], self.dilations[axis]

    # ----------------------------------------------------------- weights
    def weight_shape(self, channels: int) -> tuple[int, ...]:
        """The kernel's shape in Keras 0.3's layout."""
        if self.layout == "tf":
            return (*self.kernel_size, channels, self.nb_filter)
        return (self.nb_filter, channels, *self.kernel_size)

    def build(self) -> None:
        channels = self.known_input_dim()
        rng = get_generator(self.seed)
        # drawn channels first, whose fans Keras 0.3's initialisations read, then laid out
        shape = (self.nb_filter, channels, *self.kernel_size)
        weight = initializations.draw(self.init, shape, rng)
        if self.layout == "tf":
            weight = weight.transpose(*range(2, len(shape)), 1, 0)
        self.add_weight("W", weight, self.W_regularizer, self.W_constraint)
        if self.bias:
            self.add_weight("b", np.zeros(self.nb_filter), self.b_regularizer, self.b_constraint)
        self.set_initial_weights()

    def _bias_and_gradient(self) -> tuple[Any, Any]:
        if self.bias:
            return self.params[1], self.grads[1]
        empty = self.buffer("no_bias", (0,))
        return empty, empty

    # ---------------------------------------------------------- passes
    def kernel_view(self, array: Any) -> Any:
        """``array`` (an input, or an output in its arrangement) as the kernels' 4-D
        layout, by a reshape."""
        return array

    def kernel_input(self, x: Any) -> Any:
        """The kernels' input for the layer's input ``x``: :meth:`kernel_view` of it."""
        return self.kernel_view(x)

    def input_gradient(self, grad_input: Any, x: Any) -> Any:
        """The gradient of ``x`` from ``grad_input``, the gradient of
        :meth:`kernel_input`'s array: that array's view of it."""
        return grad_input.reshape(x.shape)

    def kernel_weight(self) -> Any:
        """The kernels' weight (once per forward pass, kept for the backward): ``W``
        itself."""
        return self.params[0]

    def kernel_weight_gradient(self) -> Any:
        """Where the kernels write the weight's gradient: ``W``'s gradient itself."""
        return self.grads[0]

    def finish_weight_gradient(self, grad_weight: Any) -> None:
        """Bring :meth:`kernel_weight_gradient`'s array to ``W``'s gradient: nothing."""

    def arranged_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape the outputs are computed in (whose :meth:`kernel_view` the kernels
        write): the layer's output shape."""
        return (input_shape[0], *self.compute_output_shape(input_shape)[1:])  # type: ignore[arg-type]

    def arranged_to_output(self, array: Any, slot: str) -> Any:
        """``array``, an output in its arrangement, in the layer's output shape (into
        buffer ``slot`` where that takes a copy): ``array`` itself."""
        return array

    def output_to_arranged(self, array: Any, slot: str) -> Any:
        """``array``, a gradient of the layer's output, in the outputs' arrangement
        (into buffer ``slot`` where that takes a copy): ``array`` itself."""
        return array

    def fused_activation(self) -> str:
        """The activation the kernels apply with the bias, in the same pass over the
        output: the layer's, except softmax (over the last axis) and activations with
        run-time parameters, which run after the kernels as the Activation layer's do."""
        activation = self.activation
        if activation.parameters or activation.name == "softmax":
            return "linear"
        return activation.name

    def _forward(self, x: Any, train: bool) -> Any:
        geometry = self.geometry(tuple(x.shape))
        kernels = self.kernels
        inputs = self.kernel_input(x)
        z = self.buffer("z", self.arranged_output_shape(tuple(x.shape)))
        y = z if self.activation.is_identity else self.buffer("y", tuple(z.shape))
        fused = self.fused_activation()
        workspace = self.buffer(
            "workspace", (kernels.convolution_workspace(geometry, inputs.shape[0]),)
        )
        bias, _ = self._bias_and_gradient()
        weight = self.kernel_weight()
        kernels.convolution_forward(
            inputs, weight, bias, self.kernel_view(z),
            self.kernel_view(y if fused != "linear" else z), geometry, workspace, fused,
        )  # fmt: skip
        if fused == "linear" and not self.activation.is_identity:
            # elementwise, or softmax over the last axis, which every arrangement keeps
            self.activation.forward(kernels, z, y)
        self.save(x=x, inputs=inputs, weight=weight, z=z, y=y, geometry=geometry)
        return self.arranged_to_output(y, "output")

    def preactivation(self) -> Any:
        return self.arranged_to_output(self.saved()["z"], "preactivation")

    def _backward(self, grad_output: Any) -> Any:
        grad_output = self.output_to_arranged(grad_output, "grad_arranged")
        fused = self.fused_activation()
        if fused != "linear" or self.activation.is_identity:
            return self._backward_through(grad_output, fused)
        saved = self.saved()
        grad_z = self.buffer("grad_z", tuple(grad_output.shape))
        self.activation.backward(self.kernels, saved["z"], saved["y"], grad_output, grad_z)
        return self._backward_through(grad_z, "linear")

    def _backward_preactivation(self, grad_z: Any) -> Any:
        return self._backward_through(self.output_to_arranged(grad_z, "grad_arranged"), "linear")

    def _backward_through(self, grad_y: Any, activation: str) -> Any:
        """The gradients from ``grad_y``, the gradient of the kernels' ``activation``
        output (``"linear"``: of ``z``); returns the input gradient (None when not
        needed)."""
        saved = self.saved()
        inputs, z, y = saved["inputs"], saved["z"], saved["y"]
        need = self.needs_input_gradient
        grad_inputs = self.buffer("grad_inputs", tuple(inputs.shape)) if need else inputs
        grad_z = grad_y if activation == "linear" else self.buffer("grad_z", tuple(z.shape))
        _, grad_bias = self._bias_and_gradient()
        geometry = saved["geometry"]
        workspace = self.buffer(
            "workspace", (self.kernels.convolution_workspace(geometry, inputs.shape[0]),)
        )
        grad_weight = self.kernel_weight_gradient()
        view = self.kernel_view
        self.kernels.convolution_backward(
            inputs, saved["weight"], view(z), view(y), view(grad_y), view(grad_z),
            grad_inputs, grad_weight, grad_bias, geometry, workspace, need, activation,
        )  # fmt: skip
        self.finish_weight_gradient(grad_weight)
        return self.input_gradient(grad_inputs, saved["x"]) if need else None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            nb_filter=self.nb_filter,
            activation=self.activation.config,
            border_mode=self.border_mode,
            bias=self.bias,
        )
        return config


class Convolution1D(_Convolution):
    """Convolution (cross-correlation) over the steps of a sequence.

    ``output[n, t, f] = activation(b[f] + sum over taps k and features c of
    W[f, c, k, 0] * input[n, t * subsample_length - pad + k * dilation, c])``, zeros
    where the window overhangs the input (see the module doc for the border modes).
    For a kernel trained by Keras 0.3 on Theano, load ``convert_kernel(W)``.

    Args:
        nb_filter: number of filters (output features).
        filter_length: taps of each filter.
        init: weight initialisation name (see :mod:`numlayers.initializations`).
        activation: activation name (see :mod:`numlayers.activations`), default linear.
        weights: initial ``[W, b]`` (``[W]`` without bias), ``W`` of shape
            ``(nb_filter, input_dim, filter_length, 1)`` as Keras 0.3's.
        border_mode: ``"valid"``, ``"same"`` or ``"full"``.
        subsample_length: the stride between output steps.
        W_regularizer, b_regularizer, activity_regularizer: regularizers
            (:mod:`numlayers.regularizers`).
        W_constraint, b_constraint: constraints (:mod:`numlayers.constraints`).
        bias: whether to add a bias per filter.
        input_dim, input_length: shortcut for ``input_shape=(input_length, input_dim)``.
        dilation: spacing of the taps (atrous convolution), 1 for adjacent taps.
        seed: int or numpy Generator for the initial weights (default: the global seed).

    Input shape: ``(samples, steps, input_dim)``.
    Output shape: ``(samples, new_steps, nb_filter)``.

    Example:
        >>> layer = Convolution1D(4, 3, border_mode="same", input_dim=2, input_length=5)
        >>> layer(np.ones((2, 5, 2), "float32")).shape
        (2, 5, 4)
    """

    input_ndim = 3
    layout = "steps"

    def __init__(
        self,
        nb_filter: int,
        filter_length: int,
        init: Any = "uniform",
        activation: Any = "linear",
        weights: Sequence[Any] | None = None,
        border_mode: str = "valid",
        subsample_length: int = 1,
        W_regularizer: Any = None,
        b_regularizer: Any = None,
        activity_regularizer: Any = None,
        W_constraint: Any = None,
        b_constraint: Any = None,
        bias: bool = True,
        input_dim: int | None = None,
        input_length: int | None = None,
        dilation: int = 1,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        if input_dim is not None or input_length is not None:
            if "input_shape" in kwargs or "batch_input_shape" in kwargs:
                raise ValueError(f"{owner}: give input_dim/input_length or input_shape, not both")
            kwargs["input_shape"] = (input_length, input_dim)
        length = positive_ints(filter_length, 1, "filter_length", owner)[0]
        stride = positive_ints(subsample_length, 1, "subsample_length", owner)[0]
        spacing = positive_ints(dilation, 1, "dilation", owner)[0]
        super().__init__(
            nb_filter,
            (length, 1),
            (stride, 1),
            (spacing, 1),
            init=init,
            activation=activation,
            weights=weights,
            border_mode=border_mode,
            bias=bias,
            W_regularizer=W_regularizer,
            b_regularizer=b_regularizer,
            activity_regularizer=activity_regularizer,
            W_constraint=W_constraint,
            b_constraint=b_constraint,
            **kwargs,
        )
        self.filter_length = length
        self.subsample_length = stride
        self.dilation = spacing
        self._finish_init()

    def spatial_axes(self) -> tuple[int, ...]:
        return (1,)

    def channel_axis(self) -> int:
        return 2

    def kernel_view(self, array: Any) -> Any:
        samples, steps, features = array.shape
        return array.reshape(samples, steps, 1, features)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            filter_length=self.filter_length,
            subsample_length=self.subsample_length,
            dilation=self.dilation,
        )
        return config


class Convolution2D(_Convolution):
    """Convolution (cross-correlation) over the rows and columns of images.

    ``output[n, f, i, j] = activation(b[f] + sum over channels c and taps (r, s) of
    W[f, c, r, s] * input[n, c, i * sr - pr + r * dr, j * sc - pc + s * dc])`` (``"th"``
    ordering; ``(sr, sc)`` is ``subsample``, ``(dr, dc)`` the dilation and ``(pr, pc)``
    the zeros before the input that ``border_mode`` puts there, see the module doc).
    For a kernel trained by Keras 0.3 on Theano, load
    ``convert_kernel(W, dim_ordering)``.

    Args:
        nb_filter: number of filters (output channels).
        nb_row, nb_col: the filters' rows and columns.
        init: weight initialisation name (see :mod:`numlayers.initializations`).
        activation: activation name (see :mod:`numlayers.activations`), default linear
            (softmax normalises over the last axis).
        weights: initial ``[W, b]`` (``[W]`` without bias), ``W`` in Keras 0.3's layout:
            ``(nb_filter, stack_size, nb_row, nb_col)`` for ``"th"``,
            ``(nb_row, nb_col, stack_size, nb_filter)`` for ``"tf"``.
        border_mode: ``"valid"``, ``"same"`` or ``"full"``.
        subsample: the strides ``(rows, cols)`` (or one int for both).
        dim_ordering: ``"th"`` (channels first) or ``"tf"`` (channels last).
        W_regularizer, b_regularizer, activity_regularizer: regularizers
            (:mod:`numlayers.regularizers`).
        W_constraint, b_constraint: constraints (:mod:`numlayers.constraints`).
        bias: whether to add a bias per filter.
        dilation: spacing of the taps ``(rows, cols)`` or one int (atrous convolution).
        seed: int or numpy Generator for the initial weights (default: the global seed).

    Input shape: ``(samples, channels, rows, cols)`` for ``"th"``,
    ``(samples, rows, cols, channels)`` for ``"tf"``.
    Output shape: ``(samples, nb_filter, new_rows, new_cols)`` for ``"th"``,
    ``(samples, new_rows, new_cols, nb_filter)`` for ``"tf"``.

    Example:
        >>> layer = Convolution2D(4, 3, 3, input_shape=(1, 6, 6), subsample=(2, 2))
        >>> layer(np.ones((2, 1, 6, 6), "float32")).shape
        (2, 4, 2, 2)
    """

    input_ndim = 4

    def __init__(
        self,
        nb_filter: int,
        nb_row: int,
        nb_col: int,
        init: Any = "glorot_uniform",
        activation: Any = "linear",
        weights: Sequence[Any] | None = None,
        border_mode: str = "valid",
        subsample: Any = (1, 1),
        dim_ordering: str = "th",
        W_regularizer: Any = None,
        b_regularizer: Any = None,
        activity_regularizer: Any = None,
        W_constraint: Any = None,
        b_constraint: Any = None,
        bias: bool = True,
        dilation: Any = (1, 1),
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        self.layout = check_dim_ordering(dim_ordering, owner)
        self.dim_ordering = self.layout
        rows = positive_ints(nb_row, 1, "nb_row", owner)[0]
        cols = positive_ints(nb_col, 1, "nb_col", owner)[0]
        super().__init__(
            nb_filter,
            (rows, cols),
            positive_ints(subsample, 2, "subsample", owner),
            positive_ints(dilation, 2, "dilation", owner),
            init=init,
            activation=activation,
            weights=weights,
            border_mode=border_mode,
            bias=bias,
            W_regularizer=W_regularizer,
            b_regularizer=b_regularizer,
            activity_regularizer=activity_regularizer,
            W_constraint=W_constraint,
            b_constraint=b_constraint,
            **kwargs,
        )
        self.nb_row = rows
        self.nb_col = cols
        self.subsample = self.strides
        self.dilation = self.dilations
        self._finish_init()

    def spatial_axes(self) -> tuple[int, ...]:
        return (2, 3) if self.layout == "th" else (1, 2)

    def channel_axis(self) -> int:
        return 1 if self.layout == "th" else 3

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            nb_row=self.nb_row,
            nb_col=self.nb_col,
            # lists, as a JSON file gives them back
            subsample=list(self.subsample),
            dim_ordering=self.dim_ordering,
            dilation=list(self.dilation),
        )
        return config


# Keras 0.3's keras.layers.convolutional also held these (see
# numlayers.layers.keras_paths); its conv_output_length is output_length
__getattr__, __dir__, __all__ = forwarded_names(
    __name__,
    globals(),
    {
        **homes_in("numlayers.layers.convolutional3d", "Convolution3D"),
        **homes_in(
            "numlayers.layers.pooling",
            *(f"{kind}{rank}D" for kind in ("MaxPooling", "AveragePooling") for rank in (1, 2, 3)),
            *(f"{kind}{rank}D" for kind in ("UpSampling", "ZeroPadding") for rank in (1, 2, 3)),
        ),
        "conv_output_length": "numlayers.layers.spatial:output_length",
    },
)
