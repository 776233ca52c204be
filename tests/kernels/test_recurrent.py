"""Recurrent step kernels against NumPy references of Keras 0.3's equations, and
backpropagation through time built from them against finite differences."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import pytest

from numlayers.devices import get_device
from numlayers.kernels import build_family
from numlayers.kernels.recurrent import ACTIVATION_CODES
from numlayers.testing import tolerance

RNG = np.random.default_rng(77)
STEPS, BATCH, HIDDEN = 3, 2, 3
STEP = 1  # the step the single-step tests run
#: at STEP row 0 is masked and row 1 is not, so one call runs both branches
MASK = np.array([[1, 1], [0, 1], [1, 0]], dtype=np.float64)
#: sentinel filling the outputs: where it survives, nothing was written
UNTOUCHED = 7.0
NAMES = list(ACTIVATION_CODES)
#: (activation, inner_activation): every code is each one once
PAIRS = [
    ("tanh", "hard_sigmoid"),
    ("relu", "sigmoid"),
    ("softplus", "tanh"),
    ("linear", "relu"),
    ("sigmoid", "softplus"),
    ("hard_sigmoid", "linear"),
]


# ---------------------------------------------------------------- NumPy references


def activation(name, x):
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "hard_sigmoid":
        return np.clip(0.2 * x + 0.5, 0, 1)
    assert name == "softplus"
    return np.logaddexp(0, x)


def derivative(name, x):
    """``f'(x)``, from the pre-activation (the kernels take it from the output)."""
    if name == "linear":
        return np.ones_like(x)
    if name == "relu":
        return (x > 0).astype(x.dtype)
    if name == "tanh":
        return 1 - np.tanh(x) ** 2
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-x))
        return s * (1 - s)
    if name == "hard_sigmoid":
        return np.where(np.abs(x) < 2.5, 0.2, 0.0)
    assert name == "softplus"
    return 1 / (1 + np.exp(-x))


def random(*shape):
    return RNG.standard_normal(shape)


def preactivations(*shape):
    """Wide enough that hard_sigmoid saturates somewhere and relu is often 0."""
    return 2 * random(*shape)


# ---------------------------------------------------------------- running an operation


@functools.cache
def operations(device, dtype):
    return SimpleNamespace(**build_family("recurrent", device, dtype))


def rounded(dtype, **arrays):
    """The arrays rounded to ``dtype`` and kept in float64, by name: the references see
    exactly the kernels' inputs."""
    return SimpleNamespace(
        **{name: a.astype(dtype).astype(np.float64) for name, a in arrays.items()}
    )


def on_device(device, dtype, **arrays):
    """Copies of the arrays, cast to ``dtype``, on ``device``, by name (the operations
    write into some of them)."""
    return SimpleNamespace(
        **{name: device.asarray(np.array(a, dtype=dtype)) for name, a in arrays.items()}
    )


def mask_arguments(masked):
    """``(mask, has_mask)``: the real mask, or a dummy of zeros that must not be read."""
    return (MASK, 1) if masked else (np.zeros((1, 1)), 0)


def row_is_masked(masked):
    """``(B, 1)`` booleans: the rows masked at ``STEP``."""
    return (MASK[STEP] == 0)[:, None] if masked else np.zeros((BATCH, 1), dtype=bool)


def untouched(shape):
    return np.full(shape, UNTOUCHED)


def at_step(device, array):
    """Row ``STEP`` of a ``(T, ...)`` array, on the host."""
    return device.to_host(array)[STEP]


def assert_close(device, dtype, actual, expected):
    np.testing.assert_allclose(device.to_host(actual), expected, **tolerance(dtype))


def assert_other_steps_untouched(device, array):
    host = device.to_host(array)
    assert np.all(np.delete(host, STEP, axis=0) == UNTOUCHED)


def test_activation_codes_are_the_layers_table():
    assert ACTIVATION_CODES == {
        "linear": 0,
        "relu": 1,
        "tanh": 2,
        "sigmoid": 3,
        "hard_sigmoid": 4,
        "softplus": 5,
    }


