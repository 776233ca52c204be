"""Training: one ``train_on_batch`` of an MLP, and one epoch of the digits example.

- ``MLPTrainStep``: Dense -> relu -> Dense -> relu -> Dense -> softmax with
  categorical crossentropy and SGD, one update per call (forward, fused
  softmax-crossentropy, backward, update, the loss copied to the host):
  ``small`` is 64 -> 128 -> 128 -> 10 at batch 32 (per-call overheads dominate),
  ``large`` is 784 -> 1024 -> 1024 -> 10 at batch 256 (the GEMMs dominate).
- ``CNNTrainStep``: one Adam ``train_on_batch`` of the CNN of
  ``examples/digits_cnn.py`` (two 3 x 3 convolutions, 2 x 2 max pooling, dropout,
  two dense layers) on 8 x 8 one-channel images, batch 64.
- ``DigitsEpoch``: one ``fit`` epoch (batch 32, shuffled, silent) of the model of
  ``examples/digits_mlp.py`` on scikit-learn's digits (skipped without sklearn).
- ``GeneratorEpoch``: the same model's epoch through ``fit_generator`` (one worker
  thread) on random data of the digits' size.

float32 only: what a training run uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from numlayers.devices import Device
from numlayers.layers import Convolution2D, Dense, Dropout, Flatten, MaxPooling2D
from numlayers.models import Sequential
from numlayers.optimizers import SGD, Adam

from . import common

#: (input, hidden, hidden, classes, batch) of each MLP size, full and tiny
MLP_SIZES = {
    "small": ((64, 128, 128, 10, 32), (6, 5, 5, 3, 4)),
    "large": ((784, 1024, 1024, 10, 256), (7, 6, 6, 3, 4)),
}


def mlp(sizes: tuple[int, ...], device: Any = "cpu", lr: float = 0.01) -> Sequential:
    """The benchmarked MLP: ``sizes`` = (input, hidden..., classes), compiled with SGD."""
    *widths, classes = sizes[1:]
    model = Sequential(device=device, dtype="float32")
    model.add(Dense(widths[0], input_shape=(sizes[0],), activation="relu", seed=0))
    for index, width in enumerate(widths[1:], start=1):
        model.add(Dense(width, activation="relu", seed=index))
    model.add(Dense(classes, activation="softmax", seed=len(widths)))
    model.compile(SGD(lr=lr), "categorical_crossentropy")
    return model


def classification_batch(batch: int, features: int, classes: int, seed: int = 0) -> Any:
    """Random float32 inputs and one-hot targets."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, features)).astype(np.float32)
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]
    return x, y


class MLPTrainStep:
    """One SGD ``train_on_batch`` of a small or a large MLP."""

    params = [list(MLP_SIZES), common.DEVICES]
    param_names = ["size", "device"]
    timeout = 180

    def setup(self, size: str, device: str) -> None:
        dev = common.bench_device(device)
        state = common.prepared(("mlp_train", size, device), lambda: self._prepare(size, dev))
        self.device = dev
        self.model = state["model"]
        self.x = state["x"]
        self.y = state["y"]

    def _prepare(self, size: str, device: Device) -> dict[str, Any]:
        full, tiny = MLP_SIZES[size]
        *widths, batch = common.pick(full, tiny)
        model = mlp(tuple(widths), device)
        x, y = classification_batch(batch, widths[0], widths[-1])
        for _ in range(common.WARMUP_CALLS):
            model.train_on_batch(x, y)
        device.synchronize()
        return {"model": model, "x": x, "y": y}

    def time_train_on_batch(self, size: str, device: str) -> None:
        self.model.train_on_batch(self.x, self.y)
        self.device.synchronize()


def small_cnn(device: Any = "cpu", filters: int = 32, hidden: int = 128) -> Sequential:
    """The CNN of ``examples/digits_cnn.py`` (``build_model``), seeded: keep the two alike."""
    model = Sequential(device=device, dtype="float32")
    model.add(
        Convolution2D(
            filters, 3, 3, border_mode="same", activation="relu", input_shape=(1, 8, 8), seed=0
        )
    )
    model.add(Convolution2D(filters, 3, 3, activation="relu", seed=1))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.25, seed=2))
    model.add(Flatten())
    model.add(Dense(hidden, activation="relu", seed=3))
    model.add(Dropout(0.5, seed=4))
    model.add(Dense(10, activation="softmax", seed=5))
    model.compile(optimizer=Adam(lr=1e-3), loss="categorical_crossentropy")
    return model


