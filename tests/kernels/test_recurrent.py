"""Recurrent sequence operations against NumPy references of Keras 0.3's equations, on
both devices and dtypes, and backpropagation through time built from them against
finite differences."""

from __future__ import annotations

import functools
import types
import zlib
from types import SimpleNamespace
from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import cuda  # the simulator's where there is no GPU (see conftest.py)

from numlayers.devices import get_device
from numlayers.kernels import build_family
from numlayers.kernels.recurrent import (
    ACTIVATION_CODES,
    Gradients,
    GruSequence,
    LstmSequence,
    RnnSequence,
    Steps,
)
from numlayers.kernels.recurrent import cpu as recurrent_cpu
from numlayers.kernels.recurrent import cuda as recurrent_cuda
from numlayers.kernels.toolkit import CudaKernels
from numlayers.testing import tolerance

#: sentinel filling the outputs: where it survives, nothing was written
UNTOUCHED = 7.0
KINDS = ("rnn", "lstm", "gru")
GATE_COUNT = {"rnn": 1, "gru": 3, "lstm": 4}
SEQUENCE = {"rnn": RnnSequence, "lstm": LstmSequence, "gru": GruSequence}
#: (activation, inner_activation): every code is each one once
PAIRS = [
    ("tanh", "hard_sigmoid"),
    ("relu", "sigmoid"),
    ("softplus", "tanh"),
    ("linear", "relu"),
    ("sigmoid", "softplus"),
    ("hard_sigmoid", "linear"),
]
#: (masked, go_backwards, dropout_U, gradient at every step): each option on and off
SCENARIOS = {
    "last_output": (False, False, False, False),
    "mask_sequences": (True, False, False, True),
    "mask_go_backwards_dropout_U_sequences": (True, True, True, True),
    "go_backwards_dropout_U_last_output": (False, True, True, False),
}


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
    if name == "softmax":  # over each row's units
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
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


def backward_through(name, x, grad):
    """The gradient reaching ``f(x)`` taken back to ``x`` (softmax mixes a row's units)."""
    if name == "softmax":
        y = activation(name, x)
        return y * (grad - np.sum(grad * y, axis=1, keepdims=True))
    return grad * derivative(name, x)


def rnn_step(x, w, h, c, h_in, keep, act, inner):
    """One SimpleRNN step: ``(outputs, backward)``, where ``backward(dh)`` gives the
    pre-activation gradients, the state gradient's direct share and the share that
    goes back through ``U`` (before recurrent dropout)."""
    pre = x + h_in @ w.U
    h_new = np.where(keep, activation(act, pre), h)

    def backward(dh, dc):
        dpre = np.where(keep, backward_through(act, pre, dh), 0)
        return dpre, np.where(keep, 0, dh), None, dpre @ w.U.T

    return {"h_all": h_new}, backward


def lstm_step(x, w, h, c, h_in, keep, act, inner):
    pre = x + h_in @ w.U
    z_i, z_f, z_c, z_o = np.split(pre, 4, axis=1)
    i, f, g, o = (activation(inner, z_i), activation(inner, z_f), activation(act, z_c),
                  activation(inner, z_o))  # fmt: skip
    c_new = f * c + i * g
    h_new = o * activation(act, c_new)
    outputs = {
        "gates_all": np.hstack([i, f, g, o]),
        "c_all": np.where(keep, c_new, c),
        "h_all": np.where(keep, h_new, h),
    }

    def backward(dh, dc):
        dc_total = dc + backward_through(act, c_new, dh * o)
        dpre = np.hstack(
            [
                dc_total * g * derivative(inner, z_i),
                dc_total * c * derivative(inner, z_f),
                backward_through(act, z_c, dc_total * i),
                dh * activation(act, c_new) * derivative(inner, z_o),
            ]
        )
        dpre = np.where(keep, dpre, 0)
        return dpre, np.where(keep, 0, dh), np.where(keep, dc_total * f, dc), dpre @ w.U.T

    return outputs, backward


