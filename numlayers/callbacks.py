"""Training callbacks: Keras 0.3's hooks and classes, plus CSVLogger, TerminateOnNaN and
LambdaCallback.

A callback sees ``on_train_begin/end``, ``on_epoch_begin/end`` and
``on_batch_begin/end`` with a ``logs`` dict of host floats (``loss``, metrics,
and ``val_*`` at epoch end). ``self.model`` is the model being trained and
``self.params`` the fit arguments; setting ``model.stop_training = True`` ends
training after the current epoch.
"""

from __future__ import annotations

import csv
import math
import os
import string
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Logs = dict[str, float]


class Callback:
    """Base class: every hook does nothing."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Logs | None = None) -> None: ...

    def on_train_end(self, logs: Logs | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...

    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...


HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_batch_begin",
    "on_batch_end",
)


class CallbackList(Callback):
    """Calls every hook of several callbacks, in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        super().__init__()
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks must be Callback instances, received {callback!r}")
        self.callbacks = list(callbacks)

    def _each(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def set_model(self, model: Any) -> None:
        self._each("set_model", model)

    def set_params(self, params: dict[str, Any]) -> None:
        self._each("set_params", params)

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._each("on_train_begin", logs)

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._each("on_train_end", logs)

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._each("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self._each("on_epoch_end", epoch, logs)

    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        self._each("on_batch_begin", batch, logs)

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        self._each("on_batch_end", batch, logs)


class History(Callback):
    """Records every epoch's logs: ``history.history["loss"]`` is the list of epoch losses."""

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


def _improvement_test(mode: str, monitor: str, owner: str) -> Callable[[float, float], bool]:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', received {mode!r}")
    if mode == "max" or (mode == "auto" and ("acc" in monitor)):
        return lambda current, best: current > best
    return lambda current, best: current < best


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: the log to watch (default ``val_loss``).
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        verbose: 1 prints the epoch at which training stopped.
        mode: "min", "max" or "auto" (max for accuracies, else min).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 0.0,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.patience = int(patience)
        self.verbose = verbose
        self.min_delta = abs(float(min_delta))
        better = _improvement_test(mode, monitor, "EarlyStopping")
        sign = 1.0 if better(1.0, 0.0) else -1.0
        self._better = lambda current, best: better(current - sign * self.min_delta, best)
        self._initial = -math.inf if sign > 0 else math.inf
        self.stopped_epoch = 0

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.wait = 0
        self.best = self._initial
        self.stopped_epoch = 0

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which is not in the logs "
                f"{sorted(logs or {})} (val_* needs validation data)"
            )
        if self._better(current, self.best):
            self.best = current
            self.wait = 0
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"Epoch {epoch + 1:05d}: early stopping", file=sys.stderr)


class ModelCheckpoint(Callback):
    """Save the model's weights after each epoch, or only when ``monitor`` improves.

    Args:
        filepath: where to save; may hold ``{epoch}`` and log keys, e.g.
            ``"weights.{epoch:02d}-{val_loss:.2f}.npz"``.
        monitor: the log to watch.
        save_best_only: save only when ``monitor`` improves.
        mode: "min", "max" or "auto".
        verbose: 1 prints each save.
    """

    def __init__(
        self,
        filepath: str,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        mode: str = "auto",
    ) -> None:
        super().__init__()
        self.filepath = str(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self._better = _improvement_test(mode, monitor, "ModelCheckpoint")
        self.best = -math.inf if self._better(1.0, 0.0) else math.inf

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Refuse, before the first epoch, a path or monitor naming a value this fit
        does not log (``{val_loss}`` without validation data, say)."""
        logged = set(self.params.get("metrics", []))
        fields = {
            field.split(".")[0].split("[")[0]
            for _, field, _, _ in string.Formatter().parse(self.filepath)
            if field
        }
        missing = sorted(fields - logged - {"epoch"})
        if self.save_best_only and self.monitor not in logged:
            missing.append(self.monitor)
        if missing:
            raise ValueError(
                f"ModelCheckpoint: {self.filepath!r} (monitor {self.monitor!r}) needs "
                f"{missing}, which this fit does not log; it logs {sorted(logged)} "
                "(val_* values need validation data)"
            )

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        path = self.filepath.format(epoch=epoch, **logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                raise KeyError(
                    f"ModelCheckpoint monitors {self.monitor!r}, not in logs {sorted(logs)}"
                )
            if not self._better(current, self.best):
                return
            if self.verbose:
                print(
                    f"Epoch {epoch + 1:05d}: {self.monitor} improved from {self.best:.5f} "
                    f"to {current:.5f}, saving to {path}",
                    file=sys.stderr,
                )
            self.best = current
        elif self.verbose:
            print(f"Epoch {epoch + 1:05d}: saving to {path}", file=sys.stderr)
        self.model.save_weights(path, overwrite=True)


class LearningRateScheduler(Callback):
    """Set the optimizer's ``lr`` to ``schedule(epoch)`` at the start of each epoch."""

    def __init__(self, schedule: Callable[[int], float]) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler expects a function, received {schedule!r}")
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        lr = self.schedule(epoch)
        if not isinstance(lr, int | float | np.floating) or isinstance(lr, bool) or lr < 0:
            raise ValueError(f"LearningRateScheduler: schedule({epoch}) returned {lr!r}")
        self.model.optimizer.lr = float(lr)


class CSVLogger(Callback):
    """Append each epoch's logs as a row of a CSV file (opened for each row, so no file
    stays open if training stops with an error).

    Args:
        filename: the CSV file.
        separator: the field separator.
        append: keep an existing file's rows (else start a new file).
    """

    def __init__(self, filename: str, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename = str(filename)
        self.separator = separator
        self.append = append
        self._keys: list[str] | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._had_rows = (
            self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        )
        if not self.append:
            open(self.filename, "w").close()
        self._keys = None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        with open(self.filename, "a", newline="") as file:
            first_row = self._keys is None
            if self._keys is None:
                self._keys = sorted(logs)
            writer = csv.DictWriter(file, ["epoch", *self._keys], delimiter=self.separator)
            if first_row and not self._had_rows:
                writer.writeheader()
            writer.writerow({"epoch": epoch, **{k: logs.get(k, "") for k in self._keys}})


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss is NaN or infinite."""

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss {loss}, terminating training", file=sys.stderr)
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback made of plain functions: ``LambdaCallback(on_epoch_end=lambda e, logs: ...)``.

    Epoch and batch hooks take ``(index, logs)``; train hooks take ``(logs)``.
    """

    def __init__(self, **hooks: Callable[..., None] | None) -> None:
        super().__init__()
        unknown = set(hooks) - set(HOOKS)
        if unknown:
            raise TypeError(f"LambdaCallback: unknown hook(s) {sorted(unknown)}; use {HOOKS}")
        self._hooks = {name: hook for name, hook in hooks.items() if hook is not None}

    def _call(self, hook: str, *args: Any) -> None:
        function = self._hooks.get(hook)
        if function is not None:
            function(*args[:-1], args[-1] or {})

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._call("on_train_begin", logs)

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self._call("on_epoch_end", epoch, logs)

    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        self._call("on_batch_begin", batch, logs)

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        self._call("on_batch_end", batch, logs)
