"""Optimizer updates, gradient clipping and the sum reduction the training families share.

Operations (both devices; ``param``, ``grad`` and the state arrays are flat, C-contiguous
and of one length; hyperparameters are scalars given at call time; every update is in
place):

- ``sgd_update(param, grad, velocity, lr, momentum, nesterov)``:
  ``v = momentum * v - lr * g``; ``param += momentum * v - lr * g`` when ``nesterov``,
  else ``param += v``
- ``rmsprop_update(param, grad, accumulator, lr, rho, epsilon)``:
  ``a = rho * a + (1 - rho) * g**2``; ``param -= lr * g / sqrt(a + epsilon)``
- ``adagrad_update(param, grad, accumulator, lr, epsilon)``:
  ``a += g**2``; ``param -= lr * g / sqrt(a + epsilon)``
- ``adadelta_update(param, grad, accumulator, delta_accumulator, lr, rho, epsilon)``:
  ``a = rho * a + (1 - rho) * g**2``;
  ``step = g * sqrt(d + epsilon) / sqrt(a + epsilon)``; ``param -= lr * step``;
  ``d = rho * d + (1 - rho) * step**2``
- ``adam_update(param, grad, m, v, lr_t, beta_1, beta_2, epsilon)``:
  ``m = b1 * m + (1 - b1) * g``; ``v = b2 * v + (1 - b2) * g**2``;
  ``param -= lr_t * m / (sqrt(v) + epsilon)`` (``lr_t`` bias-corrected by the caller)
- ``adamax_update(param, grad, m, u, lr_t, beta_1, beta_2, epsilon)``:
  ``m = b1 * m + (1 - b1) * g``; ``u = max(b2 * u, |g|)``; ``param -= lr_t * m / (u + epsilon)``
- ``clip_values(grad, clipvalue)``: ``grad`` clipped to ``[-clipvalue, clipvalue]``
- ``update_launcher(rule, size)``: the compiled update of ``rule`` (``"sgd"``, ``"adam"``...)
  for weights of ``size`` elements, called as ``(param, grad, first, second, scalars)``
  where ``scalars`` is a device vector of the dtype holding ``[lr, h1, h2, h3]``, read by
  the kernel (the optimizer stages each step's values into it, so a step replayed as a
  CUDA graph gets them); ``no_state()`` is the empty array that stands for an unused
  state. Optimizers bind these once and call them every step, so a step costs one
  compiled call per weight
- ``advance_step_scalars(settings, schedule, scalars)``: counts a step on the device and
  writes its ``scalars`` from the float64 ``settings`` vector ``[lr, h1, h2, h3, p1, p2,
  steps]`` (:data:`STEP_SETTINGS`): ``steps += 1``, then ``scalars = [lr * factor, h1,
  h2, h3]`` with ``factor`` by ``schedule`` (:data:`SCHEDULES`): ``1``; time decay
  ``1 / (1 + p1 * (steps - 1))``; Adam's ``sqrt(1 - p2**steps) / (1 - p1**steps)``;
  Adamax's ``1 / (1 - p1**steps)``. One CUDA thread, in float64 whatever the dtype (a
  float32 ``beta**t`` would move the bias correction by 1e-4 against the host's), so
  that a step's changing scalars cost no copy from the host: the host writes
  ``settings`` only when a hyperparameter or the step count is changed from outside
- ``sum_of_squares(x, out)``: ``out[0] += sum(x**2)`` (the caller zeroes ``out``, then
  adds up every gradient of a model)
- ``scale_by_norm_limit(grad, total_sq, clipnorm)``: ``grad *= clipnorm / sqrt(total_sq[0])``
  when ``sqrt(total_sq[0]) > clipnorm``; ``total_sq`` is the one-element array that
  ``sum_of_squares`` filled, read inside the kernel, so on CUDA nothing comes back to the host

These are Keras 0.3's rules: RMSprop, Adagrad and Adadelta add ``epsilon`` under
the square root, ``g / sqrt(a + epsilon)``.

Each rule is one plain-Python step for element ``i`` (compiled inline for the CPU and as
a CUDA device function) with the same argument list
``(param, grad, first, second, i, lr, h1, h2, h3, k)``: ``first`` and ``second`` are the
state arrays (an empty array where a rule keeps fewer), ``h1..h3`` the other
hyperparameters, ``k`` the dtype's constants. So one CPU loop and one CUDA kernel
shape serve every rule: the CPU ``prange`` loop reads the scalars vector once, then
steps every element; on CUDA the per-index body (:func:`update_body`) reads it and
the toolkit makes it a grid-stride kernel.

Shared with :mod:`~numlayers.kernels.losses` and :mod:`~numlayers.kernels.regularization`:
:func:`kernel_constants` and the sum reduction (:func:`cpu_sum` and
:func:`block_sum_launcher`) over a per-element term such as :func:`square_term`. The
CUDA reduction is hand-written: a block's threads add up in shared memory, and the
blocks of an accumulating sum meet in an atomic add.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numba
import numpy as np
from numba import prange

from numlayers.kernels.toolkit import (
    BLOCK_SIZE,
    CpuLoop,
    DeviceArray,
    bind_cuda,
    blocks_for,
    compile_cpu,
    cpu_index_loop,
    cpu_inline_early,
    cuda_kernels,
    empty_vector,
)

#: ``numba.cuda``, bound by :func:`bind_cuda` (the sum reduction names it as a module global)
cuda: Any = None

#: Work of one element of an update or a clip (see
#: :func:`~numlayers.kernels.toolkit.use_parallel`): a few multiply-adds over three or
#: four arrays, memory-bound once vectorised, so half a multiply-add's time; it keeps the
#: measured threshold of 2**16 elements (a 1024 x 1024 SGD step: 0.35 ms on one core,
#: about half on two)
UPDATE_COST = 0.5

#: Keras' fuzz factor ``K.epsilon()``
EPSILON = 1e-7
#: below this squared norm a vector is not scaled up any further (as ``tf.nn.l2_normalize``)
NORM_FLOOR = 1e-12
#: the most blocks an accumulating CUDA reduction launches (each then loops over the input)
REDUCTION_BLOCKS = 512


class KernelConstants(NamedTuple):
    """Scalars of the kernel's dtype, so that no kernel writes a float64 literal."""

    zero: np.floating[Any]
    one: np.floating[Any]
    two: np.floating[Any]
    hundred: np.floating[Any]
    eps: np.floating[Any]
    one_minus_eps: np.floating[Any]
    norm_floor: np.floating[Any]
    #: ``2**(mantissa bits)``: from there on every float is an integer
    round_shift: np.floating[Any]


