"""Compile every CUDA kernel to PTX for the H100 (cc 9.0), with no GPU needed.

The CUDA simulator runs kernels as Python and checks no types, so this is what
proves the kernels compile, and that the float32 version of each does no float64
arithmetic (a bare float literal or a float64 helper would show up as ``.f64``
instructions). Run it where the simulator is off::

    python -m numlayers.testing.ptx_check [--dtype float32] [--families dense,matmul]

(by default every family in both dtypes).

It needs the CUDA toolkit packages of the ``[cuda]`` extra (NVVM), not a driver.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

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


class _CompileOnlyDevice(CUDADevice):
    """The CUDA device's builders, without asking for a GPU."""

    def __init__(self) -> None:
        Device.__init__(self)
        self.cuda = cuda_module()


def check_all_kernels(
    families: Sequence[str] = FAMILIES, dtypes: Sequence[np.dtype] = FLOAT_DTYPES
) -> list[PtxResult]:
    """Build ``families`` (by default every one) for ``dtypes`` (by default float32 and
    float64) and compile each of their kernels to PTX."""
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
        for name, (function, argtypes) in registry.kernels.items():
            key = (name, registry.dtype.name)
            if key in seen:
                continue
            seen.add(key)
            try:
                ptx, _ = device.cuda.compile_ptx(function, argtypes, cc=COMPUTE_CAPABILITY)
            except Exception as error:  # reported per kernel, so every failure shows at once
                results.append(
                    PtxResult(name, registry.dtype, f"{type(error).__name__}: {error}", 0)
                )
                continue
            count = len(FLOAT64_INSTRUCTION.findall(ptx))
            results.append(PtxResult(name, registry.dtype, None, count))
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
    arguments = parser.parse_args(argv)
    families = arguments.families.split(",") if arguments.families else FAMILIES
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    dtypes = [np.dtype(arguments.dtype)] if arguments.dtype else FLOAT_DTYPES
    results = check_all_kernels(families, dtypes)
    for result in results:
        status = "error" if result.error else f"{result.float64_instructions} f64 instructions"
        print(f"{result.kernel:40s} {result.dtype.name:8s} {status}")
    found = problems(results)
    print(f"{len(results)} kernels compiled for cc {COMPUTE_CAPABILITY}; {len(found)} problems")
    for line in found:
        print("PROBLEM:", line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
