"""Containers of layers: :class:`Sequential` (a stack) and :class:`Graph` (named nodes)."""

from __future__ import annotations

import json
import pprint
from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers import losses, optimizers
from numlayers.devices import Device, get_device, resolve_dtype
from numlayers.graph import Graph
from numlayers.layer_functions import LayerInput
from numlayers.layers import Layer, deserialize
from numlayers.layers.containers import as_layer
from numlayers.layers.merging import Merge
from numlayers.serialization import resolve_function, safe_mode_scope
from numlayers.training import Model, yaml_module

__all__ = ["Graph", "Sequential", "model_from_config", "model_from_json", "model_from_yaml"]


class Sequential(Model):
    """A linear stack of layers, on one device and in one dtype.

    Args:
        layers: layers (or nested Sequential and Graph models) to add in order.
        device: ``"cpu"`` (default) or ``"cuda"``; :meth:`to` moves the model.
        dtype: ``"float32"`` or ``"float64"``, given to every layer that does not name
            its own; by default the backend's ``floatx()`` (float32 unless changed).
        name: the model's name.

    Example:
        >>> model = Sequential()
        >>> model.add(Dense(8, input_shape=(4,), activation="relu"))
        >>> model.add(Dense(2, activation="softmax"))
        >>> model.predict(np.zeros((3, 4))).shape
        (3, 2)
    """

    def __init__(
        self,
        layers: Sequence[Layer] | None = None,
        device: str | Device = "cpu",
        dtype: Any = None,
        name: str = "sequential",
    ) -> None:
        self.layers: list[Layer] = []
        self._caller_inputs: dict[int, Any] = {}  # forward's copies of its input
        self.device = get_device(device)
        self.dtype = resolve_dtype(dtype)
        self.name = name
        for layer in layers or []:
            self.add(layer)

    def __repr__(self) -> str:
        return f"<Sequential '{self.name}' with {len(self.layers)} layers on {self.device.name}>"

    # ------------------------------------------------------------ structure
    def add(self, layer: Layer | Model) -> None:
        """Append ``layer``, connecting it to the previous one (which builds it).

        A Sequential or Graph added here becomes one layer of this model (a
        :class:`~numlayers.layers.Container`): its layers train with this model.
        """
        layer = as_layer(layer)
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a Layer, received {layer!r}")
        if any(existing is layer for existing in self.layers):
            raise ValueError(f"{layer.label} is already in this model")
        if any(existing.name == layer.name for existing in self.layers):
            raise ValueError(f"this model already has a layer named '{layer.name}'")
        if layer._explicit_dtype and layer.dtype != self.dtype:
            raise TypeError(f"{layer.label} has dtype {layer.dtype}, the model uses {self.dtype}")
        layer._change_dtype(self.dtype)
        layer.to(self.device)
        if self.layers:
            layer.set_previous(self.layers[-1])
        elif layer._batch_input_shape is None and not isinstance(layer, Merge):
            raise ValueError(
                f"the first layer of a Sequential needs an input shape: {layer.label} has none "
                "(did you forget input_shape?)"
            )
        self.layers.append(layer)

    def _require_layers(self) -> None:
        if not self.layers:
            raise RuntimeError(f"Sequential '{self.name}' has no layers: add some first")

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        self._require_layers()
        return self.layers[0].input_shape

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        self._require_layers()
        return self.layers[-1].output_shape

    # ----------------------------------------------- what training needs
    @property
    def merge_first(self) -> Merge | None:
        """The Merge this model starts with (its inputs are the branches'), if any."""
        first = self.layers[0] if self.layers else None
        return first if isinstance(first, Merge) else None

    @property
    def input_names(self) -> list[str]:
        merge = self.merge_first
        if merge is not None:
            return [f"input_{i}" for i in range(len(merge.input_branches()))]
        return ["input"]

    @property
    def output_names(self) -> list[str]:
        return ["output"]

    def input_shapes(self) -> list[tuple[int | None, ...]]:
        merge = self.merge_first
        if merge is not None:
            return [branch.input_shape for branch in merge.input_branches()]
        return [self.input_shape]

    def input_layers(self) -> list[Layer]:
        self._require_layers()
        merge = self.merge_first
        if merge is None:
            return [self.layers[0]]
        return [
            branch.layers[0] if isinstance(branch, Sequential) else branch
            for branch in merge.input_branches()
        ]

    def output_layers(self) -> list[Layer]:
        self._require_layers()
        return [self.layers[-1]]

    # ------------------------------------------------ Keras 0.3's K.function
    @property
    def input(self) -> LayerInput | list[LayerInput]:
        """The model's input as ``K.function`` takes it: the first layer's, or a list of
        the branches' where the model starts with a Merge (Keras 0.3's ``model.input``)."""
        inputs = [layer.input for layer in self.input_layers()]
        return inputs if self.merge_first is not None else inputs[0]

    def get_output(self, train: bool = False) -> Any:
        """The last layer's ``get_output(train)`` (Keras 0.3's ``model.get_output``)."""
        self._require_layers()
        return self.layers[-1].get_output(train)

    def applied_layers(self) -> list[Layer]:
        return list(self.layers)

    def all_layers(self) -> list[Layer]:
        merge = self.merge_first
        branch_layers = merge.branch_layers() if merge is not None else []
        return [
            owner for layer in [*branch_layers, *self.layers] for owner in layer.weight_layers()
        ]

    def summary_rows(self) -> list[tuple[Layer, str]]:
        return [(layer, "") for layer in self.layers]

    def standardize_inputs(self, X: Any) -> list[Any]:
        self._require_layers()
        merge = self.merge_first
        if merge is not None:
            count = len(merge.input_branches())
            if count == 1 and not isinstance(X, list | tuple):  # one branch merged with itself
                X = [X]
            if not isinstance(X, list | tuple) or len(X) != count:
                raise ValueError(
                    f"{self.name} starts with a Merge of {count} input branches: "
                    f"X must be a list of {count} arrays"
                )
            return [_host_array(x) for x in X]
        if isinstance(X, list | tuple) and len(X) == 1:
            X = X[0]
        return [_host_array(X)]

    def standardize_targets(self, y: Any) -> list[Any]:
        if isinstance(y, list | tuple) and len(y) == 1:
            y = y[0]
        return [np.asarray(y)]

    def wrap_outputs(self, outputs: list[Any]) -> Any:
        return outputs[0]

    def forward_outputs(
        self, inputs: list[Any], train: bool, masks: Sequence[Any] | None = None
    ) -> list[Any]:
        if self.merge_first is not None:
            return [self.run_forward(inputs, train)]
        return [self.run_forward(inputs[0], train, mask=masks[0] if masks else None)]

    def backward_outputs(
        self, grads: list[Any], from_preactivation: list[bool], need_input_gradients: bool = False
    ) -> list[Any] | None:
        grad = self.backward(
            grads[0],
            need_input_gradient=need_input_gradients,
            from_preactivation=from_preactivation[0],
        )
        return [grad] if need_input_gradients else None

    # ------------------------------------------------------ forward/backward
    def prepare_input(self, X: Any) -> Any:
        """Bring ``X`` to the model's device and dtype."""
        self._require_layers()
        return self.layers[0].prepare_input(X)

    def forward(self, X: Any, train: bool = False, mask: Any = None) -> Any:
        """Run every layer once on ``X`` (with its ``mask``, if any); returns the last
        layer's output buffer.

        Each layer's output is cached for this input and train flag, so asking a
        layer for ``get_output(train)`` afterwards computes nothing again. As a layer's
        :meth:`~numlayers.layers.base.Layer.forward`, the model works on a copy of ``X``
        that it owns (changing ``X`` before :meth:`backward` changes nothing) and returns
        its buffer read-only, valid until the next forward.
        """
        self._require_layers()
        if self.merge_first is not None and isinstance(X, list | tuple):
            X = [self._owned_input(index, x) for index, x in enumerate(X)]
        else:
            X = self._owned_input(0, X)
        return self.device.read_only(self.run_forward(X, train, mask))

    def _owned_input(self, index: int, x: Any) -> Any:
        """``x`` on the model's device, copied into the model's input buffer ``index``
        (its dtype kept: the first layer converts it, as for any input)."""
        host = None if self.device.is_device_array(x) else _host_array(x)
        source = x if host is None else host
        buffer = self._caller_inputs.get(index)
        if (
            buffer is None
            or not self.device.is_device_array(buffer)  # the model moved since
            or tuple(buffer.shape) != tuple(source.shape)
            or buffer.dtype != source.dtype
        ):
            buffer = self.device.empty(tuple(source.shape), source.dtype)
            self._caller_inputs[index] = buffer
        if host is None:
            self.device.copy(x, buffer)
        else:  # one transfer, straight into the buffer
            self.device.write(buffer, host)
        return buffer

    def run_forward(self, X: Any, train: bool = False, mask: Any = None) -> Any:
        """:meth:`forward` on input the caller keeps unchanged until :meth:`backward`
        (the training loop's batches, a nested model's input): no copy in, and the last
        layer's buffer itself is returned."""
        self._require_layers()
        merge = self.merge_first
        if merge is not None:
            merge.forward_branches(X, train)
            output = None
            for layer in self.layers:
                output = layer.get_output(train)
            return output
        first = self.layers[0]
        first.set_input(X, mask)  # set_input prepares it
        # one new input token, which every layer's output then derives from
        output, mask, token = first._input, first._input_mask, first._input_token
        for layer in self.layers:
            output = layer.output_for(output, mask, token, train)
            mask = layer.saved()["output_mask"]
        return output

    def backward(
        self, grad_output: Any, need_input_gradient: bool = True, from_preactivation: bool = False
    ) -> Any:
        """Back-propagate ``grad_output`` through all layers in reverse.

        Weight gradients land in each layer's ``grads``; returns the gradient
        with respect to the model input (None when ``need_input_gradient`` is off).
        ``from_preactivation`` starts below the last layer's activation (fused losses).
        """
        self._require_layers()
        if not self.device.is_device_array(grad_output):  # as forward takes host arrays
            grad_output = self.device.asarray(grad_output, self.dtype)
        merge = self.merge_first
        self.layers[0].needs_input_gradient = need_input_gradient or merge is not None
        if merge is not None and len(self.layers) == 1:
            merge.backward_branches(grad_output)
            return None
        grad = self.layers[-1].backward(grad_output, from_preactivation=from_preactivation)
        for layer in reversed(self.layers[1:-1]):
            grad = layer.backward(grad)
        if len(self.layers) > 1:
            if merge is not None:
                merge.backward_branches(grad)
                return None
            grad = self.layers[0].backward(grad)
        return grad

    def merge_input_gradients(self, grad_output: Any) -> list[Any]:
        """The gradients reaching the branches of the Merge this model starts with, from
        ``grad_output`` back-propagated through the layers after it (the Merge's
        branches are back-propagated by the Merge that merges this model)."""
        merge = self.merge_first
        if merge is None:
            raise RuntimeError(f"{self.name} does not start with a Merge")
        merge.needs_input_gradient = True
        grad = grad_output
        for layer in reversed(self.layers[1:]):
            grad = layer.backward(grad)
        return merge.branch_gradients(grad)

    def __call__(self, X: Any, train: bool = False) -> Any:
        """Apply the model to ``X``; returns a new array on the model's device."""
        output = self.run_forward(X, train)
        result = self.device.empty(tuple(output.shape), self.dtype)
        self.layers[-1].kernels.copy(output, result)
        return result

    # ----------------------------------------------------------------- config
    def get_config(self, verbose: int = 0) -> dict[str, Any]:
        """The model as plain data (printed too with ``verbose``, as Keras 0.3)."""
        config = {
            "class_name": "Sequential",
            "name": self.name,
            "dtype": self.dtype.name,
            "layers": [layer.get_config() for layer in self.layers],
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
    ) -> Sequential:
        """Rebuild a model from :meth:`get_config`, running no code (``safe_mode`` as in
        :func:`numlayers.layers.deserialize`)."""
        model = cls(name=config.get("name", "sequential"), dtype=config.get("dtype", "float32"))
        with safe_mode_scope(safe_mode):
            for layer_config in config.get("layers", []):
                model.add(deserialize(layer_config, custom_objects))
        return model


