"""Every catalogue layer, on every device and dtype, through the same checks."""

from __future__ import annotations

import re

import numpy as np
import pytest

from numlayers.layers import deserialize
from numlayers.testing import gradient_check, tolerance
from numlayers.testing.catalogue import CATALOGUE, LayerCase

CASES = [pytest.param(case, id=case.id) for case in CATALOGUE]


def make_layer(case: LayerCase, device, dtype):
    return case.make(dtype=dtype).to(device)


def run(layer, x, train):
    return layer.device.to_host(layer.forward(layer.prepare_input(x), train)).copy()


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_numpy_reference(case, device, dtype):
    layer = make_layer(case, device, dtype)
    x = case.sample(dtype)
    weights = [w.astype(np.float64) for w in layer.get_weights()]
    expected = case.reference(x.astype(np.float64) if x.dtype.kind == "f" else x, weights)
    got = run(layer, x, case.train)
    assert got.dtype == dtype
    assert got.shape == expected.shape == (x.shape[0], *layer.output_shape[1:])
    np.testing.assert_allclose(got, expected, **tolerance(dtype))


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0].gradient_check])
def test_backward_matches_float64_finite_differences(case):
    layer = make_layer(case, "cpu", np.float64)
    reports = gradient_check(layer, case.sample(), train=case.train)
    weights = [f"weight '{name}'" for name in layer.weight_names()]
    expected_arguments = (["input"] if case.input_gradient else []) + weights
    assert [report.argument for report in reports] == expected_arguments


@pytest.mark.parametrize("case", CASES)
def test_cuda_matches_cpu_forward_and_backward(case, dtype):
    cpu_layer = make_layer(case, "cpu", dtype)
    cuda_layer = make_layer(case, "cuda", dtype)
    cuda_layer.set_weights(cpu_layer.get_weights())
    x = case.sample(dtype)
    np.testing.assert_allclose(
        run(cuda_layer, x, case.train), run(cpu_layer, x, case.train), **tolerance(dtype)
    )
    grad = np.random.default_rng(5).standard_normal((x.shape[0], *cpu_layer.output_shape[1:]))
    grad = grad.astype(dtype)
    grads = {}
    for name, layer in (("cpu", cpu_layer), ("cuda", cuda_layer)):
        grad_x = layer.backward(layer.device.asarray(grad))
        grad_x = [] if grad_x is None else [layer.device.to_host(grad_x).copy()]
        grads[name] = [*grad_x, *layer.get_gradients()]
    for got, expected in zip(grads["cuda"], grads["cpu"], strict=True):
        np.testing.assert_allclose(got, expected, **tolerance(dtype))


@pytest.mark.parametrize("case", CASES)
def test_config_round_trip(case):
    layer = make_layer(case, "cpu", np.float64)
    config = layer.get_config()
    rebuilt = deserialize(config)
    assert type(rebuilt) is type(layer)
    assert rebuilt.get_config() == config
    rebuilt.set_weights(layer.get_weights())
    x = case.sample()
    np.testing.assert_array_equal(run(rebuilt, x, case.train), run(layer, x, case.train))


@pytest.mark.parametrize("case", CASES)
def test_bad_inputs_raise_errors_naming_the_layer(case, device):
    layer = make_layer(case, device, np.float32)
    x = layer.prepare_input(case.sample(np.float32))
    host = layer.device.to_host(x)
    wrong_rank = host.reshape(-1)
    wrong_size = np.concatenate([host, host], axis=-1)
    with pytest.raises(ValueError, match=layer.name):
        layer.forward(layer.device.asarray(wrong_rank))
    with pytest.raises(ValueError, match=layer.name):
        layer.forward(layer.device.asarray(wrong_size))
    wrong_dtype = host.astype(np.float64 if host.dtype != np.float64 else np.float32)
    with pytest.raises(TypeError, match=layer.name):
        layer.forward(layer.device.asarray(wrong_dtype))
    with pytest.raises(TypeError, match=layer.name):
        layer.forward(host.tolist())


@pytest.mark.parametrize("case", CASES)
def test_hostile_layouts_empty_batches_and_nan_inputs(case, device):
    """Views the kernels cannot read, empty batches and odd dtypes get errors naming the
    layer; ``layer(x)`` copies any layout; a NaN input gives the reference's NaNs."""
    layer = make_layer(case, device, np.float32)
    host = layer.device.to_host(layer.prepare_input(case.sample(np.float32)))
    if device.name == "cpu" and len(host) > 1:  # CUDA arrays are made contiguous when moved
        for view in (host[::-1], np.broadcast_to(host[:1], host.shape)):
            with pytest.raises(ValueError, match=f"{layer.name}.*C-contiguous"):
                layer.forward(view)
        np.testing.assert_allclose(
            layer(host[::-1]), run(layer, np.ascontiguousarray(host[::-1]), False), rtol=1e-6
        )
    with pytest.raises(ValueError, match=f"{layer.name}.*empty batch"):
        layer.forward(layer.device.asarray(host[:0]))
    # the layer, or for a container the inner layer that received it, is named
    names = "|".join(re.escape(owner.name) for owner in [layer, *layer.weight_layers()])
    for dtype in (np.complex64, np.str_):
        with pytest.raises(TypeError, match=names):
            layer(host.astype(dtype))
    y = run(layer, host, case.train)
    with pytest.raises(ValueError, match=layer.name):
        layer.backward(layer.device.asarray(np.ones((*y.shape[:-1], y.shape[-1] + 1), "float32")))
    if host.dtype.kind == "f":
        poisoned = host.copy()
        poisoned.flat[0] = np.nan
        with np.errstate(invalid="ignore"):
            expected = case.reference(poisoned.astype(np.float64), layer.get_weights())
        result = run(layer, poisoned, case.train)
        np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
