"""Optimizer updates, gradient clipping and the sum reduction the training families share.

Operations (both devices; ``param``, ``grad`` and the state arrays are flat, C-contiguous
and of one length; hyperparameters are scalars given at call time, since the caller
decays ``lr`` every step; every update is in place):

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
  for weights of ``size`` elements, called as ``(param, grad, first, second, lr, h1, h2,
  h3)`` with the scalars already in the dtype; ``no_state()`` is the empty array that
  stands for an unused state. Optimizers bind these once and call them every step, so a
  step costs one compiled call per weight
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
shape serve every rule.

Shared with :mod:`~numlayers.kernels.losses` and :mod:`~numlayers.kernels.regularization`:
:func:`kernel_constants` and the sum reduction (:func:`cpu_sum` and
:func:`block_sum_launcher`) over a per-element term such as :func:`square_term`.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from numlayers.kernels.cuda_support import (
    THREADS_PER_BLOCK,
    CudaKernelRegistry,
    blocks_for,
    empty_vector,
    new_registry,
)

#: weights at least this long are updated on every core (a 1024 x 1024 SGD step:
#: 0.35 ms on one core, about half on two)
PARALLEL_MIN_SIZE = 1 << 16

#: ``numba.cuda``, bound by :func:`new_registry` (kernels must see it as a module global)
cuda: Any = None

#: Keras' fuzz factor ``K.epsilon()``
EPSILON = 1e-7
#: below this squared norm a vector is not scaled up any further (as ``tf.nn.l2_normalize``)
NORM_FLOOR = 1e-12
#: the most blocks an accumulating CUDA reduction launches (each then loops over the input)
REDUCTION_BLOCKS = 512

#: Marks a plain-Python scalar helper for inlining into the CPU loops. It returns the
#: function itself, so the same helper is compiled again for CUDA by
#: ``registry.device``. CPU loops capture these plain functions, not
#: ``njit`` dispatchers: a dispatcher in a closure pickles with a random id and would
#: defeat Numba's on-disk cache.
cpu_inline = register_jitable(inline="always")


class KernelConstants(NamedTuple):
    """Scalars of the kernel's dtype, so no kernel writes a float64 literal."""

    zero: Any
    one: Any
    two: Any
    hundred: Any
    eps: Any
    one_minus_eps: Any
    norm_floor: Any
    #: ``2**(mantissa bits)``: from there on every float is an integer
    round_shift: Any


def kernel_constants(dtype: np.dtype) -> KernelConstants:
    """The constants of :class:`KernelConstants` in ``dtype``."""
    cast = np.dtype(dtype).type
    return KernelConstants(
        zero=cast(0),
        one=cast(1),
        two=cast(2),
        hundred=cast(100),
        eps=cast(EPSILON),
        one_minus_eps=cast(1) - cast(EPSILON),
        norm_floor=cast(NORM_FLOOR),
        round_shift=cast(2 ** np.finfo(dtype).nmant),
    )


def compile_cpu(template: Any, name: str, parallel: bool = False, **options: Any) -> Any:
    """Compile the CPU loop ``template`` with ``njit(cache=True)``, under its own ``name``.

    Numba's cache names its files after the function's qualified name and does not key
    on ``parallel``, so a parallel variant (a ``prange`` loop) gets a name of its own.
    """
    copy = types.FunctionType(
        template.__code__,
        template.__globals__,
        name,
        template.__defaults__,
        template.__closure__,
    )
    copy.__qualname__ = f"{name}_parallel" if parallel else name
    return njit(cache=True, parallel=parallel, **options)(copy)


# ---------------------------------------------------------------- sum reduction terms


@cpu_inline
def square_term(a, b, i, s1, s2):
    """``a[i]**2`` (``b``, ``s1`` and ``s2`` unused)."""
    return a[i] * a[i]


@cpu_inline
def product_term(a, b, i, s1, s2):
    """``a[i] * b[i]``."""
    return a[i] * b[i]


@cpu_inline
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
    registry = new_registry(globals(), cuda_api, dtype)
    scalar = registry.scalar
    vector = registry.array(1)
    zero = registry.dtype.type(0)
    term_device = registry.device(term)

    def block_sum(a, b, s1, s2, out):
        partial = cuda.shared.array(THREADS_PER_BLOCK, scalar)
        thread = cuda.threadIdx.x
        total = zero
        for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            total += term_device(a, b, i, s1, s2)
        partial[thread] = total
        cuda.syncthreads()
        width = THREADS_PER_BLOCK // 2
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
    kernel = registry.jit(vector, vector, scalar, scalar, vector)(block_sum)

    def launch(a: Any, b: Any, s1: Any, s2: Any, out: Any) -> None:
        blocks = min(blocks_for(a.size), REDUCTION_BLOCKS) if accumulate else 1
        kernel[blocks, THREADS_PER_BLOCK](a, b, s1, s2, out)

    return launch


