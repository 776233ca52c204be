"""Batch normalization (Keras 0.3's ``BatchNormalization``, modes 0 and 1).

Every array is seen as 3-D ``(outer, features, inner)``: the normalised axis in the
middle, the axes before it merged into ``outer`` and those after it into ``inner``
(a ``(batch, features)`` matrix is ``(batch, features, 1)``, a channels-first image
batch ``(batch, channels, height * width)``). ``gamma``, ``beta`` and the running
statistics have one value per feature.

Operations (both devices; outputs are overwritten):

- ``batch_norm_forward(x, gamma, beta, running_mean, running_var, epsilon, momentum,
  train, mean, inv_std, out)`` (mode 0): each feature is normalised over its
  ``outer * inner`` values. With ``train``, ``mean`` and ``inv_std`` get the batch's
  mean and ``1 / sqrt(variance + epsilon)`` (the biased variance, from two passes: the
  mean, then the squares of the deviations from it, so a large mean loses no
  precision), and the running statistics move towards the batch's in place,
  ``running = momentum * running + (1 - momentum) * batch``; without, ``mean`` and
  ``inv_std`` come from the running statistics. Then
  ``out = gamma * (x - mean) * inv_std + beta``.
- ``batch_norm_backward(x, grad_out, gamma, mean, inv_std, train, grad_x, grad_gamma,
  grad_beta, grad_running_mean, grad_running_var)``: the gradients of the forward pass
  that gave ``mean`` and ``inv_std`` (with ``train``: through the batch statistics,
  and the running statistics get zero gradients, as the output does not depend on
  them; without: through the running statistics).
- ``sample_norm_forward(x, gamma, beta, epsilon, mean, inv_std, out)`` (mode 1): each
  ``(outer, inner)`` position is normalised over its features; ``mean`` and
  ``inv_std`` are ``(outer, inner)``.
- ``sample_norm_backward(x, grad_out, gamma, mean, inv_std, grad_x, grad_gamma,
  grad_beta)``: its gradients.

With ``n`` values per statistic, ``xc = x - mean``, ``S1 = sum(grad_out)`` and
``S2 = sum(grad_out * xc)`` over them, the input gradient through batch statistics
is ``gamma * inv_std * (grad_out - S1 / n - xc * inv_std**2 * S2 / n)``,
``grad_gamma = S2 * inv_std`` and ``grad_beta = S1`` (:func:`gradient_coefficients`).
These per-statistic formulas are plain functions written once, inlined into the CPU
loops and compiled as CUDA device functions.

The CPU splits the features into blocks, over every core when
:func:`~numlayers.kernels.toolkit.use_parallel` says so; a block's sums run along
contiguous memory (across a row of features when ``inner`` is 1, along each
feature's run of ``inner`` values otherwise), so both layouts vectorise. CUDA gives a
block of :data:`GROUP_THREADS` threads to each statistic (a feature in mode 0, a
position in mode 1), grid-stride over them, and sums in shared memory; nothing
comes back to the host.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numba
import numpy as np
from numba import prange

from numlayers.kernels.toolkit import (
    MAX_BLOCKS,
    CpuLoop,
    DeviceArray,
    bind_cuda,
    cpu_inline,
    launch_size,
)

#: ``numba.cuda``, bound by :func:`bind_cuda` (the reductions name it as a module global)
cuda: Any = None

#: threads of the CUDA block that reduces one statistic's values
GROUP_THREADS = launch_size(256, 4)
#: features per CPU block when they are contiguous (``inner`` is 1): 64 float32 are
#: four cache lines of each row, enough for a vectorised pass, and 1024 features
#: make 16 blocks to share among the cores
ROW_BLOCK = 64
#: Work of one element (see :func:`~numlayers.kernels.toolkit.use_parallel`): a training
#: forward reads the input three times and writes once, a backward reads two arrays
#: twice and writes once; each pass is a vectorised multiply-add.
NORMALIZATION_COST = 4.0


# ---------------------------------------------------------------- per-statistic formulas


def inverse_std(sum_squares, inv_count, epsilon, one):
    """``(variance, 1 / sqrt(variance + epsilon))`` from the centred sum of squares."""
    variance = sum_squares * inv_count
    return variance, one / math.sqrt(variance + epsilon)


def running_average(running, batch, momentum, one):
    """Keras 0.3's update of a running statistic."""
    return momentum * running + (one - momentum) * batch


