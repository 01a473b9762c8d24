"""Run by tests/test_distributed.py as ``mpirun -n K python mpi_collectives.py``: each rank checks
its BLAS threads, the allreduce, its gradient and synchronized batch norm against NumPy on the
whole batch, and prints ``rank R ok``.  Every rank can rebuild every other rank's data (it is
drawn from fixed seeds), so the transcriptions below compute in one process what the ranks
compute together."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc import nn
from graphc.parallel import active, use
from graphc.parallel.launch import threads_per_rank, world

F = "float64"


def data(rank: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng([7, rank]).normal(size=shape)


def check_values(size: int, rank: int) -> None:
    """Mean and sum over ranks, compiled and interpreted."""
    x = gc.input("x", (2, 3), F)
    outputs = {"mean": gc.allreduce(x), "sum": gc.allreduce(x, "sum")}
    mine = data(rank, (2, 3))
    every = np.stack([data(r, (2, 3)) for r in range(size)])
    compiled = gc.compile(outputs)(x=mine)
    interpreted = gc.evaluate(list(outputs.values()), {"x": mine})
    for got in (compiled, dict(zip(outputs, interpreted))):
        np.testing.assert_allclose(got["mean"], every.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(got["sum"], every.sum(axis=0), rtol=1e-12)


def global_objective(xs: np.ndarray, cs: np.ndarray, reduction: str) -> float:
    """Σ_r Σ c_r · tanh(R_s x_s): what the ranks' losses add up to."""
    reduced = xs.mean(axis=0) if reduction == "mean" else xs.sum(axis=0)
    return float(sum(np.sum(c * np.tanh(reduced)) for c in cs))


def check_gradient(size: int, rank: int) -> None:
    """Each rank's gradient of its own loss, through the allreduce, is its block of the gradient of
    the sum of every rank's loss: checked against central differences of that sum, in float64."""
    xs, cs = np.stack([data(r, (4,)) for r in range(size)]), np.stack([data(100 + r, (4,)) for r in range(size)])
    for reduction in ("mean", "sum"):
        x, c = gc.input("x", (4,), F), gc.input("c", (4,), F)
        loss = gc.sum(c * gc.tanh(gc.allreduce(x, reduction)))
        (dx,) = gc.grad(loss, [x])
        got = gc.compile(dx)(x=xs[rank], c=cs[rank])
        expected = np.empty(4)
        for i in range(4):
            step = np.zeros_like(xs)
            step[rank, i] = 1e-6
            expected[i] = (global_objective(xs + step, cs, reduction)
                           - global_objective(xs - step, cs, reduction)) / 2e-6
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def shares(rows: int, size: int) -> list[slice]:
    bounds = np.cumsum([0] + [rows // size + (r < rows % size) for r in range(size)])
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def check_sync_batchnorm(size: int, rank: int) -> None:
    """BatchNorm(sync=True) on each rank's rows (shares of unequal size) is batch norm of the whole
    batch: outputs, the gradients of the summed losses, and the new running statistics."""
    batch, weights = data(50, (2 * size + 1, 3)), data(51, (2 * size + 1, 3))
    mine = shares(len(batch), size)[rank]
    results = {}
    for sync, rows in ((True, mine), (False, slice(None))):
        x, c = gc.input("x", (None, 3), F), gc.input("c", (None, 3), F)
        norm = nn.BatchNorm(sync=sync, name="bn")
        y = norm(x, training=True)
        loss = gc.sum(c * y * y)
        gamma, beta = norm.parameters()
        running = {v.name: new for v, new in y.meta["updates"].items()}
        grads = dict(zip(("x", "gamma", "beta"), gc.grad(loss, [x, gamma, beta])))
        store = gc.Store(0)
        step = gc.compile({"y": y, **grads, **running}, state=store)
        results[sync] = step(x=batch[rows], c=weights[rows])
    synced, whole = results[True], results[False]
    np.testing.assert_allclose(synced["y"], whole["y"][mine], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(synced["x"], whole["x"][mine], rtol=1e-8, atol=1e-10)
    for name in ("bn.mean", "bn.var"):
        np.testing.assert_allclose(synced[name], whole[name], rtol=1e-10)
    for name in ("gamma", "beta"):  # this rank's loss only: the ranks' gradients add up to the whole's
        np.testing.assert_allclose(active().allreduce(synced[name], "sum"), whole[name], rtol=1e-8)


def check_threads() -> None:
    """Joining the run limited BLAS to this rank's share of the cores."""
    from threadpoolctl import threadpool_info
    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and set(blas) == {threads_per_rank()}, (blas, threads_per_rank())


def main() -> None:
    communicator = world()
    check_threads()
    with use(communicator):
        size, rank = communicator.size, communicator.rank
        check_values(size, rank)
        check_gradient(size, rank)
        check_sync_batchnorm(size, rank)
    print(f"rank {rank} ok", flush=True)


if __name__ == "__main__":
    main()
