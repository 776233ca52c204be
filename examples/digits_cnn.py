"""Train a small CNN on scikit-learn's 8 x 8 handwritten digits (shipped with it, no download).

Two 3 x 3 convolutions, 2 x 2 max pooling, dropout and two dense layers, on the
images as one-channel 8 x 8 arrays (channels first, Keras 0.3's ``"th"`` ordering).
Reaches about 99% accuracy on the same held-out 20% split as ``digits_mlp.py``,
with the same progress bar, best-epoch checkpoint (``digits_cnn_best.npz``) and
curves (``digits_cnn_curves.png``).

    python examples/digits_cnn.py                 # CPU
    python examples/digits_cnn.py --device cuda   # NVIDIA GPU
"""

from __future__ import annotations

import sys

from digits_mlp import load_data, parse_arguments, train_and_report

import numlayers as nl
from numlayers.layers import Convolution2D, Dense, Dropout, Flatten, MaxPooling2D
from numlayers.models import Sequential
from numlayers.optimizers import Adam

REQUIRED_ACCURACY = 0.98
IMAGE_SHAPE = (1, 8, 8)  # channels, rows, columns


def build_model(device: str) -> Sequential:
    model = Sequential(device=device)
    model.add(
        Convolution2D(32, 3, 3, border_mode="same", activation="relu", input_shape=IMAGE_SHAPE)
    )
    model.add(Convolution2D(32, 3, 3, activation="relu"))  # 8 x 8 -> 6 x 6
    model.add(MaxPooling2D(pool_size=(2, 2)))  # -> 3 x 3
    model.add(Dropout(0.25))
    model.add(Flatten())
    model.add(Dense(128, activation="relu"))
    model.add(Dropout(0.5))
    model.add(Dense(10, activation="softmax"))
    model.compile(optimizer=Adam(lr=1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv, __doc__.splitlines()[0], epochs=40, name="digits_cnn")
    nl.set_seed(args.seed)
    X_train, X_test, Y_train, Y_test = load_data(args.seed)
    images = (X_train.reshape(-1, *IMAGE_SHAPE), X_test.reshape(-1, *IMAGE_SHAPE))
    data = (images[0], images[1], Y_train, Y_test)
    return train_and_report(build_model(args.device), data, args, 8, REQUIRED_ACCURACY)


if __name__ == "__main__":
    sys.exit(main())
