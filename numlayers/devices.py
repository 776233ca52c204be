"""Devices: where arrays live and which kernels run on them.

This is the one module that imports ``numba.cuda``; everything else asks a
:class:`Device` for allocation, transfers and its kernel set. ``numba.cuda`` is
imported lazily, the first time a CUDA device is requested, so a CPU-only user
never pays for it.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is
imported) the CUDA device runs every ``cuda.jit`` kernel on the CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numlayers.kernels.interfaces import Kernels

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class DeviceError(RuntimeError):
    """Raised when a device cannot be used (no GPU, no CUDA driver)."""


@dataclasses.dataclass
class CudaActivity:
    """The CUDA work numlayers asked for: kernel launches (counted by the toolkit's
    launcher, so the simulator counts what a GPU would get), copies between host and
    device each way, copies within the device, and synchronisations.

    On a GPU a launch from Python costs about as much as a small layer's kernel, and a
    device-to-host copy waits for every queued kernel: a step is fast when these counts
    are low (see :func:`cuda_activity`).
    """

    launches: int = 0
    graph_launches: int = 0
    to_host: int = 0
    to_device: int = 0
    within_device: int = 0
    synchronizations: int = 0


#: the process's counts so far (:func:`cuda_activity` reads the work of a block)
CUDA_ACTIVITY = CudaActivity()


@contextmanager
def cuda_activity() -> Iterator[CudaActivity]:
    """Count the CUDA work of a block of code: yields a :class:`CudaActivity` that holds
    the block's counts when it ends (every thread's work in that time is counted).

    Example:
        >>> with cuda_activity() as activity:
        ...     pass
        >>> activity.launches
        0
    """
    start = dataclasses.replace(CUDA_ACTIVITY)
    counted = CudaActivity()
    try:
        yield counted
    finally:
        for field in dataclasses.fields(CudaActivity):
            now, before = getattr(CUDA_ACTIVITY, field.name), getattr(start, field.name)
            setattr(counted, field.name, now - before)


def resolve_dtype(dtype: Any) -> np.dtype:
    """Return the numpy float dtype named by ``dtype`` (float32 or float64); None is the
    backend's :func:`~numlayers.backend.floatx` (float32 unless ``set_floatx`` changed it)."""
    if dtype is None:
        from numlayers.backend import floatx

        dtype = floatx()
    resolved = np.dtype(dtype)
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, received {resolved}")
    return resolved


class NotCapturable(RuntimeError):
    """Raised while a step is captured into a CUDA graph by work a graph cannot hold: a
    copy to the host, host data sent to the device outside :meth:`Device.stage`, a
    synchronisation. The step then runs eagerly (see :mod:`numlayers.cuda_graphs`)."""


