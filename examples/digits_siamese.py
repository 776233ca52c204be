"""Train a Siamese network on pairs of scikit-learn's handwritten digits (no download).

The Keras 0.3 Siamese graph: one base network (a Sequential) shared over two inputs,
joined into a dict that a Lambda turns into the Euclidean distance of the two codes,
trained with a contrastive loss written as a plain function of ``(y, d)``. Pairs of
the same digit are pulled together, pairs of two digits pushed at least a margin
apart; a pair is called "same" when its distance is under 0.5. Reaches about 95%
pair accuracy on pairs drawn from the held-out 20% of the digits.

    python examples/digits_siamese.py                 # CPU
    python examples/digits_siamese.py --device cuda   # NVIDIA GPU
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from digits_mlp import load_data

import numlayers as nl
from numlayers import backend as K
from numlayers.layers import Dense, Dropout, Lambda
from numlayers.models import Graph, Sequential
from numlayers.optimizers import RMSprop

REQUIRED_ACCURACY = 0.92


def euclidean_distance(inputs: dict[str, np.ndarray]) -> np.ndarray:
    u, v = inputs.values()
    return K.sqrt(K.sum(K.square(u - v), axis=1, keepdims=True))


def contrastive_loss(y: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Hadsell, Chopra and LeCun (2006): d^2 for a matching pair, max(1 - d, 0)^2 else."""
    margin = 1.0
    return K.mean(y * K.square(d) + (1 - y) * K.square(K.maximum(margin - d, 0)))


def make_pairs(X: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple:
    """For every digit, one pair with another image of its class and one with an image
    of another class: half the pairs match."""
    by_class = [np.flatnonzero(labels == digit) for digit in range(10)]
    first, second, same = [], [], []
    for index, digit in enumerate(labels):
        first += [index, index]
        second.append(rng.choice(by_class[digit]))
        other = (digit + rng.integers(1, 10)) % 10
        second.append(rng.choice(by_class[other]))
        same += [1.0, 0.0]
    return X[first], X[second], np.array(same, dtype="float32")


def base_network() -> Sequential:
    """The shared feature extractor: the same weights see both images of a pair."""
    network = Sequential()
    network.add(Dense(128, input_shape=(64,), activation="relu"))
    network.add(Dropout(0.1))
    network.add(Dense(128, activation="relu"))
    network.add(Dropout(0.1))
    network.add(Dense(128, activation="relu"))
    return network


def build_graph(device: str) -> Graph:
    graph = Graph(device=device)
    graph.add_input(name="input_a", input_shape=(64,))
    graph.add_input(name="input_b", input_shape=(64,))
    graph.add_shared_node(
        base_network(), name="shared", inputs=["input_a", "input_b"], merge_mode="join"
    )
    graph.add_node(Lambda(euclidean_distance), name="d", input="shared")
    graph.add_output(name="output", input="d")
    graph.compile(loss={"output": contrastive_loss}, optimizer=RMSprop())
    return graph


def pair_accuracy(graph: Graph, a: np.ndarray, b: np.ndarray, same: np.ndarray) -> float:
    distance = graph.predict({"input_a": a, "input_b": b})["output"].ravel()
    return float(np.mean((distance < 0.5) == (same == 1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
    args = parser.parse_args(argv)
    nl.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    X_train, X_test, Y_train, Y_test = load_data(args.seed)
    train = make_pairs(X_train, Y_train.argmax(axis=1), rng)
    test = make_pairs(X_test, Y_test.argmax(axis=1), rng)
    graph = build_graph(args.device)
    graph.summary()
    graph.fit(
        {"input_a": train[0], "input_b": train[1], "output": train[2]},
        validation_data={"input_a": test[0], "input_b": test[1], "output": test[2]},
        batch_size=128,
        nb_epoch=args.epochs,
        verbose=args.verbose,
    )
    train_accuracy = pair_accuracy(graph, *train)
    test_accuracy = pair_accuracy(graph, *test)
    print(f"pair accuracy: training {train_accuracy:.2%}, held-out {test_accuracy:.2%}")
    if test_accuracy < REQUIRED_ACCURACY:
        print(f"held-out accuracy below the expected {REQUIRED_ACCURACY:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