class CNNTrainStep:
    """One Adam ``train_on_batch`` of the digits CNN at batch 64 (tiny: 3 filters, batch 2)."""

    params = [common.DEVICES]
    param_names = ["device"]
    layer_classes = (Convolution2D, MaxPooling2D)
    timeout = 180

    def setup(self, device: str) -> None:
        dev = common.bench_device(device)
        state = common.prepared(("cnn_train", device), lambda: self._prepare(dev))
        self.device = dev
        self.model = state["model"]
        self.x = state["x"]
        self.y = state["y"]

    def _prepare(self, device: Device) -> dict[str, Any]:
        model = small_cnn(device, *common.pick((32, 128), (3, 4)))
        batch = common.pick(64, 2)
        x, y = classification_batch(batch, 64, 10)
        x = x.reshape(batch, 1, 8, 8)
        for _ in range(common.WARMUP_CALLS):
            model.train_on_batch(x, y)
        device.synchronize()
        return {"model": model, "x": x, "y": y}

    def time_train_on_batch(self, device: str) -> None:
        self.model.train_on_batch(self.x, self.y)
        self.device.synchronize()


def digits_model(device: Any, hidden: tuple[int, int] = (256, 128)) -> Sequential:
    """The model of ``examples/digits_mlp.py`` (``build_model``): keep the two alike."""
    model = Sequential(device=device)
    model.add(Dense(hidden[0], input_shape=(64,), activation="relu", seed=0))
    model.add(Dropout(0.3, seed=1))
    model.add(Dense(hidden[1], activation="relu", seed=2))
    model.add(Dropout(0.3, seed=3))
    model.add(Dense(10, activation="softmax", seed=4))
    model.compile(optimizer=Adam(lr=1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


class DigitsEpoch:
    """One epoch of ``fit`` (batch 32) on the 1,437 training digits of the example's split.

    Tiny runs take 16 digits, one batch, and narrow hidden layers (the CUDA simulator is slow).
    """

    params = [common.DEVICES]
    param_names = ["device"]
    timeout = 300

    def setup(self, device: str) -> None:
        dev = common.bench_device(device)
        state = common.prepared(("digits_epoch", device), lambda: self._prepare(dev))
        self.device = dev
        self.model = state["model"]
        self.x = state["x"]
        self.y = state["y"]
        self.batch = state["batch"]

    def _prepare(self, device: Device) -> dict[str, Any]:
        try:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split
        except ImportError as error:
            raise NotImplementedError("scikit-learn is not installed") from error
        digits = load_digits()
        x = (digits.data / 16.0).astype("float32")
        y = np.eye(10, dtype="float32")[digits.target]
        # the example's split (test_size 0.2, stratified, seed 0): 1,437 training digits
        x, _, y, _ = train_test_split(x, y, test_size=0.2, random_state=0, stratify=digits.target)
        count = common.pick(len(x), 16)
        model = digits_model(device, common.pick((256, 128), (5, 4)))
        batch = common.pick(32, 16)
        if common.WARMUP_CALLS:  # one epoch compiles (or loads) everything fit runs
            model.fit(x[:count], y[:count], batch_size=batch, nb_epoch=1, verbose=0, seed=0)
        device.synchronize()
        return {"model": model, "x": x[:count], "y": y[:count], "batch": batch}

    def time_fit_one_epoch(self, device: str) -> None:
        self.model.fit(self.x, self.y, batch_size=self.batch, nb_epoch=1, verbose=0, seed=0)
        self.device.synchronize()


def looping_batches(x: np.ndarray, y: np.ndarray, batch: int) -> Any:
    """Keras 0.3's generator contract: the batches of ``(x, y)`` in order, forever."""
    while True:
        for start in range(0, len(x), batch):
            yield x[start : start + batch], y[start : start + batch]


class GeneratorEpoch:
    """One ``fit_generator`` epoch (one worker, batch 32) of the digits model on 1,437
    random samples of the digits' size: ``DigitsEpoch``'s work, fed by a generator.

    Tiny runs take 16 samples, one batch, and narrow hidden layers.
    """

    params = [common.DEVICES]
    param_names = ["device"]
    timeout = 300

    def setup(self, device: str) -> None:
        dev = common.bench_device(device)
        state = common.prepared(("generator_epoch", device), lambda: self._prepare(dev))
        self.device = dev
        self.model = state["model"]
        self.batches = state["batches"]
        self.count = state["count"]

    def _prepare(self, device: Device) -> dict[str, Any]:
        count, batch = common.pick((1437, 32), (16, 16))
        rng = np.random.default_rng(0)
        x = rng.random((count, 64), dtype=np.float32)
        y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, count)]
        model = digits_model(device, common.pick((256, 128), (5, 4)))
        batches = looping_batches(x, y, batch)
        if common.WARMUP_CALLS:
            model.fit_generator(batches, count, 1, verbose=0)
        device.synchronize()
        return {"model": model, "batches": batches, "count": count}

    def time_fit_generator_one_epoch(self, device: str) -> None:
        self.model.fit_generator(self.batches, self.count, 1, verbose=0)
        self.device.synchronize()