def kernel_constants(dtype: np.dtype) -> KernelConstants:
    """The constants of :class:`KernelConstants` in ``dtype``."""
    cast = np.dtype(dtype).type
    one, eps = cast(1), cast(EPSILON)
    round_shift = cast(2 ** np.finfo(dtype).nmant)
    return KernelConstants(
        cast(0), one, cast(2), cast(100), eps, one - eps, cast(NORM_FLOOR), round_shift
    )


# ---------------------------------------------------------------- sum reduction terms


@cpu_inline_early
def square_term(a, b, i, s1, s2):
    """``a[i]**2`` (``b``, ``s1`` and ``s2`` unused)."""
    return a[i] * a[i]


@cpu_inline_early
def product_term(a, b, i, s1, s2):
    """``a[i] * b[i]``."""
    return a[i] * b[i]


@cpu_inline_early
def l1l2_term(a, b, i, s1, s2):
    """``s1 * |a[i]| + s2 * a[i]**2`` (the L1/L2 weight penalty)."""
    return s1 * abs(a[i]) + s2 * a[i] * a[i]


@functools.cache
def cpu_sum(dtype: np.dtype, term: Callable[..., Any]) -> Any:
    """Return ``total(a, b, s1, s2)``: the sum of ``term(a, b, i, s1, s2)`` over ``a``.

    Reassociation lets the loop keep several partial sums in SIMD registers, as
    NumPy's pairwise sum does.
    """
    zero = np.dtype(dtype).type(0)

    def sum_terms(a, b, s1, s2):
        total = zero
        for i in range(a.size):
            total += term(a, b, i, s1, s2)
        return total

    return compile_cpu(sum_terms, f"sum_{term.__name__}", fastmath={"reassoc"})


