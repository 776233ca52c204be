"""Recurrent layers (Keras 0.3's SimpleRNN, GRU, LSTM) and the Bidirectional and
TimeDistributed wrappers.

Every recurrent layer runs time-major so that each step reads and writes
contiguous ``(batch, units)`` slices:

1. one GEMM projects the inputs of all steps: ``xw = x @ W + b``, ``(time, batch, gates)``;
2. one sequence operation runs every step (the recurrent products and the cell),
   forward and, later, backward through time (``KIND_sequence_forward`` and
   ``KIND_sequence_backward`` of :mod:`numlayers.kernels.recurrent`; on the CPU each is
   one compiled loop over the steps, on CUDA one kernel launch);
3. the weight and input gradients are single GEMMs over all steps
   (``dU = H_prev.T @ DPRE``, ``dW = X.T @ DPRE``, ``dx = DPRE @ W.T``).

A masked step keeps the state, passes the state's gradient straight through, and
gets no gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from numlayers import initializations, regularizers
from numlayers.activations import ActivationFunction
from numlayers.kernels.recurrent import (
    ACTIVATION_CODES,
    ELEMENTWISE_CODES,
    Gradients,
    GruSequence,
    LstmSequence,
    RnnSequence,
    Steps,
)
from numlayers.layers.base import Layer, Shape
from numlayers.layers.core import _positive_int, _seed_config, _staged_seed
from numlayers.random import get_generator

SWAP_BATCH_AND_TIME = (1, 0, 2)


@functools.lru_cache(maxsize=64)
def _order_array(start: int, stop: int, step: int) -> np.ndarray:
    return np.arange(start, stop, step, dtype=np.int64)


def order_array(order: range) -> np.ndarray:
    """A processing order as the int64 array the sequence operations take (shared:
    never written)."""
    return _order_array(order.start, order.stop, order.step)


def _activation_code(
    name: Any, owner: str, argument: str, codes: dict[str, int]
) -> tuple[str, int]:
    """The name and run-time code of ``argument``'s activation (``codes``: those allowed)."""
    resolved = ActivationFunction(name, owner).name
    if resolved not in codes:
        raise ValueError(
            f"{owner}: {argument} {resolved!r} cannot run inside a recurrent step; "
            f"choose one of {sorted(codes)}"
        )
    return resolved, codes[resolved]


