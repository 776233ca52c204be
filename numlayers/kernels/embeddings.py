"""Embedding lookup (a row gather) and its gradient (a row scatter-add).

Operations (both devices; ``indices`` are int64 and already checked by the caller to
lie in ``[0, vocabulary)``: the kernels do no bounds checks):

- ``embedding_forward(indices, weight, out)``: ``indices`` is ``(batch, length)``,
  ``weight`` is ``(vocabulary, dim)``, ``out`` is ``(batch, length, dim)`` and
  ``out[b, t, :] = weight[indices[b, t], :]``
- ``embedding_backward(indices, grad_out, grad_weight)``: ``grad_weight`` is
  overwritten with the dense gradient: zero, then ``grad_out[b, t, :]`` added into
  row ``indices[b, t]`` (repeated indices accumulate)
- ``nonzero_mask(indices, mask)``: ``mask[b, t] = 1`` where ``indices[b, t] != 0``,
  else ``0`` (``Embedding(mask_zero=True)``; ``mask`` has the layer dtype)
- ``index_range(indices, bounds)``: ``bounds`` (int64, length 2) gets the smallest and
  largest id of the flat ``indices``: what the layer checks before any lookup, reduced
  on the device so only two numbers travel to the host

CUDA gathers one element per thread, clears the gradient with one thread per element
and scatters with ``cuda.atomic.add``, one thread per (token, column).

On the CPU the backward pass is dominated by clearing a gradient much larger than the
batch (50,000 x 128 float32 is 25.6 MB against 2 MB of ``grad_out``). Filling memory
is the slow part and does not get faster with more cores (about 0.9 ms for those
25.6 MB on the 2-core development machine), while reading does (about 0.3 ms). So the
clear reads each chunk of the gradient and writes only chunks whose bits are not all
zero: a gradient buffer reused from the previous batch is zero except for that
batch's rows. The vocabulary is split into one row range per thread; each thread
clears its range and then adds the tokens that fall in it, so repeated indices never
race and no atomics are needed.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import prange

from numlayers.kernels.cuda_support import blocks_for, new_registry
from numlayers.kernels.dropout import compile_serial_and_parallel

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None

#: gathers writing, and gradients holding, at least this many elements use all cores
PARALLEL_MIN_SIZE = 1 << 15
#: elements of the gradient tested (and, if not all zero, cleared) at a time;
#: 256 float32 are 1 KiB, long enough for a vectorised test, short enough that a
#: scattered row of a previous batch dirties little around it
CLEAR_CHUNK = 256


def scatter_parts() -> int:
    """How many row ranges the parallel CPU backward splits the vocabulary into."""
    return numba.get_num_threads()


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    one = dtype.type(1)
    zero = dtype.type(0)
    # the gradient's elements seen as integers of the same width: a chunk is clear
    # when the OR of its bits is 0 (which, unlike comparing floats, also rewrites -0.0)
    bits_dtype = np.dtype(f"int{dtype.itemsize * 8}")
    no_bits = bits_dtype.type(0)

    def gather_rows(indices, weight, out):
        for token in prange(indices.shape[0]):
            row = indices[token]
            for j in range(weight.shape[1]):
                out[token, j] = weight[row, j]

    def clear_and_scatter(indices, grad_out, grad_weight, grad_bits, parts):
        vocabulary, dim = grad_weight.shape
        for part in prange(parts):
            first = part * vocabulary // parts
            last = (part + 1) * vocabulary // parts
            stop = last * dim
            for start in range(first * dim, stop, CLEAR_CHUNK):
                # loops over slices from 0 vectorise; indexing from `start` does not
                chunk = grad_bits[start : min(start + CLEAR_CHUNK, stop)]
                bits = no_bits
                for i in range(chunk.size):
                    bits |= chunk[i]
                if bits != no_bits:
                    chunk[:] = no_bits
            for token in range(indices.shape[0]):
                row = indices[token]
                if first <= row < last:
                    for j in range(dim):
                        grad_weight[row, j] += grad_out[token, j]

    def write_nonzero_mask(indices, mask):
        for i in prange(mask.size):
            mask[i] = one if indices[i] != 0 else zero

    gather_serial, gather_parallel = compile_serial_and_parallel(gather_rows)
    scatter_serial, scatter_parallel = compile_serial_and_parallel(clear_and_scatter)
    nonzero_mask_serial, nonzero_mask_parallel = compile_serial_and_parallel(write_nonzero_mask)

    def embedding_forward(indices: np.ndarray, weight: np.ndarray, out: np.ndarray) -> None:
        gather = gather_parallel if out.size >= PARALLEL_MIN_SIZE else gather_serial
        gather(indices.reshape(-1), weight, out.reshape(indices.size, weight.shape[1]))

    def embedding_backward(
        indices: np.ndarray, grad_out: np.ndarray, grad_weight: np.ndarray
    ) -> None:
        if grad_weight.size >= PARALLEL_MIN_SIZE:
            scatter, parts = scatter_parallel, scatter_parts()
        else:
            scatter, parts = scatter_serial, 1
        scatter(
            indices.reshape(-1),
            grad_out.reshape(indices.size, grad_weight.shape[1]),
            grad_weight,
            grad_weight.reshape(-1).view(bits_dtype),
            parts,
        )

    def nonzero_mask(indices: np.ndarray, mask: np.ndarray) -> None:
        loop = nonzero_mask_parallel if mask.size >= PARALLEL_MIN_SIZE else nonzero_mask_serial
        loop(indices.reshape(-1), mask.reshape(-1))

    return {
        "embedding_forward": embedding_forward,
        "embedding_backward": embedding_backward,
        "nonzero_mask": nonzero_mask,
        "index_range": index_range_cpu,
    }


@numba.njit(cache=True)
def index_range_cpu(indices, bounds):
    low = indices[0]
    high = indices[0]
    for i in range(1, indices.size):
        value = indices[i]
        if value < low:
            low = value
        if value > high:
            high = value
    bounds[0] = low
    bounds[1] = high


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    one = dtype.type(1)
    zero = dtype.type(0)
    vector = registry.array(1)
    matrix = registry.array(2)
    index_vector = registry.array(1, np.int64)

    @registry.jit(index_vector, matrix, matrix)
    def embedding_gather_kernel(indices, weight, out):
        i = cuda.grid(1)
        if i < out.size:
            dim = out.shape[1]
            token = i // dim
            out[token, i % dim] = weight[indices[token], i % dim]

    @registry.jit(vector)
    def embedding_clear_kernel(grad_weight):
        i = cuda.grid(1)
        if i < grad_weight.size:
            grad_weight[i] = zero

    @registry.jit(index_vector, matrix, matrix)
    def embedding_scatter_add_kernel(indices, grad_out, grad_weight):
        i = cuda.grid(1)
        if i < grad_out.size:
            dim = grad_out.shape[1]
            token = i // dim
            cuda.atomic.add(grad_weight, (indices[token], i % dim), grad_out[token, i % dim])

    @registry.jit(index_vector, vector)
    def nonzero_mask_kernel(indices, mask):
        i = cuda.grid(1)
        if i < mask.size:
            mask[i] = one if indices[i] != 0 else zero

    ids = registry.array(1, np.int64)

    @registry.jit(ids, ids)
    def index_range_start_kernel(indices, bounds):
        if cuda.grid(1) == 0:
            bounds[0] = indices[0]
            bounds[1] = indices[0]

    @registry.jit(ids, ids)
    def index_range_kernel(indices, bounds):
        start = cuda.grid(1)
        if start < indices.size:
            low = indices[start]
            high = low
            for i in range(start, indices.size, cuda.gridsize(1)):
                low = min(low, indices[i])
                high = max(high, indices[i])
            cuda.atomic.min(bounds, 0, low)
            cuda.atomic.max(bounds, 1, high)

    def index_range(indices: Any, bounds: Any) -> None:
        index_range_start_kernel[1, 1](indices, bounds)
        index_range_kernel[min(blocks_for(indices.size), 1024), 256](indices, bounds)

    def embedding_forward(indices: Any, weight: Any, out: Any) -> None:
        embedding_gather_kernel[blocks_for(out.size), 256](
            indices.reshape(indices.size), weight, out.reshape(indices.size, weight.shape[1])
        )

    def embedding_backward(indices: Any, grad_out: Any, grad_weight: Any) -> None:
        embedding_clear_kernel[blocks_for(grad_weight.size), 256](
            grad_weight.reshape(grad_weight.size)
        )
        embedding_scatter_add_kernel[blocks_for(grad_out.size), 256](
            indices.reshape(indices.size),
            grad_out.reshape(indices.size, grad_weight.shape[1]),
            grad_weight,
        )

    def nonzero_mask(indices: Any, mask: Any) -> None:
        nonzero_mask_kernel[blocks_for(mask.size), 256](
            indices.reshape(indices.size), mask.reshape(mask.size)
        )

    return {
        "embedding_forward": embedding_forward,
        "embedding_backward": embedding_backward,
        "nonzero_mask": nonzero_mask,
        "index_range": index_range,
    }