def gradient_coefficients(gamma, inv_std, sum_grad, sum_grad_centred, inv_count, batch, zero):
    """``(a, b, c)`` of the input gradient ``a * grad + b * (x - mean) + c``.

    ``batch``: whether the statistics were the batch's (they then depend on ``x``).
    """
    scale = gamma * inv_std
    if batch:
        return (
            scale,
            -scale * inv_std * inv_std * sum_grad_centred * inv_count,
            -scale * sum_grad * inv_count,
        )
    return scale, zero, zero


def running_gradients(gamma, inv_std, sum_grad, sum_grad_centred, batch, zero, half):
    """Gradients of the running mean and variance: zero when the batch's were used."""
    if batch:
        return zero, zero
    scale = gamma * inv_std
    return -scale * sum_grad, -half * scale * inv_std * inv_std * sum_grad_centred


inverse_std_cpu = cpu_inline(inverse_std)
running_average_cpu = cpu_inline(running_average)
gradient_coefficients_cpu = cpu_inline(gradient_coefficients)
running_gradients_cpu = cpu_inline(running_gradients)


# ---------------------------------------------------------------- CPU feature blocks
# Each helper covers features [start, stop) with block-local accumulators (index
# k = f - start). With one value per (row, feature) the loop runs along a row of
# features (contiguous, vectorised); otherwise along each feature's contiguous run of
# values. ``start`` and ``stop`` are unsigned: Numba checks signed indices for
# wraparound, which keeps LLVM from vectorising the row loops.


@cpu_inline
def add_shifted_sums(x, start, stop, zero, sums):
    """``sums[k] += sum(x[:, f, :] - x[0, f, 0])``: sums of values near zero,
    so a large mean (``x[0, f, 0]`` plus their average) keeps its low digits."""
    if x.shape[2] == 1:
        for o in range(x.shape[0]):
            for k in range(stop - start):
                f = start + k
                sums[k] += x[o, f, 0] - x[0, f, 0]
    else:
        for o in range(x.shape[0]):
            for k in range(stop - start):
                f = start + k
                shift = x[0, f, 0]
                total = zero
                for i in range(x.shape[2]):
                    total += x[o, f, i] - shift
                sums[k] += total


@cpu_inline
def add_centred_squares(x, start, stop, mean, zero, squares):
    """``squares[k] += sum((x[:, f, :] - mean[f]) ** 2)``."""
    if x.shape[2] == 1:
        for o in range(x.shape[0]):
            for k in range(stop - start):
                f = start + k
                deviation = x[o, f, 0] - mean[f]
                squares[k] += deviation * deviation
    else:
        for o in range(x.shape[0]):
            for k in range(stop - start):
                f = start + k
                centre = mean[f]
                total = zero
                for i in range(x.shape[2]):
                    deviation = x[o, f, i] - centre
                    total += deviation * deviation
                squares[k] += total


@cpu_inline
def add_gradient_sums(x, grad, start, stop, mean, zero, sums, products):
    """``sums[k] += sum(grad[:, f, :])`` and
    ``products[k] += sum(grad[:, f, :] * (x[:, f, :] - mean[f]))``."""
    if x.shape[2] == 1:
        for o in range(x.shape[0]):
            for k in range(stop - start):
                f = start + k
                g = grad[o, f, 0]
                sums[k] += g
                products[k] += g * (x[o, f, 0] - mean[f])
    else:
        for o in range(x.shape[0]):
            for k in range(stop - start):
                f = start + k
                centre = mean[f]
                total = zero
                product = zero
                for i in range(x.shape[2]):
                    g = grad[o, f, i]
                    total += g
                    product += g * (x[o, f, i] - centre)
                sums[k] += total
                products[k] += product


@cpu_inline
def write_feature_affine(x, start, stop, mean, scale, beta, out):
    """``out[:, f, :] = scale * (x - mean[f]) + beta[f]`` (``scale`` block-local).

    Centred before scaling: ``scale * x + (beta - scale * mean)`` would cancel
    catastrophically when the mean is large.
    """
    if x.shape[2] == 1:
        for o in range(x.shape[0]):
            for k in range(stop - start):
                f = start + k
                out[o, f, 0] = scale[k] * (x[o, f, 0] - mean[f]) + beta[f]
    else:
        for o in range(x.shape[0]):
            for k in range(stop - start):
                f = start + k
                centre = mean[f]
                a = scale[k]
                b = beta[f]
                for i in range(x.shape[2]):
                    out[o, f, i] = a * (x[o, f, i] - centre) + b


