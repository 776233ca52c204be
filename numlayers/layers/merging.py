"""Merging several tensors: the merge modes of Keras 0.3, a node with several parents, Merge.

:class:`MergeFunction` is one merge mode (sum, mul, ave, concat, dot, cos) with
its shape rule, forward and backward; :class:`MergeNode` is the layer a Graph
node with ``inputs=[...]`` gets; :class:`Merge` merges Sequential branches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from numlayers.layers.base import Layer, Shape

MERGE_MODES = ("sum", "mul", "ave", "concat", "dot", "cos")
Buffer = Callable[[str, tuple[int, ...]], Any]


def _product(shape: Sequence[int]) -> int:
    return int(np.prod(shape)) if len(shape) else 1


class MergeFunction:
    """One merge mode, for inputs of known shapes.

    Args:
        mode: sum, mul, ave, concat, dot or cos.
        concat_axis: the axis ``concat`` joins along (not the batch axis).
        dot_axes: for ``dot`` and ``cos``: the axis contracted in each input,
            an int for both (``-1``, the last) or ``[[axis_a], [axis_b]]``.
        owner: how errors name the merge (e.g. "Graph node 'merged'").
    """

    def __init__(self, mode: str, concat_axis: int = -1, dot_axes: Any = -1, owner: str = "merge"):
        if mode == "join":
            raise ValueError(
                f"{owner}: merge_mode 'join' gives a dict of arrays, which only a function "
                "takes: in a Graph, add_node(Lambda(f), inputs=[...], merge_mode='join'); in a "
                "Sequential, LambdaMerge(branches, f) with f taking the list of their outputs"
            )
        if mode not in MERGE_MODES:
            raise ValueError(f"{owner}: unknown merge_mode {mode!r}; choose one of {MERGE_MODES}")
        self.mode = mode
        self.concat_axis = int(concat_axis)
        self.dot_axes = dot_axes
        self.owner = owner

    # ------------------------------------------------------------- shapes
    def _dot_axes(self, shapes: Sequence[Shape]) -> tuple[int, int]:
        axes = self.dot_axes
        if isinstance(axes, int | np.integer):
            pair = [int(axes), int(axes)]
        elif (
            isinstance(axes, list | tuple)
            and len(axes) == 2
            and all(isinstance(a, list | tuple) and len(a) == 1 for a in axes)
        ):
            pair = [int(axes[0][0]), int(axes[1][0])]
        else:
            raise ValueError(
                f"{self.owner}: dot_axes must be an int or [[a], [b]], received {axes!r}"
            )
        resolved = []
        for axis, shape in zip(pair, shapes, strict=True):
            axis = axis % len(shape)
            if axis == 0:
                raise ValueError(f"{self.owner}: dot_axes cannot contract the batch axis")
            resolved.append(axis)
        return resolved[0], resolved[1]

    def output_shape(self, shapes: Sequence[Shape], names: Sequence[str]) -> Shape:
        """The merged shape; raises a ValueError naming the inputs when they do not fit."""
        described = ", ".join(f"'{n}' {s}" for n, s in zip(names, shapes, strict=True))
        if len(shapes) < 2:
            raise ValueError(f"{self.owner}: merge mode {self.mode} needs at least 2 inputs")
        if self.mode in ("sum", "mul", "ave"):
            if any(tuple(s[1:]) != tuple(shapes[0][1:]) for s in shapes):
                raise ValueError(
                    f"{self.owner}: {self.mode} needs inputs of one shape, received {described}"
                )
            return shapes[0]
        if self.mode == "concat":
            rank = len(shapes[0])
            axis = self.concat_axis % rank

            def other_axes(shape: Shape) -> Shape:
                return tuple(d for i, d in enumerate(shape) if i not in (0, axis))

            if axis == 0 or any(
                len(s) != rank or other_axes(s) != other_axes(shapes[0]) for s in shapes
            ):
                raise ValueError(
                    f"{self.owner}: cannot concatenate along axis {self.concat_axis}: {described}"
                )
            sizes = [s[axis] for s in shapes]
            total = (
                None
                if any(v is None for v in sizes)
                else sum(int(v) for v in sizes if v is not None)
            )
            return (*shapes[0][:axis], total, *shapes[0][axis + 1 :])
        if len(shapes) != 2:
            raise ValueError(
                f"{self.owner}: {self.mode} merges exactly 2 inputs, received {described}"
            )
        if any(len(s) not in (2, 3) for s in shapes):
            raise ValueError(
                f"{self.owner}: {self.mode} takes inputs of rank 2 or 3, received {described}"
            )
        axis_a, axis_b = self._dot_axes(shapes)
        if shapes[0][axis_a] != shapes[1][axis_b]:
            raise ValueError(
                f"{self.owner}: {self.mode} contracts axis {axis_a} of '{names[0]}' with axis "
                f"{axis_b} of '{names[1]}', which differ in size: {described}"
            )
        if self.mode == "cos" and (len(shapes[0]) != 2 or len(shapes[1]) != 2):
            raise ValueError(
                f"{self.owner}: cos takes 2-D inputs (batch, features), received {described}"
            )
        rest = [d for i, d in enumerate(shapes[0]) if i != axis_a] + [
            d for i, d in enumerate(shapes[1]) if i not in (0, axis_b)
        ]
        return tuple(rest) if len(rest) > 1 else (rest[0], 1)

    # ------------------------------------------------------------ compute
    def _matmul_views(self, a: Any, b: Any) -> tuple[Any, Any, bool, bool]:
        """3-D views and transposes so that ``dot`` is ``op(a) @ op(b)`` per sample."""
        axis_a, axis_b = self._dot_axes([tuple(a.shape), tuple(b.shape)])
        a3 = a.reshape(a.shape[0], 1, a.shape[1]) if a.ndim == 2 else a
        b3 = b.reshape(b.shape[0], b.shape[1], 1) if b.ndim == 2 else b
        transpose_a = a.ndim == 3 and axis_a == 1  # contracted axis first: a is (batch, K, M)
        transpose_b = b.ndim == 3 and axis_b == 2  # contracted axis last: b is (batch, N, K)
        return a3, b3, transpose_a, transpose_b

    def forward(
        self, kernels: Any, inputs: Sequence[Any], out_shape: tuple[int, ...], buffer: Buffer
    ) -> Any:
        out = buffer("y", out_shape)
        if self.mode in ("sum", "ave"):
            kernels.copy(inputs[0], out)
            for x in inputs[1:]:
                kernels.add_into(x, out)
            if self.mode == "ave":
                kernels.scale_into(out, 1.0 / len(inputs), out)
        elif self.mode == "mul":
            kernels.multiply_two(inputs[0], inputs[1], out)
            for x in inputs[2:]:
                kernels.multiply_into(x, out)
        elif self.mode == "concat":
            offset = 0
            for x in inputs:
                view = self._concat_view(x)
                kernels.concat_forward_part(view, self._concat_view(out), offset)
                offset += view.shape[1]
        elif self.mode == "dot":
            a3, b3, transpose_a, transpose_b = self._matmul_views(inputs[0], inputs[1])
            rows = a3.shape[2] if transpose_a else a3.shape[1]
            cols = b3.shape[1] if transpose_b else b3.shape[2]
            kernels.batched_matmul(
                a3, b3, out.reshape(out.shape[0], rows, cols), transpose_a, transpose_b
            )
        else:
            kernels.cosine_forward(inputs[0], inputs[1], out)
        return out

    def backward(self, kernels: Any, inputs: Sequence[Any], grad: Any, buffer: Buffer) -> list[Any]:
        grads = [buffer(f"grad_{i}", tuple(x.shape)) for i, x in enumerate(inputs)]
        if self.mode in ("sum", "ave"):
            for target in grads:
                kernels.scale_into(grad, 1.0 if self.mode == "sum" else 1.0 / len(inputs), target)
        elif self.mode == "mul":
            for i, target in enumerate(grads):
                kernels.copy(grad, target)
                for j, x in enumerate(inputs):
                    if j != i:
                        kernels.multiply_into(x, target)
        elif self.mode == "concat":
            offset = 0
            for target in grads:
                view = self._concat_view(target)
                kernels.concat_backward_part(self._concat_view(grad), offset, view)
                offset += view.shape[1]
        elif self.mode == "dot":
            a3, b3, transpose_a, transpose_b = self._matmul_views(inputs[0], inputs[1])
            rows = a3.shape[2] if transpose_a else a3.shape[1]
            cols = b3.shape[1] if transpose_b else b3.shape[2]
            g3 = grad.reshape(grad.shape[0], rows, cols)
            grad_a = grads[0].reshape(*a3.shape)
            grad_b = grads[1].reshape(*b3.shape)
            if transpose_a:  # a holds op(a)^T: d a = op(b) @ g^T
                kernels.batched_matmul(b3, g3, grad_a, transpose_b, True)
            else:  # d a = g @ op(b)^T
                kernels.batched_matmul(g3, b3, grad_a, False, not transpose_b)
            if transpose_b:  # b holds op(b)^T: d b = g^T @ op(a)
                kernels.batched_matmul(g3, a3, grad_b, True, transpose_a)
            else:  # d b = op(a)^T @ g
                kernels.batched_matmul(a3, g3, grad_b, not transpose_a, False)
        else:
            kernels.cosine_backward(inputs[0], inputs[1], grad, grads[0], grads[1])
        return grads

    def _concat_view(self, array: Any) -> Any:
        """A 3-D view (outer, axis, inner) of ``array`` around the concat axis."""
        shape = tuple(array.shape)
        axis = self.concat_axis % len(shape)
        return array.reshape(_product(shape[:axis]), shape[axis], _product(shape[axis + 1 :]))

    def merges_masks(self, shapes: Sequence[Shape]) -> bool:
        """Whether a (batch, time) mask still describes the merged output's time axis."""
        if self.mode in ("dot", "cos"):
            return False
        return not (self.mode == "concat" and self.concat_axis % len(shapes[0]) == 1)

    def get_config(self) -> dict[str, Any]:
        dot_axes = self.dot_axes
        if isinstance(dot_axes, tuple | list):
            dot_axes = [list(a) for a in dot_axes]
        return {"mode": self.mode, "concat_axis": self.concat_axis, "dot_axes": dot_axes}


