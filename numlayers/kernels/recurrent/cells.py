"""The recurrent cells' scalar formulas, written once for both devices.

Each function here is plain Python marked :func:`~numlayers.kernels.toolkit.cpu_inline`:
the CPU loops of :mod:`.cpu` inline it, and :meth:`CudaKernels.device
<numlayers.kernels.toolkit.CudaKernels.device>` compiles it (and the activation
formulas it calls) as a CUDA device function for :mod:`.cuda`. ``c`` is always the
dtype's :class:`~numlayers.kernels.activations.Constants`.
"""

from __future__ import annotations

from numlayers.kernels.activations import (
    expm1_nonpositive,
    hard_sigmoid,
    relu,
    sigmoid,
    softplus,
    tanh,
)
from numlayers.kernels.toolkit import cpu_inline

#: the activations' run-time codes, as the operations' ``activation`` arguments take them
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


@cpu_inline
def apply(code, x, c):
    """The activation of ``code`` at ``x`` (an unknown code is linear: the layer
    validates codes). Loops that must vectorise call it with a constant ``code``."""
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
    return apply(code, x + y, c)


@cpu_inline
def activated(code, x, y, c):
    """``act(x)`` (``y`` unused: the signature of the other span formulas)."""
    return apply(code, x, c)


@cpu_inline
def output_gate(code, x, y, c):
    """``y * act(x)``: the LSTM's output ``o * act(c)``."""
    return y * apply(code, x, c)


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
    return h[b, j] * mask_U[b, j] if has_mask_U != 0 else h[b, j]


@cpu_inline
def incoming_gradient(dh, product, has_product, mask_U, has_mask_U, grad, grad_step, b, j, q):
    """The whole gradient reaching ``h_t`` at ``(b, j)``: what ``dh`` holds, the later
    step's through ``U`` (``product[b, q]``, when ``has_product``; dropped out as the
    forward pass was) and the output's (``grad[grad_step]``, when ``grad_step >= 0``)."""
    total = dh[b, j]
    if has_product:
        total += product[b, q] * mask_U[b, j] if has_mask_U != 0 else product[b, q]
    if grad_step >= 0:
        total += grad[grad_step, b, j]
    return total


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
