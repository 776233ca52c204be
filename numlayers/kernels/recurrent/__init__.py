"""Kernels of the recurrent layers (Keras 0.3's SimpleRNN, GRU, LSTM): whole sequences.

The layer keeps sequences time-major and does the products over all steps with
:mod:`~numlayers.kernels.matmul`: before, ``xw (T, B, G*H) = x @ W + b``; after the
backward pass, ``dU = H_prev^T @ DPRE`` (the GRU's ``dU_h = RH^T @ DPRE_h``), ``dW =
X^T @ DPRE``, ``dx = DPRE @ W^T`` and ``db`` the column sums of ``DPRE``. Everything
in between, per step the recurrent products and the cell, is one operation per pass:
on the CPU one compiled loop over the steps (:mod:`.cpu`), on CUDA one persistent
kernel, a block per slice of batch rows looping over the steps (:mod:`.cuda`). Gates
are ``H`` wide, in Keras 0.3's order: ``i, f, c, o`` for the LSTM (``G = 4``), ``z, r,
h`` for the GRU (``G = 3``); SimpleRNN has ``G = 1``. The arguments are named tuples
(:mod:`.sequences`): ``steps`` (:class:`Steps`: the order, the mask, the recurrent
dropout and the activation codes of :data:`ACTIVATION_CODES`), ``sequence`` (the
arrays of one kind) and ``gradients`` (:class:`Gradients`). A masked row of a step keeps the state
(``h_t = h_{t-1}``, ``c_t = c_{t-1}``); backward gives it zero pre-activation
gradients and passes the state's gradients to the previous step unchanged.

Operations (both devices; ``act`` is ``steps.activation``, ``inner`` is
``steps.inner_activation``, ``h_prev``/``c_prev`` the previous step's states, ``h0``
and ``c0`` first; ``h_in = h_prev * mask_U``, or ``h_prev`` without recurrent dropout,
is kept in ``h_prev_all[t]``):

- ``rnn_sequence_forward(steps, sequence: RnnSequence)``: for each step ``t`` of
  ``steps.order``: ``h_all[t] = act(xw[t] + h_in @ U)``
- ``lstm_sequence_forward(steps, sequence: LstmSequence)``: ``z = xw[t] + h_in @ U``;
  ``i, f, o = inner(z_i, z_f, z_o)``, ``g = act(z_c)`` into ``gates_all[t]``;
  ``c = f * c_prev + i * g``, ``h = o * act(c)`` into ``c_all[t]``, ``h_all[t]``
- ``gru_sequence_forward(steps, sequence: GruSequence)``: ``z, r = inner(xw[t, :, :2H]
  + h_in @ U_zr)``, ``rh_all[t] = r * h_in``, ``hh = act(xw[t, :, 2H:] + rh_all[t] @
  U_h)`` into ``gates_all[t]``; ``h_all[t] = z * h_prev + (1 - z) * hh``
- ``KIND_sequence_backward(steps, sequence, gradients)``: back through the steps,
  last processed first. The gradient reaching ``h_t`` is the output's
  (``gradients.grad``) plus the later step's through the recurrent weights (dropped
  out as forward was); the pre-activation gradients of step ``t`` go into
  ``gradients.dpre_all[t]``. ``dh`` (and the LSTM's ``dc``), zeroed by the pass first,
  carry the state gradients between steps and are left holding what reaches the initial
  states, except the first step's share through the recurrent weights.

Derivatives are taken from the activations' outputs (:mod:`.cells`), which the
forward pass keeps. ``act`` may be softmax (over each row's ``H`` units at each step:
the RNN's ``h``, the LSTM's ``g`` and ``act(c)``, the GRU's ``hh``); ``inner`` is one
of :data:`ELEMENTWISE_CODES`.
"""

from __future__ import annotations

from typing import Protocol

from numlayers.kernels.recurrent.cells import ACTIVATION_CODES, ELEMENTWISE_CODES
from numlayers.kernels.recurrent.cpu import build_cpu
from numlayers.kernels.recurrent.cuda import build_cuda
from numlayers.kernels.recurrent.sequences import (
    Gradients,
    GruSequence,
    LstmSequence,
    RnnSequence,
    Steps,
)


class RecurrentKernels(Protocol):
    """The recurrent family's operations, the same on both devices (module doc)."""

    def rnn_sequence_forward(self, steps: Steps, sequence: RnnSequence) -> None: ...

    def rnn_sequence_backward(
        self, steps: Steps, sequence: RnnSequence, gradients: Gradients
    ) -> None: ...

    def lstm_sequence_forward(self, steps: Steps, sequence: LstmSequence) -> None: ...

    def lstm_sequence_backward(
        self, steps: Steps, sequence: LstmSequence, gradients: Gradients
    ) -> None: ...

    def gru_sequence_forward(self, steps: Steps, sequence: GruSequence) -> None: ...

    def gru_sequence_backward(
        self, steps: Steps, sequence: GruSequence, gradients: Gradients
    ) -> None: ...


__all__ = [
    "ACTIVATION_CODES",
    "ELEMENTWISE_CODES",
    "Gradients",
    "GruSequence",
    "LstmSequence",
    "RecurrentKernels",
    "RnnSequence",
    "Steps",
    "build_cpu",
    "build_cuda",
]
