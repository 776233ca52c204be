"""The recurrent family's CPU loops: each sequence pass is one compiled loop over the steps.

Rows of the batch never meet in a recurrence, so a pass runs a block of rows from the
first step to the last on a thread of its own (:class:`SequencePass`): one fork and
join per pass, not one per step. A step of a block is one BLAS call for its recurrent
product (``h_in @ U``; backward ``dpre @ U.T``, ``U`` as it is) and one compiled block
for its cell. At ``T = 50, B = 32, H = 128`` on 2 cores (float32, best of 7 x 50
calls), against a parallel loop over chunks of units at each step, the LSTM's backward
pass went from 3.9 to 2.9 ms (forward 3.1 ms either way) and the GRU's forward pass,
which forked twice a step, from about 5 to 3 ms.

The activations are run-time codes, so that one compiled loop serves every pair. A
loop that branches on a run-time code in every iteration does not vectorise, so the
gate passes go through :func:`code_dispatched_rows`: the branch is taken once per
block of rows, to one of six loops whose code is a constant.

A softmax cell activation needs whole rows of units: the blocks treat it as linear
and, only when its code is given, a pass over the rows finishes each step with the
row functions of :mod:`.cells` (the LSTM's backward pass then runs its whole cell
there).

Offsets are unsigned and arrays are indexed, not sliced, inside the blocks, so that
LLVM vectorises each loop (a signed index needs a wraparound check).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import prange

from numlayers.kernels import activations, blas
from numlayers.kernels.activations import constants_for
from numlayers.kernels.blas import gemm
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


def code_dispatched_rows(formula: Callable[..., Any], in_place: bool = False) -> Any:
    """``rows(code, x, x0, y, y0, out, o0, count, width, c)``: for ``b < count`` and
    ``q < width``, ``out[b, o0 + q] = formula(code, x[b, x0 + q], y[b, y0 + q], c)``.
    With ``in_place``, ``rows(code, x, x0, y, y0, count, width, c)`` writes ``x[b, x0 +
    q]`` instead (``out`` is ``x``, ``o0`` is ``x0``).

    The branch on ``code`` is taken once, into a loop where the code is a literal
    (LLVM then drops the other activations and vectorises). ``out`` may be ``y``;
    offsets and sizes are unsigned. An update of ``x`` in place must take the
    ``in_place`` form: through separate ``out`` and ``o0``, LLVM cannot tell that the
    write and the read of ``x`` are the same element, its run-time check finds the two
    ranges overlapping and it runs the scalar loop (a 16 x 128 hard_sigmoid gradient:
    1.3 us, against 0.13 us written in place). Inlined where it is used: compiled on its
    own, the calls from a step's threads made the LSTM's passes about 25 % slower (50
    steps, 32 x 128, float32, 2 cores).
    """
    name = f"{formula.__name__}_rows{'_in_place' if in_place else ''}"
    if in_place:
        lines = [f"def {name}(code, x, x0, y, y0, count, width, c):"]
        target = "x[b, x0 + q]"
    else:
        lines = [f"def {name}(code, x, x0, y, y0, out, o0, count, width, c):"]
        target = "out[b, o0 + q]"
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
            f"                {target} = formula({code}, x[b, x0 + q], y[b, y0 + q], c)",
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
#: ``x *= act'`` where ``y`` is the activation's output
times_derivative_rows_in_place = code_dispatched_rows(times_derivative, in_place=True)

ZERO = np.uint64(0)

# ---------------------------------------------------------------- shared step pieces


@cpu_inline
def previous_state(initial, states, order, position):
    """The state a step starts from: the initial one, or the previous step's."""
    return initial if position == 0 else states[order[position - 1]]


@cpu_inline
def step_rows(t, r0, r1, a, b, c, d):
    """Step ``t``'s rows ``r0:r1`` of four time-major arrays."""
    return a[t, r0:r1], b[t, r0:r1], c[t, r0:r1], d[t, r0:r1]


