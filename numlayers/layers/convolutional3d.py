"""Convolution3D: convolution (cross-correlation) over volumes, as Keras 0.3.3's.

A 3-D convolution is computed by the kernels of :mod:`numlayers.kernels.convolutional`
as a 2-D one over the last two spatial axes ``(d2, d3)`` whose channels are the pairs
(channel, depth tap), the weight ``(F, C, k1, k2, k3)`` (``"th"``) being the 2-D
``(F, C * k1, k2, k3)`` by a reshape. Two ways, the kernels' choice
(``convolution_takes_volumes``):

- **Volumes, whole** (the CPU's stride-1 channels-first path, with at least 16 folded
  channels): the kernels take the input itself and write the output ``(N, F, O1, O2,
  O3)`` in its order (``"tf"``: the input, the weight and the output permuted to
  channels first and back, unless softmax runs after the kernels). Each sample is
  padded once, planes times channels as rows, and an output plane's window over the
  depth is then a block of those rows, a view: nothing is gathered or permuted, and
  the backward pass adds each plane's input gradient into the padded gradient volume
  in place. The threads share out the planes, so one volume keeps them all busy.
  Forward plus backward, 16 -> 16 channels, 3 x 3 x 3 "same", 8 volumes of 16 x 32 x
  32, float32, on 2 cores: 48 ms through the images below, 39 ms this way (``"tf"``:
  64 and 47 ms).
- **Gathered images** (CUDA, strides over the rows or columns, few channels,
  ``"tf"`` with softmax):

  1. the depth gather (:mod:`numlayers.kernels.convolutional.depth`) lays the input
     slices under each output depth's ``k1`` taps side by side: ``"th"``:
     ``(N * O1, C * k1, d2, d3)``, ``"tf"``: ``(N * O1, d2, d3, k1 * C)``, zeros where
     a tap falls on the padding;
  2. for ``"tf"`` the weight ``(k1, k2, k3, C, F)`` is copied, once per pass, into
     the 2-D ``(k2, k3, k1 * C, F)`` (and its gradient back);
  3. the 2-D kernels give ``(N * O1, F, O2, O3)`` (``"th"``) or ``(N * O1, O2, O3,
     F)`` (``"tf"``) with the bias and the activation applied in the same pass, the
     ``"tf"`` one already the output ``(N, O1, O2, O3, F)`` by a reshape, the
     ``"th"`` one the output ``(N, F, O1, O2, O3)`` after one permute (axes 1 and 2
     swapped);
  4. backward, the 2-D kernels' backward gives the weight and bias gradients and the
     gathered input's gradient, which the gather's adjoint (col2im along the depth)
     adds up into the input gradient, skipped when ``needs_input_gradient`` is off.

  The gather costs memory: ``k1 / s1`` times the input (three times for a 3 x 3 x 3
  kernel at stride 1), kept for the backward pass.

Border modes are Keras 0.3.3's for Convolution3D, ``"valid"`` and ``"same"``, with the
2-D layers' padding (:mod:`numlayers.layers.spatial`: ``"same"`` gives
``ceil(length / stride)`` outputs, the larger half of the zeros after the input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers.kernels.convolutional import ConvolutionGeometry
from numlayers.kernels.convolutional.depth import DepthWindow
from numlayers.layers.convolutional import _Convolution
from numlayers.layers.spatial import (
    check_dim_ordering,
    output_length,
    padding_before,
    positive_ints,
)

#: Keras 0.3.3's Convolution3D border modes (it has no "full")
BORDER_MODES_3D = ("valid", "same")
#: ``(N, O1, F, O2, O3)`` to ``(N, F, O1, O2, O3)`` and back (a swap is its own inverse)
SWAP_DEPTH_AND_FILTERS = (0, 2, 1, 3, 4)
#: the ``"tf"`` weight ``(k1, k2, k3, C, F)`` as ``(k2, k3, k1, C, F)``, and back
TF_WEIGHT_TO_2D = (1, 2, 0, 3, 4)
TF_WEIGHT_FROM_2D = (2, 0, 1, 3, 4)
#: ``"tf"`` volumes convolved channels first: the input ``(N, d1, d2, d3, C)`` as
#: ``(N, C, d1, d2, d3)``, the output back, and the weight ``(k1, k2, k3, C, F)`` as
#: ``(F, C, k1, k2, k3)`` and back
CHANNELS_FIRST = (0, 4, 1, 2, 3)
CHANNELS_LAST = (0, 2, 3, 4, 1)
TF_WEIGHT_TO_TH = (4, 3, 0, 1, 2)
TH_WEIGHT_TO_TF = (2, 3, 4, 1, 0)


class Convolution3D(_Convolution):
    """Convolution (cross-correlation) over the three spatial axes of volumes.

    ``output[n, f, i, j, l] = activation(b[f] + sum over channels c and taps
    (r, s, t) of W[f, c, r, s, t] * input[n, c, i * s1 - p1 + r, j * s2 - p2 + s,
    l * s3 - p3 + t])`` (``"th"`` ordering; ``(s1, s2, s3)`` is ``subsample`` and
    ``(p1, p2, p3)`` the zeros before the input that ``border_mode`` puts there).
    Keras 0.3.3 ran this layer on Theano only, as true convolution: for a kernel
    trained there, load ``W`` flipped along its three kernel axes
    (``np.flip(W, (2, 3, 4))``).

    Args:
        nb_filter: number of filters (output channels).
        kernel_dim1, kernel_dim2, kernel_dim3: the filters' size along the three
            spatial axes.
        init: weight initialisation name (see :mod:`numlayers.initializations`).
        activation: activation name (see :mod:`numlayers.activations`), default linear
            (softmax normalises over the last axis).
        weights: initial ``[W, b]`` (``[W]`` without bias), ``W`` in Keras 0.3.3's
            layout: ``(nb_filter, stack_size, kernel_dim1, kernel_dim2, kernel_dim3)``
            for ``"th"``, ``(kernel_dim1, kernel_dim2, kernel_dim3, stack_size,
            nb_filter)`` for ``"tf"``.
        border_mode: ``"valid"`` or ``"same"``.
        subsample: the strides ``(s1, s2, s3)`` (or one int for all three).
        dim_ordering: ``"th"`` (channels first) or ``"tf"`` (channels last).
        W_regularizer, b_regularizer, activity_regularizer: regularizers
            (:mod:`numlayers.regularizers`).
        W_constraint, b_constraint: constraints (:mod:`numlayers.constraints`).
        bias: whether to add a bias per filter.
        seed: int or numpy Generator for the initial weights (default: the global seed).

    Input shape: ``(samples, channels, conv_dim1, conv_dim2, conv_dim3)`` for
    ``"th"``, ``(samples, conv_dim1, conv_dim2, conv_dim3, channels)`` for ``"tf"``.
    Output shape: ``(samples, nb_filter, new_dim1, new_dim2, new_dim3)`` for ``"th"``,
    ``(samples, new_dim1, new_dim2, new_dim3, nb_filter)`` for ``"tf"``.

    Example:
        >>> layer = Convolution3D(4, 3, 3, 3, input_shape=(1, 5, 6, 6), subsample=(1, 2, 2))
        >>> layer(np.ones((2, 1, 5, 6, 6), "float32")).shape
        (2, 4, 3, 2, 2)
    """

    input_ndim = 5

    def __init__(
        self,
        nb_filter: int,
        kernel_dim1: int,
        kernel_dim2: int,
        kernel_dim3: int,
        init: Any = "glorot_uniform",
        activation: Any = "linear",
        weights: Sequence[Any] | None = None,
        border_mode: str = "valid",
        subsample: Any = (1, 1, 1),
        dim_ordering: str = "th",
        W_regularizer: Any = None,
        b_regularizer: Any = None,
        activity_regularizer: Any = None,
        W_constraint: Any = None,
        b_constraint: Any = None,
        bias: bool = True,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        self.layout = check_dim_ordering(dim_ordering, owner)
        self.dim_ordering = self.layout
        if border_mode not in BORDER_MODES_3D:
            raise ValueError(
                f"{owner}: border_mode must be one of {BORDER_MODES_3D}, received {border_mode!r}"
            )
        kernel = tuple(
            positive_ints(size, 1, f"kernel_dim{axis}", owner)[0]
            for axis, size in enumerate((kernel_dim1, kernel_dim2, kernel_dim3), start=1)
        )
        super().__init__(
            nb_filter,
            kernel,
            positive_ints(subsample, 3, "subsample", owner),
            (1, 1, 1),
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
        self.kernel_dim1, self.kernel_dim2, self.kernel_dim3 = kernel
        self.subsample = self.strides
        self._finish_init()

    def spatial_axes(self) -> tuple[int, ...]:
        return (2, 3, 4) if self.layout == "th" else (1, 2, 3)

    def channel_axis(self) -> int:
        return 1 if self.layout == "th" else 4

    # ------------------------------------------------------- volumes or gathered images
    def geometry(self, input_shape: tuple[int, ...]) -> ConvolutionGeometry:
        """The images' geometry (depth taps folded into the channels), or the volumes'
        (channels first, the depth fields set) when the kernels take them whole; the
        choice is saved (``volumes``) for the pass's other steps, which this starts."""
        geometry, volumes = self.chosen_geometry(input_shape)
        self.save(volumes=volumes)
        return geometry

    def volume_geometry(
        self, images: ConvolutionGeometry, input_shape: tuple[int, ...]
    ) -> ConvolutionGeometry:
        # the sizes are the same in either ordering; volumes are convolved channels first
        window = self.depth_window(input_shape)
        return images._replace(
            layout="th",
            depth_size=window.depth,
            kernel_depth=window.taps,
            out_depth=window.outputs,
            stride_depth=window.stride,
            pad_depth=window.pad,
        )

    def chosen_geometry(self, input_shape: tuple[int, ...]) -> tuple[ConvolutionGeometry, bool]:
        """The geometry the kernels take a batch of ``input_shape`` in, and whether it is
        the volumes': channels first (``"tf"``: the input, the weight and the output
        permuted each way), else images whose channels gather the depth taps. ``"tf"``
        keeps the images when an activation runs after the kernels (softmax), which
        reads the last axis."""
        images = super().geometry(input_shape)
        if self.layout == "tf" and self.fused_activation() != self.activation.name:
            return images, False
        volumes = self.volume_geometry(images, input_shape)
        if self.kernels.convolution_takes_volumes(volumes):
            return volumes, True
        return images, False

    def takes_volumes(self, input_shape: tuple[int, ...]) -> bool:
        """Whether the kernels convolve a batch of ``input_shape`` as volumes."""
        return self.chosen_geometry(input_shape)[1]

    def depth_window(self, input_shape: tuple[int, ...]) -> DepthWindow:
        """Where the depth taps stand for an input of ``input_shape``."""
        depth, rows, cols = (input_shape[axis] for axis in self.spatial_axes())
        taps, stride = self.kernel_dim1, self.strides[0]
        return DepthWindow(
            self.layout,
            channels=input_shape[self.channel_axis()],
            depth=depth,
            plane=rows * cols,
            taps=taps,
            outputs=output_length(depth, taps, self.border_mode, stride) or 0,
            stride=stride,
            pad=padding_before(depth, taps, self.border_mode, stride),
        )

    def kernel_input(self, x: Any) -> Any:
        """The volumes channels first (``"th"``: the input itself), or the input gathered
        along the depth: ``(N * O1, C * k1, d2, d3)`` for ``"th"``, ``(N * O1, d2, d3,
        k1 * C)`` for ``"tf"``."""
        if self.saved()["volumes"]:
            return x if self.layout == "th" else self.permuted(x, CHANNELS_FIRST, "x_th")
        window = self.depth_window(tuple(x.shape))
        batch = x.shape[0] * window.outputs
        folded = window.channels * window.taps
        rows, cols = (x.shape[axis] for axis in self.spatial_axes()[1:])
        shape = (batch, folded, rows, cols) if self.layout == "th" else (batch, rows, cols, folded)
        columns = self.buffer("columns", shape)
        self.kernels.depth_gather_forward(x, window, columns)
        self.save(depth_window=window)
        return columns

    def input_gradient(self, grad_input: Any, x: Any) -> Any:
        if self.saved()["volumes"]:
            if self.layout == "th":
                return grad_input
            return self.permuted(grad_input, CHANNELS_LAST, "grad_x")
        grad_x = self.buffer("grad_x", tuple(x.shape))
        self.kernels.depth_gather_backward(grad_input, self.saved()["depth_window"], grad_x)
        return grad_x

    # ------------------------------------------------------- the 2-D weight
    def kernels_layout(self) -> str:
        """The ordering the kernels run in this pass (volumes: channels first)."""
        return "th" if self.saved()["volumes"] else self.layout

    def kernel_weight(self) -> Any:
        weight = self.params[0]
        shape = self.kernel_weight_shape(self.kernels_layout())
        if self.layout == "th":
            return weight.reshape(shape)
        if self.kernels_layout() == "th":
            return self.permuted(weight, TF_WEIGHT_TO_TH, "weight_th").reshape(shape)
        return self.permuted(weight, TF_WEIGHT_TO_2D, "weight_2d").reshape(shape)

    def kernel_weight_shape(self, layout: str) -> tuple[int, ...]:
        """The 2-D kernels' weight: ``(F, C * k1, k2, k3)`` for ``"th"``, ``(k2, k3,
        k1 * C, F)`` for ``"tf"``."""
        folded = self._built_input_dim * self.kernel_dim1  # type: ignore[operator]
        if layout == "th":
            return (self.nb_filter, folded, self.kernel_dim2, self.kernel_dim3)
        return (self.kernel_dim2, self.kernel_dim3, folded, self.nb_filter)

    def kernel_weight_gradient(self) -> Any:
        layout = self.kernels_layout()
        if self.layout == "th":
            return self.grads[0].reshape(self.kernel_weight_shape(layout))
        return self.buffer(f"grad_weight_{layout}", self.kernel_weight_shape(layout))

    def finish_weight_gradient(self, grad_weight: Any) -> None:
        if self.layout == "th":
            return
        to_tf = TH_WEIGHT_TO_TF if self.kernels_layout() == "th" else TF_WEIGHT_FROM_2D
        moved_shape = tuple(self.grads[0].shape[axis] for axis in np.argsort(to_tf))
        self.permute_into(grad_weight.reshape(moved_shape), to_tf, self.grads[0])

    # ------------------------------------------------------- the output
    def kernel_view(self, array: Any) -> Any:
        """An output in its arrangement: volumes' ``(N, F, O1, O2, O3)`` as it is, images'
        ``(N, O1, ...)`` as the 2-D kernels' ``(N * O1, ...)``."""
        if self.saved()["volumes"]:
            return array
        return array.reshape(array.shape[0] * array.shape[1], *array.shape[2:])

    def to_output_axes(self, volumes: bool) -> tuple[int, ...] | None:
        """The permute from the outputs' arrangement to the output (None: the same):
        ``"th"`` images ``(N, O1, F, O2, O3)`` swap two axes, ``"tf"`` volumes ``(N, F,
        O1, O2, O3)`` move the filters last."""
        if self.layout == "th":
            return None if volumes else SWAP_DEPTH_AND_FILTERS
        return CHANNELS_LAST if volumes else None

    def arranged_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = super().arranged_output_shape(input_shape)
        axes = self.to_output_axes(self.saved()["volumes"])
        if axes is None:
            return shape
        return tuple(shape[axis] for axis in np.argsort(axes))

    def arranged_to_output(self, array: Any, slot: str) -> Any:
        axes = self.to_output_axes(self.saved()["volumes"])
        return array if axes is None else self.permuted(array, axes, slot)

    def output_to_arranged(self, array: Any, slot: str) -> Any:
        axes = self.to_output_axes(self.saved()["volumes"])
        if axes is None:
            return array
        return self.permuted(array, tuple(int(axis) for axis in np.argsort(axes)), slot)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            kernel_dim1=self.kernel_dim1,
            kernel_dim2=self.kernel_dim2,
            kernel_dim3=self.kernel_dim3,
            # a list, as a JSON file gives it back
            subsample=list(self.subsample),
            dim_ordering=self.dim_ordering,
        )
        return config