@functools.cache
def block_sum_launcher(
    cuda_api: Any, dtype: np.dtype, term: Callable[..., Any], accumulate: bool
) -> Any:
    """Return ``launch(a, b, s1, s2, out)`` summing ``term(a, b, i, s1, s2)`` over ``a``.

    Each block walks the input with a grid stride, then halves its 256 partial sums
    in shared memory (no warp shuffles, so the simulator runs it too). With
    ``accumulate`` the blocks add into ``out[0]`` atomically; without, one block
    writes ``out[0] = total`` (a deterministic sum for short inputs).
    """
    kernels = bind_cuda(globals(), cuda_api, dtype)
    scalar = kernels.scalar
    vector = kernels.array(1)
    zero = kernels.dtype.type(0)
    term_device = kernels.device(term)

    def block_sum(a, b, s1, s2, out):
        partial = cuda.shared.array(BLOCK_SIZE, scalar)
        thread = cuda.threadIdx.x
        total = zero
        for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            total += term_device(a, b, i, s1, s2)
        partial[thread] = total
        cuda.syncthreads()
        width = BLOCK_SIZE // 2
        while width > 0:
            if thread < width:
                partial[thread] += partial[thread + width]
            cuda.syncthreads()
            width //= 2
        if thread == 0:
            if accumulate:
                cuda.atomic.add(out, 0, partial[0])
            else:
                out[0] = partial[0]

    block_sum.__name__ = f"{'accumulate' if accumulate else 'assign'}_sum_{term.__name__}_kernel"
    kernel = kernels.jit(vector, vector, scalar, scalar, vector)(block_sum)

    def launch(a: Any, b: Any, s1: Any, s2: Any, out: Any) -> None:
        blocks = min(blocks_for(a.size), REDUCTION_BLOCKS) if accumulate else 1
        kernel[blocks, BLOCK_SIZE](a, b, s1, s2, out)

    return launch


# ---------------------------------------------------------------- update rules


@cpu_inline_early
def sgd_step(param, grad, velocity, unused, i, lr, momentum, nesterov, h3, k):
    g = grad[i]
    v = momentum * velocity[i] - lr * g
    velocity[i] = v
    if nesterov != k.zero:
        param[i] += momentum * v - lr * g
    else:
        param[i] += v


@cpu_inline_early
def rmsprop_step(param, grad, accumulator, unused, i, lr, rho, epsilon, h3, k):
    g = grad[i]
    a = rho * accumulator[i] + (k.one - rho) * g * g
    accumulator[i] = a
    param[i] -= lr * g / math.sqrt(a + epsilon)  # Keras 0.3: epsilon inside the root


@cpu_inline_early
def adagrad_step(param, grad, accumulator, unused, i, lr, epsilon, h2, h3, k):
    g = grad[i]
    a = accumulator[i] + g * g
    accumulator[i] = a
    param[i] -= lr * g / math.sqrt(a + epsilon)  # Keras 0.3: epsilon inside the root


@cpu_inline_early
def adadelta_step(param, grad, accumulator, delta_accumulator, i, lr, rho, epsilon, h3, k):
    g = grad[i]
    a = rho * accumulator[i] + (k.one - rho) * g * g
    accumulator[i] = a
    # the new accumulator and the previous step's delta accumulator, as Keras 0.3
    d = delta_accumulator[i]
    step = g * math.sqrt(d + epsilon) / math.sqrt(a + epsilon)
    param[i] -= lr * step
    delta_accumulator[i] = rho * d + (k.one - rho) * step * step


@cpu_inline_early
def adam_step(param, grad, m, v, i, lr_t, beta_1, beta_2, epsilon, k):
    g = grad[i]
    m_i = beta_1 * m[i] + (k.one - beta_1) * g
    v_i = beta_2 * v[i] + (k.one - beta_2) * g * g
    m[i] = m_i
    v[i] = v_i
    param[i] -= lr_t * m_i / (math.sqrt(v_i) + epsilon)


@cpu_inline_early
def adamax_step(param, grad, m, u, i, lr_t, beta_1, beta_2, epsilon, k):
    g = grad[i]
    m_i = beta_1 * m[i] + (k.one - beta_1) * g
    u_i = max(beta_2 * u[i], abs(g))
    m[i] = m_i
    u[i] = u_i
    param[i] -= lr_t * m_i / (u_i + epsilon)


