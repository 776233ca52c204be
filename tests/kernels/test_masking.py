"""Masking kernels: the Masking layer, time masks, masked-loss row weights, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import get_device
from numlayers.kernels import build_family, toolkit
from numlayers.testing import tolerance

RNG = np.random.default_rng(31)


def random(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def random_mask(shape, dtype):
    mask = RNG.integers(0, 2, size=shape).astype(dtype)
    mask.flat[0], mask.flat[-1] = 0, 1  # both values, whatever the draw
    return mask


def operations(device, dtype):
    return build_family("masking", device, np.dtype(dtype))


def reference_masking(x, mask_value):
    mask = np.any(x != x.dtype.type(mask_value), axis=-1).astype(x.dtype)
    return x * mask[..., None], mask


def run_masking_forward(device, dtype, x, mask_value):
    out = device.empty(x.shape, dtype)
    mask = device.empty(x.shape[:2], dtype)
    operations(device, dtype)["masking_forward"](device.asarray(x), mask_value, out, mask)
    return device.to_host(out), device.to_host(mask)


@pytest.mark.parametrize("mask_value", [0.0, 1.5, -2.0])
def test_masking_forward_masks_rows_equal_to_the_value(device, dtype, mask_value):
    x = random((3, 4, 3), dtype)
    value = dtype.type(mask_value)
    x[0, 1, :] = value  # masked
    x[2, 0, :] = value  # masked
    x[1, 2, :] = value
    x[1, 2, 1] = value + dtype.type(0.25)  # differs in one feature only: kept
    x[2, 3, :] = value
    x[2, 3, 2] = -value if value != 0 else dtype.type(1e-3)  # kept
    out, mask = run_masking_forward(device, dtype, x, mask_value)
    expected_out, expected_mask = reference_masking(x, mask_value)
    assert expected_mask[0, 1] == 0 and expected_mask[2, 0] == 0
    assert expected_mask[1, 2] == 1 and expected_mask[2, 3] == 1
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(out, expected_out)


def test_masking_forward_keeps_every_row_that_differs(device, dtype):
    x = random((2, 3, 2), dtype)  # no row equals 0 exactly
    out, mask = run_masking_forward(device, dtype, x, 0.0)
    np.testing.assert_array_equal(mask, np.ones((2, 3), dtype))
    np.testing.assert_array_equal(out, x)


def test_apply_time_mask_zeroes_masked_timesteps(device, dtype):
    x = random((3, 5, 2), dtype)
    mask = random_mask((3, 5), dtype)
    out = device.empty(x.shape, dtype)
    operations(device, dtype)["apply_time_mask"](device.asarray(x), device.asarray(mask), out)
    np.testing.assert_array_equal(device.to_host(out), x * mask[..., None])


def reference_row_scale(mask, sample_scale):
    return (mask * sample_scale[:, None] / mask.mean()).reshape(-1)


def run_mask_row_scale(device, dtype, mask, sample_scale):
    out = device.empty((mask.size,), dtype)
    operations(device, dtype)["mask_row_scale"](
        device.asarray(mask), device.asarray(sample_scale), out
    )
    return device.to_host(out)


# (20, 15) has more entries than the CUDA block has threads, so each thread sums several
@pytest.mark.parametrize("shape", [(3, 5), (1, 1), (20, 15)])
def test_mask_row_scale_divides_by_the_mean_of_the_mask(device, dtype, shape):
    mask = random_mask(shape, dtype) if shape != (1, 1) else np.ones(shape, dtype)
    sample_scale = RNG.uniform(0.5, 2.0, size=shape[0]).astype(dtype)
    got = run_mask_row_scale(device, dtype, mask, sample_scale)
    np.testing.assert_allclose(got, reference_row_scale(mask, sample_scale), **tolerance(dtype))


def test_mask_row_scale_of_an_all_zero_mask_is_zero(device, dtype):
    mask = np.zeros((3, 4), dtype)
    sample_scale = np.ones(3, dtype)
    got = run_mask_row_scale(device, dtype, mask, sample_scale)
    np.testing.assert_array_equal(got, np.zeros(12, dtype))


def test_combine_masks_all_keeps_timesteps_both_keep(device, dtype):
    mask_a = random_mask((4, 6), dtype)
    mask_b = random_mask((4, 6), dtype)
    out = device.empty(mask_a.shape, dtype)
    operations(device, dtype)["combine_masks_all"](
        device.asarray(mask_a), device.asarray(mask_b), out
    )
    expected = np.logical_and(mask_a == 1, mask_b == 1).astype(dtype)
    np.testing.assert_array_equal(device.to_host(out), expected)


def test_cpu_and_cuda_agree(dtype):
    x = random((2, 4, 3), dtype)
    x[1, 1, :] = 0
    mask = random_mask((2, 4), dtype)
    sample_scale = np.array([1.0, 3.0], dtype)
    results = []
    for device in (get_device("cpu"), get_device("cuda")):
        results.append(
            run_masking_forward(device, dtype, x, 0.0)
            + (run_mask_row_scale(device, dtype, mask, sample_scale),)
        )
    for cpu_result, cuda_result in zip(results[0], results[1], strict=True):
        np.testing.assert_allclose(cpu_result, cuda_result, **tolerance(dtype))


def test_cpu_serial_and_parallel_loops_agree(dtype, monkeypatch):
    cpu = get_device("cpu")
    x = random((16, 64, 40), dtype)
    x[3, 7, :] = 0.5
    x[15, 63, :] = 0.5
    time_mask = random_mask((16, 64), dtype)
    wide_a = random_mask((256, 200), dtype)
    wide_b = random_mask((256, 200), dtype)
    results = []
    for minimum in (0, 2**62):  # every loop parallel, then every loop serial
        monkeypatch.setattr(toolkit, "PARALLEL_MIN_WORK", minimum)
        ops = operations(cpu, dtype)
        out, mask = np.empty_like(x), np.empty(x.shape[:2], dtype)
        ops["masking_forward"](x, 0.5, out, mask)
        scaled = np.empty_like(x)
        ops["apply_time_mask"](x, time_mask, scaled)
        combined = np.empty_like(wide_a)
        ops["combine_masks_all"](wide_a, wide_b, combined)
        results.append((out, mask, scaled, combined))
    expected_out, expected_mask = reference_masking(x, 0.5)
    assert expected_mask.sum() == expected_mask.size - 2
    expected = (expected_out, expected_mask, x * time_mask[..., None], wide_a * wide_b)
    for result in results:
        for got, want in zip(result, expected, strict=True):
            np.testing.assert_array_equal(got, want)
