"""Keras 0.3's import paths for names that live in other numlayers modules.

Keras 0.3 kept Flatten, Reshape, Merge and the other shape and merge layers in
``keras.layers.core``, and the pooling, up-sampling and padding layers in
``keras.layers.convolutional``; its scripts import them from there. The numlayers
modules of those names answer for them on first use, through a module
``__getattr__`` made by :func:`forwarded_names`, so ``from numlayers.layers.core
import Flatten`` works as the Keras 0.3 import did, and no module imports another
that imports it back.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def forwarded_names(
    module: str, own: dict[str, Any], homes: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``module``'s ``__getattr__``, ``__dir__`` and ``__all__``: each name of ``homes``
    comes from the ``"package.module:attribute"`` it names (``own`` is the module's
    globals). ``__all__`` (what ``from module import *`` takes, as Keras 0.3 scripts
    sometimes wrote) is the module's own public classes and functions and those names.
    """
    public = [
        name
        for name, value in own.items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module
    ]

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        path, attribute = home.split(":")
        return getattr(importlib.import_module(path), attribute)

    def __dir__() -> list[str]:
        return sorted({*own, *homes})

    return __getattr__, __dir__, sorted({*public, *homes})


def homes_in(path: str, *names: str) -> dict[str, str]:
    """``{name: "path:name"}``: names kept under the same name in module ``path``."""
    return {name: f"{path}:{name}" for name in names}