# ---------------------------------------------------------------- SimpleRNN


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("name", NAMES)
def test_rnn_step_forward(device, dtype, name, masked):
    mask, has_mask = mask_arguments(masked)
    x = rounded(
        dtype,
        xw=preactivations(STEPS, BATCH, HIDDEN),
        rec=random(BATCH, HIDDEN),
        h_prev=random(BATCH, HIDDEN),
    )
    a = on_device(device, dtype, **vars(x), mask=mask, h_all=untouched((STEPS, BATCH, HIDDEN)))
    operations(device, dtype).rnn_step_forward(
        a.xw, a.rec, STEP, a.mask, has_mask, a.h_prev, a.h_all, ACTIVATION_CODES[name]
    )
    expected = np.where(row_is_masked(masked), x.h_prev, activation(name, x.xw[STEP] + x.rec))
    np.testing.assert_allclose(at_step(device, a.h_all), expected, **tolerance(dtype))
    assert_other_steps_untouched(device, a.h_all)


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("name", NAMES)
def test_rnn_step_backward(device, dtype, name, masked):
    mask, has_mask = mask_arguments(masked)
    pre = preactivations(BATCH, HIDDEN)
    h_all = untouched((STEPS, BATCH, HIDDEN))
    h_all[STEP] = activation(name, pre)
    a = on_device(
        device,
        dtype,
        h_all=h_all,
        h_prev=random(BATCH, HIDDEN),
        mask=mask,
        dh=random(BATCH, HIDDEN),
        dpre_all=untouched((STEPS, BATCH, HIDDEN)),
        dh_prev=untouched((BATCH, HIDDEN)),
    )
    operations(device, dtype).rnn_step_backward(
        a.h_all,
        STEP,
        a.h_prev,
        a.mask,
        has_mask,
        a.dh,
        a.dpre_all,
        a.dh_prev,
        ACTIVATION_CODES[name],
    )
    dh = device.to_host(a.dh).astype(np.float64)
    rows = row_is_masked(masked)
    expected = np.where(rows, 0, dh * derivative(name, pre))
    np.testing.assert_allclose(at_step(device, a.dpre_all), expected, **tolerance(dtype))
    assert_close(device, dtype, a.dh_prev, np.where(rows, dh, 0))
    assert_other_steps_untouched(device, a.dpre_all)


# ---------------------------------------------------------------- LSTM


def lstm_gates(pre, name, inner):
    """``i, f, g, o`` of the ``(B, 4H)`` pre-activations."""
    z_i, z_f, z_c, z_o = np.split(pre, 4, axis=1)
    return (
        activation(inner, z_i),
        activation(inner, z_f),
        activation(name, z_c),
        activation(inner, z_o),
    )


