"""Whole steps as CUDA graphs: record a step's kernels once, then replay them.

A Numba kernel launch from Python costs about 17 us on an H200, longer than a small
layer's kernel runs; a replayed graph costs under 1 us per kernel it holds, and its
launch about 6 us. So a model on CUDA records each of its steps (``train_on_batch``,
``test_on_batch``, ``predict_on_batch``, and the batches of ``fit``, ``evaluate`` and
``predict``) once per signature (the shapes and dtypes of the batch, the train flag,
which metrics are reported) and replays the recording afterwards:

- the first call of a signature runs eagerly: it compiles the kernels and allocates the
  buffers, optimizer states and carried states;
- the second records it (:func:`capture`): on a GPU through CUDA stream capture, every
  launch and device copy put on a capture stream; the recording is then launched;
- later calls write the batch into pinned host memory, which the graph's first copies
  read (one transfer each, inside the graph; a copy from the batch's own pageable
  memory would go through the driver's staging buffers, the host waiting), and launch
  the graph once; the caller then reads the loss back, the one copy to the host.

Values that change from step to step are not kernel arguments, which a graph would
freeze: the kernels read them from small device arrays. The optimizer makes its step's
scalars (the decayed learning rate, Adam's bias correction) on the device, in a kernel
the graph holds; the host work around it (counting the step, writing settings changed
from outside) is a hook run before every replay (:meth:`Device.before_each_step
<numlayers.devices.Device.before_each_step>`). In a recorded step, dropout seeds are
filled by :meth:`Device.stage <numlayers.devices.Device.stage>`, whose producers run
again before every replay, the graph copying their results in from pinned host memory
(an eager step passes them with the launches instead).

A step that does what a graph cannot hold (a Lambda without a traced form runs on the
host, sample weights are sent per batch, an Embedding checks its ids on the host) raises
:class:`~numlayers.devices.NotCapturable` while it is recorded, and its signature runs
eagerly from then on, with the same results. A recording whose weights, optimizer
states or carried states were replaced since (``to``, ``set_state``, a new batch size
for a stateful layer) is recorded again.

Under Numba's CUDA simulator there is no stream capture: the recording is the list of
launches and copies, replayed in order, so the tests check what replaying means (frozen
arguments, the same arrays, the staged values) without a GPU.

Capture is on by default on CUDA; ``compile(..., cuda_graphs=False)`` or the environment
variable ``NUMLAYERS_CUDA_GRAPHS=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from numlayers.devices import (
    CUDA_ACTIVITY,
    Capture,
    Device,
    NotCapturable,
    set_active_capture,
    simulator_enabled,
)

Result = TypeVar("Result")

#: the environment variable that turns capture off when set to 0 (or "false", "off")
ENVIRONMENT_SWITCH = "NUMLAYERS_CUDA_GRAPHS"


def enabled_by_environment() -> bool:
    """False when :data:`ENVIRONMENT_SWITCH` is set to 0, false, no or off."""
    value = os.environ.get(ENVIRONMENT_SWITCH, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def driver() -> Any:
    """The CUDA driver API of the ``cuda.bindings`` package (numba-cuda's own binding)."""
    from cuda.bindings import driver as cuda_driver

    return cuda_driver


def checked(result: tuple[Any, ...], what: str) -> Any:
    """The value of a driver call's ``(error, value...)`` result; a failed call raises
    :class:`NotCapturable` (the step then runs eagerly)."""
    error, *values = result
    if int(error) != 0:
        raise NotCapturable(f"{what} failed: {error}")
    return values[0] if len(values) == 1 else tuple(values)


@functools.cache
def capture_stream(device: Device) -> Any:
    """The stream graphs of ``device`` are recorded and launched on. It synchronises
    with the default stream, which eager kernels and copies use, so a graph's work is
    ordered after what came before it and before what comes after."""
    return device.cuda.stream()  # type: ignore[attr-defined]


class StepGraph:
    """One recorded step: :meth:`launch` refills its staged values and replays it."""

    def __init__(self, device: Device, recording: Capture, executable: Any) -> None:
        self.device = device
        self.recording = recording
        self.executable = executable  # the instantiated graph (None under the simulator)
        # recorded after each launch on a GPU: the staged values of the next launch are
        # written only once the previous one has read them
        self.finished = None if executable is None else device.cuda.event()  # type: ignore[attr-defined]
        self.launched = False

    @property
    def operations(self) -> int:
        """Launches and copies recorded (under the simulator; 0 on a GPU)."""
        return len(self.recording.operations)

    def launch(self) -> None:
        host_work = self.recording.staged or self.recording.hooks
        if self.launched and host_work and self.finished is not None:
            self.finished.synchronize()  # at once when the last step's loss was read
        for hook in self.recording.hooks:
            hook()
        for producer, pinned in self.recording.staged:
            pinned[...] = producer()
        CUDA_ACTIVITY.to_device += len(self.recording.staged)  # copied in by the graph
        CUDA_ACTIVITY.launches += 1
        CUDA_ACTIVITY.graph_launches += 1
        if self.executable is None:
            for operation in self.recording.operations:
                operation()
            return
        stream = capture_stream(self.device)
        checked(driver().cuGraphLaunch(self.executable, stream.handle), "cuGraphLaunch")
        self.finished.record(stream)  # type: ignore[union-attr]
        self.launched = True

    def __del__(self) -> None:
        if getattr(self, "executable", None) is not None:
            with contextlib.suppress(Exception):
                driver().cuGraphExecDestroy(self.executable)


def capture(device: Device, body: Callable[[], Result]) -> tuple[StepGraph, Result]:
    """Record ``body()``'s kernels and copies on ``device`` (CUDA) into a graph, without
    running them; returns the graph and what ``body`` returned. Raises
    :class:`NotCapturable` when ``body`` does what a graph cannot hold."""
    if simulator_enabled():
        recording = Capture(stream=None)
        set_active_capture(recording)
        try:
            result = body()
        finally:
            set_active_capture(None)
        return StepGraph(device, recording, None), result
    cuda = device.cuda  # type: ignore[attr-defined]
    stream = capture_stream(device)
    cuda_driver = driver()
    recording = Capture(stream=stream)
    relaxed = cuda_driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED
    with cuda.defer_cleanup():  # no memory is freed (a synchronising call) while recording
        checked(cuda_driver.cuStreamBeginCapture(stream.handle, relaxed), "cuStreamBeginCapture")
        set_active_capture(recording)
        try:
            result = body()
        finally:  # the stream leaves capture mode whatever happened
            set_active_capture(None)
            error, graph = cuda_driver.cuStreamEndCapture(stream.handle)
            if int(error) == 0 and sys.exc_info()[0] is not None:
                cuda_driver.cuGraphDestroy(graph)
    if int(error) != 0:
        raise NotCapturable(f"cuStreamEndCapture failed: {error}")
    try:
        executable = checked(cuda_driver.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
    finally:
        cuda_driver.cuGraphDestroy(graph)
    return StepGraph(device, recording, executable), result


@dataclass
class Recorded(Generic[Result]):
    """A signature's graph, the host arrays of the batch its next launch copies in
    (``fed``: the graph's first copies read them, staged through pinned memory), what
    its step returned (read after each launch), and the arrays whose replacement
    outdates it."""

    graph: StepGraph
    fed: list[Any]
    result: Result
    guards: tuple[Any, ...]

    def still_valid(self, guards: Sequence[Any]) -> bool:
        return len(guards) == len(self.guards) and all(
            a is b for a, b in zip(guards, self.guards, strict=True)
        )


#: a signature seen once (its next call is recorded)
SEEN = "seen"


@dataclass
class StepGraphs:
    """The recorded steps of one model, by signature (see the module doc).

    ``eager`` maps each signature that runs eagerly to the reason it could not be
    recorded, for a user who wonders why a step is slow."""

    recorded: dict[Any, Any] = field(default_factory=dict)
    eager: dict[Any, str] = field(default_factory=dict)

    def clear(self) -> None:
        self.recorded.clear()
        self.eager.clear()

    def run(
        self,
        device: Device,
        key: Any,
        guards: Sequence[Any],
        batch: Sequence[np.ndarray],
        step: Callable[[list[Any]], Result],
    ) -> Result:
        """``step(arrays)`` on the device copies of the host arrays ``batch``: eagerly
        the first time ``key`` is seen, recorded the second, replayed afterwards.
        ``guards`` are the persistent arrays the step updates or reads (weights,
        optimizer states, carried states): a recording made with others is redone."""
        entry = self.recorded.get(key)
        if isinstance(entry, Recorded) and not entry.still_valid(guards):
            entry = SEEN
        if entry is None or key in self.eager:
            self.recorded.setdefault(key, SEEN)
            return step([device.asarray(array) for array in batch])
        if entry == SEEN:  # the recording's first copies fill its input arrays
            inputs = [device.empty(np.shape(array), np.asarray(array).dtype) for array in batch]
            fed = list(batch)

            def recorded_step() -> Result:
                for position, target in enumerate(inputs):
                    device.stage(target, functools.partial(fed.__getitem__, position))
                return step(inputs)

            try:
                graph, result = capture(device, recorded_step)
            except NotCapturable as reason:
                self.eager[key] = str(reason)
                for target, array in zip(inputs, batch, strict=True):
                    device.write(target, array)
                return step(inputs)
            self.recorded[key] = Recorded(graph, fed, result, tuple(guards))
            graph.launch()
            return result
        entry.fed[:] = batch
        entry.graph.launch()
        return entry.result
