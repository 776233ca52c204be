"""Compile every CUDA kernel to PTX for the H100 (cc 9.0), with no GPU needed.

The CUDA simulator runs kernels as Python and checks no types, so this is what
proves the kernels compile, and that the float32 version of each does no float64
arithmetic (a bare float literal or a float64 helper would show up as ``.f64``
instructions). Run it where the simulator is off::

    python -m numlayers.testing.ptx_check [--dtype float32] [--families dense,matmul]

(by default every family in both dtypes). A kernel that declares its largest block
(``CudaKernels.jit(..., threads=, blocks_per_sm=)``) is compiled with that launch bound,
as on a GPU.

It needs the CUDA toolkit packages of the ``[cuda]`` extra (NVVM), not a driver.
``--ptxas`` also assembles each kernel with ``ptxas -v`` (from the CUDA toolkit, or
the ``nvidia-cuda-nvcc`` wheel) and prints its registers, spills and shared memory:
what sets its occupancy and whether it can launch, read without a GPU.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numlayers.devices import FLOAT_DTYPES, CUDADevice, Device, cuda_module, simulator_enabled
from numlayers.kernels import FAMILIES, build_family
from numlayers.kernels.toolkit import REGISTRIES

COMPUTE_CAPABILITY = (9, 0)
FLOAT64_INSTRUCTION = re.compile(r"^\s*[a-z][a-z0-9._]*\.f64\b", re.MULTILINE)


@dataclass
class PtxResult:
    kernel: str
    dtype: np.dtype
    error: str | None
    float64_instructions: int
    resources: str = ""  # ptxas -v's summary, with --ptxas


#: what ``ptxas -v`` says of a kernel's registers, spills and shared memory
PTXAS_FIGURES = re.compile(
    r"(\d+ bytes spill stores|\d+ bytes spill loads|Used \d+ registers|\d+ bytes smem)"
)


def find_ptxas() -> str | None:
    """``ptxas`` on the PATH, or the one the ``nvidia-cuda-nvcc`` wheel installs."""
    found = shutil.which("ptxas")
    if found is not None:
        return found
    installed = (sorted(Path(site).glob("nvidia/cu*/bin/ptxas")) for site in sys.path)
    return next((str(found[0]) for found in installed if found), None)


def ptxas_resources(ptxas: str, ptx: str) -> str:
    """``ptxas -v``'s figures for one kernel's PTX, assembled for the check's target."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        arch = "sm_{}{}".format(*COMPUTE_CAPABILITY)
        completed = subprocess.run(
            [ptxas, "-v", f"-arch={arch}", str(source), "-o", str(source.with_suffix(".o"))],
            capture_output=True,
            text=True,
            check=False,
        )
    if completed.returncode:
        return f"ptxas failed: {completed.stderr.strip()[:200]}"
    return ", ".join(PTXAS_FIGURES.findall(completed.stderr))


class _CompileOnlyDevice(CUDADevice):
    """The CUDA device's builders, without asking for a GPU."""

    def __init__(self) -> None:
        Device.__init__(self)
        self.cuda = cuda_module()


def check_all_kernels(
    families: Sequence[str] = FAMILIES,
    dtypes: Sequence[np.dtype] = FLOAT_DTYPES,
    ptxas: str | None = None,
) -> list[PtxResult]:
    """Build ``families`` (by default every one) for ``dtypes`` (by default float32 and
    float64) and compile each of their kernels to PTX (and, given ``ptxas``, assemble
    it for its resources)."""
    if simulator_enabled():
        raise RuntimeError("the PTX check needs the real numba.cuda: unset NUMBA_ENABLE_CUDASIM")
    device = _CompileOnlyDevice()
    REGISTRIES.clear()
    for dtype in dtypes:
        for family in families:
            build_family(family, device, dtype)
    results = []
    seen: set[tuple[str, str]] = set()
    for registry in REGISTRIES:
        for name, (function, argtypes, bound) in registry.kernels.items():
            key = (name, registry.dtype.name)
            if key in seen:
                continue
            seen.add(key)
            try:
                ptx, _ = device.cuda.compile_ptx(
                    function, argtypes, cc=COMPUTE_CAPABILITY, launch_bounds=bound
                )
            except Exception as error:  # reported per kernel, so every failure shows at once
                results.append(
                    PtxResult(name, registry.dtype, f"{type(error).__name__}: {error}", 0)
                )
                continue
            count = len(FLOAT64_INSTRUCTION.findall(ptx))
            resources = "" if ptxas is None else ptxas_resources(ptxas, ptx)
            results.append(PtxResult(name, registry.dtype, None, count, resources))
    return results


def problems(results: list[PtxResult]) -> list[str]:
    """Kernels that failed to compile, or float32 kernels with float64 instructions."""
    found = []
    for result in results:
        if result.error is not None:
            found.append(f"{result.kernel} [{result.dtype}]: does not compile: {result.error}")
        elif result.dtype == np.float32 and result.float64_instructions:
            found.append(
                f"{result.kernel} [float32]: {result.float64_instructions} float64 instructions"
            )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=[d.name for d in FLOAT_DTYPES], help="one dtype only")
    parser.add_argument("--families", help="comma-separated kernel families (default: all)")
    parser.add_argument(
        "--ptxas", action="store_true", help="also print each kernel's registers and spills"
    )
    arguments = parser.parse_args(argv)
    ptxas = find_ptxas() if arguments.ptxas else None
    if arguments.ptxas and ptxas is None:
        parser.error("--ptxas: no ptxas found (the CUDA toolkit, or pip install nvidia-cuda-nvcc)")
    families = arguments.families.split(",") if arguments.families else FAMILIES
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    dtypes = [np.dtype(arguments.dtype)] if arguments.dtype else FLOAT_DTYPES
    results = check_all_kernels(families, dtypes, ptxas)
    for result in results:
        status = "error" if result.error else f"{result.float64_instructions} f64 instructions"
        print(f"{result.kernel:40s} {result.dtype.name:8s} {status} {result.resources}".rstrip())
    found = problems(results)
    print(f"{len(results)} kernels compiled for cc {COMPUTE_CAPABILITY}; {len(found)} problems")
    for line in found:
        print("PROBLEM:", line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
