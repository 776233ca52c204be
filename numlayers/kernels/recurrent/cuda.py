"""The recurrent family's CUDA operations: each sequence pass is one persistent kernel.

The rows of a batch are independent through time, so one block runs every step of
its batch rows (a grid-stride loop over rows, ``cuda.syncthreads()`` between the
phases of a step) and no grid-wide synchronisation is needed. A step's recurrent
product (``h_in @ U`` forward, ``dpre @ U.T`` backward) is shared by the whole block
(:func:`block_product`): each thread takes a set of four columns of the product (each
operand element it loads serves the four) and, when there are at most half as many
sets as threads, a slice of the depth too, its slices' sums meeting in shared memory,
where the product then stays for the per-unit phase that reads it (a trip through
global memory would keep that phase waiting). Columns of neighbouring threads are
neighbours in memory, so backward passes multiply by ``U``'s
transpose, which one launch makes at the start of the pass (both of the GRU's
recurrent weights in the same launch); the backward kernels zero the state gradients
of their rows themselves.

The weights stay in shared memory across the steps, as much of them as fits
(:func:`plan_shared`; up to 227 KB a block on an H100): each kernel first copies in
the leading rows of every thread's depth slice, and the per-unit phase that makes a
product's operand row writes it there too (:func:`put_operand`; the product copies it
in itself when it does not fit whole, or after a softmax cell rewrote it), so that
those loads take a trip to shared memory instead of one to L2. A 128-unit GRU keeps
both weights whole in float32, an LSTM 36 of each 43-row slice of its 128 rows. What
does not fit streams from L2, sixteen loads in flight a thread
(:func:`columns_dot`): in the compiled loop each stretch of loads waits out one trip to
L2 before the next stretch is issued (one load at a time, a 128-unit LSTM's forward
step took 34 us on an H100). A block has 384 threads: a product is paced by the
block's loads from shared memory, which fewer threads issue as fast, and each thread
may then have 168 registers, where 512 threads' 128 made ptxas spill in the step
loops.

The cell is then applied unit by unit with the per-unit bodies below (``body(b, j,
...)``, compiled as device code with the cells of :mod:`.cells`). What a unit's
phase reads beside the product does not depend on the product: a forward step's
input projections (:func:`gate_inputs`), a backward step's record of the
forward pass and output gradient (:func:`rnn_backward_record`). Each thread loads
its first unit's before the product, and keeps what it computes of that unit for
the phases and steps that read it next (the state, the cell, their gradients:
:func:`carried`), so that the phase after a product waits for no trip to device
memory. A forward pass is then one launch and a backward pass two, whatever the
number of steps; the input projection and the weight gradients stay GEMMs in the
layer.

A softmax cell activation (its code is linear to the per-unit bodies) needs the
whole row: after the per-unit phase the block's first thread finishes the row with
the row functions of :mod:`.cells` (the LSTM's backward pass runs its whole cell
there); the other activations do not pay for it. ``c`` is the dtype's activation
constants, passed to every kernel so that no formula writes a float64 literal.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numba
import numpy as np

from numlayers.kernels.activations import apply_activation, constants_for
from numlayers.kernels.recurrent.cells import (
    SOFTMAX,
    derivative_from_output,
    dropped_out,
    gru_output,
    gru_output_backward,
    gru_softmax_gradient_row,
    gru_softmax_row,
    incoming_gradient,
    is_masked,
    lstm_cell_backward,
    lstm_cell_state,
    lstm_cell_total_gradient,
    lstm_softmax_backward_row,
    lstm_softmax_row,
    output_gradient,
    output_gradient_step,
    rnn_softmax_gradient_row,
    rnn_softmax_row,
)
from numlayers.kernels.recurrent.sequences import (
    Gradients,
    GruSequence,
    LstmSequence,
    RnnSequence,
    Steps,
)
from numlayers.kernels.toolkit import (
    bind_cuda,
    dynamic_shared_budget,
    empty_vector,
    launch_size,
    multiprocessor_count,
)

#: ``numba.cuda``, bound by :func:`bind_cuda` (the sequence kernels see it as a global)
cuda: Any = None

#: threads of a sequence block on a GPU, which shares the products and units of its
#: batch rows (see the module's doc)
GPU_SEQUENCE_THREADS = 384
#: and under the simulator: eight, so that its 3-unit test products split their depth
SEQUENCE_THREADS = launch_size(GPU_SEQUENCE_THREADS, 8)
#: blocks of a sequence pass at most under the simulator (one per batch row up to this;
#: a block then takes several rows in turn). On a GPU the cap is its SM count: a block
#: keeps most of an SM's shared memory, so one block runs per SM, and a block that
#: takes several rows loads its weights once for them.
SIMULATOR_SEQUENCE_BLOCKS = 2
#: 0 to 4, unsigned, as the step products' indices are (``OFFSET[n]``)
OFFSET = tuple(numba.uint64(n) for n in range(5))

# ---------------------------------------------------------------- step products


#: columns of a step product each thread takes, ``sets`` apart (:func:`column_sets`): it
#: loads each operand element once for all of them, so that a product issues 1.25
#: shared-memory loads an FMA (the weight, a quarter of the operand) instead of two;
#: the block's loads from shared memory, not its FMAs, set the product's pace. The
#: product's code (:func:`columns_dot`, :func:`store_sums`) is written out for four.
THREAD_COLUMNS = 4


def column_sets(columns):
    """How many sets of :data:`THREAD_COLUMNS` columns cover a product's ``columns``: set
    ``s`` takes the columns ``s + k * sets`` below ``columns`` (``k < THREAD_COLUMNS``), so
    that neighbouring threads' columns are neighbours in memory."""
    return (columns + THREAD_COLUMNS - 1) // THREAD_COLUMNS


