"""``K.function`` over layer outputs: Keras 0.3's way to read an intermediate layer.

Keras 0.3's FAQ reads a layer's output for new data like this, and it runs unchanged::

    get_3rd_layer_output = K.function([model.layers[0].input],
                                      [model.layers[3].get_output(train=False)])
    layer_output = get_3rd_layer_output([X])[0]

    # a Graph
    get_conv_output = K.function([model.inputs[i].input for i in model.input_order],
                                 [model.nodes["conv"].get_output(train=False)])

numlayers layers compute on arrays, not on symbols, so the pieces mean:

- ``layer.input`` is a :class:`LayerInput`: the layer to feed. Only a layer that takes
  its input from no other layer can be fed (the first layer of a Sequential, a Graph's
  inputs).
- ``layer.get_output(train)`` is the layer's output for the input it was last fed (by
  ``fit``, ``predict`` or an earlier function), as always; before anything was fed, a
  :class:`PendingOutput` standing for it.
- :func:`function` finds the layer behind each output (the array a layer's
  ``get_output`` returned, or the pending output) and checks that every input it is
  computed from is one of the function's. Each call feeds the inputs to their layers
  (as ``set_input`` does), asks the output layers for their outputs with the same train
  flags, and returns copies on the host. Nothing is recompiled; the model's weights are
  read as they are at the call.

An expression of outputs (``K.mean(layer.get_output())``) is computed at once on the
current arrays, not recorded: it is refused as an output, by position. So are
``updates``, which need a symbolic graph.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numlayers.layers.base import Layer

#: every layer made, so that :func:`function` can find the layer whose cached output an
#: array is (layers hold no links to the layers after them)
LIVE_LAYERS: weakref.WeakSet[Layer] = weakref.WeakSet()


class LayerInput:
    """What ``layer.input`` is: the input of ``layer``, which :func:`function` feeds."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer

    def __repr__(self) -> str:
        return f"<input of {self.layer.label}>"


class PendingOutput:
    """What ``get_output`` returns before any input reached the layer: its output for the
    input :func:`function` will feed. It has no values; using it as an array says why."""

    def __init__(self, layer: Layer, train: bool) -> None:
        self.layer = layer
        self.train = train

    def __repr__(self) -> str:
        return f"<output of {self.layer.label} (train={self.train}), nothing fed yet>"

    def no_values(self) -> RuntimeError:
        """The error of asking for this output's values (or its mask)."""
        return RuntimeError(
            f"{self.layer.label} has no input yet, so its output has no values: fit or "
            "predict first, call set_input(x) on the first layer, or pass this output to "
            "K.function"
        )

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise self.no_values()


def feeding_layers(layer: Layer) -> list[Layer]:
    """The layers, at the start of ``layer``'s connections, that take their input from
    no other layer: the ones whose inputs ``layer``'s output is computed from."""
    found: list[Layer] = []
    pending = [layer]
    while pending:
        current = pending.pop()
        parents = current.parent_layers()
        if not parents and not any(current is seen for seen in found):
            found.append(current)
        pending.extend(parents)
    return found


def _output_layer(output: Any, position: int) -> tuple[Layer, bool]:
    """The layer (and train flag) whose ``get_output`` returned ``output``."""
    if isinstance(output, PendingOutput):
        return output.layer, output.train
    if output is not None and not isinstance(output, (list, tuple, dict)):
        for layer in list(LIVE_LAYERS):
            for train, (_, cached) in layer._cache.items():
                if cached is output:
                    return layer, train
    raise ValueError(
        f"K.function: output {position} is not what a layer's get_output(train) returned "
        f"(received {type(output).__name__}): numlayers computes on arrays, so an "
        "expression of outputs was computed once and cannot be run again; pass the "
        "layer's get_output itself"
    )


def _fed_layer(placeholder: Any, position: int) -> Layer:
    if not isinstance(placeholder, LayerInput):
        raise TypeError(
            f"K.function: input {position} must be a layer's input (model.layers[0].input, "
            f"a Graph's model.inputs[name].input), received {type(placeholder).__name__}"
        )
    layer = placeholder.layer
    if layer.parent_layers():
        raise ValueError(
            f"K.function: input {position} is the input of {layer.label}, which takes it "
            "from other layers; feed the first layer of the model (or a Graph input)"
        )
    return layer


class Function:
    """A callable from input arrays to the outputs of layers (see :func:`function`)."""

    def __init__(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        self.inputs = [_fed_layer(placeholder, i) for i, placeholder in enumerate(inputs)]
        self.outputs = [_output_layer(output, i) for i, output in enumerate(outputs)]
        for position, (layer, _) in enumerate(self.outputs):
            for root in feeding_layers(layer):
                if not any(root is fed for fed in self.inputs):
                    raise ValueError(
                        f"K.function: output {position} ({layer.label}) is computed from the "
                        f"input of {root.label}, which is not among the function's inputs"
                    )

    def __call__(self, values: Sequence[Any]) -> list[np.ndarray]:
        if isinstance(values, np.ndarray) or not isinstance(values, (list, tuple)):
            raise TypeError(
                f"this function takes a list of {len(self.inputs)} input arrays, received "
                f"{type(values).__name__}"
            )
        if len(values) != len(self.inputs):
            raise ValueError(
                f"this function takes {len(self.inputs)} input arrays, received {len(values)}"
            )
        for layer, value in zip(self.inputs, values, strict=True):
            layer.set_input(value)
        results = []
        for layer, train in self.outputs:
            output = layer.get_output(train)
            results.append(np.array(layer.device.to_host(output), copy=True))
        return results


#: the arguments of Theano's ``function`` that Keras 0.3 passed on and that change nothing
#: here (inputs are cast to the model's dtype anyway)
ACCEPTED_OPTIONS = frozenset({"allow_input_downcast", "name", "on_unused_input"})


def function(
    inputs: Sequence[Any], outputs: Sequence[Any], updates: Sequence[Any] = (), **options: Any
) -> Function:
    """Keras 0.3's ``K.function(inputs, outputs)`` for layer outputs (module doc)."""
    if updates:
        raise ValueError(
            "K.function: updates need a symbolic graph, which numlayers does not build; "
            "train with the model's fit or train_on_batch"
        )
    unknown = sorted(set(options) - ACCEPTED_OPTIONS)
    if unknown:
        raise TypeError(f"K.function: invalid argument(s) {unknown}")
    return Function(list(inputs), list(outputs))