def model_from_config(
    config: dict[str, Any],
    custom_objects: dict[str, Any] | None = None,
    safe_mode: bool | None = None,
) -> Sequential | Graph:
    """Rebuild a Sequential or a Graph from its ``get_config()`` (Keras 0.3's function),
    running no code (``safe_mode`` as in :func:`numlayers.layers.deserialize`). A config
    of a compiled model (it holds an ``optimizer``) gives a model compiled alike; a loss
    function it names is found as a Lambda's function is (``custom_objects``, registered
    functions)."""
    kinds: dict[str, type[Sequential] | type[Graph]] = {"Sequential": Sequential, "Graph": Graph}
    kind = kinds.get(config.get("class_name", ""))
    if kind is None:
        raise ValueError(
            "model config must be of a Sequential or a Graph, "
            f"received {config.get('class_name')!r}"
        )
    model = kind.from_config(config, custom_objects, safe_mode)
    if "optimizer" in config:
        with safe_mode_scope(safe_mode):
            _compile_as_configured(model, config, custom_objects)
    return model


def _compile_as_configured(
    model: Sequential | Graph, config: dict[str, Any], custom_objects: dict[str, Any] | None
) -> None:
    """Compile ``model`` as its config's ``optimizer``, ``loss``, ``metrics`` and
    ``class_mode`` say."""
    owner = f"{model.name} config"
    optimizer = optimizers.from_config(config["optimizer"], owner)

    def loss_of(reference: Any) -> Any:
        if isinstance(reference, str) and (
            reference.lower() in losses.LOSSES or reference.lower() in losses.ALIASES
        ):
            return reference
        return resolve_function(reference, f"{owner}: loss", custom_objects)

    loss = config.get("loss")
    if isinstance(loss, dict):
        chosen: Any = {name: loss_of(reference) for name, reference in loss.items()}
    else:
        chosen = loss_of(loss)
    model.compile(
        optimizer,
        chosen,
        metrics=config.get("metrics"),
        class_mode=config.get("class_mode"),
        sample_weight_mode=config.get("sample_weight_mode"),
        sample_weight_modes=config.get("sample_weight_modes"),
        loss_weights=config.get("loss_weights"),
    )


