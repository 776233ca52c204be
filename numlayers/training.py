"""Training for every container: compile, fit, evaluate, predict and friends.

:class:`Model` holds what Sequential and Graph share. A container supplies its
input and output names and shapes, a forward pass from input arrays to output
arrays, a backward pass from output gradients, and its layers; everything else
(losses, metrics, sample and class weights, regularizers, the optimizer,
constraints, callbacks, the progress bar) lives here once.

A training step stays on the model's device: forward, loss and its gradient,
backward, regularizer gradients, the update and the constraints all run as
kernels there. Loss and metric values land in one small device vector; it is
copied to the host once per batch only when something shows per-batch values
(the progress bar, a callback), else the epoch's sums come back once per epoch.
"""

from __future__ import annotations

import functools
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from numlayers import losses as losses_module
from numlayers import optimizers as optimizers_module
from numlayers.callbacks import Callback, CallbackList, History
from numlayers.cuda_graphs import StepGraphs, enabled_by_environment
from numlayers.devices import Device
from numlayers.layers.base import Layer
from numlayers.random import get_generator
from numlayers.weights_io import load_weights, save_weights

Method = TypeVar("Method", bound=Callable[..., Any])


def yaml_module(caller: str) -> Any:
    """PyYAML, or an ImportError saying what ``caller`` needs it for."""
    try:
        import yaml
    except ImportError as error:
        raise ImportError(f"{caller} needs PyYAML: pip install pyyaml") from error
    return yaml


#: guards the creation of each model's lock
_LOCK_CREATION = threading.Lock()


def one_call_at_a_time(method: Method) -> Method:
    """Run ``method`` holding the model's lock. Layers keep outputs and gradients in
    buffers of their own, so two threads running one model at once would read each
    other's results: concurrent calls on one model take turns (see the README's
    Safety section); different models run in parallel."""

    @functools.wraps(method)
    def locked(self: Model, *args: Any, **kwargs: Any) -> Any:
        lock = self.__dict__.get("_call_lock")
        if lock is None:
            with _LOCK_CREATION:
                lock = self.__dict__.setdefault("_call_lock", threading.RLock())
        with lock:
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


class _UpdateGuard:
    """While ``fit`` runs in the main thread, a Ctrl-C that lands during a step's weight
    update is held until the update ends, so weights are never left half-stepped."""

    def __init__(self) -> None:
        self.updating = False
        self.interrupted = False

    def on_interrupt(self, signum: int, frame: Any) -> None:
        if self.updating:
            self.interrupted = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def update(self) -> Iterator[None]:
        self.updating = True
        try:
            yield
        finally:
            self.updating = False
        if self.interrupted:
            self.interrupted = False
            raise KeyboardInterrupt


#: the guard of the ``fit`` running now (None outside fit or off the main thread)
_active_guard: _UpdateGuard | None = None


@contextmanager
def _interrupts_held_during_updates() -> Iterator[None]:
    """Install an :class:`_UpdateGuard` for the block, where Python's own Ctrl-C handler
    is in place in the main thread (else leave the handling as it is)."""
    global _active_guard
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        or _active_guard is not None
    ):
        yield
        return
    guard = _UpdateGuard()
    signal.signal(signal.SIGINT, guard.on_interrupt)
    _active_guard = guard
    try:
        yield
    finally:
        _active_guard = None
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def _update_section() -> Iterator[None]:
    """A weight update that an interrupt must not cut in two (see :class:`_UpdateGuard`).

    Only the main thread's updates are guarded: Python runs signal handlers there, and
    the guard is that thread's. Another thread training a model of its own while ``fit``
    runs must neither flag the main thread's update as finished nor take its interrupt.
    """
    guard = _active_guard
    if guard is None or threading.current_thread() is not threading.main_thread():
        yield
    else:
        with guard.update():
            yield


#: per-output sample weights; None where every sample weighs 1
Weights = list[np.ndarray | None]
#: a data set on the host: its inputs, its targets and their weights
Arrays = tuple[list[np.ndarray], list[np.ndarray], Weights]

METRIC_NAMES = {"accuracy": "acc", "acc": "acc"}
#: Keras 0.3's ``compile(class_mode=...)``: how accuracy reads an output (None: from
#: the loss and the output's width)
CLASS_MODES = (None, "categorical", "binary")


class OutputHead:
    """One model output with its loss, metrics and device buffers."""

    def __init__(
        self,
        name: str,
        layer: Layer,
        loss: losses_module.Loss,
        metrics: list[str],
        model: Model,
        class_mode: str | None = None,
        temporal: bool = False,
        loss_weight: float = 1.0,
    ) -> None:
        self.name = name
        self.layer = layer
        self.loss = loss
        self.metrics = metrics
        #: sample weights are given per timestep, ``(samples, timesteps)``
        self.temporal = temporal
        #: this output's share of the total loss (Keras 0.3's Graph ``loss_weights``)
        self.loss_weight = loss_weight
        self.fused = bool(
            loss.fused_name
            and getattr(getattr(layer, "activation", None), "name", None) == "softmax"
            and getattr(layer, "activity_regularizer", None) is None
            and model.allows_fused_output(layer)
        )
        self.binary_accuracy = class_mode == "binary" or (
            class_mode is None
            and (
                loss.name == "binary_crossentropy"
                or (not loss.sparse and layer.output_shape[-1] == 1)
            )
        )
        self._model = model
        self._buffers: dict[tuple[str, tuple[int, ...]], Any] = {}

    def buffer(self, slot: str, shape: tuple[int, ...], dtype: Any = None) -> Any:
        key = (slot, shape)
        if key not in self._buffers:
            self._buffers[key] = self._model.device.empty(shape, dtype or self._model.dtype)
        return self._buffers[key]

    def forget_buffers(self) -> None:
        self._buffers.clear()