class LstmCase:
    """Inputs of a whole LSTM sequence (time-major), rounded to ``dtype``, and the
    NumPy reference of Keras 0.3's LSTM through them, forward and backward."""

    def __init__(self, dtype, name, inner, masked, go_backwards, dropout, shape, every_step):
        steps, batch, hidden = shape
        rng = np.random.default_rng(hash((name, inner, masked, go_backwards, dropout)) % 2**32)
        self.shape = shape
        self.codes = ACTIVATION_CODES[name], ACTIVATION_CODES[inner]
        self.names = name, inner
        mask = (rng.random((steps, batch)) > 0.3).astype(np.float64)
        mask_U = 1.5 * (rng.random((batch, hidden)) > 0.4)
        grad_steps = steps if every_step else 1
        x = rounded(
            dtype,
            xw=2 * rng.standard_normal((steps, batch, 4 * hidden)),
            U=0.5 * rng.standard_normal((hidden, 4 * hidden)),
            h0=rng.standard_normal((batch, hidden)),
            c0=rng.standard_normal((batch, hidden)),
            grad=rng.standard_normal((grad_steps, batch, hidden)),
        )
        self.x = x
        self.mask, self.has_mask = (mask, 1) if masked else (np.zeros((1, 1)), 0)
        self.mask_U, self.has_mask_U = (mask_U, 1) if dropout else (np.zeros((1, 1)), 0)
        self.order = np.arange(steps)[::-1].copy() if go_backwards else np.arange(steps)
        self.every_step = every_step
        self.reference()

    def reference(self):
        x, (name, inner) = self.x, self.names
        steps, batch, hidden = self.shape
        self.h_in, self.gates, self.c, self.h, self.c_prev = {}, {}, {}, {}, {}
        h, c = x.h0, x.c0
        for t in self.order:
            keep = self.mask[t][:, None] > 0 if self.has_mask else np.ones((batch, 1), bool)
            self.h_in[t] = h * self.mask_U if self.has_mask_U else h
            i, f, g, o = lstm_gates(x.xw[t] + self.h_in[t] @ x.U, name, inner)
            self.gates[t] = np.hstack([i, f, g, o])
            self.c_prev[t] = c
            c_new = f * c + i * g
            h_new = o * activation(name, c_new)
            h, c = np.where(keep, h_new, h), np.where(keep, c_new, c)
            self.h[t], self.c[t] = h, c
        # backward through time, from the gradient of the outputs
        dh, dc = np.zeros((batch, hidden)), np.zeros((batch, hidden))
        self.dpre = {}
        for position in range(steps - 1, -1, -1):
            t = self.order[position]
            if self.every_step:
                dh = dh + x.grad[t]
            elif position == steps - 1:
                dh = dh + x.grad[0]
            keep = self.mask[t][:, None] > 0 if self.has_mask else np.ones((batch, 1), bool)
            i, f, g, o = np.split(self.gates[t], 4, axis=1)
            z = x.xw[t] + self.h_in[t] @ x.U
            z_i, z_f, z_c, z_o = np.split(z, 4, axis=1)
            a = activation(name, self.c[t])
            dc_total = dc + dh * o * derivative(name, self.c[t])
            dpre = np.hstack(
                [
                    dc_total * g * derivative(inner, z_i),
                    dc_total * self.c_prev[t] * derivative(inner, z_f),
                    dc_total * i * derivative(name, z_c),
                    dh * a * derivative(inner, z_o),
                ]
            )
            dpre = np.where(keep, dpre, 0)
            through_u = dpre @ x.U.T
            if self.has_mask_U:
                through_u = through_u * self.mask_U
            self.dpre[t] = dpre
            dh = np.where(keep, through_u, dh + through_u)
            dc = np.where(keep, dc_total * f, dc)
        # what the kernel leaves in dh: the last through-U product is not made
        self.dh_final = dh - (self.dpre[self.order[0]] @ x.U.T) * (
            self.mask_U if self.has_mask_U else 1
        )
        self.dc_final = dc

    def run(self, device, dtype):
        x, ops = self.x, operations(device, dtype)
        steps, batch, hidden = self.shape
        a = on_device(
            device,
            dtype,
            **vars(x),
            mask=self.mask,
            mask_U=self.mask_U,
            h_prev_all=untouched((steps, batch, hidden)),
            gates_all=untouched((steps, batch, 4 * hidden)),
            c_all=untouched((steps, batch, hidden)),
            h_all=untouched((steps, batch, hidden)),
            dh=np.zeros((batch, hidden)),
            dc=np.zeros((batch, hidden)),
            dpre_all=untouched((steps, batch, 4 * hidden)),
        )
        ops.lstm_sequence_forward(
            a.xw,
            a.U,
            self.order,
            a.mask,
            self.has_mask,
            a.mask_U,
            self.has_mask_U,
            a.h0,
            a.c0,
            a.h_prev_all,
            a.gates_all,
            a.c_all,
            a.h_all,
            *self.codes,
        )
        ops.lstm_sequence_backward(
            a.gates_all,
            a.c_all,
            self.order,
            a.mask,
            self.has_mask,
            a.mask_U,
            self.has_mask_U,
            a.c0,
            a.grad,
            int(self.every_step),
            a.U,
            a.dh,
            a.dc,
            a.dpre_all,
            *self.codes,
        )
        return a

    def check(self, device, dtype, a):
        steps = self.shape[0]
        host = {name: device.to_host(getattr(a, name)) for name in vars(a)}
        tol = tolerance(dtype)
        for label, computed, expected in (
            ("h_prev_all", host["h_prev_all"], self.h_in),
            ("gates_all", host["gates_all"], self.gates),
            ("c_all", host["c_all"], self.c),
            ("h_all", host["h_all"], self.h),
            ("dpre_all", host["dpre_all"], self.dpre),
        ):
            for t in range(steps):
                np.testing.assert_allclose(computed[t], expected[t], **tol, err_msg=f"{label}[{t}]")
        np.testing.assert_allclose(host["dc"], self.dc_final, **tol, err_msg="dc")
        np.testing.assert_allclose(host["dh"], self.dh_final, **tol, err_msg="dh")