@cpu_inline
def keep_recurrent_input(h_prev, mask_U, has_mask_U, h_in):
    """``h_in`` = the state the recurrent product reads (dropped out), kept for ``dU``.
    Explicit loops: an array expression would become a parallel loop of its own."""
    for b in range(h_in.shape[0]):
        for j in range(h_in.shape[1]):
            h_in[b, j] = recurrent_input(h_prev, mask_U, has_mask_U, b, j)


@cpu_inline
def add_incoming(dh, product, has_later, mask_U, has_mask_U, grad, has_grad):
    """``dh`` becomes the whole gradient reaching ``h_t``: plus the later step's through
    ``U`` (``product``, dropped out as forward was, when ``has_later``) and the
    output's (``grad``, when ``has_grad``). A loop per case: branches inside the loop
    would keep it from vectorising."""
    units = np.uint64(dh.shape[1])
    for b in range(dh.shape[0]):
        if has_later and has_mask_U:
            for j in range(units):
                dh[b, j] += product[b, j] * mask_U[b, j]
        elif has_later:
            for j in range(units):
                dh[b, j] += product[b, j]
        if has_grad:
            for j in range(units):
                dh[b, j] += grad[b, j]


@cpu_inline
def carry_masked_rows(mask, has_mask, t, previous, state, c):
    """In the rows masked at step ``t``, the state is the previous one."""
    for b in range(state.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            for j in range(state.shape[1]):
                state[b, j] = previous[b, j]


@cpu_inline
def zero_masked_rows(mask, has_mask, t, dpre, c):
    """The rows masked at step ``t`` get no pre-activation gradient (in every gate)."""
    for b in range(dpre.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            for j in range(dpre.shape[1]):
                dpre[b, j] = c.zero


# ---------------------------------------------------------------- blocks
# The cell's work for one step, on the step's rows of the time-major arrays (``(R,
# ...)`` views of a block of rows); ``rec`` and ``product`` are the block's own
# recurrent products, gate after gate. Offsets and widths are unsigned.


def rnn_forward_block(x, rec, h_prev, mask, has_mask, t, hs, act, c):
    units = np.uint64(hs.shape[1])
    activated_sum_rows(act, x, ZERO, rec, ZERO, hs, ZERO, np.uint64(hs.shape[0]), units, c)
    carry_masked_rows(mask, has_mask, t, h_prev, hs, c)


def rnn_backward_block(hs, mask, has_mask, t, dh, dpre, act, c):
    """Once ``dh`` holds the whole gradient reaching ``h_t``: ``dpre``, and ``dh`` zero
    (what reaches ``h_prev`` comes through ``U``), or in masked rows ``dpre`` zero and
    ``dh`` passed on."""
    units = np.uint64(hs.shape[1])
    times_derivative_rows(act, dh, ZERO, hs, ZERO, dpre, ZERO, np.uint64(dh.shape[0]), units, c)
    for b in range(dh.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            for j in range(dh.shape[1]):
                dpre[b, j] = c.zero
        else:
            for j in range(dh.shape[1]):
                dh[b, j] = c.zero


def lstm_forward_block(x, rec, h_prev, c_prev, mask, has_mask, t, gates, cells, hs, act, inner, c):
    rows = np.uint64(x.shape[0])
    hidden = np.uint64(hs.shape[1])
    f0 = hidden
    g0 = f0 + hidden
    o0 = g0 + hidden
    activated_sum_rows(inner, x, ZERO, rec, ZERO, gates, ZERO, rows, hidden, c)
    activated_sum_rows(inner, x, f0, rec, f0, gates, f0, rows, hidden, c)
    activated_sum_rows(act, x, g0, rec, g0, gates, g0, rows, hidden, c)
    activated_sum_rows(inner, x, o0, rec, o0, gates, o0, rows, hidden, c)
    for b in range(x.shape[0]):
        for j in range(hidden):
            cells[b, j] = lstm_cell_state(
                gates[b, j], gates[b, f0 + j], gates[b, g0 + j], c_prev[b, j]
            )
    carry_masked_rows(mask, has_mask, t, c_prev, cells, c)
    output_gate_rows(act, cells, ZERO, gates, o0, hs, ZERO, rows, hidden, c)
    carry_masked_rows(mask, has_mask, t, h_prev, hs, c)


@cpu_inline
def cell_gradients(dh, dc_total, gates, c_prev, dpre, b, j, hidden):
    """:func:`~.cells.lstm_cell_backward` of unit ``j`` of row ``b`` (``a = act(c_t)``
    waiting in ``dpre``'s o slot)."""
    f0 = hidden
    g0 = f0 + hidden
    o0 = g0 + hidden
    return lstm_cell_backward(
        dh[b, j],
        dc_total[b, j],
        gates[b, j],
        gates[b, f0 + j],
        gates[b, g0 + j],
        gates[b, o0 + j],
        c_prev[b, j],
        dpre[b, o0 + j],
    )


def lstm_backward_block(
    gates, cells, c_prev, mask, has_mask, t, dh, dc, dpre, scratch, act, inner, c
):
    """Once ``dh`` holds the whole gradient reaching ``h_t``: the pre-activation
    gradients into ``dpre``, ``dc`` becomes the gradient reaching ``c_prev`` and ``dh``
    zero (masked rows: ``dpre`` zero, ``dh`` and ``dc`` passed on). ``scratch`` is
    ``(R, H)``."""
    rows = np.uint64(dh.shape[0])
    hidden = np.uint64(dh.shape[1])
    f0 = hidden
    g0 = f0 + hidden
    o0 = g0 + hidden
    # a = act(c_t) waits in the o slot, the whole gradient of c_t in scratch
    activated_rows(act, cells, ZERO, cells, ZERO, dpre, o0, rows, hidden, c)
    times_derivative_rows(act, dh, ZERO, dpre, o0, scratch, ZERO, rows, hidden, c)
    for b in range(dh.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            continue
        # lstm_cell_backward, as loops that each write one array and so vectorise
        # (each uses one of its results; LLVM drops the others)
        for j in range(hidden):
            scratch[b, j] = lstm_cell_total_gradient(dc[b, j], scratch[b, j], gates[b, o0 + j])
        for j in range(hidden):
            dpre[b, j] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, j, hidden)[0]
        for j in range(hidden):
            dpre[b, f0 + j] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, j, hidden)[1]
        for j in range(hidden):
            dpre[b, g0 + j] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, j, hidden)[2]
        for j in range(hidden):
            dc[b, j] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, j, hidden)[4]
        for j in range(hidden):  # last: this overwrites a
            dpre[b, o0 + j] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, j, hidden)[3]
            dh[b, j] = c.zero  # what reaches h_prev comes through U, next step
    times_derivative_rows_in_place(inner, dpre, ZERO, gates, ZERO, rows, hidden, c)
    times_derivative_rows_in_place(inner, dpre, f0, gates, f0, rows, hidden, c)
    times_derivative_rows_in_place(act, dpre, g0, gates, g0, rows, hidden, c)
    times_derivative_rows_in_place(inner, dpre, o0, gates, o0, rows, hidden, c)
    zero_masked_rows(mask, has_mask, t, dpre, c)


