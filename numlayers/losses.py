"""Loss functions (Keras 0.3 names), each a forward and a gradient kernel on every device.

A loss works on 2-D ``(rows, columns)`` views: sequence outputs ``(batch, time,
features)`` are seen as ``batch * time`` rows. Per row it computes Keras 0.3's
value (the mean over the last axis, or the sum for the crossentropies and
cosine proximity); a model weights the rows (sample weights, masks) and sums.

Losses are callables too: ``losses.mse(y_true, y_pred)`` returns the values per
sample (and per timestep for sequences) as NumPy, computed by the same CPU kernels the models use.

Softmax followed by ``categorical_crossentropy`` (or its sparse form) is fused:
models compute the loss from the logits with a log-sum-exp and its gradient as
``softmax - target``, stable for logits of +-1000.

A function ``f(y_true, y_pred)`` written with NumPy operations (or ``numlayers.backend``
names, as Keras 0.3's custom objectives were) is a loss too: :class:`FunctionLoss` traces
it, so it runs as kernels on the model's device and its gradient needs no code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from numlayers.devices import get_device


class Loss:
    """A named loss and its kernel operations ``NAME_forward`` / ``NAME_forward_backward``.

    Args:
        name: the kernel name (and the Keras 0.3 function name).
        sparse: targets are integer class labels of shape ``(rows,)``, not one-hot rows.
        fused_name: the kernel name of the fused softmax form, if there is one.
    """

    def __init__(self, name: str, sparse: bool = False, fused_name: str | None = None) -> None:
        self.name = name
        self.__name__ = name
        self.sparse = sparse
        self.fused_name = fused_name

    def __repr__(self) -> str:
        return f"<Loss {self.name}>"

    def forward(
        self, kernels: Any, y_true: Any, y_pred: Any, loss_rows: Any, fused: bool = False
    ) -> None:
        """The loss of each row into ``loss_rows``; with ``fused``, of the fused softmax
        form, ``y_pred`` being the logits."""
        self._operation(kernels, "forward", fused)(y_true, y_pred, loss_rows)

    def forward_backward(
        self,
        kernels: Any,
        y_true: Any,
        y_pred: Any,
        row_scale: Any,
        loss_rows: Any,
        grad: Any,
        fused: bool = False,
    ) -> None:
        """The loss rows and ``grad = row_scale * d loss_rows / d y_pred`` in one operation
        (a training step's); ``fused`` as for :meth:`forward`."""
        self._operation(kernels, "forward_backward", fused)(
            y_true, y_pred, row_scale, loss_rows, grad
        )

    def _operation(self, kernels: Any, suffix: str, fused: bool) -> Any:
        return getattr(kernels, f"{self.fused_name if fused else self.name}_{suffix}")

    def target_shape(self, output_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape targets must have for outputs of ``output_shape``."""
        return output_shape[:-1] if self.sparse else output_shape

    def standardized_targets(
        self, y: np.ndarray, output_shape: tuple[int | None, ...]
    ) -> np.ndarray:
        """``y`` as a column where it is one value a sample and the outputs are one column
        (a ``Dense(1)`` output trained on labels of shape ``(samples,)``, as Keras 0.3
        accepts them); otherwise ``y`` as it is."""
        if not self.sparse and y.ndim == 1 and len(output_shape) == 2 and output_shape[1] == 1:
            return y[:, np.newaxis]
        return y

    def check_targets(
        self, y: np.ndarray, output_shape: tuple[int | None, ...], owner: str
    ) -> None:
        """Raise a clear error when ``y`` cannot be the target of ``output_shape`` outputs."""
        expected = output_shape[:-1] if self.sparse else output_shape
        if len(y.shape) != len(expected) or any(
            e is not None and e != s for e, s in zip(expected[1:], y.shape[1:], strict=False)
        ):
            kind = "integer labels" if self.sparse else "targets"
            raise ValueError(
                f"{owner}: loss {self.name} expects {kind} of shape {expected}, "
                f"received y of shape {y.shape}"
            )
        if self.sparse:
            if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
                raise TypeError(f"{owner}: {self.name} expects integer labels, received {y.dtype}")
            classes = output_shape[-1]
            if y.size and (y.min() < 0 or (classes is not None and y.max() >= classes)):
                raise ValueError(
                    f"{owner}: {self.name} labels must be in [0, {classes}), "
                    f"received values from {y.min()} to {y.max()}"
                )

    def __call__(self, y_true: Any, y_pred: Any) -> np.ndarray:
        """Loss values of NumPy arrays (float64, on the CPU) for every index but the last
        axis: one per sample, and one per sample and timestep for sequences, as Keras 0.3's
        functions return before a model weights and averages them."""
        y_pred = np.ascontiguousarray(y_pred, dtype=np.float64)
        columns = y_pred.shape[-1]
        pred_rows = y_pred.reshape(-1, columns)
        true_rows: np.ndarray = (
            np.ascontiguousarray(y_true, dtype=np.int64).reshape(-1)
            if self.sparse
            else np.ascontiguousarray(y_true, dtype=np.float64).reshape(-1, columns)
        )
        loss_rows = np.empty(len(pred_rows))
        self.forward(get_device("cpu").kernels(np.float64), true_rows, pred_rows, loss_rows)
        return loss_rows.reshape(y_pred.shape[:-1])


mean_squared_error = Loss("mean_squared_error")
mean_absolute_error = Loss("mean_absolute_error")
mean_absolute_percentage_error = Loss("mean_absolute_percentage_error")
mean_squared_logarithmic_error = Loss("mean_squared_logarithmic_error")
squared_hinge = Loss("squared_hinge")
hinge = Loss("hinge")
binary_crossentropy = Loss("binary_crossentropy")
categorical_crossentropy = Loss("categorical_crossentropy", fused_name="softmax_crossentropy")
sparse_categorical_crossentropy = Loss(
    "sparse_categorical_crossentropy", sparse=True, fused_name="sparse_softmax_crossentropy"
)
poisson = Loss("poisson")
cosine_proximity = Loss("cosine_proximity")

mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error

LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        mean_squared_error,
        mean_absolute_error,
        mean_absolute_percentage_error,
        mean_squared_logarithmic_error,
        squared_hinge,
        hinge,
        binary_crossentropy,
        categorical_crossentropy,
        sparse_categorical_crossentropy,
        poisson,
        cosine_proximity,
    )
}
ALIASES = {
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
}


class FunctionLoss(Loss):
    """A loss given as a function ``f(y_true, y_pred)`` of whole arrays (batch axis first),
    as Keras 0.3 took custom objectives.

    The function is traced (see :mod:`numlayers.tracing`): written with NumPy operations
    or ``numlayers.backend`` names, it runs as kernels on the model's device, and its
    gradient comes from the trace. It may return one value per element (averaged over the
    last axis, like the built-in losses), one per sample (and per timestep for
    sequences), or one scalar for the batch (a model then weights that scalar as a
    whole). A function that cannot be traced is refused at its first batch, saying why.

    Example:
        >>> def half_squared(y_true, y_pred):
        ...     return 0.5 * np.square(y_pred - y_true)
        >>> model = Sequential([Dense(1, input_shape=(3,))])
        >>> model.compile("sgd", loss=half_squared)
        >>> float(model.train_on_batch(np.ones((4, 3)), np.zeros((4, 1)))) >= 0
        True
    """

    def __init__(self, function: Callable[[Any, Any], Any]) -> None:
        from numlayers.tracing.layer import TracedCall

        name = getattr(function, "__name__", type(function).__name__)
        super().__init__(name)
        self.function = function
        self.traced_call = TracedCall(
            self._rows, f"loss function {name}", as_list=True, host_fallback=False
        )

    def __repr__(self) -> str:
        return f"<FunctionLoss {self.name}>"

    def _rows(self, arrays: list[Any]) -> Any:
        """The function's value reduced to one value a row (a sample, or a sample's
        timestep), the batch axis first."""
        import numpy as np

        y_true, y_pred = arrays
        value = self.function(y_true, y_pred)
        rows = y_pred.shape[:-1]
        if value.ndim == y_pred.ndim:  # a value per element
            value = value.mean(axis=-1)
        if value.ndim == 0:  # a value for the batch: each row carries it
            value = np.broadcast_to(value, rows)
        return value

    def _executable(self, device: Any, y_pred: Any) -> Any:
        shape = (None, *y_pred.shape[1:])
        executable = self.traced_call.executable([shape, shape], y_pred.dtype, device)
        if executable is None:
            raise ValueError(
                f"loss function {self.name} cannot be traced ({self.traced_call.failure}); "
                "write it with NumPy operations or numlayers.backend names"
            )
        returned = executable.program.nodes[executable.program.outputs[0]].shape
        if tuple(returned) != shape[:-1]:
            raise ValueError(
                f"loss function {self.name} returned values of shape {returned} for outputs of "
                f"shape {shape}: return a scalar, one value a sample {shape[:-1]}, or one "
                "value an element"
            )
        return executable

    def compute(
        self,
        device: Any,
        y_true: Any,
        y_pred: Any,
        loss_rows: Any,
        buffer: Any,
        row_scale: Any = None,
        grad: Any = None,
    ) -> None:
        """The loss of each row into ``loss_rows`` (a vector of ``y_pred``'s rows) from
        whole arrays; given ``row_scale``, also ``grad = row_scale * d loss_rows / d y_pred``.
        ``buffer(slot, shape)`` gives the trace's working arrays."""
        kernels = device.kernels(y_pred.dtype)
        executable = self._executable(device, y_pred)
        rows_shape = tuple(y_pred.shape[:-1])
        values_of_rows, values = executable.forward([y_true, y_pred], buffer)
        kernels.copy(values_of_rows, loss_rows.reshape(rows_shape))
        if row_scale is not None:
            grads = executable.backward(values, row_scale.reshape(rows_shape), buffer)
            kernels.copy(grads[1], grad)

    def forward(
        self, kernels: Any, y_true: Any, y_pred: Any, loss_rows: Any, fused: bool = False
    ) -> None:
        raise TypeError(f"{self!r} takes whole arrays: use compute")

    forward_backward = forward  # type: ignore[assignment]

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        return self.function(y_true, y_pred)


def get(identifier: Any) -> Loss:
    """The loss named ``identifier`` (or ``identifier`` itself if it is a :class:`Loss`);
    a function ``f(y_true, y_pred)`` becomes a :class:`FunctionLoss`."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        name = ALIASES.get(identifier.lower(), identifier.lower())
        if name in LOSSES:
            return LOSSES[name]
    elif callable(identifier):
        return FunctionLoss(identifier)
    raise ValueError(
        f"unknown loss {identifier!r}; choose one of {sorted(LOSSES) + sorted(ALIASES)}, "
        "pass a numlayers.losses.Loss, or a function f(y_true, y_pred)"
    )
