"""What the label range check costs a train step.

Cross-entropy with integer labels refuses labels outside 0..C-1 (a silent
zero loss otherwise), which costs one max over the batch's labels per step.
This times, in one process and interleaved round by round, the whole compiled
Adam step of the 784-256-128-10 MLP and the check alone on the same labels,
and prints medians and the check's share of the step.

    python benchmarks/label_check.py [--batches 64 128 512] [--rounds 15] [--steps 50]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

import graphc as gc
from graphc.primitives.misc import check_labels


def _mlp_step() -> Callable[[np.ndarray, np.ndarray], object]:
    x = gc.input("x", (None, 784))
    y = gc.input("y", (None,), dtype="int32")
    net = gc.nn.Sequential(gc.nn.Dense(256), gc.nn.relu, gc.nn.Dense(128), gc.nn.relu, gc.nn.Dense(10))
    step = gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=gc.optim.Adam(1e-3))
    return lambda xb, yb: step(x=xb, y=yb)


def _per_call(fn: Callable[[], object], steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 512])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    step = _mlp_step()
    rng = np.random.default_rng(0)
    print(f"{'batch':>6} {'step µs':>10} {'check µs':>10} {'share':>7}")
    for batch in args.batches:
        xb = rng.random((batch, 784), dtype=np.float32)
        yb = rng.integers(0, 10, batch).astype(np.int32)
        step(xb, yb)  # bind and warm up
        steps, checks = [], []
        for _ in range(args.rounds):
            steps.append(_per_call(lambda: step(xb, yb), args.steps))
            checks.append(_per_call(lambda: check_labels(yb, 10), args.steps * 10))
        s, c = statistics.median(steps) * 1e6, statistics.median(checks) * 1e6
        print(f"{batch:>6} {s:>10.1f} {c:>10.2f} {c / s:>7.2%}")


if __name__ == "__main__":
    main()
