"""Learn to add: an LSTM encoder-decoder reads "123+45" and writes "168".

The data are generated here: pairs of numbers of up to 3 digits as character
sequences (questions reversed, which makes the task easier to learn, as in the
classic Keras example). The encoder LSTM reads the question, RepeatVector feeds
its summary to every step of the decoder LSTM, and a softmax over characters at
each step writes the answer. Reaches over 95% exact-match accuracy on held-out
pairs.

    python examples/addition_rnn.py                  # CPU
    python examples/addition_rnn.py --device cuda    # NVIDIA GPU
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import numlayers as nl
from numlayers.layers import LSTM, Activation, Dense, RepeatVector, TimeDistributed
from numlayers.models import Sequential
from numlayers.optimizers import Adam

DIGITS = 3
QUESTION_LENGTH = DIGITS + 1 + DIGITS  # "123+456"
ANSWER_LENGTH = DIGITS + 1  # up to "999+999" = "1998"
CHARACTERS = "0123456789+ "
REQUIRED_ACCURACY = 0.95
LEARNING_RATE = 0.003
DECAY_AFTER = 5  # epochs at the full rate, then lr shrinks by 15% per epoch


class CharacterTable:
    """One-hot encoding of fixed-length strings over CHARACTERS."""

    def __init__(self, characters: str) -> None:
        self.characters = characters
        self.index = {c: i for i, c in enumerate(characters)}

    def encode(self, texts: list[str], length: int) -> np.ndarray:
        encoded = np.zeros((len(texts), length, len(self.characters)), dtype="float32")
        for row, text in enumerate(texts):
            for position, character in enumerate(text.ljust(length)):
                encoded[row, position, self.index[character]] = 1.0
        return encoded

    def decode(self, probabilities: np.ndarray) -> list[str]:
        return ["".join(self.characters[i] for i in row) for row in probabilities.argmax(-1)]


def make_pairs(count: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """``count`` distinct additions of numbers with 1 to 3 digits."""
    seen: set[tuple[int, int]] = set()
    questions, answers = [], []
    while len(questions) < count:
        a, b = (int(rng.integers(0, 10 ** int(rng.integers(1, DIGITS + 1)))) for _ in range(2))
        if (a, b) in seen:
            continue
        seen.add((a, b))
        question = f"{a}+{b}".ljust(QUESTION_LENGTH)
        questions.append(question[::-1])  # reversed input: the first digits read are the units
        answers.append(str(a + b).ljust(ANSWER_LENGTH))
    return questions, answers


def build_model(device: str, hidden: int) -> Sequential:
    model = Sequential(device=device)
    model.add(LSTM(hidden, input_shape=(QUESTION_LENGTH, len(CHARACTERS))))
    model.add(RepeatVector(ANSWER_LENGTH))
    model.add(LSTM(hidden, return_sequences=True))
    model.add(TimeDistributed(Dense(len(CHARACTERS))))
    model.add(Activation("softmax"))
    model.compile(
        Adam(lr=LEARNING_RATE, clipnorm=1.0), "categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2])
    args = parser.parse_args(argv)

    nl.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    table = CharacterTable(CHARACTERS)
    questions, answers = make_pairs(args.samples, rng)
    X = table.encode(questions, QUESTION_LENGTH)
    Y = table.encode(answers, ANSWER_LENGTH)
    split = len(X) * 9 // 10  # the last tenth is never trained on
    X_train, X_test, Y_train, Y_test = X[:split], X[split:], Y[:split], Y[split:]

    model = build_model(args.device, args.hidden)
    model.summary()
    exact = 0.0
    for epoch in range(args.epochs):
        # a shrinking step keeps late epochs from jumping out of a good solution
        model.optimizer.lr = LEARNING_RATE * 0.85 ** max(0, epoch - DECAY_AFTER)
        model.fit(X_train, Y_train, batch_size=args.batch_size, nb_epoch=1, verbose=args.verbose)
        guesses = table.decode(model.predict(X_test, batch_size=1024))
        truths = table.decode(Y_test)
        exact = float(np.mean([g == t for g, t in zip(guesses, truths, strict=True)]))
        shown = ", ".join(
            f"{questions[split + i][::-1].strip()}={guesses[i].strip()}" for i in range(3)
        )
        print(f"epoch {epoch + 1}: held-out exact match {exact:.2%}  ({shown})", flush=True)
        if exact >= 0.99:
            break
    print(f"held-out exact-match accuracy on {len(X_test)} unseen pairs: {exact:.2%}")
    if exact < REQUIRED_ACCURACY:
        print(f"below the expected {REQUIRED_ACCURACY:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
