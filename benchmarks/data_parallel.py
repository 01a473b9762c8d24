"""Data-parallel CPU benchmark: steps per second of the 784-256-128-10 MLP's Adam step, and the
allreduce's cost per step, for one process and for ``mpirun -n 2``.

Each configuration runs as its own job (one process with its BLAS on every core or on one,
or two ranks under mpirun, one BLAS thread each on two cores) on random batches of
Fashion-MNIST's shape: the global batch is split across the ranks as the trainer splits it.
A step's allreduce time is measured inside the step, around the communicator's call, so it
includes waiting for the slower rank; "alone" times back-to-back allreduces of the same
vector after the steps, the collective's own cost.  Steps are timed in rounds; the table gives
medians over rounds, from rank 0.

    python benchmarks/data_parallel.py [--batches 128 512] [--rounds 15] [--steps 20]

On a machine with fewer cores than ranks × BLAS threads the ranks compete for the cores, and
two ranks cannot be faster than one process that already uses every core: read the table as
the price of the engine there, not as the speed-up of more machines.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

import numpy as np

import graphc as gc
from graphc.parallel import Communicator, use
from graphc.parallel.launch import threads_per_rank, world
from graphc.parallel.replicas import shards


class TimedCommunicator(Communicator):
    """Another communicator, with the seconds spent in its allreduce added up."""

    def __init__(self, inner: Communicator):
        self.inner, self.size, self.rank = inner, inner.size, inner.rank
        self.seconds = 0.0

    def allreduce(self, x: np.ndarray, reduction: str = "mean", out: Optional[np.ndarray] = None) -> np.ndarray:
        started = time.perf_counter()
        result = self.inner.allreduce(x, reduction, out)
        self.seconds += time.perf_counter() - started
        return result


def measure(communicator: TimedCommunicator, batch: int, rounds: int, steps: int) -> dict[str, Any]:
    """This rank's step, timed; run in every rank of the job."""
    x, y = gc.input("x", (None, 784)), gc.input("y", (None,), dtype="int32")
    net = gc.nn.Sequential(gc.nn.Dense(256), gc.nn.relu, gc.nn.Dense(128), gc.nn.relu, gc.nn.Dense(10))
    step = gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=gc.optim.Adam(1e-3),
                      ranks=communicator.size)
    rng = np.random.default_rng(0)
    xs = rng.random((steps, batch, 784), dtype=np.float32)
    ys = rng.integers(0, 10, (steps, batch)).astype(np.int32)
    local = list(shards(zip(xs, ys), communicator))
    step_times, reduce_times, alone_times = [], [], []
    with use(communicator):
        for xb, yb in local:  # warm-up: binding, first touches of the buffers
            step(x=xb, y=yb)
        for _ in range(rounds):
            communicator.seconds = 0.0
            started = time.perf_counter()
            for xb, yb in local:
                step(x=xb, y=yb)
            step_times.append((time.perf_counter() - started) / steps)
            reduce_times.append(communicator.seconds / steps)
        vector = np.ones(next(n for n in step.program.nodes() if n.op == "allreduce").shape, np.float32) \
            if communicator.size > 1 else None
        for _ in range(rounds if vector is not None else 0):
            started = time.perf_counter()
            for _ in range(steps):
                communicator.inner.allreduce(vector, "sum", vector)
            alone_times.append((time.perf_counter() - started) / steps)
    return {"ranks": communicator.size, "batch": batch, "step_s": statistics.median(step_times),
            "allreduce_s": statistics.median(reduce_times),
            "alone_s": statistics.median(alone_times) if alone_times else 0.0}


def run_job(ranks: int, threads: Optional[int], batch: int, rounds: int, steps: int) -> dict[str, Any]:
    worker = [sys.executable, __file__, "--worker", "--batches", str(batch), "--rounds", str(rounds),
              "--steps", str(steps)]
    launcher = ["mpirun", "-n", str(ranks)] if ranks > 1 else []
    env = dict(os.environ)
    if threads is not None:
        env["OPENBLAS_NUM_THREADS"] = str(threads)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    result = subprocess.run(launcher + worker, env=env, capture_output=True, text=True, check=True)
    return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        communicator = TimedCommunicator(world())
        row = measure(communicator, args.batches[0], args.rounds, args.steps)
        if communicator.rank == 0:
            print(json.dumps(row), flush=True)
        return
    if shutil.which("mpirun") is None:
        sys.exit("mpirun not found: pip install -e '.[mpi]'")
    print(f"{os.cpu_count()} cores; medians over {args.rounds} rounds of {args.steps} steps\n")
    print("| global batch | ranks | BLAS threads per rank | step (ms) | steps/s | examples/s "
          "| allreduce in the step (ms) | allreduce alone (ms) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    cores = os.cpu_count() or 1
    for batch in args.batches:
        for ranks, threads in ((1, None), (1, 1), (2, None)):
            row = run_job(ranks, threads, batch, args.rounds, args.steps)
            step_ms, reduce_ms, alone_ms = (row[k] * 1e3 for k in ("step_s", "allreduce_s", "alone_s"))
            shown = threads or threads_per_rank({"OMPI_COMM_WORLD_LOCAL_SIZE": str(ranks)}, cores)
            print(f"| {batch} | {ranks} | {shown} | {step_ms:.3f} | {1e3 / step_ms:,.0f} | "
                  f"{batch * 1e3 / step_ms:,.0f} | {reduce_ms:.3f} | {alone_ms:.3f} |", flush=True)


if __name__ == "__main__":
    main()
