"""The kernel toolkit: index loops on both devices, the parallel rule, the elementwise factory."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import get_device
from numlayers.kernels import toolkit
from numlayers.kernels.toolkit import (
    CpuLoop,
    Elementwise,
    cpu_index_loop,
    cpu_inline,
    elementwise_operations,
    use_parallel,
)


@cpu_inline
def scaled_copy_element(index, x, scale, out):
    out[index] = scale * x[index]


@cpu_inline
def outer_sum_element(row, column, a, b, out):
    out[row, column] = a[row] + b[column]


@cpu_inline
def cube(x, c, scale):
    return scale * x * x * x


@cpu_inline
def cube_derivative(x, y, c, scale):
    return scale * (c.two + c.one) * x * x


CUBE = Elementwise("toolkit_test_cube", cube, cube_derivative, (("scale", 2.0),))


def index_loop(device, body, argtypes, dims=1):
    if device.name == "cpu":
        return cpu_index_loop(body, dims=dims)
    kernels = toolkit.cuda_kernels(device.cuda, np.dtype(np.float64))
    return kernels.index_loop(body, argtypes, dims=dims)


def test_the_parallel_rule_weighs_count_by_cost():
    assert not use_parallel(toolkit.PARALLEL_MIN_WORK - 1)
    assert use_parallel(toolkit.PARALLEL_MIN_WORK)
    assert use_parallel(toolkit.PARALLEL_MIN_WORK // 4, cost=4.0)
    assert not use_parallel(toolkit.PARALLEL_MIN_WORK, cost=0.5)


def test_one_dimensional_index_loop_visits_every_index_once(device):
    import numba

    vector = numba.types.Array(numba.float64, 1, "C")
    loop = index_loop(device, scaled_copy_element, (vector, numba.float64, vector))
    x = np.arange(1, 1001, dtype=np.float64)
    out = device.asarray(np.zeros_like(x))
    loop(x.size - 1, device.asarray(x), 3.0, out)  # the count bounds the loop
    expected = 3.0 * x
    expected[-1] = 0.0
    np.testing.assert_array_equal(device.to_host(out), expected)


def test_two_dimensional_index_loop_strides_past_the_grid(device, monkeypatch):
    import numba

    # a grid far smaller than the index space: every thread must take several rows
    monkeypatch.setattr(toolkit, "MAX_BLOCKS", 2)
    monkeypatch.setattr(toolkit, "MAX_BLOCKS_Y", 1)
    vector = numba.types.Array(numba.float64, 1, "C")
    matrix = numba.types.Array(numba.float64, 2, "C")
    loop = index_loop(device, outer_sum_element, (vector, vector, matrix), dims=2)
    a, b = np.arange(37.0), 100 * np.arange(70.0)
    out = device.asarray(np.full((37, 70), -1.0))
    loop(37, 70, device.asarray(a), device.asarray(b), out)
    np.testing.assert_array_equal(device.to_host(out), a[:, None] + b[None, :])


def test_cpu_loop_picks_its_twin_by_the_rule(monkeypatch):
    def double_into(x, out):
        for i in range(out.size):  # prange in real loops; the choice is what is tested
            out[i] = 2 * x[i]

    loop = CpuLoop(double_into, "toolkit_test_double_into")
    calls = []
    monkeypatch.setattr(loop, "serial", lambda *a: calls.append("serial"))
    monkeypatch.setattr(loop, "parallel", lambda *a: calls.append("parallel"))
    small, large = np.zeros(8), np.zeros(toolkit.PARALLEL_MIN_WORK)
    loop(small, small)
    loop(large, large)
    assert calls == ["serial", "parallel"]


def test_elementwise_operations_take_parameters_with_defaults(device, dtype):
    cuda = None
    if device.name == "cuda":
        cuda = toolkit.cuda_kernels(device.cuda, dtype)
    operations = elementwise_operations(CUBE, dtype, cuda)
    x = np.linspace(-2, 2, 11).astype(dtype).reshape(1, 11)
    out = device.asarray(np.zeros_like(x))
    operations["toolkit_test_cube_forward"](device.asarray(x), out)  # default scale 2
    np.testing.assert_allclose(device.to_host(out), 2 * x.astype(np.float64) ** 3, rtol=1e-6)
    grad = device.asarray(np.zeros_like(x))
    ones = device.asarray(np.ones_like(x))
    operations["toolkit_test_cube_backward"](device.asarray(x), out, ones, grad, 0.5)
    np.testing.assert_allclose(device.to_host(grad), 1.5 * x.astype(np.float64) ** 2, rtol=1e-6)
    with pytest.raises(TypeError, match="takes 1 parameter"):
        operations["toolkit_test_cube_forward"](device.asarray(x), out, 1.0, 2.0)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_cuda_elementwise_loops_visit_each_index_below_the_count_once(direction, monkeypatch):
    # two blocks, so the unrolled loop's steps and its one-at-a-time tail both run, and
    # counts on either side of a step's end; the indices are unsigned, so an index that
    # went wrong would read far out of bounds rather than wrap to the array's end
    monkeypatch.setattr(toolkit, "MAX_BLOCKS", 2)
    device = get_device("cuda")
    dtype = np.dtype(np.float64)
    forward, backward = toolkit.cuda_elementwise_loops(
        CUBE, dtype, toolkit.cuda_kernels(device.cuda, dtype)
    )
    step = 2 * toolkit.BLOCK_SIZE * toolkit.ELEMENTS_IN_FLIGHT
    size = 2 * step + 3
    x = np.linspace(-1.5, 1.5, size)
    for count in (0, 1, step - 1, step, step + 1, 2 * step + 1):
        expected = np.full(size, -7.0)
        if direction == "forward":
            out = device.asarray(expected.copy())
            forward(count, device.asarray(x), out, 2.0)
            expected[:count] = 2.0 * x[:count] ** 3
        else:
            grad_out = np.linspace(0.5, 2.0, size)
            out = device.asarray(expected.copy())
            arrays = (device.asarray(a) for a in (x, 2.0 * x**3, grad_out))
            backward(count, *arrays, out, 2.0)
            expected[:count] = grad_out[:count] * 6.0 * x[:count] ** 2
        np.testing.assert_allclose(device.to_host(out), expected, rtol=1e-12, err_msg=str(count))


def halved(x):
    return x / 2


def nested_halved(x):
    return halved(x) + halved(x)


toolkit.cpu_inline_early(halved)
toolkit.cpu_inline_early(nested_halved)


def test_early_inlined_helpers_are_never_compiled_on_their_own():
    # cpu_inline_early's helpers go into their callers before type inference (nested
    # ones too); typed inlining would compile each to machine code first, on its own
    from numba import njit
    from numba.core import event

    compiled: list[str] = []

    class Listener(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            compiled.append(ev.data["dispatcher"].py_func.__name__)

        def on_end(self, ev: event.Event) -> None:
            pass

    @njit
    def caller(values):
        total = 0.0
        for value in values:
            total += nested_halved(value)
        return total

    with event.install_listener("numba:compile", Listener()):
        assert caller(np.arange(4.0)) == 6.0
    assert "caller" in compiled
    assert "halved" not in compiled and "nested_halved" not in compiled
    assert toolkit.cpu_inline_early(halved) is halved  # the plain function, for CUDA too
