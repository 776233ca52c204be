"""The arrays of a recurrent sequence, as the sequence operations take them.

Everything is time-major: ``T`` steps, ``B`` rows, ``H`` units, ``G`` gates (1 for
SimpleRNN, 3 for the GRU, 4 for the LSTM). Arrays live on the operation's device;
``order`` is always a host int64 array. The compiled CPU loops take these tuples
as they are (Numba types a named tuple field by field).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numlayers.kernels.toolkit import DeviceArray


class Steps(NamedTuple):
    """How the steps of a sequence run; every sequence operation takes one.

    Attributes:
        order: ``(T,)`` int64, the time index of each step in processing order
            (``go_backwards`` is only the reversed order). It runs through the steps one
            by one, forwards or backwards: the CUDA kernels take only its first step
            and direction (and raise ``ValueError`` for any other order).
        mask: ``(T, B)`` 0/1; where ``mask[t, b] == 0`` the state is carried over and
            the step gets no gradient. A ``(1, 1)`` dummy, never read, when
            ``has_mask`` is 0.
        has_mask: 1 when ``mask`` is given, else 0.
        mask_U: ``(B, H)`` recurrent dropout: the recurrent products read
            ``h_prev * mask_U``. A ``(1, 1)`` dummy when ``has_mask_U`` is 0.
        has_mask_U: 1 when ``mask_U`` is given, else 0.
        activation: code (:data:`ACTIVATION_CODES`) of the cell's activation, softmax
            included.
        inner_activation: code of the gates' activation, one of
            :data:`ELEMENTWISE_CODES` (SimpleRNN does not read it).
    """

    order: np.ndarray
    mask: DeviceArray
    has_mask: int
    mask_U: DeviceArray
    has_mask_U: int
    activation: int
    inner_activation: int


class RnnSequence(NamedTuple):
    """A SimpleRNN sequence: ``xw (T, B, H)`` the input projections ``x @ W + b``,
    ``U (H, H)``, ``h0 (B, H)`` the initial state; forward writes ``h_prev_all`` (the
    state each step's product read, for ``dU``) and ``h_all``, both ``(T, B, H)``."""

    xw: DeviceArray
    U: DeviceArray
    h0: DeviceArray
    h_prev_all: DeviceArray
    h_all: DeviceArray


class LstmSequence(NamedTuple):
    """An LSTM sequence: ``xw (T, B, 4H)``, ``U (H, 4H)`` (gates ``i, f, c, o``),
    initial states ``h0``, ``c0`` ``(B, H)``; forward writes ``h_prev_all``, ``c_all``,
    ``h_all`` ``(T, B, H)`` and ``gates_all (T, B, 4H)``, the activated gates."""

    xw: DeviceArray
    U: DeviceArray
    h0: DeviceArray
    c0: DeviceArray
    h_prev_all: DeviceArray
    gates_all: DeviceArray
    c_all: DeviceArray
    h_all: DeviceArray


class GruSequence(NamedTuple):
    """A GRU sequence: ``xw (T, B, 3H)`` (gates ``z, r, h``), ``U_zr (H, 2H)``,
    ``U_h (H, H)``, ``h0 (B, H)``; forward writes ``h_prev_all``, ``rh_all`` (``r *
    h_prev``, which ``U_h`` multiplies, for ``dU_h``), ``h_all`` ``(T, B, H)`` and
    ``gates_all (T, B, 3H)``, the activated gates ``z, r, hh``. Backward also writes
    ``dpre_zr_all (T, B, 2H)`` and ``dpre_h_all (T, B, H)``, contiguous copies of the
    ``z, r`` and ``hh`` columns of ``dpre_all``: the operands of the step-to-step
    products and of ``dU_zr`` and ``dU_h``, so no separate copy is made for those."""

    xw: DeviceArray
    U_zr: DeviceArray
    U_h: DeviceArray
    h0: DeviceArray
    h_prev_all: DeviceArray
    gates_all: DeviceArray
    rh_all: DeviceArray
    h_all: DeviceArray
    dpre_zr_all: DeviceArray
    dpre_h_all: DeviceArray

    def forward_arrays(self) -> tuple[DeviceArray, ...]:
        """The arrays the forward pass reads and writes (all but the backward's two)."""
        return tuple(self)[:8]


class Gradients(NamedTuple):
    """What a backward pass reads and writes.

    Attributes:
        grad: the gradient of the outputs: ``(T, B, H)`` for every step when
            ``grad_every_step`` is 1, else ``(1, B, H)`` for the last processed step.
        grad_every_step: 1 or 0, as above.
        dpre_all: ``(T, B, G*H)``, written: the gradients of the gates'
            pre-activations (then ``dU``, ``dW``, ``db`` and ``dx`` are products).
        dh: ``(B, H)``, written (the pass zeroes it first); carries the state's
            gradient from step to step and is left holding what reaches ``h0``, except
            the first step's share through the recurrent weights, which is not computed.
        dc: the LSTM's ``(B, H)`` cell-state gradient, as ``dh`` (left holding what
            reaches ``c0``); SimpleRNN and the GRU do not touch it (a ``(1, 1)`` dummy).
    """

    grad: DeviceArray
    grad_every_step: int
    dpre_all: DeviceArray
    dh: DeviceArray
    dc: DeviceArray
