"""The recurrent family's CPU loops: each sequence pass is one compiled loop over the steps.

A step is one parallel loop over chunks of units (:func:`chunk_layout`): a chunk's
thread makes its columns of the recurrent product with one BLAS call (from a packed
copy of those columns of ``U``), then applies the cell to them, so a step costs one
fork and join (the GRU two: its reset gate must be whole before ``(r * h) @ U_h``).
At ``B = 32, H = 128`` on 2 cores an LSTM step took about 31 us forward and 36 us
backward (float32), where separate product and gate kernels per step took 98.

The activations are run-time codes, so that one compiled loop serves every pair. A
loop that branches on a run-time code in every iteration does not vectorise, so the
gate passes go through :func:`code_dispatched_rows`: the branch is taken once per
block of rows, to one of six loops whose code is a constant.

A softmax cell activation needs whole rows of units: the chunks treat it as linear
and, only when its code is given, a serial pass over the rows finishes each step with
the row functions of :mod:`.cells` (the LSTM's backward pass then runs its whole cell
there, after the chunks' products).

Offsets are unsigned and arrays are indexed, not sliced, inside the blocks, so that
LLVM vectorises each loop (a signed index needs a wraparound check; a slice is a
view whose reference count two threads would contend for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import prange

from numlayers.kernels import activations, blas
from numlayers.kernels.activations import constants_for
from numlayers.kernels.blas import SMALL_BLOCK_WORK, THREADS, gemm
from numlayers.kernels.recurrent import cells
from numlayers.kernels.recurrent.cells import (
    ELEMENTWISE_CODES,
    SOFTMAX,
    activated,
    activated_sum,
    gru_output,
    gru_output_backward,
    gru_softmax_gradient_row,
    gru_softmax_row,
    is_masked,
    lstm_cell_backward,
    lstm_cell_state,
    lstm_cell_total_gradient,
    lstm_softmax_backward_row,
    lstm_softmax_row,
    output_gate,
    output_gradient_step,
    recurrent_input,
    rnn_softmax_gradient_row,
    rnn_softmax_row,
    times_derivative,
)
from numlayers.kernels.recurrent.sequences import (
    Gradients,
    GruSequence,
    LstmSequence,
    RnnSequence,
    Steps,
)
from numlayers.kernels.toolkit import (
    CpuLoop,
    compile_cpu,
    cpu_inline,
    generate_function,
    use_parallel,
)

#: Numba's cache watches only the file of the function it caches, and these loops
#: inline the cells, the activations' formulas and ``exp``, and BLAS's ``gemm``: a
#: digest of those files goes into the loops' cached names, so an edit there
#: compiles them afresh.
DIGEST = blas.source_digest(activations.__file__, blas.__file__, cells.__file__)

#: the error model lets the divisions of tanh and sigmoid vectorise; contraction
#: lets ``f * c + i * g`` be fused multiply-adds
LOOP_OPTIONS: dict[str, Any] = {"error_model": "numpy", "fastmath": {"contract"}}


def compile_block(template: Callable[..., Any]) -> Any:
    """Compile a serial helper loop of this module (called from the step loops)."""
    return compile_cpu(template, f"{template.__name__}_{DIGEST}", **LOOP_OPTIONS)


def step_loop(template: Callable[..., Any]) -> CpuLoop:
    """A sequence pass, serial and parallel (chosen per call by :func:`pass_for`)."""
    return CpuLoop(template, f"{template.__name__}_{DIGEST}", **LOOP_OPTIONS)


def code_dispatched_rows(formula: Callable[..., Any]) -> Any:
    """``rows(code, x, x0, y, y0, out, o0, count, width, c)``: for ``b < count`` and
    ``q < width``, ``out[b, o0 + q] = formula(code, x[b, x0 + q], y[b, y0 + q], c)``.

    The branch on ``code`` is taken once, into a loop where the code is a literal
    (LLVM then drops the other activations and vectorises). ``out`` may be ``x`` or
    ``y``; offsets and sizes are unsigned. Inlined where it is used: compiled on its
    own, the calls from a step's threads made the LSTM's passes about 25 % slower
    (50 steps, 32 x 128, float32, 2 cores).
    """
    name = f"{formula.__name__}_rows"
    lines = [f"def {name}(code, x, x0, y, y0, out, o0, count, width, c):"]
    # linear (0) is the fallback, softmax's too (its rows are finished apart)
    codes = sorted(ELEMENTWISE_CODES.values(), reverse=True)
    for position, code in enumerate(codes):
        if position == len(codes) - 1:
            lines.append("    else:")
        else:
            lines.append(f"    {'if' if position == 0 else 'elif'} code == {code}:")
        lines += [
            "        for b in range(count):",
            "            for q in range(width):",
            f"                out[b, o0 + q] = formula({code}, x[b, x0 + q], y[b, y0 + q], c)",
        ]
    return cpu_inline(generate_function("\n".join(lines), name, formula, {"formula": formula}, {}))


#: ``out = act(x + y)``: the gates from their projections and recurrent products
activated_sum_rows = code_dispatched_rows(activated_sum)
#: ``out = act(x)``
activated_rows = code_dispatched_rows(activated)
#: ``out = y * act(x)``: the LSTM's ``h = o * act(c)``
output_gate_rows = code_dispatched_rows(output_gate)
#: ``out = x * act'`` where ``y`` is the activation's output
times_derivative_rows = code_dispatched_rows(times_derivative)

ZERO = np.uint64(0)

# ---------------------------------------------------------------- shared step pieces


@cpu_inline
def chunk_layout(batch, hidden):
    """Units per chunk and the number of chunks: each gate's share of a chunk's product
    (``batch x hidden x width``) within BLAS's small-matrix size, at least as many
    chunks as threads, and a multiple of 16 (vector width)."""
    width = SMALL_BLOCK_WORK // max(batch * hidden, 1)
    width = min(width, (hidden + THREADS - 1) // THREADS)
    width = max(1, min(((width + 15) // 16) * 16, hidden))
    return width, (hidden + width - 1) // width


@cpu_inline
def chunk_span(chunk, width, hidden):
    """The first unit of ``chunk`` and its number of units, unsigned."""
    j0 = chunk * width
    return np.uint64(j0), np.uint64(min(j0 + width, hidden) - j0)


@cpu_inline
def pack_columns(U, gates, width, chunks):
    """``U``'s columns of each chunk, gate after gate: ``packed[chunk, k, gate * width
    + q] = U[k, gate * H + chunk * width + q]`` (zeros past the last unit), so that a
    chunk's recurrent product is one call."""
    hidden = U.shape[0]
    packed = np.zeros((chunks, hidden, gates * width), U.dtype)
    for chunk in range(chunks):
        j0 = chunk * width
        for gate in range(gates):
            for k in range(hidden):
                for q in range(min(width, hidden - j0)):
                    packed[chunk, k, gate * width + q] = U[k, gate * hidden + j0 + q]
    return packed