def gru_step(x, w, h, c, h_in, keep, act, inner):
    hidden = h.shape[1]
    zr_pre = x[:, : 2 * hidden] + h_in @ w.U_zr
    z, r = np.split(activation(inner, zr_pre), 2, axis=1)
    rh = r * h_in
    hh_pre = x[:, 2 * hidden :] + rh @ w.U_h
    hh = activation(act, hh_pre)
    outputs = {
        "gates_all": np.hstack([z, r, hh]),
        "rh_all": rh,
        "h_all": np.where(keep, z * h + (1 - z) * hh, h),
    }

    def backward(dh, dc):
        dpre_h = backward_through(act, hh_pre, dh * (1 - z))
        d_rh = dpre_h @ w.U_h.T
        dpre_zr = np.hstack([dh * (h - hh), d_rh * h_in]) * derivative(inner, zr_pre)
        dpre = np.where(keep, np.hstack([dpre_zr, dpre_h]), 0)
        through = dpre[:, : 2 * hidden] @ w.U_zr.T + np.where(keep, d_rh * r, 0)
        return dpre, np.where(keep, dh * z, dh), None, through

    return outputs, backward


STEP_REFERENCE = {"rnn": rnn_step, "lstm": lstm_step, "gru": gru_step}


# ---------------------------------------------------------------- running the operations


@functools.cache
def operations(device, dtype):
    return SimpleNamespace(**build_family("recurrent", device, dtype))


class Case:
    """A whole sequence of one kind (time-major), its inputs rounded to ``dtype``, and
    the NumPy reference of its forward and backward passes, step by step."""

    def __init__(self, kind, dtype, names, scenario, shape):
        masked, go_backwards, dropout, every_step = SCENARIOS[scenario]
        steps, batch, hidden = shape
        rng = np.random.default_rng(zlib.crc32(repr((kind, names, scenario, shape)).encode()))
        width = GATE_COUNT[kind] * hidden

        def rounded(array):
            return array.astype(dtype).astype(np.float64)

        self.kind, self.dtype, self.names, self.shape = kind, np.dtype(dtype), names, shape
        self.every_step = every_step
        self.inputs = {
            "xw": rounded(2 * rng.standard_normal((steps, batch, width))),
            "h0": rounded(rng.standard_normal((batch, hidden))),
            "grad": rounded(rng.standard_normal((steps if every_step else 1, batch, hidden))),
        }
        if kind == "lstm":
            self.inputs["c0"] = rounded(rng.standard_normal((batch, hidden)))
        if kind == "gru":
            self.inputs["U_zr"] = rounded(0.5 * rng.standard_normal((hidden, 2 * hidden)))
            self.inputs["U_h"] = rounded(0.5 * rng.standard_normal((hidden, hidden)))
        else:
            self.inputs["U"] = rounded(0.5 * rng.standard_normal((hidden, width)))
        self.mask = (rng.random((steps, batch)) > 0.3).astype(np.float64) if masked else None
        self.mask_U = 1.5 * (rng.random((batch, hidden)) > 0.4) if dropout else None
        self.order = np.arange(steps)[::-1].copy() if go_backwards else np.arange(steps)
        self.expected = self.reference()

    def reference(self):
        x = SimpleNamespace(**self.inputs)
        steps, batch, hidden = self.shape
        step = STEP_REFERENCE[self.kind]
        expected = {}
        h, c = x.h0, self.inputs.get("c0")
        backwards = []
        for t in self.order:
            keep = np.ones((batch, 1), bool) if self.mask is None else self.mask[t][:, None] > 0
            h_in = h if self.mask_U is None else h * self.mask_U
            outputs, backward = step(x.xw[t], x, h, c, h_in, keep, *self.names)
            outputs["h_prev_all"] = h_in
            for name, value in outputs.items():
                expected.setdefault(name, np.full((steps, *value.shape), np.nan))[t] = value
            h, c = outputs["h_all"], outputs.get("c_all")
            backwards.append(backward)
        dh, dc = np.zeros((batch, hidden)), np.zeros((batch, hidden))
        expected["dpre_all"] = np.zeros_like(x.xw)
        for position in range(steps - 1, -1, -1):
            t = self.order[position]
            if self.every_step:
                dh = dh + x.grad[t]
            elif position == steps - 1:
                dh = dh + x.grad[0]
            dpre, direct, dc, through = backwards[position](dh, dc)
            expected["dpre_all"][t] = dpre
            # what the operation leaves: the first step's share through U is not made
            dh = direct if position == 0 else direct + self.dropped(through)
        expected["dh"] = dh
        if self.kind == "lstm":
            expected["dc"] = dc
        return expected

    def dropped(self, through):
        return through if self.mask_U is None else through * self.mask_U

    def run(self, device):
        """Both passes on ``device``: every array they wrote, on the host, by name."""
        ops = operations(device, self.dtype)
        steps, batch, hidden = self.shape
        width = GATE_COUNT[self.kind] * hidden

        def on_device(array):
            return device.asarray(np.array(array, dtype=self.dtype))

        sequence_type = SEQUENCE[self.kind]
        shapes = {"gates_all": (steps, batch, width), "dpre_zr_all": (steps, batch, 2 * hidden)}
        arrays = {
            name: on_device(self.inputs.get(name, np.full(shapes.get(name, self.shape), UNTOUCHED)))
            for name in sequence_type._fields
        }
        sequence = sequence_type(**arrays)
        dummy = np.zeros((1, 1))
        run_steps = Steps(
            self.order,
            on_device(dummy if self.mask is None else self.mask),
            int(self.mask is not None),
            on_device(dummy if self.mask_U is None else self.mask_U),
            int(self.mask_U is not None),
            ACTIVATION_CODES[self.names[0]],
            ACTIVATION_CODES[self.names[1]],
        )
        gradients = Gradients(
            on_device(self.inputs["grad"]),
            int(self.every_step),
            on_device(np.full((steps, batch, width), UNTOUCHED)),
            # the pass zeroes the state gradients first: what they held does not matter
            on_device(np.full((batch, hidden), np.nan)),
            on_device(np.full((batch, hidden), np.nan) if self.kind == "lstm" else dummy),
        )
        getattr(ops, f"{self.kind}_sequence_forward")(run_steps, sequence)
        getattr(ops, f"{self.kind}_sequence_backward")(run_steps, sequence, gradients)
        written = {**sequence._asdict(), **gradients._asdict()}
        return {name: device.to_host(written[name]) for name in self.expected}

    def check(self, device):
        computed = self.run(device)
        for name, expected in self.expected.items():
            np.testing.assert_allclose(
                computed[name], expected, **tolerance(self.dtype), err_msg=name
            )


