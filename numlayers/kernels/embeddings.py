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

The gather's element copy and the non-zero mask are per-element bodies that both
devices run (the CPU's gather loop reads each token's id once per row). CUDA
clears the gradient with the ``fill`` body of :mod:`numlayers.kernels.arrays` and
scatters with ``cuda.atomic.add``, one thread per (token, column); ``index_range`` is a
hand-written grid-stride reduction finished with atomics.

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

from typing import Any, Protocol

import numba
import numpy as np
from numba import prange

from numlayers.kernels.arrays import fill_element
from numlayers.kernels.toolkit import (
    BLOCK_SIZE,
    KERNEL_OPTIONS,
    CpuLoop,
    CudaKernels,
    DeviceArray,
    bind_cuda,
    blocks_for,
    cpu_inline,
    cpu_loop,
    device_index_loop,
    use_parallel,
)

#: ``numba.cuda``, bound by :func:`bind_cuda`: the scatter's atomics and the
#: ``index_range`` reduction are CUDA-only code that names it as a module global
cuda: Any = None

#: The work of one element in the toolkit's units (one elementwise multiply-add), from
#: serial timings against ``scale_add_into`` on the 2-core development machine: the
#: gather reads rows scattered over the weight (4 to 6); the mask compares (1.4); the
#: backward tests, and maybe clears, each gradient element and adds a few (1.3).
GATHER_COST = 4.0
ELEMENT_COST = 1.0
#: elements of the gradient tested (and, if not all zero, cleared) at a time;
#: 256 float32 are 1 KiB, long enough for a vectorised test, short enough that a
#: scattered row of a previous batch dirties little around it
CLEAR_CHUNK = 256
#: most blocks of the ``index_range`` reduction: each block ends in two atomics on the
#: same two words, so more blocks would only queue on them
RANGE_BLOCKS = 1024


def scatter_parts() -> int:
    """How many row ranges the parallel CPU backward splits the vocabulary into."""
    return numba.get_num_threads()


@cpu_inline
def take_element(token, column, row, weight, out):
    out[token, column] = weight[row, column]


def gather_element(token, column, indices, weight, out):
    # CUDA: one thread per element, so that neighbouring threads copy neighbours
    take_element(token, column, indices[token], weight, out)


@cpu_loop(cost=GATHER_COST, size_argument=2)
def gather_rows(indices, weight, out):
    # The CPU reads each token's id once, before its columns: read inside the element
    # body it would be read again for every column (for all Numba knows, ``out`` may
    # alias ``indices``) and the copy would not vectorise, 5 to 10 times slower.
    for token in prange(indices.shape[0]):
        row = indices[token]
        for column in range(out.shape[1]):
            take_element(token, column, row, weight, out)


@cpu_inline
def nonzero_element(index, indices, one, zero, mask):
    mask[index] = one if indices[index] != 0 else zero


def scatter_add_element(token, column, indices, grad_out, grad_weight):
    # CUDA only: repeated ids race, hence the atomic (the CPU splits the vocabulary)
    cuda.atomic.add(grad_weight, (indices[token], column), grad_out[token, column])


def clear_and_scatter(indices, grad_out, grad_weight, grad_bits, no_bits, parts):
    """The CPU backward: ``parts`` threads each clear and then fill their own rows."""
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


#: :func:`clear_and_scatter`'s twins; the backward picks one itself, since the number of
#: parts depends on which runs
clear_and_scatter_loops = CpuLoop(clear_and_scatter, cost=ELEMENT_COST, size_argument=2)


@numba.njit(**KERNEL_OPTIONS)
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