@pytest.mark.parametrize("every_step", [False, True], ids=["last_output", "sequences"])
@pytest.mark.parametrize("dropout", [False, True], ids=["no_dropout_U", "dropout_U"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "go_backwards"])
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
def test_lstm_sequence_passes_match_numpy(device, dtype, masked, go_backwards, dropout, every_step):
    case = LstmCase(
        dtype, "tanh", "hard_sigmoid", masked, go_backwards, dropout, (4, 2, 3), every_step
    )
    case.check(device, dtype, case.run(device, dtype))


@pytest.mark.parametrize(("name", "inner"), PAIRS)
def test_lstm_sequence_every_activation(device, dtype, name, inner):
    case = LstmCase(dtype, name, inner, True, False, False, (3, 2, 3), True)
    case.check(device, dtype, case.run(device, dtype))


@pytest.mark.parametrize("shape", [(3, 5, 40), (2, 33, 128), (2, 3, 200)])
def test_lstm_sequence_in_several_unit_chunks(dtype, shape):
    """Sizes the CPU passes cut into several chunks of units, the last one partial."""
    case = LstmCase(dtype, "tanh", "sigmoid", True, True, True, shape, True)
    device = get_device("cpu")
    case.check(device, dtype, case.run(device, dtype))


# ---------------------------------------------------------------- GRU


@pytest.mark.parametrize("inner", NAMES)
def test_gru_step_gates(device, dtype, inner):
    x = rounded(
        dtype,
        xw=preactivations(STEPS, BATCH, 3 * HIDDEN),
        rec_zr=random(BATCH, 2 * HIDDEN),
        h_prev=random(BATCH, HIDDEN),
    )
    a = on_device(
        device,
        dtype,
        **vars(x),
        gates_all=untouched((STEPS, BATCH, 3 * HIDDEN)),
        rh=untouched((BATCH, HIDDEN)),
    )
    operations(device, dtype).gru_step_gates(
        a.xw, a.rec_zr, STEP, a.h_prev, a.gates_all, a.rh, ACTIVATION_CODES[inner]
    )
    zr = activation(inner, x.xw[STEP, :, : 2 * HIDDEN] + x.rec_zr)
    gates = at_step(device, a.gates_all)
    np.testing.assert_allclose(gates[:, : 2 * HIDDEN], zr, **tolerance(dtype))
    assert np.all(gates[:, 2 * HIDDEN :] == UNTOUCHED)  # hh is the next phase's
    assert_close(device, dtype, a.rh, zr[:, HIDDEN:] * x.h_prev)
    assert_other_steps_untouched(device, a.gates_all)


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("name", NAMES)
def test_gru_step_output(device, dtype, name, masked):
    mask, has_mask = mask_arguments(masked)
    gates_all = untouched((STEPS, BATCH, 3 * HIDDEN))
    gates_all[STEP, :, : 2 * HIDDEN] = activation("sigmoid", random(BATCH, 2 * HIDDEN))
    x = rounded(
        dtype,
        xw=preactivations(STEPS, BATCH, 3 * HIDDEN),
        rec_h=random(BATCH, HIDDEN),
        h_prev=random(BATCH, HIDDEN),
        gates_all=gates_all,
    )
    a = on_device(device, dtype, **vars(x), mask=mask, h_all=untouched((STEPS, BATCH, HIDDEN)))
    operations(device, dtype).gru_step_output(
        a.xw,
        a.rec_h,
        STEP,
        a.mask,
        has_mask,
        a.h_prev,
        a.gates_all,
        a.h_all,
        ACTIVATION_CODES[name],
    )
    zr = x.gates_all[STEP, :, : 2 * HIDDEN]
    hh = activation(name, x.xw[STEP, :, 2 * HIDDEN :] + x.rec_h)
    z = zr[:, :HIDDEN]
    tol = tolerance(dtype)
    np.testing.assert_allclose(at_step(device, a.gates_all), np.hstack([zr, hh]), **tol)
    h = np.where(row_is_masked(masked), x.h_prev, z * x.h_prev + (1 - z) * hh)
    np.testing.assert_allclose(at_step(device, a.h_all), h, **tol)
    for array in (a.gates_all, a.h_all):
        assert_other_steps_untouched(device, array)


