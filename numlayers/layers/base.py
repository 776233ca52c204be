"""The abstract :class:`Layer`: Keras 0.3's contract, with real forward and backward passes.

A layer is connected to its parent with :meth:`Layer.set_previous` (or given
an input directly with :meth:`Layer.set_input`), builds its weights once its
input shape is known, and computes its output with ``get_output(train)``,
cached per train flag until a new input arrives. Subclasses implement
``build``, ``compute_output_shape``, ``_forward`` and ``_backward`` and call
only the kernel set of their device (``self.kernels``), never a device branch.
Their ``__init__`` validates its arguments, then ends with ``self._finish_init()``
(which builds the layer when an input shape was given).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from numlayers.devices import Device, get_device, resolve_dtype
from numlayers.kernels.reshaping import permute_plan
from numlayers.layer_functions import LIVE_LAYERS, LayerInput, PendingOutput

if TYPE_CHECKING:
    from numlayers.kernels.interfaces import Kernels

Shape = tuple[int | None, ...]

#: every concrete layer class by name, for :func:`numlayers.layers.deserialize`
LAYER_CLASSES: dict[str, type[Layer]] = {}

_name_counters: dict[str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
_input_tokens = itertools.count(1)
#: bumped whenever any layer's shapes, dtype or device change; an input check a layer
#: remembers holds only while this stays the same
_layouts = [0]


def _layout_changed() -> None:
    _layouts[0] += 1


#: acronyms spelled with a lowercase letter: read as if all capitals, so that PReLU is one
#: word (``prelu``) rather than ``p_re_lu``
_MIXED_CASE_ACRONYMS = {"ReLU": "RELU"}
#: where a new word starts: a capital after a lowercase letter (Simple|RNN), or a capital
#: followed by a lowercase letter after a capital or digit (RNN|Cell, Conv2D|Transpose);
#: so a run of capitals is one word, and digits stay with the word before (Pooling2D)
_WORD_START = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z0-9])(?=[A-Z][a-z])")


def _snake_case(name: str) -> str:
    """A class name as a layer name: ``SimpleRNN`` -> ``simple_rnn``, ``PReLU`` -> ``prelu``."""
    for acronym, capitals in _MIXED_CASE_ACRONYMS.items():
        name = name.replace(acronym, capitals)
    return _WORD_START.sub("_", name).lower()


#: the most elements an array can have (NumPy indexes with signed pointer-sized ints)
MAX_ELEMENTS = int(np.iinfo(np.intp).max)


def _c_contiguous(x: Any) -> bool:
    """Whether array ``x`` (NumPy or a CUDA device array) is C-contiguous: the only layout
    the kernels take (BLAS read reversed or broadcast views wrongly)."""
    check = getattr(x, "is_c_contiguous", None)
    return bool(check()) if check is not None else bool(x.flags.c_contiguous)


def as_shape(shape: Any, what: str, owner: str) -> Shape:
    """Validate a shape given as a tuple or list of positive ints (None allowed), whose
    known sizes multiply (in Python integers) to a size an array can have."""
    if not isinstance(shape, tuple | list):
        raise TypeError(f"{owner}: {what} must be a tuple or list, received {shape!r}")
    for dim in shape:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int | np.integer)):
            raise TypeError(f"{owner}: {what} must hold ints, received {shape!r}")
        if dim is not None and dim <= 0:
            raise ValueError(f"{owner}: {what} must hold positive sizes, received {shape!r}")
    if math.prod(int(d) for d in shape if d is not None) > MAX_ELEMENTS:
        raise ValueError(f"{owner}: {what} {shape!r} has more elements than an array can hold")
    return tuple(None if d is None else int(d) for d in shape)


class UseState:
    """What one use of a layer keeps between its forward and its backward pass.

    A layer applied at one place has one use, its own. A layer applied at several
    (a Graph's shared node, the layers inside a shared wrapper) has one state per use,
    named by a key its caller passes to ``forward`` and ``backward``: so each use's
    backward reads what its own forward saved, and no use overwrites another's buffers.
    """

    __slots__ = ("buffers", "saved", "train")

    def __init__(self) -> None:
        #: train flag of this use's latest pass: which entry of ``saved`` backward reads
        self.train = False
        #: what forward saved for backward (input mask, output mask, arrays), per train flag
        self.saved: dict[bool, dict[str, Any]] = {}
        #: reusable arrays (outputs among them) by (slot, train flag)
        self.buffers: dict[tuple[str, bool], Any] = {}


class Layer:
    """Base class of every layer.

    Args:
        input_shape: shape of one sample (no batch axis); makes this a first layer.
        batch_input_shape: the same with the batch axis (``None`` for any size).
        trainable: ``False`` freezes the weights (no gradients are applied).
        cache_enabled: cache outputs within a pass (on by default).
        name: a unique name; one is made from the class name if omitted.
        dtype: ``"float32"`` (default) or ``"float64"``; inherited from the model
            when not given.
        device: ``"cpu"`` or ``"cuda"``; models move their layers to their own.
    """

    #: rank of the input including the batch axis (None: any rank)
    input_ndim: ClassVar[int | None] = None
    #: layers that only transform values pass an input mask through
    passes_mask: ClassVar[bool] = False
    #: layers whose input is integer ids (Embedding), not floats
    index_input: bool = False
    #: how many of the last weights no optimizer updates (BatchNormalization's running
    #: statistics): saved, loaded and moved with the others, counted as non-trainable
    untrained_weight_count: ClassVar[int] = 0

    def __init__(
        self,
        *,
        input_shape: Sequence[int] | None = None,
        batch_input_shape: Sequence[int | None] | None = None,
        trainable: bool = True,
        cache_enabled: bool = True,
        name: str | None = None,
        dtype: Any = None,
        device: str | Device | None = None,
        **unknown: Any,
    ) -> None:
        cls_name = type(self).__name__
        if unknown:
            raise TypeError(f"{cls_name}: unknown keyword argument(s) {sorted(unknown)}")
        if name is None:
            name = f"{_snake_case(cls_name)}_{next(_name_counters[cls_name])}"
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls_name}: name must be a non-empty string, received {name!r}")
        self.name = name
        self.trainable = bool(trainable)
        self.cache_enabled = bool(cache_enabled)
        self._explicit_dtype = dtype is not None
        self.dtype = resolve_dtype(dtype)
        self.device = get_device(device)

        self.previous: Layer | None = None
        self.built = False
        LIVE_LAYERS.add(self)
        self.params: list[Any] = []
        self.grads: list[Any] = []
        self.param_names: list[str] = []
        #: (weight index, Regularizer) pairs; the training issue's W_regularizer and friends
        self.regularizers: list[tuple[int, Any]] = []
        #: (weight index, Constraint) pairs, applied after every update
        self.constraints: list[tuple[int, Any]] = []
        self.updates: list[Any] = []
        #: a Regularizer of this layer's output (activity), or None
        self.activity_regularizer: Any = None
        #: whether backward must compute the input gradient (models turn it off
        #: for their first layer, whose input gradient nobody reads)
        self.needs_input_gradient = True

        self._batch_input_shape: Shape | None = None
        self._input: Any = None
        self._input_mask: Any = None
        self._input_token = 0  # 0: nothing fed (set_input's tokens start at 1)
        #: the permute kernel's index plans on the device, by (input shape, axes)
        self._permute_plans: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[Any, Any]] = {}
        self._cache: dict[bool, tuple[int, Any]] = {}
        #: state per use: None is the layer's own use (connected, or called directly)
        self._uses: dict[Hashable, UseState] = {None: UseState()}
        #: the use whose pass runs now (the latest forward or backward): the state that
        #: save, saved and buffer read, so subclasses never name a use
        self._current_use = self._uses[None]
        self._accepted_input: tuple[Any, ...] | None = None
        #: whether the weights are still those built from the layer's own declared input
        #: shape, never set nor run: connected after another layer whose output they do
        #: not fit, they are built again for it (see :meth:`_set_shape_and_build`)
        self._weights_as_declared = False

        if input_shape is not None and batch_input_shape is not None:
            raise ValueError(
                f"{cls_name} '{name}': give input_shape or batch_input_shape, not both"
            )
        if input_shape is not None:
            shape = as_shape(input_shape, "input_shape", f"{cls_name} '{name}'")
            self._pending_shape: Shape | None = (None, *shape)
        elif batch_input_shape is not None:
            self._pending_shape = as_shape(batch_input_shape, "batch_input_shape", cls_name)
        else:
            self._pending_shape = None
        if type(self) is Layer:  # used directly: an identity layer (Keras 0.3)
            self._finish_init()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "get_output" in cls.__dict__:
            # a Keras 0.3 custom layer: models run kernels, not get_output, so its body is
            # traced into them
            from numlayers.tracing.layer import adapt_keras_get_output

            adapt_keras_get_output(cls)
        elif hasattr(cls, "keras_get_output"):  # a subclass of one: its build too
            from numlayers.tracing.layer import adapt_keras_build

            adapt_keras_build(cls)
        LAYER_CLASSES[cls.__name__] = cls

    def _finish_init(self) -> None:
        """Subclasses call this last in ``__init__``: builds a layer given its input shape."""
        if self._pending_shape is not None:
            self._weights_as_declared = True  # until the build sets the given weights
            self.set_input_shape(self._pending_shape)
            self._weights_as_declared = self._weights_as_declared and bool(self.params)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}'>"

    @property
    def summary_kind(self) -> str:
        """What ``summary()`` calls this layer: its class name."""
        return type(self).__name__

    @property
    def label(self) -> str:
        """How error messages name this layer: ``Dense layer 'dense_1'``."""
        return f"{type(self).__name__} layer '{self.name}'"

    @property
    def kernels(self) -> Kernels:
        """The kernel set of this layer's device and dtype (typed by the families'
        interfaces, so a misspelt or mis-called operation fails type checking)."""
        return self.device.kernels(self.dtype)

    # ----------------------------------------------------------------- shapes
    def set_previous(self, layer: Layer) -> None:
        """Connect this layer's input to the output of ``layer``, then build: weights
        built from the layer's own declared input shape, and neither set nor run since,
        are built again where they do not fit ``layer``'s output (as Keras 0.3 did);
        other weights that do not fit are refused."""
        if not isinstance(layer, Layer):
            raise TypeError(f"{self.label}: set_previous expects a Layer, received {layer!r}")
        shape = layer.output_shape
        if self.input_ndim is not None and len(shape) != self.input_ndim:
            raise ValueError(
                f"{self.label} expects inputs of rank {self.input_ndim} (batch axis included), "
                f"but {layer.label} outputs shape {shape} (rank {len(shape)})"
            )
        if layer.produces_mask() and not self.supports_masked_input():
            raise ValueError(
                f"{self.label} cannot take a masked input, but {layer.label} outputs a mask"
            )
        if not self._explicit_dtype:
            self._change_dtype(layer.dtype)
        elif self.dtype != layer.dtype:
            raise TypeError(
                f"{self.label} has dtype {self.dtype}, but {layer.label} outputs {layer.dtype}"
            )
        if self.device is not layer.device:
            self.to(layer.device)
        self.previous = layer
        self._set_shape_and_build(shape, connecting=True)

    def set_input_shape(self, input_shape: Sequence[int | None]) -> None:
        """Declare the input shape (batch axis included, None for any size) and build."""
        shape = as_shape(input_shape, "input_shape", self.label)
        if self.input_ndim is not None and len(shape) != self.input_ndim:
            raise ValueError(
                f"{self.label} expects inputs of rank {self.input_ndim} (batch axis included), "
                f"received input_shape {shape}"
            )
        self._set_shape_and_build(shape)

    def _set_shape_and_build(self, shape: Shape, connecting: bool = False) -> None:
        _layout_changed()
        self._batch_input_shape = shape
        self._cache.clear()
        for state in self._uses.values():
            state.buffers.clear()
        if not self.built:
            self._build_weights(shape)
            self.built = True
        elif connecting and self._weights_as_declared:
            # Keras 0.3 builds a layer again when it is connected: a layer declared with
            # an input shape and added after another (its stateful LSTM example gives
            # every layer the first one's batch_input_shape) takes that layer's output.
            # Only weights nobody set or trained yet are replaced.
            try:
                self._check_rebuild(shape)
            except ValueError:
                self._drop_weights()
                self._build_weights(shape)
        else:
            self._check_rebuild(shape)
        self.output_shape  # noqa: B018 - validates the shape now, not at the first forward

    def _build_weights(self, shape: Shape) -> None:
        """:meth:`build`, its allocation failures told in terms of the layer."""
        try:
            self.build()
        except MemoryError as error:
            raise MemoryError(
                f"{self.label}: no memory for its weights with input shape {shape}"
            ) from error
        except ValueError as error:
            if "too big" not in str(error):  # NumPy's: an allocation beyond any memory
                raise
            raise ValueError(
                f"{self.label}: its weights for input shape {shape} are larger than an array can be"
            ) from error

    def _drop_weights(self) -> None:
        """Forget the weights (and their gradients, regularizers and constraints), so that
        :meth:`build` can make them again."""
        self.params, self.grads, self.param_names = [], [], []
        self.regularizers, self.constraints = [], []

    def _check_rebuild(self, shape: Shape) -> None:
        """A built layer keeps its weights; subclasses refuse shapes they cannot take."""

    def _refuse_other_input_dimension(self, built_for: int | None, shape: Shape) -> None:
        """Raise unless ``shape`` ends with ``built_for``, the input dimension of the
        weights (a :meth:`_check_rebuild` of the layers with one)."""
        if shape[-1] != built_for:
            raise ValueError(
                f"{self.label} was built for input dimension {built_for}, "
                f"received input shape {shape}"
            )

    @property
    def input_shape(self) -> Shape:
        """Input shape with the batch axis (``None`` for any batch size)."""
        if self.previous is not None:
            return self.previous.output_shape
        if self._batch_input_shape is None:
            raise RuntimeError(
                f"{self.label} is not connected and has no input shape: did you forget input_shape?"
            )
        return self._batch_input_shape

    @property
    def output_shape(self) -> Shape:
        """Output shape with the batch axis."""
        return self.compute_output_shape(self.input_shape)

    @property
    def training_output_shape(self) -> Shape:
        """The shape of the outputs training compares with its targets: the output shape,
        but for a layer whose training output differs (an AutoEncoder giving codes)."""
        return self.output_shape

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def build(self) -> None:
        """Create the weights; the input shape is known when this is called."""

    # ---------------------------------------------------------------- weights
    def add_weight(
        self, name: str, value: np.ndarray, regularizer: Any = None, constraint: Any = None
    ) -> Any:
        """Register a weight (given on the host), its gradient, regularizer and constraint."""
        array = self.device.weight(value, self.dtype)
        index = len(self.params)
        self.params.append(array)
        self.grads.append(self.device.zeros(array.shape, self.dtype))
        self.param_names.append(name)
        if regularizer is not None:
            self.regularizers.append((index, regularizer))
        if constraint is not None:
            self.constraints.append((index, constraint))
        return array

    # ------------------------------------------------- training contributions
    def add_penalties(self, total: Any) -> None:
        """``total[0] +=`` this layer's regularization penalties (weights and activity)."""
        for index, regularizer in self.regularizers:
            regularizer.add_penalty(self.kernels, self.params[index], total)
        if self.activity_regularizer is not None:
            # every use's output is regularized, as every use's backward adds its gradient
            for state in self._uses.values():
                output = state.saved.get(state.train, {}).get("output")
                if output is not None:
                    self.activity_regularizer.add_penalty(self.kernels, output, total)

    def add_regularizer_gradients(self) -> None:
        """Add the weight regularizers' gradients to ``self.grads`` (after backward)."""
        if not self.trainable:
            return
        for index, regularizer in self.regularizers:
            regularizer.add_gradient(self.kernels, self.params[index], self.grads[index])

    def apply_constraints(self) -> None:
        """Project the constrained weights in place (after an update)."""
        if not self.trainable:
            return
        for index, constraint in self.constraints:
            constraint.apply(self.kernels, self.params[index])

    def get_weights(self) -> list[np.ndarray]:
        """The weights as NumPy arrays (copies), in a fixed order."""
        return [np.array(self.device.to_host(p), copy=True) for p in self.params]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set the weights from arrays in the order of :meth:`get_weights`.

        Every count and shape is checked before anything is written, so a bad
        list leaves the layer's weights untouched.
        """
        self.write_weights(self.check_weights(weights))

    def check_weights(self, weights: Sequence[Any]) -> list[np.ndarray]:
        """Validate ``weights`` for :meth:`set_weights`; returns them as host arrays."""
        weights = list(weights)
        if len(weights) != len(self.params):
            raise ValueError(
                f"{self.label} has {len(self.params)} weight(s) {self.param_names}, "
                f"received a list of {len(weights)}"
            )
        host_values = []
        for index, (param, value) in enumerate(zip(self.params, weights, strict=True)):
            value = np.asarray(value)
            if value.shape != tuple(param.shape):
                raise ValueError(
                    f"{self.label}: weight {index} ('{self.param_names[index]}') has shape "
                    f"{tuple(param.shape)}, received an array of shape {value.shape}"
                )
            if value.dtype.kind not in "biuf":
                raise TypeError(
                    f"{self.label}: weight {index} has dtype {value.dtype}, expected numbers"
                )
            with np.errstate(over="ignore"):
                host = np.ascontiguousarray(value, dtype=self.dtype)
            overflow = np.isinf(host) & np.isfinite(value)
            if overflow.any():
                raise ValueError(
                    f"{self.label}: weight {index} ('{self.param_names[index]}') holds "
                    f"{value[overflow].flat[0]!r}, too large for {self.dtype}"
                )
            host_values.append(host)
        return host_values

    def write_weights(self, host_values: Sequence[np.ndarray]) -> None:
        """Copy checked host arrays into the weights, in place."""
        for param, value in zip(self.params, host_values, strict=True):
            self.device.write(param, value)
        self._cache.clear()
        self._weights_as_declared = False

    def get_gradients(self) -> list[np.ndarray]:
        """Gradients of the last backward pass, in the order of :meth:`get_weights`."""
        return [np.array(self.device.to_host(g), copy=True) for g in self.grads]

    def count_params(self) -> int:
        return int(sum(int(np.prod(p.shape)) for p in self.params))

    def trained_weights(self) -> tuple[list[Any], list[Any]]:
        """The weights an optimizer updates and their gradients: none when the layer is
        not ``trainable``, else all but the last :attr:`untrained_weight_count`."""
        if not self.trainable:
            return [], []
        count = len(self.params) - self.untrained_weight_count
        return self.params[:count], self.grads[:count]

    def count_trained_params(self) -> int:
        """The number of values an optimizer updates (see :meth:`trained_weights`)."""
        return int(sum(int(np.prod(p.shape)) for p in self.trained_weights()[0]))

    def weight_layers(self) -> list[Layer]:
        """The layers that own this layer's weights: itself, or those a wrapper wraps."""
        return [self]

    def weight_names(self) -> list[str]:
        """Names of the weights of :meth:`get_weights`, qualified by owner for wrappers."""
        owners = self.weight_layers()
        if owners == [self]:
            return list(self.param_names)
        return [f"{owner.name}/{name}" for owner in owners for name in owner.param_names]

    def get_params(self) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        """Keras 0.3's four lists: trainable params, regularizers, constraints, updates."""
        params = self.params if self.trainable else []
        return list(params), list(self.regularizers), list(self.constraints), list(self.updates)

    # ------------------------------------------------------- device and dtype
    def to(self, device: str | Device) -> Layer:
        """Move the weights (and all later computation) to ``device``."""
        target = get_device(device)
        if target is self.device:
            return self
        self.params = [target.weight(self.device.to_host(p), self.dtype) for p in self.params]
        self.grads = [target.zeros(tuple(g.shape), self.dtype) for g in self.grads]
        self._on_weights_replaced()
        self.device = target
        self._permute_plans.clear()
        self._on_device_change()
        self._forget_state()
        return self

    def _on_device_change(self) -> None:
        """Subclasses move device-resident constants (index plans) here."""

    def _on_weights_replaced(self) -> None:
        """Subclasses that hold their weights elsewhere too (a Keras 0.3 custom layer's
        attributes) point them at the new ``params`` here."""

    def _change_dtype(self, dtype: Any) -> None:
        dtype = resolve_dtype(dtype)
        if dtype == self.dtype:
            return
        self.dtype = dtype
        self.params = [self.device.weight(self.device.to_host(p), dtype) for p in self.params]
        self.grads = [self.device.zeros(tuple(g.shape), dtype) for g in self.grads]
        self._on_weights_replaced()
        self._forget_state()

    def _forget_state(self) -> None:
        _layout_changed()
        self._cache.clear()
        self._uses = {None: UseState()}
        self._current_use = self._uses[None]
        self._input = None
        self._input_mask = None
        self._input_token = 0

    # --------------------------------------------------------------- masking
    def supports_masked_input(self) -> bool:
        """Whether this layer accepts a masked input (value-only layers do)."""
        return self.passes_mask

    def produces_mask(self) -> bool:
        """Whether this layer's output carries a mask (known before any data).

        Value-only layers pass their input's mask on; layers that make masks
        (Embedding with ``mask_zero``, Masking) override this.
        """
        if not self.passes_mask:
            return False
        if self.previous is not None:
            return self.previous.produces_mask()
        return self._input_mask is not None

    def get_input_mask(self, train: bool = False) -> Any:
        if self.previous is not None:
            return self.previous.get_output_mask(train)
        return self._input_mask

    def get_output_mask(self, train: bool = False) -> Any:
        """The output mask (one axis fewer than the output: 1 keeps a step, 0 masks it), or None."""
        if not self.produces_mask():
            return None
        output = self.get_output(train)  # cached: computes nothing when the pass already ran
        if isinstance(output, PendingOutput):
            raise output.no_values()
        return self._uses[None].saved[train].get("output_mask")

    # ------------------------------------------------------ cached evaluation
    def set_input(self, x: Any, mask: Any = None) -> None:
        """Feed ``x`` to an unconnected layer; invalidates every cached output downstream."""
        self._input = self.prepare_input(x)
        self._input_mask = mask
        self._input_token = next(_input_tokens)

    def _token(self) -> int:
        """Identifies the input a cached output was computed from.

        Tokens grow with every new input anywhere, so a layer's token (the newest
        token among its inputs) changes exactly when one of its inputs changed.
        """
        if self.previous is not None:
            return self.previous._output_token()
        return self._input_token

    def _output_token(self) -> int:
        return self._token()

    @property
    def input(self) -> LayerInput:
        """This layer's input, as Keras 0.3's ``K.function`` takes it
        (:mod:`numlayers.layer_functions`)."""
        return LayerInput(self)

    def parent_layers(self) -> list[Layer]:
        """The layers whose outputs this layer takes as its input (none when it is fed)."""
        return [] if self.previous is None else [self.previous]

    def get_input(self, train: bool = False) -> Any:
        if self.previous is not None:
            return self.previous.get_output(train)
        if self._input is None:
            raise RuntimeError(f"{self.label} has no input: connect it or call set_input(x)")
        return self._input

    def get_output(self, train: bool = False) -> Any:
        """This layer's output for its current input, computed once per pass and flag;
        before any input reached it, a :class:`~numlayers.layer_functions.PendingOutput`
        that ``K.function`` takes."""
        token = self._token()
        if token == 0:
            return PendingOutput(self, train)
        cached = self._cache.get(train)
        if self.cache_enabled and cached is not None and cached[0] == token:
            # a backward after this reads the state of this flag's pass
            own = self._current_use = self._uses[None]
            own.train = train
            return cached[1]
        return self.output_for(self.get_input(train), self.get_input_mask(train), token, train)

    def output_for(self, x: Any, mask: Any, token: int, train: bool) -> Any:
        """Compute the output for ``x`` (this layer's current input, with its ``mask`` and
        ``token``) and cache it: a container that already holds each layer's input calls
        this rather than :meth:`get_output`, which would ask the layers before again."""
        y = self.run_forward(x, train, mask=mask)
        if self.cache_enabled:
            self._cache[train] = (token, y)
        return y

    def __call__(self, x: Any, mask: Any = None, train: bool = False) -> Any:
        """Apply the layer to ``x`` directly (its connections and cache are left alone).

        Returns a new array on the layer's device (NumPy on the CPU).
        """
        y = self.forward(self.prepare_input(x), train, mask=mask)
        out = self.device.empty(tuple(y.shape), self.dtype)
        self.kernels.copy(y, out)
        return out

    def _on_a_gpu(self, x: Any) -> bool:
        """Whether ``x`` is a GPU array (this device's, or any with a CUDA array interface:
        the simulator's have none), which ``prepare_input`` must not copy to the host."""
        return not isinstance(x, np.ndarray) and (
            self.device.is_device_array(x) or hasattr(x, "__cuda_array_interface__")
        )

    def prepare_input(self, x: Any) -> Any:
        """Bring user data to this layer's device and dtype (numbers only)."""
        if self._on_a_gpu(x):
            return self.device.asarray(x, self.dtype)
        host = np.asarray(x)
        if host.dtype.kind not in "biuf":
            raise TypeError(f"{self.label} expects numeric input, received dtype {host.dtype}")
        return self.device.asarray(host, self.dtype)

    # -------------------------------------------------------- forward/backward
    def forward(self, x: Any, train: bool = False, mask: Any = None, use: Hashable = None) -> Any:
        """Check ``x`` and compute the output, saving what :meth:`backward` needs.

        ``use`` names the place the layer is applied at when it is applied at several
        (a shared Graph node passes itself); the state of each use is kept apart.
        The layer works on a copy of ``x`` that it owns, so changing the caller's array
        before :meth:`backward` changes nothing. The returned array is a buffer of this
        use, valid until its next forward, and read-only (on CUDA, to writes from Python),
        so a write to it fails instead of corrupting the next pass (copy it to keep or
        change it).
        Models run their layers with :meth:`run_forward`, on arrays they own.
        """
        if self.built:
            self._check_input(x)
            x = self._owned_copy(x, train, use)
        return self.device.read_only(self.run_forward(x, train, mask, use))

    def _owned_copy(self, x: Any, train: bool, use: Hashable) -> Any:
        """``x`` (or each array of a list of inputs) copied into buffers of ``use``."""
        state = self.use_state(use)
        arrays = x if isinstance(x, list) else [x]
        copies = []
        for index, array in enumerate(arrays):
            key = (f"caller_input_{index}", train)
            copy = state.buffers.get(key)
            if copy is None or tuple(copy.shape) != tuple(array.shape) or copy.dtype != array.dtype:
                copy = state.buffers[key] = self.device.empty(tuple(array.shape), array.dtype)
            self.device.copy(array, copy)
            copies.append(copy)
        return copies if isinstance(x, list) else copies[0]

    def run_forward(
        self, x: Any, train: bool = False, mask: Any = None, use: Hashable = None
    ) -> Any:
        """:meth:`forward` on an array the caller owns and keeps unchanged until
        :meth:`backward` (a model's own buffers), with no copy in and a writable result."""
        if not self.built:
            raise RuntimeError(
                f"{self.label} is not built: give it an input shape or add it to a model"
            )
        self._check_input(x)
        if mask is not None and not self.supports_masked_input():
            raise ValueError(f"{self.label} cannot take a masked input")
        state = self._uses.get(use)
        if state is None:  # a first use (looked up inline: every layer runs on every batch)
            state = self.use_state(use)
        self._current_use = state
        state.train = train
        self._weights_as_declared = False  # from now on they may be trained
        saved = state.saved[train] = {
            "mask": mask,
            "output_mask": mask if self.passes_mask else None,
        }
        y = self._forward(x, train)
        saved["output_shape"] = tuple(y.shape)
        if self.activity_regularizer is not None:
            saved["output"] = y
        return y

    def backward(
        self, grad_output: Any, from_preactivation: bool = False, use: Hashable = None
    ) -> Any:
        """Gradient with respect to the input of the last forward pass of ``use``.

        Weight gradients are written to ``self.grads`` (read them with
        :meth:`get_gradients`). Returns None when ``needs_input_gradient`` is off.
        With ``from_preactivation``, ``grad_output`` is the gradient with respect
        to the layer's pre-activation (:meth:`preactivation`): losses fused with
        a softmax start there.
        """
        state = self._uses.get(use)
        saved = None if state is None else state.saved.get(state.train)
        if state is None or saved is None:
            raise RuntimeError(f"{self.label}: backward called before forward")
        self._current_use = state
        expected = saved.get("output_shape")
        if expected is not None and tuple(grad_output.shape) != expected:
            raise ValueError(
                f"{self.label}: gradient of shape {tuple(grad_output.shape)} does not match "
                f"the output shape {expected}"
            )
        self._check_array(grad_output, "gradient")
        if from_preactivation:
            return self._backward_preactivation(grad_output)
        if self.activity_regularizer is not None:
            total = self.buffer("activity_grad", tuple(grad_output.shape))
            self.kernels.copy(grad_output, total)
            self.activity_regularizer.add_gradient(self.kernels, saved["output"], total)
            grad_output = total
        return self._backward(grad_output)

    def preactivation(self) -> Any:
        """The last forward's input to the output activation (layers with ``activation``)."""
        raise NotImplementedError(f"{self.label} has no separate activation")

    def _backward_preactivation(self, grad_preactivation: Any) -> Any:
        raise NotImplementedError(f"{self.label} has no separate activation")

    def use_state(self, use: Hashable = None) -> UseState:
        """The state of one use of this layer (None: its own), made at its first forward."""
        state = self._uses.get(use)
        if state is None:
            state = self._uses[use] = UseState()
        return state

    def save(self, **arrays: Any) -> None:
        """Keep arrays for the backward pass of the current forward (of the current use)."""
        state = self._current_use
        state.saved[state.train].update(arrays)

    def saved(self) -> dict[str, Any]:
        """What the forward of the current use saved (the pass running now, or the latest)."""
        state = self._current_use
        return state.saved[state.train]

    def persistent_arrays(self) -> list[Any]:
        """The arrays that outlive a step (the weights; a stateful layer adds its carried
        states): a recorded CUDA graph that updates or reads others is outdated
        (:mod:`numlayers.cuda_graphs`)."""
        return list(self.params)

    def permuted(self, array: Any, axes: tuple[int, ...], slot: str) -> Any:
        """``array.transpose(axes)`` in buffer ``slot`` (of ``array``'s dtype)."""
        shape = tuple(int(array.shape[axis]) for axis in axes)
        return self.permute_into(array, axes, self.buffer(slot, shape, array.dtype))

    def permute_into(self, array: Any, axes: tuple[int, ...], out: Any) -> Any:
        """``out`` set to ``array.transpose(axes)`` by the permute kernel, whose index plan
        for each shape and axes is made on the host once and kept on the device."""
        key = (tuple(int(d) for d in array.shape), tuple(axes))
        plan = self._permute_plans.get(key)
        if plan is None:
            out_shape, strides = permute_plan(*key)
            plan = self._permute_plans[key] = (
                self.device.asarray(out_shape),
                self.device.asarray(strides),
            )
        self.kernels.permute_forward(array, out, *plan)
        return out

    def buffer(self, slot: str, shape: tuple[int, ...], dtype: Any = None) -> Any:
        """A reusable array for ``slot`` (of this layer's dtype unless given) of the current
        use and train flag, reallocated only when the shape changes."""
        state = self._current_use
        key = (slot, state.train)
        array = state.buffers.get(key)
        if array is None or tuple(array.shape) != shape:
            array = self.device.empty(shape, self.dtype if dtype is None else dtype)
            state.buffers[key] = array
        return array

    def constant_buffer(self, slot: str, shape: tuple[int, ...], value: float) -> Any:
        """A :meth:`buffer` holding ``value`` everywhere (zero initial states, a mask of
        ones), for kernels that only read it: filled when it is allocated, not at every
        pass, which would cost a launch each time."""
        state = self._current_use
        known = state.buffers.get((slot, state.train))
        array = self.buffer(slot, shape)
        if array is not known:
            self.kernels.fill(array, value)
        return array

    def _forward(self, x: Any, train: bool) -> Any:
        """The output of input ``x``: the base layer is the identity (Keras 0.3)."""
        return x

    def _backward(self, grad_output: Any) -> Any:
        """The input gradient of ``grad_output``: the identity's."""
        return grad_output

    def _check_array(self, x: Any, what: str) -> None:
        if not self.device.is_device_array(x):
            raise TypeError(
                f"{self.label} runs on {self.device.name} and expects its {what} there, "
                f"received {type(x).__name__}"
            )
        if x.dtype != self.dtype:
            raise TypeError(
                f"{self.label} expects {what} of dtype {self.dtype}, received {x.dtype}"
            )
        self._check_layout(x, what)

    def _check_layout(self, x: Any, what: str) -> None:
        """Refuse a view the kernels cannot read (they take C-contiguous arrays only)."""
        if not _c_contiguous(x):
            raise ValueError(
                f"{self.label} expects its {what} as a C-contiguous array, received a view "
                f"with strides {tuple(x.strides)} (reversed, broadcast or transposed): pass "
                "a contiguous copy (np.ascontiguousarray on the CPU)"
            )

    def _check_input(self, x: Any) -> None:
        # an array like the last one accepted, with no layer changed since, passes at
        # once (models call this for every layer on every batch)
        try:
            accepted = (type(x), x.dtype, x.shape, _c_contiguous(x), _layouts[0])
        except AttributeError:  # not an array: _check_array says what it is
            accepted = None
        if accepted is not None and accepted == self._accepted_input:
            return
        self._check_array(x, "input")
        expected = self.input_shape
        shape = tuple(x.shape)
        if len(shape) != len(expected) or any(
            e is not None and e != s for e, s in zip(expected, shape, strict=False)
        ):
            raise ValueError(
                f"{self.label} expects input of shape {expected}, "
                f"received an array of shape {shape}"
            )
        if shape and shape[0] == 0:
            raise ValueError(f"{self.label} received an empty batch (shape {shape})")
        if self.built:
            # a layer upstream may have changed shape since these weights were built for
            # its output: kernels given weights that do not fit would read past them
            self._check_rebuild(expected)
        self._accepted_input = accepted

    # ----------------------------------------------------------------- config
    def get_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this layer (not its weights)."""
        config: dict[str, Any] = {
            "class_name": type(self).__name__,
            "name": self.name,
            "trainable": self.trainable,
            "cache_enabled": self.cache_enabled,
            "dtype": self.dtype.name,
        }
        shape = self._batch_input_shape if self.previous is None else None
        if shape is None:
            shape = self._pending_shape
        if shape is not None:
            config["batch_input_shape"] = list(shape)
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Layer:
        """Rebuild a layer from :meth:`get_config`'s output."""
        config = dict(config)
        class_name = config.pop("class_name", cls.__name__)
        if class_name != cls.__name__:
            raise ValueError(f"{cls.__name__}.from_config received a config of {class_name}")
        return cls(**config)


def inner_layers_from_config(
    config: dict[str, Any], keys: Sequence[str], custom_objects: dict[str, Any] | None
) -> tuple[list[Layer], dict[str, Any]]:
    """The layers that a wrapper's ``config`` holds under ``keys``, rebuilt, and a copy of
    the rest of ``config`` (its ``class_name`` left out): what a wrapper's ``from_config``
    passes to its constructor."""
    from numlayers.layers import deserialize

    rest = {key: value for key, value in config.items() if key != "class_name"}
    return [deserialize(rest.pop(key), custom_objects) for key in keys], rest
