"""Optimizers with Keras 0.3's update rules, hyperparameters and defaults.

Every update is an in-place kernel on the device that holds the weights (see
:mod:`numlayers.kernels.optimizers`). Per-step scalars such as the decayed or
bias-corrected learning rate are made on that device too, by
``advance_step_scalars``, from a small float64 settings vector (``lr``, the
hyperparameters, the steps counted) that lives there: a step copies nothing from the
host for them, and a step replayed as a CUDA graph gets each step's values. The host
writes the settings again only when they were changed from outside (a schedule or a
callback that sets ``lr``, :meth:`Optimizer.set_state`), before the step that follows,
so such a change takes effect at once.
``clipnorm`` (over all gradients together, as in Keras 0.3) and ``clipvalue``
are applied on the device before the update.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from numlayers.devices import Device, get_device
from numlayers.kernels.optimizers import SCHEDULES, STEP_SETTINGS

#: the length of the device vector of per-step scalars each update kernel reads
STEP_SCALARS = 4


def _non_negative(value: Any, what: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or value < 0:
        raise ValueError(f"{owner}: {what} must be a non-negative number, received {value!r}")
    return float(value)


class Optimizer:
    """Base class: keeps per-weight state arrays on the weights' device.

    Args:
        lr: learning rate.
        clipnorm: if > 0, rescale all gradients so their global L2 norm is at most this.
        clipvalue: if > 0, clip every gradient element to [-clipvalue, clipvalue].
    """

    #: the update rule's name in numlayers.kernels.optimizers (its kernel is
    #: ``<rule>_update``)
    rule: ClassVar[str] = ""
    #: names of the state arrays each weight gets (all zero-initialised, weight-shaped)
    state_names: ClassVar[tuple[str, ...]] = ()
    #: hyperparameters (besides lr, clipnorm, clipvalue) and their Keras 0.3 defaults
    defaults: ClassVar[dict[str, float]] = {}
    #: how the learning rate changes with the step (a key of :data:`SCHEDULES`)
    schedule: ClassVar[str] = "constant"

    def __init__(self, lr: float, clipnorm: float = 0.0, clipvalue: float = 0.0, **hyper: Any):
        owner = type(self).__name__
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{owner}: unknown argument(s) {sorted(unknown)}")
        self._lr = np.array(_non_negative(lr, "lr", owner))
        self.clipnorm = _non_negative(clipnorm, "clipnorm", owner)
        self.clipvalue = _non_negative(clipvalue, "clipvalue", owner)
        self.hyper = {name: hyper.get(name, default) for name, default in self.defaults.items()}
        for name, value in self.hyper.items():
            if not isinstance(value, bool):
                self.hyper[name] = _non_negative(value, name, owner)
        self.iterations = 0
        self._set_states([])
        self._plan: list[Any] = []
        self._plan_arrays: tuple[Any, ...] = ()  # what the plan's key identifies, kept alive
        self._sizes: list[int] = []
        self._device: Device | None = None
        self._norm_buffer: Any = None
        self._step_scalars: Any = None
        self._settings: Any = None
        #: what ``_settings`` holds on the device, as the host last wrote or advanced it
        self._settings_written: tuple[float, ...] | None = None

    @property
    def lr(self) -> np.ndarray:
        """The learning rate, a 0-d float64 array: Keras 0.3's optimizers kept it in a
        variable, so ``K.get_value(optimizer.lr)`` reads it and ``K.set_value(optimizer.lr,
        v)`` changes it in place, as ``optimizer.lr = v`` does; the next step uses it (a
        recorded CUDA graph reads it from the device too)."""
        return self._lr

    @lr.setter
    def lr(self, value: Any) -> None:
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        self._lr[...] = _non_negative(value, "lr", type(self).__name__)

    def __getattr__(self, name: str) -> Any:
        hyper = self.__dict__.get("hyper", {})
        if name in hyper:
            return hyper[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # ----------------------------------------------------------------- update
    def _ensure_states(self, params: Sequence[Any], device: Device, dtype: np.dtype) -> None:
        """(Re)create zeroed state arrays when the weights or their device changed."""
        sizes = [p.size for p in params]
        if self._device is device and self._sizes == sizes:
            return
        self._device = device
        self._sizes = sizes
        self._set_states(
            [[device.zeros((size,), dtype) for _ in self.state_names] for size in sizes]
        )
        self._make_step_arrays(device, dtype)

    def _make_step_arrays(self, device: Device, dtype: Any) -> None:
        """The clip-norm buffer, the step scalars and the settings vector on ``device``."""
        self._norm_buffer = device.zeros((1,), dtype)
        self._step_scalars = device.zeros((STEP_SCALARS,), dtype)
        self._settings = device.zeros((STEP_SETTINGS,), np.float64)
        self._settings_written = None

    def persistent_state(self) -> Any:
        """The object holding the state arrays: replaced (not changed) when they are made
        again, so a recorded CUDA graph can tell it is outdated."""
        return self._states

    def _set_states(self, states: list[list[Any]]) -> None:
        self._states = states
        self._plan_key: tuple[Any, ...] | None = None

    def _update_plan(self, params: Sequence[Any], grads: Sequence[Any], kernels: Any) -> list[Any]:
        """Per weight: its update launcher, flat weight, flat gradient and two states.

        Made again only when the weight or gradient arrays, the states or the kernel
        set change. The optimizer holds the arrays the plan was made for (a flat view
        of a CUDA array does not hold its parent), so no new array can take one of the
        ids in its key while it is in use.
        """
        key = (id(kernels), *map(id, params), *map(id, grads))
        if key == self._plan_key:
            return self._plan
        self._plan_arrays = (kernels, list(params), list(grads))
        no_state = kernels.no_state()
        plan = []
        for param, grad, states in zip(params, grads, self._states, strict=True):
            first, second = (*states, no_state, no_state)[:2]
            launch = kernels.update_launcher(self.rule, param.size)
            plan.append((launch, param.reshape(param.size), grad.reshape(grad.size), first, second))
        self._plan, self._plan_key = plan, key
        return plan

    def update(
        self, params: Sequence[Any], grads: Sequence[Any], device: Device, dtype: Any
    ) -> None:
        """Apply one step to ``params`` in place, given their ``grads`` (same device)."""
        dtype = np.dtype(dtype)
        kernels = device.kernels(dtype)
        self._ensure_states(params, device, dtype)
        plan = self._update_plan(params, grads, kernels)
        if self.clipnorm > 0:
            kernels.fill(self._norm_buffer, 0.0)
            for entry in plan:
                kernels.sum_of_squares(entry[2], self._norm_buffer)
            for entry in plan:
                kernels.scale_by_norm_limit(entry[2], self._norm_buffer, dtype.type(self.clipnorm))
        if self.clipvalue > 0:
            for entry in plan:
                kernels.clip_values(entry[2], dtype.type(self.clipvalue))
        device.before_each_step(functools.partial(self._count_step, device))
        kernels.advance_step_scalars(self._settings, SCHEDULES[self.schedule], self._step_scalars)
        for launch, param, grad, first, second in plan:
            launch(param, grad, first, second, self._step_scalars)

    def _count_step(self, device: Device) -> None:
        """Count the step on the host; first write the device's settings vector if they
        no longer hold what the host has (a new ``lr``, restored iterations). Run once per
        step, by the eager update or before each replay of a recorded CUDA graph; the
        device counts the step itself (``advance_step_scalars``)."""
        settings = self.settings()
        if settings != self._settings_written:
            device.write(self._settings, np.array(settings, np.float64))
        self.iterations += 1
        self._settings_written = (*settings[:-1], float(self.iterations))

    def settings(self) -> tuple[float, ...]:
        """The settings vector the device's ``advance_step_scalars`` reads: ``lr``, the
        hyperparameters the rule's kernel takes, the schedule's parameters, and the steps
        counted so far."""
        hypers = (*self.rule_hyperparameters(), 0.0, 0.0, 0.0)[:3]
        parameters = (*self.schedule_parameters(), 0.0, 0.0)[:2]
        return (
            float(self.lr),
            *map(float, hypers),
            *map(float, parameters),
            float(self.iterations),
        )

    def rule_hyperparameters(self) -> list[float]:
        """The hyperparameters the rule's kernel takes after the learning rate."""
        raise NotImplementedError

    def schedule_parameters(self) -> list[float]:
        """The parameters of the learning-rate ``schedule`` (:data:`SCHEDULES`)."""
        return []

    # ------------------------------------------------------------------ state
    def get_config(self) -> dict[str, Any]:
        return {
            "class_name": type(self).__name__,
            "lr": float(self.lr),
            "clipnorm": self.clipnorm,
            "clipvalue": self.clipvalue,
            **self.hyper,
        }

    def get_state(self) -> dict[str, Any]:
        """Iterations and state arrays (host copies), enough to resume training exactly."""
        device = self._device or get_device("cpu")
        return {
            "config": self.get_config(),
            "iterations": self.iterations,
            "states": [
                [np.array(device.to_host(s), copy=True) for s in states] for states in self._states
            ],
        }

    def set_state(self, state: dict[str, Any], device: Device | str | None = None) -> None:
        """Restore :meth:`get_state`'s output (onto ``device``, default the current one)."""
        target = get_device(device) if device is not None else (self._device or get_device("cpu"))
        states = state["states"]
        for states_of_weight in states:
            if len(states_of_weight) != len(self.state_names):
                raise ValueError(
                    f"{type(self).__name__} keeps {len(self.state_names)} state arrays per weight, "
                    f"the given state has {len(states_of_weight)}"
                )
        self.iterations = int(state["iterations"])
        self._device = target
        self._set_states(
            [[target.asarray(np.asarray(s)) for s in weight_states] for weight_states in states]
        )
        self._sizes = [int(w[0].size) if w else -1 for w in state["states"]]
        dtype = self._states[0][0].dtype if self._states and self._states[0] else np.float32
        self._make_step_arrays(target, dtype)

    def to(self, device: Device | str) -> None:
        """Move the state arrays to ``device`` (models call this from ``to``)."""
        if self._device is None:
            return
        self.set_state(self.get_state(), device)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and time decay.

    ``lr_t = lr / (1 + decay * iterations)``; ``v = momentum * v - lr_t * g``;
    the weight moves by ``v`` (or ``momentum * v - lr_t * g`` with Nesterov).
    """

    rule = "sgd"
    state_names = ("velocity",)
    defaults = {"momentum": 0.0, "decay": 0.0, "nesterov": False}

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        decay: float = 0.0,
        nesterov: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr, momentum=momentum, decay=decay, nesterov=bool(nesterov), **kwargs)

    schedule: ClassVar[str] = "time_decay"

    def rule_hyperparameters(self) -> list[float]:
        return [self.hyper["momentum"], self.hyper["nesterov"]]

    def schedule_parameters(self) -> list[float]:
        return [self.hyper["decay"]]


class RMSprop(Optimizer):
    """RMSprop: ``a = rho * a + (1 - rho) * g**2``; ``w -= lr * g / sqrt(a + epsilon)``."""

    rule = "rmsprop"
    state_names = ("accumulator",)
    defaults = {"rho": 0.9, "epsilon": 1e-6}

    def __init__(self, lr: float = 0.001, rho: float = 0.9, epsilon: float = 1e-6, **kwargs: Any):
        super().__init__(lr, rho=rho, epsilon=epsilon, **kwargs)

    def rule_hyperparameters(self) -> list[float]:
        return [self.hyper["rho"], self.hyper["epsilon"]]


class Adagrad(Optimizer):
    """Adagrad: ``a += g**2``; ``w -= lr * g / sqrt(a + epsilon)``."""

    rule = "adagrad"
    state_names = ("accumulator",)
    defaults = {"epsilon": 1e-6}

    def __init__(self, lr: float = 0.01, epsilon: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(lr, epsilon=epsilon, **kwargs)

    def rule_hyperparameters(self) -> list[float]:
        return [self.hyper["epsilon"]]


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012) with Keras 0.3's learning-rate factor."""

    rule = "adadelta"
    state_names = ("accumulator", "delta_accumulator")
    defaults = {"rho": 0.95, "epsilon": 1e-6}

    def __init__(self, lr: float = 1.0, rho: float = 0.95, epsilon: float = 1e-6, **kwargs: Any):
        super().__init__(lr, rho=rho, epsilon=epsilon, **kwargs)

    def rule_hyperparameters(self) -> list[float]:
        return [self.hyper["rho"], self.hyper["epsilon"]]


