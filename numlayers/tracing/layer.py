"""Traced functions inside layers: :class:`TracedCall` (what Lambda, the Lambda merges and
custom layers share) and :class:`TracedLayer`, the base of custom layers written as a
NumPy-style ``call``.

A :class:`TracedCall` traces its function once per input signature (the shapes without
the batch axis, the dtype) and builds an :class:`~numlayers.tracing.Executable` per
device. When the function cannot be traced, it warns once (naming the operation and
the layer) and says so: the owner then runs the function with NumPy on the host.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from numlayers.devices import Device
from numlayers.layers.base import Layer, Shape
from numlayers.tracing.execute import Executable
from numlayers.tracing.gradients import add_gradients
from numlayers.tracing.program import Program, TraceError
from numlayers.tracing.traced import trace


class TracingFallbackWarning(UserWarning):
    """A function could not be traced: it runs with NumPy on the host, without gradients."""


Signature = tuple[tuple[Shape, ...], str]


class TracedCall:
    """``function`` of one or more arrays, traced per signature (see module doc).

    Args:
        function: the NumPy-style function.
        label: how messages name the owner (``"Lambda layer 'lambda_1'"``).
        as_list: pass the inputs as one list (a Lambda of several inputs).
        host_fallback: whether the owner runs an untraceable function with NumPy on the
            host (a warning then says so); an owner that cannot refuses it instead.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        label: str,
        as_list: bool = False,
        host_fallback: bool = True,
    ) -> None:
        self.function = function
        self.label = label
        self.as_list = as_list
        self.host_fallback = host_fallback
        self.failure: str | None = None
        self._programs: dict[Signature, Program | None] = {}
        self._executables: dict[tuple[Signature, str], Executable] = {}

    def program(self, shapes: Sequence[Shape], dtype: Any) -> Program | None:
        """The program for arguments of symbolic ``shapes`` (None where it cannot be traced).

        Shapes are full shapes, ``None`` for the batch axis.
        """
        key = (tuple(tuple(s) for s in shapes), np.dtype(dtype).name)
        if key in self._programs:
            return self._programs[key]
        try:
            program = trace(self.function, shapes, dtype, as_list=self.as_list)
            add_gradients(program)
        except Exception as error:  # noqa: BLE001 - any failure falls back, never crashes
            self._fail(error)
            program = None
        self._programs[key] = program
        return program

    def executable(self, shapes: Sequence[Shape], dtype: Any, device: Device) -> Executable | None:
        program = self.program(shapes, dtype)
        if program is None:
            return None
        key = ((tuple(tuple(s) for s in shapes), np.dtype(dtype).name), device.name)
        found = self._executables.get(key)
        if found is None:
            found = self._executables[key] = Executable(program, device)
        return found

    def output_shape(self, shapes: Sequence[Shape], dtype: Any) -> Shape | None:
        """The traced output shape (``None`` for the batch axis), or None if untraceable."""
        program = self.program(shapes, dtype)
        return None if program is None else program.nodes[program.outputs[0]].shape

    def _fail(self, error: Exception) -> None:
        if self.failure is not None:
            return
        reason = str(error) if isinstance(error, TraceError) else f"{type(error).__name__}: {error}"
        self.failure = reason
        if not self.host_fallback:
            return
        warnings.warn(
            f"{self.label}: its function cannot be traced ({reason}); it runs with NumPy on "
            "the host and trains only with an explicit backward",
            TracingFallbackWarning,
            stacklevel=4,
        )


def batched(shape: Shape) -> Shape:
    """A layer input shape with its batch axis symbolic (a fixed batch size forgotten)."""
    return (None, *shape[1:])


def known(shape: Shape) -> bool:
    """Whether every axis but the batch axis has a known size."""
    return all(d is not None for d in shape[1:])


