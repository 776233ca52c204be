"""Wrappers: Bidirectional (a recurrent layer run both ways) and TimeDistributed (a layer
applied to every timestep). Both go beyond Keras 0.3, as its users asked."""

from __future__ import annotations

from typing import Any

from numlayers.layers.base import Layer, Shape, inner_layers_from_config
from numlayers.layers.merging import MergeFunction
from numlayers.layers.recurrent import Recurrent


def with_inner_dtype(kwargs: dict[str, Any], layer: Layer) -> dict[str, Any]:
    """A wrapper's arguments, taking the dtype its inner layer was given (unless the
    wrapper is given one itself)."""
    if getattr(layer, "_explicit_dtype", False) and kwargs.get("dtype") is None:
        return {**kwargs, "dtype": layer.dtype}
    return kwargs


class WeightsOfInnerLayers(Layer):
    """A wrapper whose weights are those of the layers it wraps (in order).

    The wrapped layers run once per use of the wrapper, with the wrapper's state of that
    use (``self._current_use``) as their use key: so the uses of a shared wrapper keep
    their wrapped layers' saved arrays apart too.
    """

    def get_weights(self) -> list[Any]:
        return [w for layer in self.weight_layers() for w in layer.get_weights()]

    def check_weights(self, weights: Any) -> list[Any]:
        weights = list(weights)
        expected = sum(len(layer.params) for layer in self.weight_layers())
        if len(weights) != expected:
            raise ValueError(
                f"{self.label} has {expected} weights, received a list of {len(weights)}"
            )
        checked, start = [], 0
        for layer in self.weight_layers():
            checked.extend(layer.check_weights(weights[start : start + len(layer.params)]))
            start += len(layer.params)
        return checked

    def write_weights(self, host_values: Any) -> None:
        start = 0
        for layer in self.weight_layers():
            layer.write_weights(host_values[start : start + len(layer.params)])
            start += len(layer.params)
        self._cache.clear()

    def get_gradients(self) -> list[Any]:
        return [g for layer in self.weight_layers() for g in layer.get_gradients()]

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.weight_layers())

    def _forget_state(self) -> None:
        super()._forget_state()
        # the wrapped layers' states are keyed by the wrapper's uses just forgotten
        for layer in self.weight_layers():
            layer._forget_state()


class Bidirectional(WeightsOfInnerLayers):
    """Runs a recurrent layer forwards and a copy of it backwards, and merges the two.

    The backward copy is built from the layer's config with ``go_backwards``
    flipped (its own weights). Outputs of both stay aligned with the input steps,
    so ``return_sequences`` outputs merge step by step and masks carry over.

    Args:
        layer: a recurrent layer (SimpleRNN, GRU, LSTM).
        merge_mode: "concat" (default), "sum", "mul" or "ave".

    Example:
        >>> Bidirectional(LSTM(4), input_shape=(5, 3))(np.ones((2, 5, 3))).shape
        (2, 8)
    """

    input_ndim = 3

    def __init__(self, layer: Recurrent, merge_mode: str = "concat", **kwargs: Any) -> None:
        if not isinstance(layer, Recurrent):
            raise TypeError(f"Bidirectional wraps a recurrent layer, received {layer!r}")
        if merge_mode not in ("concat", "sum", "mul", "ave"):
            raise ValueError(
                "Bidirectional: merge_mode must be concat, sum, mul or ave, "
                f"received {merge_mode!r}"
            )
        if layer.stateful:
            raise ValueError("Bidirectional cannot wrap a stateful layer")
        super().__init__(**with_inner_dtype(kwargs, layer))
        self.forward_layer = layer
        config = layer.get_config()
        config.update(go_backwards=not layer.go_backwards, name=f"{layer.name}_backward")
        config.pop("batch_input_shape", None)
        self.backward_layer = type(layer).from_config(config)
        self.merge_mode = merge_mode
        self.merge = MergeFunction(merge_mode, owner=self.label)
        self._finish_init()

    def weight_layers(self) -> list[Layer]:
        return [self.forward_layer, self.backward_layer]

    def supports_masked_input(self) -> bool:
        return True

    def produces_mask(self) -> bool:
        return (
            self.forward_layer.return_sequences
            and self.previous is not None
            and (self.previous.produces_mask())
        )

    def build(self) -> None:
        for layer in self.weight_layers():
            layer._change_dtype(self.dtype)
            layer.to(self.device)
            if not layer.built:
                layer.set_input_shape(self.input_shape)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        shape = self.forward_layer.compute_output_shape(input_shape)
        return self.merge.output_shape([shape, shape], ["forward", "backward"])

    def to(self, device: Any) -> Layer:
        for layer in (getattr(self, "forward_layer", None), getattr(self, "backward_layer", None)):
            if layer is not None:
                layer.to(device)
        return super().to(device)

    def _forward(self, x: Any, train: bool) -> Any:
        mask = self.saved()["mask"]
        outputs = [
            layer.run_forward(x, train, mask=mask, use=self._current_use)
            for layer in self.weight_layers()
        ]
        self.save(
            outputs=outputs, output_mask=mask if self.forward_layer.return_sequences else None
        )
        shape = tuple(outputs[0].shape)
        merged = self.merge.output_shape([shape, shape], ["forward", "backward"])
        return self.merge.forward(
            self.kernels, outputs, tuple(int(d) for d in merged if d), self.buffer
        )

    def _backward(self, grad_output: Any) -> Any:
        grads = self.merge.backward(self.kernels, self.saved()["outputs"], grad_output, self.buffer)
        total = None
        for layer, grad in zip(self.weight_layers(), grads, strict=True):
            layer.needs_input_gradient = self.needs_input_gradient
            grad_x = layer.backward(grad, use=self._current_use)
            if grad_x is None:
                continue
            if total is None:
                total = self.buffer("grad_x", tuple(grad_x.shape))
                self.kernels.copy(grad_x, total)
            else:
                self.kernels.add_into(grad_x, total)
        return total

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(layer=self.forward_layer.get_config(), merge_mode=self.merge_mode)
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Layer:
        (layer,), rest = inner_layers_from_config(config, ["layer"], custom_objects)
        if not isinstance(layer, Recurrent):
            raise TypeError(
                f"Bidirectional config holds a {type(layer).__name__}, not a recurrent layer"
            )
        return cls(layer, **rest)