UPDATE_RULES = {
    "sgd": sgd_step,
    "rmsprop": rmsprop_step,
    "adagrad": adagrad_step,
    "adadelta": adadelta_step,
    "adam": adam_step,
    "adamax": adamax_step,
}


# ---------------------------------------------------------------- gradient clipping


@cpu_inline_early
def clip_limit(clipvalue, total_sq, k):
    return clipvalue


@cpu_inline_early
def clip_value_step(grad, i, limit, k):
    grad[i] = min(max(grad[i], -limit), limit)


@cpu_inline_early
def norm_limit_factor(clipnorm, total_sq, k):
    # read where the kernel runs: on CUDA the squared norm never comes back to the host
    norm = math.sqrt(total_sq[0])
    return clipnorm / norm if norm > clipnorm else k.one


@cpu_inline_early
def scale_step(grad, i, factor, k):
    grad[i] *= factor


#: each rule: ``value = prepare(limit, total_sq, k)`` once, then ``step(grad, i, value, k)``
CLIP_RULES = {
    "clip_values": (clip_limit, clip_value_step),
    "scale_by_norm_limit": (norm_limit_factor, scale_step),
}


def update_body(step: Callable[..., None], k: KernelConstants) -> Callable[..., None]:
    """Update rule ``step`` (compiled for the device that runs it) as a per-index body
    ``update_element(index, param, grad, first, second, scalars)``, ``scalars`` holding
    ``[lr, h1, h2, h3]``."""

    def update_element(index, param, grad, first, second, scalars):
        step(param, grad, first, second, index, scalars[0], scalars[1], scalars[2], scalars[3], k)

    return update_element


def clip_body(
    prepare: Callable[..., Any], step: Callable[..., None], k: KernelConstants
) -> Callable[..., None]:
    """A clipping rule as a per-index body ``clip_element(index, grad, limit, total_sq)``.

    Every index prepares its own value: on CUDA the squared norm stays on the device.
    """

    def clip_element(index, grad, limit, total_sq):
        step(grad, index, prepare(limit, total_sq, k), k)

    return clip_element


#: the float64 settings vector of :func:`advance_step_scalars`: ``lr``, the three
#: hyperparameters the update rule reads, two schedule parameters, the steps counted
STEP_SETTINGS = 7
#: learning-rate schedules: their codes, in the settings' schedule argument
SCHEDULES = {"constant": 0, "time_decay": 1, "adam": 2, "adamax": 3}
_TIME_DECAY, _ADAM, _ADAMAX = SCHEDULES["time_decay"], SCHEDULES["adam"], SCHEDULES["adamax"]


@cpu_inline_early
def advance_step_scalars(settings, schedule, scalars):
    """Count a step in ``settings[6]`` and write its ``[lr_t, h1, h2, h3]`` (module doc)."""
    steps = settings[6] + 1.0
    settings[6] = steps
    factor = 1.0
    if schedule == _TIME_DECAY:
        factor = 1.0 / (1.0 + settings[4] * (steps - 1.0))
    elif schedule == _ADAM:
        factor = math.sqrt(1.0 - settings[5] ** steps) / (1.0 - settings[4] ** steps)
    elif schedule == _ADAMAX:
        factor = 1.0 / (1.0 - settings[4] ** steps)
    scalars[0] = settings[0] * factor
    scalars[1] = settings[1]
    scalars[2] = settings[2]
    scalars[3] = settings[3]


def advance_step_scalars_element(index, settings, schedule, scalars):
    advance_step_scalars(settings, schedule, scalars)


