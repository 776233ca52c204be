"""The traced array: a stand-in for a NumPy array that records what is done to it.

A function written for NumPy (operators, ufuncs, NumPy functions, array methods,
slicing) is called once with :class:`Traced` arguments; every operation adds a node
to a :class:`~numlayers.tracing.program.Program` instead of computing. What a trace
cannot record raises :class:`~numlayers.tracing.program.TraceError` naming it: a
Python ``if`` on a traced value (``bool``), ``float()``, an unsupported NumPy function.

Example:
    >>> program = trace(lambda x: np.tanh(x).sum(axis=-1), [(None, 3)], np.float64)
    >>> program.nodes[-1].shape
    (None,)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from numlayers.tracing.program import (
    Program,
    Shape,
    TraceError,
    broadcast_shape,
    normalize_axes,
    probe_shape,
)


class BatchSize:
    """What ``x.shape[0]`` is while tracing: the batch size, unknown until a call.

    It can be handed back to ``reshape``; arithmetic on it, or using it as an int,
    is refused (the program must not depend on the batch size's value).
    """

    def __repr__(self) -> str:
        return "batch"

    def __index__(self) -> int:
        raise TraceError("the batch size used as a number (x.shape[0])")

    __int__ = __index__


BATCH = BatchSize()

# ufunc name -> (program operation, operand count)
UFUNCS: dict[str, tuple[str, int]] = {
    "add": ("add", 2),
    "subtract": ("sub", 2),
    "multiply": ("mul", 2),
    "true_divide": ("div", 2),
    "divide": ("div", 2),
    "power": ("pow", 2),
    "float_power": ("pow", 2),
    "maximum": ("maximum", 2),
    "minimum": ("minimum", 2),
    "fmax": ("maximum", 2),
    "fmin": ("minimum", 2),
    "greater": ("gt", 2),
    "greater_equal": ("ge", 2),
    "less": ("lt", 2),
    "less_equal": ("le", 2),
    "equal": ("eq", 2),
    "not_equal": ("ne", 2),
    "negative": ("neg", 1),
    "positive": ("copy", 1),
    "absolute": ("abs", 1),
    "fabs": ("abs", 1),
    "exp": ("exp", 1),
    "log": ("log", 1),
    "log1p": ("log1p", 1),
    "expm1": ("expm1", 1),
    "sqrt": ("sqrt", 1),
    "square": ("square", 1),
    "tanh": ("tanh", 1),
    "sin": ("sin", 1),
    "cos": ("cos", 1),
    "sign": ("sign", 1),
    "reciprocal": ("reciprocal", 1),
    "floor": ("floor", 1),
    "ceil": ("ceil", 1),
}


class Tracer:
    """Records operations into one program (the builder behind every Traced value)."""

    def __init__(self, dtype: Any) -> None:
        self.program = Program(np.dtype(dtype))
        self._scalars: dict[float, Traced] = {}

    # ------------------------------------------------------------- values
    def value(self, node: int) -> Traced:
        return Traced(self, node)

    def input(self, shape: Shape) -> Traced:
        node = self.program.add("input", (), (len(self.program.inputs),), shape)
        self.program.inputs.append(node)
        return self.value(node)

    def scalar(self, number: float) -> Traced:
        key = float(number)
        found = self._scalars.get(key)
        if found is None:
            found = self._scalars[key] = self.value(self.program.add("scalar", (), (key,), ()))
        return found

    def count(self, shape: Shape) -> Traced:
        """The number of elements of ``shape`` (known when the batch size is)."""
        if None not in shape:
            return self.scalar(float(math.prod(d for d in shape if d is not None)))
        return self.value(self.program.add("count", (), (tuple(shape),), ()))

    def lift(self, operand: Any, what: str) -> Traced:
        """``operand`` as a traced value: Python and NumPy numbers become scalars,
        NumPy arrays constants (in the program's dtype)."""
        if isinstance(operand, Traced):
            if operand.tracer is not self:
                raise TraceError(f"{what}: a value of another trace")
            return operand
        if isinstance(operand, bool | int | float | np.number | np.bool_):
            return self.scalar(float(operand))
        if isinstance(operand, np.ndarray | list | tuple):
            array = np.asarray(operand)
            if array.dtype.kind not in "biuf":
                raise TraceError(f"{what}: a constant of dtype {array.dtype}")
            if array.ndim == 0:
                return self.scalar(float(array))
            node = self.program.add("const", (), (), array.shape)
            self.program.constants[node] = np.ascontiguousarray(array, self.program.dtype)
            return self.value(node)
        raise TraceError(f"{what}: an operand of type {type(operand).__name__}")

    # ------------------------------------------------------------ records
    def elementwise(self, op: str, operands: Sequence[Any]) -> Traced:
        values = [self.lift(operand, op) for operand in operands]
        shape = broadcast_shape([v.shape_symbolic for v in values], op)
        return self.value(self.program.add(op, [v.node for v in values], (), shape))

    def record(
        self, op: str, operands: Sequence[Traced], attrs: Sequence[Any], shape: Shape
    ) -> Traced:
        return self.value(self.program.add(op, [v.node for v in operands], attrs, shape))


def _shape_argument(shape: Any) -> tuple[Any, ...]:
    if isinstance(shape, int | np.integer | BatchSize):
        return (shape,)
    return tuple(shape)


class Traced:
    """A value of a traced function: records, and never holds, an array."""

    __array_priority__ = 1000

    def __init__(self, tracer: Tracer, node: int) -> None:
        self.tracer = tracer
        self.node = node

    # -------------------------------------------------------- array facts
    @property
    def shape_symbolic(self) -> Shape:
        return self.tracer.program.nodes[self.node].shape

    @property
    def shape(self) -> tuple[Any, ...]:
        return tuple(BATCH if d is None else d for d in self.shape_symbolic)

    @property
    def ndim(self) -> int:
        return len(self.shape_symbolic)

    @property
    def dtype(self) -> np.dtype:
        return self.tracer.program.dtype

    @property
    def size(self) -> int:
        if None in self.shape_symbolic:
            raise TraceError("x.size (it depends on the batch size)")
        return math.prod(d for d in self.shape_symbolic if d is not None)

    def __repr__(self) -> str:
        return f"Traced(%{self.node}, shape={self.shape})"

    # ------------------------------------------- what a trace cannot record
    def __bool__(self) -> bool:
        raise TraceError("a Python if/and/or/not on a traced value (bool())")

    def __float__(self) -> float:
        raise TraceError("float() of a traced value")

    def __int__(self) -> int:
        raise TraceError("int() of a traced value")

    def __index__(self) -> int:
        raise TraceError("a traced value used as an index")

    def __len__(self) -> int:
        raise TraceError("len() of a traced value")

    def __iter__(self) -> Any:
        raise TraceError("iterating over a traced value")

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TraceError("conversion of a traced value to a NumPy array (np.asarray)")

    def tolist(self) -> Any:
        raise TraceError("tolist() of a traced value")

    def item(self, *args: Any) -> Any:
        raise TraceError("item() of a traced value")

    # ------------------------------------------------------------ operators
    def _binary(self, op: str, other: Any, reverse: bool = False) -> Traced:
        operands = (other, self) if reverse else (self, other)
        return self.tracer.elementwise(op, operands)

    def __add__(self, other: Any) -> Traced:
        return self._binary("add", other)

    def __radd__(self, other: Any) -> Traced:
        return self._binary("add", other, True)

    def __sub__(self, other: Any) -> Traced:
        return self._binary("sub", other)

    def __rsub__(self, other: Any) -> Traced:
        return self._binary("sub", other, True)

    def __mul__(self, other: Any) -> Traced:
        return self._binary("mul", other)

    def __rmul__(self, other: Any) -> Traced:
        return self._binary("mul", other, True)

    def __truediv__(self, other: Any) -> Traced:
        return self._binary("div", other)

    def __rtruediv__(self, other: Any) -> Traced:
        return self._binary("div", other, True)

    def __pow__(self, other: Any) -> Traced:
        return power(self, other)

    def __rpow__(self, other: Any) -> Traced:
        return power(other, self, self.tracer)

    def __matmul__(self, other: Any) -> Traced:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> Traced:
        return matmul(self.tracer.lift(other, "matmul"), self)

    def __neg__(self) -> Traced:
        return self.tracer.elementwise("neg", (self,))

    def __pos__(self) -> Traced:
        return self

    def __abs__(self) -> Traced:
        return self.tracer.elementwise("abs", (self,))

    def __gt__(self, other: Any) -> Traced:
        return self._binary("gt", other)

    def __ge__(self, other: Any) -> Traced:
        return self._binary("ge", other)

    def __lt__(self, other: Any) -> Traced:
        return self._binary("lt", other)

    def __le__(self, other: Any) -> Traced:
        return self._binary("le", other)

    def __eq__(self, other: Any) -> Traced:  # type: ignore[override]
        return self._binary("eq", other)

    def __ne__(self, other: Any) -> Traced:  # type: ignore[override]
        return self._binary("ne", other)

    __hash__ = object.__hash__

    def __getitem__(self, key: Any) -> Traced:
        return index(self, key)

    # ------------------------------------------------------------- methods
    @property
    def T(self) -> Traced:  # noqa: N802 - NumPy's name
        return transpose(self)

    def sum(self, axis: Any = None, keepdims: bool = False, **kwargs: Any) -> Traced:
        _no_extra("sum", kwargs)
        return reduce(self, "sum", axis, keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False, **kwargs: Any) -> Traced:
        _no_extra("mean", kwargs)
        return mean(self, axis, keepdims)

    def max(self, axis: Any = None, keepdims: bool = False, **kwargs: Any) -> Traced:
        _no_extra("max", kwargs)
        return reduce(self, "max", axis, keepdims)

    def min(self, axis: Any = None, keepdims: bool = False, **kwargs: Any) -> Traced:
        _no_extra("min", kwargs)
        return reduce(self, "min", axis, keepdims)

    def prod(self, axis: Any = None, keepdims: bool = False, **kwargs: Any) -> Traced:
        _no_extra("prod", kwargs)
        return reduce(self, "prod", axis, keepdims)

    def var(self, axis: Any = None, keepdims: bool = False, ddof: int = 0, **kwargs: Any) -> Traced:
        _no_extra("var", kwargs)
        return variance(self, axis, keepdims, ddof)

    def std(self, axis: Any = None, keepdims: bool = False, ddof: int = 0, **kwargs: Any) -> Traced:
        _no_extra("std", kwargs)
        return self.tracer.elementwise("sqrt", (variance(self, axis, keepdims, ddof),))

    def cumsum(self, axis: Any = None, **kwargs: Any) -> Traced:
        _no_extra("cumsum", kwargs)
        return cumsum(self, axis)

    def reshape(self, *shape: Any, **kwargs: Any) -> Traced:
        _no_extra("reshape", {k: v for k, v in kwargs.items() if not (k == "order" and v == "C")})
        return reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes: Any) -> Traced:
        if len(axes) == 1 and not isinstance(axes[0], int | np.integer):
            axes = axes[0]
        return transpose(self, axes or None)

    def swapaxes(self, first: int, second: int) -> Traced:
        return swapaxes(self, first, second)

    def squeeze(self, axis: Any = None) -> Traced:
        return squeeze(self, axis)

    def repeat(self, repeats: Any, axis: Any = None) -> Traced:
        return repeat(self, repeats, axis)

    def clip(self, a_min: Any = None, a_max: Any = None, **kwargs: Any) -> Traced:
        _no_extra("clip", kwargs)
        return clip(self, a_min, a_max)

    def dot(self, other: Any) -> Traced:
        return dot(self, other)

    def astype(self, dtype: Any, **kwargs: Any) -> Traced:
        if np.dtype(dtype).kind != "f":
            raise TraceError(f"astype({np.dtype(dtype)}) (traced values stay floating point)")
        return self

    def copy(self, **kwargs: Any) -> Traced:
        return self

    # --------------------------------------------------------- protocols
    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        name = ufunc.__name__
        if method != "__call__":
            if method == "reduce" and name in ("add", "maximum", "minimum", "multiply"):
                kind = {"add": "sum", "maximum": "max", "minimum": "min", "multiply": "prod"}
                axis = kwargs.pop("axis", 0)
                keepdims = kwargs.pop("keepdims", False)
                _no_extra(f"np.{name}.reduce", kwargs)
                return reduce(inputs[0], kind[name], axis, keepdims)
            raise TraceError(f"np.{name}.{method}")
        if kwargs.get("out") is not None:
            raise TraceError(f"np.{name}(..., out=...)")
        kwargs.pop("out", None)
        _no_extra(f"np.{name}", {k: v for k, v in kwargs.items() if k not in ("dtype", "casting")})
        if name == "matmul":
            tracer = _tracer_of(inputs)
            return matmul(tracer.lift(inputs[0], "matmul"), tracer.lift(inputs[1], "matmul"))
        found = UFUNCS.get(name)
        if found is None:
            raise TraceError(f"np.{name} (a ufunc traced Lambdas do not support)")
        op, arity = found
        if op == "pow":
            return power(inputs[0], inputs[1], _tracer_of(inputs))
        if op == "square":
            return _tracer_of(inputs).elementwise("mul", (inputs[0], inputs[0]))
        return _tracer_of(inputs).elementwise(op, inputs[:arity])

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        implementation = FUNCTIONS.get(func)
        if implementation is None:
            raise TraceError(f"np.{func.__name__} (a NumPy function traced Lambdas do not support)")
        return implementation(*args, **kwargs)


def _no_extra(what: str, kwargs: dict[str, Any]) -> None:
    unused = {k: v for k, v in kwargs.items() if v is not None and k != "dtype"}
    if unused:
        raise TraceError(f"{what}() with {sorted(unused)}")


def _tracer_of(values: Any) -> Tracer:
    for value in values:
        if isinstance(value, Traced):
            return value.tracer
        if isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, Traced):
                    return item.tracer
    raise TraceError("an operation with no traced operand")