def gru_gates_block(x, rec, h_in, gates, rh, inner, c):
    """``z``, ``r`` and ``rh = r * h_in``."""
    rows = np.uint64(x.shape[0])
    hidden = np.uint64(h_in.shape[1])
    activated_sum_rows(inner, x, ZERO, rec, ZERO, gates, ZERO, rows, hidden, c)
    activated_sum_rows(inner, x, hidden, rec, hidden, gates, hidden, rows, hidden, c)
    for b in range(x.shape[0]):
        for j in range(hidden):
            rh[b, j] = gates[b, hidden + j] * h_in[b, j]


def gru_output_block(x, rec, h_prev, mask, has_mask, t, gates, hs, act, c):
    """``hh`` from ``rec = rh @ U_h`` and the new state."""
    hidden = np.uint64(hs.shape[1])
    h0 = hidden + hidden
    activated_sum_rows(act, x, h0, rec, ZERO, gates, h0, np.uint64(x.shape[0]), hidden, c)
    for b in range(x.shape[0]):
        for j in range(hidden):
            hs[b, j] = gru_output(gates[b, j], h_prev[b, j], gates[b, h0 + j], c)
    carry_masked_rows(mask, has_mask, t, h_prev, hs, c)


def gru_backward_output_block(gates, h_prev, mask, has_mask, t, dh, dpre, act, c):
    """Once ``dh`` holds the whole gradient reaching ``h_t``: ``d loss / d z`` (raw: the
    reset block applies ``inner'``) and ``hh``'s pre-activation gradient into ``dpre``,
    and ``dh`` becomes ``h_prev``'s direct share ``dh * z`` (masked rows: ``dpre`` zero,
    ``dh`` passed on)."""
    hidden = np.uint64(dh.shape[1])
    h0 = hidden + hidden
    for b in range(dh.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            continue
        for j in range(hidden):
            dpre[b, j], dpre[b, h0 + j], dh[b, j] = gru_output_backward(
                dh[b, j], gates[b, j], h_prev[b, j], gates[b, h0 + j], c
            )
    times_derivative_rows_in_place(act, dpre, h0, gates, h0, np.uint64(dh.shape[0]), hidden, c)
    zero_masked_rows(mask, has_mask, t, dpre, c)


def gru_backward_reset_block(gates, h_in, d_rh, mask, has_mask, t, dpre, carry, inner, c):
    """From ``d_rh = dpre_h @ U_h.T``: ``r``'s pre-activation gradient, ``z``'s
    completed, and ``carry = d_rh * r``, which reaches ``h_in`` as the product through
    ``U_zr`` does."""
    rows = np.uint64(dpre.shape[0])
    hidden = np.uint64(h_in.shape[1])
    for b in range(dpre.shape[0]):
        if is_masked(mask, has_mask, t, b, c):
            for j in range(hidden):
                dpre[b, hidden + j] = c.zero
                carry[b, j] = c.zero
            continue
        for j in range(hidden):
            dpre[b, hidden + j] = d_rh[b, j] * h_in[b, j]
        for j in range(hidden):
            carry[b, j] = d_rh[b, j] * gates[b, hidden + j]
    times_derivative_rows_in_place(inner, dpre, ZERO, gates, ZERO, rows, hidden, c)
    times_derivative_rows_in_place(inner, dpre, hidden, gates, hidden, rows, hidden, c)


# ---------------------------------------------------------------- softmax rows
# A step's rows, after the cell's elementwise work (only when the cell activation is softmax).


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
# A pass runs every step for the rows ``r0:r1``: rows are independent of each other
# through the whole sequence. Views are taken per step (``a[t, r0:r1]`` of a C array is
# C-contiguous, so the blocks' loops vectorise); the masks, read one value at a time,
# are sliced once. Explicit loops, not array expressions.


def rnn_forward_rows(steps, sequence, c, r0, r1):
    order, mask, has_mask, mask_U, has_mask_U, act, _ = steps
    xw, U, h0, h_prev_all, h_all = sequence
    mask, mask_U = mask[:, r0:r1], mask_U[r0:r1]
    rec = np.empty((r1 - r0, U.shape[1]), U.dtype)
    for position in range(order.shape[0]):
        t = order[position]
        h_prev = previous_state(h0, h_all, order, position)[r0:r1]
        h_in, hs = h_prev_all[t, r0:r1], h_all[t, r0:r1]
        keep_recurrent_input(h_prev, mask_U, has_mask_U, h_in)
        gemm(h_in, U, rec, False, False, 1, 0)
        rnn_forward_block(xw[t, r0:r1], rec, h_prev, mask, has_mask, t, hs, act, c)
        if act == SOFTMAX:
            rnn_softmax_rows(hs, mask, has_mask, t, c)


def rnn_backward_rows(steps, sequence, gradients, c, r0, r1):
    order, mask, has_mask, mask_U, has_mask_U, act, _ = steps
    _, U, _, _, h_all = sequence
    grad, grad_every_step, dpre_all, dh, _ = gradients
    mask, mask_U, dh = mask[:, r0:r1], mask_U[r0:r1], dh[r0:r1]
    product = np.empty(dh.shape, U.dtype)
    count = order.shape[0]
    for position in range(count - 1, -1, -1):
        t = order[position]
        later = order[position + 1] if position < count - 1 else -1
        if later >= 0:
            gemm(dpre_all[later, r0:r1], U, product, False, True, 1, 0)
        grad_step = output_gradient_step(grad_every_step, t, position, count)
        grad_rows = grad[max(grad_step, 0), r0:r1]
        add_incoming(dh, product, later >= 0, mask_U, has_mask_U, grad_rows, grad_step >= 0)
        dpre = dpre_all[t, r0:r1]
        rnn_backward_block(h_all[t, r0:r1], mask, has_mask, t, dh, dpre, act, c)
        if act == SOFTMAX:
            rnn_softmax_gradient_rows(h_all[t, r0:r1], dpre, c)


def lstm_forward_rows(steps, sequence, c, r0, r1):
    order, mask, has_mask, mask_U, has_mask_U, act, inner = steps
    xw, U, h0, c0, h_prev_all, gates_all, c_all, h_all = sequence
    mask, mask_U = mask[:, r0:r1], mask_U[r0:r1]
    rec = np.empty((r1 - r0, U.shape[1]), U.dtype)
    for position in range(order.shape[0]):
        t = order[position]
        h_prev = previous_state(h0, h_all, order, position)[r0:r1]
        c_prev = previous_state(c0, c_all, order, position)[r0:r1]
        h_in, gates, cells, hs = step_rows(t, r0, r1, h_prev_all, gates_all, c_all, h_all)
        keep_recurrent_input(h_prev, mask_U, has_mask_U, h_in)
        gemm(h_in, U, rec, False, False, 1, 0)
        lstm_forward_block(
            xw[t, r0:r1], rec, h_prev, c_prev, mask, has_mask, t, gates, cells, hs, act, inner, c
        )
        if act == SOFTMAX:
            lstm_softmax_rows(gates, c_prev, cells, h_prev, hs, mask, has_mask, t, c)


def lstm_backward_rows(steps, sequence, gradients, c, r0, r1):
    order, mask, has_mask, mask_U, has_mask_U, act, inner = steps
    _, U, _, c0, _, gates_all, c_all, _ = sequence
    grad, grad_every_step, dpre_all, dh, dc = gradients
    mask, mask_U, dh, dc = mask[:, r0:r1], mask_U[r0:r1], dh[r0:r1], dc[r0:r1]
    product = np.empty(dh.shape, U.dtype)
    count = order.shape[0]
    for position in range(count - 1, -1, -1):
        t = order[position]
        later = order[position + 1] if position < count - 1 else -1
        if later >= 0:
            gemm(dpre_all[later, r0:r1], U, product, False, True, 1, 0)
        grad_step = output_gradient_step(grad_every_step, t, position, count)
        grad_rows = grad[max(grad_step, 0), r0:r1]
        add_incoming(dh, product, later >= 0, mask_U, has_mask_U, grad_rows, grad_step >= 0)
        c_prev = previous_state(c0, c_all, order, position)[r0:r1]
        gates, cells, dpre = gates_all[t, r0:r1], c_all[t, r0:r1], dpre_all[t, r0:r1]
        if act == SOFTMAX:  # the softmax cell's own rows
            lstm_softmax_backward_rows(
                gates, cells, c_prev, dh, dc, dpre, mask, has_mask, t, inner, c
            )
        else:  # product, read, is the block's scratch
            lstm_backward_block(
                gates, cells, c_prev, mask, has_mask, t, dh, dc, dpre, product, act, inner, c
            )


def gru_forward_rows(steps, sequence, c, r0, r1):
    order, mask, has_mask, mask_U, has_mask_U, act, inner = steps
    xw, U_zr, U_h, h0, h_prev_all, gates_all, rh_all, h_all, _, _ = sequence
    mask, mask_U = mask[:, r0:r1], mask_U[r0:r1]
    rec_zr = np.empty((r1 - r0, U_zr.shape[1]), U_h.dtype)
    rec_h = np.empty((r1 - r0, U_h.shape[1]), U_h.dtype)
    for position in range(order.shape[0]):
        t = order[position]
        h_prev = previous_state(h0, h_all, order, position)[r0:r1]
        h_in, gates, rh, hs = step_rows(t, r0, r1, h_prev_all, gates_all, rh_all, h_all)
        keep_recurrent_input(h_prev, mask_U, has_mask_U, h_in)
        gemm(h_in, U_zr, rec_zr, False, False, 1, 0)
        gru_gates_block(xw[t, r0:r1], rec_zr, h_in, gates, rh, inner, c)
        gemm(rh, U_h, rec_h, False, False, 1, 0)
        gru_output_block(xw[t, r0:r1], rec_h, h_prev, mask, has_mask, t, gates, hs, act, c)
        if act == SOFTMAX:
            gru_softmax_rows(gates, h_prev, hs, mask, has_mask, t, c)


def gru_backward_rows(steps, sequence, gradients, c, r0, r1):
    order, mask, has_mask, mask_U, has_mask_U, act, inner = steps
    _, U_zr, U_h, h0, h_prev_all, gates_all, _, h_all, dpre_zr_all, dpre_h_all = sequence
    grad, grad_every_step, dpre_all, dh, _ = gradients
    mask, mask_U, dh = mask[:, r0:r1], mask_U[r0:r1], dh[r0:r1]
    product = np.empty(dh.shape, U_h.dtype)
    d_rh = np.empty(dh.shape, U_h.dtype)
    carry = np.empty(dh.shape, U_h.dtype)  # d_rh * r of the later step
    count = order.shape[0]
    for position in range(count - 1, -1, -1):
        t = order[position]
        later = order[position + 1] if position < count - 1 else -1
        if later >= 0:
            gemm(dpre_zr_all[later, r0:r1], U_zr, product, False, True, 1, 0)
            for b in range(product.shape[0]):
                for j in range(np.uint64(product.shape[1])):
                    product[b, j] += carry[b, j]
        grad_step = output_gradient_step(grad_every_step, t, position, count)
        grad_rows = grad[max(grad_step, 0), r0:r1]
        add_incoming(dh, product, later >= 0, mask_U, has_mask_U, grad_rows, grad_step >= 0)
        h_prev = previous_state(h0, h_all, order, position)[r0:r1]
        gates, dpre = gates_all[t, r0:r1], dpre_all[t, r0:r1]
        gru_backward_output_block(gates, h_prev, mask, has_mask, t, dh, dpre, act, c)
        if act == SOFTMAX:  # before dpre_h @ U_h.T
            gru_softmax_gradient_rows(gates, dpre, c)
        dpre_h = dpre_h_all[t, r0:r1]
        copy_columns(dpre, np.uint64(2 * dpre_h.shape[1]), dpre_h)
        gemm(dpre_h, U_h, d_rh, False, True, 1, 0)
        h_in = h_prev_all[t, r0:r1]
        gru_backward_reset_block(gates, h_in, d_rh, mask, has_mask, t, dpre, carry, inner, c)
        copy_columns(dpre, ZERO, dpre_zr_all[t, r0:r1])


@cpu_inline
def copy_columns(source, first, destination):
    """``destination = source[:, first:first + width]``: a step's gate gradients into the
    contiguous copies that the step-to-step and weight products read."""
    for b in range(destination.shape[0]):
        for j in range(np.uint64(destination.shape[1])):
            destination[b, j] = source[b, first + j]


def in_row_blocks(rows_pass: Callable[..., Any], arguments: str) -> Any:
    """The parallel twin of ``rows_pass(arguments, r0, r1)``: ``pass(arguments, blocks)``
    cuts the batch into ``blocks`` blocks of rows and runs each on a thread of its own,
    start to end (one fork and join for the whole sequence).

    Numba links the compiled serial pass into the loop and optimises it again: 6 to 9 s
    a pass on a cold cache. Running the blocks from Python threads instead (``nogil``)
    compiled nothing more, but made the stacked LSTM 60 to 80 % slower in the layer:
    after each parallel product Numba's OpenMP workers still spin on the cores when a
    Python thread wakes, and each hand-off costs 150 to 230 us."""
    name = rows_pass.__name__.replace("_rows", "_row_blocks")
    source = f"""
def {name}({arguments}, blocks):
    batch = sequence.h0.shape[0]
    for block in prange(blocks):
        rows_pass({arguments}, block * batch // blocks, (block + 1) * batch // blocks)
"""
    compiled = compile_block(rows_pass)
    template = generate_function(
        source, name, rows_pass, {}, {"prange": prange, "rows_pass": compiled}
    )
    return compiled, compile_cpu(template, f"{name}_{DIGEST}", parallel=True, **LOOP_OPTIONS)


def row_block_count(batch: int) -> int:
    """How many blocks of rows a parallel pass cuts a batch into: one per thread."""
    return min(numba.get_num_threads(), batch)


class SequencePass:
    """A sequence pass over every row of the batch: serially, or in blocks of rows on
    every core when the whole pass's recurrent products are worth it (the toolkit's
    rule) and there are rows enough to share. A batch of one row runs on one core."""

    def __init__(self, rows_pass: Callable[..., Any], arguments: str, gates: int) -> None:
        self.rows, self.row_blocks = in_row_blocks(rows_pass, arguments)
        self.gates = gates

    def __call__(self, *arguments: Any) -> None:
        steps, sequence = arguments[0], arguments[1]
        batch, hidden = sequence.h0.shape
        blocks = row_block_count(batch)
        work = steps.order.shape[0] * batch * hidden
        if blocks > 1 and use_parallel(work, self.gates * hidden):
            self.row_blocks(*arguments, blocks)
        else:
            self.rows(*arguments, 0, batch)


FORWARD = "steps, sequence, c"
BACKWARD = "steps, sequence, gradients, c"
rnn_forward = SequencePass(rnn_forward_rows, FORWARD, 1)
rnn_backward = SequencePass(rnn_backward_rows, BACKWARD, 1)
lstm_forward = SequencePass(lstm_forward_rows, FORWARD, 4)
lstm_backward = SequencePass(lstm_backward_rows, BACKWARD, 4)
gru_forward = SequencePass(gru_forward_rows, FORWARD, 3)
gru_backward = SequencePass(gru_backward_rows, BACKWARD, 3)


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    c = constants_for(dtype)

    def rnn_sequence_forward(steps: Steps, sequence: RnnSequence) -> None:
        rnn_forward(steps, sequence, c)

    def rnn_sequence_backward(steps: Steps, sequence: RnnSequence, gradients: Gradients) -> None:
        gradients.dh.fill(0)
        rnn_backward(steps, sequence, gradients, c)

    def lstm_sequence_forward(steps: Steps, sequence: LstmSequence) -> None:
        lstm_forward(steps, sequence, c)

    def lstm_sequence_backward(steps: Steps, sequence: LstmSequence, gradients: Gradients) -> None:
        gradients.dh.fill(0)
        gradients.dc.fill(0)
        lstm_backward(steps, sequence, gradients, c)

    def gru_sequence_forward(steps: Steps, sequence: GruSequence) -> None:
        gru_forward(steps, sequence, c)

    def gru_sequence_backward(steps: Steps, sequence: GruSequence, gradients: Gradients) -> None:
        gradients.dh.fill(0)
        gru_backward(steps, sequence, gradients, c)

    return {
        "rnn_sequence_forward": rnn_sequence_forward,
        "rnn_sequence_backward": rnn_sequence_backward,
        "lstm_sequence_forward": lstm_sequence_forward,
        "lstm_sequence_backward": lstm_sequence_backward,
        "gru_sequence_forward": gru_sequence_forward,
        "gru_sequence_backward": gru_sequence_backward,
    }
