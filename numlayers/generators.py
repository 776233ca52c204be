"""Batches drawn from a user's generator on worker threads, for ``fit_generator`` and
``evaluate_generator`` (Keras 0.3's way to feed a model real-time augmented data).

:class:`BatchQueue` runs ``next(generator)`` on ``workers`` daemon threads and keeps at
most ``max_queued`` batches ready, so preparing the next batch overlaps the model's
step. Unlike Keras 0.3's queue it never loses what went wrong: an exception raised by
the generator is raised again, with its own traceback, by the :meth:`~BatchQueue.get`
that would have returned its batch; a generator that ends says so; a Python generator
object (which cannot run on two threads at once) is advanced under a lock, so several
workers never make it fail, and an iterator object is called freely (it guards its own
state, as :class:`numlayers.preprocessing.image.NumpyArrayIterator` does).
"""

from __future__ import annotations

import inspect
import threading
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from numlayers.callbacks import Callback, History
from numlayers.training import Arrays, Model, _FitLoop


class GeneratorEnded(ValueError):
    """Raised by :meth:`BatchQueue.get` when the generator has no more batches."""


class _Failure:
    """What a worker hands over instead of a batch: the generator's exception."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Ended:
    """What a worker hands over when the generator is exhausted."""


class BatchQueue:
    """Batches from ``generator``, produced ahead on worker threads.

    The workers fill the queue to ``max_queued`` batches, then rest until the consumer
    has taken half of them: waking a worker for every batch would hand the interpreter
    lock back and forth at every step.

    Args:
        generator: an iterator (a generator function's result, or an object with
            ``__next__``) that yields one batch a call and loops over its data.
        workers: threads calling it (at least 1).
        max_queued: batches kept ready at most.
        owner: how errors name the caller (``"sequential.fit_generator"``).

    Use it as a context manager: leaving the block stops the workers.

    Example:
        >>> with BatchQueue(iter(range(3)), owner="demo") as batches:
        ...     [batches.get() for _ in range(3)]
        [0, 1, 2]
    """

    def __init__(
        self, generator: Any, workers: int = 1, max_queued: int = 10, owner: str = "generator"
    ) -> None:
        if not hasattr(generator, "__next__"):
            raise TypeError(
                f"{owner}: expected a generator or an iterator, received "
                f"{type(generator).__name__} (a list is not one: wrap it in a generator that "
                "loops over it)"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"{owner}: nb_worker must be an int >= 1, received {workers!r}")
        self.owner = owner
        self._generator: Iterator[Any] = generator
        # a generator object refuses to run on two threads at once
        self._advance_lock = threading.Lock() if inspect.isgenerator(generator) else None
        self._ready: deque[Any] = deque()
        self._changed = threading.Condition()
        self._most = max(1, max_queued)
        self._refill_at = self._most // 2
        self._filling = True  # the workers produce; they rest once the queue is full
        self._stopped = False
        self._delivered = 0
        self._finished = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{owner} worker {i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _next(self) -> Any:
        if self._advance_lock is None:
            return next(self._generator)
        with self._advance_lock:
            return next(self._generator)

    def _work(self) -> None:
        while True:
            with self._changed:
                while not (self._filling or self._stopped):
                    self._changed.wait()
                if self._stopped:
                    return
            try:
                item: Any = self._next()
            except StopIteration:
                item = _Ended()
            except BaseException as error:  # noqa: BLE001 - handed to the consumer
                item = _Failure(error)
            with self._changed:
                self._ready.append(item)
                if len(self._ready) >= self._most:
                    self._filling = False
                self._changed.notify_all()
            if isinstance(item, _Ended | _Failure):
                return

    def get(self) -> Any:
        """The next batch; raises the generator's exception if it raised one, and
        :class:`GeneratorEnded` if it has no more batches."""
        if self._finished:
            raise GeneratorEnded(self._ended_message())
        with self._changed:
            while not self._ready:
                self._changed.wait()
            item = self._ready.popleft()
            if not self._filling and len(self._ready) <= self._refill_at:
                self._filling = True
                self._changed.notify_all()
        if isinstance(item, _Failure):
            self._finished = True
            self.close()
            raise item.error
        if isinstance(item, _Ended):
            self._finished = True
            self.close()
            raise GeneratorEnded(self._ended_message())
        self._delivered += 1
        return item

    def _ended_message(self) -> str:
        return (
            f"{self.owner}: the generator ended after {self._delivered} batches; it must loop "
            "over its data indefinitely (an epoch ends after samples_per_epoch samples)"
        )

    def close(self) -> None:
        """Stop the workers (a worker inside the generator finishes that call first)."""
        with self._changed:
            self._stopped = True
            self._ready.clear()
            self._changed.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=1.0)

    def __enter__(self) -> BatchQueue:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# ------------------------------------------------------------ fit and evaluate
def _check_count(value: Any, what: str, owner: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{owner}: {what} must be an int >= {minimum}, received {value!r}")
    return int(value)


def _is_generator(data: Any) -> bool:
    return hasattr(data, "__next__")


def fit_from_generator(
    model: Model,
    generator: Any,
    samples_per_epoch: int,
    nb_epoch: int,
    *,
    verbose: int,
    show_accuracy: bool,
    callbacks: Sequence[Callback] | None,
    validation_data: Any,
    nb_val_samples: int | None,
    class_weight: Any,
    nb_worker: int,
    nb_val_worker: int | None,
) -> History:
    """:meth:`Model.fit_generator`'s work (see its documentation)."""
    from numlayers.training import _interrupts_held_during_updates

    owner = f"{model.name}.fit_generator"
    model._require_compiled()
    samples_per_epoch = _check_count(samples_per_epoch, "samples_per_epoch", owner, 1)
    nb_epoch = _check_count(nb_epoch, "nb_epoch", owner, 0)
    if verbose not in (0, 1, 2):
        raise ValueError(f"{owner}: verbose must be 0, 1 or 2, received {verbose!r}")
    validation: Arrays | None = None
    validation_source: tuple[Any, int, int] | None = None
    if _is_generator(validation_data):
        if nb_val_samples is None:
            raise ValueError(
                f"{owner}: validation_data is a generator: give nb_val_samples, the samples "
                "to validate on after each epoch"
            )
        samples = _check_count(nb_val_samples, "nb_val_samples", owner, 1)
        workers = nb_worker if nb_val_worker is None else nb_val_worker
        validation_source = (validation_data, samples, workers)
    elif validation_data is not None:
        X, y, weights = model._generator_batch(validation_data, f"{owner} validation_data")
        validation = model._prepare(X, y, weights, None)
    model._report_accuracy(show_accuracy)
    with BatchQueue(generator, nb_worker, owner=owner) as batches:
        loop = _GeneratorFitLoop(
            model,
            batches,
            samples_per_epoch,
            class_weight,
            validation,
            validation_source,
            nb_epoch=nb_epoch,
            verbose=verbose,
            callbacks=list(callbacks or []),
        )
        with _interrupts_held_during_updates():
            return loop.run()


