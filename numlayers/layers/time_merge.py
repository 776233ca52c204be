"""TimeDistributedMerge: one value per sample from the values of its timesteps."""

from __future__ import annotations

from typing import Any

from numlayers.layers.base import Layer, Shape

MODES = ("sum", "ave", "mul")


class TimeDistributedMerge(Layer):
    """Merges the timesteps of each sample by their sum, mean or product (Keras 0.3).

    With an input mask (an Embedding with ``mask_zero``, a Masking layer before it)
    the masked steps are left out: not added, not counted in the mean, not multiplied
    (Keras 0.3 merged them as if they were data). A sample with every step masked gives
    0 for ``"sum"`` and ``"ave"`` and 1 for ``"mul"``.

    Args:
        mode: ``"sum"``, ``"ave"`` (the mean) or ``"mul"`` (the product).

    Input shape:
        ``(samples, steps, ...)``, rank 3 or more.

    Output shape:
        ``(samples, ...)``: the time axis merged away.

    Example:
        >>> layer = TimeDistributedMerge("ave", input_shape=(2, 3))
        >>> layer(np.array([[[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]])).tolist()
        [[2.0, 3.0, 4.0]]
    """

    def __init__(self, mode: str = "sum", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"{self.label}: mode must be one of {MODES}, received {mode!r}")
        self.mode = mode
        self._finish_init()

    def supports_masked_input(self) -> bool:
        return True

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 3:
            raise ValueError(
                f"{self.label} expects inputs of rank >= 3 (samples, steps, ...), "
                f"received shape {input_shape}"
            )
        return (input_shape[0], *input_shape[2:])

    def _step_mask(self, x: Any) -> Any:
        """The input mask, or ones when there is none (every step kept)."""
        mask = self.saved()["mask"]
        if mask is not None:
            if tuple(mask.shape) != tuple(x.shape[:2]) or mask.dtype != self.dtype:
                raise ValueError(
                    f"{self.label} expects a mask of shape {tuple(x.shape[:2])} and dtype "
                    f"{self.dtype}, received {tuple(mask.shape)} {mask.dtype}"
                )
            self._check_layout(mask, "mask")
            return mask
        return self.constant_buffer("ones", (x.shape[0], x.shape[1]), 1.0)

    def _forward(self, x: Any, train: bool) -> Any:
        mask = self._step_mask(x)
        out = self.buffer("y", (x.shape[0], *x.shape[2:]))
        if self.mode == "mul":
            self.kernels.time_product_forward(x, mask, out)
        else:
            self.kernels.time_sum_forward(x, mask, self.mode == "ave", out)
        self.save(x=x, step_mask=mask)
        return out

    def _backward(self, grad_output: Any) -> Any:
        saved = self.saved()
        x, mask = saved["x"], saved["step_mask"]
        grad_x = self.buffer("grad_x", tuple(x.shape))
        if self.mode == "mul":
            self.kernels.time_product_backward(x, mask, grad_output, grad_x)
        else:
            self.kernels.time_sum_backward(grad_output, mask, self.mode == "ave", grad_x)
        return grad_x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["mode"] = self.mode
        return config