@cpu_inline
def pack_rows(U, width, chunks):
    """``U.T``'s columns of each chunk: ``packed[chunk, k, q] = U[chunk * width + q, k]``
    (the gradient through ``U`` of a chunk's units is one call)."""
    hidden = U.shape[0]
    packed = np.zeros((chunks, U.shape[1], width), U.dtype)
    for chunk in range(chunks):
        j0 = chunk * width
        for k in range(U.shape[1]):
            for q in range(min(width, hidden - j0)):
                packed[chunk, k, q] = U[j0 + q, k]
    return packed


@cpu_inline
def previous_state(initial, states, order, position):
    """The state a step starts from: the initial one, or the previous step's."""
    return initial if position == 0 else states[order[position - 1]]


@cpu_inline
def keep_recurrent_input(h_prev, mask_U, has_mask_U, h_in):
    """``h_in`` = the state the recurrent product reads (dropped out), kept for ``dU``.
    Explicit loops: an array expression would become a parallel loop of its own."""
    for b in range(h_in.shape[0]):
        for j in range(h_in.shape[1]):
            h_in[b, j] = recurrent_input(h_prev, mask_U, has_mask_U, b, j)


@cpu_inline
def through_later_step(later_dpre, has_later, packed, product, w):
    """``product[:, :w]`` = the later step's pre-activation gradients back through ``U``
    (``packed`` this chunk's :func:`pack_rows`), when there is a later step."""
    if has_later:
        gemm(later_dpre, packed[:, :w], product[:, :w], False, False, 1, 0)


