"""Every ``>>>`` example in numlayers' docstrings runs, and prints what it shows.

Each docstring with examples is one test, named by its object
(``numlayers.layers.core.Dense``). Examples are written the way a user reads
them after the README's imports, so besides their module's globals they see
``np``, every name of ``numlayers.layers`` and ``Sequential`` and ``Graph``.
CUDA examples, if any, run in the simulator that ``conftest.py`` enables.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
from typing import Any

import numpy as np
import pytest

import numlayers
import numlayers.layers
from numlayers.models import Graph, Sequential

#: what every example may use without importing it (the README's imports)
EXAMPLE_GLOBALS: dict[str, Any] = {
    "np": np,
    **{name: getattr(numlayers.layers, name) for name in numlayers.layers.__all__},
    "Sequential": Sequential,
    "Graph": Graph,
}


def _docstring_examples() -> list[doctest.DocTest]:
    """The docstrings with examples in every module of the numlayers package."""
    finder = doctest.DocTestFinder()
    modules = [numlayers] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(numlayers.__path__, f"{numlayers.__name__}.")
    ]
    return [
        test
        for module in modules
        for test in finder.find(module, extraglobs=EXAMPLE_GLOBALS)
        if test.examples
    ]


EXAMPLES = _docstring_examples()


def test_public_layers_have_examples() -> None:
    names = {test.name for test in EXAMPLES}
    for layer in ("core.Dense", "core.Activation", "embeddings.Embedding", "recurrent.LSTM"):
        assert f"numlayers.layers.{layer}" in names, f"{layer} has no docstring example"


@pytest.mark.parametrize("example", [pytest.param(test, id=test.name) for test in EXAMPLES])
def test_docstring_example(example: doctest.DocTest) -> None:
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(example, out=report.write)
    assert result.failed == 0, report.getvalue()
