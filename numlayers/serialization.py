"""What a configuration may name, and how loading finds it: loading runs no code.

A Lambda's function is saved in its config as a reference: ``"module:qualname"`` for a
module-level function (a lambda or closure cannot be named, so the config keeps the
object itself; nothing is ever saved as bytecode). Loading turns a reference back into
a function only through what the program allowed:

1. ``custom_objects`` given to the loader (by the reference or by the bare name);
2. the functions registered with :func:`register_function`.

Anything else is refused with an error naming the entry, so a config that names
``builtins:exec`` or ``os:system`` cannot run them. ``safe_mode=False`` (given to
:func:`numlayers.layers.deserialize` or a model's ``from_config``) also looks the
reference up among modules already imported: only for files you trust. Loading never
imports a module, and never calls a function to learn a shape (a built Lambda saves
its output shape).

Example:
    >>> @register_function
    ... def double(x):
    ...     return 2 * x
    >>> function_reference(double) == f"{__name__}:double"
    True
    >>> resolve_function(function_reference(double), "example") is double
    True
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, overload

#: functions a config may name, by reference (``"module:qualname"`` or a chosen name)
REGISTERED_FUNCTIONS: dict[str, Callable[..., Any]] = {}

#: whether loading refuses references outside ``custom_objects`` and the registry
_SAFE_MODE: contextvars.ContextVar[bool] = contextvars.ContextVar("safe_mode", default=True)

#: how deep layer configs may nest (a Merge of Sequentials of Merges...)
MAX_CONFIG_DEPTH = 64
_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("config_depth", default=0)


@contextmanager
def nested_config(what: str) -> Iterator[None]:
    """Load one level of nested configs inside the block, refusing configs nested past
    :data:`MAX_CONFIG_DEPTH` (a hostile file would otherwise exhaust the stack)."""
    depth = _DEPTH.get()
    if depth >= MAX_CONFIG_DEPTH:
        raise ValueError(f"config of {what} nests layers more than {MAX_CONFIG_DEPTH} deep")
    token = _DEPTH.set(depth + 1)
    try:
        yield
    finally:
        _DEPTH.reset(token)


@overload
def register_function(function: Callable[..., Any], *, name: str | None = None) -> Any: ...


@overload
def register_function(
    function: None = None, *, name: str | None = None
) -> Callable[[Callable[..., Any]], Any]: ...


def register_function(function: Any = None, *, name: str | None = None) -> Any:
    """Allow configs to name ``function`` (a decorator, with or without ``name=``).

    It is registered under its ``"module:qualname"`` reference, and under ``name``
    when given (saved configs then use that name).
    """

    def register(target: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(target):
            raise TypeError(f"register_function: expected a function, received {target!r}")
        reference = _module_reference(target)
        if name is None and reference is None:
            raise ValueError(
                f"register_function: {target!r} has no module-level name; give it one "
                "with register_function(name=...)"
            )
        for key in (reference, name):
            if key is not None:
                REGISTERED_FUNCTIONS[key] = target
        if name is not None:
            target.__numlayers_name__ = name  # type: ignore[attr-defined]
        return target

    return register if function is None else register(function)


def _module_reference(function: Callable[..., Any]) -> str | None:
    qualname = getattr(function, "__qualname__", "")
    module = getattr(function, "__module__", None)
    if module and qualname and "<" not in qualname:
        return f"{module}:{qualname}"
    return None


def function_reference(function: Callable[..., Any]) -> Any:
    """How a config names ``function``: its registered name, else ``"module:qualname"``
    for a module-level function, else the function object itself."""
    registered = getattr(function, "__numlayers_name__", None)
    if registered is not None and REGISTERED_FUNCTIONS.get(registered) is function:
        return registered
    return _module_reference(function) or function


@contextmanager
def safe_mode_scope(safe_mode: bool | None) -> Iterator[None]:
    """Load with ``safe_mode`` inside the block (None keeps the current setting)."""
    if safe_mode is None:
        yield
        return
    token = _SAFE_MODE.set(bool(safe_mode))
    try:
        yield
    finally:
        _SAFE_MODE.reset(token)


def resolve_function(
    reference: Any, owner: str, custom_objects: dict[str, Any] | None = None
) -> Callable[..., Any] | None:
    """Turn a config's function reference back into a function, running no code.

    ``owner`` names the config entry in errors (``"Lambda 'lambda_1'"``).
    """
    if reference is None or callable(reference):
        return reference
    if not isinstance(reference, str):
        raise TypeError(f"{owner}: expected a function reference, received {reference!r}")
    bare_name = reference.split(":", 1)[-1]
    for key in (reference, bare_name):
        if custom_objects and key in custom_objects:
            return _callable(custom_objects[key], reference, owner)
    if reference in REGISTERED_FUNCTIONS:
        return REGISTERED_FUNCTIONS[reference]
    if _SAFE_MODE.get():
        raise ValueError(
            f"{owner}: the config names function {reference!r}, which is neither in "
            "custom_objects nor registered with numlayers.register_function; loading runs "
            "no other code (pass safe_mode=False only for a file you trust)"
        )
    return _imported_function(reference, owner)


def _imported_function(reference: str, owner: str) -> Callable[..., Any]:
    """``safe_mode=False``: the function among modules already imported."""
    if ":" not in reference:
        raise ValueError(f"{owner}: expected 'module:qualname', received {reference!r}")
    module_name, qualname = reference.split(":", 1)
    target: Any = sys.modules.get(module_name)
    if target is None:
        raise ValueError(
            f"{owner}: function {reference!r} is in a module that is not imported; import it "
            "first or pass it in custom_objects (configs never import code themselves)"
        )
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return _callable(target, reference, owner)


def _callable(found: Any, reference: str, owner: str) -> Callable[..., Any]:
    if not callable(found):
        raise ValueError(f"{owner}: {reference!r} does not name a function")
    return found


__all__ = [
    "REGISTERED_FUNCTIONS",
    "function_reference",
    "nested_config",
    "register_function",
    "resolve_function",
    "safe_mode_scope",
]
