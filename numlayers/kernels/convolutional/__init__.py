"""Convolution kernels (Convolution1D, Convolution2D): cross-correlation as matrix products.

Operations (both devices):

- ``convolution_forward(x, weight, bias, z, y, geometry, workspace, activation)``:
  ``z = x (*) weight + bias`` (``bias`` may have length 0) and ``y = f(z)`` for the
  activation named ``activation``: one of
  :data:`~numlayers.kernels.activations.ELEMENTWISE_FUNCTIONS` that takes no
  parameters (``"linear"``: ``y`` is not written; pass ``z``)
- ``convolution_backward(x, weight, z, y, grad_y, grad_z, grad_x, grad_weight,
  grad_bias, geometry, workspace, need_grad_x, activation)``: ``grad_z`` from
  ``grad_y`` through the activation (``"linear"``: ``grad_z`` is not written; pass
  ``grad_y``), then the weight and bias gradients and, when ``need_grad_x``, the input
  gradient (every gradient is overwritten)
- ``convolution_workspace(geometry, batch)``: the elements ``workspace`` must have for
  a batch of ``batch`` samples (0 on CUDA, which packs nothing)
- ``convolution_takes_volumes(geometry)``: whether the two passes above take volumes
  whole (``geometry`` with its depth fields set, see
  :class:`ConvolutionGeometry`): the CPU's stride-1 ``"th"`` path does; elsewhere
  Convolution3D gathers the depth taps into images (:mod:`.depth`) and passes the
  images' geometry

The arrays are 4-D in one of three layouts (:class:`ConvolutionGeometry`'s ``layout``;
``out`` stands for ``z``, ``y`` and their gradients):

- ``"th"``: ``x (N, C, H, W)``, ``weight (F, C, KH, KW)``, ``out (N, F, OH, OW)``
- ``"tf"``: ``x (N, H, W, C)``, ``weight (KH, KW, C, F)``, ``out (N, OH, OW, F)``
- ``"steps"`` (Convolution1D): ``x (N, L, 1, C)``, ``weight (F, C, KL, 1)``,
  ``out (N, OL, 1, F)``: channels last, with Keras 0.3's channels-first weights

The package: :mod:`.geometry` (the sizes, the index constants and the window helpers
both devices use), :mod:`.cpu` and :mod:`.cuda` (each device's passes and builder).

A sample's *patches* are the input values under each of its ``P = OH * OW`` output
positions, ``K = C * KH * KW`` of them (zeros where the window overhangs the padding).
Each layout's weight is a ``K x F`` or ``F x K`` matrix without moving data, so a
convolution is one product per sample: ``"th"`` gives ``out (F, P) = W (F, K) @
patches (K, P)``, the others ``out (P, F) = patches (P, K) @ W``, with ``K`` ordered as
the weight stores it (``(c, kr, kc)`` for ``"th"`` and ``"steps"``, ``(kr, kc, c)``
for ``"tf"``).

CPU, three paths, all through the BLAS of :mod:`numlayers.kernels.blas` (one thread
pool: Numba's, the BLAS sequential inside it), chosen per shape class by measurement
(:data:`.cpu.DIRECT_MIN_CHANNELS` and :func:`.cpu.rows_path` give the figures):

- ``"th"`` at stride 1 with at least 16 channels (the common case) packs no patches:
  one product per tap with a shifted view of the zero-padded image (see "CPU, th at
  stride 1" in :mod:`.cpu`), each sample on one thread, the samples shared out among
  Numba's threads. At 3 x 3, 32 -> 32 channels this ran 2.5 times as fast as the
  patches.
- ``"tf"`` at stride 1 with at least 16 channels: the same without the threads'
  blocks: the padded images of a chunk of samples as rows of channels, one product per
  tap over the whole chunk (see "CPU, channels last at stride 1" in :mod:`.cpu`),
  which :func:`~numlayers.kernels.blas.product` splits over the threads.
- otherwise (strides above 1, fewer channels, and Convolution1D, where these
  measured faster): the patches of a chunk of samples are
  packed into ``workspace`` (im2col, a compiled loop) and multiplied at once by
  :func:`~numlayers.kernels.blas.product`, which splits the product over the threads;
  the backward pass packs them again, adds ``grad_out @ patches`` into the weight
  gradient, multiplies ``grad_out`` by the weight into the patch buffer and adds those
  patch gradients back into the input gradient (col2im).

The paths compute the products only: one compiled pass over the output then adds
the bias and applies the activation, and in the backward pass one compiled pass takes
the gradient through the activation and sums it per filter into the bias gradient
(the activation's formula compiled into the loop, as the Dense layer's fused passes
do; see "CPU, bias and activation" in :mod:`.cpu`). The padded images of the stride-1
paths are filled by compiled loops too.

CUDA: implicit GEMM. The tiled product of :mod:`numlayers.kernels.matmul` runs with
tile loaders that compute each patch element from the input as they stage it in
shared memory, so no patch matrix exists in global memory. One launch per product:

- forward: the product above (``"th"``: one per sample, walked by the grid's z axis;
  channels last: ``(N P, K) @ (K, F)`` at once), bias added as it is stored, then
  the activation's kernel (backward: its gradient kernel first);
- input gradient: ``grad_x`` at input position ``q`` is the sum over ``d = (kr, kc,
  f)`` of ``weight[f, c, kr, kc] * grad_out[f, o]``, ``o`` the output position whose
  window put tap ``(kr, kc)`` on ``q`` (zero where there is none): a product of
  depth ``F KH KW`` whose loader gathers ``grad_out``;
- weight gradient: ``grad_out`` times the patches over all ``N P`` positions at once,
  the bias gradient as one more column (patches of ones); the depth is split across
  the grid's z axis (split-K) so a small weight still fills the GPU, each slice adding
  its part atomically into outputs zeroed first (one fill launch each).
"""

from __future__ import annotations

from typing import Protocol

from numlayers.kernels.convolutional.cpu import build_cpu
from numlayers.kernels.convolutional.cuda import build_cuda
from numlayers.kernels.convolutional.geometry import ConvolutionGeometry
from numlayers.kernels.toolkit import DeviceArray


class ConvolutionalKernels(Protocol):
    """The convolution family's operations, the same on both devices (module doc)."""

    def convolution_workspace(self, geometry: ConvolutionGeometry, batch: int) -> int: ...

    def convolution_takes_volumes(self, geometry: ConvolutionGeometry) -> bool: ...

    def convolution_forward(
        self,
        x: DeviceArray,
        weight: DeviceArray,
        bias: DeviceArray,
        z: DeviceArray,
        y: DeviceArray,
        geometry: ConvolutionGeometry,
        workspace: DeviceArray,
        activation: str,
    ) -> None: ...

    def convolution_backward(
        self,
        x: DeviceArray,
        weight: DeviceArray,
        z: DeviceArray,
        y: DeviceArray,
        grad_y: DeviceArray,
        grad_z: DeviceArray,
        grad_x: DeviceArray,
        grad_weight: DeviceArray,
        grad_bias: DeviceArray,
        geometry: ConvolutionGeometry,
        workspace: DeviceArray,
        need_grad_x: bool,
        activation: str,
    ) -> None: ...


__all__ = ["ConvolutionGeometry", "ConvolutionalKernels", "build_cpu", "build_cuda"]
