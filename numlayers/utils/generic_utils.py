"""Keras 0.3's ``keras.utils.generic_utils``: :class:`Progbar` for a training loop of
the script's own, and the lookup helpers its modules shared."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any


def get_from_module(
    identifier: Any,
    module_params: dict[str, Any],
    module_name: str,
    instantiate: bool = False,
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """The entry of ``module_params`` (a module's ``globals()``, say) named
    ``identifier``, called with ``kwargs`` when ``instantiate``; anything but a string
    is returned as it is."""
    if not isinstance(identifier, str):
        return identifier
    found = module_params.get(identifier)
    if not found:
        raise ValueError(f"invalid {module_name}: {identifier!r}")
    if instantiate:
        return found(**(kwargs or {}))
    return found


def make_tuple(*args: Any) -> tuple[Any, ...]:
    return args


class Progbar:
    """A progress bar over ``target`` steps of a loop the script writes itself.

    ``update(current, values)`` moves it to step ``current``; ``add(n, values)`` moves
    it ``n`` steps on. ``values`` are ``(name, value)`` pairs; the bar shows each name's
    mean over the steps so far, each value weighted by the steps it came with (a batch's
    loss by its samples). ``verbose`` 1 draws a live bar, 2 prints one line when the
    target is reached, 0 nothing. ``sum_values[name]`` holds ``[weighted sum, steps]``.
    """

    def __init__(self, target: int, width: int = 30, verbose: int = 1) -> None:
        self.target = int(target)
        self.width = width
        self.verbose = verbose
        self.sum_values: dict[str, list[float]] = {}
        self.seen_so_far = 0
        self.start = time.time()
        self._bar: Any = None
        if verbose == 1:
            from tqdm import tqdm

            self._bar = tqdm(total=self.target, file=sys.stdout, ncols=80 + width, leave=True)

    def update(self, current: int, values: Iterable[tuple[str, float]] = ()) -> None:
        steps = current - self.seen_so_far
        for name, value in values:
            total = self.sum_values.setdefault(name, [0.0, 0])
            total[0] += float(value) * steps
            total[1] += steps
        self.seen_so_far = current
        if self._bar is not None:
            self._bar.set_postfix_str(self._means(), refresh=False)
            self._bar.update(current - self._bar.n)
            if current >= self.target:
                self._bar.close()
        elif self.verbose == 2 and current >= self.target:
            print(f"{time.time() - self.start:.0f}s - {self._means()}", flush=True)

    def add(self, n: int, values: Iterable[tuple[str, float]] = ()) -> None:
        self.update(self.seen_so_far + n, values)

    def means(self) -> dict[str, float]:
        """Each value's mean over the steps so far."""
        return {name: total / max(1, steps) for name, (total, steps) in self.sum_values.items()}

    def _means(self) -> str:
        return " - ".join(
            f"{name}: {mean:.4f}" if abs(mean) > 1e-3 else f"{name}: {mean:.4e}"
            for name, mean in self.means().items()
        )
