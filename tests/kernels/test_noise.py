"""Gaussian noise kernels and layers: Box-Muller normals from the dropout hash."""

from __future__ import annotations

import math

import numpy as np
import pytest

import numlayers
from numlayers.devices import get_device
from numlayers.kernels import dropout
from numlayers.layers import GaussianDropout, GaussianNoise, deserialize

SEEDS = [0, 12345, 2**63 - 1]


def reference_normals(seed, size):
    """Box-Muller in float64 NumPy from the uniforms of indices 2i and 2i+1."""
    bits = np.array(
        [dropout.random_bits(np.uint64(seed), np.uint64(i)) for i in range(2 * size)],
        dtype=np.float64,
    )
    u = (bits + 1) / dropout.RANDOM_RANGE
    return np.sqrt(-2 * np.log(u[0::2])) * np.cos(2 * np.pi * u[1::2])


def seed_array(device, seed):
    """``seed`` as the kernels take it: a one-element uint64 array on ``device``."""
    return device.asarray(np.array([seed], np.uint64))


def noise_of(device, dtype, operation, x, seed, parameter):
    out = device.empty(x.shape, dtype)
    kernel = getattr(device.kernels(dtype), operation)
    kernel(device.asarray(x.astype(dtype)), seed_array(device, seed), parameter, out)
    return device.to_host(out)


def test_uniforms_are_exact_and_in_the_half_open_unit_interval(dtype):
    c = dropout.normal_constants(dtype)
    for bits in (0, 1, 4095, 4096, 2**24 - 1):
        high = np.int16((bits + 1) >> 12)
        low = np.int16((bits + 1) & 0xFFF)
        u = high * c.high_scale + low * c.low_scale
        assert u.dtype == dtype
        assert float(u) == (bits + 1) / 2**24


@pytest.mark.parametrize("seed", SEEDS)
def test_normals_match_the_box_muller_reference(device, dtype, seed):
    z = noise_of(device, dtype, "gaussian_noise_forward", np.zeros((3, 5)), seed, 1.0)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(z.reshape(-1), reference_normals(seed, 15), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("seed", SEEDS)
def test_cpu_and_cuda_noise_agree(dtype, seed):
    x = np.linspace(-1, 1, 24).reshape(4, 6)
    for operation, parameter in (
        ("gaussian_noise_forward", 0.7),
        ("gaussian_dropout_forward", 0.5),
    ):
        cpu = noise_of(get_device("cpu"), dtype, operation, x, seed, parameter)
        cuda = noise_of(get_device("cuda"), dtype, operation, x, seed, parameter)
        rtol = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(cpu, cuda, rtol=rtol, atol=rtol)
        assert not np.array_equal(cpu, x.astype(dtype))


def test_noise_statistics_on_a_large_cpu_array():
    cpu = get_device("cpu")
    x = np.full(20_000, 3.0)
    added = noise_of(cpu, np.dtype(np.float32), "gaussian_noise_forward", x, 7, 0.5)
    assert abs(added.mean() - 3.0) < 0.02
    assert abs(added.std() - 0.5) < 0.02
    std = math.sqrt(0.3 / 0.7)
    multiplied = noise_of(cpu, np.dtype(np.float32), "gaussian_dropout_forward", x, 8, std)
    assert abs(multiplied.mean() - 3.0) < 0.05
    assert abs(multiplied.std() - 3.0 * std) < 0.05
    # the two uniforms of a pair are independent: consecutive normals are uncorrelated
    z = (added - 3.0) / 0.5
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.03


def test_gaussian_dropout_backward_multiplies_by_the_forward_noise(device):
    layer = GaussianDropout(0.4, seed=3, input_shape=(30,), dtype="float64").to(device)
    x = np.random.default_rng(0).uniform(1, 2, (2, 30))
    y = device.to_host(layer.forward(device.asarray(x), train=True)).copy()
    multiplier = y / x
    assert 0.3 < multiplier.std() < 1.5
    grad = np.random.default_rng(1).standard_normal((2, 30))
    grad_x = device.to_host(layer.backward(device.asarray(grad)))
    np.testing.assert_allclose(grad_x, grad * multiplier, rtol=1e-12)


def test_gaussian_noise_backward_is_the_identity(device):
    layer = GaussianNoise(0.5, seed=3, input_shape=(6,), dtype="float64").to(device)
    x = np.ones((2, 6))
    y = device.to_host(layer.forward(device.asarray(x), train=True))
    assert not np.array_equal(y, x)
    grad = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(device.to_host(layer.backward(device.asarray(grad))), grad)


@pytest.mark.parametrize("cls", [GaussianNoise, GaussianDropout])
def test_identity_when_not_training(device, cls):
    layer = cls(0.5, input_shape=(5,)).to(device)
    x = np.random.default_rng(2).standard_normal((3, 5)).astype("float32")
    np.testing.assert_array_equal(device.to_host(layer.forward(device.asarray(x))), x)
    grad = np.ones((3, 5), "float32")
    np.testing.assert_array_equal(device.to_host(layer.backward(device.asarray(grad))), grad)


@pytest.mark.parametrize("cls", [GaussianNoise, GaussianDropout])
def test_set_seed_and_seed_argument_are_reproducible(cls):
    x = np.ones((2, 8), "float32")

    def draw(**kwargs):
        layer = cls(0.5, input_shape=(8,), **kwargs)
        first = layer.forward(x, train=True).copy()
        return first, layer.forward(x, train=True).copy()

    numlayers.set_seed(5)
    a = draw()
    numlayers.set_seed(5)
    b = draw()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # each pass draws new noise
    np.testing.assert_array_equal(draw(seed=9)[0], draw(seed=9)[0])


def test_configs_round_trip():
    for layer in (GaussianNoise(0.25, seed=4), GaussianDropout(0.2, seed=4)):
        config = layer.get_config()
        copy = deserialize(config)
        assert type(copy) is type(layer)
        assert copy.get_config() == config
    assert GaussianNoise(0.25).get_config()["sigma"] == 0.25
    assert GaussianDropout(0.2, seed=np.random.default_rng(0)).get_config()["seed"] is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GaussianNoise(-0.1), "GaussianNoise layer .*sigma"),
        (lambda: GaussianNoise(math.inf), "GaussianNoise layer .*sigma"),
        (lambda: GaussianNoise("0.1"), "GaussianNoise layer .*sigma"),
        (lambda: GaussianDropout(1.0), "GaussianDropout layer .*p must"),
        (lambda: GaussianDropout(-0.5), "GaussianDropout layer .*p must"),
        (lambda: GaussianDropout(True), "GaussianDropout layer .*p must"),
    ],
)
def test_bad_arguments_name_the_layer(make, message):
    with pytest.raises(ValueError, match=message):
        make()