def public_operations(
    update_launcher: Callable[[str, int], Any],
    clips: dict[str, Callable[..., None]],
    empty: Callable[[], Any],
    cast: Callable[[float], Any],
    vector: Callable[[np.ndarray], Any],
) -> dict[str, Any]:
    """The public signatures, mapped onto a device's update launchers and clip loops.

    ``update_launcher(rule, size)`` gives the compiled update of ``rule``, called as
    ``(param, grad, first, second, scalars)``; ``clips[rule]`` is a clipping rule's
    index loop, called as ``(count, grad, limit, total_sq)``; ``empty()`` gives the
    empty array that stands for an unused state or scalar array; ``vector(host)`` puts
    the host vector of a call's scalars on the device.
    """

    def update(
        rule: str,
        param: Any,
        grad: Any,
        first: Any,
        second: Any,
        lr: float,
        h1: float,
        h2: float,
        h3: float,
    ) -> None:
        launch = update_launcher(rule, param.size)
        scalars = np.array([cast(lr), cast(h1), cast(h2), cast(h3)])
        launch(param, grad, first, second, vector(scalars))

    def sgd_update(
        param: Any, grad: Any, velocity: Any, lr: float, momentum: float, nesterov: bool
    ) -> None:
        flag = 1.0 if nesterov else 0.0
        update("sgd", param, grad, velocity, empty(), lr, momentum, flag, 0.0)

    def rmsprop_update(
        param: Any, grad: Any, accumulator: Any, lr: float, rho: float, epsilon: float
    ) -> None:
        update("rmsprop", param, grad, accumulator, empty(), lr, rho, epsilon, 0.0)

    def adagrad_update(param: Any, grad: Any, accumulator: Any, lr: float, epsilon: float) -> None:
        update("adagrad", param, grad, accumulator, empty(), lr, epsilon, 0.0, 0.0)

    def adadelta_update(
        param: Any,
        grad: Any,
        accumulator: Any,
        delta_accumulator: Any,
        lr: float,
        rho: float,
        epsilon: float,
    ) -> None:
        update("adadelta", param, grad, accumulator, delta_accumulator, lr, rho, epsilon, 0.0)

    def adam_update(
        param: Any,
        grad: Any,
        m: Any,
        v: Any,
        lr_t: float,
        beta_1: float,
        beta_2: float,
        epsilon: float,
    ) -> None:
        update("adam", param, grad, m, v, lr_t, beta_1, beta_2, epsilon)

    def adamax_update(
        param: Any,
        grad: Any,
        m: Any,
        u: Any,
        lr_t: float,
        beta_1: float,
        beta_2: float,
        epsilon: float,
    ) -> None:
        update("adamax", param, grad, m, u, lr_t, beta_1, beta_2, epsilon)

    def clip_values(grad: Any, clipvalue: float) -> None:
        clips["clip_values"](grad.size, grad, cast(clipvalue), empty())

    def scale_by_norm_limit(grad: Any, total_sq: Any, clipnorm: float) -> None:
        clips["scale_by_norm_limit"](grad.size, grad, cast(clipnorm), total_sq)

    return {
        "sgd_update": sgd_update,
        "rmsprop_update": rmsprop_update,
        "adagrad_update": adagrad_update,
        "adadelta_update": adadelta_update,
        "adam_update": adam_update,
        "adamax_update": adamax_update,
        "clip_values": clip_values,
        "scale_by_norm_limit": scale_by_norm_limit,
        "update_launcher": update_launcher,
        "no_state": empty,
    }


