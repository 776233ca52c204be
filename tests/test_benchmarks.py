"""Every asv benchmark runs once on tiny sizes, so a broken benchmark fails CI.

The suite in ``asv_benchmarks/benchmarks`` is imported with
``NUMLAYERS_BENCH_TINY=1`` (under a private package name, so nothing else called
``benchmarks`` can shadow it); each benchmark method of each class runs for
every parameter combination through setup, the method and teardown, as asv
would. A setup that raises NotImplementedError is asv's "skipped" (CUDA without
a GPU, torch not installed) and is fine here too. Neither asv nor torch is needed.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE_DIR = ROOT / "asv_benchmarks" / "benchmarks"
PACKAGE = "numlayers_asv_suite"
#: asv's prefixes of benchmark methods
BENCHMARK_METHOD = re.compile(r"^(time|timeraw|track|mem|peakmem)_")


def _load_suite() -> list[ModuleType]:
    """Import the suite in tiny mode; returns its benchmark modules."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NUMLAYERS_BENCH_TINY", "1")
        spec = importlib.util.spec_from_file_location(
            PACKAGE, SUITE_DIR / "__init__.py", submodule_search_locations=[str(SUITE_DIR)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
        modules = [
            importlib.import_module(f"{PACKAGE}.{path.stem}")
            for path in sorted(SUITE_DIR.glob("bench_*.py"))
        ]
    assert importlib.import_module(f"{PACKAGE}.common").TINY
    return modules


MODULES = _load_suite()


def benchmark_classes() -> list[type]:
    """The suite's benchmark classes, the way asv discovers them (``tests/test_registry.py``
    reads their ``layer_classes``)."""
    return [
        cls
        for module in MODULES
        for class_name, cls in vars(module).items()
        if not class_name.startswith("_")
        and inspect.isclass(cls)
        and cls.__module__ == module.__name__
        and not inspect.isabstract(cls)
        and any(BENCHMARK_METHOD.match(name) for name in dir(cls))
    ]


def _benchmarks() -> list[Any]:
    """One pytest param per (class, benchmark method)."""
    cases = []
    for cls in benchmark_classes():
        short = cls.__module__.rsplit(".", 1)[1]
        for method in sorted(name for name in dir(cls) if BENCHMARK_METHOD.match(name)):
            cases.append(pytest.param(cls, method, id=f"{short}.{cls.__name__}.{method}"))
    return cases


BENCHMARKS = _benchmarks()


def _combinations(cls: type) -> list[tuple[Any, ...]]:
    params = getattr(cls, "params", [])
    if not params:
        return [()]
    if not isinstance(params[0], list | tuple):
        params = [params]
    names = getattr(cls, "param_names", [])
    assert len(names) == len(params), f"{cls.__name__}: param_names do not match params"
    return list(itertools.product(*params))


def _run_raw(codes: list[str]) -> None:
    """Run ``timeraw_`` programs as asv does: inside timeit, each in a fresh interpreter.

    They run side by side: each pays an interpreter start and an import.
    """
    processes = []
    for code in codes:
        # asv pastes the code into a triple-quoted string: these would break it
        assert '"""' not in code and "\\" not in code
        compile(code, "<timeraw>", "exec")
        wrapper = f"import timeit\ntimeit.timeit(stmt={code!r}, number=1)\n"
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", wrapper],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr


def test_suite_is_found() -> None:
    names = {param.id for param in BENCHMARKS}
    for family in (
        "bench_core",
        "bench_reshaping",
        "bench_cold_start",
        "bench_gemm",
        "bench_catalogue",
    ):
        assert any(name.startswith(family + ".") for name in names), family
    assert "bench_core.DenseBench.time_backward" in names


@pytest.mark.parametrize(("cls", "method"), BENCHMARKS)
def test_benchmark_runs(cls: type, method: str) -> None:
    ran = 0
    raw_codes = []
    for params in _combinations(cls):
        instance = cls()
        try:
            if hasattr(instance, "setup"):
                instance.setup(*params)
        except NotImplementedError:
            continue  # asv: skipped
        result = getattr(instance, method)(*params)
        if method.startswith("timeraw_"):
            raw_codes.append(result)
        if hasattr(instance, "teardown"):
            instance.teardown(*params)
        ran += 1
    _run_raw(raw_codes)
    if cls.__name__ != "GemmBench":  # GPU (or simulator) only: may skip everywhere
        assert ran, f"{cls.__name__}.{method} was skipped for every parameter"


def test_compare_script_smoke() -> None:
    """compare.py runs end to end on tiny shapes (torch and GPU sections when available)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "asv_benchmarks" / "compare.py"), "--quick", "--tiny"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Dense" in result.stdout and "softmax" in result.stdout
    assert "smoke test" in result.stdout
