"""Core layers: Dense, TimeDistributedDense, Activation (and the base of parametric
activations), ActivityRegularization, Dropout, Masking, Lambda."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from numlayers import constraints, initializations, regularizers
from numlayers.activations import ActivationFunction
from numlayers.kernels.activations import ELEMENTWISE_FUNCTIONS
from numlayers.layers.base import Layer, Shape, as_shape
from numlayers.layers.keras_paths import forwarded_names, homes_in
from numlayers.random import draw_seed, get_generator
from numlayers.serialization import function_reference, resolve_function
from numlayers.tracing.execute import Executable
from numlayers.tracing.layer import TracedCall, batched, known


def _positive_int(value: Any, what: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{owner}: {what} must be a positive int, received {value!r}")
    return int(value)


def _seed_config(seed: Any) -> Any:
    """Configs keep int seeds; a Generator cannot be written down, so it becomes None."""
    return seed if isinstance(seed, int) else None


def _staged_seed(layer: Layer, slot: str, generator: Any) -> Any:
    """A new seed for the dropout kernels, drawn from ``generator`` (None: the global one)
    by the producer given to ``Device.stage``, in the form the kernels take (its doc):
    ``layer``'s one-element uint64 buffer ``slot`` (of the current use and train flag, so
    a later pass of another use or flag leaves it alone) where a step is recorded as a
    CUDA graph, which draws a new seed at each replay."""
    seed = layer.buffer(slot, (1,), np.uint64)
    return layer.device.stage(seed, lambda: np.array([draw_seed(generator)], np.uint64))


def _checked_init(init: Any, owner: str) -> Any:
    """``init`` if it names an initialisation, else a ValueError naming ``owner``."""
    try:
        initializations.get(init)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{owner}: {error}") from error
    return init


class FullyConnected(Layer):
    """What the fully connected layers share (Dense, MaxoutDense, Highway): the
    ``input_dim`` shortcut; the weights' ``init``, ``weights``, regularizers,
    constraints and ``seed``; a known input dimension to build from; their config.

    A subclass sets its own options, then calls ``_finish_init``; its ``build`` takes
    :meth:`known_input_dim` and ends with :meth:`set_initial_weights`.
    """

    input_ndim = 2

    def __init__(
        self,
        *,
        init: Any = "glorot_uniform",
        weights: Sequence[Any] | None = None,
        input_dim: int | None = None,
        W_regularizer: Any = None,
        b_regularizer: Any = None,
        activity_regularizer: Any = None,
        W_constraint: Any = None,
        b_constraint: Any = None,
        seed: Any = None,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        if input_dim is not None:
            if "input_shape" in kwargs or "batch_input_shape" in kwargs:
                raise ValueError(f"{owner}: give input_dim or input_shape, not both")
            kwargs["input_shape"] = (_positive_int(input_dim, "input_dim", owner),)
        super().__init__(**kwargs)
        self.init = _checked_init(init, self.label)
        self.W_regularizer = regularizers.get(W_regularizer)
        self.b_regularizer = regularizers.get(b_regularizer)
        self.activity_regularizer = regularizers.get(activity_regularizer, activity=True)
        self.W_constraint = constraints.get(W_constraint)
        self.b_constraint = constraints.get(b_constraint)
        self.seed = seed
        self.initial_weights = weights
        self._built_input_dim: int | None = None

    def known_input_dim(self) -> int:
        """The input dimension to build the weights for (refused when unknown)."""
        input_dim = self.input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"{self.label} needs a known input dimension, received {self.input_shape}"
            )
        self._built_input_dim = input_dim
        return input_dim

    def set_initial_weights(self) -> None:
        """Load the ``weights`` given to the constructor, once the weights exist."""
        if self.initial_weights is not None:
            self.set_weights(self.initial_weights)
            self.initial_weights = None

    def _check_rebuild(self, shape: Shape) -> None:
        self._refuse_other_input_dimension(self._built_input_dim, shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            init=self.init,
            W_regularizer=regularizers.config_of(self.W_regularizer),
            b_regularizer=regularizers.config_of(self.b_regularizer),
            activity_regularizer=regularizers.config_of(self.activity_regularizer),
            W_constraint=constraints.config_of(self.W_constraint),
            b_constraint=constraints.config_of(self.b_constraint),
            seed=_seed_config(self.seed),
        )
        return config


class Dense(FullyConnected):
    """Fully connected layer: ``output = activation(input @ W + b)``.

    Args:
        output_dim: number of output units.
        init: weight initialisation name (see :mod:`numlayers.initializations`).
        activation: activation name (see :mod:`numlayers.activations`), default linear;
            ``activations.get("relu", alpha=..., max_value=...)`` for relu's arguments.
        weights: initial ``[W, b]`` (or ``[W]`` without bias).
        input_dim: shortcut for ``input_shape=(input_dim,)``.
        bias: whether to add a bias vector.
        W_regularizer, b_regularizer: weight regularizers (:mod:`numlayers.regularizers`).
        activity_regularizer: a regularizer of the output.
        W_constraint, b_constraint: constraints (:mod:`numlayers.constraints`).
        seed: int or numpy Generator for the initial weights (default: the global seed).

    Input shape: ``(batch, input_dim)``. Output shape: ``(batch, output_dim)``.

    Example:
        >>> layer = Dense(3, input_dim=4, activation="relu")
        >>> layer(np.ones((2, 4), "float32")).shape
        (2, 3)
    """

    def __init__(
        self,
        output_dim: int,
        init: Any = "glorot_uniform",
        activation: Any = "linear",
        weights: Sequence[Any] | None = None,
        input_dim: int | None = None,
        bias: bool = True,
        W_regularizer: Any = None,
        b_regularizer: Any = None,
        activity_regularizer: Any = None,
        W_constraint: Any = None,
        b_constraint: Any = None,
        seed: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            init=init,
            weights=weights,
            input_dim=input_dim,
            W_regularizer=W_regularizer,
            b_regularizer=b_regularizer,
            activity_regularizer=activity_regularizer,
            W_constraint=W_constraint,
            b_constraint=b_constraint,
            seed=seed,
            **kwargs,
        )
        self.output_dim = _positive_int(output_dim, "output_dim", self.label)
        self.activation = ActivationFunction(activation, self.label)
        self.bias = bool(bias)
        self._finish_init()

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], self.output_dim)

    def build(self) -> None:
        rng = get_generator(self.seed)
        weight = initializations.draw(self.init, (self.known_input_dim(), self.output_dim), rng)
        self.add_weight("W", weight, self.W_regularizer, self.W_constraint)
        if self.bias:
            self.add_weight("b", np.zeros(self.output_dim), self.b_regularizer, self.b_constraint)
        self.set_initial_weights()

    def _bias_and_gradient(self) -> tuple[Any, Any]:
        if self.bias:
            return self.params[1], self.grads[1]
        empty = self.buffer("no_bias", (0,))
        return empty, empty

    def _forward(self, x: Any, train: bool) -> Any:
        bias, _ = self._bias_and_gradient()
        kernels = self.kernels
        z = self.buffer("z", (x.shape[0], self.output_dim))
        if self.activation.is_identity:
            kernels.dense_forward(x, self.params[0], bias, z)
            y = z
        elif self.activation.parameters:  # the fused passes take named activations only
            kernels.dense_forward(x, self.params[0], bias, z)
            y = self.buffer("y", z.shape)
            self.activation.forward(kernels, z, y)
        else:
            y = self.buffer("y", z.shape)
            kernels.dense_activation_forward(x, self.params[0], bias, z, y, self.activation.name)
        self.save(x=x, z=z, y=y)
        return y

    def preactivation(self) -> Any:
        return self.saved()["z"]

    def _backward(self, grad_output: Any) -> Any:
        return self._backward_rows(grad_output, through_activation=True)

    def _backward_preactivation(self, grad_z: Any) -> Any:
        return self._backward_rows(grad_z, through_activation=False)

    def _backward_rows(self, grad: Any, through_activation: bool) -> Any:
        """Gradients from ``grad`` (2-D rows) of the output, or of ``z`` when not
        ``through_activation``; returns the input gradient (None when not needed)."""
        saved = self.saved()
        x = saved["x"]
        need = self.needs_input_gradient
        grad_x = self.buffer("grad_x", tuple(x.shape)) if need else self.buffer("no_grad_x", (0, 0))
        _, grad_bias = self._bias_and_gradient()
        weight, grad_weight = self.params[0], self.grads[0]
        if through_activation and not self.activation.is_identity:
            z = saved["z"]
            grad_z = self.buffer("grad_z", z.shape)
            if self.activation.parameters:  # as in the forward pass: not fused
                self.activation.backward(self.kernels, z, saved["y"], grad, grad_z)
                self.kernels.dense_backward(x, weight, grad_z, grad_x, grad_weight, grad_bias, need)
            else:
                self.kernels.dense_activation_backward(
                    x, weight, z, saved["y"], grad, grad_z, grad_x, grad_weight, grad_bias, need,
                    self.activation.name,
                )  # fmt: skip
        else:
            self.kernels.dense_backward(x, weight, grad, grad_x, grad_weight, grad_bias, need)
        return grad_x if need else None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(output_dim=self.output_dim, activation=self.activation.config, bias=self.bias)
        return config


class TimeDistributedDense(Dense):
    """The same Dense applied to every timestep: ``(batch, time, input_dim)`` to
    ``(batch, time, output_dim)``. Masks pass through.

    Takes Dense's arguments, plus ``input_length`` (the number of timesteps, when fixed).

    Example:
        >>> TimeDistributedDense(2, input_shape=(5, 3))(np.ones((4, 5, 3))).shape
        (4, 5, 2)
    """

    input_ndim = 3
    passes_mask = True

    def __init__(
        self,
        output_dim: int,
        input_dim: int | None = None,
        input_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        if input_dim is not None:
            if "input_shape" in kwargs or "batch_input_shape" in kwargs:
                raise ValueError("TimeDistributedDense: give input_dim or input_shape, not both")
            dim = _positive_int(input_dim, "input_dim", "TimeDistributedDense")
            kwargs["input_shape"] = (input_length, dim)
        self.input_length = input_length
        super().__init__(output_dim, **kwargs)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0], input_shape[1], self.output_dim)

    def _forward(self, x: Any, train: bool) -> Any:
        batch, steps, features = x.shape
        self.save(steps=(batch, steps))
        return (
            super()
            ._forward(x.reshape(batch * steps, features), train)
            .reshape(batch, steps, self.output_dim)
        )

    def _rows(self, grad: Any) -> Any:
        return grad.reshape(grad.shape[0] * grad.shape[1], self.output_dim)

    def _unrows(self, grad_x: Any) -> Any:
        if grad_x is None:
            return None
        return grad_x.reshape(*self.saved()["steps"], grad_x.shape[1])

    def _backward_rows(self, grad: Any, through_activation: bool) -> Any:
        return self._unrows(super()._backward_rows(self._rows(grad), through_activation))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["input_length"] = self.input_length
        return config


class Activation(Layer):
    """Applies an activation function elementwise (softmax: over the last axis).

    Args:
        activation: one of softmax, softplus, relu, tanh, sigmoid, hard_sigmoid, linear;
            relu takes Keras 0.3's ``alpha`` and ``max_value`` (see
            :mod:`numlayers.activations`).

    Input shape: any. Output shape: the input shape. Masks pass through.

    Example:
        >>> Activation("relu", input_shape=(3,))(np.array([[-1.0, 0.0, 2.0]])).tolist()
        [[0.0, 0.0, 2.0]]
    """

    passes_mask = True

    def __init__(self, activation: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(activation, ActivationFunction):
            activation = ActivationFunction(activation, self.label)
        self.activation = activation
        self._finish_init()

    def _forward(self, x: Any, train: bool) -> Any:
        if self.activation.is_identity:
            return x
        y = self.buffer("y", tuple(x.shape))
        self.activation.forward(self.kernels, x, y)
        self.save(x=x, y=y)
        return y

    def preactivation(self) -> Any:
        return self.saved().get("x")

    def _backward_preactivation(self, grad_preactivation: Any) -> Any:
        return grad_preactivation

    def _backward(self, grad_output: Any) -> Any:
        if self.activation.is_identity:
            return grad_output
        saved = self.saved()
        grad_x = self.buffer("grad_x", tuple(grad_output.shape))
        self.activation.backward(self.kernels, saved["x"], saved["y"], grad_output, grad_x)
        return grad_x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["activation"] = self.activation.config
        return config


class ParametricActivation(Activation):
    """An Activation whose class fixes the function, with the function's parameters as
    its arguments (LeakyReLU's ``alpha``).

    A subclass sets ``function_name`` to an elementwise function of
    :mod:`numlayers.kernels.activations` whose table row lists its parameters and
    their defaults; they are taken positionally or by name, must be finite numbers,
    become attributes, and are saved in the config.
    """

    function_name = ""

    def __init__(self, *values: float, **kwargs: Any) -> None:
        owner = type(self).__name__
        parameters = ELEMENTWISE_FUNCTIONS[self.function_name].parameters
        if len(values) > len(parameters):
            raise TypeError(f"{owner} takes {len(parameters)} argument(s), received {values}")
        chosen = {}
        for index, (name, default) in enumerate(parameters):
            value = values[index] if index < len(values) else kwargs.pop(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{owner}: {name} must be a number, received {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{owner}: {name} must be finite, received {value!r}")
            chosen[name] = float(value)
            setattr(self, name, float(value))
        self.parameter_values = chosen
        function = ActivationFunction(self.function_name, owner, tuple(chosen.values()))
        super().__init__(function, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**Layer.get_config(self), **self.parameter_values}


class ActivityRegularization(Layer):
    """Identity whose output is regularized: adds ``l1 * sum|y| + l2 * sum y**2`` (per
    sample) to the loss.

    Args:
        l1: L1 factor.
        l2: L2 factor.
    """

    passes_mask = True

    def __init__(self, l1: float = 0.0, l2: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activity_regularizer = regularizers.Regularizer(l1, l2, activity=True)
        self._finish_init()

    def _forward(self, x: Any, train: bool) -> Any:
        return x

    def _backward(self, grad_output: Any) -> Any:
        return grad_output

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(l1=self.activity_regularizer.l1, l2=self.activity_regularizer.l2)
        return config


class TrainingNoise(Layer):
    """What the layers that draw new randomness on every training pass share (Dropout,
    GaussianNoise, GaussianDropout): a ``seed`` (an int, a Generator, or None for the
    global one) that gives each pass a seed of its own, masks passed through, and the
    seed in the config. A subclass sets its own options, then calls ``_finish_init``.
    """

    passes_mask = True

    def __init__(self, seed: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self._generator = None if seed is None else get_generator(seed)

    def pass_seed(self) -> Any:
        """A new seed for this training pass: a one-element uint64 array on the device,
        this use's own (what the dropout kernels take)."""
        return _staged_seed(self, "seed", self._generator)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["seed"] = _seed_config(self.seed)
        return config


class Dropout(TrainingNoise):
    """Inverted dropout: in training, zero each input with probability ``p`` and scale the rest.

    Outside training (``train=False``) the layer is the identity. Masks come
    from a counter-based hash of (seed, element index), so the same seed gives
    the same mask on the CPU and on CUDA, and nothing random is stored.

    Args:
        p: fraction of the inputs to drop, in [0, 1).
        seed: int or numpy Generator for the per-pass seeds (default: the global seed).

    Input shape: any. Output shape: the input shape. Masks pass through.
    """

    def __init__(self, p: float, seed: Any = None, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        if isinstance(p, bool) or not isinstance(p, int | float | np.floating) or not 0 <= p < 1:
            raise ValueError(f"{self.label}: p must be a number in [0, 1), received {p!r}")
        self.p = float(p)
        self._finish_init()

    @property
    def keep_threshold(self) -> int:
        """An element is kept when its 24-bit hash is at least this."""
        return int(self.p * 2**24)

    def _forward(self, x: Any, train: bool) -> Any:
        if not train or self.p == 0:
            return x
        seed = self.pass_seed()
        scale = self.dtype.type(1.0 / (1.0 - self.p))
        out = self.buffer("y", tuple(x.shape))
        self.kernels.dropout_forward(x, seed, self.keep_threshold, scale, out)
        self.save(seed=seed, scale=scale)
        return out

    def _backward(self, grad_output: Any) -> Any:
        saved = self.saved()
        if "seed" not in saved:
            return grad_output
        grad_x = self.buffer("grad_x", tuple(grad_output.shape))
        self.kernels.dropout_backward(
            grad_output, saved["seed"], self.keep_threshold, saved["scale"], grad_x
        )
        return grad_x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["p"] = self.p
        return config


class Masking(Layer):
    """Masks timesteps whose features all equal ``mask_value`` (and zeroes them).

    The output carries a ``(batch, time)`` mask that later mask-aware layers and
    the losses of sequence outputs follow.

    Args:
        mask_value: the padding value.

    Input shape: ``(batch, time, features)``. Output shape: the same.
    """

    input_ndim = 3
    passes_mask = True

    def __init__(self, mask_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(mask_value, bool) or not isinstance(mask_value, int | float | np.floating):
            raise TypeError(f"{self.label}: mask_value must be a number, received {mask_value!r}")
        self.mask_value = float(mask_value)
        self._finish_init()

    def produces_mask(self) -> bool:
        return True

    def _forward(self, x: Any, train: bool) -> Any:
        out = self.buffer("y", tuple(x.shape))
        mask = self.buffer("mask", tuple(x.shape[:2]))
        self.kernels.masking_forward(x, self.dtype.type(self.mask_value), out, mask)
        previous = self.saved()["mask"]
        if previous is not None:
            self.kernels.combine_masks_all(previous, mask, mask)
        self.save(output_mask=mask)
        return out

    def _backward(self, grad_output: Any) -> Any:
        grad_x = self.buffer("grad_x", tuple(grad_output.shape))
        self.kernels.apply_time_mask(grad_output, self.saved()["output_mask"], grad_x)
        return grad_x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["mask_value"] = self.mask_value
        return config


class MaskedLayer(Layer):
    """Keras 0.3's base of a layer that passes its input's mask on unchanged.

    Used directly it is the identity. A Keras 0.3 custom layer subclasses it and reads
    the mask in ``get_output`` with ``self.get_input_mask(train)``: that body is traced
    with the mask as a second input (see :class:`Layer`'s custom layers), so it runs as
    kernels with each batch's mask.

    Input shape: any. Output shape: the input's.

    Example:
        >>> MaskedLayer(input_shape=(2,))(np.ones((1, 2))).tolist()
        [[1.0, 1.0]]
    """

    passes_mask = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if type(self) is MaskedLayer:  # used directly: an identity (subclasses finish)
            self._finish_init()


class Lambda(Layer):
    """Applies a NumPy-style function to the whole batch, on the layer's device, with
    automatic gradients.

    The function is traced once per input signature (the shapes without the batch axis,
    the dtype): operators, NumPy ufuncs and functions, array methods and slicing are
    recorded (see :mod:`numlayers.tracing`), the output shape is read from the trace, and
    the recorded program and its reverse pass run as fused kernels on the layer's device.
    A function that cannot be traced (a Python ``if`` on a value, ``float()``, a NumPy
    function not supported) makes the layer warn once and run it with NumPy on the host
    (copying the batch there on CUDA); it then trains only with an explicit ``backward``.

    Args:
        function: ``f(x) -> y`` on arrays with the batch axis first (``numlayers.backend``
            names work too).
        output_shape: None (read from the trace), a tuple (without the batch axis), or a
            function of the input shape (with the batch axis) returning the output shape
            (with it); a traced output of another shape is an error naming the layer.
        backward: optional ``g(x, grad_output) -> grad_x`` on NumPy arrays; when given it
            is used (on the host) instead of the traced gradient.

    Input shape: any. Output shape: the function's.

    Example:
        >>> Lambda(lambda x: 2 * x, input_shape=(3,))(np.ones((1, 3))).tolist()
        [[2.0, 2.0, 2.0]]
        >>> Lambda(lambda x: x.sum(axis=-1, keepdims=True), input_shape=(3,)).output_shape
        (None, 1)
    """

    def __init__(
        self,
        function: Callable[..., Any],
        output_shape: Any = None,
        backward: Callable[[np.ndarray, np.ndarray], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(f"{self.label}: function must be callable, received {function!r}")
        if backward is not None and not callable(backward):
            raise TypeError(f"{self.label}: backward must be callable, received {backward!r}")
        if output_shape is not None and not callable(output_shape):
            output_shape = as_shape(output_shape, "output_shape", self.label)
        self.function = function
        self.backward_function = backward
        self._output_shape = output_shape
        self._inferred: dict[Shape, Shape] = {}
        self.traced_call = TracedCall(function, self.label)
        self._checked: set[int] = set()
        self._finish_init()

    def _traced_shape(self, input_shape: Shape) -> Shape | None:
        """The output shape the trace gives (None: an explicit backward, unknown input sizes,
        or a function that cannot be traced)."""
        if self.backward_function is not None or not known(input_shape):
            return None
        return self.traced_call.output_shape([batched(input_shape)], self.dtype)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if self._output_shape is None:
            traced = self._traced_shape(input_shape)
            if traced is not None:
                return (input_shape[0], *traced[1:])
            return self._inferred_shape(input_shape)
        if callable(self._output_shape):
            shape = as_shape(self._output_shape(input_shape), "output_shape()", self.label)
            return shape
        return (input_shape[0], *self._output_shape)

    def _inferred_shape(self, input_shape: Shape) -> Shape:
        """Without an output_shape, run the function once on a small zero batch to learn it
        (Keras 0.3 assumed the input shape, which broke shape-changing Lambdas)."""
        key = tuple(input_shape)
        if key not in self._inferred:
            probe = np.zeros((2, *(1 if d is None else d for d in input_shape[1:])), self.dtype)
            try:
                result = np.asarray(self.function(probe))
            except Exception:  # the function cannot take zeros: assume it keeps the shape
                self._inferred[key] = input_shape
            else:
                known = [d is not None for d in input_shape[1:]]
                sample = result.shape[1:]
                same_rank = len(sample) == len(known)
                self._inferred[key] = (
                    input_shape[0],
                    *(s if not same_rank or known[i] else None for i, s in enumerate(sample)),
                )
        return self._inferred[key]

    def _to_device(self, host: Any, expected: Shape, what: str) -> Any:
        host = np.asarray(host)
        if host.dtype.kind not in "biuf":
            raise TypeError(f"{self.label}: {what} returned dtype {host.dtype}, expected numbers")
        if len(host.shape) != len(expected) or any(
            e is not None and e != s for e, s in zip(expected, host.shape, strict=False)
        ):
            raise ValueError(
                f"{self.label}: {what} returned shape {host.shape}, expected {expected}"
            )
        return self.device.asarray(host, self.dtype)

    def _executable(self, x: Any) -> Executable | None:
        """The traced program for ``x``'s signature on this device (None: run on the host)."""
        if self.backward_function is not None:
            return None
        executable = self.traced_call.executable([(None, *x.shape[1:])], self.dtype, self.device)
        if executable is not None and id(executable) not in self._checked:
            traced = executable.program.nodes[executable.program.outputs[0]].shape
            expected = self.output_shape
            if len(traced) != len(expected) or any(
                e is not None and e != t for e, t in zip(expected[1:], traced[1:], strict=False)
            ):
                raise ValueError(
                    f"{self.label}: function returned shape {(x.shape[0], *traced[1:])}, "
                    f"expected {expected}"
                )
            self._checked.add(id(executable))
        return executable

    def _forward(self, x: Any, train: bool) -> Any:
        executable = self._executable(x)
        if executable is None:
            host_x = self.device.to_host(x)
            expected = (x.shape[0], *self.output_shape[1:])
            y = self._to_device(self.function(host_x), expected, "function")
            self.save(x=host_x)
            return y
        y, values = executable.forward([x], self.buffer)
        self.save(traced=(executable, values))
        return y

    def _backward(self, grad_output: Any) -> Any:
        traced = self.saved().get("traced")
        if traced is not None:
            executable, values = traced
            return executable.backward(values, grad_output, self.buffer)[0]
        if self.backward_function is None:
            raise RuntimeError(
                f"{self.label} has no backward function and its function cannot be traced "
                f"({self.traced_call.failure}), so a model cannot be trained through it: pass "
                "Lambda(function, backward=lambda x, grad: ...)"
            )
        host_x = self.saved()["x"]
        grad = self.backward_function(host_x, self.device.to_host(grad_output))
        return self._to_device(grad, tuple(host_x.shape), "backward")

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        output_shape = self._output_shape
        if self.built:  # loading then learns the shape without calling any function
            output_shape = self.output_shape[1:]
        config.update(
            function=function_reference(self.function),
            output_shape=function_reference(output_shape)
            if callable(output_shape)
            else (None if output_shape is None else list(output_shape)),
            backward=None
            if self.backward_function is None
            else function_reference(self.backward_function),
        )
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Layer:
        config = dict(config)
        config.pop("class_name", None)
        owner = f"Lambda '{config.get('name')}'"
        config["function"] = resolve_function(config["function"], owner, custom_objects)
        config["backward"] = resolve_function(config.get("backward"), owner, custom_objects)
        if isinstance(config.get("output_shape"), str):
            config["output_shape"] = resolve_function(config["output_shape"], owner, custom_objects)
        return cls(**config)


class MaskedLambda(Lambda):
    """A :class:`Lambda` that passes its input's mask on (Keras 0.3's ``MaskedLambda``), for
    functions that keep the axes the mask covers (batch and time); the function itself
    sees the values only. An output that does not keep them is refused, naming the layer.

    Example:
        >>> MaskedLambda(lambda x: 2 * x, input_shape=(2, 3)).output_shape
        (None, 2, 3)
    """

    passes_mask = True

    def _forward(self, x: Any, train: bool) -> Any:
        y = super()._forward(x, train)
        mask = self.saved()["mask"]
        if mask is not None and tuple(y.shape[: len(mask.shape)]) != tuple(mask.shape):
            raise ValueError(
                f"{self.label}: output of shape {tuple(y.shape)} does not keep the axes "
                f"{tuple(mask.shape)} of the mask it passes on"
            )
        return y


# Keras 0.3's keras.layers.core also held these (see numlayers.layers.keras_paths)
__getattr__, __dir__, __all__ = forwarded_names(
    __name__,
    globals(),
    {
        **homes_in("numlayers.layers.reshaping", "Flatten", "Reshape", "Permute", "RepeatVector"),
        **homes_in("numlayers.layers.merging", "Merge", "LambdaMerge"),
        **homes_in("numlayers.layers.time_merge", "TimeDistributedMerge"),
        **homes_in("numlayers.layers.containers", "AutoEncoder"),
        **homes_in("numlayers.layers.dense_variants", "MaxoutDense", "Highway"),
        **homes_in("numlayers.layers.siamese", "Siamese", "SiameseHead", "add_shared_layer"),
    },
)