class MergeNode(Layer):
    """A layer fed by several parents whose outputs it merges (a Graph node's ``inputs``).

    Input shapes: those of the parents. Output shape: by the merge mode. Masks
    of the parents are combined (a step is kept when every masked parent keeps it).
    """

    passes_mask = True

    def __init__(
        self,
        parents: Sequence[Layer],
        mode: str = "concat",
        concat_axis: int = -1,
        dot_axes: Any = -1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.merge = MergeFunction(mode, concat_axis, dot_axes, owner=self.label)
        self.parents: list[Layer] = []
        self._shapes: dict[tuple[tuple[int, ...], ...], tuple[int, ...]] = {}
        if parents:
            self.set_parents(parents)

    def set_parents(self, parents: Sequence[Layer]) -> None:
        """Connect every parent (checking the merged shape) and adopt their dtype and device."""
        parents = list(parents)
        names = [parent.name for parent in parents]
        self.output_shape_value = self.merge.output_shape([p.output_shape for p in parents], names)
        dtypes = {parent.dtype for parent in parents}
        if len(dtypes) > 1:
            raise TypeError(
                f"{self.label}: inputs {names} have different dtypes {sorted(map(str, dtypes))}"
            )
        self._change_dtype(parents[0].dtype)
        self.to(parents[0].device)
        self.parents = parents
        self.built = True

    # the several-parents versions of the single-parent contract
    @property
    def input_shape(self) -> Any:
        return [parent.output_shape for parent in self.parents]

    @property
    def output_shape(self) -> Shape:
        return self.output_shape_value

    def _token(self) -> int:
        return max(parent._output_token() for parent in self.parents)

    def parent_layers(self) -> list[Layer]:
        return list(self.parents)

    def get_input(self, train: bool = False) -> Any:
        return [parent.get_output(train) for parent in self.parents]

    def produces_mask(self) -> bool:
        shapes = self.input_shape
        return self.merge.merges_masks(shapes) and any(p.produces_mask() for p in self.parents)

    def get_input_mask(self, train: bool = False) -> Any:
        if not self.produces_mask():
            return None
        masks = [p.get_output_mask(train) for p in self.parents if p.produces_mask()]
        if len(masks) == 1:
            return masks[0]
        combined = self.buffer("input_mask", tuple(masks[0].shape))
        self.kernels.combine_masks_all(masks[0], masks[1], combined)
        for mask in masks[2:]:
            self.kernels.combine_masks_all(mask, combined, combined)
        return combined

    def _check_input(self, x: Any) -> None:
        if not isinstance(x, list) or len(x) != len(self.parents):
            raise ValueError(f"{self.label} expects a list of {len(self.parents)} inputs")
        for array, shape in zip(x, self.input_shape, strict=True):
            self._check_array(array, "input")
            if len(array.shape) != len(shape) or any(
                e is not None and e != s for e, s in zip(shape, array.shape, strict=False)
            ):
                raise ValueError(
                    f"{self.label} expects inputs of shapes {self.input_shape}, "
                    f"received {[tuple(a.shape) for a in x]}"
                )

    def _forward(self, x: Any, train: bool) -> Any:
        self.save(inputs=x)
        return self.merge.forward(self.kernels, x, self._runtime_shape(x), self.buffer)

    def _runtime_shape(self, x: Sequence[Any]) -> tuple[int, ...]:
        """The output shape for these arrays (remembered per input shapes)."""
        key = tuple(tuple(a.shape) for a in x)
        if key not in self._shapes:
            shape = self.merge.output_shape(key, [p.name for p in self.parents])
            self._shapes[key] = tuple(int(d) for d in shape if d is not None)
        return self._shapes[key]

    def _backward(self, grad_output: Any) -> list[Any]:
        return self.merge.backward(self.kernels, self.saved()["inputs"], grad_output, self.buffer)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self.merge.get_config())
        return config


