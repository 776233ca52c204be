"""The CPU BLAS binding: gemm on views, transposes and beta; the block split; both BLAS."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from numlayers.kernels import blas

# (300, 40, 10): a narrow product in blocks (blas.NARROW_COLUMNS), as (5, 3, 7) is in one call
SHAPES = [
    (5, 3, 7), (1, 4, 3), (3, 1, 1), (70, 33, 300), (300, 40, 20), (300, 40, 10), (64, 600, 64)
]  # fmt: skip


def operands(m, k, n, transpose_a, transpose_b, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
    out = rng.standard_normal((m, n)).astype(dtype)
    return a, b, out


def reference(a, b, out, transpose_a, transpose_b, alpha, beta):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    product = (a64.T if transpose_a else a64) @ (b64.T if transpose_b else b64)
    return alpha * product + beta * out.astype(np.float64)


def product(a, b, out, transpose_a, transpose_b, alpha, beta):
    blas.product(a, b, out, transpose_a, transpose_b, alpha, beta)


@pytest.mark.parametrize("function", [blas.gemm, product], ids=["gemm", "product"])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_gemm_matches_numpy(function, transpose_a, transpose_b, shape, dtype):
    a, b, out = operands(*shape, transpose_a, transpose_b, dtype)
    expected = reference(a, b, out, transpose_a, transpose_b, 0.5, 2.0)
    function(a, b, out, transpose_a, transpose_b, 0.5, 2.0)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance * shape[1])


def test_beta_zero_ignores_nan_in_out():
    a, b, out = operands(4, 3, 5, False, False, np.float32)
    out[:] = np.nan
    blas.gemm(a, b, out, False, False, 1.0, 0.0)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5)


def test_zero_depth_scales_out():
    out = np.ones((3, 2))
    blas.gemm(np.empty((3, 0)), np.empty((0, 2)), out, False, False, 1.0, 3.0)
    np.testing.assert_array_equal(out, 3.0)
    blas.gemm(np.empty((3, 0)), np.empty((0, 2)), out, False, False, 1.0, 0.0)
    np.testing.assert_array_equal(out, 0.0)


def test_views_with_row_strides_write_only_their_block():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((10, 20)).astype(np.float32)
    b = rng.standard_normal((30, 40)).astype(np.float32)
    out = np.zeros((50, 60), np.float32)
    blas.gemm(a[2:7, 3:9], b[1:7, 5:13], out[10:15, 20:28], False, False, 1.0, 0.0)
    np.testing.assert_allclose(out[10:15, 20:28], a[2:7, 3:9] @ b[1:7, 5:13], rtol=1e-5)
    out[10:15, 20:28] = 0
    assert not out.any()


def test_strided_rows_are_refused():
    a = np.ones((4, 6))
    with pytest.raises(ValueError, match="contiguous"):
        blas.gemm(a[:, ::2], np.ones((3, 2)), np.empty((4, 2)), False, False, 1.0, 0.0)


@pytest.mark.parametrize(
    ("m", "n", "k", "expected"),
    [(2, 2, 2, 1), (32, 128, 128, 1), (64, 512, 128, 16), (256, 1024, 1024, blas.THREADS)],
)
def test_block_count(m, n, k, expected):
    if blas.THREADS < 2:
        expected = 1
    assert blas.block_count(m, n, k) == expected


def test_each_block_is_computed_once():
    """Every split of a product gives the unsplit result (blocks neither overlap nor miss)."""
    a, b, _ = operands(37, 19, 53, False, False, np.float64)
    for transpose_a in (False, True):
        left = np.ascontiguousarray(a.T) if transpose_a else a
        for blocks in (1, 2, 3, 5, 8):
            out = np.full((37, 53), 7.0)
            for block in range(blocks):
                blas.gemm_block(
                    left, b, out, transpose_a, False, 1.0, 1.0, block, blocks, np.empty(0)
                )
            np.testing.assert_allclose(out, a @ b + 7.0, rtol=1e-12)


@pytest.mark.parametrize("transpose_a", [False, True])
def test_narrow_products_on_every_thread(transpose_a, dtype):
    """A product of few columns large enough to be cut into blocks: the threads call the
    narrow BLAS (scipy's OpenBLAS beside MKL) at once, forward and weight-gradient
    shaped (``a.T @ b``, a classifier's last layer)."""
    m, k, n = 512, 1024, 10
    assert 1 < n < blas.NARROW_COLUMNS and blas.block_count(m, n, k) > 1
    a, b, out = operands(m, k, n, transpose_a, False, dtype)
    expected = reference(a, b, out, transpose_a, False, 1.0, 0.0)
    blas.product(a, b, out, transpose_a)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance * k)


@pytest.mark.parametrize("shape", [(3, 5, 4), (40, 300, 70), (300, 64, 50), (32, 128, 512)])
def test_product_with_bias(shape, dtype):
    m, k, n = shape
    a, b, _ = operands(m, k, n, False, False, dtype)
    bias = np.random.default_rng(2).standard_normal(n).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    blas.product(a, b, out, bias=bias)
    expected = reference(a, b, np.zeros((m, n)), False, False, 1.0, 0.0) + bias
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance * k)
    blas.product(a, b, out)
    np.testing.assert_allclose(out, expected - bias, rtol=tolerance, atol=tolerance * k)


