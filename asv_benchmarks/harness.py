"""The measuring harness of ``compare.py``: settings, timing in alternating rounds, rows
of ours-against-theirs timings and the table that prints them (see ``compare.py``'s
docstring for the method)."""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Timed = Callable[[], Any]


@dataclass
class Settings:
    rounds: int
    repeat: int
    min_time: float
    warmup: int
    settle: float
    batch: int
    features: int
    width: int
    gemm: int
    #: (input, hidden, hidden, classes, batch) of the small and the large MLP
    mlp_small: tuple[int, ...] = (64, 128, 128, 10, 32)
    mlp_large: tuple[int, ...] = (784, 1024, 1024, 10, 256)
    #: (vocabulary, dim, batch, length)
    embedding: tuple[int, ...] = (50_000, 128, 64, 64)
    #: (layers, units, batch) of the Dense chain
    chain: tuple[int, ...] = (8, 32, 32)
    #: (steps, batch, input features, units)
    rnn: tuple[int, ...] = (50, 32, 64, 128)
    #: (batch, channels, height, width) of the channels-first BatchNormalization input
    batch_norm_image: tuple[int, ...] = (64, 32, 32, 32)


def settings(quick: bool, tiny: bool) -> Settings:
    # many short samples rather than a few long ones: on a shared machine the
    # best sample is one that no other process disturbed
    if tiny:
        return Settings(
            rounds=1, repeat=2, min_time=0.002, warmup=1, settle=0.0,
            batch=4, features=8, width=16, gemm=64,
            mlp_small=(6, 5, 5, 3, 4), mlp_large=(7, 6, 6, 3, 4),
            embedding=(11, 3, 2, 5), chain=(3, 4, 4), rnn=(3, 2, 3, 4),
            batch_norm_image=(2, 3, 2, 2),
        )  # fmt: skip
    if quick:
        return Settings(
            rounds=2, repeat=3, min_time=0.02, warmup=2, settle=0.1,
            batch=256, features=1024, width=4096, gemm=4096,
        )  # fmt: skip
    return Settings(
        rounds=3, repeat=5, min_time=0.05, warmup=3, settle=0.2,
        batch=256, features=1024, width=4096, gemm=4096,
    )  # fmt: skip


@dataclass
class Row:
    section: str
    case: str
    ours: float
    theirs: float
    target: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.theirs

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "ok" if self.ratio <= self.target else "MISS"


def measure(functions: dict[str, Timed], config: Settings) -> dict[str, float]:
    """Best seconds per call of each function, in rounds of blocks (see the module doc)."""
    numbers = {}
    for name, function in functions.items():
        for _ in range(config.warmup):
            function()
        timer = timeit.Timer(function)
        number = 1
        while timer.timeit(number) < config.min_time and number < 1_000_000:
            number *= 2
        numbers[name] = number
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(config.rounds):
        for name, function in functions.items():
            time.sleep(config.settle)  # the other side's idle threads stop spinning
            function()  # and this side's wake up
            timer = timeit.Timer(function)
            for _ in range(config.repeat):
                best[name] = min(best[name], timer.timeit(numbers[name]) / numbers[name])
    return best


def rng_array(shape: tuple[int, ...], seed: int, low: float = -3.0, high: float = 3.0) -> Any:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


# ------------------------------------------------------------------------ report
def format_time(seconds: float) -> str:
    if seconds >= 1e-1:
        return f"{seconds:8.3f} s "
    if seconds >= 1e-4:
        return f"{seconds * 1e3:8.3f} ms"
    return f"{seconds * 1e6:8.2f} us"


def print_table(rows: list[Row], tiny: bool) -> None:
    width = max(len(row.case) for row in rows)
    print(f"{'':2}{'case':<{width}}  {'ours':>11}  {'theirs':>11}  {'ratio':>6}  target")
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            print()
        target = "" if row.target is None else f"<= {row.target:.2f}"
        verdict = "" if tiny else row.verdict
        print(
            f"{row.section} {row.case:<{width}}  {format_time(row.ours)}  "
            f"{format_time(row.theirs)}  {row.ratio:6.3f}  {target:<7} {verdict}"
            + (f"  ({row.note})" if row.note else "")
        )