class Merge(MergeNode):
    """Merge the outputs of several Sequential models (Keras 0.3's Merge layer).

    A Sequential that starts with a Merge takes a list of inputs, one per branch; a
    branch merged with itself (``Merge([left, left])``) takes one input, as in Keras 0.3.

    Args:
        layers: the branch models (Sequential), or layers.
        mode: sum, mul, ave, concat, dot or cos.
        concat_axis: axis for concat.
        dot_axes: axes for dot and cos.

    Example:
        >>> left, right = Sequential(), Sequential()
        >>> left.add(Dense(4, input_shape=(3,))); right.add(Dense(4, input_shape=(5,)))
        >>> model = Sequential(); model.add(Merge([left, right], mode="sum"))
        >>> model.predict([np.ones((2, 3)), np.ones((2, 5))]).shape
        (2, 4)
    """

    def __init__(
        self,
        layers: Sequence[Any],
        mode: str = "sum",
        concat_axis: int = -1,
        dot_axes: Any = -1,
        **kwargs: Any,
    ) -> None:
        if len(layers) < 2:
            raise ValueError(f"Merge needs at least 2 branches, received {len(layers)}")
        self.branches = list(layers)
        outputs = [
            branch.layers[-1] if hasattr(branch, "layers") else branch for branch in self.branches
        ]
        super().__init__(outputs, mode, concat_axis, dot_axes, **kwargs)

    @property
    def distinct_branches(self) -> list[Any]:
        """The branches, each once (in order of first appearance): one input each."""
        distinct: list[Any] = []
        for branch in self.branches:
            if not any(branch is seen for seen in distinct):
                distinct.append(branch)
        return distinct

    def _branch_positions(self) -> list[int]:
        """For each branch, its index in :attr:`distinct_branches`."""
        distinct = self.distinct_branches
        return [
            next(i for i, seen in enumerate(distinct) if seen is branch) for branch in self.branches
        ]

    def input_branches(self) -> list[Any]:
        """The branches that take the model's inputs, in order: each distinct branch, or,
        for a branch that itself starts with a Merge, that Merge's input branches (Keras
        0.3 flattens them: a Merge of a Merge takes one flat list of arrays). A branch
        found again, at any depth, takes no second input (Keras 0.3's memory network
        example merges its question branch at two depths and feeds it once)."""
        found: list[Any] = []
        for branch in self.distinct_branches:
            inner = _merge_first(branch)
            for leaf in inner.input_branches() if inner is not None else [branch]:
                if not any(leaf is seen for seen in found):
                    found.append(leaf)
        return found

    def branch_layers(self) -> list[Layer]:
        """Every layer inside the branches (their weights train with the merged model),
        each once: a layer shared by several branches trains once."""
        found: dict[int, Layer] = {}
        for branch in self.distinct_branches:
            for owner in _weight_owners(branch):
                found.setdefault(id(owner), owner)
        return list(found.values())

    def forward_branches(self, inputs: Sequence[Any], train: bool) -> Any:
        """Give each input branch its input, then merge (the Sequential's first step):
        the branches below, nested Merges included, each run once, as their outputs are
        asked for."""
        leaves = self.input_branches()
        if len(inputs) != len(leaves):
            raise ValueError(
                f"{self.label} takes {len(leaves)} inputs (one per input branch), "
                f"received {len(inputs)}"
            )
        for leaf, x in zip(leaves, inputs, strict=True):
            if hasattr(leaf, "forward_outputs"):  # a nested model: no copy of its input
                leaf.run_forward(x, train)
            else:
                leaf.set_input(x)
        return self.get_output(train)

    def branch_gradients(self, grad_output: Any) -> list[Any]:
        """The gradient reaching each branch (in the order of :attr:`branches`)."""
        return list(self.backward(grad_output))

    def backward_branches(self, grad_output: Any) -> None:
        self.backward_into_branches(self.branch_gradients(grad_output))

    def backward_into_branches(self, grads: Sequence[Any]) -> None:
        """Back-propagate each branch's gradient (``grads``, one per branch, in order)
        through the branches below this Merge, nested Merges' branches included. Each
        branch runs its backward once, parents before children, with the sum of the
        gradients of every place it is merged at; a layer that several branches hold
        (``add_shared_layer``) gets the sum of its weight gradients over them (each
        branch's backward overwrites them)."""
        order = self._branches_parents_first()
        pending: dict[int, Any] = {}
        self._add_gradients(self.branches, grads, pending)
        owners_of = {id(branch): _own_weight_layers(branch) for branch in order}
        shared = _held_by_several(owners_of.values())
        written: set[int] = set()
        for branch in order:
            owners = [owner for owner in owners_of[id(branch)] if id(owner) in written]
            kept = self._kept_gradients(owners)
            grad = pending.pop(id(branch))
            inner = _merge_first(branch)
            if inner is not None:  # down to its own Merge; its branches come later
                self._add_gradients(inner.branches, branch.merge_input_gradients(grad), pending)
            elif hasattr(branch, "forward_outputs"):
                branch.backward(grad, need_input_gradient=False)
            else:
                branch.needs_input_gradient = False
                branch.backward(grad)
            totals_now = [g for owner in owners for g in owner.grads]
            for total, so_far in zip(totals_now, kept, strict=True):
                self.kernels.add_into(so_far, total)
            written.update(id(owner) for owner in owners_of[id(branch)] if id(owner) in shared)

    def _branches_parents_first(self) -> list[Any]:
        """Every branch below this Merge once (those of nested Merges too), each after
        every branch that merges it."""
        finished: list[Any] = []

        def visit(branch: Any) -> None:
            if any(branch is seen for seen in finished):
                return
            inner = _merge_first(branch)
            for child in inner.distinct_branches if inner is not None else []:
                visit(child)
            finished.append(branch)

        for branch in self.distinct_branches:
            visit(branch)
        return finished[::-1]

    def _add_gradients(
        self, branches: Sequence[Any], grads: Sequence[Any], pending: dict[int, Any]
    ) -> None:
        """Add each branch's gradient into ``pending`` (by branch)."""
        for branch, grad in zip(branches, grads, strict=True):
            if id(branch) in pending:
                self.kernels.add_into(grad, pending[id(branch)])
            else:
                pending[id(branch)] = grad

    def _kept_gradients(self, owners: list[Layer]) -> list[Any]:
        """Copies of ``owners``' weight gradients (the sum over the branches so far)."""
        kept = []
        for owner in owners:
            for index, grad in enumerate(owner.grads):
                copy = self.buffer(f"kept:{id(owner)}:{index}", tuple(grad.shape))
                self.kernels.copy(grad, copy)
                kept.append(copy)
        return kept

    def to(self, device: Any) -> Layer:
        for branch in getattr(self, "branches", []):
            branch.to(device)
        return super().to(device)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layers"] = [branch.get_config() for branch in self.distinct_branches]
        if len(config["layers"]) < len(self.branches):
            config["branch_order"] = self._branch_positions()
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Layer:
        config = dict(config)
        config.pop("class_name", None)
        branches = cls.branches_from_config(config, custom_objects)
        config.pop("layers")
        config.pop("branch_order", None)
        return cls(branches, **config)

    @staticmethod
    def branches_from_config(
        config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> list[Any]:
        """The branches a Merge config names (models or layers), in merge order."""
        from numlayers.layers import deserialize
        from numlayers.models import Sequential

        branches: list[Any] = []
        for branch in config["layers"]:
            if branch.get("class_name") == "Sequential":
                branches.append(Sequential.from_config(branch, custom_objects))
            else:
                branches.append(deserialize(branch, custom_objects))
        order = config.get("branch_order", range(len(branches)))
        return [branches[position] for position in order]


def _weight_owners(branch: Any) -> list[Layer]:
    """The layers holding a branch's weights (a model's, or a layer's)."""
    return branch.all_layers() if hasattr(branch, "all_layers") else branch.weight_layers()


def _merge_first(branch: Any) -> Merge | None:
    """The Merge a Sequential branch starts with (None for any other branch)."""
    return getattr(branch, "merge_first", None)


def _own_weight_layers(branch: Any) -> list[Layer]:
    """The layers holding a branch's weights but for those of the branches it merges (a
    nested merged model's layers after its Merge, a Siamese's shared layer)."""
    owners = _weight_owners(branch)
    inner = _merge_first(branch)
    if inner is None:
        return owners
    below = {id(owner) for child in inner.distinct_branches for owner in _weight_owners(child)}
    return [owner for owner in owners if id(owner) not in below]


def _held_by_several(groups: Iterable[list[Layer]]) -> set[int]:
    """The ids of the layers found in more than one of ``groups``."""
    seen: set[int] = set()
    shared: set[int] = set()
    for group in groups:
        ids = {id(owner) for owner in group}
        shared |= ids & seen
        seen |= ids
    return shared


class _TracedMerge(MergeNode):
    """A node merging its parents' outputs by a function of their list, traced (see
    :mod:`numlayers.tracing`): the merge's kernels and gradients come from the trace.

    A Graph node ``add_node(Lambda(f), inputs=[...], merge_mode=None)`` is one; with
    ``keys`` (a Graph's ``merge_mode="join"``) the function takes a dict of the outputs
    by those names instead of their list. A function that cannot be traced runs with
    NumPy on the host and cannot be trained through (a warning says why).
    """

    def __init__(
        self,
        parents: Sequence[Layer],
        function: Callable[..., Any],
        output_shape: Any = None,
        keys: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(function):
            raise TypeError(
                f"{type(self).__name__}: function must be callable, received {function!r}"
            )
        # read by set_parents, which the base constructor calls
        self.function = function
        self.keys = None if keys is None else list(keys)
        self._given_output_shape = output_shape
        self._traced_call: Any = None
        super().__init__(parents, **kwargs)

    @property
    def summary_kind(self) -> str:
        # a Graph's Lambda of several inputs is what the user added: a Lambda
        return "Lambda" if type(self) is _TracedMerge else type(self).__name__

    def _arguments(self, inputs: list[Any]) -> Any:
        """What the function takes for ``inputs`` (one per parent): their list, or the
        dict of them by ``keys``."""
        if self.keys is None:
            return inputs
        return dict(zip(self.keys, inputs, strict=True))

    def _apply(self, inputs: list[Any]) -> Any:
        return self.function(self._arguments(inputs))

    @property
    def traced_call(self) -> Any:
        if self._traced_call is None:
            from numlayers.tracing.layer import TracedCall

            self._traced_call = TracedCall(self._apply, self.label, as_list=True)
        return self._traced_call

    def set_parents(self, parents: Sequence[Layer]) -> None:
        parents = list(parents)
        dtypes = {parent.dtype for parent in parents}
        if len(dtypes) > 1:
            raise TypeError(
                f"{self.label}: inputs {[p.name for p in parents]} have different dtypes "
                f"{sorted(map(str, dtypes))}"
            )
        self._change_dtype(parents[0].dtype)
        self.to(parents[0].device)
        self.parents = parents
        self.output_shape_value = self._merged_shape([p.output_shape for p in parents])
        self.built = True

    def _merged_shape(self, shapes: list[Shape]) -> Shape:
        batch = shapes[0][0]
        given = self._given_output_shape
        if callable(given):
            return tuple(given(self._arguments(shapes)))
        traced = None
        if all(None not in s[1:] for s in shapes):
            traced = self.traced_call.output_shape([(None, *s[1:]) for s in shapes], self.dtype)
        if given is not None:
            expected = (batch, *given)
            if traced is not None and tuple(traced[1:]) != tuple(given):
                raise ValueError(
                    f"{self.label}: function returned shape {(batch, *traced[1:])}, expected "
                    f"{expected}"
                )
            return expected
        if traced is None:
            probe = [
                np.zeros((2, *(1 if d is None else d for d in s[1:])), self.dtype) for s in shapes
            ]
            return (batch, *np.shape(self._apply(probe))[1:])
        return (batch, *traced[1:])

    def produces_mask(self) -> bool:
        return False

    def supports_masked_input(self) -> bool:
        return False

    def get_input_mask(self, train: bool = False) -> Any:
        return None

    def _forward(self, x: Any, train: bool) -> Any:
        shapes = [(None, *a.shape[1:]) for a in x]
        executable = self.traced_call.executable(shapes, self.dtype, self.device)
        if executable is None:
            host = [self.device.to_host(a) for a in x]
            y = np.asarray(self._apply(host))
            if y.dtype.kind not in "biuf":
                raise TypeError(
                    f"{self.label}: function returned dtype {y.dtype}, expected numbers"
                )
            return self.device.asarray(y, self.dtype)
        y, values = executable.forward(list(x), self.buffer)
        self.save(traced=(executable, values))
        return y

    def _backward(self, grad_output: Any) -> list[Any]:
        traced = self.saved().get("traced")
        if traced is None:
            raise RuntimeError(
                f"{self.label}: its function cannot be traced ({self.traced_call.failure}), so "
                "a model cannot be trained through it"
            )
        executable, values = traced
        grads: list[Any] = executable.backward(values, grad_output, self.buffer)
        return grads

    def get_config(self) -> dict[str, Any]:
        from numlayers.serialization import function_reference

        config = Layer.get_config(self)
        given = self._given_output_shape
        config.update(
            function=function_reference(self.function),
            output_shape=function_reference(given)
            if callable(given)
            else (None if given is None else list(given)),
        )
        return config


class LambdaMerge(_TracedMerge, Merge):
    """Merge several Sequential branches (or layers) by a function of the list of their
    outputs (Keras 0.3's LambdaMerge), traced: differentiable with no backward written.

    Args:
        layers: the branch models (Sequential), or layers.
        function: ``f([x1, x2, ...]) -> y`` written with NumPy operations (see Lambda).
        output_shape: None (read from the trace), a tuple without the batch axis, or a
            function of the list of input shapes.

    Example:
        >>> left, right = Sequential(), Sequential()
        >>> left.add(Dense(4, input_shape=(3,))); right.add(Dense(4, input_shape=(5,)))
        >>> model = Sequential()
        >>> model.add(LambdaMerge([left, right], lambda xs: xs[0] * xs[1]))
        >>> model.predict([np.ones((2, 3)), np.ones((2, 5))]).shape
        (2, 4)
    """

    def __init__(
        self,
        layers: Sequence[Any],
        function: Callable[[list[Any]], Any],
        output_shape: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(layers, function, output_shape, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layers"] = [branch.get_config() for branch in self.distinct_branches]
        if len(config["layers"]) < len(self.branches):
            config["branch_order"] = self._branch_positions()
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Layer:
        from numlayers.serialization import resolve_function

        config = dict(config)
        owner = f"LambdaMerge '{config.get('name')}'"
        config["function"] = resolve_function(config["function"], owner, custom_objects)
        if isinstance(config.get("output_shape"), str):
            config["output_shape"] = resolve_function(config["output_shape"], owner, custom_objects)
        return super().from_config(config, custom_objects)
