"""The reverse pass: the gradient of a recorded program, recorded into the same program.

:func:`add_gradients` walks the forward nodes from the output back to the inputs and
records, for each node, the vector-Jacobian product of its operation as more traced
operations (so the backward program is fused and run exactly like the forward one).
Gradients of a broadcast operand are summed over the axes it was broadcast along;
gradients of a gather (an index, a repeat) are summed over repeated indices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numlayers.tracing.program import Program, Shape, TraceError
from numlayers.tracing.traced import BATCH, Traced, Tracer, reduce, reshape

Gradients = list[Traced | None]


def sum_to(gradient: Traced, shape: Shape) -> Traced:
    """``gradient`` summed over the axes along which ``shape`` was broadcast to its shape."""
    source = gradient.shape_symbolic
    if source == shape:
        return gradient
    extra = len(source) - len(shape)
    axes = list(range(extra))
    for axis, size in enumerate(shape):
        if size == 1 and source[extra + axis] != 1:
            axes.append(extra + axis)
    total = reduce(gradient, "sum", tuple(axes)) if axes else gradient
    if total.shape_symbolic != shape:
        total = reshape(total, tuple(BATCH if d is None else d for d in shape))
    return total


def _broadcast(gradient: Traced, shape: Shape) -> Traced:
    if gradient.shape_symbolic == shape:
        return gradient
    return gradient.tracer.record("copy", (gradient,), (), shape)


def _rule_table() -> dict[str, Callable[..., Gradients]]:
    def add(g: Traced, y: Traced, a: Traced, b: Traced) -> Gradients:
        return [g, g]

    def sub(g: Traced, y: Traced, a: Traced, b: Traced) -> Gradients:
        return [g, -g]

    def mul(g: Traced, y: Traced, a: Traced, b: Traced) -> Gradients:
        return [g * b, g * a]

    def div(g: Traced, y: Traced, a: Traced, b: Traced) -> Gradients:
        quotient = g / b
        return [quotient, -quotient * y]

    def pow_(g: Traced, y: Traced, a: Traced, b: Traced) -> Gradients:
        log_a = g.tracer.elementwise("log", (a,))
        return [g * b * a.tracer.elementwise("pow", (a, b - 1)), g * y * log_a]

    # selections pass the gradient by choosing, not by multiplying with 0 or 1: an
    # infinite gradient on the side not chosen (sqrt at 0) must not become NaN
    def select(condition: Traced, g: Traced) -> Gradients:
        return [_where(condition, g, 0.0), _where(condition, 0.0, g)]

    def maximum(g: Traced, y: Traced, a: Traced, b: Traced) -> Gradients:
        return select(a >= b, g)

    def minimum(g: Traced, y: Traced, a: Traced, b: Traced) -> Gradients:
        return select(a <= b, g)

    def where(g: Traced, y: Traced, c: Traced, a: Traced, b: Traced) -> Gradients:
        return [None, *select(c, g)]

    def elementwise(op: str) -> Callable[..., Traced]:
        return lambda *operands: operands[0].tracer.elementwise(op, operands)

    sin, cos, sign = (elementwise(op) for op in ("sin", "cos", "sign"))

    unary: dict[str, Callable[[Traced, Traced, Traced], Traced | None]] = {
        "neg": lambda g, y, a: -g,
        "copy": lambda g, y, a: g,
        "abs": lambda g, y, a: g * sign(a),
        "exp": lambda g, y, a: g * y,
        "log": lambda g, y, a: g / a,
        "log1p": lambda g, y, a: g / (a + 1.0),
        "expm1": lambda g, y, a: g * (y + 1.0),
        "sqrt": lambda g, y, a: g * 0.5 / y,
        "square": lambda g, y, a: g * 2.0 * a,
        "tanh": lambda g, y, a: g * (1.0 - y * y),
        "sigmoid": lambda g, y, a: g * y * (1.0 - y),
        "sin": lambda g, y, a: g * cos(a),
        "cos": lambda g, y, a: -g * sin(a),
        "reciprocal": lambda g, y, a: -g * y * y,
    }
    table: dict[str, Callable[..., Gradients]] = {
        "add": add,
        "sub": sub,
        "mul": mul,
        "div": div,
        "pow": pow_,
        "maximum": maximum,
        "minimum": minimum,
        "where": where,
    }
    for op, rule in unary.items():
        table[op] = lambda g, y, a, rule=rule: [rule(g, y, a)]
    return table


RULES = _rule_table()
#: operations whose gradient is zero wherever it is defined
FLAT = frozenset(("sign", "floor", "ceil", "gt", "ge", "lt", "le", "eq", "ne"))


def _reduce_rule(g: Traced, y: Traced, x: Traced, kind: str, start: int, stop: int) -> Traced:
    shape = x.shape_symbolic
    kept = tuple(1 if start <= a < stop else d for a, d in enumerate(shape))
    as_kept = tuple(BATCH if d is None else d for d in kept)
    g_kept = reshape(g, as_kept)
    if kind == "sum":
        return _broadcast(g_kept, shape)
    y_kept = reshape(y, as_kept)
    if kind == "prod":
        return g_kept * _product_of_others(x, start, stop, as_kept)
    return _where(x == y_kept, g_kept, 0.0)  # max, min: to every element equal to the extreme


def _product_of_others(x: Traced, start: int, stop: int, kept: tuple[Any, ...]) -> Traced:
    """For each element of ``x``, the product of the other elements of its slice over
    axes ``start:stop``, without dividing by zero: with no zero in the slice it is the
    product over the element; with one zero, the product of the rest at the zero and 0
    elsewhere; with more, 0 everywhere."""
    axes = tuple(range(start, stop))
    is_zero = x == 0.0
    safe = _where(is_zero, 1.0, x)
    nonzero_product = reshape(reduce(safe, "prod", axes), kept)
    zeros = reshape(reduce(_where(is_zero, 1.0, 0.0), "sum", axes), kept)
    at_the_only_zero = _where(is_zero, _where(zeros == 1.0, nonzero_product, 0.0), 0.0)
    return _where(zeros == 0.0, nonzero_product / safe, at_the_only_zero)


def _where(condition: Traced, a: Traced | float, b: Traced | float) -> Traced:
    return condition.tracer.elementwise("where", (condition, a, b))


def _structural(program: Program, node_id: int, g: Traced, values: list[Traced]) -> Gradients:
    node = program.nodes[node_id]
    tracer = g.tracer
    inputs = [values[i] for i in node.inputs]
    y = values[node_id]
    if node.op == "reduce":
        return [_reduce_rule(g, y, inputs[0], *node.attrs)]
    if node.op == "reshape":
        shape = inputs[0].shape_symbolic
        return [reshape(g, tuple(BATCH if d is None else d for d in shape))]
    if node.op == "gather":
        if node.attrs[0] == "transpose":
            order = node.attrs[1]
            inverse = tuple(order.index(a) for a in range(len(order)))
            return [tracer.record("gather", (g,), ("transpose", inverse), inputs[0].shape_symbolic)]
        return [
            tracer.record("scatter_add", (g,), (node.attrs, inputs[0].shape_symbolic),
                          inputs[0].shape_symbolic)
        ]  # fmt: skip
    if node.op == "concat":
        (axis,) = node.attrs
        grads: Gradients = []
        start = 0
        for value in inputs:
            size = value.shape_symbolic[axis]
            assert size is not None
            key = (slice(None),) * axis + (slice(start, start + size),)
            grads.append(g[key])
            start += size
        return grads
    if node.op == "mm":
        a, b = inputs
        transpose_a, transpose_b = node.attrs
        if transpose_a:
            raise TraceError("the gradient of a transposed-operand product")
        grad_a = tracer.record("mm", (g, b), (False, not transpose_b), a.shape_symbolic)
        if transpose_b:  # b is (m, k): d b = g^T a
            grad_b = tracer.record("mm_tn", (g, a), (), b.shape_symbolic)
        else:
            grad_b = tracer.record("mm_tn", (a, g), (), b.shape_symbolic)
        return [grad_a, grad_b]
    if node.op == "bmm":
        a, b = inputs
        ta, tb = node.attrs
        grad_a = (
            tracer.record("bmm", (b, g), (tb, True), a.shape_symbolic)
            if ta
            else tracer.record("bmm", (g, b), (False, not tb), a.shape_symbolic)
        )
        grad_b = (
            tracer.record("bmm", (g, a), (True, ta), b.shape_symbolic)
            if tb
            else tracer.record("bmm", (a, g), (not ta, False), b.shape_symbolic)
        )
        return [grad_a, grad_b]
    if node.op == "cumsum":
        axis, reverse = node.attrs
        return [tracer.record("cumsum", (g,), (axis, not reverse), g.shape_symbolic)]
    raise TraceError(f"no gradient rule for {node.op}")


def add_gradients(program: Program) -> None:
    """Record the gradient of the program's output with respect to each input.

    Sets ``program.output_gradient`` (an input node of the output's shape, fed at run
    time) and ``program.input_gradients``.
    """
    tracer = Tracer(program.dtype)
    tracer.program = program
    values = [tracer.value(index) for index in range(program.forward_count)]
    (output,) = program.outputs
    depends = _depends_on_inputs(program)
    seed = program.add("gradient", (), (), program.nodes[output].shape)
    program.output_gradient = seed
    grads: dict[int, Traced] = {output: tracer.value(seed)}
    for node_id in range(program.forward_count - 1, -1, -1):
        node = program.nodes[node_id]
        g = grads.get(node_id)
        if g is None or node.op in ("input", "const", "scalar", "count") or node.op in FLAT:
            continue
        inputs = [values[i] for i in node.inputs]
        if node.op in RULES:
            found = [
                None if grad is None else sum_to(grad, value.shape_symbolic)
                for grad, value in zip(
                    RULES[node.op](g, values[node_id], *inputs), inputs, strict=True
                )
            ]
        else:
            found = _structural(program, node_id, g, values)
        for source, grad in zip(node.inputs, found, strict=True):
            if grad is not None and depends[source]:
                previous = grads.get(source)
                grads[source] = grad if previous is None else previous + grad
    program.input_gradients = [
        grads[node].node if node in grads else None for node in program.inputs
    ]


def _depends_on_inputs(program: Program) -> list[bool]:
    depends = [False] * program.forward_count
    for index in range(program.forward_count):
        node = program.nodes[index]
        depends[index] = node.op == "input" or any(depends[i] for i in node.inputs)
    return depends
