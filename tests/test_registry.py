"""The layer catalogue is the registry of layers: every layer has a row, a benchmark and
an export.

Which classes count: every public subclass of :class:`~numlayers.layers.base.Layer`
defined in a module of ``numlayers/layers/`` (each registers itself in ``LAYER_CLASSES``
when defined; here they are read from the modules, so a module ``numlayers.layers``
forgets to import is seen too), and every one ``numlayers.layers`` exports.
Base classes that nobody instantiates are listed in :data:`BASE_CLASSES` with the
reason, and need nothing.

Each concrete exported layer class must have:

- a row in :data:`numlayers.testing.catalogue.CATALOGUE`: a row whose ``make()``
  builds a layer of exactly that class (a wrapper row counts for the wrapper only);
- a benchmark: a benchmark class in ``asv_benchmarks/benchmarks/bench_*.py`` names it
  in its ``layer_classes`` class attribute (a tuple of layer classes).
  ``bench_catalogue.CatalogueBench`` times every catalogue row and names each row's
  class, so a layer with a row is benchmarked; a layer the catalogue cannot express
  needs a hand-written benchmark that names it.

And every layer class defined in ``numlayers/layers/*.py`` must be in
``numlayers.layers.__all__``. Known gaps are in :data:`NO_CATALOGUE_ROW_YET` and
:data:`NO_BENCHMARK_YET`: their tests are strict xfails, so closing a gap fails
until its entry is removed.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest
from test_benchmarks import benchmark_classes

import numlayers.layers
from numlayers.layers.base import Layer
from numlayers.testing.catalogue import CATALOGUE

#: layer classes that are bases of others, not layers a user builds: no row, benchmark
#: or export needed
BASE_CLASSES = {
    "Layer": "the abstract base of every layer",
    "FullyConnected": "the shared options of Dense, MaxoutDense and Highway",
    "TrainingNoise": "the shared seeding of Dropout, GaussianNoise and GaussianDropout",
    "Recurrent": "the shared base of SimpleRNN, GRU and LSTM, with no cell of its own",
    "ParametricActivation": "the base of activations with parameters (LeakyReLU), which "
    "name their function",
    "TrainableActivation": "the base of activations with trainable per-feature parameters "
    "(PReLU, ParametricSoftplus, SReLU), which name their kernels",
    "WeightsOfInnerLayers": "the base of the wrappers: weights are those of the wrapped layers",
    "SharedApplication": "one application of a shared layer, made by Graph.add_shared_node "
    "and Siamese",
}

#: exported layers without a catalogue row, and why
NO_CATALOGUE_ROW_YET = {
    "MergeNode": "merges several inputs; a catalogue row feeds one array",
    "Merge": "merges several Sequential branches; a catalogue row feeds one array",
    "Siamese": "applies a layer to several Sequential branches; a catalogue row feeds one array",
    "LambdaMerge": "a function of several branches' outputs; a catalogue row feeds one array",
}

#: exported layers no benchmark names in ``layer_classes``, and why
NO_BENCHMARK_YET = {
    "Merge": "no benchmark of its own (its merge is MergeNode's)",
}


def _layer_modules() -> list[ModuleType]:
    package = numlayers.layers
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
    ]


def _defined_layer_classes() -> dict[str, type[Layer]]:
    """Public Layer subclasses defined in numlayers/layers/*.py, by name."""
    return {
        cls.__name__: cls
        for module in _layer_modules()
        for cls in vars(module).values()
        if inspect.isclass(cls)
        and issubclass(cls, Layer)
        and cls.__module__ == module.__name__
        and not cls.__name__.startswith("_")
    }


def _exported_layer_classes() -> dict[str, type[Layer]]:
    """The Layer subclasses in ``numlayers.layers.__all__``, by name."""
    exported = {name: getattr(numlayers.layers, name) for name in numlayers.layers.__all__}
    return {
        name: obj
        for name, obj in exported.items()
        if inspect.isclass(obj) and issubclass(obj, Layer)
    }


DEFINED = _defined_layer_classes()
EXPORTED = _exported_layer_classes()
CONCRETE_EXPORTED = sorted(set(EXPORTED) - set(BASE_CLASSES))


def _per_layer(names: list[str], known_gaps: dict[str, str]) -> list[object]:
    """One pytest param per layer name; known gaps are strict xfails."""
    return [
        pytest.param(
            name,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=known_gaps[name])]
            if name in known_gaps
            else [],
        )
        for name in names
    ]


def test_class_lists_name_real_classes() -> None:
    """Every name in the lists above is a layer class, so no entry outlives its class."""
    for name in [*BASE_CLASSES, *NO_CATALOGUE_ROW_YET, *NO_BENCHMARK_YET]:
        assert name in DEFINED, f"{name} is listed in tests/test_registry.py but not defined"
    assert "Dense" in CONCRETE_EXPORTED and "LSTM" in CONCRETE_EXPORTED


def test_catalogue_ids_are_unique() -> None:
    ids = [case.id for case in CATALOGUE]
    duplicates = sorted({case_id for case_id in ids if ids.count(case_id) > 1})
    assert not duplicates, f"catalogue ids used by more than one row: {duplicates}"


@pytest.mark.parametrize("name", sorted(set(DEFINED) - set(BASE_CLASSES)))
def test_layer_class_is_exported(name: str) -> None:
    assert name in numlayers.layers.__all__, (
        f"{DEFINED[name].__module__}.{name} is a layer but not in numlayers.layers.__all__"
    )
    assert getattr(numlayers.layers, name) is DEFINED[name]


@functools.cache
def _catalogued_layer_classes() -> set[type[Layer]]:
    return {case.layer_class() for case in CATALOGUE}


@functools.cache
def _benchmarked_layer_classes() -> set[type[Layer]]:
    return {
        layer_class
        for bench in benchmark_classes()
        for layer_class in getattr(bench, "layer_classes", ())
    }


@pytest.mark.parametrize("name", _per_layer(CONCRETE_EXPORTED, NO_CATALOGUE_ROW_YET))
def test_layer_has_catalogue_row(name: str) -> None:
    assert EXPORTED[name] in _catalogued_layer_classes(), (
        f"{name} has no row in numlayers/testing/catalogue.py: add a LayerCase that makes "
        "one, with a NumPy reference"
    )


@pytest.mark.parametrize("name", _per_layer(CONCRETE_EXPORTED, NO_BENCHMARK_YET))
def test_layer_has_benchmark(name: str) -> None:
    assert EXPORTED[name] in _benchmarked_layer_classes(), (
        f"no benchmark in asv_benchmarks/benchmarks names {name} in its layer_classes"
    )