def cpu_update_loop(rule: str, k: KernelConstants) -> CpuLoop:
    """The CPU loop of update rule ``rule`` over every element of ``param``.

    A loop of its own rather than :func:`~numlayers.kernels.toolkit.cpu_index_loop`'s:
    ``update_launcher`` hands the optimizer the compiled loop itself (serial or parallel,
    picked once per weight), so the count is the weight's size, not an argument.
    """
    step = cpu_inline_early(UPDATE_RULES[rule])

    def update_loop(param, grad, first, second, scalars):
        # the scalars are read once, into locals the loop cannot overwrite
        lr, h1, h2, h3 = scalars[0], scalars[1], scalars[2], scalars[3]
        for i in prange(param.size):
            step(param, grad, first, second, i, lr, h1, h2, h3, k)

    return CpuLoop(update_loop, f"{rule}_update", cost=UPDATE_COST, size_argument=0)


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    k = kernel_constants(dtype)
    no_array = np.empty(0, dtype)
    updates = {rule: cpu_update_loop(rule, k) for rule in UPDATE_RULES}
    clips = {
        rule: cpu_index_loop(
            cpu_inline_early(clip_body(prepare, step, k)), name=rule, cost=UPDATE_COST
        )
        for rule, (prepare, step) in CLIP_RULES.items()
    }

    def update_launcher(rule: str, size: int) -> Any:
        return updates[rule].twin_for(size)

    squares = cpu_sum(dtype, square_term)

    def sum_of_squares(x: np.ndarray, out: np.ndarray) -> None:
        out[0] += squares(x, no_array, k.zero, k.zero)

    return {
        **public_operations(update_launcher, clips, lambda: no_array, dtype.type, np.asarray),
        "sum_of_squares": sum_of_squares,
        # four numbers: Python on the host arrays, not a compiled call
        "advance_step_scalars": advance_step_scalars,
    }


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    kernels = cuda_kernels(cuda_api, dtype)
    k = kernel_constants(dtype)
    no_array = empty_vector(cuda_api, dtype)
    vector = kernels.array(1)
    scalar = kernels.scalar
    updates = {
        rule: kernels.index_loop(
            update_body(kernels.device(step), k),
            (vector, vector, vector, vector, vector),
            name=f"{rule}_update_kernel",
        )
        for rule, step in UPDATE_RULES.items()
    }
    clips = {
        rule: kernels.index_loop(
            clip_body(kernels.device(prepare), kernels.device(step), k),
            (vector, scalar, vector),
            name=f"{rule}_kernel",
        )
        for rule, (prepare, step) in CLIP_RULES.items()
    }

    def update_launcher(rule: str, size: int) -> Any:
        return functools.partial(updates[rule], size)

    squares = block_sum_launcher(cuda_api, dtype, square_term, True)

    def sum_of_squares(x: Any, out: Any) -> None:
        squares(x, no_array(), k.zero, k.zero, out)

    # float64 arithmetic by design (module doc): built and checked as a float64 kernel
    settings_kernels = cuda_kernels(cuda_api, np.dtype(np.float64))
    advance = settings_kernels.index_loop(
        advance_step_scalars_element,
        (settings_kernels.array(1), numba.int64, vector),
        name=f"advance_step_scalars_{dtype.name}",
    )

    def advance_step_scalars_on_device(settings: Any, schedule: int, scalars: Any) -> None:
        advance(1, settings, schedule, scalars)

    return {
        **public_operations(update_launcher, clips, no_array, dtype.type, cuda_api.to_device),
        "sum_of_squares": sum_of_squares,
        "advance_step_scalars": advance_step_scalars_on_device,
    }


class OptimizerKernels(Protocol):
    """The optimizer family's operations, the same on both devices (module doc)."""

    def advance_step_scalars(
        self, settings: DeviceArray, schedule: int, scalars: DeviceArray
    ) -> None: ...

    def sgd_update(
        self,
        param: DeviceArray,
        grad: DeviceArray,
        velocity: DeviceArray,
        lr: float,
        momentum: float,
        nesterov: bool,
    ) -> None: ...

    def rmsprop_update(
        self,
        param: DeviceArray,
        grad: DeviceArray,
        accumulator: DeviceArray,
        lr: float,
        rho: float,
        epsilon: float,
    ) -> None: ...

    def adagrad_update(
        self,
        param: DeviceArray,
        grad: DeviceArray,
        accumulator: DeviceArray,
        lr: float,
        epsilon: float,
    ) -> None: ...

    def adadelta_update(
        self,
        param: DeviceArray,
        grad: DeviceArray,
        accumulator: DeviceArray,
        delta_accumulator: DeviceArray,
        lr: float,
        rho: float,
        epsilon: float,
    ) -> None: ...

    def adam_update(
        self,
        param: DeviceArray,
        grad: DeviceArray,
        m: DeviceArray,
        v: DeviceArray,
        lr_t: float,
        beta_1: float,
        beta_2: float,
        epsilon: float,
    ) -> None: ...

    def adamax_update(
        self,
        param: DeviceArray,
        grad: DeviceArray,
        m: DeviceArray,
        u: DeviceArray,
        lr_t: float,
        beta_1: float,
        beta_2: float,
        epsilon: float,
    ) -> None: ...

    def clip_values(self, grad: DeviceArray, clipvalue: float) -> None: ...

    def scale_by_norm_limit(
        self, grad: DeviceArray, total_sq: DeviceArray, clipnorm: float
    ) -> None: ...

    def update_launcher(self, rule: str, size: int) -> Any: ...

    def no_state(self) -> Any: ...

    def sum_of_squares(self, x: DeviceArray, out: DeviceArray) -> None: ...