def nonzero_mask_operation(dtype: np.dtype, cuda: CudaKernels | None) -> Any:
    """``nonzero_mask`` on the CPU (``cuda`` None) or on CUDA."""
    one = dtype.type(1)
    zero = dtype.type(0)
    scalar = numba.from_dtype(dtype)
    write_mask = device_index_loop(
        cuda, nonzero_element, (numba.int64[::1], scalar, scalar, scalar[::1]), cost=ELEMENT_COST
    )

    def nonzero_mask(indices: Any, mask: Any) -> None:
        write_mask(mask.size, indices.reshape(indices.size), one, zero, mask.reshape(mask.size))

    return nonzero_mask


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    # the gradient's elements seen as integers of the same width: a chunk is clear
    # when the OR of its bits is 0 (which, unlike comparing floats, also rewrites -0.0)
    bits_dtype = np.dtype(f"int{dtype.itemsize * 8}")
    no_bits = bits_dtype.type(0)

    def embedding_forward(indices: np.ndarray, weight: np.ndarray, out: np.ndarray) -> None:
        gather_rows(indices.reshape(-1), weight, out.reshape(indices.size, weight.shape[1]))

    def embedding_backward(
        indices: np.ndarray, grad_out: np.ndarray, grad_weight: np.ndarray
    ) -> None:
        if use_parallel(grad_weight.size, ELEMENT_COST):
            scatter, parts = clear_and_scatter_loops.parallel, scatter_parts()
        else:
            scatter, parts = clear_and_scatter_loops.serial, 1
        scatter(
            indices.reshape(-1),
            grad_out.reshape(indices.size, grad_weight.shape[1]),
            grad_weight,
            grad_weight.reshape(-1).view(bits_dtype),
            no_bits,
            parts,
        )

    def index_range(indices: np.ndarray, bounds: np.ndarray) -> None:
        index_range_cpu(indices, bounds)

    return {
        "embedding_forward": embedding_forward,
        "embedding_backward": embedding_backward,
        "nonzero_mask": nonzero_mask_operation(dtype, None),
        "index_range": index_range,
    }


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = bind_cuda(globals(), cuda_api, dtype)
    matrix = registry.array(2)
    ids = registry.array(1, np.int64)
    zero = dtype.type(0)
    gather = registry.index_loop(gather_element, (ids, matrix, matrix), dims=2)
    clear = registry.index_loop(fill_element, (registry.scalar, registry.array(1)))
    scatter_add = registry.index_loop(scatter_add_element, (ids, matrix, matrix), dims=2)

    def embedding_forward(indices: Any, weight: Any, out: Any) -> None:
        tokens, dim = indices.size, weight.shape[1]
        gather(tokens, dim, indices.reshape(tokens), weight, out.reshape(tokens, dim))

    def embedding_backward(indices: Any, grad_out: Any, grad_weight: Any) -> None:
        clear(grad_weight.size, zero, grad_weight.reshape(grad_weight.size))
        tokens, dim = indices.size, grad_weight.shape[1]
        scatter_add(
            tokens, dim, indices.reshape(tokens), grad_out.reshape(tokens, dim), grad_weight
        )

    # A reduction, so hand-written: each thread keeps the least and greatest id of its
    # grid-stride share and each block's threads end in atomic min and max on ``bounds``,
    # which a one-thread kernel first sets to the first id.
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
        blocks = min(blocks_for(indices.size), RANGE_BLOCKS)
        index_range_kernel[blocks, BLOCK_SIZE](indices, bounds)

    return {
        "embedding_forward": embedding_forward,
        "embedding_backward": embedding_backward,
        "nonzero_mask": nonzero_mask_operation(dtype, registry),
        "index_range": index_range,
    }


class EmbeddingKernels(Protocol):
    """The embedding family's operations, the same on both devices (module doc)."""

    def embedding_forward(
        self, indices: DeviceArray, weight: DeviceArray, out: DeviceArray
    ) -> None: ...

    def embedding_backward(
        self, indices: DeviceArray, grad_out: DeviceArray, grad_weight: DeviceArray
    ) -> None: ...

    def nonzero_mask(self, indices: DeviceArray, mask: DeviceArray) -> None: ...

    def index_range(self, indices: DeviceArray, bounds: DeviceArray) -> None: ...