def test_activation_codes_are_the_layers_table():
    names = ("linear", "relu", "tanh", "sigmoid", "hard_sigmoid", "softplus", "softmax")
    expected = {name: code for code, name in enumerate(names)}
    assert expected == ACTIVATION_CODES


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_passes_match_numpy(device, dtype, kind, scenario):
    Case(kind, dtype, ("tanh", "hard_sigmoid"), scenario, (4, 2, 3)).check(device)


@pytest.mark.parametrize("shape", [(2, 3, 0), (0, 3, 4), (2, 0, 4)], ids=["units", "steps", "rows"])
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_passes_without_units_steps_or_rows(device, kind, shape):
    """Nothing to compute, and nothing refused: no units, no steps (the state
    gradients are zeroed), no batch rows."""
    Case(kind, np.dtype(np.float32), ("tanh", "sigmoid"), "mask_sequences", shape).check(device)


@pytest.mark.parametrize(("name", "inner"), PAIRS)
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_passes_with_every_activation(device, dtype, kind, name, inner):
    Case(kind, dtype, (name, inner), "mask_sequences", (3, 2, 3)).check(device)


@pytest.mark.parametrize("scenario", ["last_output", "mask_go_backwards_dropout_U_sequences"])
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_passes_with_softmax(device, dtype, kind, scenario):
    """Softmax over each row's units at each step (Keras 0.3 allows it as the cell's
    activation): the rows are finished after the per-unit passes."""
    Case(kind, dtype, ("softmax", "hard_sigmoid"), scenario, (3, 2, 3)).check(device)


#: The parallel passes are a prange loop over blocks of rows calling the serial pass,
#: which Numba compiles into the loop again (6 to 9 s a pass): float32 in the test
#: command, float64 with the extended checks (the float64 serial passes run above).
BLOCK_DTYPES = [np.float32, pytest.param(np.float64, marks=pytest.mark.extended)]


