"""Fused per-timestep kernels of the recurrent layers (Keras 0.3's SimpleRNN, GRU, LSTM).

The layer keeps sequences time-major and does the matrix products with
:mod:`~numlayers.kernels.matmul`: ``xw (T, B, G*H) = x @ W + b`` for all steps at
once, per step the recurrent product ``rec = h_prev @ U`` (``(B, G*H)``), and after
the backward pass ``dU = H_prev^T @ DPRE``, ``dW = X^T @ DPRE``, ``db`` the column
sums of ``DPRE``. These operations do everything in between, for one step ``t`` (an
index into the time-major arrays; the layer picks the order, so ``go_backwards`` is
only a different order). Gates are ``H`` wide, in Keras 0.3's order: ``i, f, c, o``
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
- ``lstm_step_forward(xw, rec, t, mask, has_mask, h_prev, c_prev, gates_all, c_all,
  h_all, activation, inner_activation)``: ``i, f, o = inner(z_i, z_f, z_o)``,
  ``g = act(z_c)`` (``z = xw[t] + rec``) into ``gates_all[t]``;
  ``c = f * c_prev + i * g``, ``h = o * act(c)`` into ``c_all[t]``, ``h_all[t]``
- ``lstm_step_backward(gates_all, c_all, t, c_prev, mask, has_mask, dh, dc, dpre_all,
  dh_prev, dc_prev, activation, inner_activation)``: ``dh``, ``dc`` are the whole
  gradients reaching ``h_t`` and ``c_t``; writes the gradients of ``z_i, z_f, z_c,
  z_o`` into ``dpre_all[t]``, ``dc_prev`` and ``dh_prev = 0`` (masked rows: ``0``,
  ``dc``, ``dh``)
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

CPU: one loop over the rows of the batch; within a row, passes over contiguous spans
(the pre-activation sums, each gate's activation, the cell's combination, the
derivatives). A loop that branches on a run-time activation code does not vectorise,
so each activation pass picks one of six loops whose code is a constant
(:func:`code_dispatched_span`), and the activations are those of
:mod:`~numlayers.kernels.activations`, whose ``exp`` vectorises. One core: at
``B = 32, H = 128`` an LSTM step takes about 20 us (float32), and loops over the batch
on two cores measured slower, not faster.
CUDA: one thread per ``(b, j)`` element, each doing all of its unit's gates.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

from numlayers.kernels import activations
from numlayers.kernels.activations import (
    Constants,
    constants_for,
    exp_nonpositive,
    expm1_nonpositive,
    log1p_unit,
    scalar_formulas,
)
from numlayers.kernels.cuda_support import (
    THREADS_PER_BLOCK,
    CudaKernelRegistry,
    blocks_for,
    new_registry,
)
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
ACTIVATIONS_DIGEST = hashlib.sha256(Path(activations.__file__).read_bytes()).hexdigest()[:16]


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
    formulas = scalar_formulas(compile_function, exp, expm1, log1p)
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
def lstm_cell_backward(dh, dc, i, f, g, o, c_prev, a, dh_da):
    """Gradients of ``i, f, g, o`` (the activated gates) and of ``c_prev``.

    ``a = act(c_t)`` and ``dh_da = dh * act'(c_t)``; the gates' own derivatives are
    applied by the caller.
    """
    dc_total = dc + dh_da * o
    return dc_total * g, dc_total * c_prev, dc_total * i, dh * a, dc_total * f


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
def activated(code, x, y, c):
    return apply_cpu(code, x, c)


@cpu_inline
def times_derivative(code, x, y, c):
    return x * derivative_cpu(code, y, c)


#: ``out = act(x + y)``
activate_sum_span = code_dispatched_span(activated_sum)
#: ``out = act(x)`` (``y`` is not read)
activate_span = code_dispatched_span(activated)
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
def lstm_gates(row, hidden):
    """The ``i, f, c, o`` parts of a ``4 * hidden`` row, as views."""
    return row[:hidden], row[hidden : 2 * hidden], row[2 * hidden : 3 * hidden], row[3 * hidden :]


def lstm_cpu_loops(c: Constants) -> tuple[Callable[..., None], Callable[..., None]]:
    def lstm_step_forward(
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
        inner_activation,
    ):
        hidden = h_prev.shape[1]
        two, three = 2 * hidden, 3 * hidden
        for b in range(h_prev.shape[0]):
            x = xw[t, b]
            r = rec[b]
            gates = gates_all[t, b]
            activate_sum_span(inner_activation, x[:two], r[:two], gates[:two], c)
            activate_sum_span(activation, x[two:three], r[two:three], gates[two:three], c)
            activate_sum_span(inner_activation, x[three:], r[three:], gates[three:], c)
            cell = c_all[t, b]
            h = h_all[t, b]
            if is_masked(mask, has_mask, t, b, c):
                cell[:] = c_prev[b]
                h[:] = h_prev[b]
                continue
            i, f, g, o = lstm_gates(gates, hidden)
            cp = c_prev[b]
            for j in range(hidden):
                cell[j] = lstm_cell_state(i[j], f[j], g[j], cp[j])
            activate_span(activation, cell, cell, h, c)
            for j in range(hidden):
                h[j] *= o[j]

    def lstm_step_backward(
        gates_all,
        c_all,
        t,
        c_prev,
        mask,
        has_mask,
        dh,
        dc,
        dpre_all,
        dh_prev,
        dc_prev,
        activation,
        inner_activation,
    ):
        hidden = dh.shape[1]
        for b in range(dh.shape[0]):
            dpre = dpre_all[t, b]
            if is_masked(mask, has_mask, t, b, c):
                dpre[:] = c.zero
                dc_prev[b, :] = dc[b]
                dh_prev[b, :] = dh[b]
                continue
            gates = gates_all[t, b]
            i, f, g, o = lstm_gates(gates, hidden)
            d_i, d_f, d_g, d_o = lstm_gates(dpre, hidden)
            # scratch in the o and g slots: a = act(c_t), then dh * act'(c_t) from a
            activate_span(activation, c_all[t, b], c_all[t, b], d_o, c)
            derivative_span(activation, dh[b], d_o, d_g, c)
            dhb, dcb, cp, dcp = dh[b], dc[b], c_prev[b], dc_prev[b]
            for j in range(hidden):
                d_i[j], d_f[j], d_g[j], d_o[j], dcp[j] = lstm_cell_backward(
                    dhb[j], dcb[j], i[j], f[j], g[j], o[j], cp[j], d_o[j], d_g[j]
                )
            dh_prev[b, :] = c.zero
            derivative_span(
                inner_activation, dpre[: 2 * hidden], gates[: 2 * hidden], dpre[: 2 * hidden], c
            )
            derivative_span(activation, d_g, g, d_g, c)
            derivative_span(inner_activation, d_o, o, d_o, c)

    return lstm_step_forward, lstm_step_backward


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


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    c = constants_for(dtype)
    templates = (*rnn_cpu_loops(c), *lstm_cpu_loops(c), *gru_cpu_loops(c))
    # the numpy error model lets the divisions of tanh and sigmoid vectorise
    return {
        template.__name__: compile_cpu(
            template,
            f"{template.__name__}_{ACTIVATIONS_DIGEST}",
            error_model="numpy",
            fastmath={"contract"},
        )
        for template in templates
    }


# ---------------------------------------------------------------- CUDA


class CudaHelpers:
    """The scalar helpers compiled as device functions, and the kernels' argument types."""

    def __init__(self, registry: CudaKernelRegistry) -> None:
        self.apply, self.derivative = activation_helpers(
            registry.device_function, math.exp, math.expm1, math.log1p
        )
        self.is_masked = registry.device_function(is_masked)
        self.lstm_cell_state = registry.device_function(lstm_cell_state)
        self.lstm_cell_backward = registry.device_function(lstm_cell_backward)
        self.gru_output = registry.device_function(gru_output)
        self.gru_output_backward = registry.device_function(gru_output_backward)
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