def _as_traced(value: Any, what: str, tracer: Tracer | None = None) -> Traced:
    if isinstance(value, Traced):
        return value
    return (tracer or _tracer_of([value])).lift(value, what)


# ---------------------------------------------------------------- operations


def power(base: Any, exponent: Any, tracer: Tracer | None = None) -> Traced:
    tracer = tracer or _tracer_of([base, exponent])
    if isinstance(base, Traced) and isinstance(exponent, int | float | np.number):
        # common exponents as cheaper elementwise operations
        value = float(exponent)
        if value == 1.0:
            return base
        if value == 2.0:
            return tracer.elementwise("mul", (base, base))
        if value == 0.5:
            return tracer.elementwise("sqrt", (base,))
        if value == -1.0:
            return tracer.elementwise("reciprocal", (base,))
        if value == 3.0:
            return tracer.elementwise("mul", (tracer.elementwise("mul", (base, base)), base))
    return tracer.elementwise("pow", (base, exponent))


def reduce(x: Any, kind: str, axis: Any = None, keepdims: bool = False) -> Traced:
    """``x.sum(axis)`` (or max, min, prod): a reduce node over contiguous axes (a transpose
    first when they are not), then a reshape for ``keepdims``."""
    x = _as_traced(x, kind)
    original = x.shape_symbolic
    axes = normalize_axes(axis, len(original), kind)
    if not axes:
        return x
    start, stop = axes[0], axes[-1] + 1
    if stop - start != len(axes):  # the reduced axes first, the others in their order
        x = transpose(x, (*axes, *(a for a in range(len(original)) if a not in axes)))
        start, stop = 0, len(axes)
    shape = x.shape_symbolic
    result = x.tracer.record("reduce", (x,), (kind, start, stop), shape[:start] + shape[stop:])
    if keepdims:
        full = tuple(1 if a in axes else d for a, d in enumerate(original))
        result = reshape(result, tuple(BATCH if d is None else d for d in full))
    return result


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Traced:
    x = _as_traced(x, "mean")
    shape = x.shape_symbolic
    axes = normalize_axes(axis, len(shape), "mean")
    total = reduce(x, "sum", axis, keepdims)
    count = x.tracer.count(tuple(shape[a] for a in axes))
    return total / count