class Model:
    """Training API shared by :class:`~numlayers.models.Sequential` and Graph."""

    device: Device
    dtype: np.dtype
    name: str
    #: the layer that nests this model in other containers (made once per model)
    nested_as: Layer | None = None

    # ---- what a container provides --------------------------------------
    @property
    def input_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def output_names(self) -> list[str]:
        raise NotImplementedError

    def input_shapes(self) -> list[tuple[int | None, ...]]:
        raise NotImplementedError

    def input_layers(self) -> list[Layer]:
        """The layers that take the inputs, in the order of :attr:`input_names`."""
        raise NotImplementedError

    def output_layers(self) -> list[Layer]:
        raise NotImplementedError

    def applied_layers(self) -> list[Layer]:
        """The layers this container applies itself, in order (wrappers, merges and
        nested containers as they are, not the layers inside them)."""
        raise NotImplementedError

    def all_layers(self) -> list[Layer]:
        raise NotImplementedError

    def forward_outputs(
        self, inputs: list[Any], train: bool, masks: Sequence[Any] | None = None
    ) -> list[Any]:
        """The outputs of ``inputs`` (device arrays, with their ``masks`` or none)."""
        raise NotImplementedError

    def backward_outputs(
        self, grads: list[Any], from_preactivation: list[bool], need_input_gradients: bool = False
    ) -> list[Any] | None:
        """Back-propagate the output gradients of the last forward pass; returns the
        input gradients when ``need_input_gradients`` (a nested container's), else None."""
        raise NotImplementedError

    def input_dtype_kind(self, index: int) -> str:
        """ "float" for float inputs, "int" for index inputs (token ids for Embedding)."""
        return "int" if self.input_layers()[index].index_input else "float"

    def standardize_inputs(self, X: Any) -> list[Any]:
        raise NotImplementedError

    def standardize_targets(self, y: Any) -> list[Any]:
        raise NotImplementedError

    def wrap_outputs(self, outputs: list[Any]) -> Any:
        raise NotImplementedError

    def get_config(self, verbose: int = 0) -> dict[str, Any]:
        raise NotImplementedError

    #: whether compile takes a loss for each output by name (a Graph's, as in Keras 0.3)
    losses_by_output_name = False

    def compile_config(self) -> dict[str, Any]:
        """What :meth:`compile` was given, as plain data (nothing before a compile): the
        optimizer's config, the loss (a dict by output for a Graph, a function loss by
        its reference), the metrics and the class mode. Keras 0.3 kept it in a model's
        config, and :func:`numlayers.models.model_from_config` compiles with it."""
        if not hasattr(self, "heads"):
            return {}
        from numlayers.serialization import function_reference

        def named(loss: losses_module.Loss) -> str:
            if not isinstance(loss, losses_module.FunctionLoss):
                return loss.name
            reference = function_reference(loss.function)
            return reference if isinstance(reference, str) else loss.name

        names = [named(loss) for loss in self._losses]
        return {
            "optimizer": self.optimizer.get_config(),
            "loss": dict(zip(self.output_names, names, strict=True))
            if self.losses_by_output_name
            else names[0],
            "metrics": list(self._compiled_metrics),
            "class_mode": self.class_mode,
            **(
                {"sample_weight_modes": dict(self._weight_modes),
                 "loss_weights": dict(self._loss_weights)}
                if self.losses_by_output_name
                else {"sample_weight_mode": self._weight_modes[self.output_names[0]]}
            ),
        }  # fmt: skip

    def to_json(self, **kwargs: Any) -> str:
        """The model's config (:meth:`get_config`: the architecture and, once compiled,
        what :meth:`compile` was given) as JSON, for :func:`numlayers.models.
        model_from_json`; ``kwargs`` go to ``json.dumps``. The weights are saved apart
        (:meth:`save_weights`)."""
        return json.dumps(self.get_config(), **kwargs)

    def to_yaml(self, **kwargs: Any) -> str:
        """The architecture as YAML, for :func:`numlayers.models.model_from_yaml` (needs
        PyYAML); ``kwargs`` go to ``yaml.safe_dump``."""
        return str(yaml_module("to_yaml").safe_dump(json.loads(self.to_json()), **kwargs))

    # ---- compile ----------------------------------------------------------
    def compile(
        self,
        optimizer: Any,
        loss: Any,
        metrics: Sequence[str] | None = None,
        class_mode: str | None = None,
        cuda_graphs: bool = True,
        sample_weight_mode: str | None = None,
        sample_weight_modes: dict[str, str | None] | None = None,
        loss_weights: dict[str, float] | None = None,
    ) -> None:
        """Choose the optimizer, the loss of each output and the metrics.

        Args:
            optimizer: an Optimizer or a name ("sgd", "adam", ...).
            loss: a loss name or Loss (for several outputs, a dict by output name).
            metrics: ``["accuracy"]`` or nothing: reported by every call. Keras 0.3's
                way, ``show_accuracy=True`` in ``fit`` and ``evaluate`` (``accuracy=True``
                in ``train_on_batch`` and ``test_on_batch``), reports it in that call.
            class_mode: how accuracy reads an output, as Keras 0.3: ``"categorical"``
                (the arg-max matches) or ``"binary"`` (rounded values match); by default
                binary for a binary cross-entropy loss or a one-unit output.
            cuda_graphs: on CUDA, record each step as a CUDA graph and replay it
                (:mod:`numlayers.cuda_graphs`); False, or the environment variable
                ``NUMLAYERS_CUDA_GRAPHS=0``, launches every kernel from Python instead.
            sample_weight_mode: ``"temporal"``: sample weights are given per timestep,
                ``(samples, timesteps)``, for sequence outputs (Keras 0.3's Sequential).
            sample_weight_modes: the same per output name (Keras 0.3's Graph).
            loss_weights: each output's factor in the total loss, by output name (1 for
                those not named); the losses reported per output are not scaled.
        """
        if class_mode not in CLASS_MODES:
            raise ValueError(
                f"{self.name}: class_mode must be 'categorical', 'binary' or None, "
                f"received {class_mode!r}"
            )
        self.optimizer = optimizers_module.get(optimizer)
        names = self.output_names
        if isinstance(loss, dict):
            unknown = set(loss) - set(names)
            missing = set(names) - set(loss)
            if unknown or missing:
                raise ValueError(
                    f"{self.name}: loss dict must name each output {names}; "
                    f"unknown {sorted(unknown)}, missing {sorted(missing)}"
                )
            chosen = [losses_module.get(loss[n]) for n in names]
        else:
            chosen = [losses_module.get(loss)] * len(names)
        metric_names = []
        for metric in metrics or []:
            if metric not in METRIC_NAMES:
                raise ValueError(f"{self.name}: unknown metric {metric!r}; use 'accuracy'")
            metric_names.append(METRIC_NAMES[metric])
        self._weight_modes = self._by_output_name(
            sample_weight_modes
            if sample_weight_modes is not None
            else dict.fromkeys(names, sample_weight_mode),
            "sample_weight_modes",
            None,
        )
        for name, mode in self._weight_modes.items():
            if mode not in (None, "temporal"):
                raise ValueError(
                    f"{self.name}: the sample weight mode of '{name}' must be None or "
                    f"'temporal', received {mode!r}"
                )
        self._loss_weights = self._by_output_name(loss_weights, "loss_weights", 1.0)
        for name, factor in self._loss_weights.items():
            if not _is_non_negative_number(factor):
                raise ValueError(
                    f"{self.name}: the loss weight of '{name}' must be a non-negative number, "
                    f"received {factor!r}"
                )
        self.class_mode = class_mode
        self._losses = chosen
        #: the metrics compile asked for, reported by every call
        self._compiled_metrics = metric_names
        self._make_heads(metric_names)
        self._reported_metrics = set(metric_names)
        self.stop_training = False
        self.cuda_graphs = bool(cuda_graphs)

    def _by_output_name(self, given: Any, what: str, default: Any) -> dict[str, Any]:
        """``given`` (a dict by output name, or None) for every output, ``default`` for the
        outputs it does not name; a name that is no output is refused."""
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise TypeError(
                f"{self.name}: {what} must be a dict by output name, received {given!r}"
            )
        unknown = sorted(set(given) - set(self.output_names))
        if unknown:
            raise ValueError(
                f"{self.name}: {what} names {unknown}, which are not outputs ({self.output_names})"
            )
        return {name: given.get(name, default) for name in self.output_names}

    def _make_heads(self, metric_names: list[str]) -> None:
        """One :class:`OutputHead` per output, computing ``metric_names``."""
        self.heads = [
            OutputHead(
                name,
                layer,
                chosen_loss,
                metric_names,
                self,
                self.class_mode,
                temporal=self._weight_modes[name] == "temporal",
                loss_weight=float(self._loss_weights[name]),
            )
            for name, layer, chosen_loss in zip(
                self.output_names, self.output_layers(), self._losses, strict=True
            )
        ]
        for head in self.heads:
            if head.temporal and len(head.layer.training_output_shape) != 3:
                raise ValueError(
                    f"{self.name}: temporal sample weights need an output of shape "
                    f"(samples, timesteps, features); '{head.name}' gives "
                    f"{head.layer.training_output_shape}"
                )
        self.metric_names = metric_names
        self._scalars: Any = None
        self._compiled_device: Device | None = None
        self.step_graphs = StepGraphs()  # the steps recorded with the old heads are gone

    def _report_accuracy(self, accuracy: bool) -> None:
        """Report accuracy in this call when ``accuracy`` (Keras 0.3's ``show_accuracy``),
        computing it from now on; else report only what compile asked for."""
        if accuracy and "acc" not in self.metric_names:
            self._make_heads([*self.metric_names, "acc"])
        self._reported_metrics = set(self.metric_names if accuracy else self._compiled_metrics)

    def _require_compiled(self) -> None:
        if not hasattr(self, "heads"):
            raise RuntimeError(f"{self.name} is not compiled: call compile(optimizer, loss) first")

    @property
    def log_names(self) -> list[str]:
        """Names of the values a step reports: loss, then per-output losses and metrics."""
        names = ["loss"]
        several = len(self.heads) > 1
        for head in self.heads:
            if several:
                names.append(f"{head.name}_loss")
            for metric in head.metrics:
                if metric in self._reported_metrics:
                    names.append(f"{head.name}_{metric}" if several else metric)
        return names

    def _scalar_count(self) -> int:
        """Length of the vector of :meth:`_scalar_slots`."""
        return 1 + sum(1 + len(head.metrics) for head in self.heads)

    def _scalar_slots(self) -> Any:
        """Device vector: [regularization, then per output: loss, metrics...]."""
        if self._scalars is None or self._compiled_device is not self.device:
            count = self._scalar_count()
            self._scalars = self.device.zeros((count,), self.dtype)
            self._scalar_views = [self._scalars[i : i + 1] for i in range(count)]
            self._compiled_device = self.device
            for head in self.heads:
                head.forget_buffers()
        return self._scalars

    # ---- one step ---------------------------------------------------------
    def _row_scales(
        self,
        head: OutputHead,
        output_shape: tuple[int, ...],
        weights: np.ndarray | None,
        train: bool,
    ) -> tuple[Any, Any]:
        """Per-row weights of the loss and of the metrics, as device vectors.

        As in Keras 0.3: samples weigh ``w / count(w != 0)``; the rows (timesteps)
        of a sequence output share their sample's weight, or, with temporal weights,
        each row weighs ``w / count(w != 0)`` itself; a masked output weighs
        each row by ``mask / mean(mask)`` too, so masked steps count for nothing and
        the loss keeps its scale. Metrics average over the unmasked rows.
        """
        samples = output_shape[0]
        rows_per_sample = int(np.prod(output_shape[1:-1])) if len(output_shape) > 2 else 1
        rows = samples * rows_per_sample
        uniform = self._constant_vector(head, "uniform_rows", rows, 1.0 / rows)
        temporal = weights is not None and weights.ndim == 2
        if weights is None:  # the common case: nothing to compute or copy per batch
            sample_scale = self._constant_vector(head, "uniform_samples", samples, 1.0 / rows)
            loss_scale = uniform
        elif temporal:  # one weight a row: the mask's scale is the rows' own
            nonzero = max(int(np.count_nonzero(weights)), 1)
            loss_scale = self.device.asarray((weights / nonzero).reshape(rows), self.dtype)
            sample_scale = self._constant_vector(head, "unit_samples", samples, 1.0)
        else:
            nonzero = max(int(np.count_nonzero(weights)), 1)
            host_scale = weights / (nonzero * rows_per_sample)
            sample_scale = self.device.asarray(host_scale, self.dtype)
            loss_scale = self.device.asarray(np.repeat(host_scale, rows_per_sample), self.dtype)
        mask = head.layer.get_output_mask(train) if len(output_shape) > 2 else None
        if mask is None:
            return loss_scale, uniform
        kernels = self.device.kernels(self.dtype)
        masked_loss_scale = head.buffer("masked_loss_scale", (rows,))
        kernels.mask_row_scale(mask, sample_scale, masked_loss_scale)
        if temporal:  # mask / mean(mask), times each row's weight
            grid = masked_loss_scale.reshape(mask.shape)
            kernels.combine_masks_all(grid, loss_scale.reshape(mask.shape), grid)
        metric_scale = head.buffer("masked_metric_scale", (rows,))
        uniform_samples = self._constant_vector(head, "uniform_samples", samples, 1.0 / rows)
        kernels.mask_row_scale(mask, uniform_samples, metric_scale)
        return masked_loss_scale, metric_scale

    def _constant_vector(self, head: OutputHead, slot: str, length: int, value: float) -> Any:
        """A device vector filled with ``value``, made once per length."""
        key = (slot, (length,))
        if key not in head._buffers:
            head._buffers[key] = self.device.asarray(np.full(length, value), self.dtype)
        return head._buffers[key]

    def _loss_and_gradients(
        self,
        outputs: list[Any],
        targets: list[Any],
        weights: Weights,
        with_grads: bool,
    ) -> tuple[list[Any], list[bool]]:
        """Loss and metric values into the scalar slots, and the output gradients.

        ``with_grads`` is also the train flag the outputs were computed with."""
        kernels = self.device.kernels(self.dtype)
        grads = []
        slot = 1
        for head, output, target, weight in zip(self.heads, outputs, targets, weights, strict=True):
            shape = tuple(output.shape)
            if tuple(target.shape) != (shape[:-1] if head.loss.sparse else shape):
                raise ValueError(
                    f"{self.name}: output '{head.name}' gives {'train' if with_grads else 'test'}"
                    f" outputs of shape {shape}, its targets have shape {tuple(target.shape)}"
                )
            columns = shape[-1]
            rows = output.size // columns
            pred_rows = output.reshape(rows, columns)
            true_rows = target.reshape(rows) if head.loss.sparse else target.reshape(rows, columns)
            loss_scale, metric_scale = self._row_scales(head, shape, weight, with_grads)
            gradient_scale = loss_scale
            if with_grads and head.loss_weight != 1.0:  # the output's share of the total
                gradient_scale = head.buffer("weighted_loss_scale", (rows,))
                kernels.scale_into(loss_scale, self.dtype.type(head.loss_weight), gradient_scale)
            loss_rows = head.buffer("loss_rows", (rows,))
            loss_input = pred_rows
            if head.fused:  # the softmax's logits
                loss_input = head.layer.preactivation().reshape(rows, columns)
            if isinstance(head.loss, losses_module.FunctionLoss):  # a function of whole arrays
                grad = head.buffer("grad", shape) if with_grads else None
                head.loss.compute(
                    self.device,
                    target,
                    output,
                    loss_rows,
                    head.buffer,
                    gradient_scale if with_grads else None,
                    grad,
                )
                if grad is not None:
                    grads.append(grad)
            elif with_grads:  # the gradient comes from the same operation (one pass)
                grad = head.buffer("grad", shape)
                head.loss.forward_backward(
                    kernels,
                    true_rows,
                    loss_input,
                    gradient_scale,
                    loss_rows,
                    grad.reshape(rows, columns),
                    head.fused,
                )
                grads.append(grad)
            else:
                head.loss.forward(kernels, true_rows, loss_input, loss_rows, head.fused)
            kernels.weighted_sum(loss_rows, loss_scale, self._scalar_views[slot])
            slot += 1
            for _metric in head.metrics:
                correct = head.buffer("correct_rows", (rows,))
                if head.loss.sparse:
                    kernels.sparse_categorical_accuracy_rows(true_rows, pred_rows, correct)
                elif head.binary_accuracy:
                    kernels.binary_accuracy_rows(true_rows, pred_rows, correct)
                else:
                    kernels.categorical_accuracy_rows(true_rows, pred_rows, correct)
                kernels.weighted_sum(correct, metric_scale, self._scalar_views[slot])
                slot += 1
        return grads, [head.fused for head in self.heads]

    def _step(self, inputs: list[Any], targets: list[Any], weights: Weights, train: bool) -> Any:
        """One batch on the device; returns the device vector of its values."""
        kernels = self.device.kernels(self.dtype)
        scalars = self._scalar_slots()
        kernels.fill(scalars, 0.0)
        outputs = self.forward_outputs(inputs, train=train)
        grads, fused = self._loss_and_gradients(outputs, targets, weights, with_grads=train)
        layers = self.all_layers()
        for layer in layers:
            layer.add_penalties(self._scalar_views[0])
        if not train:
            return scalars
        self.backward_outputs(grads, fused)
        params, param_grads = [], []
        for layer in layers:
            layer.add_regularizer_gradients()
            trained, trained_grads = layer.trained_weights()
            params.extend(trained)
            param_grads.extend(trained_grads)
        with _update_section():
            self.optimizer.update(params, param_grads, self.device, self.dtype)
            for layer in layers:
                layer.apply_constraints()
        return scalars

    def _batch_step(
        self, inputs: list[np.ndarray], targets: list[np.ndarray], weights: Weights, train: bool
    ) -> Any:
        """:meth:`_step` on one batch of host arrays: on CUDA, replayed as a CUDA graph
        once its signature was seen twice (see :meth:`_on_device`)."""
        count = len(inputs)

        def key() -> Any:
            return (
                train,
                _signature([*inputs, *targets]),
                tuple(w is None for w in weights),
                tuple(sorted(self._reported_metrics)),
                # clipping is decided in Python: a new clipnorm or clipvalue is a new step
                (self.optimizer.clipnorm, self.optimizer.clipvalue) if train else None,
            )

        return self._on_device(
            key,
            [*inputs, *targets],
            lambda arrays: self._step(arrays[:count], arrays[count:], weights, train),
            train,
        )

    def _predict_step(self, inputs: list[np.ndarray]) -> list[Any]:
        """The outputs (device arrays) of one batch of host inputs, as :meth:`_batch_step`."""
        return self._on_device(
            lambda: ("predict", _signature(inputs)),
            inputs,
            lambda arrays: self.forward_outputs(arrays, train=False),
            False,
        )

    def _on_device(
        self,
        key: Callable[[], Any],
        batch: list[np.ndarray],
        step: Callable[[list[Any]], Any],
        train: bool,
    ) -> Any:
        """``step`` on the device copies of ``batch``: through the model's CUDA graphs
        (:class:`~numlayers.cuda_graphs.StepGraphs`) where they are on, else eagerly.
        ``key()`` is the step's signature, which a graph is recorded for (made only
        there: the CPU step does not pay for it)."""
        if self.device.name != "cuda" or not self._graphs_wanted():
            return step([self.device.asarray(array) for array in batch])
        layers = self.all_layers()
        guards = [array for layer in layers for array in layer.persistent_arrays()]
        if train:
            guards.append(self.optimizer.persistent_state())
        graphs = self.__dict__.setdefault("step_graphs", StepGraphs())  # predict needs no compile
        return graphs.run(self.device, key(), guards, batch, step)

    def _graphs_wanted(self) -> bool:
        return getattr(self, "cuda_graphs", True) and enabled_by_environment()

    def _scalars_to_logs(self, host: np.ndarray) -> dict[str, float]:
        """Turn the device vector's host copy into named values (total loss first)."""
        values = [float(v) for v in host]
        logs: dict[str, float] = {}
        total = values[0]
        slot = 1
        several = len(self.heads) > 1
        per_output = {}
        for head in self.heads:
            total += head.loss_weight * values[slot]
            per_output[f"{head.name}_loss"] = values[slot]
            slot += 1
            for metric in head.metrics:
                if metric in self._reported_metrics:
                    per_output[f"{head.name}_{metric}" if several else metric] = values[slot]
                slot += 1
        logs["loss"] = total
        for key, value in per_output.items():
            if several or not key.endswith("_loss"):
                logs[key] = value
        return logs

    # ---- data -------------------------------------------------------------
    def _prepare(self, X: Any, y: Any | None, sample_weight: Any, class_weight: Any) -> Arrays:
        inputs = self._cast_inputs(self.standardize_inputs(X))
        count = len(inputs[0])
        if y is None:
            return inputs, [], []
        self._require_compiled()
        targets = [
            head.loss.standardized_targets(target, head.layer.training_output_shape)
            for head, target in zip(self.heads, self.standardize_targets(y), strict=True)
        ]
        for head, target in zip(self.heads, targets, strict=True):
            if target.dtype.kind not in "biuf":
                raise TypeError(
                    f"{self.name}: the targets of '{head.name}' must be real numbers, "
                    f"received dtype {target.dtype}"
                )
            if len(target) != count:
                raise ValueError(
                    f"{self.name}: X has {count} samples but the targets of '{head.name}' have "
                    f"{len(target)}"
                )
            head.loss.check_targets(target, head.layer.training_output_shape, self.name)
        weights = self._sample_weights(sample_weight, class_weight, targets, count)
        cast = [
            np.ascontiguousarray(t, dtype=np.int64 if head.loss.sparse else self.dtype)
            for head, t in zip(self.heads, targets, strict=True)
        ]
        return inputs, cast, weights

    def _cast_inputs(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Check the inputs, then cast them once: float inputs to the model dtype, index
        inputs to int64."""
        self._check_inputs(inputs)
        return [
            np.ascontiguousarray(
                array, np.int64 if self.input_dtype_kind(i) == "int" else self.dtype
            )
            for i, array in enumerate(inputs)
        ]

    def _check_inputs(self, inputs: list[np.ndarray]) -> int:
        counts = set()
        for index, (name, array, shape) in enumerate(
            zip(self.input_names, inputs, self.input_shapes(), strict=True)
        ):
            if array.dtype.kind not in "biuf":
                raise TypeError(
                    f"{self.name}: input '{name}' must hold numbers, received {array.dtype}"
                )
            if self.input_dtype_kind(index) == "int" and array.dtype.kind not in "iu":
                # as the Embedding layer itself: 2.7 must not silently become token 2
                raise TypeError(
                    f"{self.name}: input '{name}' holds token ids and must be of an integer "
                    f"dtype, received {array.dtype}"
                )
            if len(array.shape) != len(shape) or any(
                e is not None and e != s for e, s in zip(shape[1:], array.shape[1:], strict=False)
            ):
                raise ValueError(
                    f"{self.name}: input '{name}' must have shape {shape}, received {array.shape}"
                )
            counts.add(len(array))
        if len(counts) != 1:
            raise ValueError(
                f"{self.name}: inputs have different numbers of samples {sorted(counts)}"
            )
        count = counts.pop()
        if count == 0:
            raise ValueError(f"{self.name}: X is empty")
        return count

    def _per_output(self, value: Any, what: str) -> list[Any]:
        """One value per output: a dict keyed by output names is split, else shared.

        (A single-output model's class_weight is a dict of classes, shared.)
        """
        names = set(self.output_names)
        keyed = isinstance(value, dict) and any(key in names for key in value)
        if not keyed:
            return [value] * len(self.heads)
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"{self.name}: {what} names unknown outputs {sorted(unknown)}")
        return [value.get(name) for name in self.output_names]

    def _sample_weights(
        self, sample_weight: Any, class_weight: Any, targets: list[np.ndarray], count: int
    ) -> list[np.ndarray | None]:
        """Each output's per-sample weights, or None where every sample weighs 1."""
        if sample_weight is None and class_weight is None:
            return [None] * len(self.heads)
        weights: Weights = []
        for head, target, given, classes in zip(
            self.heads,
            targets,
            self._per_output(sample_weight, "sample_weight"),
            self._per_output(class_weight, "class_weight"),
            strict=True,
        ):
            if given is None and not classes:
                weights.append(None)
                continue
            shape = (count, target.shape[1]) if head.temporal else (count,)
            weight = np.ones(shape)
            if given is not None:
                given = np.asarray(given, dtype=np.float64)
                if given.shape != shape or np.any(given < 0) or not np.all(np.isfinite(given)):
                    kind = "samples, timesteps" if head.temporal else "samples"
                    raise ValueError(
                        f"{self.name}: the sample weights of '{head.name}' must be non-negative "
                        f"numbers of shape {shape} ({kind}), received shape {given.shape}"
                    )
                weight = weight * given
            if classes and head.temporal:
                raise ValueError(
                    f"{self.name}: class_weight cannot weigh '{head.name}', whose sample "
                    "weights are temporal (give the weights per timestep instead)"
                )
            if classes:
                _check_class_weight(classes, self.name)
                weight = weight * self._class_weights(head, target, classes)
            weights.append(weight)
        return weights

    def _class_weights(
        self, head: OutputHead, target: np.ndarray, classes: dict[int, float]
    ) -> np.ndarray:
        if head.loss.sparse:
            labels = np.asarray(target, dtype=np.int64).reshape(len(target), -1)[:, 0]
        elif target.ndim == 2 and target.shape[1] > 1:
            labels = np.argmax(target, axis=1)
        else:
            labels = np.round(np.asarray(target).reshape(len(target), -1)[:, 0]).astype(np.int64)
        return np.array([float(classes.get(int(label), 1.0)) for label in labels])

    # ---- public API -------------------------------------------------------
    def train_on_batch(
        self,
        X: Any,
        y: Any,
        accuracy: bool = False,
        class_weight: Any = None,
        sample_weight: Any = None,
    ) -> Any:
        """One update on one batch; returns the loss (and metrics) before the update,
        ``[loss, acc]`` with ``accuracy`` (Keras 0.3)."""
        return self._on_batch(X, y, class_weight, sample_weight, train=True, accuracy=accuracy)

    def test_on_batch(
        self, X: Any, y: Any, accuracy: bool = False, sample_weight: Any = None
    ) -> Any:
        """Loss (and metrics) of one batch, without updating; ``[loss, acc]`` with
        ``accuracy`` (Keras 0.3)."""
        return self._on_batch(X, y, None, sample_weight, train=False, accuracy=accuracy)

    @one_call_at_a_time
    def _on_batch(
        self,
        X: Any,
        y: Any,
        class_weight: Any,
        sample_weight: Any,
        train: bool,
        accuracy: bool,
    ) -> Any:
        self._require_compiled()
        self._report_accuracy(accuracy)
        inputs, targets, weights = self._prepare(X, y, sample_weight, class_weight)
        scalars = self._batch_step(inputs, targets, weights, train)
        logs = self._scalars_to_logs(self.device.to_host(scalars))
        return self._logs_result(logs)

    def _logs_result(self, logs: dict[str, float]) -> Any:
        """The total loss, or ``[loss, metrics...]`` when metrics are reported; several
        outputs' own losses only in the logs of ``fit`` (Keras 0.3 returns the total)."""
        names = [name for name in self.log_names if not name.endswith("_loss")]
        if len(names) == 1:
            return logs["loss"]
        return [logs[name] for name in names]

    @one_call_at_a_time
    def predict_on_batch(self, X: Any) -> Any:
        inputs = self._cast_inputs(self.standardize_inputs(X))
        outputs = self._predict_step(inputs)
        return self.wrap_outputs([np.array(self.device.to_host(o), copy=True) for o in outputs])

    @one_call_at_a_time
    def predict(self, X: Any, batch_size: int = 128, verbose: int = 0) -> Any:
        """Outputs for ``X`` in batches, as NumPy arrays on every device."""
        _check_batch_size(batch_size)
        inputs = self._cast_inputs(self.standardize_inputs(X))
        count = len(inputs[0])
        results: list[np.ndarray] = []
        for start in range(0, count, batch_size):
            index = np.arange(start, min(start + batch_size, count))
            outputs = self._predict_step(_rows_of_each(inputs, index))
            for position, output in enumerate(outputs):
                host = self.device.to_host(output)
                if len(results) <= position:
                    results.append(np.empty((count, *host.shape[1:]), dtype=self.dtype))
                results[position][start : start + len(host)] = host
        return self.wrap_outputs(results)

    def predict_proba(self, X: Any, batch_size: int = 128, verbose: int = 0) -> Any:
        """Same as :meth:`predict`, for models whose outputs are probabilities."""
        return self.predict(X, batch_size, verbose)

    def predict_classes(self, X: Any, batch_size: int = 128, verbose: int = 0) -> np.ndarray:
        """Class indices: the argmax of each output row, or ``p > 0.5`` for one unit."""
        proba = self.predict(X, batch_size, verbose)
        if isinstance(proba, dict):
            raise TypeError(f"{self.name}: predict_classes needs a single-output model")
        if proba.shape[-1] > 1:
            return np.asarray(proba.argmax(axis=-1))
        return (proba > 0.5).astype(np.int64)

    @one_call_at_a_time
    def evaluate(
        self,
        X: Any,
        y: Any,
        batch_size: int = 32,
        show_accuracy: bool = False,
        verbose: int = 0,
        sample_weight: Any = None,
    ) -> Any:
        """Loss (and metrics) over all of ``X``, averaged over samples; ``[loss, acc]``
        with ``show_accuracy`` (Keras 0.3)."""
        _check_batch_size(batch_size)
        self._require_compiled()
        self._report_accuracy(show_accuracy)
        inputs, targets, weights = self._prepare(X, y, sample_weight, None)
        return self._logs_result(self._evaluate_arrays(inputs, targets, weights, batch_size))

    def _evaluate_arrays(
        self,
        inputs: list[np.ndarray],
        targets: list[np.ndarray],
        weights: Weights,
        batch_size: int,
    ) -> dict[str, float]:
        count = len(inputs[0])
        totals: dict[str, float] = {}
        for start in range(0, count, batch_size):
            index = np.arange(start, min(start + batch_size, count))
            scalars = self._batch_step(
                _rows_of_each(inputs, index),
                _rows_of_each(targets, index),
                _rows_of(weights, index),
                train=False,
            )
            for key, value in self._scalars_to_logs(self.device.to_host(scalars)).items():
                totals[key] = totals.get(key, 0.0) + value * len(index)
        return {key: value / count for key, value in totals.items()}

    @one_call_at_a_time
    def fit(
        self,
        X: Any,
        y: Any,
        batch_size: int = 32,
        nb_epoch: int = 10,
        verbose: int = 1,
        callbacks: Sequence[Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool = True,
        show_accuracy: bool = False,
        class_weight: Any = None,
        sample_weight: Any = None,
        epochs: int | None = None,
        seed: Any = None,
    ) -> History:
        """Train for ``nb_epoch`` epochs (``epochs`` is accepted too); returns a History.

        Args:
            y: the targets (a dict by output for Graph), shaped as the outputs; as in
                Keras 0.3, one value a sample (shape ``(samples,)``) also serves an output
                of one column.
            batch_size: samples per update.
            verbose: 0 silent, 1 a live progress bar per epoch, 2 one line per epoch.
            callbacks: Callback instances.
            validation_split: fraction of the data (taken from the end, before
                shuffling, as in Keras 0.3) held out for validation.
            validation_data: ``(X_val, y_val)`` or ``(X_val, y_val, sample_weight)``.
            shuffle: shuffle the training samples every epoch.
            show_accuracy: log ``acc`` (and ``val_acc``) as Keras 0.3 did, whatever
                compile's ``metrics``.
            class_weight: ``{class: weight}`` (a dict of those by output for Graph).
            sample_weight: one weight per sample (a dict by output for Graph).
            seed: int or Generator for the shuffling (default: the global seed).
        """
        self._require_compiled()
        _check_batch_size(batch_size)
        if epochs is not None:
            nb_epoch = epochs
        if not _is_int(nb_epoch) or nb_epoch < 0:
            raise ValueError(
                f"{self.name}: nb_epoch must be a non-negative int, received {nb_epoch!r}"
            )
        batch_size, nb_epoch = int(batch_size), int(nb_epoch)
        if verbose not in (0, 1, 2):
            raise ValueError(f"{self.name}: verbose must be 0, 1 or 2, received {verbose!r}")
        self._report_accuracy(show_accuracy)
        training = self._prepare(X, y, sample_weight, class_weight)
        training, validation = self._validation_set(training, validation_split, validation_data)
        loop = _FitLoop(
            self,
            training,
            validation,
            batch_size=batch_size,
            nb_epoch=nb_epoch,
            verbose=verbose,
            callbacks=list(callbacks or []),
            shuffle=shuffle,
            rng=get_generator(seed),
        )
        with _interrupts_held_during_updates():
            return loop.run()

    @one_call_at_a_time
    def fit_generator(
        self,
        generator: Any,
        samples_per_epoch: int,
        nb_epoch: int,
        verbose: int = 1,
        show_accuracy: bool = False,
        callbacks: Sequence[Callback] | None = None,
        validation_data: Any = None,
        nb_val_samples: int | None = None,
        class_weight: Any = None,
        nb_worker: int = 1,
        nb_val_worker: int | None = None,
    ) -> History:
        """Train on batches a generator yields (Keras 0.3): each epoch takes batches until
        ``samples_per_epoch`` samples were trained on; returns a History.

        ``nb_worker`` threads call the generator ahead of the training (at most 10
        batches ready), so preparing data (augmenting images, say) overlaps the steps.
        A Python generator object is advanced by one thread at a time; an iterator object
        (such as :meth:`ImageDataGenerator.flow
        <numlayers.preprocessing.image.ImageDataGenerator.flow>`'s) is called by all and
        must guard its own state. An exception in the generator is raised here with its
        traceback; a generator that ends is an error (it must loop over its data).

        Args:
            generator: yields ``(X, y)`` or ``(X, y, sample_weight)`` (for a Graph, a dict
                of arrays by input and output name, or that dict and a dict of sample
                weights by output name).
            samples_per_epoch: samples an epoch trains on.
            nb_epoch: epochs.
            verbose, show_accuracy, callbacks, class_weight: as for :meth:`fit`.
            validation_data: data as one batch of the generator (validated in batches
                of 128), or a generator of such batches, then read for
                ``nb_val_samples`` samples after each epoch.
            nb_worker: threads calling the generator; ``nb_val_worker`` (default
                ``nb_worker``) those calling a validation generator.

        Example:
            >>> def batches():
            ...     while True:
            ...         yield np.ones((4, 3)), np.zeros((4, 1))
            >>> model = Sequential([Dense(1, input_shape=(3,))])
            >>> model.compile("sgd", "mse")
            >>> history = model.fit_generator(batches(), samples_per_epoch=8, nb_epoch=2,
            ...                               verbose=0)
            >>> len(history.history["loss"])
            2
        """
        from numlayers.generators import fit_from_generator

        return fit_from_generator(
            self,
            generator,
            samples_per_epoch,
            nb_epoch,
            verbose=verbose,
            show_accuracy=show_accuracy,
            callbacks=callbacks,
            validation_data=validation_data,
            nb_val_samples=nb_val_samples,
            class_weight=class_weight,
            nb_worker=nb_worker,
            nb_val_worker=nb_val_worker,
        )

    @one_call_at_a_time
    def evaluate_generator(
        self,
        generator: Any,
        val_samples: int | None = None,
        show_accuracy: bool = False,
        verbose: int = 1,
        nb_worker: int = 1,
        nb_val_samples: int | None = None,
    ) -> Any:
        """Loss (and metrics) over ``val_samples`` samples of a generator's batches (batches
        as :meth:`fit_generator` takes them), averaged over samples; ``[loss, acc]`` with
        ``show_accuracy``. A Graph's Keras 0.3 name for the count, ``nb_val_samples``, is
        taken too. The ``nb_worker`` threads read ahead; the batches they read beyond
        ``val_samples`` are dropped."""
        from numlayers.generators import evaluate_from_generator

        owner = f"{self.name}.evaluate_generator"
        if (val_samples is None) == (nb_val_samples is None):
            raise ValueError(f"{owner}: give the number of samples, val_samples")
        self._require_compiled()
        self._report_accuracy(show_accuracy)
        samples = val_samples if val_samples is not None else nb_val_samples
        return self._logs_result(
            evaluate_from_generator(self, generator, samples, nb_worker, owner)
        )

    def _generator_batch(self, item: Any, owner: str) -> tuple[Any, Any, Any]:
        """``(X, y, sample_weight)`` of one batch a generator yielded."""
        if not isinstance(item, tuple | list) or len(item) not in (2, 3):
            raise TypeError(
                f"{owner}: expected (X, y) or (X, y, sample_weight), received {_described(item)}"
            )
        return item[0], item[1], item[2] if len(item) == 3 else None

    def _validation_set(
        self, training: Arrays, validation_split: float, validation_data: Any
    ) -> tuple[Arrays, Arrays | None]:
        """The arrays to train on and those to validate on (None: no validation).

        ``validation_data`` is prepared like the training data; else a
        ``validation_split`` holds out the last samples (before any shuffling).
        """
        if validation_data is not None:
            if not isinstance(validation_data, tuple | list) or len(validation_data) not in (2, 3):
                raise ValueError(
                    f"{self.name}: validation_data must be (X, y) or (X, y, sample_weight)"
                )
            val_weight = validation_data[2] if len(validation_data) == 3 else None
            return training, self._prepare(validation_data[0], validation_data[1], val_weight, None)
        if isinstance(validation_split, bool) or not isinstance(
            validation_split, int | float | np.integer | np.floating
        ):
            raise TypeError(
                f"{self.name}: validation_split must be a number in [0, 1), "
                f"received {validation_split!r}"
            )
        if not validation_split:
            return training, None
        if not 0.0 < validation_split < 1.0:
            raise ValueError(
                f"{self.name}: validation_split must be in (0, 1), received {validation_split}"
            )
        count = len(training[0][0])
        split = int(count * (1.0 - validation_split))
        if split == 0 or split == count:
            raise ValueError(
                f"{self.name}: validation_split {validation_split} leaves an empty set"
            )
        trained_on = _rows_of_arrays(training, slice(None, split))
        held_out = _rows_of_arrays(training, slice(split, None))
        return trained_on, held_out

    # ---- weights -------------------------------------------------------------
    def reset_states(self) -> None:
        """Zero the carried states of every stateful layer (Keras 0.3); a model with none
        is left as it is."""
        for layer in self.all_layers():
            if getattr(layer, "stateful", False):
                layer.reset_states()  # type: ignore[attr-defined]

    def get_weights(self) -> list[np.ndarray]:
        """Every layer's weights (NumPy copies), layer by layer."""
        return [w for layer in self.all_layers() for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set every layer's weights; nothing is written unless all of them fit."""
        weights = list(weights)
        layers = self.all_layers()
        expected = sum(len(layer.params) for layer in layers)
        if len(weights) != expected:
            raise ValueError(
                f"{self.name} has {expected} weights, received a list of {len(weights)}"
            )
        checked = []
        start = 0
        for layer in layers:
            count = len(layer.params)
            checked.append(layer.check_weights(weights[start : start + count]))
            start += count
        for layer, values in zip(layers, checked, strict=True):
            layer.write_weights(values)

    def get_gradients(self) -> list[np.ndarray]:
        return [g for layer in self.all_layers() for g in layer.get_gradients()]

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.all_layers())

    def to(self, device: Any) -> Any:
        """Move every weight (and the optimizer's state) to ``device``; later passes run there."""
        from numlayers.devices import get_device

        self.device = get_device(device)
        for layer in [*self.applied_layers(), *self.all_layers()]:
            layer.to(self.device)
        if hasattr(self, "optimizer"):
            self.optimizer.to(self.device)
        return self

    def allows_fused_output(self, layer: Layer) -> bool:
        """Whether an output layer's gradient comes only from its loss (so a fused
        softmax-crossentropy may start below its activation)."""
        return True

    # ---- weights on disk and summary -----------------------------------------
    def save_weights(self, filepath: str, overwrite: bool = False) -> None:
        """Save all weights to ``filepath`` (an ``.npz`` archive that loads with no code run).

        Refuses to replace an existing file unless ``overwrite=True``.
        """
        save_weights(self.all_layers(), filepath, overwrite)

    def load_weights(self, filepath: str) -> None:
        """Load weights saved by :meth:`save_weights`; checks every name and shape first."""
        load_weights(self.all_layers(), filepath)

    def summary(self, file: Any = None) -> None:
        """Print a table of layers, output shapes and parameter counts with totals."""
        rows = [("Layer (type)", "Output Shape", "Param #", "Connected to")]
        for layer, connected in self.summary_rows():
            rows.append(
                (
                    f"{layer.name} ({getattr(layer, 'summary_kind', type(layer).__name__)})",
                    str(layer.output_shape),
                    f"{layer.count_params():,}",
                    connected,
                )
            )
        widths = [max(len(row[i]) for row in rows) + 2 for i in range(4)]
        show_connections = any(row[3] for row in rows[1:])
        line = "=" * (sum(widths) if show_connections else sum(widths[:3]))
        out = file or sys.stdout
        print(line.replace("=", "_"), file=out)
        for number, row in enumerate(rows):
            cells = row if show_connections else row[:3]
            print(
                "".join(
                    cell.ljust(width) for cell, width in zip(cells, widths, strict=False)
                ).rstrip(),
                file=out,
            )
            print(line if number == 0 else line.replace("=", "_"), file=out)
        total = sum(layer.count_params() for layer in self.all_layers())
        trainable = sum(layer.count_trained_params() for layer in self.all_layers())
        print(f"Total params: {total:,}", file=out)
        print(f"Trainable params: {trainable:,}", file=out)
        print(f"Non-trainable params: {total - trainable:,}", file=out)

    def summary_rows(self) -> list[tuple[Layer, str]]:
        return [(layer, "") for layer in self.all_layers()]


class _FitLoop:
    """One call of :meth:`Model.fit`: the epoch loop, the batch step and their logs.

    Per-batch values come to the host only when something shows them (the progress
    bar, a user callback); otherwise each batch adds its device vector of values,
    scaled by its size, into a device sum that is read once per epoch.
    """

    def __init__(
        self,
        model: Model,
        training: Arrays,
        validation: Arrays | None,
        *,
        batch_size: int,
        nb_epoch: int,
        verbose: int,
        callbacks: list[Callback],
        shuffle: bool,
        rng: np.random.Generator,
    ) -> None:
        self.inputs, self.targets, self.weights = training
        self.validation = validation
        self.shuffle = shuffle
        self.rng = rng
        count = len(self.inputs[0])
        batches = math.ceil(count / batch_size)
        self._start(model, count, batches, batch_size, nb_epoch, verbose, callbacks)

    def _start(
        self,
        model: Model,
        count: int,
        batches: int | None,
        batch_size: int | None,
        nb_epoch: int,
        verbose: int,
        callbacks: list[Callback],
    ) -> None:
        """The state every fit loop has: ``count`` samples an epoch in ``batches`` (None:
        not known ahead) of ``batch_size`` (None: the data's own)."""
        self.model = model
        self.count = count
        self.batches = batches
        self.batch_size = batch_size
        self.nb_epoch = nb_epoch
        self.verbose = verbose
        self.history = History()
        self.callbacks = CallbackList([self.history, *callbacks])
        self.per_batch_logs = verbose == 1 or bool(callbacks)
        self.kernels = model.device.kernels(model.dtype)
        # the epoch running now: samples seen, and the sums of (batch size * value), on
        # the host by name when logging per batch, else in the device vector ``sums``
        self.seen = 0
        self.running: dict[str, float] = {}
        self.sums: Any = None
        self.progress: Any = None

    def run(self) -> History:
        model, callbacks = self.model, self.callbacks
        callbacks.set_model(model)
        log_names = model.log_names
        callbacks.set_params(
            {
                "batch_size": self.batch_size,
                "nb_epoch": self.nb_epoch,
                "epochs": self.nb_epoch,
                "nb_sample": self.count,
                "verbose": self.verbose,
                "do_validation": self.validates,
                "metrics": log_names + ([f"val_{n}" for n in log_names] if self.validates else []),
            }
        )
        model.stop_training = False
        callbacks.on_train_begin()
        for epoch in range(self.nb_epoch):
            callbacks.on_epoch_begin(epoch)
            started = time.perf_counter()
            self._run_epoch(epoch)
            logs = self._epoch_logs()
            self._show_epoch(epoch, logs, time.perf_counter() - started)
            callbacks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callbacks.on_train_end()
        return self.history

    def _run_epoch(self, epoch: int) -> None:
        """Every batch of one epoch, until a callback stops training."""
        model = self.model
        self.seen = 0
        self.running = {}
        if not self.per_batch_logs:
            self.sums = model.device.zeros((model._scalar_count(),), model.dtype)
        if self.verbose == 1:
            self.progress = _progress_bar(epoch, self.nb_epoch, self.batches)
        for batch, arrays in enumerate(self._epoch_batches()):
            self._run_batch(batch, arrays)
            if model.stop_training:
                break

    def _epoch_batches(self) -> Iterator[Arrays]:
        """One epoch's batches of the arrays (their samples shuffled if asked)."""
        order = self.rng.permutation(self.count) if self.shuffle else np.arange(self.count)
        batch_size = self.batch_size or self.count
        for start in range(0, self.count, batch_size):
            index = np.sort(order[start : start + batch_size])
            yield (
                _rows_of_each(self.inputs, index),
                _rows_of_each(self.targets, index),
                _rows_of(self.weights, index),
            )

    def _run_batch(self, batch: int, arrays: Arrays) -> None:
        """One update on one batch of prepared arrays, between its callbacks."""
        model = self.model
        size = len(arrays[0][0])
        batch_logs: dict[str, float] = {"batch": batch, "size": size}
        self.callbacks.on_batch_begin(batch, batch_logs)
        scalars = model._batch_step(*arrays, train=True)
        self.seen += size
        if self.per_batch_logs:
            self._log_batch(batch, batch_logs, scalars, size)
        else:
            self.kernels.scale_add_into(scalars, model.dtype.type(size), self.sums)

    def _log_batch(self, batch: int, batch_logs: dict[str, float], scalars: Any, size: int) -> None:
        """Show one batch's values: in the progress bar (as running means), to callbacks."""
        values = self.model._scalars_to_logs(self.model.device.to_host(scalars))
        batch_logs.update(values)
        running = self.running
        for key, value in values.items():
            running[key] = running.get(key, 0.0) + value * size
        if self.progress is not None:
            seen = self.seen
            self.progress.set_postfix(
                {k: f"{v / seen:.4f}" for k, v in running.items()}, refresh=False
            )
            self.progress.update(1)
        self.callbacks.on_batch_end(batch, batch_logs)

    def _epoch_logs(self) -> dict[str, float]:
        """The epoch's values as means over its samples, then the validation's as val_*."""
        model = self.model
        if self.per_batch_logs:
            logs = {key: value / self.seen for key, value in self.running.items()}
        else:
            logs = model._scalars_to_logs(model.device.to_host(self.sums) / self.seen)
        val_logs = self._validation_logs()
        if val_logs is not None:
            logs.update({f"val_{key}": value for key, value in val_logs.items()})
        return logs

    @property
    def validates(self) -> bool:
        """Whether each epoch ends with a validation."""
        return self.validation is not None

    def _validation_logs(self) -> dict[str, float] | None:
        """The validation's values at the end of an epoch (None: no validation)."""
        if self.validation is None:
            return None
        # batches of the fit's size, else of 128 (Keras 0.3's evaluate default)
        return self.model._evaluate_arrays(*self.validation, self.batch_size or 128)

    def _show_epoch(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        """Close the epoch's progress bar (verbose 1), or print its line (verbose 2)."""
        if self.progress is not None:
            self.progress.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            self.progress.close()
            self.progress = None
        elif self.verbose == 2:
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{self.nb_epoch} - {seconds:.2f}s - {shown}", flush=True)


def _described(item: Any) -> str:
    """How an error names what a generator yielded: its type, and length if it has one."""
    kind = type(item).__name__
    return f"a {kind} of {len(item)} items" if isinstance(item, tuple | list) else f"a {kind}"


def _rows_of_each(arrays: list[np.ndarray], index: np.ndarray) -> list[np.ndarray]:
    return [a[index] for a in arrays]


def _signature(arrays: list[np.ndarray]) -> tuple[tuple[tuple[int, ...], str], ...]:
    """The shapes and dtypes of a batch: what a recorded step is specific to."""
    return tuple((a.shape, a.dtype.str) for a in arrays)


def _rows_of(weights: Weights, index: Any) -> Weights:
    return [None if w is None else w[index] for w in weights]


def _rows_of_arrays(arrays: Arrays, rows: slice) -> Arrays:
    """The samples ``rows`` of every input, target and weight array."""
    inputs, targets, weights = arrays
    return [a[rows] for a in inputs], [t[rows] for t in targets], _rows_of(weights, rows)


def _check_batch_size(batch_size: Any) -> None:
    if not _is_int(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, received {batch_size!r}")


def _is_int(value: Any) -> bool:
    """An int, NumPy's included (``np.int64(32)``), but not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_non_negative_number(value: Any) -> bool:
    """A finite number >= 0 (NumPy's included), not a bool."""
    return bool(
        not isinstance(value, bool)
        and isinstance(value, int | float | np.integer | np.floating)
        and math.isfinite(value)
        and value >= 0
    )


def _check_class_weight(classes: Any, owner: str) -> None:
    """``class_weight`` must map class indices to non-negative finite weights."""
    if not isinstance(classes, dict):
        raise TypeError(
            f"{owner}: class_weight must be a dict of class index to weight, "
            f"received {type(classes).__name__}"
        )
    for key, value in classes.items():
        if not _is_int(key):
            raise TypeError(f"{owner}: class_weight keys must be class indices, received {key!r}")
        if not _is_non_negative_number(value):
            raise ValueError(
                f"{owner}: class_weight of class {key} must be a non-negative number, "
                f"received {value!r}"
            )


def _progress_bar(epoch: int, nb_epoch: int, batches: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=batches,
        desc=f"Epoch {epoch + 1}/{nb_epoch}",
        unit="batch",
        file=sys.stdout,
        dynamic_ncols=True,
        leave=True,
    )