@pytest.mark.parametrize("blocks", ["one_per_thread", "one_row_each"])
@pytest.mark.parametrize("dtype", BLOCK_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_cpu_passes_in_blocks_of_rows(monkeypatch, dtype, kind, blocks):
    """The CPU's parallel passes (forced, whatever the size rule says): 5 rows in blocks
    of 2 and 3 on two threads, and a block of one row each (more blocks than threads)."""
    monkeypatch.setattr(recurrent_cpu, "use_parallel", lambda count, cost: True)
    if blocks == "one_row_each":
        monkeypatch.setattr(recurrent_cpu, "row_block_count", lambda batch: batch)
    case = Case(
        kind, np.dtype(dtype), ("tanh", "sigmoid"), "mask_go_backwards_dropout_U_sequences",
        (3, 5, 40),
    )  # fmt: skip
    case.check(get_device("cpu"))


@pytest.mark.parametrize("name", ["tanh", "softmax"])
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_blocks_take_several_rows_and_threads_several_units(kind, name):
    """More batch rows than the simulator's blocks, more units than their threads, and
    products deeper than one unrolled stretch of ``columns_dot``."""
    case = Case(
        kind, np.dtype(np.float32), (name, "sigmoid"), "mask_go_backwards_dropout_U_sequences",
        (2, 5, 17),
    )  # fmt: skip
    case.check(get_device("cuda"))


#: shared memory budgets of the sequence kernels (bytes), by what they leave in it for
#: the 17-unit float32 case below
SHARED_BUDGETS = {
    "operand_in_stretches": 20,  # the operand five units at a time, the weights from L2
    "operand_and_some_rows": 1200,  # a few leading rows of each slice of the weights
    "everything": 1 << 20,
}


@pytest.mark.parametrize("budget", list(SHARED_BUDGETS))
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_passes_keep_what_fits_in_shared_memory(monkeypatch, kind, budget):
    """The sequence kernels stage each product's operand and keep the leading rows of
    the recurrent weights in shared memory, as much as the budget allows: a stretch of
    the operand at a time, part of each depth slice, or all of both. Blocks of 16
    threads split the depth of the narrower products into slices deeper than a
    stretch of ``columns_dot``'s unrolled loop."""
    monkeypatch.setattr(recurrent_cuda, "SIMULATOR_SHARED_BYTES", SHARED_BUDGETS[budget])
    monkeypatch.setattr(recurrent_cuda, "SEQUENCE_THREADS", 16)
    case = Case(
        kind, np.dtype(np.float32), ("tanh", "sigmoid"), "mask_go_backwards_dropout_U_sequences",
        (2, 3, 17),
    )  # fmt: skip
    case.check(get_device("cuda"))


@pytest.mark.parametrize(
    ("shapes", "itemsize", "expected"),
    [
        # a 128-unit GRU forward pass, float32, on a 227 KB GPU: everything fits, after
        # the results (6 slices of U_zr's 256 columns) and the 128 elements of the operand
        (((128, 256), (128, 128)), 4, (1536, (22, 11), (1664, 1664 + 6 * 22 * 256), 209408)),
        # its float64 twin: the same share (half) of every slice of both weights
        (((128, 256), (128, 128)), 8, (1536, (11, 5), (1664, 1664 + 6 * 11 * 256), 209920)),
        # a 128-unit LSTM forward pass: 36 of each 43-row slice of U, the rest from L2
        (((128, 512),), 4, (1536, (36,), (1664,), 227840)),
        # an operand longer than the budget: staged a stretch at a time, no weights
        (((100_000, 8),), 4, (192 * 8, (0,), (1536 + 56_576,), 232448)),
    ],
)
def test_shared_memory_plan(shapes, itemsize, expected):
    available = 232448  # an H100's or H200's opt-in shared memory a block
    threads = recurrent_cuda.GPU_SEQUENCE_THREADS
    results = recurrent_cuda.product_results(shapes, threads)
    layout = recurrent_cuda.plan_shared(shapes, itemsize, available - results * itemsize, threads)
    assert (layout.results, layout.rows, layout.offsets, layout.bytes) == expected
    assert layout.bytes <= available


#: the device versions of :func:`recurrent_cuda.block_product` and
#: :func:`recurrent_cuda.load_head` that :func:`block_products_kernel` calls, bound by
#: :func:`compiled_block_products`
multiply: Any = None
keep_head: Any = None


def block_products_kernel(a, M, out, results_length, staged_length, head_rows, head_at):
    """``out = a @ M`` a row at a time, by :func:`recurrent_cuda.block_product` as the
    sequence kernels call it."""
    kept = cuda.shared.array(0, numba.float64)
    results, head = kept[:results_length], kept[head_at:]
    staged = kept[results_length : results_length + staged_length]
    keep_head(M, head, head_rows, a.shape[1], out.shape[1])
    for row in range(a.shape[0]):
        multiply(a, row, M, head, head_rows, staged, False, out.shape[1], results, 0.0)
        for column in range(cuda.threadIdx.x, out.shape[1], cuda.blockDim.x):
            out[row, column] = results[column]
        cuda.syncthreads()


@functools.cache
def compiled_block_products():
    """:func:`block_products_kernel`, compiled once (on a GPU, for every case), with the
    recurrent family built first, which binds the module's ``cuda``."""
    operations(get_device("cuda"), np.dtype(np.float64))
    kernels = CudaKernels(cuda=cuda, dtype=np.dtype(np.float64))
    bound = {
        **globals(),
        "multiply": kernels.device(recurrent_cuda.block_product),
        "keep_head": kernels.device(recurrent_cuda.load_head),
    }
    code = block_products_kernel.__code__
    return cuda.jit(types.FunctionType(code, bound, code.co_name))


@pytest.mark.parametrize("budget", ["operand_in_stretches", "half_the_weights", "everything"])
@pytest.mark.parametrize("threads", [8, 16])
@pytest.mark.parametrize("depth,columns", [(1, 1), (5, 5), (9, 2), (4, 13), (23, 7), (6, 33)])
def test_block_products_match_numpy(depth, columns, threads, budget):
    """The step products alone, on widths whose sets of columns end short of their
    last columns in each way, one block sharing them (with slices of the depth where
    the sets are few), with the operand and the weights in shared memory or not."""
    products = compiled_block_products()
    rng = np.random.default_rng(depth * 100 + columns)
    a, M = rng.standard_normal((2, depth)), rng.standard_normal((depth, columns))
    bytes_for = {"operand_in_stretches": 24, "half_the_weights": 4 * depth * columns + 8 * depth}
    layout = recurrent_cuda.plan_shared(
        ((depth, columns),), 8, bytes_for.get(budget, 1 << 20), threads
    )
    out = np.full((2, columns), UNTOUCHED)
    products[1, threads, 0, layout.bytes](
        a, M.ravel(), out, layout.results, layout.staged, layout.rows[0], layout.offsets[0]
    )
    np.testing.assert_allclose(out, a @ M, rtol=1e-12, atol=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 5000), st.integers(1, 5000)), min_size=1, max_size=2),
    st.sampled_from([4, 8]),
    st.integers(8, 240_000),
    st.sampled_from([8, 384, 512]),
)
def test_shared_memory_plans_stay_within_their_budget(shapes, itemsize, budget, threads):
    """Whatever the sizes: the products' results, then the operand stretch and the
    heads within the budget, side by side, and a head keeps at most each depth slice's
    rows; the slices cover the depth, none of them empty, with a thread for each set of
    columns of each."""
    layout = recurrent_cuda.plan_shared(tuple(shapes), itemsize, budget, threads)
    slices = [recurrent_cuda.depth_slices(depth, columns, threads) for depth, columns in shapes]
    assert layout.results == max(
        groups * columns for (groups, _), (_, columns) in zip(slices, shapes, strict=True)
    )
    assert 1 <= layout.staged <= max(depth for depth, _ in shapes)
    assert layout.bytes <= budget + layout.results * itemsize
    end = layout.results + layout.staged
    for (depth, columns), rows, offset in zip(shapes, layout.rows, layout.offsets, strict=True):
        groups, share = recurrent_cuda.depth_slices(depth, columns, threads)
        assert (groups - 1) * share < depth <= groups * share
        assert groups == 1 or groups * recurrent_cuda.column_sets(columns) <= threads
        assert 0 <= rows <= share and offset == end
        end += groups * rows * columns
    assert end * itemsize == layout.bytes


