"""Convolution kernels: the CPU's stride-1 paths against its patches, its chunks and
parallel blocks against one serial pass, which inputs take which path, CUDA's split-K
weight gradient and 32-bit index splits, and the workspaces (the catalogue checks the
rest)."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import get_device
from numlayers.kernels import blas, build_family
from numlayers.kernels.convolutional import ConvolutionGeometry
from numlayers.kernels.convolutional import cpu as convolution_cpu
from numlayers.kernels.convolutional import cuda as convolution_cuda
from numlayers.kernels.toolkit import SIMULATOR
from numlayers.testing import tolerance

#: "th", same, 3 x 2 filter, strides (1, 2): every border of both axes is crossed
GEOMETRY = ConvolutionGeometry(
    "th", channels=2, rows=4, cols=5, filters=3, kernel_rows=3, kernel_cols=2,
    out_rows=4, out_cols=3, stride_cols=2, pad_rows=1, pad_cols=0,
)  # fmt: skip


def passes(device, dtype, geometry, samples, seed=0):
    """Forward output and the three gradients of a random convolution, on the host."""
    device = get_device(device)
    ops = build_family("convolutional", device, np.dtype(dtype))
    rng = np.random.default_rng(seed)
    g = geometry
    x = rng.standard_normal((samples, g.channels, g.rows, g.cols))
    weight = rng.standard_normal((g.filters, g.channels, g.kernel_rows, g.kernel_cols))
    bias = rng.standard_normal(g.filters)
    grad_out = rng.standard_normal((samples, g.filters, g.out_rows, g.out_cols))
    if g.layout == "tf":  # the same arrays, channels last
        x, weight, grad_out = (
            x.transpose(0, 2, 3, 1),
            weight.transpose(2, 3, 1, 0),
            grad_out.transpose(0, 2, 3, 1),
        )
        x, weight, grad_out = (np.ascontiguousarray(a) for a in (x, weight, grad_out))
    x, weight, bias, grad_out = (
        device.asarray(a.astype(dtype)) for a in (x, weight, bias, grad_out)
    )
    outputs = [device.zeros(tuple(a.shape), np.dtype(dtype)) for a in (grad_out, x, weight, bias)]
    out, grad_x, grad_weight, grad_bias = outputs
    workspace = device.empty((ops["convolution_workspace"](g, samples),), np.dtype(dtype))
    ops["convolution_forward"](x, weight, bias, out, out, g, workspace, "linear")
    ops["convolution_backward"](
        x, weight, out, out, grad_out, grad_out, grad_x, grad_weight, grad_bias, g, workspace,
        True, "linear",
    )  # fmt: skip
    return [device.to_host(a).copy() for a in outputs]


#: the CPU's paths: patches (strides above 1), rows of channels (channels last at
#: stride 1) in chunks of samples, and shifted images ("th" at stride 1) in thread blocks
CHUNKED = [
    pytest.param(GEOMETRY, "chunk_size", id="patches-th"),
    pytest.param(GEOMETRY._replace(layout="tf"), "chunk_size", id="patches-tf"),
    pytest.param(
        GEOMETRY._replace(layout="tf", stride_cols=1, out_cols=5, pad_cols=0),
        "rows_chunk",
        id="rows-tf",
    ),
]
SHIFTED = GEOMETRY._replace(stride_cols=1, out_cols=5, pad_cols=0)
#: Convolution1D, 128 features (it takes the patches whatever its features)
STEPS = ConvolutionGeometry(
    "steps", channels=128, rows=6, cols=1, filters=3, kernel_rows=3, kernel_cols=1,
    out_rows=6, out_cols=1, dilation_rows=2, pad_rows=2,
)  # fmt: skip


@pytest.fixture
def direct_paths(monkeypatch):
    """The stride-1 paths for the tests' few channels (they take 16 and more)."""
    monkeypatch.setattr(convolution_cpu, "DIRECT_MIN_CHANNELS", 1)


def test_cpu_stride_one_paths_take_images_of_many_channels_and_conv1d_the_patches():
    many = SHIFTED._replace(channels=16)
    assert convolution_cpu.shifted_path(many)
    assert convolution_cpu.rows_path(many._replace(layout="tf"))
    for geometry in (many._replace(channels=1), many._replace(stride_rows=2)):
        assert not convolution_cpu.direct_path(geometry)
    assert not convolution_cpu.shifted_path(STEPS) and not convolution_cpu.rows_path(STEPS)


@pytest.mark.parametrize(
    "geometry",
    [
        pytest.param(SHIFTED, id="shifted-th"),
        pytest.param(SHIFTED._replace(layout="tf"), id="rows-tf"),
    ],
)
def test_cpu_stride_one_paths_match_the_patches(monkeypatch, geometry):
    # the catalogue's layers have few channels, so they check the patches
    monkeypatch.setattr(convolution_cpu, "DIRECT_MIN_CHANNELS", 1)
    assert convolution_cpu.shifted_path(geometry) or convolution_cpu.rows_path(geometry)
    direct = passes("cpu", np.float64, geometry, samples=3)
    monkeypatch.setattr(convolution_cpu, "DIRECT_MIN_CHANNELS", geometry.channels + 1)
    patches = passes("cpu", np.float64, geometry, samples=3)
    for got, expected in zip(direct, patches, strict=True):
        np.testing.assert_allclose(got, expected, **tolerance(np.float64))