def variance(x: Any, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Traced:
    x = _as_traced(x, "var")
    shape = x.shape_symbolic
    axes = normalize_axes(axis, len(shape), "var")
    centred = x - mean(x, axis, keepdims=True)
    total = reduce(centred * centred, "sum", axis, keepdims)
    count = x.tracer.count(tuple(shape[a] for a in axes))
    return total / (count - ddof) if ddof else total / count


def reshape(x: Any, shape: Any) -> Traced:
    x = _as_traced(x, "reshape")
    target = _shape_argument(shape)
    if any(not isinstance(d, int | np.integer | BatchSize) for d in target):
        raise TraceError(f"reshape to {target!r}")

    def apply(array: np.ndarray) -> np.ndarray:
        batch = array.shape[list(x.shape_symbolic).index(None)] if None in x.shape_symbolic else 1
        return array.reshape(tuple(batch if isinstance(d, BatchSize) else int(d) for d in target))

    result = probe_shape(apply, [x.shape_symbolic], f"reshape to {target}")
    if result == x.shape_symbolic:
        return x
    return x.tracer.record("reshape", (x,), (result,), result)


def gather(x: Traced, attrs: tuple[Any, ...], what: str) -> Traced:
    """A node whose output takes elements of ``x`` by an index map (see :func:`index_map`)."""
    result = probe_shape(lambda array: apply_gather(array, attrs), [x.shape_symbolic], what)
    return x.tracer.record("gather", (x,), attrs, result)


def apply_gather(array: np.ndarray, attrs: tuple[Any, ...]) -> np.ndarray:
    """Apply the NumPy operation a gather node stands for to ``array``."""
    kind = attrs[0]
    if kind == "transpose":
        return array.transpose(attrs[1])
    if kind == "index":
        return array[decode_key(attrs[1])]
    if kind == "repeat":
        return np.repeat(array, attrs[1], attrs[2])
    if kind == "tile":
        return np.tile(array, attrs[1])
    raise ValueError(f"unknown gather {kind}")


def transpose(x: Any, axes: Any = None) -> Traced:
    x = _as_traced(x, "transpose")
    rank = x.ndim
    order = tuple(reversed(range(rank))) if axes is None else tuple(int(a) % rank for a in axes)
    if sorted(order) != list(range(rank)):
        raise TraceError(f"transpose by axes {axes!r}")
    if order == tuple(range(rank)):
        return x
    return gather(x, ("transpose", order), f"transpose{order}")


def swapaxes(x: Any, first: int, second: int) -> Traced:
    x = _as_traced(x, "swapaxes")
    order = list(range(x.ndim))
    order[first], order[second] = order[second], order[first]
    return transpose(x, order)


def moveaxis(x: Any, source: int, destination: int) -> Traced:
    x = _as_traced(x, "moveaxis")
    order = [a for a in range(x.ndim) if a != source % x.ndim]
    order.insert(destination % x.ndim, source % x.ndim)
    return transpose(x, order)


def encode_key(key: Any) -> tuple[Any, ...]:
    """An index (slices, ints, None, Ellipsis, integer or boolean arrays) as a hashable tuple."""
    items = key if isinstance(key, tuple) else (key,)
    encoded: list[Any] = []
    for item in items:
        if isinstance(item, Traced):
            raise TraceError("indexing with a traced value")
        if isinstance(item, slice):
            parts = (item.start, item.stop, item.step)
            if any(p is not None and not isinstance(p, int | np.integer) for p in parts):
                raise TraceError(f"slice {item!r}")
            encoded.append(("slice", *(None if p is None else int(p) for p in parts)))
        elif item is None:
            encoded.append(("new",))
        elif item is Ellipsis:
            encoded.append(("ellipsis",))
        elif isinstance(item, bool | np.bool_):
            raise TraceError("indexing with a bool")
        elif isinstance(item, int | np.integer):
            encoded.append(("int", int(item)))
        else:
            array = np.asarray(item)
            if array.dtype == bool:
                if array.ndim != 1:
                    raise TraceError("indexing with a boolean array of rank above 1")
                array = np.flatnonzero(array)
            if array.dtype.kind not in "iu":
                raise TraceError(f"indexing with an array of dtype {array.dtype}")
            encoded.append(("array", array.shape, tuple(int(v) for v in array.ravel())))
    return tuple(encoded)


def decode_key(encoded: tuple[Any, ...]) -> tuple[Any, ...]:
    key: list[Any] = []
    for item in encoded:
        kind = item[0]
        if kind == "slice":
            key.append(slice(*item[1:]))
        elif kind == "new":
            key.append(None)
        elif kind == "ellipsis":
            key.append(Ellipsis)
        elif kind == "int":
            key.append(item[1])
        else:
            key.append(np.asarray(item[2], np.int64).reshape(item[1]))
    return tuple(key)


def index(x: Traced, key: Any) -> Traced:
    encoded = encode_key(key)
    decoded = decode_key(encoded)
    if all(isinstance(k, slice) and k == slice(None) or k is Ellipsis for k in decoded):
        return x
    # new axes and whole slices only: a reshape, not a copy
    if all(
        k is None or k is Ellipsis or (isinstance(k, slice) and k == slice(None)) for k in decoded
    ):
        result = probe_shape(lambda a: a[decoded], [x.shape_symbolic], "x[...]")
        return reshape(x, tuple(BATCH if d is None else d for d in result))
    return gather(x, ("index", encoded), f"x[{key!r}]")


def expand_dims(x: Any, axis: Any) -> Traced:
    x = _as_traced(x, "expand_dims")
    result = probe_shape(lambda a: np.expand_dims(a, axis), [x.shape_symbolic], "expand_dims")
    return reshape(x, tuple(BATCH if d is None else d for d in result))


def squeeze(x: Any, axis: Any = None) -> Traced:
    x = _as_traced(x, "squeeze")
    if axis is None:
        axis = tuple(a for a, d in enumerate(x.shape_symbolic) if d == 1)
    result = probe_shape(lambda a: np.squeeze(a, axis), [x.shape_symbolic], "squeeze")
    return reshape(x, tuple(BATCH if d is None else d for d in result))


def repeat(x: Any, repeats: Any, axis: Any = None) -> Traced:
    x = _as_traced(x, "repeat")
    if axis is None:
        raise TraceError("np.repeat without an axis (it flattens the batch axis)")
    if not isinstance(repeats, int | np.integer):
        repeats = tuple(int(r) for r in np.asarray(repeats).ravel())
    else:
        repeats = int(repeats)
    return gather(x, ("repeat", repeats, int(axis)), "repeat")


def tile(x: Any, reps: Any) -> Traced:
    x = _as_traced(x, "tile")
    reps = (int(reps),) if isinstance(reps, int | np.integer) else tuple(int(r) for r in reps)
    return gather(x, ("tile", reps), "tile")


def broadcast_to(x: Any, shape: Any) -> Traced:
    x = _as_traced(x, "broadcast_to")
    target = _shape_argument(shape)
    symbolic = tuple(None if isinstance(d, BatchSize) else int(d) for d in target)
    result = broadcast_shape([x.shape_symbolic, symbolic], "broadcast_to")
    if result == x.shape_symbolic:
        return x
    return x.tracer.record("copy", (x,), (), result)


def concatenate(arrays: Sequence[Any], axis: int = 0, **kwargs: Any) -> Traced:
    _no_extra("concatenate", kwargs)
    tracer = _tracer_of(arrays)
    values = [tracer.lift(a, "concatenate") for a in arrays]
    shape = probe_shape(
        lambda *parts: np.concatenate(parts, axis),
        [v.shape_symbolic for v in values],
        "concatenate",
    )
    axis = int(axis) % len(shape)
    if shape[axis] is None:
        raise TraceError("concatenate along the batch axis")
    return tracer.record("concat", values, (axis,), shape)


def stack(arrays: Sequence[Any], axis: int = 0, **kwargs: Any) -> Traced:
    _no_extra("stack", kwargs)
    tracer = _tracer_of(arrays)
    values = [tracer.lift(a, "stack") for a in arrays]
    rank = values[0].ndim + 1
    return concatenate([expand_dims(v, int(axis) % rank) for v in values], int(axis) % rank)


def where(condition: Any, a: Any, b: Any) -> Traced:
    tracer = _tracer_of([condition, a, b])
    return tracer.elementwise("where", (condition, a, b))


def clip(x: Any, a_min: Any = None, a_max: Any = None, **kwargs: Any) -> Traced:
    _no_extra("clip", {k: v for k, v in kwargs.items() if k not in ("min", "max")})
    a_min = kwargs.get("min", a_min)
    a_max = kwargs.get("max", a_max)
    tracer = _tracer_of([x, a_min, a_max])
    result = tracer.lift(x, "clip")
    if a_min is not None:
        result = tracer.elementwise("maximum", (result, a_min))
    if a_max is not None:
        result = tracer.elementwise("minimum", (result, a_max))
    return result


def matmul(a: Any, b: Any) -> Traced:
    """``a @ b``: a GEMM on the merged leading axes of ``a`` (``b`` 2-D), or a batched GEMM
    of two rank-3 arrays; vectors become matrices first, as in NumPy."""
    tracer = _tracer_of([a, b])
    a, b = tracer.lift(a, "matmul"), tracer.lift(b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise TraceError("matmul of a scalar")
    if b.ndim == 1:
        return squeeze(matmul(a, expand_dims(b, 1)), -1)
    if a.ndim == 1:
        return squeeze(matmul(expand_dims(a, 0), b), -2)
    result = probe_shape(np.matmul, [a.shape_symbolic, b.shape_symbolic], "matmul")
    if b.ndim == 2:
        return tracer.record("mm", (a, b), (False, False), result)
    if a.ndim == 3 and b.ndim == 3 and a.shape_symbolic[0] == b.shape_symbolic[0]:
        return tracer.record("bmm", (a, b), (False, False), result)
    raise TraceError(f"matmul of shapes {a.shape} and {b.shape}")


def dot(a: Any, b: Any) -> Traced:
    tracer = _tracer_of([a, b])
    a, b = tracer.lift(a, "dot"), tracer.lift(b, "dot")
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    if b.ndim <= 2:
        return matmul(a, b)
    raise TraceError(f"np.dot of shapes {a.shape} and {b.shape}")


def cumsum(x: Any, axis: Any = None) -> Traced:
    x = _as_traced(x, "cumsum")
    if axis is None:
        raise TraceError("np.cumsum without an axis (it flattens the batch axis)")
    axis = int(axis) % x.ndim
    return x.tracer.record("cumsum", (x,), (axis, False), x.shape_symbolic)


def einsum(subscripts: str, *operands: Any, **kwargs: Any) -> Traced:
    """Two-operand contractions that are one (batched) product: ``ij,jk->ik``,
    ``bij,bjk->bik``, ``...ij,jk->...ik`` and their transposes by index order."""
    _no_extra("einsum", kwargs)
    if len(operands) == 1:
        inputs, output = subscripts.replace(" ", "").split("->")
        x = _as_traced(operands[0], "einsum")
        kept = [inputs.index(letter) for letter in output]
        summed = tuple(a for a, letter in enumerate(inputs) if letter not in output)
        reduced = reduce(x, "sum", summed) if summed else x
        remaining = [letter for letter in inputs if letter in output]
        order = [remaining.index(letter) for letter in output]
        return transpose(reduced, order) if kept else reduced
    if len(operands) != 2 or "->" not in subscripts or "." in subscripts:
        raise TraceError(f"np.einsum({subscripts!r}) (only explicit two-operand forms)")
    tracer = _tracer_of(operands)
    a, b = (tracer.lift(v, "einsum") for v in operands)
    left, rest = subscripts.replace(" ", "").split(",")
    right, output = rest.split("->")
    contracted = [c for c in left if c in right and c not in output]
    batch = [c for c in left if c in right and c in output]
    a_free = [c for c in left if c not in right]
    b_free = [c for c in right if c not in left]
    if len(contracted) != 1 or len(a_free) > 1 or len(b_free) > 1 or len(batch) > 1:
        raise TraceError(f"np.einsum({subscripts!r}) (not one product)")
    a_order = batch + a_free + contracted
    b_order = batch + contracted + b_free
    a3 = transpose(a, [left.index(c) for c in a_order])
    b3 = transpose(b, [right.index(c) for c in b_order])
    if not a_free:
        a3 = expand_dims(a3, len(batch))
    if not b_free:
        b3 = expand_dims(b3, len(batch) + 1)
    product = matmul(a3, b3)
    produced = batch + (a_free or ["_a"]) + (b_free or ["_b"])
    if not a_free:
        product = squeeze(product, len(batch))
        produced.remove("_a")
    if not b_free:
        product = squeeze(product, -1)
        produced.remove("_b")
    return transpose(product, [produced.index(c) for c in output])


def _unary(op: str) -> Callable[..., Traced]:
    def apply(x: Any, **kwargs: Any) -> Traced:
        return _tracer_of([x]).elementwise(op, (x,))

    return apply


def _method(name: str) -> Callable[..., Any]:
    def apply(x: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(_as_traced(x, name), name)(*args, **kwargs)

    return apply


#: NumPy functions a trace records, by the function object
FUNCTIONS: dict[Any, Callable[..., Any]] = {
    np.sum: _method("sum"),
    np.mean: _method("mean"),
    np.max: _method("max"),
    np.amax: _method("max"),
    np.min: _method("min"),
    np.amin: _method("min"),
    np.prod: _method("prod"),
    np.var: _method("var"),
    np.std: _method("std"),
    np.cumsum: cumsum,
    np.dot: dot,
    np.concatenate: concatenate,
    np.stack: stack,
    np.transpose: transpose,
    np.swapaxes: swapaxes,
    np.moveaxis: moveaxis,
    np.reshape: lambda x, shape, **kw: reshape(x, shape),
    np.expand_dims: expand_dims,
    np.squeeze: squeeze,
    np.repeat: repeat,
    np.tile: tile,
    np.broadcast_to: broadcast_to,
    np.where: where,
    np.clip: clip,
    np.einsum: einsum,
    np.copy: lambda x, **kw: x,
    np.ascontiguousarray: lambda x, **kw: x,
    np.shape: lambda x: x.shape,
    np.ndim: lambda x: x.ndim,
}


def trace(
    function: Callable[..., Any],
    input_shapes: Sequence[Shape],
    dtype: Any,
    as_list: bool = False,
) -> Program:
    """Record ``function`` applied to arrays of symbolic ``input_shapes`` (``None`` for the
    batch axis; weights have none).

    ``as_list`` passes the inputs as one list (a multi-input Lambda). Raises
    :class:`TraceError` naming what could not be recorded.
    """
    tracer = Tracer(dtype)
    inputs = [tracer.input(tuple(shape)) for shape in input_shapes]
    with np.errstate(all="ignore"):
        result = function(inputs) if as_list else function(*inputs)
    if not isinstance(result, Traced):
        raise TraceError(
            f"the function returned {type(result).__name__}, not a value computed from its input"
        )
    if result.tracer is not tracer:
        raise TraceError("the function returned a value of another trace")
    shape = result.shape_symbolic
    if not shape or shape[0] is not None or None in shape[1:]:
        raise TraceError(f"the result has shape {result.shape}: the batch axis must stay first")
    if result.node in tracer.program.inputs:  # an identity: a node of its own
        result = tracer.record("copy", (result,), (), shape)
    tracer.program.outputs.append(result.node)
    tracer.program.forward_count = len(tracer.program.nodes)
    return tracer.program