class Recurrent(Layer):
    """Base of the recurrent layers (Keras 0.3's arguments).

    Args:
        output_dim: number of units (the size of the state and of each output step).
        init: initialisation of the input weights W (each gate block separately).
        inner_init: initialisation of the recurrent weights U (default orthogonal).
        activation, inner_activation: the cell and gate nonlinearities. ``activation``
            may be ``"softmax"``, over the units of each sample at each step (the
            RNN's state, the LSTM's candidate and ``activation(c)``, the GRU's
            candidate); ``inner_activation`` is applied unit by unit, so not softmax.
        weights: initial weights, in the order of ``param_names``.
        return_sequences: output every step ``(batch, time, units)``, not only the last.
        go_backwards: process the sequence from its end (outputs come in processing order).
        stateful: keep the last state of each sample as the next batch's initial state
            (needs ``batch_input_shape``; ``reset_states()`` clears it).
        input_dim, input_length: shortcut for ``input_shape=(input_length, input_dim)``.
        W_regularizer, U_regularizer, b_regularizer: weight regularizers.
        dropout_W, dropout_U: dropout on the inputs and on the recurrent state, the same
            mask at every step (one mask shared by the gates).
        seed: int or Generator for initial weights and dropout masks.

    Input shape: ``(batch, time, input_dim)``, masks supported.
    Output shape: ``(batch, units)``, or ``(batch, time, units)`` with return_sequences
    (then the input mask is the output mask).
    """

    input_ndim = 3
    gate_count: ClassVar[int] = 1
    default_activation: ClassVar[str] = "tanh"

    def __init__(
        self,
        output_dim: int,
        init: Any = "glorot_uniform",
        inner_init: Any = "orthogonal",
        activation: Any = None,
        inner_activation: Any = "hard_sigmoid",
        weights: Sequence[Any] | None = None,
        return_sequences: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        input_dim: int | None = None,
        input_length: int | None = None,
        W_regularizer: Any = None,
        U_regularizer: Any = None,
        b_regularizer: Any = None,
        dropout_W: float = 0.0,
        dropout_U: float = 0.0,
        seed: Any = None,
        **kwargs: Any,
    ) -> None:
        if (
            input_dim is not None
            and "input_shape" not in kwargs
            and "batch_input_shape" not in kwargs
        ):
            kwargs["input_shape"] = (input_length, input_dim)
        super().__init__(**kwargs)
        self.output_dim = _positive_int(output_dim, "output_dim", self.label)
        initializations.get(init)
        initializations.get(inner_init)
        self.init = init
        self.inner_init = inner_init
        self.activation, self.activation_code = _activation_code(
            self.default_activation if activation is None else activation,
            self.label,
            "activation",
            ACTIVATION_CODES,
        )
        self.inner_activation, self.inner_activation_code = _activation_code(
            inner_activation, self.label, "inner_activation", ELEMENTWISE_CODES
        )
        self.return_sequences = bool(return_sequences)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.input_dim = input_dim
        self.input_length = input_length
        self.W_regularizer = regularizers.get(W_regularizer)
        self.U_regularizer = regularizers.get(U_regularizer)
        self.b_regularizer = regularizers.get(b_regularizer)
        for name, value in (("dropout_W", dropout_W), ("dropout_U", dropout_U)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise ValueError(f"{self.label}: {name} must be in [0, 1), received {value!r}")
        self.dropout_W = float(dropout_W)
        self.dropout_U = float(dropout_U)
        self.seed = seed
        self._dropout_generator = None if seed is None else get_generator(seed)
        self.initial_weights = weights
        self._states: list[Any] | None = None
        self._finish_init()

    # ----------------------------------------------------------------- shapes
    def supports_masked_input(self) -> bool:
        return True

    def produces_mask(self) -> bool:
        return self.return_sequences and self.previous is not None and self.previous.produces_mask()

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if self.return_sequences:
            return (input_shape[0], input_shape[1], self.output_dim)
        return (input_shape[0], self.output_dim)

    @property
    def state_count(self) -> int:
        return 1

    # ---------------------------------------------------------------- weights
    def build(self) -> None:
        input_dim = self.input_shape[2]
        if input_dim is None:
            raise ValueError(
                f"{self.label} needs a known input dimension, received {self.input_shape}"
            )
        if self.stateful and self.input_shape[0] is None:
            raise ValueError(
                f"{self.label} is stateful, so it needs a fixed batch size: give it "
                "batch_input_shape=(batch, time, input_dim)"
            )
        rng = get_generator(self.seed)
        units = self.output_dim
        for name, shape, init, regularizer in self.weight_layout(input_dim):
            if init is None:
                value = self.initial_bias()
            else:  # each gate block initialised on its own, as Keras 0.3's separate weights
                blocks = [
                    initializations.draw(init, (shape[0], units), rng)
                    for _ in range(shape[1] // units)
                ]
                value = np.concatenate(blocks, axis=1)
            self.add_weight(name, value, regularizer)
        if self.initial_weights is not None:
            self.set_weights(self.initial_weights)
            self.initial_weights = None

    def _check_rebuild(self, shape: Shape) -> None:
        self._refuse_other_input_dimension(self.params[0].shape[0], shape)  # W's rows

    def weight_layout(self, input_dim: int) -> list[tuple[str, tuple[int, ...], Any, Any]]:
        """(name, shape, init, regularizer) of each weight, gates side by side in columns;
        the bias (init None) comes last."""
        width = self.gate_count * self.output_dim
        return [
            ("W", (input_dim, width), self.init, self.W_regularizer),
            ("U", (self.output_dim, width), self.inner_init, self.U_regularizer),
            ("b", (width,), None, self.b_regularizer),
        ]

    def initial_bias(self) -> np.ndarray:
        return np.zeros(self.gate_count * self.output_dim)

    def persistent_arrays(self) -> list[Any]:
        return [*self.params, *(self._states or ())]

    def reset_states(self) -> None:
        """Zero the carried states of a stateful layer."""
        if not self.stateful:
            raise RuntimeError(f"{self.label} is not stateful: it has no states to reset")
        if self._states is not None:
            for state in self._states:
                self.kernels.fill(state, 0.0)

    def _on_device_change(self) -> None:
        if self._states is not None:
            self._states = None

    # ----------------------------------------------------------------- helpers
    def _swap(self, x: Any, slot: str) -> Any:
        """(a, b, c) to (b, a, c): batch-major to time-major and back."""
        return self.permuted(x, SWAP_BATCH_AND_TIME, slot)

    def _mask_time_major(self, mask: Any, batch: int) -> tuple[Any, int]:
        if mask is None:
            return self.buffer("no_mask", (1, 1)), 0
        return self._swap(mask.reshape(mask.shape[0], mask.shape[1], 1), "mask_tm").reshape(
            mask.shape[1], batch
        ), 1

    def _initial_states(self, batch: int) -> list[Any]:
        """Zeros, or for a stateful layer a copy of the carried states (which the
        forward pass then overwrites with its final states)."""
        if self.stateful:
            if self._states is None or self._states[0].shape[0] != batch:
                self._states = [
                    self.device.zeros((batch, self.output_dim), self.dtype)
                    for _ in range(self.state_count)
                ]
            copies = []
            for index, state in enumerate(self._states):
                copy = self.buffer(f"initial_state_{index}", (batch, self.output_dim))
                self.kernels.copy(state, copy)
                copies.append(copy)
            return copies
        zeros = self.constant_buffer("zero_states", (self.state_count, batch, self.output_dim), 0.0)
        return [zeros[index] for index in range(self.state_count)]

    def _dropout_mask(self, shape: tuple[int, int], p: float, slot: str) -> Any:
        mask = self.buffer(slot, shape)
        seed = _staged_seed(self, f"{slot}_seed", self._dropout_generator)
        self.kernels.dropout_mask(seed, int(p * 2**24), mask)
        self.kernels.scale_into(mask, 1.0 / (1.0 - p), mask)
        return mask

    # -------------------------------------------------------- forward/backward
    def _forward(self, x: Any, train: bool) -> Any:
        batch, steps, features = x.shape
        kernels = self.kernels
        x_tm = self._swap(x, "x_tm")
        mask_W = None
        if train and self.dropout_W > 0:
            mask_W = self._dropout_mask((batch, features), self.dropout_W, "mask_W")
            dropped = self.buffer("x_dropped", tuple(x_tm.shape))
            for t in range(steps):
                kernels.multiply_two(x_tm[t], mask_W, dropped[t])
            x_tm = dropped
        # recurrent dropout, or a dummy the sequence operations do not read
        mask_U, has_mask_U = self.buffer("no_mask_U", (1, 1)), 0
        if train and self.dropout_U > 0:
            mask_U = self._dropout_mask((batch, self.output_dim), self.dropout_U, "mask_U")
            has_mask_U = 1
        width = self.gate_count * self.output_dim
        xw = self.buffer("xw", (steps, batch, width))
        kernels.dense_forward(
            x_tm.reshape(steps * batch, features),
            self.params[0],
            self.params[-1],
            xw.reshape(steps * batch, width),
        )
        order = range(steps - 1, -1, -1) if self.go_backwards else range(steps)
        run = Steps(
            order_array(order),
            *self._mask_time_major(self.saved()["mask"], batch),
            mask_U,
            has_mask_U,
            self.activation_code,
            self.inner_activation_code,
        )
        sequence = self.run_sequence(run, xw, self._initial_states(batch))
        self.save(
            x_tm=x_tm,
            steps=run,
            sequence=sequence,
            mask_W=mask_W,
            output_mask=self.saved()["mask"] if self.return_sequences else None,
        )
        last = order[-1]
        self.keep_final_states([states[last] for states in self.final_states(sequence)])
        if self.return_sequences:  # h_all[t] is the state after input step t: aligned with it
            return self._swap(sequence.h_all, "y")
        return sequence.h_all[last]

    def state_buffers(self, xw: Any) -> dict[str, Any]:
        """The ``(T, B, H)`` outputs every kind's forward pass writes, by field name."""
        shape = (*xw.shape[:2], self.output_dim)
        return {name: self.buffer(name, shape) for name in ("h_prev_all", "h_all")}

    def run_sequence(self, steps: Steps, xw: Any, initial: list[Any]) -> Any:
        """Run the kind's forward sequence operation; return its sequence tuple."""
        raise NotImplementedError

    def run_backward(self, steps: Steps, sequence: Any, gradients: Gradients) -> None:
        """Run the kind's backward sequence operation."""
        raise NotImplementedError

    def final_states(self, sequence: Any) -> list[Any]:
        """The ``(T, B, H)`` state arrays whose last step a stateful layer carries on."""
        return [sequence.h_all]

    def keep_final_states(self, finals: list[Any]) -> None:
        """A stateful layer carries the final states into the next batch."""
        if self.stateful and self._states is not None:
            for state, final in zip(self._states, finals, strict=True):
                self.kernels.copy(final, state)

    def _backward(self, grad_output: Any) -> Any:
        saved = self.saved()
        kernels = self.kernels
        steps, batch, units = saved["sequence"].h_all.shape
        width = self.gate_count * units
        if self.return_sequences:
            grad = self._swap(grad_output, "grad_tm")
        else:  # the output's gradient reaches the last processed step only
            grad = grad_output.reshape(1, *grad_output.shape)
        dpre_all = self.buffer("dpre_all", (steps, batch, width))
        # written by the backward pass, which zeroes them first
        state_gradients = self.buffer("state_gradients", (self.state_count, batch, units))
        dh = state_gradients[0]
        # the LSTM's cell state carries a gradient too
        dc = state_gradients[1] if self.state_count == 2 else self.buffer("no_dc", (1, 1))
        gradients = Gradients(grad, int(self.return_sequences), dpre_all, dh, dc)
        self.run_backward(saved["steps"], saved["sequence"], gradients)
        rows = steps * batch
        self.recurrent_weight_gradients(dpre_all)
        need = self.needs_input_gradient
        features = saved["x_tm"].shape[2]
        grad_x_tm = (
            self.buffer("grad_x_tm", (steps, batch, features))
            if need
            else self.buffer("no_grad_x", (0, 0, 0))
        )
        kernels.dense_backward(
            saved["x_tm"].reshape(rows, features),
            self.params[0],
            dpre_all.reshape(rows, width),
            grad_x_tm.reshape(rows if need else 0, features if need else 0),
            self.grads[0],
            self.grads[-1],
            need,
        )
        if not need:
            return None
        if saved["mask_W"] is not None:
            for t in range(steps):
                kernels.multiply_into(saved["mask_W"], grad_x_tm[t])
        return self._swap(grad_x_tm, "grad_x")

    def recurrent_weight_gradients(self, dpre_all: Any) -> None:
        """``dU = H_prev.T @ DPRE``: one GEMM over every step."""
        steps, batch, width = dpre_all.shape
        rows = steps * batch
        self.kernels.matmul_transpose_a(
            self.saved()["sequence"].h_prev_all.reshape(rows, self.output_dim),
            dpre_all.reshape(rows, width),
            self.grads[1],
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            init=self.init,
            inner_init=self.inner_init,
            activation=self.activation,
            inner_activation=self.inner_activation,
            return_sequences=self.return_sequences,
            go_backwards=self.go_backwards,
            stateful=self.stateful,
            W_regularizer=regularizers.config_of(self.W_regularizer),
            U_regularizer=regularizers.config_of(self.U_regularizer),
            b_regularizer=regularizers.config_of(self.b_regularizer),
            dropout_W=self.dropout_W,
            dropout_U=self.dropout_U,
            seed=_seed_config(self.seed),
        )
        return config


class SimpleRNN(Recurrent):
    """Fully connected RNN: ``h_t = activation(x_t @ W + h_{t-1} @ U + b)``.

    Weights: ``W (input_dim, units)``, ``U (units, units)``, ``b (1, units)``.
    Defaults as in Keras 0.3: ``activation="sigmoid"``.

    Example:
        >>> SimpleRNN(4, input_shape=(5, 3))(np.ones((2, 5, 3))).shape
        (2, 4)
    """

    gate_count = 1
    default_activation = "sigmoid"

    def run_sequence(self, steps: Steps, xw: Any, initial: list[Any]) -> RnnSequence:
        buffers = self.state_buffers(xw)
        sequence = RnnSequence(xw, self.params[1], initial[0], **buffers)
        self.kernels.rnn_sequence_forward(steps, sequence)
        return sequence

    def run_backward(self, steps: Steps, sequence: Any, gradients: Gradients) -> None:
        self.kernels.rnn_sequence_backward(steps, sequence, gradients)


class LSTM(Recurrent):
    """Long short-term memory (Hochreiter and Schmidhuber 1997), Keras 0.3's equations.

    ``i = inner(x W_i + h U_i + b_i)``, ``f = inner(x W_f + h U_f + b_f)``,
    ``c = f * c + i * activation(x W_c + h U_c + b_c)``, ``o = inner(x W_o + h U_o + b_o)``,
    ``h = o * activation(c)``.

    Weights: ``W (input_dim, 4 units)``, ``U (units, 4 units)``, ``b (1, 4 units)`` with the
    gate blocks side by side in the order i, f, c, o. ``forget_bias_init="one"`` starts
    ``b_f`` at 1. Defaults: ``activation="tanh"``, ``inner_activation="hard_sigmoid"``.

    Example:
        >>> LSTM(4, return_sequences=True, input_shape=(5, 3))(np.ones((2, 5, 3))).shape
        (2, 5, 4)
    """

    gate_count = 4
    default_activation = "tanh"

    def __init__(self, output_dim: int, forget_bias_init: Any = "one", **kwargs: Any) -> None:
        initializations.get(forget_bias_init)
        self.forget_bias_init = forget_bias_init
        super().__init__(output_dim, **kwargs)

    @property
    def state_count(self) -> int:
        return 2

    def initial_bias(self) -> np.ndarray:
        units = self.output_dim
        bias = np.zeros(4 * units)
        forget = initializations.draw(self.forget_bias_init, (units,), get_generator(self.seed))
        bias[units : 2 * units] = forget
        return bias

    def run_sequence(self, steps: Steps, xw: Any, initial: list[Any]) -> LstmSequence:
        shape = (*xw.shape[:2], self.output_dim)
        sequence = LstmSequence(
            xw,
            self.params[1],
            h0=initial[0],
            c0=initial[1],
            gates_all=self.buffer("gates_all", tuple(xw.shape)),
            c_all=self.buffer("c_all", shape),
            **self.state_buffers(xw),
        )
        self.kernels.lstm_sequence_forward(steps, sequence)
        return sequence

    def run_backward(self, steps: Steps, sequence: Any, gradients: Gradients) -> None:
        self.kernels.lstm_sequence_backward(steps, sequence, gradients)

    def final_states(self, sequence: Any) -> list[Any]:
        return [sequence.h_all, sequence.c_all]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["forget_bias_init"] = self.forget_bias_init
        return config


class GRU(Recurrent):
    """Gated recurrent unit (Cho et al. 2014), Keras 0.3's equations.

    ``z = inner(x W_z + h U_z + b_z)``, ``r = inner(x W_r + h U_r + b_r)``,
    ``hh = activation(x W_h + (r * h) U_h + b_h)``, ``h = z * h + (1 - z) * hh``.

    Weights: ``W (input_dim, 3 units)`` (blocks z, r, h), ``U_zr (units, 2 units)``,
    ``U_h (units, units)``, ``b (3 units)``. ``U_h`` is apart because it multiplies
    ``r * h``, which needs the reset gate first. Defaults as in Keras 0.3:
    ``activation="sigmoid"``, ``inner_activation="hard_sigmoid"``.

    Example:
        >>> GRU(4, input_shape=(5, 3))(np.ones((2, 5, 3))).shape
        (2, 4)
    """

    gate_count = 3
    default_activation = "sigmoid"

    def weight_layout(self, input_dim: int) -> list[tuple[str, tuple[int, ...], Any, Any]]:
        units = self.output_dim
        return [
            ("W", (input_dim, 3 * units), self.init, self.W_regularizer),
            ("U_zr", (units, 2 * units), self.inner_init, self.U_regularizer),
            ("U_h", (units, units), self.inner_init, self.U_regularizer),
            ("b", (3 * units,), None, self.b_regularizer),
        ]

    def run_sequence(self, steps: Steps, xw: Any, initial: list[Any]) -> GruSequence:
        shape = (*xw.shape[:2], self.output_dim)
        sequence = GruSequence(
            xw,
            self.params[1],
            self.params[2],
            initial[0],
            gates_all=self.buffer("gates_all", tuple(xw.shape)),
            rh_all=self.buffer("rh_all", shape),
            **self.state_buffers(xw),
            dpre_zr_all=self.buffer("dpre_zr_all", (*shape[:2], 2 * self.output_dim)),
            dpre_h_all=self.buffer("dpre_h_all", shape),
        )
        self.kernels.gru_sequence_forward(steps, sequence)
        return sequence

    def run_backward(self, steps: Steps, sequence: Any, gradients: Gradients) -> None:
        self.kernels.gru_sequence_backward(steps, sequence, gradients)

    def recurrent_weight_gradients(self, dpre_all: Any) -> None:
        # the backward pass left dpre_all's z, r and hh columns in contiguous copies
        sequence = self.saved()["sequence"]
        steps, batch, _ = dpre_all.shape
        units = self.output_dim
        rows = steps * batch
        self.kernels.matmul_transpose_a(
            sequence.h_prev_all.reshape(rows, units),
            sequence.dpre_zr_all.reshape(rows, 2 * units),
            self.grads[1],
        )
        self.kernels.matmul_transpose_a(
            sequence.rh_all.reshape(rows, units),
            sequence.dpre_h_all.reshape(rows, units),
            self.grads[2],
        )
