"""Train an MLP on scikit-learn's handwritten digits (shipped with it, no download).

Reaches about 98% accuracy on a held-out 20% split in a few seconds on a CPU,
shows a progress bar per epoch, keeps the weights of the epoch with the best
validation loss (``digits_mlp_best.npz``) and saves the training and validation
curves next to this script as ``digits_mlp_curves.png``.

    python examples/digits_mlp.py                 # CPU
    python examples/digits_mlp.py --device cuda   # NVIDIA GPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import numlayers as nl
from numlayers.callbacks import EarlyStopping, ModelCheckpoint
from numlayers.layers import Dense, Dropout
from numlayers.models import Sequential
from numlayers.optimizers import Adam

REQUIRED_ACCURACY = 0.97


def load_data(seed: int) -> tuple[np.ndarray, ...]:
    digits = load_digits()
    X = (digits.data / 16.0).astype("float32")  # pixel intensities 0..16 to 0..1
    Y = np.eye(10, dtype="float32")[digits.target]  # one-hot targets
    return tuple(train_test_split(X, Y, test_size=0.2, random_state=seed, stratify=digits.target))


def build_model(device: str) -> Sequential:
    model = Sequential(device=device)
    model.add(Dense(256, input_shape=(64,), activation="relu"))
    model.add(Dropout(0.3))
    model.add(Dense(128, activation="relu"))
    model.add(Dropout(0.3))
    model.add(Dense(10, activation="softmax"))
    model.compile(
        optimizer=Adam(lr=1e-3),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def save_curves(history: nl.callbacks.History, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen needed
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.history["loss"]) + 1)
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        loss_axis.plot(epochs, history.history[key], label=label)
    for key, label in (("acc", "training"), ("val_acc", "validation")):
        accuracy_axis.plot(epochs, history.history[key], label=label)
    loss_axis.set(title="Loss (categorical crossentropy)", xlabel="epoch")
    accuracy_axis.set(title="Accuracy", xlabel="epoch")
    for axis in (loss_axis, accuracy_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def parse_arguments(argv: list[str] | None, description: str, epochs: int, name: str) -> Any:
    """The examples' command line; ``name`` names the weights and curves files."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
    parser.add_argument("--plot", default=str(Path(__file__).with_name(f"{name}_curves.png")))
    parser.add_argument("--weights", default=str(Path(__file__).with_name(f"{name}_best.npz")))
    return parser.parse_args(argv)


def train_and_report(
    model: Sequential,
    data: tuple[np.ndarray, ...],
    args: Any,
    patience: int,
    required_accuracy: float,
) -> int:
    """Fit ``model`` (progress bar, early stopping, the best epoch's weights kept), report
    its held-out accuracy, save the curves; 1 when the accuracy is below the required."""
    X_train, X_test, Y_train, Y_test = data
    model.summary()
    history = model.fit(
        X_train,
        Y_train,
        batch_size=args.batch_size,
        nb_epoch=args.epochs,
        validation_split=0.1,
        verbose=args.verbose,
        callbacks=[
            EarlyStopping(monitor="val_loss", patience=patience),
            ModelCheckpoint(args.weights, monitor="val_loss", save_best_only=True),
        ],
    )
    model.load_weights(args.weights)  # the epoch with the best validation loss
    loss, accuracy = model.evaluate(X_test, Y_test, batch_size=256)
    print(f"held-out test set ({len(X_test)} digits): loss {loss:.4f}, accuracy {accuracy:.2%}")
    save_curves(history, Path(args.plot))
    print(f"training curves saved to {args.plot}")
    if accuracy < required_accuracy:
        print(f"accuracy below the expected {required_accuracy:.0%}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv, __doc__.splitlines()[0], epochs=60, name="digits_mlp")
    nl.set_seed(args.seed)
    data = load_data(args.seed)
    return train_and_report(build_model(args.device), data, args, 10, REQUIRED_ACCURACY)


if __name__ == "__main__":
    sys.exit(main())