def gru_gates(name, inner):
    """Pre-activations ``(B, 3H)`` and the gates ``z, r, hh`` made from them."""
    pre = preactivations(BATCH, 3 * HIDDEN)
    z_z, z_r, z_h = np.split(pre, 3, axis=1)
    return pre, activation(inner, z_z), activation(inner, z_r), activation(name, z_h)


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize(("name", "inner"), PAIRS)
def test_gru_step_backward_output(device, dtype, name, inner, masked):
    mask, has_mask = mask_arguments(masked)
    pre, z, r, hh = gru_gates(name, inner)
    gates_all = untouched((STEPS, BATCH, 3 * HIDDEN))
    gates_all[STEP] = np.hstack([z, r, hh])
    h_prev, dh = random(BATCH, HIDDEN), random(BATCH, HIDDEN)
    a = on_device(
        device,
        dtype,
        gates_all=gates_all,
        h_all=untouched((STEPS, BATCH, HIDDEN)),
        h_prev=h_prev,
        mask=mask,
        dh=dh,
        dpre_all=untouched((STEPS, BATCH, 3 * HIDDEN)),
        dh_prev=untouched((BATCH, HIDDEN)),
    )
    operations(device, dtype).gru_step_backward_output(
        a.gates_all,
        a.h_all,
        STEP,
        a.h_prev,
        a.mask,
        has_mask,
        a.dh,
        a.dpre_all,
        a.dh_prev,
        ACTIVATION_CODES[name],
    )
    rows = row_is_masked(masked)
    dpre = at_step(device, a.dpre_all)
    tol = tolerance(dtype)
    # the z part is d loss / d z: the reset phase applies inner'(z)
    np.testing.assert_allclose(dpre[:, :HIDDEN], np.where(rows, 0, dh * (h_prev - hh)), **tol)
    d_hh = dh * (1 - z) * derivative(name, pre[:, 2 * HIDDEN :])
    np.testing.assert_allclose(dpre[:, 2 * HIDDEN :], np.where(rows, 0, d_hh), **tol)
    if masked:
        assert np.all(dpre[rows[:, 0]] == 0)
    assert_close(device, dtype, a.dh_prev, np.where(rows, dh, dh * z))
    assert_other_steps_untouched(device, a.dpre_all)


@pytest.mark.parametrize(("name", "inner"), PAIRS)
def test_gru_step_backward_reset(device, dtype, name, inner):
    pre, z, r, hh = gru_gates(name, inner)
    gates_all = untouched((STEPS, BATCH, 3 * HIDDEN))
    gates_all[STEP] = np.hstack([z, r, hh])
    dpre_all = untouched((STEPS, BATCH, 3 * HIDDEN))
    d_z = random(BATCH, HIDDEN)  # what the output phase left there
    dpre_all[STEP, :, :HIDDEN] = d_z
    h_prev, d_rh, dh_prev = random(BATCH, HIDDEN), random(BATCH, HIDDEN), random(BATCH, HIDDEN)
    a = on_device(
        device,
        dtype,
        gates_all=gates_all,
        h_prev=h_prev,
        d_rh=d_rh,
        dpre_all=dpre_all,
        dh_prev=dh_prev,
    )
    operations(device, dtype).gru_step_backward_reset(
        a.gates_all, STEP, a.h_prev, a.d_rh, a.dpre_all, a.dh_prev, ACTIVATION_CODES[inner]
    )
    z_z, z_r, _ = np.split(pre, 3, axis=1)
    dpre = at_step(device, a.dpre_all)
    tol = tolerance(dtype)
    np.testing.assert_allclose(dpre[:, :HIDDEN], d_z * derivative(inner, z_z), **tol)
    np.testing.assert_allclose(
        dpre[:, HIDDEN : 2 * HIDDEN], d_rh * h_prev * derivative(inner, z_r), **tol
    )
    assert np.all(dpre[:, 2 * HIDDEN :] == UNTOUCHED)
    assert_close(device, dtype, a.dh_prev, dh_prev + d_rh * r)
    assert_other_steps_untouched(device, a.dpre_all)