def evaluate_from_generator(
    model: Model, generator: Any, samples: Any, workers: int, owner: str
) -> dict[str, float]:
    """The loss (and metrics) over at least ``samples`` samples of ``generator``'s batches,
    averaged over samples. Workers read ahead: the batches they read beyond are dropped."""
    samples = _check_count(samples, "the number of samples", owner, 1)
    totals: dict[str, float] = {}
    done = 0
    with BatchQueue(generator, workers, owner=owner) as batches:
        while done < samples:
            X, y, weights = model._generator_batch(batches.get(), owner)
            inputs, targets, sample_weights = model._prepare(X, y, weights, None)
            size = len(inputs[0])
            logs = model._evaluate_arrays(inputs, targets, sample_weights, size)
            for key, value in logs.items():
                totals[key] = totals.get(key, 0.0) + value * size
            done += size
    return {key: value / done for key, value in totals.items()}


class _GeneratorFitLoop(_FitLoop):
    """:class:`~numlayers.training._FitLoop` on batches from a generator: an epoch ends
    once ``samples_per_epoch`` samples were trained on."""

    def __init__(
        self,
        model: Model,
        batches: BatchQueue,
        samples_per_epoch: int,
        class_weight: Any,
        validation: Arrays | None,
        validation_source: tuple[Any, int, int] | None,
        *,
        nb_epoch: int,
        verbose: int,
        callbacks: list[Callback],
    ) -> None:
        self.queue = batches
        self.class_weight = class_weight
        self.validation = validation
        self.validation_source = validation_source
        self.warned_of_extra_samples = False
        self._start(model, samples_per_epoch, None, None, nb_epoch, verbose, callbacks)

    def _epoch_batches(self) -> Iterator[Arrays]:
        model, owner = self.model, self.queue.owner
        while self.seen < self.count:  # _run_batch counts each batch before the next
            X, y, weights = model._generator_batch(self.queue.get(), owner)
            yield model._prepare(X, y, weights, self.class_weight)
        if self.seen > self.count and not self.warned_of_extra_samples:
            self.warned_of_extra_samples = True
            warnings.warn(
                f"{owner}: an epoch trained on {self.seen} samples, more than "
                f"samples_per_epoch={self.count} (the batches do not add up to it)",
                stacklevel=2,
            )

    @property
    def validates(self) -> bool:
        return self.validation is not None or self.validation_source is not None

    def _validation_logs(self) -> dict[str, float] | None:
        if self.validation_source is None:
            return super()._validation_logs()
        generator, samples, workers = self.validation_source
        owner = f"{self.model.name}.fit_generator validation_data"
        return evaluate_from_generator(self.model, generator, samples, workers, owner)