@pytest.mark.parametrize(("geometry", "chunk"), CHUNKED)
def test_cpu_chunks_of_samples_match_one_chunk(direct_paths, monkeypatch, geometry, chunk):
    assert not convolution_cpu.shifted_path(geometry)
    assert convolution_cpu.rows_path(geometry) == (chunk == "rows_chunk")
    whole = passes("cpu", np.float64, geometry, samples=3)
    monkeypatch.setattr(convolution_cpu, "CHUNK_ELEMENTS", 1)  # a sample per product
    assert getattr(convolution_cpu, chunk)(geometry, 3) == 1
    for got, expected in zip(passes("cpu", np.float64, geometry, samples=3), whole, strict=True):
        np.testing.assert_allclose(got, expected, **tolerance(np.float64))


@pytest.mark.extended  # compiles the parallel block loop: CI runs it apart
def test_cpu_stride_one_blocks_on_threads_match_one_block(direct_paths, monkeypatch):
    assert convolution_cpu.shifted_path(SHIFTED)
    serial = passes("cpu", np.float64, SHIFTED, samples=3)
    monkeypatch.setattr(blas, "SERIAL_WORK", 0)  # every product is worth the threads now
    monkeypatch.setattr(blas, "THREADS", 2)
    assert convolution_cpu.cpu_blocks(SHIFTED, 3) == 2
    parallel = passes("cpu", np.float64, SHIFTED, samples=3)
    for got, expected in zip(parallel, serial, strict=True):
        np.testing.assert_allclose(got, expected, **tolerance(np.float64))


@pytest.mark.extended  # compiles the parallel patch moves: CI runs it apart
@pytest.mark.parametrize(
    "geometry",
    [
        pytest.param(GEOMETRY, id="patches-th"),
        pytest.param(GEOMETRY._replace(layout="tf"), id="patches-tf"),
        pytest.param(STEPS, id="steps"),
    ],
)
def test_cpu_patch_moves_on_threads_match_the_serial_ones(monkeypatch, geometry):
    serial = passes("cpu", np.float64, geometry, samples=3)
    monkeypatch.setattr(convolution_cpu, "PATCH_VALUE_COST", float(1 << 40))
    on_threads = passes("cpu", np.float64, geometry, samples=3)
    for got, expected in zip(on_threads, serial, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_cuda_weight_gradient_split_into_depth_slices_matches_cpu(monkeypatch):
    # 4 samples of 12 positions: 48 products per weight, cut into 3 slices of 16 by the
    # simulator's tiles (a GPU's 64 x 64 tiles keep so short a depth whole)
    monkeypatch.setattr(convolution_cuda, "WEIGHT_GRADIENT_BLOCKS", 64)
    tiles = np.prod(convolution_cuda.tiles(GEOMETRY.filters, GEOMETRY.depth + 1))
    assert convolution_cuda.split_depth(int(tiles), 48)[0] == (3 if SIMULATOR else 1)
    cuda = passes("cuda", np.float64, GEOMETRY, samples=4)
    cpu = passes("cpu", np.float64, GEOMETRY, samples=4)
    for got, expected in zip(cuda, cpu, strict=True):
        np.testing.assert_allclose(got, expected, **tolerance(np.float64))


def test_workspace_is_sized_per_path_on_cpu_and_empty_on_cuda(direct_paths):
    cpu = build_family("convolutional", get_device("cpu"), np.dtype(np.float32))
    cuda = build_family("convolutional", get_device("cuda"), np.dtype(np.float32))
    g = GEOMETRY  # patches (K, S P) and the outputs (F, S P) of the chunk
    assert cpu["convolution_workspace"](g, 2) == (g.depth + g.filters) * 2 * g.positions
    padded = (4 + 2) * (5 + 1) + 1  # (Hp, Wp) = (OH + 2, OW + 1), one value more
    taps = 3 * 2 * g.filters * g.channels  # the taps' (F, C) weights, and their sums
    per_block = 2 * g.channels * padded + g.filters * 4 * 6 + taps
    assert cpu["convolution_workspace"](SHIFTED, 2) == taps + per_block
    assert cuda["convolution_workspace"](g, 64) == 0


def test_cuda_index_split_matches_the_cpu_split_up_to_32_bits():
    from numlayers.kernels.convolutional.geometry import MAX_SPLIT, split, split_unsigned

    rng = np.random.default_rng(3)
    values = [0, 1, 2, MAX_SPLIT - 1, MAX_SPLIT - 2, *rng.integers(0, MAX_SPLIT, 40)]
    sizes = [1, 2, 3, 7, 1024, MAX_SPLIT - 1, *rng.integers(1, 1 << 20, 40)]
    for value in values:
        for size in sizes:
            expected = split(int(value), int(size))
            assert tuple(int(v) for v in split_unsigned(int(value), int(size))) == expected


def test_cuda_convolution_refuses_indices_its_32_bit_splits_would_wrap():
    # 2 samples of 48,000 x 48,000 positions: 4.6e9 > 2**32. The check comes before any
    # array is read, so the arrays can be tiny.
    device = get_device("cuda")
    ops = build_family("convolutional", device, np.dtype(np.float32))
    huge = GEOMETRY._replace(rows=48_000, cols=48_000, out_rows=48_000, out_cols=48_000)
    x = device.zeros((2, 2, 1, 1), np.dtype(np.float32))
    weight = device.zeros((3, 2, 3, 2), np.dtype(np.float32))
    bias = device.zeros((3,), np.dtype(np.float32))
    out = device.zeros((2, 3, 1, 1), np.dtype(np.float32))
    empty = device.empty((0,), np.dtype(np.float32))
    with pytest.raises(ValueError, match="convolution: 4608000000 positions"):
        ops["convolution_forward"](x, weight, bias, out, out, huge, empty, "linear")
    with pytest.raises(ValueError, match="use a smaller batch"):
        ops["convolution_backward"](
            x, weight, out, out, out, out, x, weight, bias, huge, empty, True, "linear"
        )