# ---------------------------------------------------------------- backpropagation through time

#: a sequence of 4 steps: steps are masked in the middle and at either end
SEQUENCE_MASK = np.array([[1, 1], [1, 0], [0, 1], [1, 0]], dtype=np.float64)
GATE_COUNT = {"rnn": 1, "gru": 3, "lstm": 4}


class Sequence:
    """A recurrent layer's forward and backward passes, as the layer does them: NumPy
    matrix products around the step operations, float64 on the CPU, time-major."""

    def __init__(self, kind, name, inner, masked, go_backwards):
        self.kind = kind
        self.ops = operations(get_device("cpu"), np.dtype(np.float64))
        self.codes = (ACTIVATION_CODES[name], ACTIVATION_CODES[inner])
        self.mask, self.has_mask = (SEQUENCE_MASK, 1) if masked else (np.zeros((1, 1)), 0)
        steps = SEQUENCE_MASK.shape[0]
        self.order = list(reversed(range(steps)) if go_backwards else range(steps))

    def forward(self, x, w, u, b):
        """All outputs ``h_all (T, B, H)``; what backward needs is kept on ``self``."""
        ops, act, inner = self.ops, *self.codes
        steps, batch, features = x.shape
        hidden = u.shape[0]
        xw = (x.reshape(steps * batch, features) @ w + b).reshape(steps, batch, -1)
        self.gates_all = np.zeros_like(xw)
        self.c_all = np.zeros((steps, batch, hidden))
        self.h_all = np.zeros((steps, batch, hidden))
        self.h_prev_all = np.zeros((steps, batch, hidden))
        self.rh_all = np.zeros((steps, batch, hidden))
        h = np.zeros((batch, hidden))
        c = np.zeros((batch, hidden))
        mask, has_mask = self.mask, self.has_mask
        if self.kind == "lstm":  # one operation runs the whole sequence
            ops.lstm_sequence_forward(
                xw,
                u,
                np.array(self.order),
                mask,
                has_mask,
                np.zeros((1, 1)),
                0,
                h,
                c,
                self.h_prev_all,
                self.gates_all,
                self.c_all,
                self.h_all,
                act,
                inner,
            )
            return self.h_all
        for t in self.order:
            self.h_prev_all[t] = h
            if self.kind == "rnn":
                ops.rnn_step_forward(xw, h @ u, t, mask, has_mask, h, self.h_all, act)
            else:
                rh = self.rh_all[t]
                ops.gru_step_gates(xw, h @ u[:, : 2 * hidden], t, h, self.gates_all, rh, inner)
                rec_h = rh @ u[:, 2 * hidden :]
                ops.gru_step_output(
                    xw, rec_h, t, mask, has_mask, h, self.gates_all, self.h_all, act
                )
            h = self.h_all[t].copy()
        return self.h_all

    def backward(self, x, w, u, grad_h_all):
        """``dx, dW, dU, db`` from the gradient of every output."""
        ops, act, inner = self.ops, *self.codes
        steps, batch, features = x.shape
        hidden = u.shape[0]
        dpre_all = np.zeros_like(self.gates_all)
        dh_next = np.zeros((batch, hidden))
        dh_prev = np.zeros((batch, hidden))
        mask, has_mask = self.mask, self.has_mask
        if self.kind == "lstm":
            ops.lstm_sequence_backward(
                self.gates_all,
                self.c_all,
                np.array(self.order),
                mask,
                has_mask,
                np.zeros((1, 1)),
                0,
                np.zeros((batch, hidden)),
                grad_h_all,
                1,
                u,
                np.zeros((batch, hidden)),
                np.zeros((batch, hidden)),
                dpre_all,
                act,
                inner,
            )
        for t in reversed(self.order) if self.kind != "lstm" else ():
            dh = grad_h_all[t] + dh_next
            h_prev = self.h_prev_all[t]
            if self.kind == "rnn":
                ops.rnn_step_backward(
                    self.h_all, t, h_prev, mask, has_mask, dh, dpre_all, dh_prev, act
                )
                dh_prev += dpre_all[t] @ u.T
            else:
                ops.gru_step_backward_output(
                    self.gates_all,
                    self.h_all,
                    t,
                    h_prev,
                    mask,
                    has_mask,
                    dh,
                    dpre_all,
                    dh_prev,
                    act,
                )
                d_rh = dpre_all[t, :, 2 * hidden :] @ u[:, 2 * hidden :].T
                ops.gru_step_backward_reset(
                    self.gates_all, t, h_prev, d_rh, dpre_all, dh_prev, inner
                )
                dh_prev += dpre_all[t, :, : 2 * hidden] @ u[:, : 2 * hidden].T
            dh_next = dh_prev.copy()
        dpre = dpre_all.reshape(steps * batch, -1)
        h_prev = self.h_prev_all.reshape(steps * batch, hidden)
        if self.kind == "gru":
            # U_h multiplies r * h_prev, not h_prev
            rh = self.rh_all.reshape(steps * batch, hidden)
            du = np.hstack([h_prev.T @ dpre[:, : 2 * hidden], rh.T @ dpre[:, 2 * hidden :]])
        else:
            du = h_prev.T @ dpre
        dx = (dpre @ w.T).reshape(x.shape)
        dw = x.reshape(steps * batch, features).T @ dpre
        return dx, dw, du, dpre.sum(axis=0)