def depth_slices(depth, columns, threads):
    """``(groups, share)``: how a block's ``threads`` share a product of ``columns``
    columns and ``depth`` rows. Each thread takes a set of columns (:func:`column_sets`);
    when there are at most half as many sets as threads, ``groups`` threads take each
    set, each a slice of ``share`` rows of the depth, as many slices as the depth fills
    (the host plans the shared memory with it too)."""
    sets = column_sets(columns)
    if 2 * sets > threads:
        return 1, depth
    most = max(1, min(threads // sets, depth))
    share = max(1, (depth + most - 1) // most)
    return (depth + share - 1) // share, share


def columns_dot(a, a_at, M, m_at, columns, spread, last, count, sums, zero):
    """``sums`` plus the four sums ``sum_i a[a_at + i] * M[m_at + i * columns + k *
    spread]`` over ``i < count``, ``k < 4``: four columns ``spread`` apart of the flat,
    row-major ``M`` (``columns`` wide) against ``a``, four rows at a time, so that sixteen
    loads of ``M`` are in flight and each element of ``a`` is loaded once for the four. A
    column past ``last`` (the offset of ``M``'s last column from the first one's) reads
    the last column instead; its sum is not used. The indices are unsigned, which spares
    every load Numba's negative-index wraparound."""
    o1 = numba.uint64(min(spread, last))
    o2 = numba.uint64(min(2 * spread, last))
    o3 = numba.uint64(min(3 * spread, last))
    i, j, step = numba.uint64(a_at), numba.uint64(m_at), numba.uint64(columns)
    left = count
    while left >= 4:
        j1 = j + step
        j2 = j1 + step
        j3 = j2 + step
        sums = added(sums, row_products(a[i], M, j, o1, o2, o3))
        sums = added(sums, row_products(a[i + OFFSET[1]], M, j1, o1, o2, o3))
        sums = added(sums, row_products(a[i + OFFSET[2]], M, j2, o1, o2, o3))
        sums = added(sums, row_products(a[i + OFFSET[3]], M, j3, o1, o2, o3))
        i += OFFSET[4]
        j = j3 + step
        left -= 4
    if left > 0:
        # the last one to three rows, all their loads issued at once (row by row, each
        # row would wait out a trip to L2): a row past them reads the first again, and
        # its products are not added
        more, most = left > 1, left > 2
        i1, j1 = (i + OFFSET[1], j + step) if more else (i, j)
        i2, j2 = (i + OFFSET[2], j1 + step) if most else (i, j)
        second = row_products(a[i1], M, j1, o1, o2, o3)
        third = row_products(a[i2], M, j2, o1, o2, o3)
        none = (zero, zero, zero, zero)
        sums = added(sums, row_products(a[i], M, j, o1, o2, o3))
        sums = added(sums, second if more else none)
        sums = added(sums, third if most else none)
    return sums


def row_products(x, M, at, o1, o2, o3):
    """``x`` times the four elements of ``M`` at ``at`` and ``o1``, ``o2``, ``o3`` past it."""
    return x * M[at], x * M[at + o1], x * M[at + o2], x * M[at + o3]


def added(sums, products):
    """``sums`` plus ``products``, element by element (each a multiply-add once compiled)."""
    return (
        sums[0] + products[0], sums[1] + products[1], sums[2] + products[2],
        sums[3] + products[3],
    )  # fmt: skip


def rows_dot(staged, first, M, m_first, columns, column, spread, start, stop, sums, zero):
    """:func:`columns_dot` from ``column`` over the rows ``start <= k < stop`` of a
    product (``sums`` as they are when empty): ``staged`` holds the operand from row
    ``first``, ``M``'s rows from row ``m_first``."""
    if stop <= start:
        return sums
    return columns_dot(
        staged, start - first, M, (start - m_first) * columns + column, columns, spread,
        columns - 1 - column, stop - start, sums, zero,
    )  # fmt: skip


def slice_dot(
    staged, first, last, M, head, head_rows, columns, column, spread, group, start, stop, zero
):
    """Thread group ``group``'s part of a set of columns (from ``column``, ``spread``
    apart) over its depth slice ``start <= k < stop``, for the operand rows ``first <= k
    < last`` now in ``staged``: the slice's first ``head_rows`` rows from ``head``
    (shared memory, where the group's rows begin at row ``group * head_rows``), the rest
    from ``M``."""
    low, high = max(start, first), min(stop, last)
    split = min(max(start + head_rows, low), high)
    kept = rows_dot(
        staged, first, head, start - group * head_rows, columns, column, spread, low, split,
        (zero, zero, zero, zero), zero,
    )  # fmt: skip
    return rows_dot(staged, first, M, 0, columns, column, spread, split, high, kept, zero)


def store_sums(results, at, spread, count, sums, fresh):
    """``results[at + k * spread] = sums[k]`` (added to what is there unless ``fresh``)
    for the ``k`` with ``k * spread < count``: a set's sums, without its columns past the
    product's."""
    s0, s1, s2, s3 = sums
    results[at] = s0 if fresh else results[at] + s0
    if spread < count:
        results[at + spread] = s1 if fresh else results[at + spread] + s1
    if 2 * spread < count:
        results[at + 2 * spread] = s2 if fresh else results[at + 2 * spread] + s2
    if 3 * spread < count:
        results[at + 3 * spread] = s3 if fresh else results[at + 3 * spread] + s3


def block_copy(source, source_at, target, target_at, count):
    """``target[target_at + e] = source[source_at + e]`` for ``e < count``, by the whole
    block: each thread takes every ``blockDim``-th element, sixteen loads in flight
    (one at a time, a thread would wait out a trip to memory for each)."""
    threads = cuda.blockDim.x
    e = cuda.threadIdx.x
    while e + 15 * threads < count:
        at = source_at + e
        v0, v1 = source[at], source[at + threads]
        v2, v3 = source[at + 2 * threads], source[at + 3 * threads]
        v4, v5 = source[at + 4 * threads], source[at + 5 * threads]
        v6, v7 = source[at + 6 * threads], source[at + 7 * threads]
        v8, v9 = source[at + 8 * threads], source[at + 9 * threads]
        v10, v11 = source[at + 10 * threads], source[at + 11 * threads]
        v12, v13 = source[at + 12 * threads], source[at + 13 * threads]
        v14, v15 = source[at + 14 * threads], source[at + 15 * threads]
        at = target_at + e
        target[at], target[at + threads] = v0, v1
        target[at + 2 * threads], target[at + 3 * threads] = v2, v3
        target[at + 4 * threads], target[at + 5 * threads] = v4, v5
        target[at + 6 * threads], target[at + 7 * threads] = v6, v7
        target[at + 8 * threads], target[at + 9 * threads] = v8, v9
        target[at + 10 * threads], target[at + 11 * threads] = v10, v11
        target[at + 12 * threads], target[at + 13 * threads] = v12, v13
        target[at + 14 * threads], target[at + 15 * threads] = v14, v15
        e += 16 * threads
    while e < count:
        target[target_at + e] = source[source_at + e]
        e += threads


def load_head(M, head, head_rows, depth, columns):
    """Copy into ``head`` (shared) the first ``head_rows`` rows of each depth slice of
    the flat ``depth x columns`` matrix ``M`` (see :func:`depth_slices`), by the whole
    block, which every thread calls (it ends with a ``syncthreads``). A slice's kept
    rows are contiguous in both."""
    groups, share = depth_slices(depth, columns, cuda.blockDim.x)
    for group in range(groups):
        rows = max(0, min(head_rows, depth - group * share))
        block_copy(M, group * share * columns, head, group * head_rows * columns, rows * columns)
    cuda.syncthreads()


def block_product(a, row, M, head, head_rows, staged, ready, columns, results, zero):
    """``results[:columns] = a[row] @ M`` by the whole block, which every thread calls (it
    ends with a ``syncthreads``, so the results are complete for every thread on return).

    ``M`` is flat, ``a.shape[1]`` rows of ``columns`` columns; ``head`` holds the first
    ``head_rows`` rows of each of its depth slices in shared memory (see
    :func:`load_head`). ``a[row]`` is copied into ``staged`` (shared) a stretch at a
    time, one stretch when it fits, unless ``ready`` says the caller has put it there
    whole (and synchronised the block). The threads share the sets of columns, and the
    depth as :func:`depth_slices` says. ``results`` is shared too
    (:func:`product_results` elements): the slices' sums meet there, added in a fixed
    order, and the product stays there for the per-unit phase that reads it, which a
    trip to global memory and back would keep waiting. Every reader of the last
    product's results must have passed a barrier."""
    thread, threads = cuda.threadIdx.x, cuda.blockDim.x
    depth = a.shape[1]
    sets = column_sets(columns)
    groups, share = depth_slices(depth, columns, threads)
    group, first_set, set_stride = 0, thread, threads
    if groups > 1:
        group = thread // sets
        first_set = thread - group * sets if group < groups else sets
        set_stride = sets
    start = min(group * share, depth)
    stop = min(start + share, depth)
    for first in range(0, depth, staged.shape[0]):
        last = min(first + staged.shape[0], depth)
        if not ready:  # a row is about one element a thread: no unrolled block_copy
            for k in range(first + thread, last, threads):
                staged[k - first] = a[row, k]
            cuda.syncthreads()
        # one call site (twice the inlined product loops cost registers): a thread
        # takes every ``threads``-th set over the whole depth, or one set of its slice
        for column in range(first_set, sets, set_stride):
            sums = slice_dot(
                staged, first, last, M, head, head_rows, columns, column, sets, group, start,
                stop, zero,
            )  # fmt: skip
            store_sums(results, group * columns + column, sets, columns - column, sums, first == 0)
        cuda.syncthreads()
    if groups > 1:
        # in place: slice ``g``'s sums of column ``k`` lie at ``g * columns + k``, and the
        # thread that adds them up alone reads and writes ``results[k]``
        for column in range(thread, columns, threads):
            total = results[column]
            for other in range(1, groups):
                total += results[other * columns + column]
            results[column] = total
        cuda.syncthreads()


def zero_row(b, x, zero):
    """Row ``b`` of ``x`` zeroed by the block's threads, each the units it later reads."""
    for j in range(cuda.threadIdx.x, x.shape[1], cuda.blockDim.x):
        x[b, j] = zero


def transpose_pair_element(element, first, first_t, second, second_t):
    """Element ``element`` of ``first_t = first.T`` and ``second_t = second.T``, the
    elements counted through ``first`` and then ``second`` (one launch for both)."""
    first_size = first.shape[0] * first.shape[1]
    if element < first_size:
        row, column = element // first.shape[1], element % first.shape[1]
        first_t[column, row] = first[row, column]
    else:
        rest = element - first_size
        row, column = rest // second.shape[1], rest % second.shape[1]
        second_t[column, row] = second[row, column]


# ---------------------------------------------------------------- per-unit bodies
# ``rec``, ``product`` and ``d_rh`` are the step product's results for the block's row
# ``b`` (1-D, in shared memory: :func:`block_product`).


def put_operand(row, column, value, staged):
    """``row[column] = value``, a value the next step product multiplies, also into
    ``staged`` (shared, where that product reads it) when the whole row fits there."""
    row[column] = value
    if staged.shape[0] >= row.shape[0]:
        staged[column] = value


def recurrent_input_element(b, j, h_before, mask_U, has_mask_U, h_in, staged):
    """``h_in``, the step product's operand, also into ``staged`` where it fits whole
    (``h_before`` is the state at ``(b, j)``: see :func:`carried`)."""
    put_operand(h_in[b], j, dropped_out(h_before, mask_U, has_mask_U, b, j), staged)


def carried(value, array, b, j):
    """``array[b, j]``, or ``value`` when ``j`` is the thread's first unit.

    A thread keeps what it computed of its first unit (``j == threadIdx.x``) in
    registers for the next phase or step that reads it (the state, the cell, their
    gradients), which would otherwise wait out a trip to L2 for a value it has just
    written (its other units read theirs back; every phase still writes them, for
    the pass's outputs and for a softmax row, after which the thread reads them
    again)."""
    return value if j == cuda.threadIdx.x else array[b, j]


def gate_inputs(xw, t, b, j, hidden, zero):
    """Unit ``j``'s input projections at step ``t`` of row ``b``, one per gate (``xw``
    holds ``G`` gates of ``hidden`` units): a four-tuple, zero past the ``G``-th.

    They do not depend on the recurrence: each kernel loads its threads' first units'
    before the step's product (a thread with none loads the last unit's, unused), so
    that those loads (from device memory: the layer wrote ``xw`` before the pass) are
    in flight through the product instead of stalling the per-unit phase that adds
    them; a thread's other units load theirs in the phase."""
    gates = xw.shape[2] // hidden
    x0 = xw[t, b, j]
    x1 = xw[t, b, hidden + j] if gates > 1 else zero
    x2 = xw[t, b, 2 * hidden + j] if gates > 2 else zero
    x3 = xw[t, b, 3 * hidden + j] if gates > 3 else zero
    return x0, x1, x2, x3


def rnn_forward_element(b, j, x, rec, t, mask, has_mask, h_unit, h_prev, h_all, act, c):
    """``x`` is :func:`gate_inputs`'; the bodies below return what they computed of the
    unit (see :func:`carried`). A masked step keeps the state, ``h_prev``'s at ``(b,
    j)`` (the thread's first unit's is ``h_unit``): only then is it read."""
    if is_masked(mask, has_mask, t, b, c):
        h = carried(h_unit, h_prev, b, j)
    else:
        h = apply_activation(act, x[0] + rec[j], c)
    h_all[t, b, j] = h
    return h


def rnn_backward_record(h_all, grad, grad_step, t, b, j, zero):
    """What a SimpleRNN backward step reads of unit ``j`` beside its product and the
    state gradient (which the thread keeps: :func:`carried`): the output's gradient and
    ``h_t``.

    None of it depends on the step's product: each backward kernel loads its threads'
    first units' records (these, or the LSTM's and the GRU's) before the product, so
    that the loads are in flight through it instead of stalling the per-unit phase
    after it."""
    return output_gradient(grad, grad_step, b, j, zero), h_all[t, b, j]


def rnn_backward_element(
    b, j, record, held, t, mask, has_mask, product, has_later, mask_U, has_mask_U, dh,
    dpre_all, staged, act, c,
):  # fmt: skip
    """``held`` is what ``dh`` holds at ``(b, j)``; returns what it holds after."""
    output, h = record
    total = incoming_gradient(held, product, has_later, mask_U, has_mask_U, output, b, j, j)
    if is_masked(mask, has_mask, t, b, c):
        put_operand(dpre_all[t, b], j, c.zero, staged)
    else:
        put_operand(dpre_all[t, b], j, total * derivative_from_output(act, h, c), staged)
        total = c.zero  # what reaches h_prev comes through U, next step
    dh[b, j] = total
    return total


def lstm_forward_element(
    b, j, x, rec, t, mask, has_mask, h_unit, h_prev, cell_before, gates_all, c_all, h_all, act,
    inner, c,
):  # fmt: skip
    """As :func:`rnn_forward_element`; ``cell_before`` is the cell at ``(b, j)``."""
    hidden = h_all.shape[2]
    i = apply_activation(inner, x[0] + rec[j], c)
    f = apply_activation(inner, x[1] + rec[hidden + j], c)
    g = apply_activation(act, x[2] + rec[2 * hidden + j], c)
    o = apply_activation(inner, x[3] + rec[3 * hidden + j], c)
    gates_all[t, b, j] = i
    gates_all[t, b, hidden + j] = f
    gates_all[t, b, 2 * hidden + j] = g
    gates_all[t, b, 3 * hidden + j] = o
    if is_masked(mask, has_mask, t, b, c):
        h, cell = carried(h_unit, h_prev, b, j), cell_before
    else:
        cell = lstm_cell_state(i, f, g, cell_before)
        h = o * apply_activation(act, cell, c)
    c_all[t, b, j] = cell
    h_all[t, b, j] = h
    return h, cell


def lstm_backward_record(gates_all, c_all, c_prev, grad, grad_step, t, b, j, zero):
    """As :func:`rnn_backward_record`: the output's gradient, the gates ``i, f, g, o``,
    ``c_t`` and ``c_prev``."""
    hidden = c_prev.shape[1]
    return (
        output_gradient(grad, grad_step, b, j, zero),
        gates_all[t, b, j],
        gates_all[t, b, hidden + j],
        gates_all[t, b, 2 * hidden + j],
        gates_all[t, b, 3 * hidden + j],
        c_all[t, b, j],
        c_prev[b, j],
    )


def lstm_backward_element(
    b, j, record, held_h, held_c, t, mask, has_mask, product, has_later, mask_U, has_mask_U,
    dh, dc, dpre_all, staged, act, inner, c,
):  # fmt: skip
    """``held_h``, ``held_c``: what ``dh`` and ``dc`` hold at ``(b, j)``; returns what they
    hold after."""
    output, i, f, g, o, cell, cell_before = record
    hidden = dh.shape[1]
    dh_total = incoming_gradient(held_h, product, has_later, mask_U, has_mask_U, output, b, j, j)
    dpre = dpre_all[t, b]
    if is_masked(mask, has_mask, t, b, c):
        for gate in range(4):
            put_operand(dpre, gate * hidden + j, c.zero, staged)
        dh[b, j] = dh_total
        return dh_total, held_c
    a = apply_activation(act, cell, c)
    dc_total = lstm_cell_total_gradient(held_c, dh_total * derivative_from_output(act, a, c), o)
    d_i, d_f, d_g, d_o, dc_before = lstm_cell_backward(
        dh_total, dc_total, i, f, g, o, cell_before, a
    )
    put_operand(dpre, j, d_i * derivative_from_output(inner, i, c), staged)
    put_operand(dpre, hidden + j, d_f * derivative_from_output(inner, f, c), staged)
    put_operand(dpre, 2 * hidden + j, d_g * derivative_from_output(act, g, c), staged)
    put_operand(dpre, 3 * hidden + j, d_o * derivative_from_output(inner, o, c), staged)
    dc[b, j] = dc_before
    dh[b, j] = c.zero
    return c.zero, dc_before


def gru_gates_element(b, j, x_z, x_r, rec_zr, t, h_in, gates_all, rh_all, staged, inner, c):
    """``r * h_in``, the second product's operand, also into ``staged`` where it fits
    whole (in place of ``h_in``: each unit is its thread's). Returns ``z``."""
    hidden = h_in.shape[1]
    z = apply_activation(inner, x_z + rec_zr[j], c)
    gates_all[t, b, j] = z
    r = apply_activation(inner, x_r + rec_zr[hidden + j], c)
    gates_all[t, b, hidden + j] = r
    h = staged[j] if staged.shape[0] >= hidden else h_in[b, j]
    put_operand(rh_all[t, b], j, r * h, staged)
    return z


def gru_output_element(b, j, x_h, rec_h, t, mask, has_mask, h_before, z, gates_all, h_all, act, c):
    hidden = h_all.shape[2]
    hh = apply_activation(act, x_h + rec_h[j], c)
    gates_all[t, b, 2 * hidden + j] = hh
    h = h_before
    if not is_masked(mask, has_mask, t, b, c):
        h = gru_output(z, h_before, hh, c)
    h_all[t, b, j] = h
    return h


def gru_backward_record(gates_all, h_prev, grad, grad_step, t, b, j, zero):
    """As :func:`rnn_backward_record`, for the GRU's output phase: the output's gradient,
    the gates ``z`` and ``hh`` and ``h_prev``. (Not what the reset phase reads, which
    would stay in registers through both products: :func:`gru_reset_record`.)"""
    hidden = h_prev.shape[1]
    return (
        output_gradient(grad, grad_step, b, j, zero),
        gates_all[t, b, j],
        gates_all[t, b, 2 * hidden + j],
        h_prev[b, j],
    )


def gru_reset_record(gates_all, h_in, t, b, j):
    """What the GRU's reset phase reads of unit ``j`` beside its product: the gates ``z``
    and ``r`` and ``h_in``, loaded before that product (see
    :func:`rnn_backward_record`)."""
    hidden = h_in.shape[1]
    return gates_all[t, b, j], gates_all[t, b, hidden + j], h_in[b, j]


def gru_backward_output_element(
    b, j, record, held, carried_back, t, mask, has_mask, product, has_later, mask_U,
    has_mask_U, dh, dpre_all, dpre_h, staged, act, c,
):  # fmt: skip
    """``product`` is the later step's ``dpre_zr @ U_zr.T``; ``carried_back`` its ``d_rh *
    r`` at ``(b, j)``, which reaches ``h_in`` alike; ``held`` what ``dh`` holds there.
    ``dpre_h`` is a contiguous copy of ``hh``'s gradients (the next product's operand,
    also put into ``staged``); ``z``'s is left raw for the reset phase. Returns what
    ``dh`` holds after, and ``z``'s raw gradient."""
    output, z, hh, h_before = record
    hidden = dh.shape[1]
    if has_later:
        product[j] += carried_back
    total = incoming_gradient(held, product, has_later, mask_U, has_mask_U, output, b, j, j)
    if is_masked(mask, has_mask, t, b, c):
        for gate in range(3):
            dpre_all[t, b, gate * hidden + j] = c.zero
        put_operand(dpre_h[b], j, c.zero, staged)
        dh[b, j] = total
        return total, c.zero
    d_z, d_hh, dh_before = gru_output_backward(total, z, h_before, hh, c)
    dh[b, j] = dh_before
    dpre_all[t, b, j] = d_z
    d_pre_hh = d_hh * derivative_from_output(act, hh, c)
    dpre_all[t, b, 2 * hidden + j] = d_pre_hh
    put_operand(dpre_h[b], j, d_pre_hh, staged)
    return dh_before, d_z


def gru_backward_reset_element(
    b, j, record, raw_d_z, t, d_rh, mask, has_mask, dpre_all, dpre_zr, carry, staged, inner, c
):
    """From ``d_rh = dpre_h @ U_h.T`` and ``z``'s raw gradient: ``r``'s pre-activation
    gradient, ``z``'s completed (also into the contiguous ``dpre_zr``, the next
    product's operand, and ``staged``), and ``carry``, which it returns."""
    z, r, h_in = record
    hidden = carry.shape[1]
    back = c.zero
    if is_masked(mask, has_mask, t, b, c):
        dpre_all[t, b, hidden + j] = c.zero
        put_operand(dpre_zr[b], j, c.zero, staged)
        put_operand(dpre_zr[b], hidden + j, c.zero, staged)
    else:
        d_r = d_rh[j] * h_in * derivative_from_output(inner, r, c)
        d_z = raw_d_z * derivative_from_output(inner, z, c)
        dpre_all[t, b, j] = d_z
        dpre_all[t, b, hidden + j] = d_r
        put_operand(dpre_zr[b], j, d_z, staged)
        put_operand(dpre_zr[b], hidden + j, d_r, staged)
        back = d_rh[j] * r
    carry[b, j] = back
    return back


# ---------------------------------------------------------------- softmax rows
# ``body(b, ...)`` of a step's row ``b`` (2-D arrays are the step's slices), beyond the
# row functions of :mod:`.cells` that serve as bodies as they are.


def gru_softmax_gradient_element(b, gates, dpre, dpre_h, c):
    """``hh``'s pre-activation gradient, also into its contiguous copy ``dpre_h``."""
    gru_softmax_gradient_row(b, gates, dpre, c)
    hidden = dpre_h.shape[1]
    for j in range(hidden):
        dpre_h[b, j] = dpre[b, 2 * hidden + j]


def lstm_softmax_backward_element(
    b, gates, cells, c_prev, mask, has_mask, t, product, has_later, mask_U, has_mask_U,
    grad, grad_step, dh, dc, dpre, inner, c,
):  # fmt: skip
    """The whole gradient reaching row ``b`` of ``h_t`` into ``dh``, then the cell."""
    for j in range(dh.shape[1]):
        output = output_gradient(grad, grad_step, b, j, c.zero)
        dh[b, j] = incoming_gradient(
            dh[b, j], product, has_later, mask_U, has_mask_U, output, b, j, j
        )
    lstm_softmax_backward_row(b, gates, cells, c_prev, dh, dc, dpre, mask, has_mask, t, inner, c)


# ---------------------------------------------------------------- step order


def step_direction(order: np.ndarray) -> tuple[int, int]:
    """``(first, stride)`` of a processing order that runs through the steps one by one,
    either way (the kernels compute each step's time index from them)."""
    count = len(order)
    first = int(order[0]) if count else 0
    stride = int(order[1] - order[0]) if count > 1 else 1
    if stride not in (1, -1) or not np.array_equal(order, first + stride * np.arange(count)):
        raise ValueError(
            f"recurrent steps must run forwards or backwards one by one, received {order!r}"
        )
    return first, stride


# ---------------------------------------------------------------- shared memory plan

#: Dynamic shared memory of a sequence block under the simulator, which has no limit,
#: for the operand and the weights (beyond the products' results): small enough that
#: the tests' 3-unit float64 LSTM and GRU keep only part of their weights in it, and
#: their float32 twins all (a GPU has up to 227 KB).
SIMULATOR_SHARED_BYTES = 216


def product_results(shapes: tuple[tuple[int, int], ...], threads: int) -> int:
    """Elements of the shared ``results`` of :func:`block_product` for products by
    weights of ``shapes`` (``depth x columns`` each): every depth slice's sums of every
    column, for the product that has the most."""
    return max(depth_slices(depth, columns, threads)[0] * columns for depth, columns in shapes)


class SharedLayout(NamedTuple):
    """What a sequence kernel keeps in its dynamic shared memory, in elements: the
    products' ``results`` (:func:`product_results`), a stretch of ``staged`` elements of
    the step products' operand row (the whole row where it fits), then each recurrent
    weight's head (``rows[i]`` rows of each depth slice, from element ``offsets[i]``).
    ``bytes`` is the launch's dynamic size."""

    results: int
    staged: int
    rows: tuple[int, ...]
    offsets: tuple[int, ...]
    bytes: int

    def arguments(self) -> tuple[int, ...]:
        """The kernels' last six arguments: results and staged, then rows and offset of
        two heads (a kernel with one weight ignores the second pair)."""
        pairs = [value for pair in zip(self.rows, self.offsets, strict=True) for value in pair]
        return (self.results, self.staged, *pairs, *(0,) * (4 - len(pairs)))


@functools.lru_cache(maxsize=64)  # a pass plans on every launch; the host's time counts
def plan_shared(
    shapes: tuple[tuple[int, int], ...], itemsize: int, budget: int, threads: int
) -> SharedLayout:
    """How a sequence kernel multiplying by weights of ``shapes`` (``depth x columns``
    each) lays out its shared memory: the products' results, which it needs whatever
    the budget, then ``budget`` bytes beyond them. The operand row first (as much of it
    as fits: the products then take it a stretch at a time), then the weights, all of
    them where they fit, else the same share of each depth slice of each (the leading
    rows of every slice, so that every thread's slice of a product streams equally few
    rows from L2)."""
    capacity = budget // itemsize
    if capacity < 1:
        raise ValueError(
            f"a recurrent CUDA pass needs at least {itemsize} bytes of shared memory "
            f"beyond its products' results, received a budget of {budget}"
        )
    results = product_results(shapes, threads)
    staged = min(max(depth for depth, _ in shapes), capacity)
    room = capacity - staged
    slices = [depth_slices(depth, columns, threads) for depth, columns in shapes]
    # a head's elements per row it keeps of each slice, and all of its rows'
    per_row = [groups * columns for (groups, _), (_, columns) in zip(slices, shapes, strict=True)]
    whole = sum(size * share for size, (_, share) in zip(per_row, slices, strict=True))
    rows = tuple(share if whole <= room else share * room // whole for _, share in slices)
    offsets, used = [], results + staged
    for size, kept in zip(per_row, rows, strict=True):
        offsets.append(used)
        used += size * kept
    return SharedLayout(results, staged, rows, tuple(offsets), used * itemsize)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    dtype = np.dtype(dtype)
    kernels = bind_cuda(globals(), cuda_api, dtype)
    c = constants_for(dtype)
    scalar, vector = kernels.scalar, kernels.array(1)
    matrix, tensor = kernels.array(2), kernels.array(3)
    index, constants = numba.types.int64, numba.typeof(c)
    device = kernels.device
    take_input, inputs_of = device(recurrent_input_element), device(gate_inputs)
    carry = device(carried)
    product_of_block, zero_block_row = device(block_product), device(zero_row)
    keep_head = device(load_head)
    rnn_forward_body, rnn_backward_body = device(rnn_forward_element), device(rnn_backward_element)
    lstm_forward_body, lstm_backward_body = (
        device(lstm_forward_element),
        device(lstm_backward_element),
    )
    gru_gates_body, gru_output_body = device(gru_gates_element), device(gru_output_element)
    gru_output_backward_body = device(gru_backward_output_element)
    gru_reset_backward_body = device(gru_backward_reset_element)
    rnn_record, lstm_record = device(rnn_backward_record), device(lstm_backward_record)
    gru_record, reset_record = device(gru_backward_record), device(gru_reset_record)
    rnn_softmax_body, rnn_softmax_gradient_body = (
        device(rnn_softmax_row),
        device(rnn_softmax_gradient_row),
    )
    lstm_softmax_body, lstm_softmax_backward_body = (
        device(lstm_softmax_row),
        device(lstm_softmax_backward_element),
    )
    gru_softmax_body, gru_softmax_gradient_body = (
        device(gru_softmax_row),
        device(gru_softmax_gradient_element),
    )
    output_step = device(output_gradient_step)
    # the arguments every pass takes after its arrays: first, stride (the order), mask,
    # has_mask, mask_U, has_mask_U, activation, inner_activation, constants, then the
    # shared layout (results and staged operand lengths, each weight head's rows and
    # offset)
    run = (index, index, matrix, index, matrix, index, index, index, constants, *(index,) * 6)
    # and a backward pass before them: grad, grad_every_step, dpre_all, dh, dc
    backward = (tensor, index, tensor, matrix, matrix)
    sequence_kernel = functools.partial(kernels.jit, threads=SEQUENCE_THREADS, dynamic_shared=True)

    transpose_pair = kernels.index_loop(transpose_pair_element, (matrix,) * 4)

    @sequence_kernel(vector, tensor, matrix, tensor, tensor, *run)
    def rnn_forward_kernel(
        U, xw, h0, h_prev_all, h_all,
        first, stride, mask, has_mask, mask_U, has_mask_U, act, inner, c,
        results_length, staged_length, head_rows, head_at, unused_rows, unused_at,
    ):  # fmt: skip
        kept = cuda.shared.array(0, scalar)
        results, head = kept[:results_length], kept[head_at:]
        staged = kept[results_length : results_length + staged_length]
        thread, threads, hidden = cuda.threadIdx.x, cuda.blockDim.x, h0.shape[1]
        ready = staged.shape[0] >= hidden  # the products' operands are put there whole
        keep_head(U, head, head_rows, hidden, hidden)
        unit = min(thread, hidden - 1)  # the thread's first (see gate_inputs and carried)
        for b in range(cuda.blockIdx.x, h0.shape[0], cuda.gridDim.x):
            h_unit = h0[b, unit]
            for position in range(xw.shape[0]):
                t = first + stride * position
                h_prev = h0 if position == 0 else h_all[t - stride]
                first_x = inputs_of(xw, t, b, unit, hidden, c.zero)
                for j in range(thread, hidden, threads):
                    h = carry(h_unit, h_prev, b, j)
                    take_input(b, j, h, mask_U, has_mask_U, h_prev_all[t], staged)
                cuda.syncthreads()
                product_of_block(
                    h_prev_all[t], b, U, head, head_rows, staged, ready, hidden, results, c.zero
                )
                for j in range(thread, hidden, threads):
                    x = first_x
                    if j != thread:
                        x = inputs_of(xw, t, b, j, hidden, c.zero)
                    h = rnn_forward_body(
                        b, j, x, results, t, mask, has_mask, h_unit, h_prev, h_all, act, c
                    )
                    if j == thread:
                        h_unit = h
                if act == SOFTMAX:
                    cuda.syncthreads()
                    if thread == 0:
                        rnn_softmax_body(b, h_all[t], mask, has_mask, t, c)
                    cuda.syncthreads()
                    h_unit = h_all[t, b, unit]  # the row's softmax rewrote it
                cuda.syncthreads()

    @sequence_kernel(vector, tensor, *backward, *run)
    def rnn_backward_kernel(
        U_t, h_all, grad, grad_every_step, dpre_all, dh, dc,
        first, stride, mask, has_mask, mask_U, has_mask_U, act, inner, c,
        results_length, staged_length, head_rows, head_at, unused_rows, unused_at,
    ):  # fmt: skip
        kept = cuda.shared.array(0, scalar)
        results, head = kept[:results_length], kept[head_at:]
        staged = kept[results_length : results_length + staged_length]
        thread, threads, hidden = cuda.threadIdx.x, cuda.blockDim.x, dh.shape[1]
        count = h_all.shape[0]
        # the per-unit phase puts the products' operands there whole (not the softmax's)
        ready = staged.shape[0] >= hidden and act != SOFTMAX
        keep_head(U_t, head, head_rows, hidden, hidden)
        unit = min(thread, hidden - 1)  # the thread's first (see rnn_backward_record, carried)
        for b in range(cuda.blockIdx.x, dh.shape[0], cuda.gridDim.x):
            zero_block_row(b, dh, c.zero)
            dh_unit = c.zero
            for position in range(count - 1, -1, -1):
                t = first + stride * position
                has_later = 1 if position < count - 1 else 0
                grad_step = output_step(grad_every_step, t, position, count)
                first_record = rnn_record(h_all, grad, grad_step, t, b, unit, c.zero)
                if has_later:
                    product_of_block(
                        dpre_all[t + stride], b, U_t, head, head_rows, staged, ready, hidden,
                        results, c.zero,
                    )  # fmt: skip
                for j in range(thread, hidden, threads):
                    record = first_record
                    if j != thread:
                        record = rnn_record(h_all, grad, grad_step, t, b, j, c.zero)
                    held = rnn_backward_body(
                        b, j, record, carry(dh_unit, dh, b, j), t, mask, has_mask, results,
                        has_later, mask_U, has_mask_U, dh, dpre_all, staged, act, c,
                    )  # fmt: skip
                    if j == thread:
                        dh_unit = held
                if act == SOFTMAX:
                    cuda.syncthreads()
                    if thread == 0:
                        rnn_softmax_gradient_body(b, h_all[t], dpre_all[t], c)
                cuda.syncthreads()

    @sequence_kernel(vector, tensor, matrix, matrix, tensor, tensor, tensor, tensor, *run)
    def lstm_forward_kernel(
        U, xw, h0, c0, h_prev_all, gates_all, c_all, h_all,
        first, stride, mask, has_mask, mask_U, has_mask_U, act, inner, c,
        results_length, staged_length, head_rows, head_at, unused_rows, unused_at,
    ):  # fmt: skip
        kept = cuda.shared.array(0, scalar)
        results, head = kept[:results_length], kept[head_at:]
        staged = kept[results_length : results_length + staged_length]
        thread, threads, hidden = cuda.threadIdx.x, cuda.blockDim.x, h0.shape[1]
        ready = staged.shape[0] >= hidden  # the products' operands are put there whole
        keep_head(U, head, head_rows, hidden, 4 * hidden)
        unit = min(thread, hidden - 1)  # the thread's first (see gate_inputs and carried)
        for b in range(cuda.blockIdx.x, h0.shape[0], cuda.gridDim.x):
            h_unit, c_unit = h0[b, unit], c0[b, unit]
            for position in range(xw.shape[0]):
                t = first + stride * position
                h_prev = h0 if position == 0 else h_all[t - stride]
                c_prev = c0 if position == 0 else c_all[t - stride]
                first_x = inputs_of(xw, t, b, unit, hidden, c.zero)
                for j in range(thread, hidden, threads):
                    h = carry(h_unit, h_prev, b, j)
                    take_input(b, j, h, mask_U, has_mask_U, h_prev_all[t], staged)
                cuda.syncthreads()
                product_of_block(
                    h_prev_all[t],
                    b,
                    U,
                    head,
                    head_rows,
                    staged,
                    ready,
                    4 * hidden,
                    results,
                    c.zero,
                )
                for j in range(thread, hidden, threads):
                    x = first_x
                    if j != thread:
                        x = inputs_of(xw, t, b, j, hidden, c.zero)
                    h, cell = lstm_forward_body(
                        b, j, x, results, t, mask, has_mask, h_unit, h_prev,
                        carry(c_unit, c_prev, b, j), gates_all, c_all, h_all, act, inner, c,
                    )  # fmt: skip
                    if j == thread:
                        h_unit, c_unit = h, cell
                if act == SOFTMAX:
                    cuda.syncthreads()
                    if thread == 0:
                        lstm_softmax_body(
                            b, gates_all[t], c_prev, c_all[t], h_prev, h_all[t], mask,
                            has_mask, t, c,
                        )  # fmt: skip
                    cuda.syncthreads()
                    h_unit, c_unit = h_all[t, b, unit], c_all[t, b, unit]  # rewritten
                cuda.syncthreads()

    @sequence_kernel(vector, matrix, tensor, tensor, *backward, *run)
    def lstm_backward_kernel(
        U_t, c0, gates_all, c_all, grad, grad_every_step, dpre_all, dh, dc,
        first, stride, mask, has_mask, mask_U, has_mask_U, act, inner, c,
        results_length, staged_length, head_rows, head_at, unused_rows, unused_at,
    ):  # fmt: skip
        kept = cuda.shared.array(0, scalar)
        results, head = kept[:results_length], kept[head_at:]
        staged = kept[results_length : results_length + staged_length]
        thread, threads, hidden = cuda.threadIdx.x, cuda.blockDim.x, dh.shape[1]
        count = c_all.shape[0]
        # the per-unit phase puts the products' operands there whole (not the softmax's)
        ready = staged.shape[0] >= dpre_all.shape[2] and act != SOFTMAX
        keep_head(U_t, head, head_rows, dpre_all.shape[2], hidden)
        unit = min(thread, hidden - 1)  # the thread's first (see rnn_backward_record, carried)
        for b in range(cuda.blockIdx.x, dh.shape[0], cuda.gridDim.x):
            zero_block_row(b, dh, c.zero)
            zero_block_row(b, dc, c.zero)
            dh_unit = dc_unit = c.zero
            for position in range(count - 1, -1, -1):
                t = first + stride * position
                c_prev = c0 if position == 0 else c_all[t - stride]
                has_later = 1 if position < count - 1 else 0
                grad_step = output_step(grad_every_step, t, position, count)
                first_record = lstm_record(
                    gates_all, c_all, c_prev, grad, grad_step, t, b, unit, c.zero
                )
                if has_later:
                    product_of_block(
                        dpre_all[t + stride], b, U_t, head, head_rows, staged, ready, hidden,
                        results, c.zero,
                    )  # fmt: skip
                if act != SOFTMAX:
                    for j in range(thread, hidden, threads):
                        record = first_record
                        if j != thread:
                            record = lstm_record(
                                gates_all, c_all, c_prev, grad, grad_step, t, b, j, c.zero
                            )
                        held_h, held_c = lstm_backward_body(
                            b, j, record, carry(dh_unit, dh, b, j), carry(dc_unit, dc, b, j),
                            t, mask, has_mask, results, has_later, mask_U, has_mask_U, dh, dc,
                            dpre_all, staged, act, inner, c,
                        )  # fmt: skip
                        if j == thread:
                            dh_unit, dc_unit = held_h, held_c
                else:
                    cuda.syncthreads()  # every thread's zeroed units, at the first step
                    if thread == 0:
                        lstm_softmax_backward_body(
                            b, gates_all[t], c_all[t], c_prev, mask, has_mask, t, results,
                            has_later, mask_U, has_mask_U, grad, grad_step, dh, dc,
                            dpre_all[t], inner, c,
                        )  # fmt: skip
                cuda.syncthreads()

    @sequence_kernel(vector, vector, tensor, matrix, tensor, tensor, tensor, tensor, *run)
    def gru_forward_kernel(
        U_zr, U_h, xw, h0, h_prev_all, gates_all, rh_all, h_all,
        first, stride, mask, has_mask, mask_U, has_mask_U, act, inner, c,
        results_length, staged_length, zr_rows, zr_at, h_rows, h_at,
    ):  # fmt: skip
        kept = cuda.shared.array(0, scalar)
        results, head_zr, head_h = kept[:results_length], kept[zr_at:], kept[h_at:]
        staged = kept[results_length : results_length + staged_length]
        thread, threads, hidden = cuda.threadIdx.x, cuda.blockDim.x, h0.shape[1]
        ready = staged.shape[0] >= hidden  # the products' operands are put there whole
        keep_head(U_zr, head_zr, zr_rows, hidden, 2 * hidden)
        keep_head(U_h, head_h, h_rows, hidden, hidden)
        unit = min(thread, hidden - 1)  # the thread's first (see gate_inputs and carried)
        for b in range(cuda.blockIdx.x, h0.shape[0], cuda.gridDim.x):
            h_unit = h0[b, unit]
            for position in range(xw.shape[0]):
                t = first + stride * position
                h_prev = h0 if position == 0 else h_all[t - stride]
                h_in = h_prev_all[t]
                # the first unit's input projections as scalars: as a tuple, ptxas
                # spilled three times as much here
                x_z, x_r, x_h, _ = inputs_of(xw, t, b, unit, hidden, c.zero)
                for j in range(thread, hidden, threads):
                    h = carry(h_unit, h_prev, b, j)
                    take_input(b, j, h, mask_U, has_mask_U, h_in, staged)
                cuda.syncthreads()
                product_of_block(
                    h_in, b, U_zr, head_zr, zr_rows, staged, ready, 2 * hidden, results, c.zero
                )
                z_unit = c.zero
                for j in range(thread, hidden, threads):
                    if j != thread:
                        x_z, x_r = xw[t, b, j], xw[t, b, hidden + j]
                    z = gru_gates_body(
                        b, j, x_z, x_r, results, t, h_in, gates_all, rh_all, staged, inner, c
                    )
                    if j == thread:
                        z_unit = z
                cuda.syncthreads()  # (r * h) @ U_h needs every unit's r
                product_of_block(
                    rh_all[t], b, U_h, head_h, h_rows, staged, ready, hidden, results, c.zero
                )
                for j in range(thread, hidden, threads):
                    if j != thread:
                        x_h = xw[t, b, 2 * hidden + j]
                    h = gru_output_body(
                        b, j, x_h, results, t, mask, has_mask, carry(h_unit, h_prev, b, j),
                        carry(z_unit, gates_all[t], b, j), gates_all, h_all, act, c,
                    )  # fmt: skip
                    if j == thread:
                        h_unit = h
                if act == SOFTMAX:
                    cuda.syncthreads()
                    if thread == 0:
                        gru_softmax_body(b, gates_all[t], h_prev, h_all[t], mask, has_mask, t, c)
                    cuda.syncthreads()
                    h_unit = h_all[t, b, unit]  # the row's softmax rewrote it
                cuda.syncthreads()

    @sequence_kernel(
        vector, vector, matrix, tensor, tensor, tensor, matrix, tensor, tensor, *backward, *run
    )
    def gru_backward_kernel(
        U_zr_t, U_h_t, h0, h_prev_all, gates_all, h_all, back, dpre_zr_all, dpre_h_all, grad,
        grad_every_step, dpre_all, dh, dc,
        first, stride, mask, has_mask, mask_U, has_mask_U, act, inner, c,
        results_length, staged_length, zr_rows, zr_at, h_rows, h_at,
    ):  # fmt: skip
        """``U_zr_t``/``U_h_t`` are the recurrent weights' transposes, flat;
        ``dpre_zr_all[t]``/``dpre_h_all[t]`` contiguous copies of step ``t``'s ``z, r``/
        ``hh`` gradients, the products' operands (and ``dU``'s, after the pass);
        ``back`` is the later step's ``d_rh * r``."""
        kept = cuda.shared.array(0, scalar)
        results, head_zr, head_h = kept[:results_length], kept[zr_at:], kept[h_at:]
        staged = kept[results_length : results_length + staged_length]
        thread, threads, hidden = cuda.threadIdx.x, cuda.blockDim.x, dh.shape[1]
        count = h_all.shape[0]
        # the per-unit phases put the products' operands there whole (the softmax cell
        # rewrites hh's gradients after them)
        zr_ready = staged.shape[0] >= 2 * hidden
        h_ready = zr_ready and act != SOFTMAX
        keep_head(U_zr_t, head_zr, zr_rows, 2 * hidden, hidden)
        keep_head(U_h_t, head_h, h_rows, hidden, hidden)
        unit = min(thread, hidden - 1)  # the thread's first (see rnn_backward_record, carried)
        for b in range(cuda.blockIdx.x, dh.shape[0], cuda.gridDim.x):
            zero_block_row(b, dh, c.zero)
            dh_unit = back_unit = d_z_unit = c.zero
            for position in range(count - 1, -1, -1):
                t = first + stride * position
                h_prev = h0 if position == 0 else h_all[t - stride]
                has_later = 1 if position < count - 1 else 0
                grad_step = output_step(grad_every_step, t, position, count)
                h_in = h_prev_all[t]
                first_record = gru_record(gates_all, h_prev, grad, grad_step, t, b, unit, c.zero)
                if has_later:  # the later step's z, r gradients through U_zr
                    product_of_block(
                        dpre_zr_all[t + stride], b, U_zr_t, head_zr, zr_rows, staged, zr_ready,
                        hidden, results, c.zero,
                    )  # fmt: skip
                for j in range(thread, hidden, threads):
                    record = first_record
                    if j != thread:
                        record = gru_record(gates_all, h_prev, grad, grad_step, t, b, j, c.zero)
                    held, d_z = gru_output_backward_body(
                        b, j, record, carry(dh_unit, dh, b, j), carry(back_unit, back, b, j), t,
                        mask, has_mask, results, has_later, mask_U, has_mask_U, dh, dpre_all,
                        dpre_h_all[t], staged, act, c,
                    )  # fmt: skip
                    if j == thread:
                        dh_unit, d_z_unit = held, d_z
                first_reset = reset_record(gates_all, h_in, t, b, unit)
                cuda.syncthreads()
                if act == SOFTMAX:
                    if thread == 0:
                        gru_softmax_gradient_body(b, gates_all[t], dpre_all[t], dpre_h_all[t], c)
                    cuda.syncthreads()
                # dpre_h @ U_h.T needs every unit's
                product_of_block(
                    dpre_h_all[t], b, U_h_t, head_h, h_rows, staged, h_ready, hidden, results,
                    c.zero,
                )  # fmt: skip
                for j in range(thread, hidden, threads):
                    record = first_reset
                    if j != thread:
                        record = reset_record(gates_all, h_in, t, b, j)
                    carried_back = gru_reset_backward_body(
                        b, j, record, carry(d_z_unit, dpre_all[t], b, j), t, results, mask,
                        has_mask, dpre_all, dpre_zr_all[t], back, staged, inner, c,
                    )  # fmt: skip
                    if j == thread:
                        back_unit = carried_back
                cuda.syncthreads()

    kept: dict[tuple[str, tuple[int, ...]], Any] = {}

    def scratch(role: str, *shape: int) -> Any:
        """A device array that kernels of this dtype use for ``role`` (the GRU's carry, a
        transpose), kept per role and shape: the launches of a stream run in order and
        each pass writes what it reads of it, so passes and layers share it, and an
        eager pass allocates (and Numba later frees, which waits for the GPU) nothing."""
        array = kept.get((role, shape))
        if array is None:
            array = kept[role, shape] = cuda_api.device_array(shape, dtype=dtype)
        return array

    no_matrix = empty_vector(cuda_api, dtype, 2)

    def transposed(first: Any, second: Any = None) -> list[Any]:
        """``[first.T]`` (and ``second.T``), contiguous, made by one launch."""
        if second is None:
            second = no_matrix()
        transposes = [
            scratch("first transpose", *first.shape[::-1]),
            scratch("second transpose", *second.shape[::-1]),
        ]
        transpose_pair(first.size + second.size, first, transposes[0], second, transposes[1])
        return transposes

    def launch(kernel: Any, batch: int, steps: Steps, weights: list[Any], *arrays: Any) -> None:
        """One block per batch row (up to one per SM), all steps inside (a
        backward kernel also zeroes its state gradients when there are no steps). The
        ``weights`` (one or two recurrent matrices, as each step multiplies them) go
        first, flat, and as much of them as the budget allows into shared memory.
        Without rows or units (empty weights) there is nothing to compute."""
        if batch == 0 or weights[0].size == 0:
            return
        shapes = tuple(weight.shape for weight in weights)
        results = product_results(shapes, SEQUENCE_THREADS) * dtype.itemsize
        budget = dynamic_shared_budget(results, SIMULATOR_SHARED_BYTES)
        layout = plan_shared(shapes, dtype.itemsize, budget, SEQUENCE_THREADS)
        blocks = min(batch, multiprocessor_count(SIMULATOR_SEQUENCE_BLOCKS))
        kernel[blocks, SEQUENCE_THREADS, 0, layout.bytes](
            *[weight.reshape(weight.size) for weight in weights],
            *arrays,
            *step_direction(steps.order),
            steps.mask,
            steps.has_mask,
            steps.mask_U,
            steps.has_mask_U,
            steps.activation,
            steps.inner_activation,
            c,
            *layout.arguments(),
        )

    def rnn_sequence_forward(steps: Steps, sequence: RnnSequence) -> None:
        batch, hidden = sequence.h0.shape
        xw, U, *rest = sequence
        launch(rnn_forward_kernel, batch, steps, [U], xw, *rest)

    def rnn_sequence_backward(steps: Steps, sequence: RnnSequence, gradients: Gradients) -> None:
        batch, hidden = gradients.dh.shape
        launch(
            rnn_backward_kernel, batch, steps, transposed(sequence.U)[:1], sequence.h_all,
            *gradients,
        )  # fmt: skip

    def lstm_sequence_forward(steps: Steps, sequence: LstmSequence) -> None:
        batch, hidden = sequence.h0.shape
        xw, U, *rest = sequence
        launch(lstm_forward_kernel, batch, steps, [U], xw, *rest)

    def lstm_sequence_backward(steps: Steps, sequence: LstmSequence, gradients: Gradients) -> None:
        batch, hidden = gradients.dh.shape
        launch(
            lstm_backward_kernel, batch, steps, transposed(sequence.U)[:1], sequence.c0,
            sequence.gates_all, sequence.c_all, *gradients,
        )  # fmt: skip

    def gru_sequence_forward(steps: Steps, sequence: GruSequence) -> None:
        batch, hidden = sequence.h0.shape
        xw, U_zr, U_h, *rest = sequence.forward_arrays()
        launch(gru_forward_kernel, batch, steps, [U_zr, U_h], xw, *rest)

    def gru_sequence_backward(steps: Steps, sequence: GruSequence, gradients: Gradients) -> None:
        batch, hidden = gradients.dh.shape
        launch(
            gru_backward_kernel, batch, steps, transposed(sequence.U_zr, sequence.U_h),
            sequence.h0, sequence.h_prev_all, sequence.gates_all, sequence.h_all,
            scratch("carry", batch, hidden),
            sequence.dpre_zr_all, sequence.dpre_h_all, *gradients,
        )  # fmt: skip

    return {
        "rnn_sequence_forward": rnn_sequence_forward,
        "rnn_sequence_backward": rnn_sequence_backward,
        "lstm_sequence_forward": lstm_sequence_forward,
        "lstm_sequence_backward": lstm_sequence_backward,
        "gru_sequence_forward": gru_sequence_forward,
        "gru_sequence_backward": gru_sequence_backward,
    }