def _host_array(X: Any) -> np.ndarray:
    """User data as a host array (CUDA arrays are copied back: batches are made on the host)."""
    return X.copy_to_host() if hasattr(X, "copy_to_host") else np.asarray(X)


def model_from_json(
    json_string: str, custom_objects: dict[str, Any] | None = None, safe_mode: bool | None = None
) -> Sequential | Graph:
    """Rebuild a model from :meth:`~numlayers.training.Model.to_json`'s text, as
    :func:`model_from_config` (running no code; compiled if the model was)."""
    return model_from_config(_config_of(json.loads(json_string), "JSON"), custom_objects, safe_mode)


def model_from_yaml(
    yaml_string: str, custom_objects: dict[str, Any] | None = None, safe_mode: bool | None = None
) -> Sequential | Graph:
    """Rebuild a model from :meth:`~numlayers.training.Model.to_yaml`'s text (read with
    ``yaml.safe_load``, which makes no objects), as :func:`model_from_json`."""
    config = yaml_module("model_from_yaml").safe_load(yaml_string)
    return model_from_config(_config_of(config, "YAML"), custom_objects, safe_mode)


def _config_of(data: Any, language: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(
            f"a model's {language} must hold a mapping (its get_config), "
            f"received {type(data).__name__}"
        )
    return data