def central_differences(loss, values, epsilon=1e-6):
    gradient = np.zeros_like(values)
    for index in np.ndindex(values.shape):
        original = values[index]
        values[index] = original + epsilon
        plus = loss()
        values[index] = original - epsilon
        minus = loss()
        values[index] = original
        gradient[index] = (plus - minus) / (2 * epsilon)
    return gradient


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "go_backwards"])
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize(
    ("kind", "name", "inner"),
    [
        ("rnn", "tanh", "linear"),
        ("rnn", "softplus", "linear"),
        ("lstm", "tanh", "hard_sigmoid"),
        ("lstm", "tanh", "sigmoid"),
        ("gru", "tanh", "hard_sigmoid"),
        ("gru", "sigmoid", "tanh"),
    ],
)
def test_backpropagation_through_time_matches_finite_differences(
    kind, name, inner, masked, go_backwards
):
    steps, batch = SEQUENCE_MASK.shape
    features, hidden = 3, 3
    width = GATE_COUNT[kind] * hidden
    rng = np.random.default_rng(5)
    x = rng.standard_normal((steps, batch, features))
    w = rng.standard_normal((features, width))
    u = 0.7 * rng.standard_normal((hidden, width))
    b = 0.5 * rng.standard_normal(width)
    projection = rng.standard_normal((steps, batch, hidden))
    sequence = Sequence(kind, name, inner, masked, go_backwards)

    def loss():
        return float(np.sum(sequence.forward(x, w, u, b) * projection))

    loss()
    analytic = sequence.backward(x, w, u, projection)
    for label, values, gradient in zip(("x", "W", "U", "b"), (x, w, u, b), analytic, strict=True):
        numerical = central_differences(loss, values)
        assert np.abs(numerical).max() > 1e-3, label  # the check is not vacuous
        np.testing.assert_allclose(gradient, numerical, rtol=1e-6, atol=1e-8, err_msg=label)
