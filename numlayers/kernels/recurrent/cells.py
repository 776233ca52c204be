"""The recurrent cells' scalar formulas, written once for both devices.

Each function here is plain Python marked :func:`~numlayers.kernels.toolkit.cpu_inline`:
the CPU loops of :mod:`.cpu` inline it, and :meth:`CudaKernels.device
<numlayers.kernels.toolkit.CudaKernels.device>` compiles it (and the activation
formulas it calls) as a CUDA device function for :mod:`.cuda`. ``c`` is always the
dtype's :class:`~numlayers.kernels.activations.Constants`.

Softmax (Keras 0.3 allows it as a recurrent ``activation``) normalises a whole row
of ``H`` units, which no per-unit formula can do. The per-unit formulas treat its
code as linear (they keep pre-activations and pass gradients through unchanged);
the ``*_softmax_*`` functions here then finish each step on whole rows, one row
``b`` per call, where a softmax code is present (only then: the other activations
pay nothing for it).
"""

from __future__ import annotations

from numlayers.kernels.activations import (
    ELEMENTWISE_CODES,
    HARD_SIGMOID,
    RELU,
    SIGMOID,
    SOFTPLUS,
    TANH,
    apply_activation,
    exp_nonpositive,
    expm1_nonpositive,
)
from numlayers.kernels.toolkit import cpu_inline

#: softmax over each row's units (cell activation only; the per-unit formulas treat it
#: as linear and the row functions below finish it)
SOFTMAX = 6
#: the activations' run-time codes, as the operations' ``activation`` arguments take them
#: (the elementwise ones are :mod:`~numlayers.kernels.activations`')
ACTIVATION_CODES = {**ELEMENTWISE_CODES, "softmax": SOFTMAX}


@cpu_inline
def derivative_from_output(code, y, c):
    """The derivative of the activation of ``code``, from its output ``y`` (the cells
    keep the activated gates, not their pre-activations)."""
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
        return -expm1_nonpositive(-y)
    return c.one


@cpu_inline
def activated_sum(code, x, y, c):
    """``act(x + y)``: a gate from its input projection and its recurrent product."""
    return apply_activation(code, x + y, c)


@cpu_inline
def activated(code, x, y, c):
    """``act(x)`` (``y`` unused: the signature of the other span formulas)."""
    return apply_activation(code, x, c)


@cpu_inline
def output_gate(code, x, y, c):
    """``y * act(x)``: the LSTM's output ``o * act(c)``."""
    return y * apply_activation(code, x, c)


@cpu_inline
def times_derivative(code, x, y, c):
    """``x * act'`` where ``y`` is the activation's output."""
    return x * derivative_from_output(code, y, c)


@cpu_inline
def is_masked(mask, has_mask, t, b, c):
    """True where row ``b`` of step ``t`` is masked (the mask is read only when given)."""
    return has_mask != 0 and mask[t, b] == c.zero


@cpu_inline
def recurrent_input(h, mask_U, has_mask_U, b, j):
    """The state the recurrent product reads: ``h * mask_U`` under recurrent dropout."""
    return dropped_out(h[b, j], mask_U, has_mask_U, b, j)


@cpu_inline
def dropped_out(value, mask_U, has_mask_U, b, j):
    """``value`` (at ``(b, j)``) times ``mask_U`` under recurrent dropout."""
    return value * mask_U[b, j] if has_mask_U != 0 else value


@cpu_inline
def incoming_gradient(held, product, has_product, mask_U, has_mask_U, output, b, j, q):
    """The whole gradient reaching ``h_t`` at ``(b, j)``: ``held`` (what the state's
    gradient holds there), the later step's through ``U`` (``product[q]``, row ``b``'s
    product, when ``has_product``; dropped out as the forward pass was) and
    ``output``, the output's (:func:`output_gradient`)."""
    total = held
    if has_product:
        total += dropped_out(product[q], mask_U, has_mask_U, b, j)
    return total + output


@cpu_inline
def output_gradient(grad, grad_step, b, j, zero):
    """The output's gradient at ``(b, j)``: ``grad[grad_step]``'s, or ``zero`` when no
    row of ``grad`` reaches the step (``grad_step < 0``, :func:`output_gradient_step`)."""
    return grad[grad_step, b, j] if grad_step >= 0 else zero


@cpu_inline
def output_gradient_step(grad_every_step, t, position, count):
    """The row of ``grad`` that reaches the step at ``position`` (time ``t``) of
    ``count``, or -1 for none (:class:`~.sequences.Gradients`)."""
    if grad_every_step:
        return t
    return 0 if position == count - 1 else -1


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
def gru_output(z, h_prev, hh, c):
    return z * h_prev + (c.one - z) * hh


@cpu_inline
def gru_output_backward(dh, z, h_prev, hh, c):
    """Gradients of ``z`` and ``hh`` (activated) and ``h_prev``'s direct share."""
    return dh * (h_prev - hh), dh * (c.one - z), dh * z


# ---------------------------------------------------------------- softmax over rows


@cpu_inline
def softmax_span(z, b, start, count, c):
    """In place: ``z[b, start:start + count]`` becomes its softmax (``exp`` only of
    non-positive numbers)."""
    largest = z[b, start]
    for q in range(1, count):
        value = z[b, start + q]
        largest = value if value > largest else largest
    total = c.zero
    for q in range(count):
        e = exp_nonpositive(z[b, start + q] - largest)
        z[b, start + q] = e
        total += e
    scale = c.one / total
    for q in range(count):
        z[b, start + q] *= scale