def run_with_blas(script: str, choice: str = "default") -> str:
    """``script``'s standard output in a new interpreter with the ``choice`` of BLAS."""
    environment = dict(os.environ)
    environment.pop("NUMLAYERS_BLAS", None)
    if choice == "scipy":
        environment["NUMLAYERS_BLAS"] = "scipy"
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("choice", ["scipy", "default"])
def test_both_blas_libraries(choice):
    """The fallback (scipy's BLAS, on one thread) and the default give the same products,
    wide and narrow (the default sends narrow ones to scipy's OpenBLAS beside MKL)."""
    script = (
        "import numpy as np\n"
        "from numlayers.kernels import blas\n"
        "blas.use_one_blas_thread()\n"
        "rng = np.random.default_rng(0)\n"
        "a = rng.standard_normal((96, 80)).astype(np.float32)\n"
        "for columns in (120, 10, 1):\n"
        "    b = rng.standard_normal((80, columns)).astype(np.float32)\n"
        "    out = np.empty((96, columns), np.float32)\n"
        "    blas.product(a, b, out)\n"
        "    assert np.allclose(out, a @ b, rtol=1e-4, atol=1e-4)\n"
        "print(blas.BLAS_NAME, blas.NARROW_BLAS_NAME)\n"
    )
    name, narrow = run_with_blas(script, choice).split()
    if choice == "scipy":
        assert (name, narrow) == ("scipy", "scipy")
    else:
        assert (name, narrow) in {("mkl", "openblas"), ("mkl", "mkl"), ("scipy", "scipy")}


def test_numba_starts_without_importing_scipy_linalg_yet_np_dot_compiles():
    """numlayers answers Numba's start-up question (is there a BLAS for ``np.dot``?)
    without importing ``scipy.linalg``; Numba's own ``np.dot`` still works, and imports
    it then."""
    script = (
        "import sys\n"
        "import numba, numpy as np\n"
        "from numlayers.kernels import blas\n"
        "blas.gemm(np.ones((2, 3)), np.ones((3, 4)), np.empty((2, 4)), False, False, 1.0, 0.0)\n"
        "print(blas.BLAS_NAME, 'scipy.linalg' in sys.modules)\n"
        "dot = numba.njit(lambda a, b: np.dot(a, b))\n"
        "assert (dot(np.ones((2, 3)), np.ones((3, 4))) == 3).all()\n"
        "print('scipy.linalg' in sys.modules)\n"
    )
    (name, before), after = (line.split() for line in run_with_blas(script).splitlines())
    assert before == ("True" if name == "scipy" else "False")
    assert after == ["True"]
