"""Classify variable-length text with Embedding(mask_zero=True) + LSTM, and see what masking does.

The data are real and ship with every Python: the one-line summaries of the
documented functions and classes of the standard library, labelled by what the
module is about (files and processes, text, numbers, networking, concurrency).
Summaries are padded with zeros to a common length. With ``mask_zero=True`` the
LSTM skips the padding; without it, the padding is read as words. The script
trains both, prints their held-out accuracy, and shows that with the mask a
summary gets the same prediction however much padding follows it.

    python examples/text_classification.py
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from collections import Counter

import numpy as np

import numlayers as nl
from numlayers.layers import LSTM, Dense, Dropout, Embedding
from numlayers.models import Sequential

TOPICS = {
    "files and processes": [
        "os",
        "os.path",
        "shutil",
        "pathlib",
        "glob",
        "tempfile",
        "stat",
        "filecmp",
        "fnmatch",
        "io",
        "subprocess",
        "zipfile",
        "tarfile",
    ],
    "text": [
        "string",
        "re",
        "textwrap",
        "difflib",
        "unicodedata",
        "codecs",
        "html",
        "csv",
        "locale",
        "gettext",
        "str",
    ],
    "numbers": [
        "math",
        "cmath",
        "statistics",
        "decimal",
        "fractions",
        "random",
        "numbers",
        "operator",
        "bisect",
        "heapq",
        "array",
    ],
    "networking": [
        "socket",
        "ssl",
        "http.client",
        "http.server",
        "http.cookies",
        "urllib.request",
        "urllib.parse",
        "email.message",
        "smtplib",
        "ftplib",
        "ipaddress",
        "xmlrpc.client",
        "mailbox",
    ],
    "concurrency": [
        "threading",
        "multiprocessing",
        "asyncio",
        "concurrent.futures",
        "queue",
        "sched",
        "signal",
        "selectors",
        "contextvars",
    ],
}
MAX_WORDS = 16
WORD = re.compile(r"[a-z]+")


def summaries() -> tuple[list[list[str]], list[int]]:
    """Tokenised first docstring lines of public callables, with their topic index."""
    texts: list[list[str]] = []
    labels: list[int] = []
    seen: set[str] = set()
    for label, names in enumerate(TOPICS.values()):
        for name in names:
            module = importlib.import_module(name) if name != "str" else str
            for attribute in dir(module):
                if attribute.startswith("_"):
                    continue
                member = getattr(module, attribute, None)
                members = [member]
                if inspect.isclass(member):
                    members += [
                        getattr(member, m, None) for m in vars(member) if not m.startswith("_")
                    ]
                for item in members:
                    doc = inspect.getdoc(item) if callable(item) else None
                    if not doc:
                        continue
                    line = doc.strip().splitlines()[0]
                    words = WORD.findall(line.lower())
                    if len(words) < 3 or line in seen:
                        continue
                    seen.add(line)
                    texts.append(words[:MAX_WORDS])
                    labels.append(label)
    return texts, labels


def encode(texts: list[list[str]], vocabulary: dict[str, int]) -> np.ndarray:
    """Word ids, 1 for unknown words, 0 for padding after the words."""
    ids = np.zeros((len(texts), MAX_WORDS), dtype=np.int64)
    for row, words in enumerate(texts):
        for column, word in enumerate(words):
            ids[row, column] = vocabulary.get(word, 1)
    return ids


def build_model(vocabulary_size: int, classes: int, mask_zero: bool) -> Sequential:
    model = Sequential()
    model.add(Embedding(vocabulary_size, 32, input_length=MAX_WORDS, mask_zero=mask_zero))
    model.add(LSTM(32, activation="tanh", inner_activation="sigmoid"))
    model.add(Dropout(0.3))
    model.add(Dense(classes, activation="softmax"))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    texts, labels = summaries()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(texts))
    texts = [texts[i] for i in order]
    y = np.array(labels)[order]
    split = len(texts) * 4 // 5
    counts = Counter(word for words in texts[:split] for word in words)
    vocabulary = {word: i + 2 for i, (word, n) in enumerate(counts.most_common()) if n >= 2}
    X = encode(texts, vocabulary)
    print(
        f"{len(texts)} summaries from {sum(len(v) for v in TOPICS.values())} modules, "
        f"{len(vocabulary) + 2} word ids, topics: {', '.join(TOPICS)}"
    )
    print(f"padding: {np.mean(X == 0):.0%} of all positions")

    results = {}
    for mask_zero in (True, False):
        nl.set_seed(args.seed)
        model = build_model(len(vocabulary) + 2, len(TOPICS), mask_zero)
        model.fit(
            X[:split],
            y[:split],
            batch_size=32,
            nb_epoch=args.epochs,
            verbose=0,
            validation_split=0.1,
        )
        loss, accuracy = model.evaluate(X[split:], y[split:])
        results[mask_zero] = (model, accuracy)
        print(f"mask_zero={mask_zero!s:5}  held-out accuracy {accuracy:.2%}  (loss {loss:.3f})")

    masked, _ = results[True]
    unmasked, _ = results[False]
    sample = X[split : split + 1]
    length = len(texts[split])
    words = " ".join(texts[split])
    print(f'\n"{words}" ({list(TOPICS)[y[split]]}):')
    for name, model in (("with mask", masked), ("without mask", unmasked)):
        print(f"  {name:12}: p(topic) = {np.round(model.predict(sample)[0], 3)}")
    # the masked model reads only the words: cutting the padding off changes nothing
    short = Sequential()
    short.add(Embedding(len(vocabulary) + 2, 32, input_length=length, mask_zero=True))
    short.add(LSTM(32, activation="tanh", inner_activation="sigmoid"))
    short.add(Dense(len(TOPICS), activation="softmax"))
    short.set_weights(masked.get_weights())
    same = np.allclose(short.predict(sample[:, :length])[0], masked.predict(sample)[0], atol=1e-5)
    print(f"  masked model on the words alone, no padding: same prediction: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