@cpu_inline
def softmax_gradient_span(dz, z0, y, y0, b, count, c):
    """In place: ``dz[b, z0:z0 + count]``, the gradient reaching a softmax's output
    ``y[b, y0:y0 + count]``, becomes its input's: ``y * (dz - sum(dz * y))``."""
    dot = c.zero
    for q in range(count):
        dot += dz[b, z0 + q] * y[b, y0 + q]
    for q in range(count):
        dz[b, z0 + q] = y[b, y0 + q] * (dz[b, z0 + q] - dot)


# One step's rows ``b`` of the time-major arrays (``hs`` the step's ``(B, H)`` states,
# ``gates``/``dpre`` its ``(B, G*H)`` rows), after the per-unit pass of that step.


@cpu_inline
def rnn_softmax_row(b, hs, mask, has_mask, t, c):
    """``h = softmax(z)``: the per-unit pass left ``z`` (masked rows keep ``h_prev``)."""
    if not is_masked(mask, has_mask, t, b, c):
        softmax_span(hs, b, 0, hs.shape[1], c)


@cpu_inline
def rnn_softmax_gradient_row(b, hs, dpre, c):
    """The per-unit pass left the gradient reaching ``h`` in ``dpre`` (zero in masked rows,
    which stay zero)."""
    softmax_gradient_span(dpre, 0, hs, 0, b, hs.shape[1], c)


@cpu_inline
def gru_softmax_row(b, gates, h_prev, hs, mask, has_mask, t, c):
    """``hh = softmax(...)`` (left as its pre-activation) and the new state from it."""
    hidden = hs.shape[1]
    softmax_span(gates, b, 2 * hidden, hidden, c)
    if not is_masked(mask, has_mask, t, b, c):
        for j in range(hidden):
            hs[b, j] = gru_output(gates[b, j], h_prev[b, j], gates[b, 2 * hidden + j], c)


@cpu_inline
def gru_softmax_gradient_row(b, gates, dpre, c):
    """``hh``'s pre-activation gradient from the gradient reaching ``hh``."""
    hidden = gates.shape[1] // 3
    softmax_gradient_span(dpre, 2 * hidden, gates, 2 * hidden, b, hidden, c)


@cpu_inline
def lstm_softmax_row(b, gates, c_prev, cells, h_prev, hs, mask, has_mask, t, c):
    """``g = softmax(z_c)`` (left as ``z_c``), ``c_t = f * c_prev + i * g`` and ``h = o *
    softmax(c_t)`` (masked rows keep their states)."""
    hidden = hs.shape[1]
    softmax_span(gates, b, 2 * hidden, hidden, c)
    if is_masked(mask, has_mask, t, b, c):
        return
    for j in range(hidden):
        cell = lstm_cell_state(
            gates[b, j], gates[b, hidden + j], gates[b, 2 * hidden + j], c_prev[b, j]
        )
        cells[b, j] = cell
        hs[b, j] = cell
    softmax_span(hs, b, 0, hidden, c)
    for j in range(hidden):
        hs[b, j] *= gates[b, 3 * hidden + j]


@cpu_inline
def lstm_softmax_backward_row(b, gates, cells, c_prev, dh, dc, dpre, mask, has_mask, t, inner, c):
    """The LSTM cell's backward pass on row ``b`` once ``dh`` holds the whole gradient
    reaching ``h_t``, with softmax as the cell activation; as the per-unit pass, ``dc``
    becomes the gradient reaching ``c_prev`` and ``dh`` zero (masked rows: ``dpre``
    zero, ``dh`` and ``dc`` passed on)."""
    hidden = dh.shape[1]
    f0, g0, o0 = hidden, 2 * hidden, 3 * hidden
    if is_masked(mask, has_mask, t, b, c):
        for q in range(4 * hidden):
            dpre[b, q] = c.zero
        return
    # a = softmax(c_t) in the o slot; the gradient reaching c_t through h in the i slot
    for j in range(hidden):
        dpre[b, o0 + j] = cells[b, j]
        dpre[b, j] = dh[b, j] * gates[b, o0 + j]
    softmax_span(dpre, b, o0, hidden, c)
    softmax_gradient_span(dpre, 0, dpre, o0, b, hidden, c)
    for j in range(hidden):
        i, f, g, o = gates[b, j], gates[b, f0 + j], gates[b, g0 + j], gates[b, o0 + j]
        d_i, d_f, d_g, d_o, dc[b, j] = lstm_cell_backward(
            dh[b, j], dc[b, j] + dpre[b, j], i, f, g, o, c_prev[b, j], dpre[b, o0 + j]
        )
        dpre[b, j] = d_i * derivative_from_output(inner, i, c)
        dpre[b, f0 + j] = d_f * derivative_from_output(inner, f, c)
        dpre[b, g0 + j] = d_g
        dpre[b, o0 + j] = d_o * derivative_from_output(inner, o, c)
        dh[b, j] = c.zero  # what reaches h_prev comes through U, next step
    softmax_gradient_span(dpre, g0, gates, g0, b, hidden, c)
