"""Nested containers: a Sequential or a Graph used as one layer of another model.

Keras 0.3's containers were layers, so ``model.add(submodel)`` and
``graph.add_node(submodel, ...)`` nested one model in another. :class:`Container` is
that layer, and ``add`` and ``add_node`` make it themselves. Its weights are those of
the nested model's layers; its forward and backward passes are the nested model's own.
"""

from __future__ import annotations

from typing import Any

from numlayers.layers.base import (
    Layer,
    Shape,
    _name_counters,
    _snake_case,
    inner_layers_from_config,
)
from numlayers.layers.wrappers import WeightsOfInnerLayers
from numlayers.training import Model


def shapes_fit(expected: Shape, shape: Shape) -> bool:
    """Whether inputs of ``shape`` fit a layer built for ``expected``: the same rank, and
    the same size on every axis but the batch axis where both are known."""
    return len(expected) == len(shape) and all(
        a is None or b is None or a == b for a, b in zip(expected[1:], shape[1:], strict=True)
    )


class Container(WeightsOfInnerLayers):
    """A Sequential or a Graph of one input and one output, as one layer.

    The model's layers are this layer's weights: they train with the model this layer
    is in (its optimizer, regularizers and constraints) and appear once in its
    weights, while the nested model, sharing them, still predicts on its own. Masks
    pass in and out. A model is nested once and runs at one place: it cannot be a
    shared node (share its layers instead).

    Args:
        model: the Sequential or Graph; this layer takes its input shape, dtype and
            device (moving this layer moves the model).
        name: by default the model's name, numbered like a layer's when the model
            has the default one (``sequential_1``), so that unnamed models nest side
            by side.

    Input shape:
        The model's input shape.

    Output shape:
        The model's output shape.

    Example:
        >>> inner = Sequential([Dense(4, input_shape=(3,)), Dense(2)], name="inner")
        >>> outer = Sequential()
        >>> outer.add(inner)
        >>> outer.add(Activation("softmax"))
        >>> outer.layers[0]
        <Container 'inner'>
        >>> outer.predict(np.ones((5, 3))).shape
        (5, 2)
        >>> outer.count_params() == inner.count_params() == 26
        True
    """

    def __init__(self, model: Model, name: str | None = None, **kwargs: Any) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"Container nests a Sequential or a Graph, received {model!r}")
        described = f"{type(model).__name__} '{model.name}'"
        if len(model.input_names) != 1 or len(model.output_names) != 1:
            raise ValueError(
                f"{described} cannot be nested: a nested model takes one input and gives one "
                f"output, it has inputs {model.input_names} and outputs {model.output_names}"
            )
        model.output_layers()  # the model is complete (an empty one says so, by name)
        if model.nested_as is not None:
            raise ValueError(
                f"{described} is already nested as {model.nested_as.label}: a nested model "
                "runs at one place only (add that layer, or share the model's layers)"
            )
        if name is None:
            name = model.name
            if name == _snake_case(type(model).__name__):
                name = f"{name}_{next(_name_counters[type(model).__name__])}"
        kwargs.setdefault("dtype", model.dtype)
        kwargs.setdefault("device", model.device)
        self.model = model
        super().__init__(name=name, **kwargs)
        if self.dtype != model.dtype:
            raise TypeError(f"{self.label} has dtype {self.dtype}, its model uses {model.dtype}")
        model.to(self.device)
        self.index_input = self._entry.index_input
        if self._pending_shape is None:
            self._pending_shape = model.input_shapes()[0]
        self._finish_init()
        model.nested_as = self

    @property
    def _entry(self) -> Layer:
        """The nested model's layer that takes this layer's input."""
        return self.model.input_layers()[0]

    @property
    def _exit(self) -> Layer:
        """The nested model's layer whose output this layer gives."""
        return self.model.output_layers()[0]

    def weight_layers(self) -> list[Layer]:
        return self.model.all_layers()

    def build(self) -> None:
        # the model is built already: its input shape must fit this layer's
        self._check_rebuild(self.input_shape)

    def _check_rebuild(self, shape: Shape) -> None:
        expected = self.model.input_shapes()[0]
        if not shapes_fit(expected, shape):
            raise ValueError(
                f"{self.label}: its model takes inputs of shape {expected}, received {shape}"
            )

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], *self._exit.output_shape[1:])

    def to(self, device: Any) -> Layer:
        if getattr(self, "model", None) is not None:
            self.model.to(device)
        return super().to(device)

    # ---------------------------------------------------------------- masks
    def supports_masked_input(self) -> bool:
        return self._entry.supports_masked_input()

    def produces_mask(self) -> bool:
        # the model's layers see a mask only when one arrives: ask its output layer with
        # its input marked masked exactly when this layer's is
        if self.previous is not None:
            masked = self.previous.produces_mask()
        else:
            masked = self._input_mask is not None
        entry = self._entry
        kept = entry._input_mask
        entry._input_mask = True if masked else None
        try:
            return self._exit.produces_mask()
        finally:
            entry._input_mask = kept

    # ------------------------------------------------------- forward/backward
    def prepare_input(self, x: Any) -> Any:
        return self._entry.prepare_input(x)

    def _check_input(self, x: Any) -> None:
        try:
            self._entry._check_input(x)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{self.label}: {error}") from None

    def _forward(self, x: Any, train: bool) -> Any:
        if sum(1 for state in self._uses.values() if state.saved) > 1:
            raise ValueError(
                f"{self.label} is applied at several places, but a nested model runs at one "
                "place only (share its layers instead)"
            )
        (y,) = self.model.forward_outputs([x], train, masks=[self.saved()["mask"]])
        self.save(output_mask=self._exit.saved()["output_mask"])
        return y

    def _backward(self, grad_output: Any) -> Any:
        grads = self.model.backward_outputs(
            [grad_output], [False], need_input_gradients=self.needs_input_gradient
        )
        return grads[0] if grads else None

    # ----------------------------------------------------------------- config
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("batch_input_shape", None)  # the model's config holds it
        config["model"] = self.model.get_config()
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Layer:
        from numlayers.models import model_from_config

        config = dict(config)
        config.pop("class_name", None)
        return cls(model_from_config(config.pop("model"), custom_objects), **config)