@cpu_inline
def write_feature_gradient(x, grad, start, stop, mean, a, b, c, grad_x):
    """``grad_x[:, f, :] = a * grad + b * (x - mean[f]) + c`` (block-local coefficients)."""
    if x.shape[2] == 1:
        for o in range(x.shape[0]):
            for k in range(stop - start):
                f = start + k
                grad_x[o, f, 0] = a[k] * grad[o, f, 0] + b[k] * (x[o, f, 0] - mean[f]) + c[k]
    else:
        for o in range(x.shape[0]):
            for k in range(stop - start):
                f = start + k
                centre = mean[f]
                for i in range(x.shape[2]):
                    grad_x[o, f, i] = a[k] * grad[o, f, i] + b[k] * (x[o, f, i] - centre) + c[k]


def feature_blocks(x: Any) -> int:
    """Features per CPU block: :data:`ROW_BLOCK` along rows, one along runs."""
    return ROW_BLOCK if x.shape[2] == 1 else 1


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    cast = dtype.type
    zero, one, half = cast(0), cast(1), cast(0.5)

    def batch_forward_blocks(
        x, gamma, beta, running_mean, running_var, epsilon, momentum, train, inv_count,
        block, mean, inv_std, out,
    ):  # fmt: skip
        features = x.shape[1]
        for first in prange((features + block - 1) // block):
            start = first * block
            stop = min(start + block, features)
            width = stop - start
            scale = np.empty(width, x.dtype)
            if train:
                sums = np.zeros(width, x.dtype)
                add_shifted_sums(x, np.uint64(start), np.uint64(stop), zero, sums)
                for f in range(start, stop):
                    mean[f] = x[0, f, 0] + sums[f - start] * inv_count
                squares = np.zeros(width, x.dtype)
                add_centred_squares(x, np.uint64(start), np.uint64(stop), mean, zero, squares)
                for f in range(start, stop):
                    variance, inv_std[f] = inverse_std_cpu(
                        squares[f - start], inv_count, epsilon, one
                    )
                    running_mean[f] = running_average_cpu(running_mean[f], mean[f], momentum, one)
                    running_var[f] = running_average_cpu(running_var[f], variance, momentum, one)
            else:
                for f in range(start, stop):
                    mean[f] = running_mean[f]
                    inv_std[f] = one / math.sqrt(running_var[f] + epsilon)
            for f in range(start, stop):
                scale[f - start] = gamma[f] * inv_std[f]
            write_feature_affine(x, np.uint64(start), np.uint64(stop), mean, scale, beta, out)

    def batch_backward_blocks(
        x, grad, gamma, mean, inv_std, train, inv_count, block,
        grad_x, grad_gamma, grad_beta, grad_running_mean, grad_running_var,
    ):  # fmt: skip
        features = x.shape[1]
        for first in prange((features + block - 1) // block):
            start = first * block
            stop = min(start + block, features)
            width = stop - start
            sums = np.zeros(width, x.dtype)
            products = np.zeros(width, x.dtype)
            add_gradient_sums(
                x, grad, np.uint64(start), np.uint64(stop), mean, zero, sums, products
            )
            a = np.empty(width, x.dtype)
            b = np.empty(width, x.dtype)
            c = np.empty(width, x.dtype)
            for f in range(start, stop):
                k = f - start
                terms = gradient_coefficients_cpu(
                    gamma[f], inv_std[f], sums[k], products[k], inv_count, train, zero
                )
                a[k] = terms[0]
                b[k] = terms[1]
                c[k] = terms[2]
                grad_gamma[f] = products[k] * inv_std[f]
                grad_beta[f] = sums[k]
                grad_running_mean[f], grad_running_var[f] = running_gradients_cpu(
                    gamma[f], inv_std[f], sums[k], products[k], train, zero, half
                )
            write_feature_gradient(
                x, grad, np.uint64(start), np.uint64(stop), mean, a, b, c, grad_x
            )

    def sample_forward_rows(x, gamma, beta, epsilon, inv_count, mean, inv_std, out):
        for o in prange(x.shape[0]):
            inner = x.shape[2]
            for i in range(inner):
                mean[o, i] = zero
                inv_std[o, i] = zero  # the sum of squares, until it is inverted
            for f in range(x.shape[1]):
                for i in range(inner):
                    mean[o, i] += x[o, f, i] - x[o, 0, i]
            for i in range(inner):
                mean[o, i] = x[o, 0, i] + mean[o, i] * inv_count
            for f in range(x.shape[1]):
                for i in range(inner):
                    deviation = x[o, f, i] - mean[o, i]
                    inv_std[o, i] += deviation * deviation
            for i in range(inner):
                inv_std[o, i] = inverse_std_cpu(inv_std[o, i], inv_count, epsilon, one)[1]
            for f in range(x.shape[1]):
                for i in range(inner):
                    normalised = (x[o, f, i] - mean[o, i]) * inv_std[o, i]
                    out[o, f, i] = gamma[f] * normalised + beta[f]

    def sample_backward_rows(x, grad, gamma, mean, inv_std, inv_count, grad_x):
        for o in prange(x.shape[0]):
            inner = x.shape[2]
            sums = np.zeros(inner, x.dtype)
            products = np.zeros(inner, x.dtype)
            for f in range(x.shape[1]):
                for i in range(inner):
                    g = grad[o, f, i] * gamma[f]
                    sums[i] += g
                    products[i] += g * (x[o, f, i] - mean[o, i])
            for f in range(x.shape[1]):
                for i in range(inner):
                    terms = gradient_coefficients_cpu(
                        one, inv_std[o, i], sums[i], products[i], inv_count, True, zero
                    )
                    centred = x[o, f, i] - mean[o, i]
                    grad_x[o, f, i] = (
                        terms[0] * grad[o, f, i] * gamma[f] + terms[1] * centred + terms[2]
                    )

    def sample_parameter_gradients(x, grad, mean, inv_std, grad_gamma, grad_beta):
        for f in prange(x.shape[1]):
            total = zero
            product = zero
            for o in range(x.shape[0]):
                for i in range(x.shape[2]):
                    g = grad[o, f, i]
                    total += g
                    product += g * (x[o, f, i] - mean[o, i]) * inv_std[o, i]
            grad_gamma[f] = product
            grad_beta[f] = total

    # every loop's work is the size of ``x`` (its first argument), times the passes
    # reassociating the sums lets LLVM vectorise them (as lanes of partial sums)
    fast = {"reassoc", "contract"}
    batch_forward_loop = CpuLoop(
        batch_forward_blocks, cost=NORMALIZATION_COST, size_argument=0, fastmath=fast
    )
    batch_backward_loop = CpuLoop(
        batch_backward_blocks, cost=NORMALIZATION_COST, size_argument=0, fastmath=fast
    )
    sample_forward_loop = CpuLoop(sample_forward_rows, cost=NORMALIZATION_COST, size_argument=0)
    sample_backward_loop = CpuLoop(sample_backward_rows, cost=NORMALIZATION_COST, size_argument=0)
    sample_parameter_loop = CpuLoop(
        sample_parameter_gradients, cost=NORMALIZATION_COST, size_argument=0
    )

    def batch_norm_forward(
        x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any, epsilon: float,
        momentum: float, train: bool, mean: Any, inv_std: Any, out: Any,
    ) -> None:  # fmt: skip
        inv_count = cast(1.0 / (x.shape[0] * x.shape[2]))
        batch_forward_loop(
            x, gamma, beta, running_mean, running_var, cast(epsilon), cast(momentum),
            bool(train), inv_count, feature_blocks(x), mean, inv_std, out,
        )  # fmt: skip

    def batch_norm_backward(
        x: Any, grad_out: Any, gamma: Any, mean: Any, inv_std: Any, train: bool, grad_x: Any,
        grad_gamma: Any, grad_beta: Any, grad_running_mean: Any, grad_running_var: Any,
    ) -> None:  # fmt: skip
        inv_count = cast(1.0 / (x.shape[0] * x.shape[2]))
        batch_backward_loop(
            x, grad_out, gamma, mean, inv_std, bool(train), inv_count, feature_blocks(x),
            grad_x, grad_gamma, grad_beta, grad_running_mean, grad_running_var,
        )  # fmt: skip

    def sample_norm_forward(
        x: Any, gamma: Any, beta: Any, epsilon: float, mean: Any, inv_std: Any, out: Any
    ) -> None:
        inv_count = cast(1.0 / x.shape[1])
        sample_forward_loop(x, gamma, beta, cast(epsilon), inv_count, mean, inv_std, out)

    def sample_norm_backward(
        x: Any, grad_out: Any, gamma: Any, mean: Any, inv_std: Any, grad_x: Any,
        grad_gamma: Any, grad_beta: Any,
    ) -> None:  # fmt: skip
        inv_count = cast(1.0 / x.shape[1])
        sample_backward_loop(x, grad_out, gamma, mean, inv_std, inv_count, grad_x)
        sample_parameter_loop(x, grad_out, mean, inv_std, grad_gamma, grad_beta)

    return {
        "batch_norm_forward": batch_norm_forward,
        "batch_norm_backward": batch_norm_backward,
        "sample_norm_forward": sample_norm_forward,
        "sample_norm_backward": sample_norm_backward,
    }


# ---------------------------------------------------------------- CUDA


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    # hand-written kernels: a block's threads sum one statistic's values in shared memory
    kernels = bind_cuda(globals(), cuda_api, dtype)
    cast = dtype.type
    zero, one, half = cast(0), cast(1), cast(0.5)
    scalar = kernels.scalar
    vector = kernels.array(1)
    matrix = kernels.array(2)
    cube = kernels.array(3)
    flag = numba.types.boolean
    inverse_std_of = kernels.device(inverse_std)
    running_average_of = kernels.device(running_average)
    coefficients_of = kernels.device(gradient_coefficients)
    running_gradients_of = kernels.device(running_gradients)

    def block_sum_pair(first, second, partial):
        """Every thread of the block gets the block's sums of ``first`` and ``second``."""
        t = cuda.threadIdx.x
        partial[0, t] = first
        partial[1, t] = second
        cuda.syncthreads()
        width = GROUP_THREADS // 2
        while width > 0:
            if t < width:
                partial[0, t] += partial[0, t + width]
                partial[1, t] += partial[1, t + width]
            cuda.syncthreads()
            width //= 2
        sums = (partial[0, 0], partial[1, 0])
        cuda.syncthreads()  # every thread has read the sums before the next reduction
        return sums

    sum_pair = kernels.device(block_sum_pair)

    # mode 0: a block per feature, its threads over the feature's outer * inner values
    @kernels.jit(cube, vector, vector, vector, vector, scalar, scalar, flag, scalar,
                 vector, vector, cube)  # fmt: skip
    def batch_forward_kernel(
        x, gamma, beta, running_mean, running_var, epsilon, momentum, train, inv_count,
        mean, inv_std, out,
    ):  # fmt: skip
        partial = cuda.shared.array((2, GROUP_THREADS), scalar)
        inner = x.shape[2]
        count = x.shape[0] * inner
        t = cuda.threadIdx.x
        for f in range(cuda.blockIdx.x, x.shape[1], cuda.gridDim.x):
            if train:
                shift = x[0, f, 0]
                total = zero
                for k in range(t, count, GROUP_THREADS):
                    total += x[k // inner, f, k % inner] - shift
                centre = shift + sum_pair(total, zero, partial)[0] * inv_count
                squares = zero
                for k in range(t, count, GROUP_THREADS):
                    deviation = x[k // inner, f, k % inner] - centre
                    squares += deviation * deviation
                variance, inverse = inverse_std_of(
                    sum_pair(squares, zero, partial)[0], inv_count, epsilon, one
                )
                if t == 0:
                    running_mean[f] = running_average_of(running_mean[f], centre, momentum, one)
                    running_var[f] = running_average_of(running_var[f], variance, momentum, one)
            else:
                centre = running_mean[f]
                inverse = one / math.sqrt(running_var[f] + epsilon)
            if t == 0:
                mean[f] = centre
                inv_std[f] = inverse
            scale = gamma[f] * inverse
            for k in range(t, count, GROUP_THREADS):
                o = k // inner
                i = k % inner
                out[o, f, i] = scale * (x[o, f, i] - centre) + beta[f]

    @kernels.jit(cube, cube, vector, vector, vector, flag, scalar,
                 cube, vector, vector, vector, vector)  # fmt: skip
    def batch_backward_kernel(
        x, grad, gamma, mean, inv_std, train, inv_count,
        grad_x, grad_gamma, grad_beta, grad_running_mean, grad_running_var,
    ):  # fmt: skip
        partial = cuda.shared.array((2, GROUP_THREADS), scalar)
        inner = x.shape[2]
        count = x.shape[0] * inner
        t = cuda.threadIdx.x
        for f in range(cuda.blockIdx.x, x.shape[1], cuda.gridDim.x):
            centre = mean[f]
            total = zero
            product = zero
            for k in range(t, count, GROUP_THREADS):
                g = grad[k // inner, f, k % inner]
                total += g
                product += g * (x[k // inner, f, k % inner] - centre)
            sums = sum_pair(total, product, partial)
            terms = coefficients_of(gamma[f], inv_std[f], sums[0], sums[1], inv_count, train, zero)
            if t == 0:
                grad_gamma[f] = sums[1] * inv_std[f]
                grad_beta[f] = sums[0]
                grad_running_mean[f], grad_running_var[f] = running_gradients_of(
                    gamma[f], inv_std[f], sums[0], sums[1], train, zero, half
                )
            for k in range(t, count, GROUP_THREADS):
                o = k // inner
                i = k % inner
                grad_x[o, f, i] = (
                    terms[0] * grad[o, f, i] + terms[1] * (x[o, f, i] - centre) + terms[2]
                )

    # mode 1: a block per (outer, inner) position, its threads over the features
    @kernels.jit(cube, vector, vector, scalar, scalar, matrix, matrix, cube)
    def sample_forward_kernel(x, gamma, beta, epsilon, inv_count, mean, inv_std, out):
        partial = cuda.shared.array((2, GROUP_THREADS), scalar)
        inner = x.shape[2]
        t = cuda.threadIdx.x
        for position in range(cuda.blockIdx.x, x.shape[0] * inner, cuda.gridDim.x):
            o = position // inner
            i = position % inner
            shift = x[o, 0, i]
            total = zero
            for f in range(t, x.shape[1], GROUP_THREADS):
                total += x[o, f, i] - shift
            centre = shift + sum_pair(total, zero, partial)[0] * inv_count
            squares = zero
            for f in range(t, x.shape[1], GROUP_THREADS):
                deviation = x[o, f, i] - centre
                squares += deviation * deviation
            inverse = inverse_std_of(sum_pair(squares, zero, partial)[0], inv_count, epsilon, one)[
                1
            ]
            if t == 0:
                mean[o, i] = centre
                inv_std[o, i] = inverse
            for f in range(t, x.shape[1], GROUP_THREADS):
                out[o, f, i] = gamma[f] * (x[o, f, i] - centre) * inverse + beta[f]

    @kernels.jit(cube, cube, vector, matrix, matrix, scalar, cube)
    def sample_backward_kernel(x, grad, gamma, mean, inv_std, inv_count, grad_x):
        partial = cuda.shared.array((2, GROUP_THREADS), scalar)
        inner = x.shape[2]
        t = cuda.threadIdx.x
        for position in range(cuda.blockIdx.x, x.shape[0] * inner, cuda.gridDim.x):
            o = position // inner
            i = position % inner
            centre = mean[o, i]
            total = zero
            product = zero
            for f in range(t, x.shape[1], GROUP_THREADS):
                g = grad[o, f, i] * gamma[f]
                total += g
                product += g * (x[o, f, i] - centre)
            sums = sum_pair(total, product, partial)
            terms = coefficients_of(one, inv_std[o, i], sums[0], sums[1], inv_count, True, zero)
            for f in range(t, x.shape[1], GROUP_THREADS):
                centred = x[o, f, i] - centre
                grad_x[o, f, i] = (
                    terms[0] * grad[o, f, i] * gamma[f] + terms[1] * centred + terms[2]
                )

    # mode 1's parameter gradients: a block per feature, over every position
    @kernels.jit(cube, cube, matrix, matrix, vector, vector)
    def sample_parameter_kernel(x, grad, mean, inv_std, grad_gamma, grad_beta):
        partial = cuda.shared.array((2, GROUP_THREADS), scalar)
        inner = x.shape[2]
        count = x.shape[0] * inner
        t = cuda.threadIdx.x
        for f in range(cuda.blockIdx.x, x.shape[1], cuda.gridDim.x):
            total = zero
            product = zero
            for k in range(t, count, GROUP_THREADS):
                o = k // inner
                i = k % inner
                g = grad[o, f, i]
                total += g
                product += g * (x[o, f, i] - mean[o, i]) * inv_std[o, i]
            sums = sum_pair(total, product, partial)
            if t == 0:
                grad_gamma[f] = sums[1]
                grad_beta[f] = sums[0]

    def groups(count: int) -> int:
        return min(count, MAX_BLOCKS)

    def batch_norm_forward(
        x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any, epsilon: float,
        momentum: float, train: bool, mean: Any, inv_std: Any, out: Any,
    ) -> None:  # fmt: skip
        if x.size == 0:
            return
        inv_count = cast(1.0 / (x.shape[0] * x.shape[2]))
        batch_forward_kernel[groups(x.shape[1]), GROUP_THREADS](
            x, gamma, beta, running_mean, running_var, cast(epsilon), cast(momentum),
            bool(train), inv_count, mean, inv_std, out,
        )  # fmt: skip

    def batch_norm_backward(
        x: Any, grad_out: Any, gamma: Any, mean: Any, inv_std: Any, train: bool, grad_x: Any,
        grad_gamma: Any, grad_beta: Any, grad_running_mean: Any, grad_running_var: Any,
    ) -> None:  # fmt: skip
        if x.size == 0:
            return
        inv_count = cast(1.0 / (x.shape[0] * x.shape[2]))
        batch_backward_kernel[groups(x.shape[1]), GROUP_THREADS](
            x, grad_out, gamma, mean, inv_std, bool(train), inv_count,
            grad_x, grad_gamma, grad_beta, grad_running_mean, grad_running_var,
        )  # fmt: skip

    def sample_norm_forward(
        x: Any, gamma: Any, beta: Any, epsilon: float, mean: Any, inv_std: Any, out: Any
    ) -> None:
        if x.size == 0:
            return
        inv_count = cast(1.0 / x.shape[1])
        sample_forward_kernel[groups(x.shape[0] * x.shape[2]), GROUP_THREADS](
            x, gamma, beta, cast(epsilon), inv_count, mean, inv_std, out
        )

    def sample_norm_backward(
        x: Any, grad_out: Any, gamma: Any, mean: Any, inv_std: Any, grad_x: Any,
        grad_gamma: Any, grad_beta: Any,
    ) -> None:  # fmt: skip
        if x.size == 0:
            return
        inv_count = cast(1.0 / x.shape[1])
        sample_backward_kernel[groups(x.shape[0] * x.shape[2]), GROUP_THREADS](
            x, grad_out, gamma, mean, inv_std, inv_count, grad_x
        )
        sample_parameter_kernel[groups(x.shape[1]), GROUP_THREADS](
            x, grad_out, mean, inv_std, grad_gamma, grad_beta
        )

    return {
        "batch_norm_forward": batch_norm_forward,
        "batch_norm_backward": batch_norm_backward,
        "sample_norm_forward": sample_norm_forward,
        "sample_norm_backward": sample_norm_backward,
    }


class NormalizationKernels(Protocol):
    """The normalization family's operations, the same on both devices (module doc)."""

    def batch_norm_forward(
        self,
        x: DeviceArray,
        gamma: DeviceArray,
        beta: DeviceArray,
        running_mean: DeviceArray,
        running_var: DeviceArray,
        epsilon: float,
        momentum: float,
        train: bool,
        mean: DeviceArray,
        inv_std: DeviceArray,
        out: DeviceArray,
    ) -> None: ...

    def batch_norm_backward(
        self,
        x: DeviceArray,
        grad_out: DeviceArray,
        gamma: DeviceArray,
        mean: DeviceArray,
        inv_std: DeviceArray,
        train: bool,
        grad_x: DeviceArray,
        grad_gamma: DeviceArray,
        grad_beta: DeviceArray,
        grad_running_mean: DeviceArray,
        grad_running_var: DeviceArray,
    ) -> None: ...

    def sample_norm_forward(
        self,
        x: DeviceArray,
        gamma: DeviceArray,
        beta: DeviceArray,
        epsilon: float,
        mean: DeviceArray,
        inv_std: DeviceArray,
        out: DeviceArray,
    ) -> None: ...

    def sample_norm_backward(
        self,
        x: DeviceArray,
        grad_out: DeviceArray,
        gamma: DeviceArray,
        mean: DeviceArray,
        inv_std: DeviceArray,
        grad_x: DeviceArray,
        grad_gamma: DeviceArray,
        grad_beta: DeviceArray,
    ) -> None: ...