class TracedLayer(Layer):
    """Base of custom layers whose forward is a NumPy-style ``call``; the backward pass and
    the kernels come from tracing it.

    A subclass creates its weights in ``build`` (with :meth:`add_weight`) and defines
    ``call(self, x, *weights)``: ``x`` has the batch axis first, the weights come in the
    order they were added; it uses the operations a traced Lambda may (operators, NumPy
    ufuncs and functions, slicing). Its output shape is read from the trace.

    Example:
        >>> class Scale(TracedLayer):
        ...     def build(self):
        ...         self.add_weight("gain", np.ones(self.input_shape[1:]))
        ...     def call(self, x, gain):
        ...         return np.tanh(x * gain)
        >>> Scale(input_shape=(3,))(np.zeros((2, 3))).shape
        (2, 3)
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.traced_call = TracedCall(self._call_weights, self.label)
        self._finish_init()

    def call(self, x: Any, *weights: Any) -> Any:
        """The forward pass, written with NumPy operations (see the class doc)."""
        raise NotImplementedError(f"{self.label} must define call(x, *weights)")

    def _call_weights(self, x: Any, *weights: Any) -> Any:
        return self.call(x, *weights)

    def _shapes(self, input_shape: Shape) -> list[Shape]:
        return [batched(input_shape), *(tuple(p.shape) for p in self.params)]

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if not known(input_shape):
            raise ValueError(f"{self.label} needs known input sizes, received {input_shape}")
        shape = self.traced_call.output_shape(self._shapes(input_shape), self.dtype)
        if shape is None:
            raise ValueError(f"{self.label}: call cannot be traced ({self.traced_call.failure})")
        return (input_shape[0], *shape[1:])

    def _executable(self, x: Any) -> Executable:
        shapes = self._shapes((None, *x.shape[1:]))
        executable = self.traced_call.executable(shapes, self.dtype, self.device)
        if executable is None:
            raise ValueError(f"{self.label}: call cannot be traced ({self.traced_call.failure})")
        return executable

    def _forward(self, x: Any, train: bool) -> Any:
        executable = self._executable(x)
        y, values = executable.forward([x, *self.params], self.buffer)
        self.save(traced=(executable, values))
        return y

    def _backward(self, grad_output: Any) -> Any:
        executable, values = self.saved()["traced"]
        grads = executable.backward(values, grad_output, self.buffer)
        for grad, target in zip(grads[1:], self.grads, strict=True):
            self.kernels.copy(grad, target)
        return grads[0]


def adapt_keras_get_output(cls: type[Layer]) -> None:
    """Make ``cls``, a Keras 0.3 custom layer overriding ``get_output(train)``, run as a
    traced layer: its ``get_output`` body is traced with ``self.get_input(train)`` standing
    for the input, once per input signature and train flag, and runs as kernels on the
    layer's device with the trace's gradient (Keras 0.3's antirectifier example so).
    Where the input has a mask, the mask is a second input of the trace, which
    ``self.get_input_mask(train)`` returns (a MaskedLayer's body reads it so).

    A layer with weights makes them in ``build`` as Keras 0.3's own layers do: arrays
    (``K.variable``, ``K.zeros``, an initialisation) kept as attributes (``self.W``) and
    listed in ``self.params`` (0.3.0 to 0.3.2) or ``self.trainable_weights`` (0.3.3).
    They become the layer's weights under their attribute names, and are inputs of the
    trace too: while it runs, each attribute stands for its weight, so ``get_output``'s
    products with them get their gradients. After the build, each attribute holds the
    weight the layer trains. A subclass of a numlayers layer (``Dense``) reads that
    layer's weights the same way, by their names (``self.W``, ``self.b``).

    The class's ``get_output`` is kept as ``keras_get_output``; the layer's own caching
    ``get_output`` stays in place.
    """
    cls.keras_get_output = cls.__dict__["get_output"]  # type: ignore[attr-defined]
    cls.get_output = Layer.get_output  # type: ignore[method-assign]
    for name, method in _KERAS_ADAPTER.items():
        if name not in cls.__dict__:
            setattr(cls, name, method)
    adapt_keras_build(cls)
    initialize = cls.__init__

    def __init__(self: Layer, *args: Any, **kwargs: Any) -> None:
        initialize(self, *args, **kwargs)
        if not self.built:  # Keras 0.3's Layer built itself when given an input shape
            self._finish_init()

    cls.__init__ = __init__  # type: ignore[method-assign]


def adapt_keras_build(cls: type[Layer]) -> None:
    """Where ``cls`` (an adapted Keras 0.3 custom layer, or a subclass of one) defines
    ``build``, register the weights it makes once it returns (see
    :func:`adapt_keras_get_output`): once per build, after the outermost ``build`` of a
    chain of ``super().build()`` calls."""
    if "build" not in cls.__dict__:
        return
    keras_build = cls.__dict__["build"]

    @functools.wraps(keras_build)
    def build(self: Layer) -> None:
        depth = self.__dict__.get("_keras_build_depth", 0)
        self.__dict__["_keras_build_depth"] = depth + 1
        try:
            keras_build(self)
        finally:
            self.__dict__["_keras_build_depth"] = depth
        if depth == 0:
            _register_keras_weights(self)

    cls.build = build  # type: ignore[method-assign]


def _register_keras_weights(self: Layer) -> None:
    declared = self.__dict__.pop("trainable_weights", None)
    values = list(self.params if declared is None else declared)
    for kind in ("regularizers", "constraints"):
        entries = [entry for entry in getattr(self, kind) if entry is not None]
        if any(not isinstance(entry, tuple) for entry in entries):
            raise TypeError(
                f"{self.label}: its build lists Keras 0.3 {kind}, which numlayers does not "
                f"take from a custom layer; subclass numlayers.tracing.TracedLayer and pass "
                f"them to add_weight"
            )
        setattr(self, kind, entries)
    attribute_of = {
        id(value): name for name, value in vars(self).items() if isinstance(value, np.ndarray)
    }
    self.params, self.grads, self.param_names = [], [], []
    for index, value in enumerate(values):
        name = attribute_of.get(id(value))
        if name is None:
            raise TypeError(
                f"{self.label}: weight {index} of its build ({type(value).__name__}) is not an "
                "array held by an attribute of the layer (self.W = K.variable(...)), which "
                "get_output reads it through"
            )
        self.add_weight(name, np.asarray(value))
    self.__dict__["_keras_built_weights"] = True
    _keras_on_weights_replaced(self)


def _keras_on_weights_replaced(self: Layer) -> None:
    """Point the attributes of weights a Keras 0.3 ``build`` made (named as the weights)
    at the weights the layer trains (moved or recast)."""
    if self.__dict__.get("_keras_built_weights"):
        self.__dict__.update(zip(self.param_names, self.params, strict=True))


#: an attribute a layer did not have before a trace
_ABSENT = object()


def _keras_traced_call(self: Layer, train: bool, masked: bool) -> TracedCall:
    """The trace of ``get_output(train)``'s body: of the input, of the input's mask too
    when ``masked`` (what ``self.get_input_mask(train)`` then returns), and of the
    weights, which attributes named as the weights stand for while it runs (so a
    subclass of a numlayers layer reads its weights as ``self.W`` too)."""
    calls = self.__dict__.setdefault("_keras_calls", {})
    if (train, masked) not in calls:

        def output_of(x: Any, *rest: Any) -> Any:
            mask, weights = (rest[0], rest[1:]) if masked else (None, rest)
            names = list(self.param_names)
            kept = [self.__dict__.get(name, _ABSENT) for name in names]
            self.__dict__.update(zip(names, weights, strict=True))
            self.__dict__["_keras_traced"] = (x, mask)
            try:
                return type(self).keras_get_output(self, train)  # type: ignore[attr-defined]
            finally:
                self.__dict__["_keras_traced"] = None
                for name, value in zip(names, kept, strict=True):
                    if value is _ABSENT:
                        del self.__dict__[name]
                    else:
                        self.__dict__[name] = value

        calls[train, masked] = TracedCall(
            output_of, f"{self.label}: get_output", host_fallback=False
        )
    found: TracedCall = calls[train, masked]
    return found


def _keras_shapes(self: Layer, input_shape: Shape, masked: bool) -> list[Shape]:
    """The trace's input shapes: the input's, the mask's when ``masked``, the weights'."""
    shapes = [batched(input_shape)] + ([batched(input_shape[:-1])] if masked else [])
    return shapes + [tuple(weight.shape) for weight in self.params]


def _keras_arguments(self: Layer, x: Any) -> list[Any]:
    """What the trace takes: the input, the input's mask where there is one, the weights."""
    mask = self.saved()["mask"]
    return ([x] if mask is None else [x, mask]) + list(self.params)


def _keras_executable(self: Layer, x: Any, masked: bool, train: bool) -> Executable:
    call = _keras_traced_call(self, train, masked)
    shapes = _keras_shapes(self, tuple(x.shape), masked)
    executable = call.executable(shapes, self.dtype, self.device)
    if executable is None:
        hint = "write it with NumPy operations or numlayers.backend names"
        if not masked and self.passes_mask:
            hint += ", and feed it a masked input if it reads self.get_input_mask(train)"
        raise ValueError(f"{self.label}: get_output cannot be traced ({call.failure}); {hint}")
    return executable


def _keras_get_input(self: Layer, train: bool = False) -> Any:
    traced = self.__dict__.get("_keras_traced")
    return traced[0] if traced is not None else Layer.get_input(self, train)


def _keras_get_input_mask(self: Layer, train: bool = False) -> Any:
    traced = self.__dict__.get("_keras_traced")
    return traced[1] if traced is not None else Layer.get_input_mask(self, train)


def _keras_compute_output_shape(self: Layer, input_shape: Shape) -> Shape:
    """The traced output shape; with the mask (the input's shape less its last axis) as
    a second input where the layer before it passes one on, or where a layer that
    passes masks on (a MaskedLayer) cannot be traced without one."""
    if not known(input_shape):
        raise ValueError(f"{self.label} needs known input sizes, received {input_shape}")
    masked = self.previous is not None and self.previous.produces_mask()
    attempts = [masked] + ([True] if self.passes_mask and not masked else [])
    for with_mask in attempts:
        shapes = _keras_shapes(self, input_shape, with_mask)
        shape = _keras_traced_call(self, False, with_mask).output_shape(shapes, self.dtype)
        if shape is not None:
            return (input_shape[0], *shape[1:])
    failure = _keras_traced_call(self, False, masked).failure
    raise ValueError(f"{self.label}: get_output cannot be traced ({failure})")


def _keras_forward(self: Layer, x: Any, train: bool) -> Any:
    arguments = _keras_arguments(self, x)
    executable = _keras_executable(self, x, self.saved()["mask"] is not None, train)
    y, values = executable.forward(arguments, self.buffer)
    self.save(traced=(executable, values))
    return y


def _keras_backward(self: Layer, grad_output: Any) -> Any:
    executable, values = self.saved()["traced"]
    grads = executable.backward(values, grad_output, self.buffer)
    for grad, target in zip(grads[len(grads) - len(self.grads) :], self.grads, strict=True):
        self.kernels.copy(grad, target)
    return grads[0]


_KERAS_ADAPTER: dict[str, Callable[..., Any]] = {
    "get_input": _keras_get_input,
    "get_input_mask": _keras_get_input_mask,
    "compute_output_shape": _keras_compute_output_shape,
    "_forward": _keras_forward,
    "_backward": _keras_backward,
    "_on_weights_replaced": _keras_on_weights_replaced,
}