def as_layer(layer: Layer | Model) -> Layer:
    """``layer`` as a layer to add to a model: a Sequential or Graph as its
    :class:`Container` (made at its first nesting), anything else as it is (the model
    checks it)."""
    if not isinstance(layer, Model):
        return layer
    return layer.nested_as or Container(layer)


class AutoEncoder(Container):
    """An encoder followed by a decoder, as one layer (Keras 0.3).

    Fit it on its own input (``fit(X, X)``): training always runs both halves and
    compares the reconstruction with the targets. With ``output_reconstruction`` (the
    default) predictions are reconstructions too; without it, ``predict`` gives the
    encoder's codes, as Keras 0.3's did (the layer's ``output_shape`` is then the
    codes', and it must be a model's last layer, since training still outputs the
    reconstruction).

    Args:
        encoder: a layer, a Sequential or a Graph (one input, one output).
        decoder: the same, taking the encoder's output.
        output_reconstruction: whether predictions are reconstructions (True) or codes.

    Input shape:
        The encoder's input shape.

    Output shape:
        The decoder's output shape; the encoder's without ``output_reconstruction``.

    Example:
        >>> encoder = Sequential([Dense(2, input_shape=(4,))])
        >>> autoencoder = AutoEncoder(encoder, Dense(4), output_reconstruction=False)
        >>> model = Sequential([autoencoder])
        >>> model.compile("sgd", "mse")
        >>> history = model.fit(np.ones((3, 4)), np.ones((3, 4)), nb_epoch=1, verbose=0)
        >>> model.predict(np.ones((3, 4))).shape
        (3, 2)
    """

    def __init__(
        self,
        encoder: Layer | Model,
        decoder: Layer | Model,
        output_reconstruction: bool = True,
        **kwargs: Any,
    ) -> None:
        from numlayers.models import Sequential

        if not isinstance(output_reconstruction, bool):
            raise TypeError(
                f"AutoEncoder: output_reconstruction must be True or False, "
                f"received {output_reconstruction!r}"
            )
        halves = [as_layer(encoder), as_layer(decoder)]
        model = Sequential(
            halves,
            device=kwargs.pop("device", halves[0].device),
            dtype=kwargs.pop("dtype", halves[0].dtype),
            name=f"autoencoder_model_{next(_name_counters['AutoEncoderModel'])}",
        )
        self.output_reconstruction = output_reconstruction
        self.halves = halves
        kind = type(self).__name__
        kwargs.setdefault("name", f"{_snake_case(kind)}_{next(_name_counters[kind])}")
        super().__init__(model, **kwargs)

    @property
    def encoder(self) -> Layer:
        return self.halves[0]

    @property
    def decoder(self) -> Layer:
        return self.halves[1]

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        half = self.decoder if self.output_reconstruction else self.encoder
        return (input_shape[0], *half.output_shape[1:])

    @property
    def training_output_shape(self) -> Shape:
        """The shape of the outputs training compares with its targets: reconstructions."""
        return (self.output_shape[0], *self.decoder.output_shape[1:])

    def _forward(self, x: Any, train: bool) -> Any:
        codes_only = not (train or self.output_reconstruction)
        self.save(codes_only=codes_only)
        if not codes_only:
            return super()._forward(x, train)
        # the encoder's own use: the whole model's pass, which it also runs in, never
        # runs with this flag
        y = self.encoder.run_forward(x, train, mask=self.saved()["mask"])
        self.save(output_mask=self.encoder.saved()["output_mask"])
        return y

    def _backward(self, grad_output: Any) -> Any:
        if not self.saved()["codes_only"]:
            return super()._backward(grad_output)
        self.encoder.needs_input_gradient = self.needs_input_gradient
        return self.encoder.backward(grad_output)

    def get_config(self) -> dict[str, Any]:
        config = Layer.get_config(self)
        config.pop("batch_input_shape", None)  # the encoder's config holds it
        config["encoder"] = self.encoder.get_config()
        config["decoder"] = self.decoder.get_config()
        config["output_reconstruction"] = self.output_reconstruction
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Layer:
        (encoder, decoder), rest = inner_layers_from_config(
            config, ["encoder", "decoder"], custom_objects
        )
        return cls(encoder, decoder, **rest)


def __getattr__(name: str) -> Any:
    """Keras 0.3's ``containers.Sequential`` and ``containers.Graph`` (its encoders and
    decoders were written with them): the models of :mod:`numlayers.models`."""
    if name in ("Sequential", "Graph"):
        from numlayers import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