@dataclasses.dataclass
class Capture:
    """A step being recorded into a CUDA graph.

    On a GPU, ``stream`` is the stream under CUDA stream capture: kernels and copies
    are put on it and the driver records them. Under the simulator there is no stream
    capture: ``stream`` is None and ``operations`` keeps each kernel launch and copy, in
    order, to be replayed as the graph would be. ``retained`` holds every array that a
    recorded operation touches, so none is freed while the graph lives. ``staged`` holds
    the host values that change from one replay to the next (a learning rate, a dropout
    seed): each ``(producer, pinned)`` is called before every replay into the pinned host
    array that the graph copies to the device. ``hooks`` are host work run before every
    replay (:meth:`Device.before_each_step`).
    """

    stream: Any
    operations: list[Callable[[], None]] = dataclasses.field(default_factory=list)
    retained: list[Any] = dataclasses.field(default_factory=list)
    staged: list[tuple[Callable[[], np.ndarray], np.ndarray]] = dataclasses.field(
        default_factory=list
    )
    hooks: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def launch(
        self,
        kernel: Any,
        configuration: tuple[Any, ...],
        arguments: tuple[Any, ...],
        before_launch: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """Record ``kernel[configuration](*arguments)`` (see :func:`launch_kernel`)."""
        self.retained.extend(arguments)
        if self.stream is None:  # configured at replay: the simulator's kernel[...] sets
            # the configuration on the kernel object itself, for its next launch only
            self.operations.append(
                functools.partial(launch_kernel, kernel, configuration, arguments)
            )
        else:
            launch_kernel(kernel, configuration, arguments, before_launch, self.stream)

    def copy(self, source: Any, target: Any) -> None:
        """Record a copy between two arrays (device to device, or pinned host to device)."""
        self.retained.extend((source, target))
        if self.stream is None:
            self.operations.append(functools.partial(target.copy_to_device, source))
        else:
            target.copy_to_device(source, stream=self.stream)


def launch_kernel(
    kernel: Any,
    configuration: tuple[Any, ...],
    arguments: tuple[Any, ...],
    before_launch: Callable[[Any, Any], None] | None = None,
    stream: Any = None,
) -> None:
    """``kernel[configuration](*arguments)``. ``configuration`` is Numba's: ``(grid,
    block)``, or ``(grid, block, 0, shared)`` with ``shared`` bytes of dynamic shared
    memory; ``stream``, where given, replaces its default stream. ``before_launch`` is
    a Numba pre-launch callback, called with the compiled kernel the arguments select."""
    if stream is not None:
        grid, block, *rest = configuration
        configuration = (grid, block, stream, *rest[1:])
    configured = kernel[configuration]
    if before_launch is not None:
        configured.pre_launch_callbacks.append(before_launch)
    configured(*arguments)


_CAPTURE = threading.local()


def active_capture() -> Capture | None:
    """The capture this thread is recording, if any (:mod:`numlayers.cuda_graphs`)."""
    return getattr(_CAPTURE, "current", None)


def set_active_capture(capture: Capture | None) -> None:
    _CAPTURE.current = capture


def refuse_in_capture(what: str) -> None:
    """Raise :class:`NotCapturable` if a step is being captured on this thread."""
    if active_capture() is not None:
        raise NotCapturable(f"{what} cannot be part of a CUDA graph")


#: the byte boundary a CPU weight starts on (:meth:`CPUDevice.weight`): a cache line, and
#: an AVX-512 vector
WEIGHT_ALIGNMENT = 64


class Device:
    """A place where arrays live, with the kernels that run there.

    The CPU and CUDA devices offer the same methods; layers use only these and
    the kernel set from :meth:`kernels`, so no layer branches on the device.
    """

    name: str = "abstract"
    #: name of the builder function each kernel family module defines for this device
    kernel_builder: str = ""

    def __init__(self) -> None:
        self._kernel_sets: dict[np.dtype, Kernels] = {}

    def is_device_array(self, array: Any) -> bool:
        raise NotImplementedError

    def asarray(self, array: Any, dtype: Any = None) -> Any:
        """Return ``array`` on this device (copying only when it must)."""
        raise NotImplementedError

    def to_host(self, array: Any) -> np.ndarray:
        raise NotImplementedError

    def weight(self, host: Any, dtype: Any) -> Any:
        """A new array on this device holding ``host`` as ``dtype``: a layer's weight."""
        return self.asarray(np.array(host, dtype=dtype, order="C"))

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        raise NotImplementedError

    def write(self, target: Any, host: np.ndarray) -> None:
        """Copy the host array ``host`` into the existing array ``target`` (same shape)."""
        raise NotImplementedError

    def copy(self, source: Any, target: Any) -> None:
        """Copy array ``source`` into array ``target`` of the same shape and dtype, both on
        this device (no kernel: a memory copy)."""
        raise NotImplementedError

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        raise NotImplementedError

    def read_only(self, array: Any) -> Any:
        """A view of ``array`` (same memory) whose writes from Python raise ``ValueError``:
        what :meth:`Layer.forward <numlayers.layers.base.Layer.forward>` returns."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued kernels (a no-op on the CPU)."""

    def stage(self, target: Any, producer: Callable[[], np.ndarray]) -> Any:
        """A host value that changes from call to call (a dropout seed), as the kernels
        that read it as ``value[0]`` are to be given it: ``producer()``'s result.

        The CPU writes it into ``target`` (a small array) and returns ``target``. On CUDA
        an eager step gets the values in a tuple, passed with the launch (nothing is
        copied), while a step being recorded into a CUDA graph gets ``target``: the
        graph copies ``producer()``'s result into it before every replay
        (:mod:`numlayers.cuda_graphs`).
        """
        self.write(target, producer())
        return target

    def before_each_step(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` now, as part of this step; where the step is being recorded
        into a CUDA graph, before each launch of the recording instead (host work that
        a step needs and a graph cannot hold: counting the step, writing settings that
        changed since the last one)."""
        hook()

    def builder_args(self) -> tuple[Any, ...]:
        """Extra arguments passed to each kernel family's builder."""
        return ()

    def kernels(self, dtype: Any) -> Kernels:
        """The kernel set of this device for ``dtype`` (compiled lazily, cached).

        Layers ask for it on every call, so the lookup is one dict access.
        """
        found = self._kernel_sets.get(dtype)
        if found is None:
            from numlayers.kernels import kernel_set

            found = self._kernel_sets[dtype] = kernel_set(self, resolve_dtype(dtype))
        return found

    def __repr__(self) -> str:
        return f"Device({self.name!r})"


class CPUDevice(Device):
    name = "cpu"
    kernel_builder = "build_cpu"

    def is_device_array(self, array: Any) -> bool:
        return isinstance(array, np.ndarray)

    def asarray(self, array: Any, dtype: Any = None) -> np.ndarray:
        if hasattr(array, "copy_to_host"):
            array = array.copy_to_host()
        # not ascontiguousarray, which makes a 0-d array (a scalar) 1-d
        return np.asarray(array, dtype=dtype, order="C")

    def to_host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def weight(self, host: Any, dtype: Any) -> np.ndarray:
        """A copy starting on a :data:`WEIGHT_ALIGNMENT` boundary. MKL's products of a
        few rows read a weight there faster: a recurrent step's ``16 x 128`` by ``128 x
        512`` float32 product took 27 us from 32 or 64 bytes against 32 us from 16 or 48
        (NumPy's allocations are only 16-byte aligned, so which one a model got changed
        from process to process). Large products did not care."""
        values = np.asarray(host, dtype=dtype)
        storage = np.empty(values.nbytes + WEIGHT_ALIGNMENT, np.uint8)
        start = -storage.ctypes.data % WEIGHT_ALIGNMENT
        array = storage[start : start + values.nbytes].view(values.dtype).reshape(values.shape)
        array[...] = values
        return array

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def write(self, target: Any, host: np.ndarray) -> None:
        np.copyto(target, host)

    def copy(self, source: Any, target: Any) -> None:
        np.copyto(target, source)

    def read_only(self, array: Any) -> Any:
        view = array.view()
        view.flags.writeable = False
        return view

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)


def simulator_enabled() -> bool:
    """True when Numba's CUDA simulator replaces the GPU in this process."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@functools.cache
def cuda_module() -> ModuleType:
    """Import and return ``numba.cuda`` (real or simulated)."""
    from numba import cuda

    return cuda


def set_dynamic_shared_limit(function: Any, limit: int) -> None:
    """Let the compiled CUDA ``function`` (a Numba ``CudaPythonFunction``) launch with up
    to ``limit`` bytes of dynamic shared memory, on its device (the driver's
    ``CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES``, as numba-cuda sets a kernel's
    shared-memory carveout)."""
    from numba.cuda.cudadrv.driver import binding, driver

    attribute = binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    driver.cuKernelSetAttribute(attribute, limit, function.handle, function.device.id)


class CUDADevice(Device):
    name = "cuda"
    kernel_builder = "build_cuda"

    def __init__(self) -> None:
        super().__init__()
        cuda = cuda_module()
        if not cuda.is_available():
            raise DeviceError(
                "device 'cuda' was requested but no CUDA GPU is available "
                "(set NUMBA_ENABLE_CUDASIM=1 before importing numlayers to use the simulator)"
            )
        self.cuda = cuda
        quiet_small_grid_warnings()

    def builder_args(self) -> tuple[Any, ...]:
        return (self.cuda,)

    def is_device_array(self, array: Any) -> bool:
        return bool(self.cuda.devicearray.is_cuda_ndarray(array))

    def asarray(self, array: Any, dtype: Any = None) -> Any:
        cuda = self.cuda
        foreign = hasattr(array, "__cuda_array_interface__") and not self.is_device_array(array)
        if self.is_device_array(array) or foreign:
            # CuPy, PyTorch and other CUDA arrays are wrapped without a copy
            device_array = cuda.as_cuda_array(array) if foreign else array
            if dtype is not None and device_array.dtype != np.dtype(dtype):
                raise TypeError(
                    f"CUDA array has dtype {device_array.dtype}, expected {np.dtype(dtype)}; "
                    "cast it before passing it in"
                )
            if not device_array.is_c_contiguous():
                raise ValueError("CUDA arrays must be C-contiguous")
            return device_array
        refuse_in_capture("a copy of host data to the device")
        CUDA_ACTIVITY.to_device += 1
        return cuda.to_device(with_c_strides(np.asarray(array, dtype=dtype, order="C")))

    def to_host(self, array: Any) -> np.ndarray:
        if isinstance(array, np.ndarray):
            return array
        refuse_in_capture("a copy to the host")
        CUDA_ACTIVITY.to_host += 1
        return array.copy_to_host()

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.cuda.device_array(shape, dtype=dtype)

    def write(self, target: Any, host: np.ndarray) -> None:
        refuse_in_capture("a copy of host data to the device")
        CUDA_ACTIVITY.to_device += 1
        target.copy_to_device(np.ascontiguousarray(host, dtype=target.dtype))

    def copy(self, source: Any, target: Any) -> None:
        capture = active_capture()
        if capture is not None:
            capture.copy(source, target)
            return
        CUDA_ACTIVITY.within_device += 1
        target.copy_to_device(source)

    def before_each_step(self, hook: Callable[[], None]) -> None:
        capture = active_capture()
        if capture is None:
            hook()
        else:
            capture.hooks.append(hook)

    def stage(self, target: Any, producer: Callable[[], np.ndarray]) -> Any:
        capture = active_capture()
        if capture is None:
            return tuple(producer())
        pinned = self.cuda.pinned_array(target.shape, target.dtype)
        capture.staged.append((producer, pinned))
        capture.copy(pinned, target)
        return target

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        array = self.cuda.device_array(shape, dtype=dtype)
        self.kernels(dtype).fill(array.reshape(array.size), 0.0)
        return array

    def read_only(self, array: Any) -> Any:
        """A view of the device array ``array`` that refuses the host's writes
        (``view[...] = x``, ``setitem``, ``copy_to_device``), and slices and reshapes of it
        likewise. Kernels still read it as any device array (with no new compile); a CUDA
        array has no flag that would stop a kernel from writing it."""
        if simulator_enabled():  # the simulator's arrays hold a NumPy array: flag it
            host = array._ary.view()
            host.flags.writeable = False
            return type(array)(host, stream=array.stream)
        return read_only_device_array_class()(
            array.shape, array.strides, array.dtype, stream=array.stream, gpu_data=array.gpu_data
        )

    def synchronize(self) -> None:
        refuse_in_capture("a synchronisation")
        CUDA_ACTIVITY.synchronizations += 1
        self.cuda.synchronize()


def with_c_strides(host: np.ndarray) -> np.ndarray:
    """``host`` (C-contiguous) with the strides a new C array of its shape would have.

    NumPy calls an array with a length-1 axis of any stride C-contiguous (``x[None]``
    has stride 0 there); a device array keeps the strides it is given, and numba-cuda's
    ``reshape`` then refuses it as needing a copy (the simulator does not)."""
    canonical, step = [], host.dtype.itemsize
    for size in reversed(host.shape):
        canonical.append(step)
        step *= size
    if tuple(reversed(canonical)) == host.strides:
        return host
    return np.array(host, order="C", copy=True)


def quiet_small_grid_warnings() -> None:
    """Turn off numba-cuda's warning at every launch of fewer than 128 blocks, unless
    the user set ``NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS``: numlayers launches small grids on
    purpose (a small layer's kernel, a recurrent kernel's block per batch row), and the
    warning costs time at every launch besides filling the user's output."""
    if "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS" in os.environ or simulator_enabled():
        return
    from numba.cuda.core import config

    config.CUDA_LOW_OCCUPANCY_WARNINGS = 0


@functools.cache
def read_only_device_array_class() -> type:
    """numba-cuda's device array with the host's writes refused (made on first use, so
    that importing numlayers does not import numba.cuda)."""
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise ValueError(
            "this CUDA array is a layer's output buffer, valid until its next forward, and "
            "read-only: copy it (copy_to_host, or into a device array of your own) to keep "
            "or change it"
        )

    return type(
        "ReadOnlyDeviceNDArray",
        (DeviceNDArray,),
        {"__setitem__": refuse, "setitem": refuse, "copy_to_device": refuse},
    )


_DEVICES: dict[str, Device] = {}


def get_device(device: str | Device | None = None) -> Device:
    """Return the device named ``"cpu"`` or ``"cuda"`` (the default is the CPU)."""
    if isinstance(device, Device):
        return device
    name = "cpu" if device is None else str(device).lower()
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', received {device!r}")
    if name not in _DEVICES:
        _DEVICES[name] = CPUDevice() if name == "cpu" else CUDADevice()
    return _DEVICES[name]


def cuda_available() -> bool:
    """True when the CUDA device (a GPU, or the simulator) can be used."""
    try:
        get_device("cuda")
    except DeviceError:
        return False
    return True