# ---------------------------------------------------------------- update rules


@cpu_inline
def sgd_step(param, grad, velocity, unused, i, lr, momentum, nesterov, h3, k):
    g = grad[i]
    v = momentum * velocity[i] - lr * g
    velocity[i] = v
    if nesterov != k.zero:
        param[i] += momentum * v - lr * g
    else:
        param[i] += v


@cpu_inline
def rmsprop_step(param, grad, accumulator, unused, i, lr, rho, epsilon, h3, k):
    g = grad[i]
    a = rho * accumulator[i] + (k.one - rho) * g * g
    accumulator[i] = a
    param[i] -= lr * g / math.sqrt(a + epsilon)  # Keras 0.3: epsilon inside the root


@cpu_inline
def adagrad_step(param, grad, accumulator, unused, i, lr, epsilon, h2, h3, k):
    g = grad[i]
    a = accumulator[i] + g * g
    accumulator[i] = a
    param[i] -= lr * g / math.sqrt(a + epsilon)  # Keras 0.3: epsilon inside the root


@cpu_inline
def adadelta_step(param, grad, accumulator, delta_accumulator, i, lr, rho, epsilon, h3, k):
    g = grad[i]
    a = rho * accumulator[i] + (k.one - rho) * g * g
    accumulator[i] = a
    # the new accumulator and the previous step's delta accumulator, as Keras 0.3
    d = delta_accumulator[i]
    step = g * math.sqrt(d + epsilon) / math.sqrt(a + epsilon)
    param[i] -= lr * step
    delta_accumulator[i] = rho * d + (k.one - rho) * step * step


@cpu_inline
def adam_step(param, grad, m, v, i, lr_t, beta_1, beta_2, epsilon, k):
    g = grad[i]
    m_i = beta_1 * m[i] + (k.one - beta_1) * g
    v_i = beta_2 * v[i] + (k.one - beta_2) * g * g
    m[i] = m_i
    v[i] = v_i
    param[i] -= lr_t * m_i / (math.sqrt(v_i) + epsilon)


@cpu_inline
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


@cpu_inline
def clip_limit(clipvalue, total_sq, k):
    return clipvalue


@cpu_inline
def clip_value_step(grad, i, limit, k):
    grad[i] = min(max(grad[i], -limit), limit)


@cpu_inline
def norm_limit_factor(clipnorm, total_sq, k):
    # read where the kernel runs: on CUDA the squared norm never comes back to the host
    norm = math.sqrt(total_sq[0])
    return clipnorm / norm if norm > clipnorm else k.one


@cpu_inline
def scale_step(grad, i, factor, k):
    grad[i] *= factor


#: each rule: ``value = prepare(limit, total_sq, k)`` once, then ``step(grad, i, value, k)``
CLIP_RULES = {
    "clip_values": (clip_limit, clip_value_step),
    "scale_by_norm_limit": (norm_limit_factor, scale_step),
}


def public_operations(
    update: Callable[..., Any], clip: Callable[..., Any], empty: Callable[[], Any], k: Any
) -> dict[str, Any]:
    """The public signatures, mapped onto the uniform update and clip launchers.

    ``update(rule, param, grad, first, second, lr, h1, h2, h3)`` and
    ``clip(rule, grad, limit, total_sq)`` are the device's launchers; ``empty()``
    gives the empty array that stands for an unused state or scalar array.
    """

    def sgd_update(
        param: Any, grad: Any, velocity: Any, lr: float, momentum: float, nesterov: bool
    ) -> None:
        flag = k.one if nesterov else k.zero
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
        clip("clip_values", grad, clipvalue, empty())

    def scale_by_norm_limit(grad: Any, total_sq: Any, clipnorm: float) -> None:
        clip("scale_by_norm_limit", grad, clipnorm, total_sq)

    return {
        "sgd_update": sgd_update,
        "rmsprop_update": rmsprop_update,
        "adagrad_update": adagrad_update,
        "adadelta_update": adadelta_update,
        "adam_update": adam_update,
        "adamax_update": adamax_update,
        "clip_values": clip_values,
        "scale_by_norm_limit": scale_by_norm_limit,
    }


def cpu_update_loop(step: Callable[..., None], k: KernelConstants) -> Callable[..., None]:
    """The CPU loop template applying the update rule ``step`` to every element."""

    def update_loop(param, grad, first, second, lr, h1, h2, h3):
        for i in prange(param.size):
            step(param, grad, first, second, i, lr, h1, h2, h3, k)

    return update_loop