class TimeDistributed(WeightsOfInnerLayers):
    """Applies a layer to every timestep: ``(batch, time, ...)`` to ``(batch, time, ...)``.

    The inner layer sees ``(batch * time, ...)`` arrays, so any layer works
    (Dense, Activation, Dropout, a nested recurrent layer on 4-D inputs...).
    Masks pass through.

    Args:
        layer: the layer to apply (one set of weights for every step).

    Example:
        >>> TimeDistributed(Dense(2), input_shape=(5, 3))(np.ones((4, 5, 3))).shape
        (4, 5, 2)
    """

    passes_mask = True

    def __init__(self, layer: Layer, **kwargs: Any) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed wraps a layer, received {layer!r}")
        super().__init__(**with_inner_dtype(kwargs, layer))
        self.layer = layer
        self._finish_init()

    def weight_layers(self) -> list[Layer]:
        return [self.layer]

    def build(self) -> None:
        shape = self.input_shape
        if len(shape) < 3:
            raise ValueError(f"{self.label} needs inputs with a time axis, received {shape}")
        self.layer._change_dtype(self.dtype)
        self.layer.to(self.device)
        if not self.layer.built:
            self.layer.set_input_shape((None, *shape[2:]))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        inner = self.layer.compute_output_shape((None, *input_shape[2:]))
        return (input_shape[0], input_shape[1], *inner[1:])

    def to(self, device: Any) -> Layer:
        if getattr(self, "layer", None) is not None:
            self.layer.to(device)
        return super().to(device)

    def _forward(self, x: Any, train: bool) -> Any:
        batch, steps = x.shape[0], x.shape[1]
        self.save(steps=(batch, steps), input_shape=tuple(x.shape))
        y = self.layer.run_forward(
            x.reshape(batch * steps, *x.shape[2:]), train, use=self._current_use
        )
        return y.reshape(batch, steps, *y.shape[1:])

    def _backward(self, grad_output: Any) -> Any:
        batch, steps = self.saved()["steps"]
        self.layer.needs_input_gradient = self.needs_input_gradient
        grad = self.layer.backward(
            grad_output.reshape(batch * steps, *grad_output.shape[2:]), use=self._current_use
        )
        return None if grad is None else grad.reshape(*self.saved()["input_shape"])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layer"] = self.layer.get_config()
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Layer:
        (layer,), rest = inner_layers_from_config(config, ["layer"], custom_objects)
        return cls(layer, **rest)
