"""Keras 0.3 backend names (``K``) for Lambda functions.

Each function is written with NumPy operations, so it works on NumPy arrays and on the
traced arrays a :class:`~numlayers.layers.Lambda` records (see :mod:`numlayers.tracing`):
``Lambda(lambda x: K.l2_normalize(x, axis=-1))`` runs as kernels on the layer's device
and trains with no backward written. Semantics follow Keras 0.3 (``sqrt`` clips at 0,
``repeat`` adds an axis, ``batch_dot`` multiplies per sample).
``K.function`` is the exception: it maps input arrays to layer outputs, as Keras 0.3's
FAQ uses it to read an intermediate layer (:mod:`numlayers.layer_functions`).

Example:
    >>> from numlayers import backend as K
    >>> K.sum(np.ones((2, 3)), axis=-1).tolist()
    [3.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from numlayers.layer_functions import function

#: what ``K._BACKEND`` tells a script that asks which backend runs it
_BACKEND = "numlayers"
_EPSILON = 1e-7
_FLOATX = "float32"


def epsilon() -> float:
    """The fuzz factor of numeric expressions (Keras 0.3's ``K.epsilon()``)."""
    return _EPSILON


def set_epsilon(value: float) -> None:
    """Set :func:`epsilon` (the crossentropies' clipping here)."""
    global _EPSILON
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 0.5:
        raise ValueError(f"set_epsilon expects a number in (0, 0.5), received {value!r}")
    _EPSILON = float(value)


def floatx() -> str:
    """The dtype models and layers get when none is given (``"float32"`` by default)."""
    return _FLOATX


def set_floatx(name: str) -> None:
    """Set :func:`floatx`: models and layers made afterwards without a dtype use it.

    Example:
        >>> set_floatx("float64"); Sequential([Dense(2, input_shape=(3,))]).dtype
        dtype('float64')
        >>> set_floatx("float32")
    """
    global _FLOATX
    if name not in ("float32", "float64"):
        raise ValueError(
            f"set_floatx: numlayers computes in 'float32' or 'float64', received {name!r}"
        )
    _FLOATX = name


def cast_to_floatx(x: Any) -> np.ndarray:
    """``x`` as a NumPy array of :func:`floatx`."""
    return np.asarray(x, dtype=_FLOATX)


# ------------------------------------------------------------ values as NumPy arrays
def variable(value: Any, dtype: Any = None, name: str | None = None) -> np.ndarray:
    """A NumPy array holding ``value`` (of :func:`floatx` unless ``dtype``): Keras 0.3's
    variables are plain arrays here, which :func:`set_value` changes in place."""
    return np.array(value, dtype=dtype or _FLOATX)


def eval(x: Any) -> np.ndarray:  # noqa: A001 - Keras' name
    """The value of ``x`` as a NumPy array (values here are already computed)."""
    return np.asarray(x)


def zeros(shape: Any, dtype: Any = None, name: str | None = None) -> np.ndarray:
    return np.zeros(shape, dtype=dtype or _FLOATX)


def ones(shape: Any, dtype: Any = None, name: str | None = None) -> np.ndarray:
    return np.ones(shape, dtype=dtype or _FLOATX)


def count_params(x: Any) -> int:
    """The number of values in ``x``."""
    return int(np.size(x))


def random_normal(shape: Any, mean: float = 0.0, std: float = 1.0, seed: Any = None) -> Any:
    """Normal draws of :func:`floatx` from numlayers' generator (``seed`` as
    :func:`numlayers.random.get_generator` takes it)."""
    from numlayers.random import get_generator

    return get_generator(seed).normal(mean, std, shape).astype(_FLOATX)


def random_uniform(shape: Any, low: float = 0.0, high: float = 1.0, seed: Any = None) -> Any:
    """Uniform draws in ``[low, high)`` of :func:`floatx`, as :func:`random_normal`."""
    from numlayers.random import get_generator

    return get_generator(seed).uniform(low, high, shape).astype(_FLOATX)


def get_value(x: Any) -> Any:
    """The value of ``x`` (an optimizer's ``lr``, an array): a number for a 0-d array, a
    NumPy copy otherwise (Keras 0.3 read its variables so).

    Example:
        >>> from numlayers.optimizers import SGD
        >>> optimizer = SGD(lr=0.1); set_value(optimizer.lr, 0.05); get_value(optimizer.lr)
        0.05
    """
    array = np.array(x)
    return array.item() if array.ndim == 0 else array


def set_value(x: Any, value: Any) -> None:
    """Write ``value`` into the array ``x`` in place (an optimizer's ``lr``, which its next
    step reads)."""
    if not isinstance(x, np.ndarray) or not x.flags.writeable:
        raise TypeError(
            f"set_value writes into an array in place (an optimizer's lr, say), "
            f"received {type(x).__name__}"
        )
    x[...] = value


# ------------------------------------------------------------------ reductions
def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A001 - Keras' name
    return np.sum(x, axis=axis, keepdims=keepdims)


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return np.mean(x, axis=axis, keepdims=keepdims)


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A001
    return np.max(x, axis=axis, keepdims=keepdims)


def min(x: Any, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A001
    return np.min(x, axis=axis, keepdims=keepdims)


def prod(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return np.prod(x, axis=axis, keepdims=keepdims)


def std(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return np.std(x, axis=axis, keepdims=keepdims)


# ----------------------------------------------------------------- elementwise
def square(x: Any) -> Any:
    return x * x


def sqrt(x: Any) -> Any:
    """The square root of ``x`` clipped at 0 (Keras 0.3)."""
    return np.sqrt(np.maximum(x, 0.0))


def abs(x: Any) -> Any:  # noqa: A001
    return np.abs(x)


def exp(x: Any) -> Any:
    return np.exp(x)


def log(x: Any) -> Any:
    return np.log(x)


def pow(x: Any, a: Any) -> Any:  # noqa: A001
    return x**a


def clip(x: Any, min_value: float, max_value: float) -> Any:
    """``x`` clipped to ``[min_value, max_value]`` (a max below the min is the min)."""
    if max_value < min_value:
        max_value = min_value
    return np.clip(x, min_value, max_value)


def maximum(x: Any, y: Any) -> Any:
    return np.maximum(x, y)


def minimum(x: Any, y: Any) -> Any:
    return np.minimum(x, y)


# -------------------------------------------------------------------- products
def dot(x: Any, y: Any) -> Any:
    return np.dot(x, y)


def batch_dot(x: Any, y: Any, axes: Any = None) -> Any:
    """Per-sample products of ``x`` and ``y`` (batch axis first).

    For rank-2 inputs, the per-sample dot products ``(batch, 1)``; for rank 3,
    ``x[b] @ y[b]``, with ``axes`` ``[[ax], [ay]]`` naming the contracted axes (the last
    of ``x`` and the middle of ``y`` by default).
    """
    if np.ndim(x) == 2 and np.ndim(y) == 2:
        return np.sum(x * y, axis=1, keepdims=True)
    if np.ndim(x) != 3 or np.ndim(y) != 3:
        raise ValueError(
            f"batch_dot takes rank 2 or 3 inputs, received ranks {np.ndim(x)}, {np.ndim(y)}"
        )
    if axes is not None:
        axis_x, axis_y = int(axes[0][0]) % 3, int(axes[1][0]) % 3
        if axis_x == 1:
            x = np.transpose(x, (0, 2, 1))
        if axis_y == 2:
            y = np.transpose(y, (0, 2, 1))
    return np.matmul(x, y)


# -------------------------------------------------------------------- shapes
def concatenate(tensors: Sequence[Any], axis: int = -1) -> Any:
    return np.concatenate(list(tensors), axis=axis)


def reshape(x: Any, shape: Any) -> Any:
    return np.reshape(x, shape)


def permute_dimensions(x: Any, pattern: Sequence[int]) -> Any:
    return np.transpose(x, tuple(pattern))


def repeat(x: Any, n: int) -> Any:
    """``(samples, dim)`` to ``(samples, n, dim)`` (Keras 0.3's ``K.repeat``)."""
    return np.repeat(np.expand_dims(x, 1), n, axis=1)


def expand_dims(x: Any, dim: int = -1) -> Any:
    return np.expand_dims(x, dim)


def squeeze(x: Any, axis: int) -> Any:
    return np.squeeze(x, axis)


# ------------------------------------------------------------------ activations
def softmax(x: Any) -> Any:
    """Softmax over the last axis (shifted by the maximum: exact for large inputs)."""
    shifted = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return shifted / np.sum(shifted, axis=-1, keepdims=True)


def relu(x: Any, alpha: float = 0.0, max_value: float | None = None) -> Any:
    """``max(x, 0)``, with slope ``alpha`` below 0 and capped at ``max_value`` (Keras 0.3)."""
    result = np.maximum(x, 0.0)
    if alpha:
        result = result + alpha * np.minimum(x, 0.0)
    if max_value is not None:
        result = np.minimum(result, max_value)
    return result


def sigmoid(x: Any) -> Any:
    """``1 / (1 + exp(-x))``, computed without overflow for large ``|x|``."""
    decay = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + decay), decay / (1.0 + decay))


def hard_sigmoid(x: Any) -> Any:
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


def tanh(x: Any) -> Any:
    return np.tanh(x)


def l2_normalize(x: Any, axis: int) -> Any:
    """``x`` divided by its L2 norm along ``axis`` (a norm below 1e-6 counts as 1e-6)."""
    squares = np.sum(x * x, axis=axis, keepdims=True)
    return x / np.sqrt(np.maximum(squares, 1e-12))


def softplus(x: Any) -> Any:
    """``log(1 + exp(x))``, computed without overflow for large ``|x|``."""
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


# ------------------------------------------------------------------ objectives
def categorical_crossentropy(output: Any, target: Any, from_logits: bool = False) -> Any:
    """Cross-entropy of each row of class probabilities ``output`` (rescaled to sum to 1,
    or a softmax of logits with ``from_logits``), clipped to ``[eps, 1 - eps]``, against
    ``target`` rows (Keras 0.3's argument order: output first).

    Example:
        >>> categorical_crossentropy(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])).round(4)
        array([0.6931])
    """
    rows = softmax(output) if from_logits else output / np.sum(output, axis=-1, keepdims=True)
    output = np.clip(rows, _EPSILON, 1.0 - _EPSILON)
    return -np.sum(target * np.log(output), axis=-1)


def binary_crossentropy(output: Any, target: Any, from_logits: bool = False) -> Any:
    """Elementwise cross-entropy of probabilities ``output`` (a sigmoid of logits with
    ``from_logits``), clipped to ``[eps, 1 - eps]``, against ``target`` (output first,
    as Keras 0.3).

    Example:
        >>> binary_crossentropy(np.array([0.5]), np.array([1.0])).round(4)
        array([0.6931])
    """
    if from_logits:
        output = sigmoid(output)
    output = np.clip(output, _EPSILON, 1.0 - _EPSILON)
    return -(target * np.log(output) + (1.0 - target) * np.log(1.0 - output))


# ------------------------------------------------------- shapes, tests, selection
def shape(x: Any) -> Any:
    """The shape of ``x`` (in a traced function, the batch size is symbolic: it may be
    handed to ``reshape`` but not computed with)."""
    return x.shape


def ndim(x: Any) -> int:
    return int(np.ndim(x))


def cast(x: Any, dtype: Any) -> Any:
    """``x`` as ``dtype`` (in a traced function comparisons are already numbers, and a
    float dtype changes nothing)."""
    return x.astype(dtype)


def zeros_like(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return np.zeros_like(x)
    return np.where(x == x, 0.0, 0.0)  # traced: zeros of x's shape, NaN or not


def ones_like(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return np.ones_like(x)
    return np.where(x == x, 1.0, 1.0)


def equal(x: Any, y: Any) -> Any:
    return x == y


def not_equal(x: Any, y: Any) -> Any:
    return x != y


def sign(x: Any) -> Any:
    return np.sign(x)


def round(x: Any) -> Any:  # noqa: A001 - Keras' name
    """``x`` rounded half away from zero (Theano's rounding in Keras 0.3)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def switch(condition: Any, then_expression: Any, else_expression: Any) -> Any:
    """``then_expression`` where ``condition`` holds, else ``else_expression``."""
    return np.where(condition, then_expression, else_expression)


def transpose(x: Any) -> Any:
    """``x`` with its axes reversed."""
    return np.transpose(x)


def gather(reference: Any, indices: Any) -> Any:
    """The rows ``indices`` of ``reference`` (``reference[indices]``)."""
    return reference[indices]


def repeat_elements(x: Any, rep: int, axis: int) -> Any:
    """Each element of ``x`` repeated ``rep`` times along ``axis`` (``np.repeat``)."""
    return np.repeat(x, rep, axis=axis)


def tile(x: Any, n: Any) -> Any:
    return np.tile(x, n)


def flatten(x: Any) -> Any:
    """``x`` as one vector (its batch axis included, so not inside a traced function)."""
    return np.reshape(x, (-1,))


def batch_flatten(x: Any) -> Any:
    """``x`` as ``(batch, everything else)``.

    Example:
        >>> batch_flatten(np.zeros((2, 3, 4))).shape
        (2, 12)
    """
    return np.reshape(x, (x.shape[0], -1))


def argmax(x: Any, axis: int = -1) -> Any:
    """The index of the largest value along ``axis`` (NumPy arrays only: an index has no
    gradient, so a traced function cannot use it)."""
    return np.argmax(x, axis=axis)


def argmin(x: Any, axis: int = -1) -> Any:
    """The index of the smallest value along ``axis`` (NumPy arrays only, as argmax)."""
    return np.argmin(x, axis=axis)


def any(x: Any, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A001
    """Whether any value along ``axis`` is nonzero (NumPy arrays only, as argmax)."""
    return np.any(x, axis=axis, keepdims=keepdims)


__all__ = [
    "abs",
    "function",
    "cast_to_floatx",
    "count_params",
    "eval",
    "get_value",
    "ones",
    "random_normal",
    "random_uniform",
    "variable",
    "zeros",
    "set_epsilon",
    "set_value",
    "set_floatx",
    "any",
    "argmax",
    "argmin",
    "batch_dot",
    "batch_flatten",
    "binary_crossentropy",
    "cast",
    "categorical_crossentropy",
    "clip",
    "concatenate",
    "dot",
    "epsilon",
    "equal",
    "exp",
    "expand_dims",
    "flatten",
    "floatx",
    "gather",
    "hard_sigmoid",
    "l2_normalize",
    "log",
    "max",
    "maximum",
    "mean",
    "min",
    "minimum",
    "ndim",
    "not_equal",
    "ones_like",
    "permute_dimensions",
    "pow",
    "prod",
    "relu",
    "repeat",
    "repeat_elements",
    "reshape",
    "round",
    "shape",
    "sigmoid",
    "sign",
    "softmax",
    "softplus",
    "sqrt",
    "square",
    "squeeze",
    "std",
    "sum",
    "switch",
    "tanh",
    "tile",
    "transpose",
    "zeros_like",
]