def cpu_clip_loop(
    prepare: Callable[..., Any], step: Callable[..., None], k: KernelConstants
) -> Callable[..., None]:
    """The CPU loop template applying a clipping rule to every element."""

    def clip_loop(grad, limit, total_sq):
        value = prepare(limit, total_sq, k)
        for i in range(grad.size):
            step(grad, i, value, k)

    return clip_loop


def build_cpu(dtype: np.dtype) -> dict[str, Any]:
    cast = dtype.type
    k = kernel_constants(dtype)
    no_array = np.empty(0, dtype)
    updates = {
        (rule, parallel): compile_cpu(cpu_update_loop(step, k), f"{rule}_update", parallel)
        for rule, step in UPDATE_RULES.items()
        for parallel in (False, True)
    }
    clips = {
        rule: compile_cpu(cpu_clip_loop(prepare, step, k), rule)
        for rule, (prepare, step) in CLIP_RULES.items()
    }

    def update_launcher(rule: str, size: int) -> Any:
        return updates[rule, size >= PARALLEL_MIN_SIZE]

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
        launch(param, grad, first, second, cast(lr), cast(h1), cast(h2), cast(h3))

    def clip(rule: str, grad: Any, limit: float, total_sq: Any) -> None:
        clips[rule](grad, cast(limit), total_sq)

    squares = cpu_sum(dtype, square_term)

    def sum_of_squares(x: np.ndarray, out: np.ndarray) -> None:
        out[0] += squares(x, no_array, k.zero, k.zero)

    return {
        **public_operations(update, clip, lambda: no_array, k),
        "update_launcher": update_launcher,
        "no_state": lambda: no_array,
        "sum_of_squares": sum_of_squares,
    }


def cuda_update_kernel(registry: CudaKernelRegistry, rule: str, k: KernelConstants) -> Any:
    """The CUDA kernel applying update rule ``rule``, one thread per element."""
    step = registry.device(UPDATE_RULES[rule])
    vector = registry.array(1)
    scalar = registry.scalar

    def update_kernel(param, grad, first, second, lr, h1, h2, h3):
        i = cuda.grid(1)
        if i < param.size:
            step(param, grad, first, second, i, lr, h1, h2, h3, k)

    update_kernel.__name__ = f"{rule}_update_kernel"
    return registry.jit(vector, vector, vector, vector, scalar, scalar, scalar, scalar)(
        update_kernel
    )


def cuda_clip_kernel(registry: CudaKernelRegistry, rule: str, k: KernelConstants) -> Any:
    """The CUDA kernel applying clipping rule ``rule``, one thread per element."""
    prepare, step = (registry.device(f) for f in CLIP_RULES[rule])
    vector = registry.array(1)

    def clip_kernel(grad, limit, total_sq):
        i = cuda.grid(1)
        if i < grad.size:
            step(grad, i, prepare(limit, total_sq, k), k)

    clip_kernel.__name__ = f"{rule}_kernel"
    return registry.jit(vector, registry.scalar, vector)(clip_kernel)


def build_cuda(dtype: np.dtype, cuda_api: Any) -> dict[str, Any]:
    registry = new_registry(globals(), cuda_api, dtype)
    cast = dtype.type
    k = kernel_constants(dtype)
    no_array = empty_vector(cuda_api, dtype)
    updates = {rule: cuda_update_kernel(registry, rule, k) for rule in UPDATE_RULES}
    clips = {rule: cuda_clip_kernel(registry, rule, k) for rule in CLIP_RULES}

    def update_launcher(rule: str, size: int) -> Any:
        return updates[rule][blocks_for(size), THREADS_PER_BLOCK]

    def update(rule: str, param: Any, grad: Any, first: Any, second: Any, *scalars: float) -> None:
        launch = update_launcher(rule, param.size)
        launch(param, grad, first, second, *(cast(s) for s in scalars))

    def clip(rule: str, grad: Any, limit: float, total_sq: Any) -> None:
        clips[rule][blocks_for(grad.size), THREADS_PER_BLOCK](grad, cast(limit), total_sq)

    squares = block_sum_launcher(cuda_api, dtype, square_term, True)

    def sum_of_squares(x: Any, out: Any) -> None:
        squares(x, no_array(), k.zero, k.zero, out)

    return {
        **public_operations(update, clip, no_array, k),
        "update_launcher": update_launcher,
        "no_state": no_array,
        "sum_of_squares": sum_of_squares,
    }
