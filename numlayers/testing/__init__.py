"""Public test helpers: tolerances, float64 gradient checks, threads that interleave
and the layer catalogue.

``gradient_check`` compares a layer's analytic gradients (its ``backward``)
with float64 central differences, for the input and for each weight, and
fails naming the layer, the argument and the worst index.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from numlayers.layers.base import Layer


def tolerance(dtype: Any) -> dict[str, float]:
    """``assert_allclose`` tolerances for comparing results computed in ``dtype``."""
    if np.dtype(dtype) == np.float32:
        return {"rtol": 2e-4, "atol": 2e-5}
    return {"rtol": 1e-9, "atol": 1e-11}


def run_interleaved(targets: Sequence[Callable[[], None]]) -> None:
    """Run each of ``targets`` on a thread of its own and wait for them all, Python
    switching threads between almost every bytecode meanwhile, so that a race shows."""
    threads = [threading.Thread(target=target) for target in targets]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)


class GradientCheckError(AssertionError):
    """An analytic gradient disagrees with finite differences."""


@dataclass
class GradientReport:
    """Worst disagreement of one argument: where, and by how much."""

    argument: str
    worst_index: tuple[int, ...]
    analytic: float
    numerical: float
    error: float


def _projection_loss(layer: Layer, x: np.ndarray, projection: np.ndarray, train: bool) -> float:
    """``sum(forward(x) * R)`` plus the layer's regularization penalties."""
    y = layer.device.to_host(layer.forward(layer.prepare_input(x), train))
    penalties = layer.device.zeros((1,), layer.dtype)
    layer.add_penalties(penalties)
    return float(np.sum(y.astype(np.float64) * projection) + layer.device.to_host(penalties)[0])


def gradient_check(
    layer: Layer,
    x: np.ndarray,
    *,
    train: bool = False,
    epsilon: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    seed: int = 0,
    check_input: bool = True,
) -> list[GradientReport]:
    """Check ``layer.backward`` against float64 central differences.

    The loss is ``sum(forward(x) * R)`` for a fixed random ``R``, so every
    output element contributes, plus the layer's regularization penalties (so
    activity and weight regularizer gradients are checked too). The layer must
    be float64 and built for ``x``; integer inputs (token ids) get no input check.

    Returns one report per argument ("input", then each weight by name); raises
    :class:`GradientCheckError` naming the layer, the argument and the worst
    index when ``|analytic - numerical| > atol + rtol * |numerical|`` anywhere.
    """
    if layer.dtype != np.float64:
        raise ValueError(f"gradient_check needs a float64 layer, {layer.label} is {layer.dtype}")
    x = np.array(x, dtype=np.float64 if np.asarray(x).dtype.kind == "f" else None)
    device = layer.device
    y = device.to_host(layer.forward(layer.prepare_input(x), train))
    projection = np.random.default_rng(seed).standard_normal(y.shape)
    grad_x = layer.backward(device.asarray(projection))
    layer.add_regularizer_gradients()
    analytic: dict[str, np.ndarray] = {}
    if check_input and grad_x is not None:
        analytic["input"] = np.array(device.to_host(grad_x), dtype=np.float64)
    weights = layer.get_weights()
    for name, grad in zip(layer.weight_names(), layer.get_gradients(), strict=True):
        analytic[f"weight '{name}'"] = grad

    def numerical_gradient(values: np.ndarray, evaluate: Any) -> np.ndarray:
        gradient = np.zeros_like(values)
        for index in np.ndindex(values.shape):
            original = values[index]
            values[index] = original + epsilon
            plus = evaluate()
            values[index] = original - epsilon
            minus = evaluate()
            values[index] = original
            gradient[index] = (plus - minus) / (2 * epsilon)
        return gradient

    numerical: dict[str, np.ndarray] = {}
    if "input" in analytic:
        numerical["input"] = numerical_gradient(
            x, lambda: _projection_loss(layer, x, projection, train)
        )
    for position, name in enumerate(layer.weight_names()):
        current = [w.copy() for w in weights]

        def evaluate(position: int = position, current: list[np.ndarray] = current) -> float:
            layer.set_weights(current)
            return _projection_loss(layer, x, projection, train)

        numerical[f"weight '{name}'"] = numerical_gradient(current[position], evaluate)
    layer.set_weights(weights)

    reports = []
    failures = []
    for argument, expected in numerical.items():
        got = analytic[argument]
        excess = np.abs(got - expected) - (atol + rtol * np.abs(expected))
        worst = tuple(int(i) for i in np.unravel_index(np.argmax(excess), excess.shape))
        report = GradientReport(
            argument,
            worst,
            float(got[worst]),
            float(expected[worst]),
            float(abs(got[worst] - expected[worst])),
        )
        reports.append(report)
        if excess[worst] > 0:
            failures.append(
                f"{layer.label}: gradient of {argument} is wrong at index {worst}: "
                f"analytic {report.analytic:.8g}, numerical {report.numerical:.8g}"
            )
    if failures:
        raise GradientCheckError("\n".join(failures))
    return reports