@cpu_inline
def add_incoming(dh, product, has_later, mask_U, has_mask_U, grad, grad_step, j0, w):
    """``dh[:, j0:j0 + w]`` becomes the whole gradient reaching ``h_t``: plus the later
    step's through ``U`` (``product``, dropped out as forward was, when ``has_later``)
    and the output's (``grad[grad_step]``, when ``grad_step >= 0``). A loop per case:
    branches inside the loop would keep it from vectorising."""
    for b in range(dh.shape[0]):
        if has_later and has_mask_U:
            for q in range(w):
                dh[b, j0 + q] += product[b, q] * mask_U[b, j0 + q]
        elif has_later:
            for q in range(w):
                dh[b, j0 + q] += product[b, q]
        if grad_step >= 0:
            for q in range(w):
                dh[b, j0 + q] += grad[grad_step, b, j0 + q]


@cpu_inline
def carry_masked_rows(mask, has_mask, t, previous, state, j0, w, c):
    """In the rows masked at step ``t``, the state is the previous one."""
    for b in range(state.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            for q in range(w):
                state[b, j0 + q] = previous[b, j0 + q]


@cpu_inline
def zero_masked_rows(mask, has_mask, t, dpre, gates, hidden, j0, w, c):
    """The rows masked at step ``t`` get no pre-activation gradient (in every gate)."""
    for b in range(dpre.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            start = j0
            for _ in range(gates):
                for q in range(w):
                    dpre[b, start + q] = c.zero
                start += hidden


# ---------------------------------------------------------------- blocks
# The work of one chunk of units ``j0:j0 + w`` of every row for one step, on the step's
# ``(B, ...)`` rows of the time-major arrays; ``rec`` and ``product`` are the chunk's
# own, gate after gate at a stride of ``rec.shape[1] // G``.


def rnn_forward_block(x, rec, h_prev, mask, has_mask, t, hs, j0, w, act, c):
    activated_sum_rows(act, x, j0, rec, ZERO, hs, j0, np.uint64(hs.shape[0]), w, c)
    carry_masked_rows(mask, has_mask, t, h_prev, hs, j0, w, c)


def rnn_backward_block(hs, mask, has_mask, t, dh, dpre, j0, w, act, c):
    """Once ``dh`` holds the whole gradient reaching ``h_t``: ``dpre``, and ``dh`` zero
    (what reaches ``h_prev`` comes through ``U``), or in masked rows ``dpre`` zero and
    ``dh`` passed on."""
    times_derivative_rows(act, dh, j0, hs, j0, dpre, j0, np.uint64(dh.shape[0]), w, c)
    for b in range(dh.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            for q in range(w):
                dpre[b, j0 + q] = c.zero
        else:
            for q in range(w):
                dh[b, j0 + q] = c.zero


def lstm_forward_block(
    x, rec, h_prev, c_prev, mask, has_mask, t, gates, cells, hs, j0, w, hidden, act, inner, c
):
    rows = np.uint64(x.shape[0])
    f0 = hidden + j0
    g0 = f0 + hidden
    o0 = g0 + hidden
    r1 = np.uint64(rec.shape[1] // 4)
    r2 = r1 + r1
    activated_sum_rows(inner, x, j0, rec, ZERO, gates, j0, rows, w, c)
    activated_sum_rows(inner, x, f0, rec, r1, gates, f0, rows, w, c)
    activated_sum_rows(act, x, g0, rec, r2, gates, g0, rows, w, c)
    activated_sum_rows(inner, x, o0, rec, r2 + r1, gates, o0, rows, w, c)
    for b in range(x.shape[0]):
        for q in range(w):
            cells[b, j0 + q] = lstm_cell_state(
                gates[b, j0 + q], gates[b, f0 + q], gates[b, g0 + q], c_prev[b, j0 + q]
            )
    carry_masked_rows(mask, has_mask, t, c_prev, cells, j0, w, c)
    output_gate_rows(act, cells, j0, gates, o0, hs, j0, rows, w, c)
    carry_masked_rows(mask, has_mask, t, h_prev, hs, j0, w, c)


@cpu_inline
def cell_gradients(dh, dc_total, gates, c_prev, dpre, b, q, j0, hidden):
    """:func:`~.cells.lstm_cell_backward` of unit ``j0 + q`` of row ``b`` (``dc_total`` a
    ``(B, w)`` block, ``a = act(c_t)`` waiting in ``dpre``'s o slot)."""
    f0 = hidden + j0
    g0 = f0 + hidden
    o0 = g0 + hidden
    return lstm_cell_backward(
        dh[b, j0 + q],
        dc_total[b, q],
        gates[b, j0 + q],
        gates[b, f0 + q],
        gates[b, g0 + q],
        gates[b, o0 + q],
        c_prev[b, j0 + q],
        dpre[b, o0 + q],
    )


def lstm_backward_block(
    gates, cells, c_prev, mask, has_mask, t, dh, dc, dpre, scratch, j0, w, hidden, act, inner, c
):
    """Once ``dh`` holds the whole gradient reaching ``h_t``: the pre-activation
    gradients into ``dpre``, ``dc`` becomes the gradient reaching ``c_prev`` and ``dh``
    zero (masked rows: ``dpre`` zero, ``dh`` and ``dc`` passed on). ``scratch`` is
    ``(B, w)`` or wider."""
    rows = np.uint64(dh.shape[0])
    f0 = hidden + j0
    g0 = f0 + hidden
    o0 = g0 + hidden
    # a = act(c_t) waits in the o slot, the whole gradient of c_t in scratch
    activated_rows(act, cells, j0, cells, j0, dpre, o0, rows, w, c)
    times_derivative_rows(act, dh, j0, dpre, o0, scratch, ZERO, rows, w, c)
    for b in range(dh.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            continue
        # lstm_cell_backward, as loops that each write one array and so vectorise
        # (each uses one of its results; LLVM drops the others)
        for q in range(w):
            scratch[b, q] = lstm_cell_total_gradient(dc[b, j0 + q], scratch[b, q], gates[b, o0 + q])
        for q in range(w):
            dpre[b, j0 + q] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, q, j0, hidden)[0]
        for q in range(w):
            dpre[b, f0 + q] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, q, j0, hidden)[1]
        for q in range(w):
            dpre[b, g0 + q] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, q, j0, hidden)[2]
        for q in range(w):
            dc[b, j0 + q] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, q, j0, hidden)[4]
        for q in range(w):  # last: this overwrites a
            dpre[b, o0 + q] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, q, j0, hidden)[3]
            dh[b, j0 + q] = c.zero  # what reaches h_prev comes through U, next step
    times_derivative_rows(inner, dpre, j0, gates, j0, dpre, j0, rows, w, c)
    times_derivative_rows(inner, dpre, f0, gates, f0, dpre, f0, rows, w, c)
    times_derivative_rows(act, dpre, g0, gates, g0, dpre, g0, rows, w, c)
    times_derivative_rows(inner, dpre, o0, gates, o0, dpre, o0, rows, w, c)
    zero_masked_rows(mask, has_mask, t, dpre, 4, hidden, j0, w, c)