def lstm_cuda_operations(registry: CudaKernelRegistry, helpers: CudaHelpers, c: Constants) -> Any:
    apply, derivative, masked = helpers.apply, helpers.derivative, helpers.is_masked
    cell_state, cell_backward = helpers.lstm_cell_state, helpers.lstm_cell_backward
    matrix, tensor, index = helpers.matrix, helpers.tensor, helpers.index

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
        matrix,
        tensor,
        matrix,
        matrix,
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
        dh,
        dc,
        dpre_all,
        dh_prev,
        dc_prev,
        activation,
        inner,
    ):
        unit = cuda.grid(1)
        if unit < dh.size:
            hidden = dh.shape[1]
            b = unit // hidden
            j = unit % hidden
            if masked(mask, has_mask, t, b, c):
                for gate in range(4):
                    dpre_all[t, b, gate * hidden + j] = c.zero
                dc_prev[b, j] = dc[b, j]
                dh_prev[b, j] = dh[b, j]
                return
            i = gates_all[t, b, j]
            f = gates_all[t, b, hidden + j]
            g = gates_all[t, b, 2 * hidden + j]
            o = gates_all[t, b, 3 * hidden + j]
            a = apply(activation, c_all[t, b, j], c)
            dh_da = dh[b, j] * derivative(activation, a, c)
            d_i, d_f, d_g, d_o, dc_prev[b, j] = cell_backward(
                dh[b, j], dc[b, j], i, f, g, o, c_prev[b, j], a, dh_da
            )
            dpre_all[t, b, j] = d_i * derivative(inner, i, c)
            dpre_all[t, b, hidden + j] = d_f * derivative(inner, f, c)
            dpre_all[t, b, 2 * hidden + j] = d_g * derivative(activation, g, c)
            dpre_all[t, b, 3 * hidden + j] = d_o * derivative(inner, o, c)
            dh_prev[b, j] = c.zero

    return {
        "lstm_step_forward": launcher(lstm_step_forward_kernel, 5),  # h_prev
        "lstm_step_backward": launcher(lstm_step_backward_kernel, 6),  # dh
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
        **lstm_cuda_operations(registry, helpers, c),
        **gru_cuda_operations(registry, helpers, c),
    }
