"""The recorded program of a traced function: its nodes, their shapes, and shape rules.

A program is a list of :class:`Node` in the order they were recorded (so every node
comes after its inputs). Each node is one operation on whole arrays of the layer's
dtype (comparisons give 1 or 0 in that dtype). Shapes are symbolic in the batch size:
a ``None`` dimension is the batch size of the call, whatever it is, so one program
serves every batch (:func:`runtime_shape` substitutes it).

Shape rules that NumPy already knows (broadcasting, indexing, transposes, repeats,
reshapes) are read off NumPy itself by :func:`probe_shape`: the operation is applied to
zero-stride stand-ins of the inputs at two batch sizes, and a dimension that follows
the batch size is symbolic, one that does not is fixed, and one that does neither
cannot be traced (it mixes the batch with other axes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: a symbolic shape: ``None`` is the batch size
Shape = tuple[int | None, ...]

#: elementwise operations of one, two and three operands (fused into generated kernels)
UNARY = (
    "neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "square", "tanh", "sin", "cos",
    "sign", "sigmoid", "reciprocal", "copy", "floor", "ceil",
)  # fmt: skip
BINARY = (
    "add", "sub", "mul", "div", "pow", "maximum", "minimum",
    "gt", "ge", "lt", "le", "eq", "ne",
)  # fmt: skip
TERNARY = ("where",)
ELEMENTWISE = frozenset((*UNARY, *BINARY, *TERNARY))
#: values with no input: a scalar (a kernel argument) and a runtime element count
SCALARS = frozenset(("scalar", "count"))
#: nodes never merged with an equal one recorded before (each is a value of its own)
UNIQUE = frozenset(("input", "const", "gradient"))
#: the batch sizes :func:`probe_shape` tries (primes, unlikely to equal a fixed size)
PROBE_BATCHES = (11, 13)


class TraceError(Exception):
    """A function does something a trace cannot record (names the operation)."""


@dataclass(frozen=True)
class Node:
    """One recorded operation.

    Attributes:
        op: the operation (an elementwise name, ``reduce``, ``gather``, ``mm``...).
        inputs: the ids of the nodes it reads.
        attrs: its hashable parameters (axes, flags, an index key...).
        shape: its symbolic output shape.
    """

    op: str
    inputs: tuple[int, ...]
    attrs: tuple[Any, ...]
    shape: Shape


@dataclass
class Program:
    """Nodes recorded from a function of ``len(inputs)`` arrays.

    ``constants`` holds the arrays of ``const`` nodes (host NumPy, in the dtype);
    ``outputs`` the node ids the function returned (one).
    """

    dtype: np.dtype
    nodes: list[Node] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    constants: dict[int, np.ndarray] = field(default_factory=dict)
    #: node ids recorded by the forward function (the rest is its reverse pass)
    forward_count: int = 0
    #: for each input, its gradient's node id (None: the output does not depend on it)
    input_gradients: list[int | None] = field(default_factory=list)
    #: the id of the output gradient's node (set by the reverse pass)
    output_gradient: int | None = None
    _recorded: dict[Node, int] = field(default_factory=dict, repr=False)

    def add(self, op: str, inputs: Sequence[int], attrs: Sequence[Any], shape: Shape) -> int:
        """Record a node, or return the id of the same operation recorded before."""
        node = Node(op, tuple(inputs), tuple(attrs), tuple(shape))
        if op in UNIQUE:
            self.nodes.append(node)
            return len(self.nodes) - 1
        found = self._recorded.get(node)
        if found is None:
            self.nodes.append(node)
            found = self._recorded[node] = len(self.nodes) - 1
        return found

    def live(self, roots: Iterable[int]) -> set[int]:
        """The nodes the ``roots`` depend on (themselves included)."""
        found: set[int] = set()
        pending = list(roots)
        while pending:
            node = pending.pop()
            if node not in found:
                found.add(node)
                pending.extend(self.nodes[node].inputs)
        return found

    def consumers(self) -> dict[int, list[int]]:
        """For each node id, the ids of the nodes that read it."""
        found: dict[int, list[int]] = {index: [] for index in range(len(self.nodes))}
        for index, node in enumerate(self.nodes):
            for source in node.inputs:
                found[source].append(index)
        return found

    def summary(self) -> str:
        """One line per node (for messages and tests)."""
        return "\n".join(
            f"%{index} = {node.op}{list(node.inputs)} {node.attrs} -> {node.shape}"
            for index, node in enumerate(self.nodes)
        )


# ---------------------------------------------------------------- symbolic shapes


def runtime_shape(shape: Shape, batch: int) -> tuple[int, ...]:
    """``shape`` with the batch size ``batch`` for each ``None``."""
    return tuple(batch if dim is None else dim for dim in shape)


def element_count(shape: Shape, batch: int) -> int:
    return math.prod(runtime_shape(shape, batch))


def stand_in(shape: Shape, batch: int) -> np.ndarray:
    """A zero-stride array of ``shape`` at batch size ``batch`` (no memory)."""
    return np.broadcast_to(np.zeros((), np.int8), runtime_shape(shape, batch))


def symbolic(first: Sequence[int], second: Sequence[int], what: str) -> Shape:
    """The symbolic shape of results of shape ``first`` and ``second`` at the two probes."""
    if len(first) != len(second):
        raise TraceError(f"{what}: its rank depends on the batch size")
    small, large = PROBE_BATCHES
    shape: list[int | None] = []
    for a, b in zip(first, second, strict=True):
        if a == b:
            shape.append(int(a))
        elif (a, b) == (small, large):
            shape.append(None)
        else:
            raise TraceError(
                f"{what} mixes the batch axis with other axes (sizes {a} and {b} at batch "
                f"sizes {small} and {large})"
            )
    return tuple(shape)


def probe_shape(operation: Callable[..., Any], shapes: Sequence[Shape], what: str) -> Shape:
    """The symbolic shape of ``operation(*arrays)`` for arrays of symbolic ``shapes``.

    ``operation`` is a NumPy function of stand-in arrays; errors NumPy raises are
    reported as a :class:`TraceError` naming ``what``.
    """
    results = []
    for batch in PROBE_BATCHES:
        try:
            results.append(np.shape(operation(*(stand_in(s, batch) for s in shapes))))
        except (ValueError, IndexError, TypeError) as error:
            raise TraceError(f"{what}: {error}") from error
    return symbolic(results[0], results[1], what)


def broadcast_shape(shapes: Sequence[Shape], what: str) -> Shape:
    """The broadcast of symbolic ``shapes`` (a batch axis against a fixed size is refused)."""
    results = []
    for batch in PROBE_BATCHES:
        try:
            results.append(np.broadcast_shapes(*(runtime_shape(s, batch) for s in shapes)))
        except ValueError as error:
            raise TraceError(f"{what}: shapes {list(shapes)} do not broadcast") from error
    return symbolic(results[0], results[1], what)


def normalize_axes(axis: Any, ndim: int, what: str) -> tuple[int, ...]:
    """``axis`` (None, an int or a sequence) as sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    resolved = []
    for value in axes:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TraceError(f"{what}: axis must be ints, received {axis!r}")
        if not -ndim <= value < ndim:
            raise TraceError(f"{what}: axis {value} is out of range for rank {ndim}")
        resolved.append(int(value) % ndim)
    if len(set(resolved)) != len(resolved):
        raise TraceError(f"{what}: repeated axis in {axis!r}")
    return tuple(sorted(resolved))


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides = [1] * len(shape)
    for axis in range(len(shape) - 2, -1, -1):
        strides[axis] = strides[axis + 1] * shape[axis + 1]
    return strides


def broadcast_strides(source: Sequence[int], target: Sequence[int]) -> np.ndarray:
    """Element strides to read an array of shape ``source`` broadcast to ``target``."""
    strides = contiguous_strides(source)
    offset = len(target) - len(source)
    result = np.zeros(len(target), np.int64)
    for axis, size in enumerate(source):
        if size != 1 or target[offset + axis] == 1:
            result[offset + axis] = strides[axis]
    return result