def gru_gates_block(x, rec, h_in, gates, rh, j0, w, hidden, inner, c):
    """``z``, ``r`` and ``rh = r * h_in``."""
    rows = np.uint64(x.shape[0])
    r0 = hidden + j0
    activated_sum_rows(inner, x, j0, rec, ZERO, gates, j0, rows, w, c)
    activated_sum_rows(inner, x, r0, rec, np.uint64(rec.shape[1] // 2), gates, r0, rows, w, c)
    for b in range(x.shape[0]):
        for q in range(w):
            rh[b, j0 + q] = gates[b, r0 + q] * h_in[b, j0 + q]


def gru_output_block(x, rec, h_prev, mask, has_mask, t, gates, hs, j0, w, hidden, act, c):
    """``hh`` from ``rec = rh @ U_h`` and the new state."""
    h0 = hidden + hidden + j0
    activated_sum_rows(act, x, h0, rec, ZERO, gates, h0, np.uint64(x.shape[0]), w, c)
    for b in range(x.shape[0]):
        for q in range(w):
            hs[b, j0 + q] = gru_output(gates[b, j0 + q], h_prev[b, j0 + q], gates[b, h0 + q], c)
    carry_masked_rows(mask, has_mask, t, h_prev, hs, j0, w, c)


def gru_backward_output_block(gates, h_prev, mask, has_mask, t, dh, dpre, j0, w, hidden, act, c):
    """Once ``dh`` holds the whole gradient reaching ``h_t``: ``d loss / d z`` (raw: the
    reset block applies ``inner'``) and ``hh``'s pre-activation gradient into ``dpre``,
    and ``dh`` becomes ``h_prev``'s direct share ``dh * z`` (masked rows: ``dpre`` zero,
    ``dh`` passed on)."""
    h0 = hidden + hidden + j0
    for b in range(dh.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            continue
        for q in range(w):
            dpre[b, j0 + q], dpre[b, h0 + q], dh[b, j0 + q] = gru_output_backward(
                dh[b, j0 + q], gates[b, j0 + q], h_prev[b, j0 + q], gates[b, h0 + q], c
            )
    times_derivative_rows(act, dpre, h0, gates, h0, dpre, h0, np.uint64(dh.shape[0]), w, c)
    zero_masked_rows(mask, has_mask, t, dpre, 3, hidden, j0, w, c)


def gru_backward_reset_block(
    gates, h_in, d_rh, mask, has_mask, t, dpre, carry, j0, w, hidden, inner, c
):
    """From ``d_rh = dpre_h @ U_h.T`` (``(B, w)``, this chunk's): ``r``'s pre-activation
    gradient, ``z``'s completed, and ``carry = d_rh * r``, which reaches ``h_in`` as the
    product through ``U_zr`` does."""
    rows = np.uint64(dpre.shape[0])
    r0 = hidden + j0
    for b in range(dpre.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            for q in range(w):
                dpre[b, r0 + q] = c.zero
                carry[b, j0 + q] = c.zero
            continue
        for q in range(w):
            dpre[b, r0 + q] = d_rh[b, q] * h_in[b, j0 + q]
        for q in range(w):
            carry[b, j0 + q] = d_rh[b, q] * gates[b, r0 + q]
    times_derivative_rows(inner, dpre, j0, gates, j0, dpre, j0, rows, w, c)
    times_derivative_rows(inner, dpre, r0, gates, r0, dpre, r0, rows, w, c)


# ---------------------------------------------------------------- softmax rows
# A step's rows, serially, after its chunks (only when the cell activation is softmax).


def rnn_softmax_rows(hs, mask, has_mask, t, c):
    for b in range(hs.shape[0]):
        rnn_softmax_row(b, hs, mask, has_mask, t, c)


def rnn_softmax_gradient_rows(hs, dpre, c):
    for b in range(hs.shape[0]):
        rnn_softmax_gradient_row(b, hs, dpre, c)


def gru_softmax_rows(gates, h_prev, hs, mask, has_mask, t, c):
    for b in range(hs.shape[0]):
        gru_softmax_row(b, gates, h_prev, hs, mask, has_mask, t, c)


def gru_softmax_gradient_rows(gates, dpre, c):
    for b in range(gates.shape[0]):
        gru_softmax_gradient_row(b, gates, dpre, c)


def lstm_softmax_rows(gates, c_prev, cells, h_prev, hs, mask, has_mask, t, c):
    for b in range(hs.shape[0]):
        lstm_softmax_row(b, gates, c_prev, cells, h_prev, hs, mask, has_mask, t, c)


def lstm_softmax_backward_rows(gates, cells, c_prev, dh, dc, dpre, mask, has_mask, t, inner, c):
    for b in range(dh.shape[0]):
        lstm_softmax_backward_row(
            b, gates, cells, c_prev, dh, dc, dpre, mask, has_mask, t, inner, c
        )


rnn_softmax_rows = compile_block(rnn_softmax_rows)
rnn_softmax_gradient_rows = compile_block(rnn_softmax_gradient_rows)
gru_softmax_rows = compile_block(gru_softmax_rows)
gru_softmax_gradient_rows = compile_block(gru_softmax_gradient_rows)
lstm_softmax_rows = compile_block(lstm_softmax_rows)
lstm_softmax_backward_rows = compile_block(lstm_softmax_backward_rows)
rnn_forward_block = compile_block(rnn_forward_block)
rnn_backward_block = compile_block(rnn_backward_block)
lstm_forward_block = compile_block(lstm_forward_block)
lstm_backward_block = compile_block(lstm_backward_block)
gru_gates_block = compile_block(gru_gates_block)
gru_output_block = compile_block(gru_output_block)
gru_backward_output_block = compile_block(gru_backward_output_block)
gru_backward_reset_block = compile_block(gru_backward_reset_block)


# ---------------------------------------------------------------- sequence passes
# Explicit loops, not array expressions, outside the parallel loops: Numba would make
# each array expression a parallel loop too.


@step_loop
def rnn_forward_steps(steps, sequence, c):
    order, mask, has_mask, mask_U, has_mask_U, act, _ = steps
    xw, U, h0, h_prev_all, h_all = sequence
    batch, hidden = h0.shape
    width, chunks = chunk_layout(batch, hidden)
    packed = pack_columns(U, 1, width, chunks)
    rec = np.empty((chunks, batch, width), U.dtype)
    for position in range(order.shape[0]):
        t = order[position]
        h_prev = previous_state(h0, h_all, order, position)
        keep_recurrent_input(h_prev, mask_U, has_mask_U, h_prev_all[t])
        for chunk in prange(chunks):
            j0, w = chunk_span(chunk, width, hidden)
            gemm(h_prev_all[t], packed[chunk], rec[chunk], False, False, 1, 0)
            rnn_forward_block(xw[t], rec[chunk], h_prev, mask, has_mask, t, h_all[t], j0, w, act, c)
        if act == SOFTMAX:
            rnn_softmax_rows(h_all[t], mask, has_mask, t, c)


@step_loop
def rnn_backward_steps(steps, sequence, gradients, c):
    order, mask, has_mask, mask_U, has_mask_U, act, _ = steps
    _, U, _, _, h_all = sequence
    grad, grad_every_step, dpre_all, dh, _ = gradients
    batch, hidden = dh.shape
    width, chunks = chunk_layout(batch, hidden)
    packed = pack_rows(U, width, chunks)
    product = np.empty((chunks, batch, width), U.dtype)
    count = order.shape[0]
    for position in range(count - 1, -1, -1):
        t = order[position]
        later = order[position + 1] if position < count - 1 else -1
        grad_step = output_gradient_step(grad_every_step, t, position, count)
        for chunk in prange(chunks):
            j0, w = chunk_span(chunk, width, hidden)
            through_later_step(dpre_all[later], later >= 0, packed[chunk], product[chunk], w)
            add_incoming(dh, product[chunk], later >= 0, mask_U, has_mask_U, grad, grad_step, j0, w)
            rnn_backward_block(h_all[t], mask, has_mask, t, dh, dpre_all[t], j0, w, act, c)
        if act == SOFTMAX:
            rnn_softmax_gradient_rows(h_all[t], dpre_all[t], c)


@step_loop
def lstm_forward_steps(steps, sequence, c):
    order, mask, has_mask, mask_U, has_mask_U, act, inner = steps
    xw, U, h0, c0, h_prev_all, gates_all, c_all, h_all = sequence
    batch, hidden = h0.shape
    width, chunks = chunk_layout(batch, hidden)
    packed = pack_columns(U, 4, width, chunks)
    rec = np.empty((chunks, batch, 4 * width), U.dtype)
    units = np.uint64(hidden)
    for position in range(order.shape[0]):
        t = order[position]
        h_prev = previous_state(h0, h_all, order, position)
        c_prev = previous_state(c0, c_all, order, position)
        keep_recurrent_input(h_prev, mask_U, has_mask_U, h_prev_all[t])
        for chunk in prange(chunks):
            j0, w = chunk_span(chunk, width, hidden)
            gemm(h_prev_all[t], packed[chunk], rec[chunk], False, False, 1, 0)
            lstm_forward_block(
                xw[t],
                rec[chunk],
                h_prev,
                c_prev,
                mask,
                has_mask,
                t,
                gates_all[t],
                c_all[t],
                h_all[t],
                j0,
                w,
                units,
                act,
                inner,
                c,
            )
        if act == SOFTMAX:
            lstm_softmax_rows(
                gates_all[t], c_prev, c_all[t], h_prev, h_all[t], mask, has_mask, t, c
            )


@step_loop
def lstm_backward_steps(steps, sequence, gradients, c):
    order, mask, has_mask, mask_U, has_mask_U, act, inner = steps
    _, U, _, c0, _, gates_all, c_all, _ = sequence
    grad, grad_every_step, dpre_all, dh, dc = gradients
    batch, hidden = dh.shape
    width, chunks = chunk_layout(batch, hidden)
    packed = pack_rows(U, width, chunks)
    product = np.empty((chunks, batch, width), U.dtype)
    units = np.uint64(hidden)
    count = order.shape[0]
    for position in range(count - 1, -1, -1):
        t = order[position]
        later = order[position + 1] if position < count - 1 else -1
        c_prev = previous_state(c0, c_all, order, position)
        grad_step = output_gradient_step(grad_every_step, t, position, count)
        for chunk in prange(chunks):
            j0, w = chunk_span(chunk, width, hidden)
            through_later_step(dpre_all[later], later >= 0, packed[chunk], product[chunk], w)
            add_incoming(dh, product[chunk], later >= 0, mask_U, has_mask_U, grad, grad_step, j0, w)
            # the softmax cell needs whole rows of dh: it runs after the chunks (an `if`,
            # not `continue`: a second exit keeps Numba from running the prange in parallel)
            if act != SOFTMAX:
                lstm_backward_block(
                    gates_all[t],
                    c_all[t],
                    c_prev,
                    mask,
                    has_mask,
                    t,
                    dh,
                    dc,
                    dpre_all[t],
                    product[chunk],
                    j0,
                    w,
                    units,
                    act,
                    inner,
                    c,
                )
        if act == SOFTMAX:
            lstm_softmax_backward_rows(
                gates_all[t], c_all[t], c_prev, dh, dc, dpre_all[t], mask, has_mask, t, inner, c
            )


@step_loop
def gru_forward_steps(steps, sequence, c):
    order, mask, has_mask, mask_U, has_mask_U, act, inner = steps
    xw, U_zr, U_h, h0, h_prev_all, gates_all, rh_all, h_all, _, _ = sequence
    batch, hidden = h0.shape
    width, chunks = chunk_layout(batch, hidden)
    packed_zr = pack_columns(U_zr, 2, width, chunks)
    packed_h = pack_columns(U_h, 1, width, chunks)
    rec = np.empty((chunks, batch, 2 * width), U_h.dtype)
    units = np.uint64(hidden)
    for position in range(order.shape[0]):
        t = order[position]
        h_prev = previous_state(h0, h_all, order, position)
        h_in = h_prev_all[t]
        keep_recurrent_input(h_prev, mask_U, has_mask_U, h_in)
        for chunk in prange(chunks):
            j0, w = chunk_span(chunk, width, hidden)
            gemm(h_in, packed_zr[chunk], rec[chunk], False, False, 1, 0)
            gru_gates_block(
                xw[t], rec[chunk], h_in, gates_all[t], rh_all[t], j0, w, units, inner, c
            )
        for chunk in prange(chunks):  # (r * h) @ U_h needs every unit's r
            j0, w = chunk_span(chunk, width, hidden)
            gemm(rh_all[t], packed_h[chunk], rec[chunk, :, :width], False, False, 1, 0)
            gru_output_block(
                xw[t],
                rec[chunk],
                h_prev,
                mask,
                has_mask,
                t,
                gates_all[t],
                h_all[t],
                j0,
                w,
                units,
                act,
                c,
            )
        if act == SOFTMAX:
            gru_softmax_rows(gates_all[t], h_prev, h_all[t], mask, has_mask, t, c)


@step_loop
def gru_backward_steps(steps, sequence, gradients, c):
    order, mask, has_mask, mask_U, has_mask_U, act, inner = steps
    _, U_zr, U_h, h0, h_prev_all, gates_all, _, h_all, dpre_zr_all, dpre_h_all = sequence
    grad, grad_every_step, dpre_all, dh, _ = gradients
    batch, hidden = dh.shape
    width, chunks = chunk_layout(batch, hidden)
    packed_zr = pack_rows(U_zr, width, chunks)
    packed_h = pack_rows(U_h, width, chunks)
    product = np.empty((chunks, batch, width), U_h.dtype)
    d_rh = np.empty((chunks, batch, width), U_h.dtype)
    carry = np.empty((batch, hidden), U_h.dtype)  # d_rh * r of the later step
    units = np.uint64(hidden)
    count = order.shape[0]
    for position in range(count - 1, -1, -1):
        t = order[position]
        later = order[position + 1] if position < count - 1 else -1
        h_prev = previous_state(h0, h_all, order, position)
        grad_step = output_gradient_step(grad_every_step, t, position, count)
        for chunk in prange(chunks):
            j0, w = chunk_span(chunk, width, hidden)
            zr_later = dpre_all[later, :, : 2 * hidden]
            through_later_step(zr_later, later >= 0, packed_zr[chunk], product[chunk], w)
            if later >= 0:
                for b in range(batch):
                    for q in range(w):
                        product[chunk, b, q] += carry[b, j0 + q]
            add_incoming(dh, product[chunk], later >= 0, mask_U, has_mask_U, grad, grad_step, j0, w)
            gru_backward_output_block(
                gates_all[t], h_prev, mask, has_mask, t, dh, dpre_all[t], j0, w, units, act, c
            )
        if act == SOFTMAX:  # before dpre_h @ U_h.T
            gru_softmax_gradient_rows(gates_all[t], dpre_all[t], c)
        for chunk in prange(chunks):  # dpre_h @ U_h.T needs every unit's dpre_h
            j0, w = chunk_span(chunk, width, hidden)
            dpre_h = dpre_all[t, :, 2 * hidden :]
            gemm(dpre_h, packed_h[chunk, :, :w], d_rh[chunk, :, :w], False, False, 1, 0)
            gru_backward_reset_block(
                gates_all[t],
                h_prev_all[t],
                d_rh[chunk],
                mask,
                has_mask,
                t,
                dpre_all[t],
                carry,
                j0,
                w,
                units,
                inner,
                c,
            )
        split_columns(dpre_all[t], dpre_zr_all[t], dpre_h_all[t])


@cpu_inline
def split_columns(dpre, dpre_zr, dpre_h):
    """A step's gate gradients into the contiguous ``z, r`` and ``hh`` copies."""
    width = dpre_zr.shape[1]
    for b in range(dpre.shape[0]):
        for q in range(width):
            dpre_zr[b, q] = dpre[b, q]
        for q in range(dpre_h.shape[1]):
            dpre_h[b, q] = dpre[b, width + q]


def pass_for(loop: CpuLoop, h0: np.ndarray, gates: int) -> Any:
    """``loop``'s parallel twin when a step's recurrent product is worth two cores
    (the toolkit's rule, applied per step: the threads fork and join at every step)."""
    batch, hidden = h0.shape
    return loop.parallel if use_parallel(batch * hidden, gates * hidden) else loop.serial


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    c = constants_for(dtype)

    def rnn_sequence_forward(steps: Steps, sequence: RnnSequence) -> None:
        pass_for(rnn_forward_steps, sequence.h0, 1)(steps, sequence, c)

    def rnn_sequence_backward(steps: Steps, sequence: RnnSequence, gradients: Gradients) -> None:
        pass_for(rnn_backward_steps, sequence.h0, 1)(steps, sequence, gradients, c)

    def lstm_sequence_forward(steps: Steps, sequence: LstmSequence) -> None:
        pass_for(lstm_forward_steps, sequence.h0, 4)(steps, sequence, c)

    def lstm_sequence_backward(steps: Steps, sequence: LstmSequence, gradients: Gradients) -> None:
        pass_for(lstm_backward_steps, sequence.h0, 4)(steps, sequence, gradients, c)

    def gru_sequence_forward(steps: Steps, sequence: GruSequence) -> None:
        pass_for(gru_forward_steps, sequence.h0, 3)(steps, sequence, c)

    def gru_sequence_backward(steps: Steps, sequence: GruSequence, gradients: Gradients) -> None:
        pass_for(gru_backward_steps, sequence.h0, 3)(steps, sequence, gradients, c)

    return {
        "rnn_sequence_forward": rnn_sequence_forward,
        "rnn_sequence_backward": rnn_sequence_backward,
        "lstm_sequence_forward": lstm_sequence_forward,
        "lstm_sequence_backward": lstm_sequence_backward,
        "gru_sequence_forward": gru_sequence_forward,
        "gru_sequence_backward": gru_sequence_backward,
    }
