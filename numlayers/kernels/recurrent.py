"""Fused kernels of the recurrent layers (Keras 0.3's SimpleRNN, GRU, LSTM).

The layer keeps sequences time-major and does the matrix products with
:mod:`~numlayers.kernels.matmul`: ``xw (T, B, G*H) = x @ W + b`` for all steps at
once, per step the recurrent product ``rec = h_prev @ U`` (``(B, G*H)``), and after
the backward pass ``dU = H_prev^T @ DPRE``, ``dW = X^T @ DPRE``, ``db`` the column
sums of ``DPRE``. The SimpleRNN and GRU operations do everything in between for one
step ``t`` (an index into the time-major arrays; the layer picks the order, so
``go_backwards`` is only a different order); the LSTM's run every step, recurrent
products included. Gates are ``H`` wide, in Keras 0.3's order: ``i, f, c, o``
for the LSTM (``G = 4``), ``z, r, h`` for the GRU (``G = 3``); SimpleRNN has ``G = 1``.

Arguments: ``xw (T, B, G*H)``; ``rec``, ``rec_zr``, ``rec_h`` the recurrent products of
this step; ``h_prev``, ``c_prev``, ``dh``, ``dc``, ``dh_prev``, ``dc_prev``, ``rh``,
``d_rh`` are ``(B, H)``; ``h_all``, ``c_all`` ``(T, B, H)``; ``gates_all``,
``dpre_all`` ``(T, B, G*H)``, ``gates_all`` holding the activated gates and
``dpre_all`` the gradients of the gates' pre-activations. Steps write row ``t`` of
the ``(T, B, ...)`` outputs. ``mask`` is ``(T, B)`` of 0/1 values and ``has_mask`` an
int flag (with 0 the mask is not read and may be a ``(1, 1)`` dummy): where
``mask[t, b] == 0`` the state is carried over (``h_t = h_{t-1}``, ``c_t = c_{t-1}``),
and backward gives that step zero pre-activation gradients while ``dh`` and ``dc``
pass to the previous step unchanged. ``activation`` and ``inner_activation`` are the
int codes of :data:`ACTIVATION_CODES`.

Operations (both devices; ``act`` is ``activation``, ``inner`` is ``inner_activation``):

- ``rnn_step_forward(xw, rec, t, mask, has_mask, h_prev, h_all, activation)``:
  ``h_all[t] = act(xw[t] + rec)``
- ``rnn_step_backward(h_all, t, h_prev, mask, has_mask, dh, dpre_all, dh_prev,
  activation)``: ``dh`` is the whole gradient reaching ``h_t``;
  ``dpre_all[t] = dh * act'``, ``dh_prev = 0`` (masked rows: ``dpre_all[t] = 0``,
  ``dh_prev = dh``). The layer then adds ``dpre_all[t] @ U^T`` into ``dh_prev``.
  ``h_prev`` is not read.
- ``lstm_sequence_forward(xw, U, order, mask, has_mask, mask_U, has_mask_U, h0, c0,
  h_prev_all, gates_all, c_all, h_all, activation, inner_activation)``: for each step
  ``t`` of ``order`` (an int64 array), from the previous step's states (``h0``, ``c0``
  first): ``h_prev_all[t] = h_prev * mask_U`` (or ``h_prev`` when ``has_mask_U`` is 0:
  the recurrent dropout), ``z = xw[t] + h_prev_all[t] @ U``; ``i, f, o = inner(z_i, z_f,
  z_o)``, ``g = act(z_c)`` into ``gates_all[t]``; ``c = f * c_prev + i * g``,
  ``h = o * act(c)`` into ``c_all[t]``, ``h_all[t]``
- ``lstm_sequence_backward(gates_all, c_all, order, mask, has_mask, mask_U, has_mask_U,
  c0, grad, grad_every_step, U, dh, dc, dpre_all, activation, inner_activation)``:
  back through the steps of ``order``, last first. The gradient reaching ``h_t`` is
  ``grad[t]`` (``grad_every_step``, ``grad (T, B, H)``) or ``grad[0]`` at the last step
  only (``grad (1, B, H)``), plus ``(dpre_all[t_next] @ U^T) * mask_U`` from the step
  after. Writes the gradients of ``z_i, z_f, z_c, z_o`` into ``dpre_all[t]``; ``dh``
  and ``dc`` (zeros on entry) carry the state gradients between steps and are left
  holding what reaches the initial states, except the first step's product through
  ``U``, which is not made
- ``gru_step_gates(xw, rec_zr, t, h_prev, gates_all, rh, inner_activation)``:
  ``z = inner(xw[t, :, :H] + rec_zr[:, :H])``, ``r = inner(xw[t, :, H:2H] + rec_zr[:, H:])``
  into ``gates_all[t, :, :2H]``; ``rh = r * h_prev`` (the layer's next product is
  ``rec_h = rh @ U_h``)
- ``gru_step_output(xw, rec_h, t, mask, has_mask, h_prev, gates_all, h_all,
  activation)``: ``hh = act(xw[t, :, 2H:] + rec_h)`` into ``gates_all[t, :, 2H:]``;
  ``h_all[t] = z * h_prev + (1 - z) * hh``
- ``gru_step_backward_output(gates_all, h_all, t, h_prev, mask, has_mask, dh, dpre_all,
  dh_prev, activation)``: ``dpre_all[t, :, 2H:]`` (``hh``'s pre-activation),
  ``dpre_all[t, :, :H] = dh * (h_prev - hh)`` (the gradient of ``z`` itself: this
  operation has no ``inner_activation``), ``dh_prev = dh * z`` (masked rows:
  ``dpre_all[t, :, :3H] = 0``, ``dh_prev = dh``). The layer then computes
  ``d_rh = dpre_all[t, :, 2H:] @ U_h^T``.
- ``gru_step_backward_reset(gates_all, t, h_prev, d_rh, dpre_all, dh_prev,
  inner_activation)``: ``dpre_all[t, :, H:2H] = d_rh * h_prev * inner'(r)``,
  ``dpre_all[t, :, :H] *= inner'(z)`` (so ``dpre_all[t]`` is now complete) and
  ``dh_prev += d_rh * r``. The layer then adds ``dpre_all[t, :, :2H] @ U_zr^T`` into
  ``dh_prev``.

Derivatives are taken from the activations' outputs (:func:`activation_helpers`).

CPU, SimpleRNN and GRU: one loop over the rows of the batch; within a row, passes
over contiguous spans (the pre-activation sums, each gate's activation, the cell's
combination, the derivatives). A loop that branches on a run-time activation code
does not vectorise, so each activation pass picks one of six loops whose code is a
constant (:func:`code_dispatched_span`), and the activations are those of
:mod:`~numlayers.kernels.activations`, whose ``exp`` vectorises.
CPU, LSTM: compiled for each pair of activation codes it meets (constants of the
code), one loop over the steps with, per step, a parallel loop over chunks of units
(:func:`lstm_chunk_width`): a chunk's thread makes its columns of the recurrent
product with one BLAS call (from a packed copy of those columns of ``U``), then
applies the gates to them. At ``B = 32, H = 128`` on 2 cores a step took about 31 us forward and
36 us backward (float32), where separate product and gate kernels per step took 98.
CUDA: one thread per ``(b, j)`` element, each doing all of its unit's gates; the
LSTM's sequence operations launch the tiled GEMM and a step kernel per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from numlayers.kernels import activations, blas
from numlayers.kernels.activations import (
    Constants,
    constants_for,
    exp_nonpositive,
    expm1_nonpositive,
    log1p_unit,
    scalar_formulas,
)
from numlayers.kernels.blas import SMALL_BLOCK_WORK, THREADS, gemm
from numlayers.kernels.cuda_support import (
    THREADS_PER_BLOCK,
    CudaKernelRegistry,
    blocks_for,
    empty_vector,
    new_registry,
)
from numlayers.kernels.matmul import gemm_launcher
from numlayers.kernels.optimizers import compile_cpu, cpu_inline

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None

#: the activations' run-time codes, as the ``activation`` arguments take them
ACTIVATION_CODES = {
    "linear": 0,
    "relu": 1,
    "tanh": 2,
    "sigmoid": 3,
    "hard_sigmoid": 4,
    "softplus": 5,
}
RELU = ACTIVATION_CODES["relu"]
TANH = ACTIVATION_CODES["tanh"]
SIGMOID = ACTIVATION_CODES["sigmoid"]
HARD_SIGMOID = ACTIVATION_CODES["hard_sigmoid"]
SOFTPLUS = ACTIVATION_CODES["softplus"]

#: Numba's cache watches only the file of the function it caches, and the CPU loops
#: inline the formulas and the ``exp`` of activations.py: a digest of that file goes
#: into the loops' cached names, so an edit there compiles them afresh.
ACTIVATIONS_DIGEST = blas.source_digest(activations.__file__, blas.__file__)


# ---------------------------------------------------------------- scalar helpers


def activation_helpers(
    compile_function: Callable[[Callable[..., Any]], Any], exp: Any, expm1: Any, log1p: Any
) -> tuple[Any, Any]:
    """``apply(code, x, c)`` and ``derivative_from_output(code, y, c)``, compiled.

    Written once for both devices, as :func:`activations.scalar_formulas` (whose
    formulas ``apply`` calls): the CPU passes ``cpu_inline`` and the vectorisable
    ``exp``, CUDA ``device_function`` and ``math.exp``. ``c`` is the dtype's
    :class:`~numlayers.kernels.activations.Constants`. An unknown code is linear (the
    layer validates codes).
    """
    formulas = scalar_formulas(compile_function)
    relu = formulas["relu"][0]
    tanh = formulas["tanh"][0]
    sigmoid = formulas["sigmoid"][0]
    hard_sigmoid = formulas["hard_sigmoid"][0]
    softplus = formulas["softplus"][0]

    def apply(code, x, c):
        if code == TANH:
            return tanh(x, c)
        if code == SIGMOID:
            return sigmoid(x, c)
        if code == HARD_SIGMOID:
            return hard_sigmoid(x, c)
        if code == RELU:
            return relu(x, c)
        if code == SOFTPLUS:
            return softplus(x, c)
        return x

    def derivative_from_output(code, y, c):
        if code == TANH:
            return c.one - y * y
        if code == SIGMOID:
            return y * (c.one - y)
        if code == HARD_SIGMOID:
            return c.hard_slope if y > c.zero and y < c.one else c.zero
        if code == RELU:
            return c.one if y > c.zero else c.zero
        if code == SOFTPLUS:
            # sigmoid(x) = 1 - exp(-softplus(x)); y > 0, and expm1 keeps small y exact
            return -expm1(-y)
        return c.one

    return compile_function(apply), compile_function(derivative_from_output)


@cpu_inline
def is_masked(mask, has_mask, t, b, c):
    """True where row ``b`` of step ``t`` is masked (the mask is read only when given)."""
    return has_mask != 0 and mask[t, b] == c.zero


@cpu_inline
def lstm_cell_state(i, f, g, c_prev):
    return f * c_prev + i * g


@cpu_inline
def lstm_cell_total_gradient(dc, dh_da, o):
    """The whole gradient reaching ``c_t``: its own and the one through ``h_t``."""
    return dc + dh_da * o


@cpu_inline
def lstm_cell_backward(dh, dc_total, i, f, g, o, c_prev, a):
    """Gradients of ``i, f, g, o`` (the activated gates) and of ``c_prev``.

    ``dc_total`` is :func:`lstm_cell_total_gradient`'s and ``a = act(c_t)``; the gates'
    own derivatives are applied by the caller.
    """
    return dc_total * g, dc_total * c_prev, dc_total * i, dh * a, dc_total * f


@cpu_inline
def cell_gradients(dh, dc_total, gates, c_prev, dpre, b, q, j0, hidden):
    """:func:`lstm_cell_backward` of unit ``j0 + q`` of row ``b`` on the CPU's arrays
    (``dc_total`` a ``(B, w)`` block, ``a`` waiting in ``dpre``'s o slot)."""
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


@cpu_inline
def gru_output(z, h_prev, hh, c):
    return z * h_prev + (c.one - z) * hh


@cpu_inline
def gru_output_backward(dh, z, h_prev, hh, c):
    """Gradients of ``z`` and ``hh`` (activated) and ``h_prev``'s direct share."""
    return dh * (h_prev - hh), dh * (c.one - z), dh * z


# ---------------------------------------------------------------- CPU


apply_cpu, derivative_cpu = activation_helpers(
    cpu_inline, exp_nonpositive, expm1_nonpositive, log1p_unit
)


def constant_code_span(formula: Callable[..., Any], code: int) -> Any:
    """A loop ``out[q] = formula(code, x[q], y[q], c)`` over 1-D views, for a fixed ``code``."""

    def span(x, y, out, c):
        for q in range(out.shape[0]):
            out[q] = formula(code, x[q], y[q], c)

    return cpu_inline(span)


def code_dispatched_span(formula: Callable[..., Any]) -> Any:
    """``span(code, x, y, out, c)``: the loop of :func:`constant_code_span` for ``code``.

    LLVM vectorises a loop whose activation is a constant, not one that branches on
    a run-time code in every iteration: so the branch is taken once, to one of six
    loops. ``out`` may be ``x`` (an in-place update).
    """
    linear, relu, tanh, sigmoid, hard_sigmoid, softplus = (
        constant_code_span(formula, ACTIVATION_CODES[name])
        for name in ("linear", "relu", "tanh", "sigmoid", "hard_sigmoid", "softplus")
    )

    def span(code, x, y, out, c):
        if code == TANH:
            tanh(x, y, out, c)
        elif code == SIGMOID:
            sigmoid(x, y, out, c)
        elif code == HARD_SIGMOID:
            hard_sigmoid(x, y, out, c)
        elif code == RELU:
            relu(x, y, out, c)
        elif code == SOFTPLUS:
            softplus(x, y, out, c)
        else:
            linear(x, y, out, c)

    return cpu_inline(span)


@cpu_inline
def activated_sum(code, x, y, c):
    return apply_cpu(code, x + y, c)


@cpu_inline
def times_derivative(code, x, y, c):
    return x * derivative_cpu(code, y, c)


#: ``out = act(x + y)``
activate_sum_span = code_dispatched_span(activated_sum)
#: ``out = x * act'(y)`` (``y`` an activation's output)
derivative_span = code_dispatched_span(times_derivative)

# The CPU loops below take 1-D views of a row (``x[b, lo:hi]`` stays C-contiguous):
# loops over views with one index vectorise where loops over offsets did not.


def rnn_cpu_loops(c: Constants) -> tuple[Callable[..., None], Callable[..., None]]:
    def rnn_step_forward(xw, rec, t, mask, has_mask, h_prev, h_all, activation):
        for b in range(h_prev.shape[0]):
            if is_masked(mask, has_mask, t, b, c):
                h_all[t, b, :] = h_prev[b]
            else:
                activate_sum_span(activation, xw[t, b], rec[b], h_all[t, b], c)

    def rnn_step_backward(h_all, t, h_prev, mask, has_mask, dh, dpre_all, dh_prev, activation):
        for b in range(dh.shape[0]):
            if is_masked(mask, has_mask, t, b, c):
                dpre_all[t, b, :] = c.zero
                dh_prev[b, :] = dh[b]
            else:
                derivative_span(activation, dh[b], h_all[t, b], dpre_all[t, b], c)
                dh_prev[b, :] = c.zero

    return rnn_step_forward, rnn_step_backward


@cpu_inline
def add_incoming_gradients(dh, product, has_product, mask_U, has_mask_U, grad, grad_step, j0, w):
    """``dh[:, j0:j0 + w] += product * mask_U`` (the later step's gradient through U,
    when ``has_product``) ``+ grad[grad_step]`` (the output's, when ``grad_step >= 0``)."""
    for b in range(dh.shape[0]):
        if has_product and has_mask_U:
            for q in range(w):
                dh[b, j0 + q] += product[b, q] * mask_U[b, j0 + q]
        elif has_product:
            for q in range(w):
                dh[b, j0 + q] += product[b, q]
        if grad_step >= 0:
            for q in range(w):
                dh[b, j0 + q] += grad[grad_step, b, j0 + q]


@njit(cache=True)
def lstm_chunk_width(batch, hidden):
    """Units per chunk of the CPU LSTM passes: each gate's share of a chunk's product
    (``batch x hidden x width``) within BLAS's small-matrix size, at least as many
    chunks as threads, and a multiple of 16 (vector width)."""
    width = SMALL_BLOCK_WORK // max(batch * hidden, 1)
    width = min(width, (hidden + THREADS - 1) // THREADS)
    width = ((width + 15) // 16) * 16
    return max(1, min(width, hidden))


def lstm_cpu_loops(c: Constants, act: int, inner: int) -> tuple[Any, Any]:
    """The LSTM's sequence passes for activation codes ``act`` and ``inner`` (constants
    of the compiled code): a loop over the steps, each step one parallel loop over
    chunks of units. A chunk's thread multiplies its columns of every gate (from
    packed copies of ``U``) and then applies the gates to them, so a step needs one
    fork and join, not one per kernel. Explicit loops, not array expressions, outside
    the parallel loops: Numba would make each array expression a parallel loop too."""

    # The blocks are closures over the activation codes, compiled on their own: with
    # the codes passed down as arguments of an inlined function instead, Numba did not
    # prune the other activations' branches and the loops did not vectorise.
    def forward_block_function(
        x, rec, h_prev, c_prev, mask, has_mask, t, gates, cells, hs, j0, w, hidden
    ):
        """Step ``t`` of units ``j0:j0 + w`` of every row: the gates from the
        pre-activations ``x + rec`` (``rec`` this chunk's ``(B, 4 * width)`` products,
        gate after gate), the cells and the outputs, into the step's ``(B, ...)`` rows
        ``gates``, ``cells``, ``hs``.

        Offsets are unsigned and arrays are indexed, not sliced, so that LLVM vectorises
        each loop (a slice is a view whose reference count two threads would contend
        for); ``act`` and ``inner`` must be compile-time constants, for the same reason.
        """
        f0 = hidden + j0
        g0 = f0 + hidden
        o0 = g0 + hidden
        r1 = np.uint64(rec.shape[1] // 4)  # where each gate's products start in rec
        r2 = r1 + r1
        r3 = r2 + r1
        for b in range(x.shape[0]):
            for q in range(w):
                gates[b, j0 + q] = apply_cpu(inner, x[b, j0 + q] + rec[b, q], c)
            for q in range(w):
                gates[b, f0 + q] = apply_cpu(inner, x[b, f0 + q] + rec[b, r1 + q], c)
            for q in range(w):
                gates[b, g0 + q] = apply_cpu(act, x[b, g0 + q] + rec[b, r2 + q], c)
            for q in range(w):
                gates[b, o0 + q] = apply_cpu(inner, x[b, o0 + q] + rec[b, r3 + q], c)
            if is_masked(mask, has_mask, t, b, c):
                for q in range(w):
                    cells[b, j0 + q] = c_prev[b, j0 + q]
                for q in range(w):
                    hs[b, j0 + q] = h_prev[b, j0 + q]
                continue
            for q in range(w):
                cells[b, j0 + q] = lstm_cell_state(
                    gates[b, j0 + q], gates[b, f0 + q], gates[b, g0 + q], c_prev[b, j0 + q]
                )
            for q in range(w):
                hs[b, j0 + q] = gates[b, o0 + q] * apply_cpu(act, cells[b, j0 + q], c)

    def backward_block_function(
        gates, cells, c_prev, mask, has_mask, t, dh, dc, dpre, scratch, j0, w, hidden
    ):
        """Backward of step ``t`` for units ``j0:j0 + w`` of every row, once ``dh`` holds
        the whole gradient reaching ``h_t``: the pre-activation gradients into the step's
        rows ``dpre``, ``dc`` becomes the gradient reaching ``c_prev`` and ``dh`` zero
        (masked rows: ``dpre`` zero, ``dh`` and ``dc`` pass through); ``scratch`` is
        ``(B, w)`` or wider. Written as ``forward_block_function``."""
        f0 = hidden + j0
        g0 = f0 + hidden
        o0 = g0 + hidden
        for b in range(dh.shape[0]):
            if is_masked(mask, has_mask, t, b, c):
                for q in range(w):
                    dpre[b, j0 + q] = c.zero
                    dpre[b, f0 + q] = c.zero
                    dpre[b, g0 + q] = c.zero
                    dpre[b, o0 + q] = c.zero
                continue
            # lstm_cell_backward, as loops that each write one array and so vectorise
            # (each uses one of its results; LLVM drops the others): a = act(c_t)
            # waits in the o slot, the whole gradient of c_t in scratch
            for q in range(w):
                dpre[b, o0 + q] = apply_cpu(act, cells[b, j0 + q], c)
            for q in range(w):
                dh_da = dh[b, j0 + q] * derivative_cpu(act, dpre[b, o0 + q], c)
                scratch[b, q] = lstm_cell_total_gradient(dc[b, j0 + q], dh_da, gates[b, o0 + q])
            for q in range(w):
                d_i = cell_gradients(dh, scratch, gates, c_prev, dpre, b, q, j0, hidden)[0]
                dpre[b, j0 + q] = d_i * derivative_cpu(inner, gates[b, j0 + q], c)
            for q in range(w):
                d_f = cell_gradients(dh, scratch, gates, c_prev, dpre, b, q, j0, hidden)[1]
                dpre[b, f0 + q] = d_f * derivative_cpu(inner, gates[b, f0 + q], c)
            for q in range(w):
                d_g = cell_gradients(dh, scratch, gates, c_prev, dpre, b, q, j0, hidden)[2]
                dpre[b, g0 + q] = d_g * derivative_cpu(act, gates[b, g0 + q], c)
            for q in range(w):
                dc[b, j0 + q] = cell_gradients(dh, scratch, gates, c_prev, dpre, b, q, j0, hidden)[
                    4
                ]
            for q in range(w):  # last: this overwrites a
                d_o = cell_gradients(dh, scratch, gates, c_prev, dpre, b, q, j0, hidden)[3]
                dpre[b, o0 + q] = d_o * derivative_cpu(inner, gates[b, o0 + q], c)
                dh[b, j0 + q] = c.zero  # what reaches h_prev comes through U, next step

    forward_block = compile_loop(forward_block_function, f"lstm_forward_block_{act}_{inner}")
    backward_block = compile_loop(backward_block_function, f"lstm_backward_block_{act}_{inner}")

    def lstm_sequence_forward(
        xw,
        U,
        order,
        mask,
        has_mask,
        mask_U,
        has_mask_U,
        h0,
        c0,
        h_prev_all,
        gates_all,
        c_all,
        h_all,
    ):
        batch, hidden = h0.shape
        width = lstm_chunk_width(batch, hidden)
        chunks = (hidden + width - 1) // width
        # U's columns of each chunk, gate after gate (one product per chunk and step)
        packed = np.zeros((chunks, hidden, 4 * width), U.dtype)
        for chunk in range(chunks):
            j0 = chunk * width
            for gate in range(4):
                for k in range(hidden):
                    for q in range(min(width, hidden - j0)):
                        packed[chunk, k, gate * width + q] = U[k, gate * hidden + j0 + q]
        rec = np.empty((chunks, batch, 4 * width), U.dtype)
        for position in range(order.shape[0]):
            t = order[position]
            h_prev, c_prev = h0, c0
            if position > 0:
                h_prev, c_prev = h_all[order[position - 1]], c_all[order[position - 1]]
            h_in = h_prev_all[t]  # the state the product reads (dropped out), kept for dU
            for b in range(batch):
                for j in range(hidden):
                    h_in[b, j] = h_prev[b, j] * mask_U[b, j] if has_mask_U else h_prev[b, j]
            for chunk in prange(chunks):
                j0 = chunk * width
                w = min(j0 + width, hidden) - j0
                gemm(h_in, packed[chunk], rec[chunk], False, False, 1, 0)
                forward_block(
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
                    np.uint64(j0),
                    np.uint64(w),
                    np.uint64(hidden),
                )

    def lstm_sequence_backward(
        gates_all,
        c_all,
        order,
        mask,
        has_mask,
        mask_U,
        has_mask_U,
        c0,
        grad,
        grad_every_step,
        U,
        dh,
        dc,
        dpre_all,
    ):
        batch, hidden = dh.shape
        width = lstm_chunk_width(batch, hidden)
        chunks = (hidden + width - 1) // width
        packed = np.empty((chunks, 4 * hidden, width), U.dtype)  # U.T's columns of each chunk
        for chunk in range(chunks):
            j0 = chunk * width
            for k in range(4 * hidden):
                for q in range(min(width, hidden - j0)):
                    packed[chunk, k, q] = U[j0 + q, k]
        product = np.empty((chunks, batch, width), U.dtype)
        steps = order.shape[0]
        for position in range(steps - 1, -1, -1):
            t = order[position]
            t_next = order[position + 1] if position < steps - 1 else -1
            c_prev = c0 if position == 0 else c_all[order[position - 1]]
            grad_step = t if grad_every_step else (0 if position == steps - 1 else -1)
            for chunk in prange(chunks):
                j0 = chunk * width
                w = min(j0 + width, hidden) - j0
                if t_next >= 0:  # the later step's pre-activation gradients, back through U
                    recurrent = product[chunk, :, :w]
                    gemm(dpre_all[t_next], packed[chunk, :, :w], recurrent, False, False, 1, 0)
                start, count = np.uint64(j0), np.uint64(w)
                add_incoming_gradients(
                    dh,
                    product[chunk],
                    t_next >= 0,
                    mask_U,
                    has_mask_U,
                    grad,
                    grad_step,
                    start,
                    count,
                )
                backward_block(
                    gates_all[t],
                    c_all[t],
                    c_prev,
                    mask,
                    has_mask,
                    t,
                    dh,
                    dc,
                    dpre_all[t],
                    product[chunk],  # its values are in dh now: scratch
                    start,
                    count,
                    np.uint64(hidden),
                )

    # parallel functions called from Python: a cached serial function that calls a
    # parallel one can crash when Numba loads it from its cache (numba/numba#8578)
    return (
        compile_parallel(lstm_sequence_forward, f"lstm_sequence_forward_{act}_{inner}"),
        compile_parallel(lstm_sequence_backward, f"lstm_sequence_backward_{act}_{inner}"),
    )


def lstm_cpu_operations(c: Constants) -> dict[str, Any]:
    """``lstm_sequence_forward`` and ``lstm_sequence_backward``, each compiled for the
    pair of activation codes it is called with (on first use of the pair)."""
    passes: dict[tuple[int, int], tuple[Any, Any]] = {}

    def compiled(act: int, inner: int) -> tuple[Any, Any]:
        if (act, inner) not in passes:
            passes[act, inner] = lstm_cpu_loops(c, act, inner)
        return passes[act, inner]

    def lstm_sequence_forward(*arguments: Any) -> None:
        *arrays, act, inner = arguments
        compiled(act, inner)[0](*arrays)

    def lstm_sequence_backward(*arguments: Any) -> None:
        *arrays, act, inner = arguments
        compiled(act, inner)[1](*arrays)

    return {
        "lstm_sequence_forward": lstm_sequence_forward,
        "lstm_sequence_backward": lstm_sequence_backward,
    }


def gru_cpu_loops(c: Constants) -> tuple[Callable[..., None], ...]:
    def gru_step_gates(xw, rec_zr, t, h_prev, gates_all, rh, inner_activation):
        hidden = h_prev.shape[1]
        for b in range(h_prev.shape[0]):
            zr = gates_all[t, b, : 2 * hidden]
            activate_sum_span(inner_activation, xw[t, b, : 2 * hidden], rec_zr[b], zr, c)
            r, hp, rhb = zr[hidden:], h_prev[b], rh[b]
            for j in range(hidden):
                rhb[j] = r[j] * hp[j]

    def gru_step_output(xw, rec_h, t, mask, has_mask, h_prev, gates_all, h_all, activation):
        hidden = h_prev.shape[1]
        for b in range(h_prev.shape[0]):
            z = gates_all[t, b, :hidden]
            hh = gates_all[t, b, 2 * hidden :]
            activate_sum_span(activation, xw[t, b, 2 * hidden :], rec_h[b], hh, c)
            h = h_all[t, b]
            hp = h_prev[b]
            if is_masked(mask, has_mask, t, b, c):
                h[:] = hp
                continue
            for j in range(hidden):
                h[j] = gru_output(z[j], hp[j], hh[j], c)

    def gru_step_backward_output(
        gates_all, h_all, t, h_prev, mask, has_mask, dh, dpre_all, dh_prev, activation
    ):
        hidden = dh.shape[1]
        for b in range(dh.shape[0]):
            if is_masked(mask, has_mask, t, b, c):
                dpre_all[t, b, :] = c.zero
                dh_prev[b, :] = dh[b]
                continue
            z = gates_all[t, b, :hidden]
            hh = gates_all[t, b, 2 * hidden :]
            d_z = dpre_all[t, b, :hidden]
            d_hh = dpre_all[t, b, 2 * hidden :]
            dhb, hp, dhp = dh[b], h_prev[b], dh_prev[b]
            for j in range(hidden):
                d_z[j], d_hh[j], dhp[j] = gru_output_backward(dhb[j], z[j], hp[j], hh[j], c)
            derivative_span(activation, d_hh, hh, d_hh, c)

    def gru_step_backward_reset(gates_all, t, h_prev, d_rh, dpre_all, dh_prev, inner_activation):
        hidden = h_prev.shape[1]
        for b in range(h_prev.shape[0]):
            zr = gates_all[t, b, : 2 * hidden]
            d_zr = dpre_all[t, b, : 2 * hidden]
            r, d_r = zr[hidden:], d_zr[hidden:]
            d_rhb, hp, dhp = d_rh[b], h_prev[b], dh_prev[b]
            for j in range(hidden):
                d_r[j] = d_rhb[j] * hp[j]
                dhp[j] += d_rhb[j] * r[j]
            derivative_span(inner_activation, d_zr, zr, d_zr, c)

    return gru_step_gates, gru_step_output, gru_step_backward_output, gru_step_backward_reset


def compile_loop(template: Callable[..., Any], name: str, parallel: bool = False) -> Any:
    """Compile a CPU loop of this module (cached under ``name`` and the digest)."""
    # the numpy error model lets the divisions of tanh and sigmoid vectorise
    return compile_cpu(
        template,
        f"{name}_{ACTIVATIONS_DIGEST}",
        parallel,
        error_model="numpy",
        fastmath={"contract"},
    )


def compile_parallel(template: Callable[..., Any], name: str) -> Any:
    return compile_loop(template, name, parallel=True)


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    c = constants_for(dtype)
    templates = (*rnn_cpu_loops(c), *gru_cpu_loops(c))
    return {
        **{template.__name__: compile_loop(template, template.__name__) for template in templates},
        **lstm_cpu_operations(c),
    }


# ---------------------------------------------------------------- CUDA


class CudaHelpers:
    """The scalar helpers compiled as device functions, and the kernels' argument types."""

    def __init__(self, registry: CudaKernelRegistry) -> None:
        self.apply, self.derivative = activation_helpers(
            registry.device, math.exp, math.expm1, math.log1p
        )
        self.is_masked = registry.device(is_masked)
        self.lstm_cell_state = registry.device(lstm_cell_state)
        self.lstm_cell_backward = registry.device(lstm_cell_backward)
        self.lstm_cell_total_gradient = registry.device(lstm_cell_total_gradient)
        self.gru_output = registry.device(gru_output)
        self.gru_output_backward = registry.device(gru_output_backward)
        self.matrix = registry.array(2)
        self.tensor = registry.array(3)
        self.index = numba.types.int64


def launcher(kernel: Any, units: int) -> Callable[..., None]:
    """The operation that launches ``kernel`` on its arguments, with one thread per
    element of the ``(B, H)`` array among them at position ``units``."""

    def operation(*arguments: Any) -> None:
        kernel[blocks_for(arguments[units].size), THREADS_PER_BLOCK](*arguments)

    return operation


def rnn_cuda_operations(registry: CudaKernelRegistry, helpers: CudaHelpers, c: Constants) -> Any:
    apply, derivative, masked = helpers.apply, helpers.derivative, helpers.is_masked
    matrix, tensor, index = helpers.matrix, helpers.tensor, helpers.index

    @registry.jit(tensor, matrix, index, matrix, index, matrix, tensor, index)
    def rnn_step_forward_kernel(xw, rec, t, mask, has_mask, h_prev, h_all, activation):
        unit = cuda.grid(1)
        if unit < h_prev.size:
            b = unit // h_prev.shape[1]
            j = unit % h_prev.shape[1]
            if masked(mask, has_mask, t, b, c):
                h_all[t, b, j] = h_prev[b, j]
            else:
                h_all[t, b, j] = apply(activation, xw[t, b, j] + rec[b, j], c)

    @registry.jit(tensor, index, matrix, matrix, index, matrix, tensor, matrix, index)
    def rnn_step_backward_kernel(
        h_all, t, h_prev, mask, has_mask, dh, dpre_all, dh_prev, activation
    ):
        unit = cuda.grid(1)
        if unit < dh.size:
            b = unit // dh.shape[1]
            j = unit % dh.shape[1]
            if masked(mask, has_mask, t, b, c):
                dpre_all[t, b, j] = c.zero
                dh_prev[b, j] = dh[b, j]
            else:
                dpre_all[t, b, j] = dh[b, j] * derivative(activation, h_all[t, b, j], c)
                dh_prev[b, j] = c.zero

    return {
        "rnn_step_forward": launcher(rnn_step_forward_kernel, 5),  # h_prev
        "rnn_step_backward": launcher(rnn_step_backward_kernel, 5),  # dh
    }


def lstm_cuda_operations(
    registry: CudaKernelRegistry, helpers: CudaHelpers, c: Constants, cuda_api: Any
) -> Any:
    """The LSTM's sequence passes on CUDA: per step, the recurrent product through the
    tiled GEMM and one kernel with a thread per ``(b, j)`` unit doing all of its gates."""
    apply, derivative, masked = helpers.apply, helpers.derivative, helpers.is_masked
    cell_state, cell_backward = helpers.lstm_cell_state, helpers.lstm_cell_backward
    total_gradient = helpers.lstm_cell_total_gradient
    matrix, tensor, index = helpers.matrix, helpers.tensor, helpers.index
    dtype = registry.dtype
    gemm_nn = gemm_launcher(cuda_api, dtype, False, False)
    gemm_nt = gemm_launcher(cuda_api, dtype, False, True)
    no_bias = empty_vector(cuda_api, dtype)

    @registry.jit(matrix, matrix, index, matrix)
    def lstm_recurrent_input_kernel(h_prev, mask_U, has_mask_U, h_in):
        unit = cuda.grid(1)
        if unit < h_prev.size:
            b = unit // h_prev.shape[1]
            j = unit % h_prev.shape[1]
            h_in[b, j] = h_prev[b, j] * mask_U[b, j] if has_mask_U != 0 else h_prev[b, j]

    @registry.jit(
        tensor, matrix, index, matrix, index, matrix, matrix, tensor, tensor, tensor, index, index
    )
    def lstm_step_forward_kernel(
        xw, rec, t, mask, has_mask, h_prev, c_prev, gates_all, c_all, h_all, activation, inner
    ):
        unit = cuda.grid(1)
        if unit < h_prev.size:
            hidden = h_prev.shape[1]
            b = unit // hidden
            j = unit % hidden
            i = apply(inner, xw[t, b, j] + rec[b, j], c)
            f = apply(inner, xw[t, b, hidden + j] + rec[b, hidden + j], c)
            g = apply(activation, xw[t, b, 2 * hidden + j] + rec[b, 2 * hidden + j], c)
            o = apply(inner, xw[t, b, 3 * hidden + j] + rec[b, 3 * hidden + j], c)
            gates_all[t, b, j] = i
            gates_all[t, b, hidden + j] = f
            gates_all[t, b, 2 * hidden + j] = g
            gates_all[t, b, 3 * hidden + j] = o
            if masked(mask, has_mask, t, b, c):
                c_all[t, b, j] = c_prev[b, j]
                h_all[t, b, j] = h_prev[b, j]
            else:
                cell = cell_state(i, f, g, c_prev[b, j])
                c_all[t, b, j] = cell
                h_all[t, b, j] = o * apply(activation, cell, c)

    @registry.jit(
        tensor,
        tensor,
        index,
        matrix,
        matrix,
        index,
        matrix,
        index,
        matrix,
        index,
        tensor,
        index,
        matrix,
        matrix,
        tensor,
        index,
        index,
    )
    def lstm_step_backward_kernel(
        gates_all,
        c_all,
        t,
        c_prev,
        mask,
        has_mask,
        product,
        has_product,
        mask_U,
        has_mask_U,
        grad,
        grad_step,
        dh,
        dc,
        dpre_all,
        activation,
        inner,
    ):
        unit = cuda.grid(1)
        if unit < dh.size:
            hidden = dh.shape[1]
            b = unit // hidden
            j = unit % hidden
            dh_total = dh[b, j]
            if has_product != 0:
                recurrent = product[b, j]
                dh_total += recurrent * mask_U[b, j] if has_mask_U != 0 else recurrent
            if grad_step >= 0:
                dh_total += grad[grad_step, b, j]
            if masked(mask, has_mask, t, b, c):
                for gate in range(4):
                    dpre_all[t, b, gate * hidden + j] = c.zero
                dh[b, j] = dh_total
                return
            i = gates_all[t, b, j]
            f = gates_all[t, b, hidden + j]
            g = gates_all[t, b, 2 * hidden + j]
            o = gates_all[t, b, 3 * hidden + j]
            a = apply(activation, c_all[t, b, j], c)
            dc_total = total_gradient(dc[b, j], dh_total * derivative(activation, a, c), o)
            d_i, d_f, d_g, d_o, dc[b, j] = cell_backward(
                dh_total, dc_total, i, f, g, o, c_prev[b, j], a
            )
            dpre_all[t, b, j] = d_i * derivative(inner, i, c)
            dpre_all[t, b, hidden + j] = d_f * derivative(inner, f, c)
            dpre_all[t, b, 2 * hidden + j] = d_g * derivative(activation, g, c)
            dpre_all[t, b, 3 * hidden + j] = d_o * derivative(inner, o, c)
            dh[b, j] = c.zero

    def lstm_sequence_forward(
        xw: Any,
        U: Any,
        order: np.ndarray,
        mask: Any,
        has_mask: int,
        mask_U: Any,
        has_mask_U: int,
        h0: Any,
        c0: Any,
        h_prev_all: Any,
        gates_all: Any,
        c_all: Any,
        h_all: Any,
        activation: int,
        inner: int,
    ) -> None:
        batch, hidden = h0.shape
        rec = cuda_api.device_array((batch, 4 * hidden), dtype=dtype)
        blocks = blocks_for(batch * hidden)
        for position, step in enumerate(order):
            t = int(step)
            h_prev, c_prev = h0, c0
            if position > 0:
                h_prev, c_prev = h_all[int(order[position - 1])], c_all[int(order[position - 1])]
            h_in = h_prev_all[t]
            lstm_recurrent_input_kernel[blocks, THREADS_PER_BLOCK](h_prev, mask_U, has_mask_U, h_in)
            gemm_nn(h_in, U, no_bias(), rec)
            lstm_step_forward_kernel[blocks, THREADS_PER_BLOCK](
                xw,
                rec,
                t,
                mask,
                has_mask,
                h_prev,
                c_prev,
                gates_all,
                c_all,
                h_all,
                activation,
                inner,
            )

    def lstm_sequence_backward(
        gates_all: Any,
        c_all: Any,
        order: np.ndarray,
        mask: Any,
        has_mask: int,
        mask_U: Any,
        has_mask_U: int,
        c0: Any,
        grad: Any,
        grad_every_step: int,
        U: Any,
        dh: Any,
        dc: Any,
        dpre_all: Any,
        activation: int,
        inner: int,
    ) -> None:
        batch, hidden = dh.shape
        product = cuda_api.device_array((batch, hidden), dtype=dtype)
        blocks = blocks_for(batch * hidden)
        steps = len(order)
        for position in range(steps - 1, -1, -1):
            t = int(order[position])
            has_product = position < steps - 1
            if has_product:
                gemm_nt(dpre_all[int(order[position + 1])], U, no_bias(), product)
            grad_step = t if grad_every_step else (0 if position == steps - 1 else -1)
            c_prev = c0 if position == 0 else c_all[int(order[position - 1])]
            lstm_step_backward_kernel[blocks, THREADS_PER_BLOCK](
                gates_all,
                c_all,
                t,
                c_prev,
                mask,
                has_mask,
                product,
                int(has_product),
                mask_U,
                has_mask_U,
                grad,
                grad_step,
                dh,
                dc,
                dpre_all,
                activation,
                inner,
            )

    return {
        "lstm_sequence_forward": lstm_sequence_forward,
        "lstm_sequence_backward": lstm_sequence_backward,
    }


def gru_cuda_operations(registry: CudaKernelRegistry, helpers: CudaHelpers, c: Constants) -> Any:
    apply, derivative, masked = helpers.apply, helpers.derivative, helpers.is_masked
    output, output_backward = helpers.gru_output, helpers.gru_output_backward
    matrix, tensor, index = helpers.matrix, helpers.tensor, helpers.index

    @registry.jit(tensor, matrix, index, matrix, tensor, matrix, index)
    def gru_step_gates_kernel(xw, rec_zr, t, h_prev, gates_all, rh, inner):
        unit = cuda.grid(1)
        if unit < h_prev.size:
            hidden = h_prev.shape[1]
            b = unit // hidden
            j = unit % hidden
            gates_all[t, b, j] = apply(inner, xw[t, b, j] + rec_zr[b, j], c)
            r = apply(inner, xw[t, b, hidden + j] + rec_zr[b, hidden + j], c)
            gates_all[t, b, hidden + j] = r
            rh[b, j] = r * h_prev[b, j]

    @registry.jit(tensor, matrix, index, matrix, index, matrix, tensor, tensor, index)
    def gru_step_output_kernel(xw, rec_h, t, mask, has_mask, h_prev, gates_all, h_all, activation):
        unit = cuda.grid(1)
        if unit < h_prev.size:
            hidden = h_prev.shape[1]
            b = unit // hidden
            j = unit % hidden
            hh = apply(activation, xw[t, b, 2 * hidden + j] + rec_h[b, j], c)
            gates_all[t, b, 2 * hidden + j] = hh
            if masked(mask, has_mask, t, b, c):
                h_all[t, b, j] = h_prev[b, j]
            else:
                h_all[t, b, j] = output(gates_all[t, b, j], h_prev[b, j], hh, c)

    @registry.jit(tensor, tensor, index, matrix, matrix, index, matrix, tensor, matrix, index)
    def gru_step_backward_output_kernel(
        gates_all, h_all, t, h_prev, mask, has_mask, dh, dpre_all, dh_prev, activation
    ):
        unit = cuda.grid(1)
        if unit < dh.size:
            hidden = dh.shape[1]
            b = unit // hidden
            j = unit % hidden
            if masked(mask, has_mask, t, b, c):
                for gate in range(3):
                    dpre_all[t, b, gate * hidden + j] = c.zero
                dh_prev[b, j] = dh[b, j]
                return
            hh = gates_all[t, b, 2 * hidden + j]
            d_z, d_hh, dh_prev[b, j] = output_backward(
                dh[b, j], gates_all[t, b, j], h_prev[b, j], hh, c
            )
            dpre_all[t, b, j] = d_z
            dpre_all[t, b, 2 * hidden + j] = d_hh * derivative(activation, hh, c)

    @registry.jit(tensor, index, matrix, matrix, tensor, matrix, index)
    def gru_step_backward_reset_kernel(gates_all, t, h_prev, d_rh, dpre_all, dh_prev, inner):
        unit = cuda.grid(1)
        if unit < h_prev.size:
            hidden = h_prev.shape[1]
            b = unit // hidden
            j = unit % hidden
            r = gates_all[t, b, hidden + j]
            dpre_all[t, b, hidden + j] = d_rh[b, j] * h_prev[b, j] * derivative(inner, r, c)
            dpre_all[t, b, j] *= derivative(inner, gates_all[t, b, j], c)
            dh_prev[b, j] += d_rh[b, j] * r

    return {
        "gru_step_gates": launcher(gru_step_gates_kernel, 3),  # h_prev
        "gru_step_output": launcher(gru_step_output_kernel, 5),  # h_prev
        "gru_step_backward_output": launcher(gru_step_backward_output_kernel, 3),  # h_prev
        "gru_step_backward_reset": launcher(gru_step_backward_reset_kernel, 2),  # h_prev
    }


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    helpers = CudaHelpers(registry)
    c = constants_for(dtype)
    return {
        **rnn_cuda_operations(registry, helpers, c),
        **lstm_cuda_operations(registry, helpers, c, cuda_api),
        **gru_cuda_operations(registry, helpers, c),
    }