def test_shared_memory_plan_refuses_no_room():
    with pytest.raises(ValueError, match="at least 8 bytes of shared memory beyond"):
        recurrent_cuda.plan_shared(((3, 12),), 8, 7, 8)


@pytest.mark.parametrize("kind", KINDS)
def test_softmax_rows_in_parallel_blocks_of_rows(monkeypatch, kind):
    """The softmax cell in the CPU's parallel blocks of rows."""
    monkeypatch.setattr(recurrent_cpu, "use_parallel", lambda count, cost: True)
    case = Case(
        kind, np.dtype(np.float32), ("softmax", "sigmoid"), "mask_go_backwards_dropout_U_sequences",
        (3, 5, 40),
    )  # fmt: skip
    case.check(get_device("cpu"))


# ---------------------------------------------------------------- backpropagation through time

#: a sequence of 4 steps: steps are masked in the middle and at either end
SEQUENCE_MASK = np.array([[1, 1], [1, 0], [0, 1], [1, 0]], dtype=np.float64)


class Layer:
    """A recurrent layer's forward and backward passes, as the layer does them: NumPy
    matrix products around the sequence operations, float64 on the CPU, time-major."""

    def __init__(self, kind, name, inner, masked, go_backwards):
        self.kind = kind
        self.ops = operations(get_device("cpu"), np.dtype(np.float64))
        steps = SEQUENCE_MASK.shape[0]
        order = np.arange(steps)[::-1].copy() if go_backwards else np.arange(steps)
        mask, has_mask = (SEQUENCE_MASK, 1) if masked else (np.zeros((1, 1)), 0)
        codes = ACTIVATION_CODES[name], ACTIVATION_CODES[inner]
        self.steps = Steps(order, mask, has_mask, np.zeros((1, 1)), 0, *codes)

    def forward(self, x, w, u, b):
        """All outputs ``h_all (T, B, H)``; what backward needs is kept on ``self``."""
        steps, batch, features = x.shape
        hidden = u.shape[0]
        xw = (x.reshape(steps * batch, features) @ w + b).reshape(steps, batch, -1)
        arrays = {
            "xw": xw,
            "h0": np.zeros((batch, hidden)),
            "c0": np.zeros((batch, hidden)),
            "U": u,
            "U_zr": u[:, : 2 * hidden].copy(),
            "U_h": u[:, 2 * hidden :].copy(),
            "gates_all": np.zeros_like(xw),
            "dpre_zr_all": np.zeros((steps, batch, 2 * hidden)),
        }
        fields = SEQUENCE[self.kind]._fields
        self.sequence = SEQUENCE[self.kind](
            **{name: arrays.get(name, np.zeros((steps, batch, hidden))) for name in fields}
        )
        getattr(self.ops, f"{self.kind}_sequence_forward")(self.steps, self.sequence)
        return self.sequence.h_all

    def backward(self, x, w, grad_h_all):
        """``dx, dW, dU, db`` from the gradient of every output."""
        steps, batch, features = x.shape
        hidden = grad_h_all.shape[2]
        dpre_all = np.zeros((steps, batch, w.shape[1]))
        zeros = np.zeros((batch, hidden))
        gradients = Gradients(grad_h_all, 1, dpre_all, zeros, zeros.copy())
        getattr(self.ops, f"{self.kind}_sequence_backward")(self.steps, self.sequence, gradients)
        dpre = dpre_all.reshape(steps * batch, -1)
        h_prev = self.sequence.h_prev_all.reshape(steps * batch, hidden)
        if self.kind == "gru":  # U_h multiplies r * h_prev, not h_prev; the products' operands
            # are the contiguous copies of dpre's columns that the backward pass wrote
            rh = self.sequence.rh_all.reshape(steps * batch, hidden)
            dpre_zr = self.sequence.dpre_zr_all.reshape(steps * batch, 2 * hidden)
            dpre_h = self.sequence.dpre_h_all.reshape(steps * batch, hidden)
            du = np.hstack([h_prev.T @ dpre_zr, rh.T @ dpre_h])
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
        ("rnn", "softmax", "linear"),
        ("lstm", "softmax", "hard_sigmoid"),
        ("gru", "softmax", "sigmoid"),
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
    layer = Layer(kind, name, inner, masked, go_backwards)

    def loss():
        return float(np.sum(layer.forward(x, w, u, b) * projection))

    loss()
    analytic = layer.backward(x, w, projection)
    for label, values, gradient in zip(("x", "W", "U", "b"), (x, w, u, b), analytic, strict=True):
        numerical = central_differences(loss, values)
        assert np.abs(numerical).max() > 1e-3, label  # the check is not vacuous
        np.testing.assert_allclose(gradient, numerical, rtol=1e-6, atol=1e-8, err_msg=label)
