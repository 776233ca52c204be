"""Running a traced program on a device: its forward pass and its reverse pass.

:class:`Executable` turns a program (with its gradient, see
:mod:`numlayers.tracing.gradients`) into steps: fused elementwise kernels and the
family operations of :mod:`numlayers.kernels.traced` (reductions, index maps, scans),
with products on the matmul kernels. Everything a step needs that depends on the batch
size (shapes, broadcast strides, index maps, element counts) is made once per batch
size, on the host, and kept on the device; a call then only launches kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from numlayers.devices import Device
from numlayers.tracing.fusion import FusedGroup, plan_steps
from numlayers.tracing.program import (
    Program,
    broadcast_strides,
    element_count,
    runtime_shape,
)
from numlayers.tracing.traced import apply_gather

Buffer = Callable[[str, tuple[int, ...]], Any]
Values = list[Any]


def _product(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


class Executable:
    """A program with its gradient, ready to run on ``device`` in its dtype.

    Attributes:
        launches: kernels launched so far (tests count fusion by it).
    """

    def __init__(self, program: Program, device: Device) -> None:
        self.program = program
        self.device = device
        self.dtype = program.dtype
        self.kernels = device.kernels(program.dtype)
        gradients = {g for g in program.input_gradients if g is not None}
        live = program.live([*program.outputs, *gradients])
        split = program.forward_count
        forward_nodes = [node for node in range(split) if node in live]
        backward_nodes = [node for node in range(split, len(program.nodes)) if node in live]
        self.forward_steps = plan_steps(program, forward_nodes, set(program.outputs), live)
        self.backward_steps = plan_steps(program, backward_nodes, gradients, live)
        self.constants = {
            node: device.asarray(value, self.dtype) for node, value in program.constants.items()
        }
        self._no_bias = device.empty((0,), self.dtype)
        self._layouts: dict[int, dict[Any, Any]] = {}
        self.launches = 0

    # ------------------------------------------------------------- running
    def forward(self, inputs: Sequence[Any], buffer: Buffer) -> tuple[Any, Values]:
        """The output for ``inputs`` (device arrays, batch axis first), and the values
        the reverse pass reads."""
        batch = int(inputs[0].shape[0])
        layout = self._layout(batch)
        values: Values = [None] * len(self.program.nodes)
        for node, x in zip(self.program.inputs, inputs, strict=True):
            values[node] = x
        for node, constant in self.constants.items():
            values[node] = constant
        self._run(self.forward_steps, values, layout, buffer)
        return self._value(self.program.outputs[0], values, layout["shapes"]), values

    def backward(self, values: Values, grad_output: Any, buffer: Buffer) -> list[Any]:
        """The gradient of each input, given what :meth:`forward` returned."""
        batch = int(grad_output.shape[0])
        values = list(values)
        assert self.program.output_gradient is not None
        values[self.program.output_gradient] = grad_output
        layout = self._layout(batch)
        self._run(self.backward_steps, values, layout, buffer)
        grads = []
        for index, node in enumerate(self.program.input_gradients):
            if node is None:
                shape = runtime_shape(self.program.nodes[self.program.inputs[index]].shape, batch)
                zeros = buffer(f"zero_gradient_{index}", shape)
                self.kernels.fill(zeros, 0.0)
                grads.append(zeros)
            else:
                grads.append(self._value(node, values, layout["shapes"]))
        return grads

    def _value(self, node: int, values: Values, shapes: list[tuple[int, ...]]) -> Any:
        """The array of ``node``: computed by a step, or a view of one (a reshape)."""
        value = values[node]
        if value is None:
            source = self.program.nodes[node].inputs[0]
            value = values[node] = self._value(source, values, shapes).reshape(shapes[node])
        return value

    def _run(self, steps: list[FusedGroup | int], values: Values, layout: dict[Any, Any],
             buffer: Buffer) -> None:  # fmt: skip
        shapes = layout["shapes"]
        for step in steps:
            if isinstance(step, FusedGroup):
                self._fused(step, values, shapes, layout[step], buffer)
            else:
                self._structural(step, values, shapes, layout.get(step), buffer)

    def _fused(
        self,
        group: FusedGroup,
        values: Values,
        shapes: list[tuple[int, ...]],
        prepared: Any,
        buffer: Buffer,
    ) -> None:
        count, shape_array, strides, scalars, loop, shape = prepared
        outputs = []
        for node in group.outputs:
            out = buffer(f"t{node}", shape)
            values[node] = out
            outputs.append(out.reshape(out.size))
        inputs = [self._value(node, values, shapes) for node in group.inputs]
        inputs = [array.reshape(array.size) for array in inputs]
        loop(count, shape_array, *inputs, *strides, *scalars, *outputs)
        self.launches += 1

    def _structural(self, node_id: int, values: Values, shapes: list[tuple[int, ...]],
                    prepared: Any, buffer: Buffer) -> None:  # fmt: skip
        node = self.program.nodes[node_id]
        inputs = [self._value(i, values, shapes) for i in node.inputs]
        shape = shapes[node_id]
        kernels = self.kernels
        out = buffer(f"t{node_id}", shape)
        values[node_id] = out
        self.launches += 1
        if node.op == "reduce":
            kind, start, stop = node.attrs
            source = shapes[node.inputs[0]]
            length, inner = _product(source[start:stop]), _product(source[stop:])
            if out.size:
                kernels.traced_reduce(inputs[0], out, length, inner, kind)
        elif node.op == "gather":
            kernels.traced_gather(inputs[0], prepared, out)
        elif node.op == "scatter_add":
            offsets, positions = prepared
            kernels.traced_segment_sum(inputs[0], offsets, positions, out)
        elif node.op == "concat":
            for x, target in zip(inputs, prepared, strict=True):
                kernels.traced_scatter(x, target, out)
            self.launches += len(inputs) - 1
        elif node.op == "mm":
            a, b = inputs
            a2 = _as_matrix(a, shapes[node.inputs[0]])
            out2 = _as_matrix(out, shape)
            if node.attrs[1]:
                kernels.matmul_transpose_b(a2, b, out2)
            else:
                kernels.matmul(a2, b, self._no_bias, out2)
        elif node.op == "mm_tn":
            a, g = inputs
            a2 = _as_matrix(a, shapes[node.inputs[0]])
            kernels.matmul_transpose_a(a2, _as_matrix(g, shapes[node.inputs[1]]), out)
        elif node.op == "bmm":
            kernels.batched_matmul(inputs[0], inputs[1], out, *node.attrs)
        elif node.op == "cumsum":
            axis, reverse = node.attrs
            kernels.traced_cumsum(inputs[0], out, shape[axis], _product(shape[axis + 1 :]), reverse)
        else:
            raise RuntimeError(f"no step for {node.op}")

    # -------------------------------------------------------------- layouts
    def _layout(self, batch: int) -> dict[Any, Any]:
        layout = self._layouts.get(batch)
        if layout is None:
            layout = self._layouts[batch] = self._make_layout(batch)
        return layout

    def _make_layout(self, batch: int) -> dict[Any, Any]:
        program = self.program
        shapes = [runtime_shape(node.shape, batch) for node in program.nodes]
        layout: dict[Any, Any] = {"shapes": shapes}
        device = self.device
        cast = self.dtype.type
        for step in (*self.forward_steps, *self.backward_steps):
            if isinstance(step, FusedGroup):
                shape = runtime_shape(step.shape, batch)
                strides = tuple(
                    device.asarray(broadcast_strides(shapes[node], shape))
                    for node, direct in zip(step.inputs, step.direct, strict=True)
                    if not direct
                )
                scalars = tuple(cast(self._scalar(node, batch)) for node in step.scalars)
                loop = self.kernels.traced_fused(step.source, step.name, step.kinds)
                layout[step] = (
                    _product(shape), device.asarray(np.asarray(shape, np.int64)), strides,
                    scalars, loop, shape,
                )  # fmt: skip
                continue
            node = program.nodes[step]
            if node.op == "gather":
                source = shapes[node.inputs[0]]
                layout[step] = device.asarray(_index_map(node.attrs, source))
            elif node.op == "scatter_add":
                gather_attrs, _ = node.attrs
                index_map = _index_map(gather_attrs, shapes[step])
                layout[step] = tuple(device.asarray(a) for a in _segments(index_map, shapes[step]))
            elif node.op == "concat":
                targets = _concat_targets(node.attrs[0], shapes, node.inputs, shapes[step])
                layout[step] = tuple(device.asarray(target) for target in targets)
        return layout

    def _scalar(self, node: int, batch: int) -> float:
        found = self.program.nodes[node]
        if found.op == "scalar":
            return float(found.attrs[0])
        return float(element_count(found.attrs[0], batch))


def _as_matrix(array: Any, shape: tuple[int, ...]) -> Any:
    """``array`` with its leading axes merged: ``(rows, last axis)``."""
    columns = shape[len(shape) - 1]
    return array.reshape(_product(shape) // columns if columns else 0, columns)


def _index_map(attrs: tuple[Any, ...], source: tuple[int, ...]) -> np.ndarray:
    """For each output element of a gather, the flat index of its source element."""
    positions = np.arange(_product(source), dtype=np.int64).reshape(source)
    return np.ascontiguousarray(apply_gather(positions, attrs), np.int64).ravel()


def _segments(index_map: np.ndarray, source: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``offsets`` and ``positions`` listing, for each source element, the outputs read from it."""
    positions = np.argsort(index_map, kind="stable").astype(np.int64)
    counts = np.bincount(index_map, minlength=_product(source))
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, positions


def _concat_targets(axis: int, shapes: list[tuple[int, ...]], inputs: Sequence[int],
                    out_shape: tuple[int, ...]) -> list[np.ndarray]:  # fmt: skip
    positions = np.arange(_product(out_shape), dtype=np.int64).reshape(out_shape)
    targets = []
    start = 0
    for node in inputs:
        size = shapes[node][axis]
        key = (slice(None),) * axis + (slice(start, start + size),)
        # an input broadcast along the other axes is read as its full part
        targets.append(np.ascontiguousarray(positions[key]).ravel())
        start += size
    return targets