class Adam(Optimizer):
    """Adam (Kingma and Ba) with the bias correction folded into ``lr_t``."""

    rule = "adam"
    state_names = ("m", "v")
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}

    def __init__(
        self,
        lr: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)

    schedule: ClassVar[str] = "adam"

    def rule_hyperparameters(self) -> list[float]:
        return [self.hyper["beta_1"], self.hyper["beta_2"], self.hyper["epsilon"]]

    def schedule_parameters(self) -> list[float]:
        return [self.hyper["beta_1"], self.hyper["beta_2"]]


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm, ``lr_t = lr / (1 - beta_1**t)``."""

    rule = "adamax"
    state_names = ("m", "u")
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}

    def __init__(
        self,
        lr: float = 0.002,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)

    schedule: ClassVar[str] = "adamax"

    def rule_hyperparameters(self) -> list[float]:
        return [self.hyper["beta_1"], self.hyper["beta_2"], self.hyper["epsilon"]]

    def schedule_parameters(self) -> list[float]:
        return [self.hyper["beta_1"]]


OPTIMIZERS: dict[str, Callable[[], Optimizer]] = {
    "sgd": SGD,
    "rmsprop": RMSprop,
    "adagrad": Adagrad,
    "adadelta": Adadelta,
    "adam": Adam,
    "adamax": Adamax,
}


def from_config(config: Any, owner: str = "optimizer config") -> Optimizer:
    """The optimizer an :meth:`Optimizer.get_config` describes (its ``class_name``, or
    Keras 0.3's ``name``, and its arguments); unknown names and arguments are refused.

    Example:
        >>> from_config({"class_name": "SGD", "lr": 0.1, "momentum": 0.9}).hyper["momentum"]
        0.9
    """
    if not isinstance(config, dict):
        raise TypeError(f"{owner}: the optimizer must be a mapping, received {config!r}")
    arguments = dict(config)
    name = arguments.pop("class_name", None) or arguments.pop("name", None)
    kind = OPTIMIZERS.get(str(name).lower())
    if kind is None:
        raise ValueError(f"{owner}: unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    return kind(**arguments)


def get(identifier: Any) -> Optimizer:
    """An optimizer: ``identifier`` itself, or a new one with defaults from its name."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in OPTIMIZERS:
        return OPTIMIZERS[identifier.lower()]()
    raise ValueError(
        f"unknown optimizer {identifier!r}; choose one of {sorted(OPTIMIZERS)} "
        "or pass a numlayers.optimizers.Optimizer"
    )
