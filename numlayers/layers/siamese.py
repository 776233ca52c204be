"""Sharing one layer (one set of weights) between several inputs: Keras 0.3's Siamese,
SiameseHead and ``add_shared_layer``, and the application node a Graph's shared node
makes of the same mechanism.

Each application of a shared layer is a :class:`SharedApplication`, the shared layer's
use key: the shared layer keeps what each application's forward saved apart, and the
gradients of its weights are summed over the applications (by the Graph for a shared
node, by :class:`Siamese` for its inputs, by :class:`~numlayers.layers.merging.Merge`
for models that each hold an application of one layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from numlayers.layers.base import (
    Layer,
    Shape,
    _name_counters,
    _snake_case,
    inner_layers_from_config,
)
from numlayers.layers.containers import shapes_fit
from numlayers.layers.merging import Merge, MergeNode
from numlayers.layers.wrappers import WeightsOfInnerLayers


class SharedApplication(Layer):
    """One application of a shared layer to one parent.

    This node is the shared layer's use key: the shared layer keeps what each
    application's forward saved (and its buffers) apart, and each application's
    backward reads its own. The weights, and their gradients, are common to all
    applications: the Graph sums the gradients of every application.
    """

    def __init__(self, shared: Layer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shared = shared

    def supports_masked_input(self) -> bool:
        return self.shared.supports_masked_input()

    def produces_mask(self) -> bool:
        return (
            self.shared.passes_mask and self.previous is not None and self.previous.produces_mask()
        )

    def build(self) -> None:
        shape = self.input_shape
        if not self.shared.built:
            self.shared.set_input_shape(shape)
        elif not shapes_fit(self.shared.input_shape, shape):
            raise ValueError(
                f"shared {self.shared.label} was built for inputs {self.shared.input_shape}, "
                f"cannot also take {shape} (from {self.previous.label if self.previous else '?'})"
            )

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return self.shared.compute_output_shape(input_shape)

    def _forward(self, x: Any, train: bool) -> Any:
        y = self.shared.run_forward(x, train, mask=self.saved()["mask"], use=self)
        self.save(output_mask=self.shared.use_state(self).saved[train]["output_mask"])
        return y

    def _backward(self, grad_output: Any) -> Any:
        self.shared.needs_input_gradient = self.needs_input_gradient
        return self.shared.backward(grad_output, use=self)

    def _check_input(self, x: Any) -> None:
        self.shared._check_input(x)


class Siamese(Merge):
    """One layer applied to the outputs of several models, then merged (Keras 0.3).

    A Sequential that starts with a Siamese takes one input per model, as one that
    starts with a :class:`Merge` does; the shared layer's weights train once, from the
    sum of the gradients of its applications.

    Args:
        layer: the layer to share (built by its first application if it is not yet).
        inputs: the models (Sequential) or layers whose outputs it is applied to.
        merge_mode: how to merge the applications' outputs: sum, mul, ave, concat, dot
            or cos (Merge's modes). To keep them apart instead, use
            :func:`add_shared_layer`.
        concat_axis: the axis of ``"concat"`` (Keras 0.3's default 1).
        dot_axes: the axes of ``"dot"`` and ``"cos"``.
        is_graph: accepted for Keras 0.3 scripts; in a Graph use
            ``add_shared_node``.

    Example:
        >>> left, right = Sequential(), Sequential()
        >>> left.add(Dense(3, input_shape=(2,))); right.add(Dense(3, input_shape=(4,)))
        >>> model = Sequential()
        >>> model.add(Siamese(Dense(5), [left, right], merge_mode="sum"))
        >>> model.predict([np.ones((6, 2)), np.ones((6, 4))]).shape
        (6, 5)
    """

    def __init__(
        self,
        layer: Layer,
        inputs: Sequence[Any],
        merge_mode: str | None = "concat",
        concat_axis: int = 1,
        dot_axes: Any = -1,
        is_graph: bool = False,
        **kwargs: Any,
    ) -> None:
        if merge_mode is None:
            raise ValueError(
                "Siamese without a merge_mode keeps the outputs apart: call "
                "add_shared_layer(layer, inputs) to add the shared layer to each model "
                "(or, in a Graph, add_shared_node)"
            )
        if not isinstance(layer, Layer):
            raise TypeError(f"Siamese shares a layer, received {layer!r}")
        if len(inputs) < 2:
            raise ValueError(f"Siamese needs at least 2 inputs, received {len(inputs)}")
        self.layer = layer
        self.branches = list(inputs)
        outputs = [branch.layers[-1] if hasattr(branch, "layers") else branch for branch in inputs]
        # the shared layer takes the branches' dtype, as a model's layers take the model's
        dtype = kwargs.get("dtype") or outputs[0].dtype
        if layer._explicit_dtype and layer.dtype != dtype:
            raise TypeError(f"{layer.label} has dtype {layer.dtype}, its inputs give {dtype}")
        layer._change_dtype(dtype)
        layer.to(outputs[0].device)
        self.applications = [
            SharedApplication(layer, dtype=dtype, device=outputs[0].device) for _ in outputs
        ]
        for application, output in zip(self.applications, outputs, strict=True):
            application.set_previous(output)
        MergeNode.__init__(self, self.applications, merge_mode, concat_axis, dot_axes, **kwargs)

    def branch_layers(self) -> list[Layer]:
        found = super().branch_layers()
        return found + [owner for owner in self.layer.weight_layers() if owner not in found]

    def branch_gradients(self, grad_output: Any) -> list[Any]:
        grads = self.backward(grad_output)
        return [
            application_backward(application, grad, self.layer, position, self.buffer)
            for position, (application, grad) in enumerate(
                zip(self.applications, grads, strict=True)
            )
        ]

    def to(self, device: Any) -> Layer:
        if getattr(self, "layer", None) is not None:
            self.layer.to(device)
        return super().to(device)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layer"] = self.layer.get_config()
        config["merge_mode"] = config.pop("mode")
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Layer:
        (layer,), merge_config = inner_layers_from_config(config, ["layer"], custom_objects)
        branches = Merge.branches_from_config(merge_config, custom_objects)
        merge_config.pop("layers", None)
        merge_config.pop("branch_order", None)
        return cls(layer, branches, **merge_config)


def application_backward(
    application: SharedApplication, grad: Any, shared: Layer, position: int, buffer: Any
) -> Any:
    """``application``'s backward, keeping the sum of the shared layer's weight gradients
    over the applications before it (``position`` of them): each backward overwrites
    them."""
    application.needs_input_gradient = True
    if position == 0:
        return application.backward(grad)
    owners = shared.weight_layers()
    kept = []
    for owner_index, owner in enumerate(owners):
        for grad_index, weight_grad in enumerate(owner.grads):
            copy = buffer(f"kept_{owner_index}_{grad_index}", tuple(weight_grad.shape))
            shared.kernels.copy(weight_grad, copy)
            kept.append(copy)
    grad_x = application.backward(grad)
    totals = [weight_grad for owner in owners for weight_grad in owner.grads]
    for total, so_far in zip(totals, kept, strict=True):
        shared.kernels.add_into(so_far, total)
    return grad_x


class SiameseHead(WeightsOfInnerLayers, SharedApplication):
    """The application of a shared layer that :func:`add_shared_layer` adds to one model
    (Keras 0.3's ``SiameseHead(head)``: the ``head``-th output of a Siamese that keeps its
    outputs apart).

    Its weights are the shared layer's: when the models are merged later, the gradients
    of every head sum into them. A model's config cannot say that a layer is shared
    with another model, so models rebuilt from configs each get their own copy.

    Args:
        head: the position of this head's model among the shared layer's inputs.
        layer: the shared layer.
    """

    def __init__(self, head: int, layer: Layer | None = None, **kwargs: Any) -> None:
        if layer is None:
            raise TypeError(
                "SiameseHead is made by add_shared_layer(layer, inputs), which gives it the "
                "shared layer"
            )
        kind = type(self).__name__
        kwargs.setdefault("name", f"{_snake_case(kind)}_{next(_name_counters[kind])}")
        kwargs.setdefault("dtype", layer.dtype)
        kwargs.setdefault("device", layer.device)
        super().__init__(layer, **kwargs)
        self.head = head
        self._finish_init()

    def weight_layers(self) -> list[Layer]:
        return self.shared.weight_layers()

    def to(self, device: Any) -> Layer:
        if getattr(self, "shared", None) is not None:
            self.shared.to(device)
        return super().to(device)

    def _check_input(self, x: Any) -> None:
        try:
            super()._check_input(x)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{self.label}: {error}") from None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["head"] = self.head
        config["layer"] = self.shared.get_config()
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Layer:
        (layer,), rest = inner_layers_from_config(config, ["layer"], custom_objects)
        return cls(rest.pop("head"), layer, **rest)


def add_shared_layer(layer: Layer, inputs: Sequence[Any]) -> None:
    """Add ``layer`` to every model of ``inputs``, shared: one set of weights, applied
    to each model's output (Keras 0.3). Merge the models afterwards to train them
    together; the weights then get the sum of every model's gradient."""
    for head, model in enumerate(inputs):
        model.add(SiameseHead(head, layer))
