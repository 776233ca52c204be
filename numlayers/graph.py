"""Graph: a model of named inputs, nodes and outputs (Keras 0.3's Graph container).

Every node is a layer (a Sequential or Graph added as a node is nested as one); a node
with several ``inputs`` gets a MergeNode in front; a shared node applies one layer (one
set of weights) to several inputs.
Outputs are cached per pass, so a node read by several consumers is computed
once, and its gradient is the sum of its consumers' gradients.
"""

from __future__ import annotations

import pprint
from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers.devices import Device, get_device, resolve_dtype
from numlayers.layers import Layer, deserialize
from numlayers.layers.base import as_shape
from numlayers.layers.containers import Container, as_layer
from numlayers.layers.core import Lambda
from numlayers.layers.merging import MergeNode, _TracedMerge
from numlayers.layers.siamese import SharedApplication
from numlayers.serialization import safe_mode_scope
from numlayers.training import Model

#: what the reverse pass needs of one layer (see :meth:`Graph._reverse_step`)
ReverseStep = tuple[Layer, list[Layer | None], bool, Layer | None]


class InputLayer(Layer):
    """A Graph input: the identity, fed with data by the model.

    ``index_input`` inputs hold integer token ids (``dtype="int"``) for Embedding.
    """

    passes_mask = True

    def __init__(self, index_input: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index_input = bool(index_input)
        self._finish_init()

    @property
    def array_dtype(self) -> np.dtype:
        return np.dtype(np.int64) if self.index_input else self.dtype

    def prepare_input(self, x: Any) -> Any:
        if self._on_a_gpu(x):
            return self.device.asarray(x)
        host = np.asarray(x)
        if host.dtype.kind not in ("iu" if self.index_input else "biuf"):
            kind = "integer ids" if self.index_input else "numbers"
            raise TypeError(f"{self.label} expects {kind}, received dtype {host.dtype}")
        return self.device.asarray(host, self.array_dtype)

    def _check_array(self, x: Any, what: str) -> None:
        if not self.device.is_device_array(x):
            raise TypeError(f"{self.label} expects its {what} on {self.device.name}")
        if np.dtype(x.dtype) != self.array_dtype:
            raise TypeError(
                f"{self.label} expects {what} of dtype {self.array_dtype}, received {x.dtype}"
            )

    def _forward(self, x: Any, train: bool) -> Any:
        return x

    def _backward(self, grad_output: Any) -> Any:
        return grad_output

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["index_input"] = self.index_input
        return config


class Graph(Model):
    """A model of named inputs, nodes and outputs.

    Args:
        device: ``"cpu"`` (default) or ``"cuda"``.
        dtype: ``"float32"`` (default) or ``"float64"`` for every float array.
        name: the model's name.

    Example:
        >>> g = Graph()
        >>> g.add_input(name="x", input_shape=(4,))
        >>> g.add_node(Dense(3), name="a", input="x")
        >>> g.add_node(Dense(3), name="b", input="x")
        >>> g.add_node(Dense(1, activation="sigmoid"), name="score", inputs=["a", "b"],
        ...            merge_mode="sum")
        >>> g.add_output(name="out", input="score")
        >>> g.predict({"x": np.zeros((2, 4))})["out"].shape
        (2, 1)
    """

    def __init__(self, device: str | Device = "cpu", dtype: Any = None, name: str = "graph"):
        self.device = get_device(device)
        self.dtype = resolve_dtype(dtype)
        self.name = name
        #: node name -> layer (inputs included), as in Keras 0.3
        self.nodes: dict[str, Layer] = {}
        #: input name -> input layer
        self.inputs: dict[str, InputLayer] = {}
        #: output name -> the layer whose output it is
        self.outputs: dict[str, Layer] = {}
        self.input_order: list[str] = []
        self.output_order: list[str] = []
        self.node_config: list[dict[str, Any]] = []
        self._order: list[Layer] = []  # every layer in topological order (merges too)
        #: shared node name -> its applications, for a shared node not merged
        self._unmerged_shared: dict[str, list[Layer]] = {}
        #: join node name -> (the layers it joins, their names): a dict a Lambda takes
        self._joins: dict[str, tuple[list[Layer], list[str]]] = {}
        self._shared_models: list[Model] = []  # Sequential models shared whole
        self._consumers: dict[int, int] = {}
        self._complete_at: tuple[int, int, int] | None = None  # sizes when last found complete
        self._needed: list[Layer] = []  # the layers outputs depend on, in topological order
        # (layer, its single parent or None, the parent's position in _needed or -1)
        self._forward_plan: list[tuple[Layer, Layer | None, int]] = []
        self._output_positions: list[int] = []  # each output's position in _needed
        #: the reverse pass, with or without the gradients of the inputs
        self._reverse_plans: dict[bool, list[ReverseStep]] = {}
        self._weight_layers: tuple[int, list[Layer]] = (0, [])  # for a graph of this size

    losses_by_output_name = True

    def __repr__(self) -> str:
        return f"<Graph '{self.name}' with {len(self.nodes)} nodes on {self.device.name}>"

    # ----------------------------------------------------------- building
    def _check_new_name(self, name: Any, what: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"{self.name}: {what} name must be a non-empty string, received {name!r}"
            )
        if name in self.nodes or name in self._unmerged_shared or name in self._joins:
            raise ValueError(f"{self.name}: duplicate name '{name}' (already a node or input)")

    def _resolve(self, name: Any, owner: str) -> Layer:
        if name in self._unmerged_shared:
            raise ValueError(
                f"{self.name}: '{owner}' takes input '{name}', a shared node with one output "
                "per input: take one of its outputs, or give it a merge_mode"
            )
        if name in self._joins:
            raise ValueError(
                f"{self.name}: '{owner}' takes input '{name}', a join (a dict of arrays by "
                f"name): only a Lambda node can take it, with input='{name}'"
            )
        if name not in self.nodes:
            raise ValueError(
                f"{self.name}: '{owner}' takes input '{name}', which is not defined yet; "
                f"defined: {sorted(self.nodes)} (a node can only read earlier nodes, so cycles "
                "cannot be built)"
            )
        return self.nodes[name]

    def _shared_inputs(self, names: Sequence[str], owner: str) -> tuple[list[Layer], list[str]]:
        """The nodes ``names`` name, each output of an unmerged shared node standing for
        all of them (shared nodes chain), with the name of each."""
        layers: list[Layer] = []
        keys: list[str] = []
        for name in names:
            if name in self._unmerged_shared:
                applications = self._unmerged_shared[name]
                layers.extend(applications)
                keys.extend(application.name for application in applications)
            else:
                layers.append(self._resolve(name, owner))
                keys.append(name)
        return layers, keys

    def _adopt(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"{self.name}: expected a Layer, received {layer!r}")
        if layer._explicit_dtype and layer.dtype != self.dtype:
            raise TypeError(f"{layer.label} has dtype {layer.dtype}, the graph uses {self.dtype}")
        layer._change_dtype(self.dtype)
        layer.to(self.device)

    def _register(self, layer: Layer) -> None:
        self._order.append(layer)
        parents = layer.parents if isinstance(layer, MergeNode) else [layer.previous]
        for parent in parents:
            if parent is not None:
                self._consumers[id(parent)] = self._consumers.get(id(parent), 0) + 1

    def _parent(
        self,
        owner: str,
        input: Any,
        inputs: Sequence[str],
        merge_mode: str | None,
        concat_axis: int,
        dot_axes: Any,
    ) -> Layer:
        """The layer feeding ``owner``: one named node, or a merge of several."""
        if input is not None and inputs:
            raise ValueError(f"{self.name}: '{owner}' takes input or inputs, not both")
        if input is not None:
            return self._resolve(input, owner)
        if not inputs:
            raise ValueError(f"{self.name}: '{owner}' needs input= or inputs=[...]")
        if len(inputs) < 2:
            raise ValueError(
                f"{self.name}: '{owner}' has inputs={list(inputs)}: use input= for one"
            )
        if merge_mode == "join":
            raise ValueError(
                f"{self.name}: '{owner}' has merge_mode='join', which gives a dict of arrays "
                "by name: only a Lambda node can take it"
            )
        parents = [self._resolve(name, owner) for name in inputs]
        merge = MergeNode(
            [],
            merge_mode or "concat",
            concat_axis,
            dot_axes,
            name=f"{owner}_merge",
            dtype=self.dtype,
        )
        merge.merge.owner = f"{self.name}: merge of {list(inputs)} into '{owner}'"
        merge.set_parents(parents)
        self._register(merge)
        return merge

    def _function_of_inputs(
        self,
        layer: Layer,
        name: str,
        input: str | None,
        inputs: Sequence[str],
        merge_mode: str | None,
    ) -> Layer | None:
        """For a Lambda node of several arrays, a node applying its function to them (None
        for any other node): to the list of the ``inputs``' outputs with
        ``merge_mode=None``, to the dict of them by name with ``merge_mode="join"``, or to
        the dict a join node ``input`` (a shared node's) holds."""
        if not isinstance(layer, Lambda):
            return None
        keys: list[str] | None
        if input is not None and not inputs and input in self._joins:
            parents, keys = self._joins[input]
        elif input is None and len(inputs) >= 2 and merge_mode in (None, "join"):
            parents = [self._resolve(input_name, name) for input_name in inputs]
            keys = list(inputs) if merge_mode == "join" else None
        else:
            return None
        return _TracedMerge(
            parents,
            layer.function,
            layer._output_shape,
            keys=keys,
            name=layer.name,
            dtype=self.dtype,
            device=self.device,
        )

    def add_input(
        self,
        name: str,
        input_shape: Sequence[int] | None = None,
        batch_input_shape: Sequence[int | None] | None = None,
        dtype: Any = "float",
    ) -> None:
        """Declare an input; ``dtype="int"`` for token ids (Embedding inputs). As in Keras
        0.3, ``int`` and ``float`` (or a NumPy integer or float dtype) are taken too."""
        self._check_new_name(name, "input")
        dtype = _input_kind(dtype, f"{self.name}: input '{name}'")
        if input_shape is None and batch_input_shape is None:
            raise ValueError(f"{self.name}: input '{name}' needs input_shape or batch_input_shape")
        layer = InputLayer(
            index_input=dtype == "int",
            input_shape=input_shape,
            batch_input_shape=batch_input_shape,
            name=name,
            dtype=self.dtype,
            device=self.device,
        )
        self.nodes[name] = self.inputs[name] = layer
        self.input_order.append(name)
        self._register(layer)
        self.node_config.append(
            {
                "kind": "input",
                "name": name,
                "dtype": dtype,
                "batch_input_shape": list(layer.input_shape),
            }
        )

    def add_node(
        self,
        layer: Layer | Model,
        name: str,
        input: str | None = None,
        inputs: Sequence[str] = (),
        merge_mode: str | None = "concat",
        concat_axis: int = -1,
        dot_axes: Any = -1,
        create_output: bool = False,
    ) -> None:
        """Add ``layer`` as node ``name``, fed by ``input`` or by a merge of ``inputs``.

        A :class:`~numlayers.layers.Lambda` with ``inputs`` and ``merge_mode=None`` takes
        the list of the inputs' outputs, and with ``merge_mode="join"`` (or ``input`` a
        shared node joined so) the dict of them by node name, as in Keras 0.3; its
        function is traced, so it trains too.

        A Sequential or Graph (of one input and one output) is nested as one layer
        (a :class:`~numlayers.layers.Container`): its layers train with this graph.
        """
        self._check_new_name(name, "node")
        layer = as_layer(layer)
        if input == name or name in inputs:
            raise ValueError(f"{self.name}: node '{name}' cannot take its own output (no cycles)")
        if any(layer is node for node in self.nodes.values()):
            raise ValueError(f"{self.name}: {layer.label} is already a node (use add_shared_node)")
        self._adopt(layer)
        node = self._function_of_inputs(layer, name, input, inputs, merge_mode)
        if node is None:
            parent = self._parent(name, input, inputs, merge_mode, concat_axis, dot_axes)
            layer.set_previous(parent)
            node = layer
        self.nodes[name] = node
        self._register(node)
        self.node_config.append(
            {
                "kind": "node",
                "name": name,
                "layer": layer,
                "input": input,
                "inputs": list(inputs),
                "merge_mode": merge_mode,
                "concat_axis": concat_axis,
                "dot_axes": dot_axes,
            }
        )
        if create_output:
            self.add_output(name, input=name)

    def add_shared_node(
        self,
        layer: Layer | Model,
        name: str,
        inputs: Sequence[str],
        merge_mode: str | None = None,
        concat_axis: int = -1,
        dot_axes: Any = -1,
        outputs: Sequence[str] = (),
        create_output: bool = False,
    ) -> None:
        """Apply one layer (one set of weights) to each of ``inputs``.

        ``layer`` may be a Sequential: each input then goes through the whole stack of its
        layers, every one shared (Keras 0.3's Siamese networks share a base network so).
        With ``merge_mode`` the applications are merged into node ``name``; with
        ``"join"``, node ``name`` is the dict of them by input name, which a Lambda node
        takes (``add_node(Lambda(f), name=..., input=name)``). Without a merge mode each
        application is a node of its own, named by ``outputs`` (one name per input), and
        ``name`` stands for all of them: a later shared node with ``inputs=[name]`` takes
        each one (shared nodes chain, as in Keras 0.3). ``create_output`` makes node
        ``name`` an output, or each of ``outputs``.
        """
        stack = self._shared_stack(layer, name)
        unmerged_names = list(outputs) if merge_mode is None else []
        for node_name in [name, *unmerged_names]:
            self._check_new_name(node_name, "node")
        if len(set(unmerged_names) | {name}) != 1 + len(unmerged_names):
            raise ValueError(f"{self.name}: shared node '{name}' repeats a name in {outputs}")
        parents, keys = self._shared_inputs(inputs, name)
        if len(parents) < 2:
            raise ValueError(
                f"{self.name}: shared node '{name}' needs at least 2 inputs, "
                f"received {list(inputs)}"
            )
        if unmerged_names and len(unmerged_names) != len(parents):
            raise ValueError(
                f"{self.name}: shared node '{name}' without merge_mode needs one output name "
                f"per input ({len(parents)}), received outputs={list(outputs)}"
            )
        if create_output and merge_mode is None and not unmerged_names:
            raise ValueError(
                f"{self.name}: shared node '{name}' has no merge_mode: create_output needs "
                "outputs=[...] to name each output"
            )
        if create_output and merge_mode == "join":
            raise ValueError(
                f"{self.name}: shared node '{name}' is a join (a dict of arrays), which cannot "
                "be an output: give it to a Lambda node and output that"
            )
        if isinstance(layer, Model):
            layer.to(self.device)
            self._shared_models.append(layer)
        else:
            self._adopt(layer)
        applications: list[Layer] = []
        for index, parent in enumerate(parents):
            label = unmerged_names[index] if unmerged_names else f"{name}_{index}"
            for depth, shared in enumerate(stack):
                last = depth == len(stack) - 1
                application = SharedApplication(
                    shared,
                    name=label if last else f"{label}_{shared.name}",
                    dtype=self.dtype,
                    device=self.device,
                )
                application.set_previous(parent)
                self._register(application)
                parent = application
            applications.append(parent)
            if unmerged_names:
                self.nodes[label] = parent
        if merge_mode == "join":
            self._joins[name] = (applications, keys)
        elif merge_mode is not None:
            merge = MergeNode([], merge_mode, concat_axis, dot_axes, name=name, dtype=self.dtype)
            merge.merge.owner = f"{self.name}: shared node '{name}'"
            merge.set_parents(applications)
            self._register(merge)
            self.nodes[name] = merge
        else:
            self._unmerged_shared[name] = applications
        self.node_config.append(
            {
                "kind": "shared",
                "name": name,
                "layer": layer,
                "inputs": list(inputs),
                "merge_mode": merge_mode,
                "concat_axis": concat_axis,
                "dot_axes": dot_axes,
                "outputs": list(outputs),
            }
        )
        if create_output:
            for output_name in unmerged_names or [name]:
                self.add_output(output_name, input=output_name)

    def _shared_stack(self, layer: Any, name: str) -> list[Layer]:
        """The layers a shared node applies in turn: ``layer``, or a Sequential's layers
        (those of the Sequential models nested in it included)."""
        owner = f"{self.name}: shared node '{name}'"
        if isinstance(layer, Container) and type(layer) is Container:
            layer = layer.model
        if isinstance(layer, Graph | Container):
            raise ValueError(
                f"{owner} can share a layer or a Sequential, received {type(layer).__name__} "
                f"'{layer.name}': share its layers one by one"
            )
        if not isinstance(layer, Model):
            return [layer]
        if layer.dtype != self.dtype:
            raise TypeError(
                f"{owner}: Sequential '{layer.name}' has dtype {layer.dtype}, "
                f"the graph uses {self.dtype}"
            )
        layers: list[Layer] = layer.layers  # type: ignore[attr-defined] # a Sequential's
        stack = [shared for inner in layers for shared in self._shared_stack(inner, name)]
        if not stack:
            raise ValueError(f"{owner}: Sequential '{layer.name}' has no layers")
        return stack

    def add_output(
        self,
        name: str,
        input: str | None = None,
        inputs: Sequence[str] = (),
        merge_mode: str = "concat",
        concat_axis: int = -1,
        dot_axes: Any = -1,
    ) -> None:
        """Declare output ``name``: node ``input``, or a merge of ``inputs``."""
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"{self.name}: output name must be a non-empty string, received {name!r}"
            )
        if name in self.outputs:
            raise ValueError(f"{self.name}: duplicate output name '{name}'")
        layer = self._parent(name, input, inputs, merge_mode, concat_axis, dot_axes)
        self.outputs[name] = layer
        self.output_order.append(name)
        self.node_config.append(
            {
                "kind": "output",
                "name": name,
                "input": input,
                "inputs": list(inputs),
                "merge_mode": merge_mode,
                "concat_axis": concat_axis,
                "dot_axes": dot_axes,
            }
        )

    def _check_complete(self) -> None:
        # a graph only grows: its sizes tell whether it changed since the last check
        sizes = (len(self.inputs), len(self._order), len(self.outputs))
        if sizes == self._complete_at:
            return
        if not self.inputs or not self.outputs:
            raise RuntimeError(f"{self.name} needs at least one input and one output")
        used: set[int] = set()
        pending = list(self.outputs.values())
        while pending:
            layer = pending.pop()
            if id(layer) in used:
                continue
            used.add(id(layer))
            pending.extend(
                layer.parents
                if isinstance(layer, MergeNode)
                else [layer.previous]
                if layer.previous is not None
                else []
            )
        unused = [name for name, layer in self.inputs.items() if id(layer) not in used]
        if unused:
            raise ValueError(f"{self.name}: input(s) {unused} feed no output")
        self._complete_at = sizes
        self._needed = [layer for layer in self._order if id(layer) in used]
        position = {id(layer): index for index, layer in enumerate(self._needed)}
        # forward: each needed layer with its single parent and the parent's position
        # (None for inputs and merges, which fetch their own inputs)
        self._forward_plan = []
        for layer in self._needed:
            parent = None if isinstance(layer, MergeNode) else layer.previous
            self._forward_plan.append(
                (layer, parent, -1 if parent is None else position[id(parent)])
            )
        self._output_positions = [position[id(self.outputs[name])] for name in self.output_order]
        self._reverse_plans = {
            into_inputs: [
                self._reverse_step(layer, into_inputs) for layer in reversed(self._needed)
                if not isinstance(layer, InputLayer)
            ]
            for into_inputs in (False, True)
        }  # fmt: skip

    @staticmethod
    def _reverse_step(layer: Layer, into_inputs: bool) -> ReverseStep:
        """What the reverse pass needs of ``layer``: the parents that take a gradient
        from it (None for no parent, or an input unless ``into_inputs``), whether it must
        compute its input gradient at all, and the layer it shares weights with."""
        parents = layer.parents if isinstance(layer, MergeNode) else [layer.previous]
        receivers = [None if isinstance(p, InputLayer) and not into_inputs else p for p in parents]
        shared = layer.shared if isinstance(layer, SharedApplication) else None
        return layer, receivers, any(p is not None for p in receivers), shared

    # ------------------------------------------------- what training needs
    @property
    def input_names(self) -> list[str]:
        return list(self.input_order)

    @property
    def output_names(self) -> list[str]:
        return list(self.output_order)

    @property
    def nb_input(self) -> int:
        return len(self.inputs)

    @property
    def nb_output(self) -> int:
        return len(self.outputs)

    @property
    def input_shape(self) -> Any:
        """The input's shape, or a dict of them by name when there are several (Keras 0.3)."""
        shapes = dict(zip(self.input_order, self.input_shapes(), strict=True))
        return next(iter(shapes.values())) if len(shapes) == 1 else shapes

    @property
    def output_shape(self) -> Any:
        """The output's shape, or a dict of them by name when there are several (Keras 0.3).

        Example:
            >>> graph = Graph()
            >>> graph.add_input("x", input_shape=(3,))
            >>> graph.add_node(Dense(2), name="a", input="x", create_output=True)
            >>> graph.add_node(Dense(4), name="b", input="x", create_output=True)
            >>> graph.output_shape
            {'a': (None, 2), 'b': (None, 4)}
            >>> graph.input_shape, graph.nb_input, graph.nb_output
            ((None, 3), 1, 2)
        """
        shapes = {name: self.outputs[name].output_shape for name in self.output_order}
        return next(iter(shapes.values())) if len(shapes) == 1 else shapes

    def input_shapes(self) -> list[tuple[int | None, ...]]:
        return [self.inputs[name].input_shape for name in self.input_order]

    def input_layers(self) -> list[Layer]:
        return [self.inputs[name] for name in self.input_order]

    def output_layers(self) -> list[Layer]:
        self._check_complete()
        return [self.outputs[name] for name in self.output_order]

    def applied_layers(self) -> list[Layer]:
        return list(self._order)

    def all_layers(self) -> list[Layer]:
        """Layers with weights, in order (a shared layer once)."""
        if self._weight_layers[0] != len(self._order):  # found again when the graph grew
            self._weight_layers = (len(self._order), self._find_weight_layers())
        return self._weight_layers[1]

    def _find_weight_layers(self) -> list[Layer]:
        found: list[Layer] = []
        for layer in self._order:
            target = layer.shared if isinstance(layer, SharedApplication) else layer
            if isinstance(target, InputLayer | MergeNode):
                continue
            for owner in target.weight_layers():
                if all(owner is not f for f in found):
                    found.append(owner)
        return found

    def allows_fused_output(self, layer: Layer) -> bool:
        appearances = sum(1 for output in self.outputs.values() if output is layer)
        return appearances == 1 and self._consumers.get(id(layer), 0) == 0

    def _by_name(self, data: Any, names: list[str], what: str) -> list[Any]:
        if not isinstance(data, dict):
            raise TypeError(
                f"{self.name}: {what} must be a dict keyed by name, received {type(data).__name__}"
            )
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"{self.name}: missing {what} {missing} (have {sorted(data)})")
        return [
            np.asarray(
                data[name].copy_to_host() if hasattr(data[name], "copy_to_host") else data[name]
            )
            for name in names
        ]

    def standardize_inputs(self, X: Any) -> list[Any]:
        self._check_complete()
        return self._by_name(X, self.input_order, "inputs")

    def standardize_targets(self, y: Any) -> list[Any]:
        return self._by_name(y, self.output_order, "targets")

    def wrap_outputs(self, outputs: list[Any]) -> Any:
        return dict(zip(self.output_order, outputs, strict=True))

    def forward_outputs(
        self, inputs: list[Any], train: bool, masks: Sequence[Any] | None = None
    ) -> list[Any]:
        masks = masks or [None] * len(inputs)
        for name, array, mask in zip(self.input_order, inputs, masks, strict=True):
            self.inputs[name].set_input(array, mask)  # set_input prepares it
        # Every layer an output needs, once, in order. A single-parent layer is handed its
        # parent's output, mask and token (asking for them would walk back up the
        # graph for every layer); inputs and merges fetch their own.
        self._check_complete()
        computed: list[tuple[Any, int]] = []
        for node, parent, parent_at in self._forward_plan:
            if parent is None:
                computed.append((node.get_output(train), node._token()))
            else:
                x, token = computed[parent_at]
                output = node.output_for(x, parent.saved()["output_mask"], token, train)
                computed.append((output, token))
        return [computed[at][0] for at in self._output_positions]

    def backward_outputs(
        self, grads: list[Any], from_preactivation: list[bool], need_input_gradients: bool = False
    ) -> list[Any] | None:
        """Reverse pass: each layer once, its gradient the sum over its consumers."""
        kernels = self.device.kernels(self.dtype)
        pending: dict[int, Any] = {}
        owned: dict[int, Any] = {}
        fused: dict[int, bool] = {}

        def accumulate(layer: Layer, grad: Any) -> None:
            key = id(layer)
            if key not in pending:
                pending[key] = grad
                return
            if key not in owned:  # a second consumer: sum into a buffer of the graph's own
                buffer = self._gradient_buffer(layer, tuple(grad.shape))
                kernels.copy(pending[key], buffer)
                owned[key] = pending[key] = buffer
            kernels.add_into(grad, pending[key])

        for name, grad, flag in zip(self.output_order, grads, from_preactivation, strict=True):
            accumulate(self.outputs[name], grad)
            fused[id(self.outputs[name])] = flag
        writes: dict[int, int] = {}
        self._check_complete()
        for layer, receivers, needs_input_gradient, shared in self._reverse_plans[
            need_input_gradients
        ]:
            grad = pending.pop(id(layer), None)
            if grad is None:
                continue
            layer.needs_input_gradient = needs_input_gradient
            kept = None
            if shared is not None and writes.get(id(shared)):
                # each application's backward overwrites the weight gradients: keep the sum
                # of the applications before it
                kept = [
                    self._copy_of(kernels, g, f"{id(shared)}:{i}")
                    for i, g in enumerate(_weight_gradients(shared))
                ]
            result = layer.backward(grad, from_preactivation=fused.get(id(layer), False))
            if shared is not None:
                if kept is not None:
                    for total, grad_so_far in zip(_weight_gradients(shared), kept, strict=True):
                        kernels.add_into(grad_so_far, total)
                writes[id(shared)] = writes.get(id(shared), 0) + 1
            results = result if isinstance(result, list) else [result]
            for receiver, parent_grad in zip(receivers, results, strict=True):
                if receiver is not None and parent_grad is not None:
                    accumulate(receiver, parent_grad)
        if not need_input_gradients:
            return None
        return [pending.get(id(layer)) for layer in self.input_layers()]

    def _gradient_buffer(self, layer: Layer, shape: tuple[int, ...]) -> Any:
        return self._scratch(f"grad:{id(layer)}", shape)

    def _copy_of(self, kernels: Any, array: Any, key: str) -> Any:
        copy = self._scratch(key, tuple(array.shape))
        kernels.copy(array, copy)
        return copy

    def _scratch(self, key: str, shape: tuple[int, ...]) -> Any:
        store = self.__dict__.setdefault("_scratch_buffers", {})
        array = store.get(key)
        if array is None or tuple(array.shape) != shape or not self.device.is_device_array(array):
            array = store[key] = self.device.empty(shape, self.dtype)
        return array

    def to(self, device: Any) -> Graph:
        super().to(device)
        for model in self._shared_models:  # its layers moved, the model follows them
            model.to(device)
        self.__dict__.pop("_scratch_buffers", None)
        return self

    # ------------------------------------ Keras 0.3's dict-of-arrays calls
    def _split(self, data: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(data, dict):
            raise TypeError(
                f"{self.name}: data must be a dict of arrays keyed by input and output names"
            )
        unknown = set(data) - set(self.input_order) - set(self.output_order)
        if unknown:
            raise ValueError(f"{self.name}: data has unknown names {sorted(unknown)}")
        return (
            {k: v for k, v in data.items() if k in self.inputs},
            {k: v for k, v in data.items() if k in self.outputs},
        )

    def fit(self, data: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Train on ``data``, a dict holding every input and every output by name."""
        X, y = self._split(data)
        validation = kwargs.get("validation_data")
        if isinstance(validation, dict):
            kwargs["validation_data"] = self._split(validation)
        return super().fit(X, y, *args, **kwargs)

    def evaluate(self, data: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        X, y = self._split(data)
        return super().evaluate(X, y, *args, **kwargs)

    def train_on_batch(self, data: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        X, y = self._split(data)
        return super().train_on_batch(X, y, *args, **kwargs)

    def test_on_batch(self, data: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        X, y = self._split(data)
        return super().test_on_batch(X, y, *args, **kwargs)

    def _generator_batch(self, item: Any, owner: str) -> tuple[Any, Any, Any]:
        """A generator's batch for a Graph: a dict of arrays by input and output name, or
        ``(that dict, a dict of sample weights by output name)``."""
        weights = None
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], dict):
            item, weights = item
        if not isinstance(item, dict):
            kind = type(item).__name__
            raise TypeError(
                f"{owner}: expected a dict of arrays by input and output name, or (that dict, "
                f"a dict of sample weights by output name), received a {kind}"
            )
        X, y = self._split(item)
        return X, y, weights

    def predict(self, data: Any, batch_size: int = 128, verbose: int = 0) -> Any:
        return super().predict(self._split(data)[0], batch_size, verbose)

    def predict_on_batch(self, data: Any) -> Any:
        return super().predict_on_batch(self._split(data)[0])

    # ------------------------------------------------------ config, summary
    def summary_rows(self) -> list[tuple[Layer, str]]:
        # a node is the layer added, or what stands for it in the graph (a Lambda of
        # several inputs is a merge node); a shared node shows the layer it shares
        return [
            (
                self.nodes.get(entry["name"], entry["layer"])
                if entry["kind"] == "node"
                else entry["layer"],
                entry.get("input") or ", ".join(entry["inputs"]),
            )
            for entry in self.node_config
            if entry["kind"] in ("node", "shared")
        ]

    def get_config(self, verbose: int = 0) -> dict[str, Any]:
        """The graph as plain data (printed too with ``verbose``, as Keras 0.3)."""
        nodes = []
        for entry in self.node_config:
            entry = dict(entry)
            if "layer" in entry:
                entry["layer"] = entry["layer"].get_config()
            nodes.append(entry)
        config = {
            "class_name": "Graph",
            "name": self.name,
            "dtype": self.dtype.name,
            "nodes": nodes,
            **self.compile_config(),
        }
        if verbose:
            pprint.pprint(config)
        return config

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        custom_objects: dict[str, Any] | None = None,
        safe_mode: bool | None = None,
    ) -> Graph:
        """Rebuild a graph from :meth:`get_config`, running no code (``safe_mode`` as in
        :func:`numlayers.layers.deserialize`)."""
        with safe_mode_scope(safe_mode):
            return cls._from_config(config, custom_objects)

    @classmethod
    def _from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None) -> Graph:
        graph = cls(name=config.get("name", "graph"), dtype=config.get("dtype", "float32"))
        for entry in config["nodes"]:
            entry = dict(entry)
            kind = entry.pop("kind")
            if kind == "input":
                shape = as_shape(entry["batch_input_shape"], "batch_input_shape", graph.name)
                graph.add_input(entry["name"], batch_input_shape=shape, dtype=entry["dtype"])
            elif kind == "node":
                layer = deserialize(entry.pop("layer"), custom_objects)
                graph.add_node(layer, **entry)
            elif kind == "shared":
                layer_config = entry.pop("layer")
                if layer_config.get("class_name") == "Sequential":  # a shared base network
                    from numlayers.models import model_from_config

                    shared: Layer | Model = model_from_config(layer_config, custom_objects)
                else:
                    shared = deserialize(layer_config, custom_objects)
                graph.add_shared_node(shared, **entry)
            else:
                graph.add_output(**entry)
        return graph


def _weight_gradients(layer: Layer) -> list[Any]:
    """The gradients of ``layer``'s weights, those of the layers it wraps included."""
    return [grad for owner in layer.weight_layers() for grad in owner.grads]


def _input_kind(dtype: Any, owner: str) -> str:
    """``"int"`` or ``"float"``: what a Graph input's ``dtype`` (a name, a Python type or
    a NumPy dtype) says its arrays hold."""
    if dtype in ("float", "int"):
        return str(dtype)
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        kind = ""
    if isinstance(dtype, bool) or kind not in ("i", "u", "f"):
        raise ValueError(
            f"{owner} dtype must be 'float' or 'int' (or an integer or float type), "
            f"received {dtype!r}"
        )
    return "float" if kind == "f" else "int"
