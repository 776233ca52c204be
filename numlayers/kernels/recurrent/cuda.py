"""The recurrent family's CUDA operations: per step, the recurrent product through the
tiled GEMM and toolkit index loops with one thread per ``(b, j)`` unit doing all of
its unit's gates (the bodies below, ``body(b, j, ...)``, compiled as device code with
the cells of :mod:`.cells`). ``c`` is the dtype's activation constants, passed to
every kernel so that no formula writes a float64 literal.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numba
import numpy as np

from numlayers.kernels.activations import constants_for
from numlayers.kernels.matmul import gemm_launcher
from numlayers.kernels.recurrent.cells import (
    apply,
    derivative_from_output,
    gru_output,
    gru_output_backward,
    incoming_gradient,
    is_masked,
    lstm_cell_backward,
    lstm_cell_state,
    lstm_cell_total_gradient,
    output_gradient_step,
    recurrent_input,
)
from numlayers.kernels.recurrent.sequences import (
    Gradients,
    GruSequence,
    LstmSequence,
    RnnSequence,
    Steps,
)
from numlayers.kernels.toolkit import cuda_kernels, empty_vector

# ---------------------------------------------------------------- per-unit bodies


def recurrent_input_element(b, j, h_prev, mask_U, has_mask_U, h_in):
    h_in[b, j] = recurrent_input(h_prev, mask_U, has_mask_U, b, j)


def rnn_forward_element(b, j, xw, rec, t, mask, has_mask, h_prev, h_all, act, c):
    if is_masked(mask, has_mask, t, b, c):
        h_all[t, b, j] = h_prev[b, j]
    else:
        h_all[t, b, j] = apply(act, xw[t, b, j] + rec[b, j], c)


def rnn_backward_element(
    b, j, h_all, t, mask, has_mask, product, has_later, mask_U, has_mask_U, grad, grad_step,
    dh, dpre_all, act, c,
):  # fmt: skip
    total = incoming_gradient(dh, product, has_later, mask_U, has_mask_U, grad, grad_step, b, j, j)
    if is_masked(mask, has_mask, t, b, c):
        dpre_all[t, b, j] = c.zero
        dh[b, j] = total
    else:
        dpre_all[t, b, j] = total * derivative_from_output(act, h_all[t, b, j], c)
        dh[b, j] = c.zero  # what reaches h_prev comes through U, next step


def lstm_forward_element(
    b, j, xw, rec, t, mask, has_mask, h_prev, c_prev, gates_all, c_all, h_all, act, inner, c
):
    hidden = h_prev.shape[1]
    i = apply(inner, xw[t, b, j] + rec[b, j], c)
    f = apply(inner, xw[t, b, hidden + j] + rec[b, hidden + j], c)
    g = apply(act, xw[t, b, 2 * hidden + j] + rec[b, 2 * hidden + j], c)
    o = apply(inner, xw[t, b, 3 * hidden + j] + rec[b, 3 * hidden + j], c)
    gates_all[t, b, j] = i
    gates_all[t, b, hidden + j] = f
    gates_all[t, b, 2 * hidden + j] = g
    gates_all[t, b, 3 * hidden + j] = o
    if is_masked(mask, has_mask, t, b, c):
        c_all[t, b, j] = c_prev[b, j]
        h_all[t, b, j] = h_prev[b, j]
    else:
        cell = lstm_cell_state(i, f, g, c_prev[b, j])
        c_all[t, b, j] = cell
        h_all[t, b, j] = o * apply(act, cell, c)


def lstm_backward_element(
    b, j, gates_all, c_all, t, c_prev, mask, has_mask, product, has_later, mask_U, has_mask_U,
    grad, grad_step, dh, dc, dpre_all, act, inner, c,
):  # fmt: skip
    hidden = dh.shape[1]
    dh_total = incoming_gradient(
        dh, product, has_later, mask_U, has_mask_U, grad, grad_step, b, j, j
    )
    if is_masked(mask, has_mask, t, b, c):
        for gate in range(4):
            dpre_all[t, b, gate * hidden + j] = c.zero
        dh[b, j] = dh_total
        return
    i = gates_all[t, b, j]
    f = gates_all[t, b, hidden + j]
    g = gates_all[t, b, 2 * hidden + j]
    o = gates_all[t, b, 3 * hidden + j]
    a = apply(act, c_all[t, b, j], c)
    dc_total = lstm_cell_total_gradient(dc[b, j], dh_total * derivative_from_output(act, a, c), o)
    d_i, d_f, d_g, d_o, dc[b, j] = lstm_cell_backward(
        dh_total, dc_total, i, f, g, o, c_prev[b, j], a
    )
    dpre_all[t, b, j] = d_i * derivative_from_output(inner, i, c)
    dpre_all[t, b, hidden + j] = d_f * derivative_from_output(inner, f, c)
    dpre_all[t, b, 2 * hidden + j] = d_g * derivative_from_output(act, g, c)
    dpre_all[t, b, 3 * hidden + j] = d_o * derivative_from_output(inner, o, c)
    dh[b, j] = c.zero


def gru_gates_element(b, j, xw, rec_zr, t, h_in, gates_all, rh_all, inner, c):
    hidden = h_in.shape[1]
    gates_all[t, b, j] = apply(inner, xw[t, b, j] + rec_zr[b, j], c)
    r = apply(inner, xw[t, b, hidden + j] + rec_zr[b, hidden + j], c)
    gates_all[t, b, hidden + j] = r
    rh_all[t, b, j] = r * h_in[b, j]


def gru_output_element(b, j, xw, rec_h, t, mask, has_mask, h_prev, gates_all, h_all, act, c):
    hidden = h_prev.shape[1]
    hh = apply(act, xw[t, b, 2 * hidden + j] + rec_h[b, j], c)
    gates_all[t, b, 2 * hidden + j] = hh
    if is_masked(mask, has_mask, t, b, c):
        h_all[t, b, j] = h_prev[b, j]
    else:
        h_all[t, b, j] = gru_output(gates_all[t, b, j], h_prev[b, j], hh, c)


def gru_backward_output_element(
    b, j, gates_all, t, h_prev, mask, has_mask, product, carry, has_later, mask_U, has_mask_U,
    grad, grad_step, dh, dpre_all, dpre_h, act, c,
):  # fmt: skip
    """``product`` is the later step's ``dpre_zr @ U_zr.T``; ``carry`` its ``d_rh * r``,
    which reaches ``h_in`` alike. ``dpre_h`` is a contiguous copy of ``hh``'s gradients
    (the next product's operand); ``z``'s is left raw for the reset phase."""
    hidden = dh.shape[1]
    if has_later:
        product[b, j] += carry[b, j]
    total = incoming_gradient(dh, product, has_later, mask_U, has_mask_U, grad, grad_step, b, j, j)
    if is_masked(mask, has_mask, t, b, c):
        for gate in range(3):
            dpre_all[t, b, gate * hidden + j] = c.zero
        dpre_h[b, j] = c.zero
        dh[b, j] = total
        return
    hh = gates_all[t, b, 2 * hidden + j]
    d_z, d_hh, dh[b, j] = gru_output_backward(total, gates_all[t, b, j], h_prev[b, j], hh, c)
    dpre_all[t, b, j] = d_z
    d_pre_hh = d_hh * derivative_from_output(act, hh, c)
    dpre_all[t, b, 2 * hidden + j] = d_pre_hh
    dpre_h[b, j] = d_pre_hh


def gru_backward_reset_element(
    b, j, gates_all, t, h_in, d_rh, mask, has_mask, dpre_all, dpre_zr, carry, inner, c
):
    """From ``d_rh = dpre_h @ U_h.T``: ``r``'s pre-activation gradient, ``z``'s completed
    (also into the contiguous ``dpre_zr``, the next product's operand), ``carry``."""
    hidden = h_in.shape[1]
    if is_masked(mask, has_mask, t, b, c):
        dpre_all[t, b, hidden + j] = c.zero
        dpre_zr[b, j] = c.zero
        dpre_zr[b, hidden + j] = c.zero
        carry[b, j] = c.zero
        return
    r = gates_all[t, b, hidden + j]
    d_r = d_rh[b, j] * h_in[b, j] * derivative_from_output(inner, r, c)
    d_z = dpre_all[t, b, j] * derivative_from_output(inner, gates_all[t, b, j], c)
    dpre_all[t, b, j] = d_z
    dpre_all[t, b, hidden + j] = d_r
    dpre_zr[b, j] = d_z
    dpre_zr[b, hidden + j] = d_r
    carry[b, j] = d_rh[b, j] * r


# ---------------------------------------------------------------- step order


def forward_order(order: np.ndarray) -> Iterator[tuple[int, int]]:
    """``(t, t_prev)`` of each step in processing order (``t_prev`` -1 first)."""
    previous = -1
    for step in order:
        yield int(step), previous
        previous = int(step)


def backward_order(steps: Steps, gradients: Gradients) -> Iterator[tuple[int, int, int, int]]:
    """``(t, t_prev, t_later, grad_step)``, last processed step first (-1 for none;
    ``grad_step`` as :func:`~.cells.output_gradient_step`)."""
    order, count = steps.order, len(steps.order)
    for position in range(count - 1, -1, -1):
        t = int(order[position])
        previous = int(order[position - 1]) if position > 0 else -1
        later = int(order[position + 1]) if position < count - 1 else -1
        yield (
            t,
            previous,
            later,
            output_gradient_step(gradients.grad_every_step, t, position, count),
        )


def state_before(initial: Any, states: Any, t_prev: int) -> Any:
    return initial if t_prev < 0 else states[t_prev]


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    dtype = np.dtype(dtype)
    kernels = cuda_kernels(cuda_api, dtype)
    c = constants_for(dtype)
    matrix, tensor = kernels.array(2), kernels.array(3)
    index, constants = numba.types.int64, numba.typeof(c)
    gemm_nn = gemm_launcher(cuda_api, dtype, False, False)
    gemm_nt = gemm_launcher(cuda_api, dtype, False, True)
    no_bias = empty_vector(cuda_api, dtype)
    masks = (index, matrix, index)  # t, mask, has_mask
    incoming = (matrix, index, matrix, index, tensor, index)  # product ... grad_step

    def units_loop(body: Any, *argtypes: Any) -> Any:
        """``launch(B, H, *arguments)``: ``body`` at every unit ``(b, j)``."""
        return kernels.index_loop(body, argtypes, dims=2)

    recurrent_input = units_loop(recurrent_input_element, matrix, matrix, index, matrix)
    rnn_forward = units_loop(
        rnn_forward_element, tensor, matrix, *masks, matrix, tensor, index, constants
    )
    rnn_backward = units_loop(
        rnn_backward_element, tensor, *masks, *incoming, matrix, tensor, index, constants
    )
    lstm_forward = units_loop(
        lstm_forward_element, tensor, matrix, *masks, matrix, matrix, tensor, tensor, tensor,
        index, index, constants,
    )  # fmt: skip
    lstm_backward = units_loop(
        lstm_backward_element, tensor, tensor, index, matrix, matrix, index, *incoming[:-2],
        tensor, index, matrix, matrix, tensor, index, index, constants,
    )  # fmt: skip
    gru_gates = units_loop(
        gru_gates_element, tensor, matrix, index, matrix, tensor, tensor, index, constants
    )
    gru_output = units_loop(
        gru_output_element, tensor, matrix, *masks, matrix, tensor, tensor, index, constants
    )
    gru_backward_output = units_loop(
        gru_backward_output_element, tensor, index, matrix, matrix, index, matrix, matrix,
        index, matrix, index, tensor, index, matrix, tensor, matrix, index, constants,
    )  # fmt: skip
    gru_backward_reset = units_loop(
        gru_backward_reset_element, tensor, index, matrix, matrix, matrix, index, tensor,
        matrix, matrix, index, constants,
    )  # fmt: skip

    def scratch(*shape: int) -> Any:
        return cuda_api.device_array(shape, dtype=dtype)

    def keep_recurrent_input(steps: Steps, h_prev: Any, h_in: Any) -> None:
        recurrent_input(*h_in.shape, h_prev, steps.mask_U, steps.has_mask_U, h_in)

    def rnn_sequence_forward(steps: Steps, sequence: RnnSequence) -> None:
        xw, U, h0, h_prev_all, h_all = sequence
        batch, hidden = h0.shape
        rec = scratch(batch, hidden)
        for t, t_prev in forward_order(steps.order):
            h_prev = state_before(h0, h_all, t_prev)
            keep_recurrent_input(steps, h_prev, h_prev_all[t])
            gemm_nn(h_prev_all[t], U, no_bias(), rec)
            rnn_forward(
                batch, hidden, xw, rec, t, steps.mask, steps.has_mask, h_prev, h_all,
                steps.activation, c,
            )  # fmt: skip

    def rnn_sequence_backward(steps: Steps, sequence: RnnSequence, gradients: Gradients) -> None:
        grad, _, dpre_all, dh, _ = gradients
        batch, hidden = dh.shape
        product = scratch(batch, hidden)
        for t, _, later, grad_step in backward_order(steps, gradients):
            if later >= 0:
                gemm_nt(dpre_all[later], sequence.U, no_bias(), product)
            rnn_backward(
                batch, hidden, sequence.h_all, t, steps.mask, steps.has_mask, product,
                int(later >= 0), steps.mask_U, steps.has_mask_U, grad, grad_step, dh, dpre_all,
                steps.activation, c,
            )  # fmt: skip

    def lstm_sequence_forward(steps: Steps, sequence: LstmSequence) -> None:
        xw, U, h0, c0, h_prev_all, gates_all, c_all, h_all = sequence
        batch, hidden = h0.shape
        rec = scratch(batch, 4 * hidden)
        for t, t_prev in forward_order(steps.order):
            h_prev = state_before(h0, h_all, t_prev)
            keep_recurrent_input(steps, h_prev, h_prev_all[t])
            gemm_nn(h_prev_all[t], U, no_bias(), rec)
            lstm_forward(
                batch, hidden, xw, rec, t, steps.mask, steps.has_mask, h_prev,
                state_before(c0, c_all, t_prev), gates_all, c_all, h_all, steps.activation,
                steps.inner_activation, c,
            )  # fmt: skip

    def lstm_sequence_backward(steps: Steps, sequence: LstmSequence, gradients: Gradients) -> None:
        grad, _, dpre_all, dh, dc = gradients
        batch, hidden = dh.shape
        product = scratch(batch, hidden)
        for t, t_prev, later, grad_step in backward_order(steps, gradients):
            if later >= 0:
                gemm_nt(dpre_all[later], sequence.U, no_bias(), product)
            lstm_backward(
                batch, hidden, sequence.gates_all, sequence.c_all, t,
                state_before(sequence.c0, sequence.c_all, t_prev), steps.mask, steps.has_mask,
                product, int(later >= 0), steps.mask_U, steps.has_mask_U, grad, grad_step, dh,
                dc, dpre_all, steps.activation, steps.inner_activation, c,
            )  # fmt: skip

    def gru_sequence_forward(steps: Steps, sequence: GruSequence) -> None:
        xw, U_zr, U_h, h0, h_prev_all, gates_all, rh_all, h_all = sequence
        batch, hidden = h0.shape
        rec_zr, rec_h = scratch(batch, 2 * hidden), scratch(batch, hidden)
        for t, t_prev in forward_order(steps.order):
            h_prev = state_before(h0, h_all, t_prev)
            keep_recurrent_input(steps, h_prev, h_prev_all[t])
            gemm_nn(h_prev_all[t], U_zr, no_bias(), rec_zr)
            gru_gates(
                batch, hidden, xw, rec_zr, t, h_prev_all[t], gates_all, rh_all,
                steps.inner_activation, c,
            )  # fmt: skip
            gemm_nn(rh_all[t], U_h, no_bias(), rec_h)
            gru_output(
                batch, hidden, xw, rec_h, t, steps.mask, steps.has_mask, h_prev, gates_all,
                h_all, steps.activation, c,
            )  # fmt: skip

    def gru_sequence_backward(steps: Steps, sequence: GruSequence, gradients: Gradients) -> None:
        grad, _, dpre_all, dh, _ = gradients
        gates_all, h_all = sequence.gates_all, sequence.h_all
        batch, hidden = dh.shape
        product, d_rh, carry = (
            scratch(batch, hidden),
            scratch(batch, hidden),
            scratch(batch, hidden),
        )
        dpre_zr, dpre_h = scratch(batch, 2 * hidden), scratch(batch, hidden)
        for t, t_prev, later, grad_step in backward_order(steps, gradients):
            if later >= 0:  # dpre_zr holds the later step's
                gemm_nt(dpre_zr, sequence.U_zr, no_bias(), product)
            gru_backward_output(
                batch, hidden, gates_all, t, state_before(sequence.h0, h_all, t_prev),
                steps.mask, steps.has_mask, product, carry, int(later >= 0), steps.mask_U,
                steps.has_mask_U, grad, grad_step, dh, dpre_all, dpre_h, steps.activation, c,
            )  # fmt: skip
            gemm_nt(dpre_h, sequence.U_h, no_bias(), d_rh)
            gru_backward_reset(
                batch, hidden, gates_all, t, sequence.h_prev_all[t], d_rh, steps.mask,
                steps.has_mask, dpre_all, dpre_zr, carry, steps.inner_activation, c,
            )  # fmt: skip

    return {
        "rnn_sequence_forward": rnn_sequence_forward,
        "rnn_sequence_backward": rnn_sequence_backward,
        "lstm_sequence_forward": lstm_sequence_forward,
        "lstm_sequence_backward": lstm_sequence_backward,
        "gru_sequence_forward": gru_sequence_forward,
        "gru_sequence_backward": gru_sequence_backward,
    }
