"""The GPU check (``python -m numlayers.testing.gpu_check``) as a smoke run in the simulator:
every case runs at tiny sizes and prints its row, with n/a for PyTorch. On a GPU,
run the check itself instead."""

from __future__ import annotations

import numpy as np
import pytest

from numlayers.devices import simulator_enabled
from numlayers.testing import gpu_check

pytestmark = pytest.mark.skipif(
    not simulator_enabled(), reason="on a GPU, run python -m numlayers.testing.gpu_check"
)


def test_the_gpu_check_runs_every_case_at_smoke_sizes_without_torch(capsys):
    assert gpu_check.main(["--smoke", "--no-tests"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    cases = [line.split(" | ")[0][2:] for line in table[1:]]
    for expected in ("GEMM", "relu", "tanh", "sigmoid", "device-to-device", "MLP", "LSTM", "GRU",
                     "Conv2D", "Lambda"):  # fmt: skip
        assert any(case.startswith(expected) for case in cases), (expected, table)
    assert not any("error" in line for line in table), table
    for tiling in gpu_check.candidate_tilings():
        assert any(case.startswith(f"GEMM 5 x 5 (Numba GEMM, {tiling} ") for case in cases)
    mlp = next(line for line in table if line.startswith("| MLP"))
    # a training step copies the batch in and the loss out, and never synchronises
    assert "1 to host, 2 to device, 0 syncs" in mlp


def test_the_gpu_check_gives_numpy_2_5_its_row_stack_back_for_numba_cuda(monkeypatch, tmp_path):
    monkeypatch.delattr(np, "row_stack", raising=False)
    gpu_check.restore_row_stack()
    assert getattr(np, "row_stack") is np.vstack  # noqa: B009 (ruff would rename it)
    environment = gpu_check.test_environment(str(tmp_path))
    assert "NUMBA_ENABLE_CUDASIM" not in environment  # the tests' conftest then finds the GPU
    assert environment["PYTHONPATH"].split(":")[0] == str(tmp_path)
    assert "row_stack = numpy.vstack" in (tmp_path / "sitecustomize.py").read_text()


def test_the_gpu_check_reads_pytest_counts_and_refuses_unknown_cases():
    output = "FAILED tests/a.py::test_x\n1 failed, 718 passed, 12 skipped, 9 deselected in 80s"
    assert gpu_check.summary_line(output) == "1 failed, 718 passed, 12 skipped"
    with pytest.raises(SystemExit):
        gpu_check.parse_arguments(["--cases", "gemm,nonsense"])


def test_the_profile_option_names_kernels_plainly_and_needs_torch(capsys):
    mangled = (
        "numlayers::kernels::recurrent::cuda::build_cuda::_3clocals_3e::lstm_backward_kernel"
        "[abi:v50][abi:cw51cXTLSUwv1sDUaKthqaNgoKmjgEhasCBDCg1bcEDrKABNtAWlPG]"
    )
    assert gpu_check.kernel_name(mangled) == "recurrent::cuda::build_cuda::lstm_backward_kernel"
    assert gpu_check.kernel_name("void cutlass::Kernel2<sgemm_128x64>(Params)") == (
        "void cutlass::Kernel2<sgemm_128x64>"
    )
    assert gpu_check.main(["--smoke", "--no-tests", "--cases", "gemm", "--profile"]) == 0
    assert "--profile needs torch" in capsys.readouterr().out
