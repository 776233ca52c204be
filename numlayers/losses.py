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
"""

from __future__ import annotations

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


def get(identifier: Any) -> Loss:
    """The loss named ``identifier`` (or ``identifier`` itself if it is a :class:`Loss`)."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        name = ALIASES.get(identifier.lower(), identifier.lower())
        if name in LOSSES:
            return LOSSES[name]
    raise ValueError(
        f"unknown loss {identifier!r}; choose one of {sorted(LOSSES) + sorted(ALIASES)} "
        "or pass a numlayers.losses.Loss"
    )
