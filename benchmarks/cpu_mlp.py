"""Side-by-side CPU benchmark: one Adam train step of a 784-256-128-10 ReLU MLP.

Every version runs in this one process on the same weights and the same batch
order: graphc's compiled step (fused C kernels, and the pure-NumPy path), a
hand-optimized NumPy step written below, and — when installed — PyTorch eager
and JAX jit.  Each version first trains one full epoch of real Fashion-MNIST,
so that Adam's moments have had time to decay into float32 denormals where
gradients are exactly zero (a benchmark of the first hundred steps misses that
slowdown).  Then the versions are timed round by round, interleaved, so drift
on a shared machine hits all alike; the table gives medians over rounds and
ratios to graphc.  The floor, the step's eight GEMMs alone on the same shapes,
is timed in the same rounds, and "× GEMMs" is each version's time over it.

    python benchmarks/cpu_mlp.py [--batches 64 128 512] [--rounds 15] [--steps 20]

Comparison frameworks are optional: ``pip install torch==2.13.0`` (a CPU build)
and ``pip install jax``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import tracemalloc
from typing import Callable, Optional

import numpy as np

import graphc as gc
from graphc.data import load_fashion_mnist

SIZES = (784, 256, 128, 10)
FLOOR = "the 8 GEMMs alone"
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


def initial_weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for fan_in, fan_out in zip(SIZES, SIZES[1:]):
        out.append((rng.standard_normal((fan_in, fan_out)) * np.sqrt(2 / fan_in)).astype(np.float32))
        out.append(np.zeros(fan_out, np.float32))
    return out


# ---------------------------------------------------------------- graphc

def graphc_step(weights: list[np.ndarray], kernels: str) -> tuple[Callable, float]:
    os.environ["GRAPHC_KERNELS"] = kernels
    gc.clear_cache()
    started = time.perf_counter()
    x = gc.input("x", (None, 784))
    y = gc.input("y", (None,), dtype="int32")
    net = gc.nn.Sequential(gc.nn.Dense(256), gc.nn.relu, gc.nn.Dense(128), gc.nn.relu, gc.nn.Dense(10))
    step = gc.compile(gc.softmax_cross_entropy(net(x), y),
                      optimizer=gc.optim.Adam(LR, beta1=B1, beta2=B2, eps=EPS))
    seconds = time.perf_counter() - started
    step.state.values.update({p.name: w.copy() for p, w in zip(net.parameters(), weights)})
    return (lambda xb, yb: step(x=xb, y=yb)), seconds


# ---------------------------------------------------------------- hand-optimized NumPy

class HandNumpy:
    """The best a careful person writes by hand: preallocated buffers, ``out=`` everywhere,
    one flat parameter vector so Adam is a few whole-vector ops, denormals flushed every
    few steps (NumPy has no flush-to-zero switch)."""

    def __init__(self, weights: list[np.ndarray]):
        sizes = [w.size for w in weights]
        self.theta = np.concatenate([w.ravel() for w in weights])
        self.grad = np.zeros_like(self.theta)
        self.m, self.v = np.zeros_like(self.theta), np.zeros_like(self.theta)
        self.tmp = np.zeros_like(self.theta)
        offsets = np.cumsum([0] + sizes)
        self.params = [self.theta[a:b].reshape(w.shape) for a, b, w in zip(offsets, offsets[1:], weights)]
        self.grads = [self.grad[a:b].reshape(w.shape) for a, b, w in zip(offsets, offsets[1:], weights)]
        self.t = 0
        self.batch = -1

    def _buffers(self, n: int) -> None:
        self.batch = n
        self.h1, self.h2 = np.empty((n, 256), np.float32), np.empty((n, 128), np.float32)
        self.z, self.d3 = np.empty((n, 10), np.float32), np.empty((n, 10), np.float32)
        self.d2, self.d1 = np.empty((n, 128), np.float32), np.empty((n, 256), np.float32)
        self.rowmax, self.rowsum = np.empty((n, 1), np.float32), np.empty((n, 1), np.float32)
        self.rows = np.arange(n)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        n = x.shape[0]
        if n != self.batch:
            self._buffers(n)
        W1, b1, W2, b2, W3, b3 = self.params
        gW1, gb1, gW2, gb2, gW3, gb3 = self.grads
        np.matmul(x, W1, out=self.h1); self.h1 += b1; np.maximum(self.h1, 0, out=self.h1)
        np.matmul(self.h1, W2, out=self.h2); self.h2 += b2; np.maximum(self.h2, 0, out=self.h2)
        np.matmul(self.h2, W3, out=self.z); self.z += b3
        np.max(self.z, axis=1, keepdims=True, out=self.rowmax)
        self.z -= self.rowmax
        np.exp(self.z, out=self.d3)
        np.sum(self.d3, axis=1, keepdims=True, out=self.rowsum)
        loss = float(np.log(self.rowsum).sum() - self.z[self.rows, y].sum()) / n
        self.d3 /= self.rowsum
        self.d3[self.rows, y] -= 1.0
        self.d3 *= 1.0 / n
        np.matmul(self.h2.T, self.d3, out=gW3); np.sum(self.d3, axis=0, out=gb3)
        np.matmul(self.d3, W3.T, out=self.d2); self.d2 *= self.h2 > 0
        np.matmul(self.h1.T, self.d2, out=gW2); np.sum(self.d2, axis=0, out=gb2)
        np.matmul(self.d2, W2.T, out=self.d1); self.d1 *= self.h1 > 0
        np.matmul(x.T, self.d1, out=gW1); np.sum(self.d1, axis=0, out=gb1)
        self.t += 1
        m, v, g, tmp = self.m, self.v, self.grad, self.tmp
        m *= B1; np.multiply(g, 1 - B1, out=tmp); m += tmp
        v *= B2; np.multiply(g, g, out=tmp); tmp *= 1 - B2; v += tmp
        if self.t % 8 == 0:
            for moment in (m, v):
                np.less(np.abs(moment, out=tmp), 1e-30, out=tmp)  # tmp as a 0/1 mask
                np.subtract(1.0, tmp, out=tmp)
                moment *= tmp
        np.multiply(v, 1.0 / (1 - B2 ** self.t), out=tmp); np.sqrt(tmp, out=tmp); tmp += EPS
        np.divide(m, tmp, out=tmp); tmp *= LR / (1 - B1 ** self.t)
        self.theta -= tmp
        return loss


class GemmChain:
    """The floor: the step's eight GEMMs alone (three forward, three weight gradients, two
    input gradients), on the same shapes, into preallocated buffers.  Not a training step:
    its weights never change, and it reports no loss."""

    def __init__(self, weights: list[np.ndarray]):
        self.W = weights[0::2]
        self.batch = -1

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        n = x.shape[0]
        if n != self.batch:
            self.batch = n
            self.h = [np.empty((n, w.shape[1]), np.float32) for w in self.W]
            self.d = [np.empty((n, w.shape[0]), np.float32) for w in self.W[1:]]
            self.g = [np.empty_like(w) for w in self.W]
        h1, h2, z = self.h
        d1, d2 = self.d
        W1, W2, W3 = self.W
        np.matmul(x, W1, out=h1); np.matmul(h1, W2, out=h2); np.matmul(h2, W3, out=z)
        np.matmul(h2.T, z, out=self.g[2]); np.matmul(z, W3.T, out=d2)
        np.matmul(h1.T, d2, out=self.g[1]); np.matmul(d2, W2.T, out=d1)
        np.matmul(x.T, d1, out=self.g[0])
        return float("nan")


# ---------------------------------------------------------------- PyTorch and JAX, when installed

def torch_step(weights: list[np.ndarray]) -> Optional[Callable]:
    try:
        import torch
    except ImportError:
        return None
    params = [torch.tensor(w.copy(), requires_grad=True) for w in weights]
    opt = torch.optim.Adam(params, lr=LR, betas=(B1, B2), eps=EPS)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
        h = torch.relu(xt @ params[0] + params[1])
        h = torch.relu(h @ params[2] + params[3])
        loss = torch.nn.functional.cross_entropy(h @ params[4] + params[5], yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)
    return step


def jax_step(weights: list[np.ndarray]) -> tuple[Optional[Callable], float]:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, 0.0

    def loss_fn(params, x, y):
        h = jax.nn.relu(x @ params[0] + params[1])
        h = jax.nn.relu(h @ params[2] + params[3])
        logits = h @ params[4] + params[5]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    @jax.jit
    def update(params, m, v, t, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        t = t + 1
        m = [B1 * a + (1 - B1) * g for a, g in zip(m, grads)]
        v = [B2 * a + (1 - B2) * g * g for a, g in zip(v, grads)]
        params = [p - LR * (a / (1 - B1 ** t)) / (jnp.sqrt(b / (1 - B2 ** t)) + EPS)
                  for p, a, b in zip(params, m, v)]
        return params, m, v, t, loss

    state = {"params": [jnp.asarray(w) for w in weights], "m": [jnp.zeros_like(jnp.asarray(w)) for w in weights],
             "v": [jnp.zeros_like(jnp.asarray(w)) for w in weights], "t": jnp.zeros((), jnp.float32)}
    started = time.perf_counter()
    sample = (np.zeros((64, 784), np.float32), np.zeros(64, np.int32))
    jax.block_until_ready(update(state["params"], state["m"], state["v"], state["t"], *sample))
    seconds = time.perf_counter() - started

    def step(x: np.ndarray, y: np.ndarray):
        p, m, v, t, loss = update(state["params"], state["m"], state["v"], state["t"], x, y)
        state.update(params=p, m=m, v=v, t=t)
        return loss.block_until_ready()
    return step, seconds


# ---------------------------------------------------------------- the harness

def train_epoch(step: Callable, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    loss = 0.0
    for start in range(0, len(x) - batch + 1, batch):
        loss = step(x[start:start + batch], y[start:start + batch])
    return float(loss)


def timing_batches(x: np.ndarray, y: np.ndarray, batch: int, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` shuffled batches, the same for every version."""
    order = np.random.default_rng(batch).permutation(len(x))
    return [(np.ascontiguousarray(x[order[i:i + batch]]), y[order[i:i + batch]])
            for i in range(0, steps * batch, batch)]


def interleaved_times(versions: dict[str, Callable], batches: list, rounds: int,
                      pause: float = 0.25) -> dict[str, list[float]]:
    """ms per step of each version, one figure per round; versions take turns within a round,
    so drift on a shared machine hits all alike.

    A version's thread pool keeps spinning for a while after its last step (OpenBLAS for about
    0.1 s, OpenMP and XLA's pools too), and a spinning thread takes a core from whichever
    version runs next.  So before each turn the harness waits ``pause`` seconds for those
    threads to park, runs one untimed step (waking the version's own threads), and the order
    of turns rotates from round to round, so that no version always follows the same one."""
    times: dict[str, list[float]] = {name: [] for name in versions}
    names = list(versions)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            step = versions[name]
            time.sleep(pause)
            step(*batches[-1])
            started = time.perf_counter()
            for xb, yb in batches:
                step(xb, yb)
            times[name].append((time.perf_counter() - started) / len(batches) * 1e3)
    return times


def peak_bytes(step: Callable, x: np.ndarray, y: np.ndarray) -> int:
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        step(x, y)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def run(batch: int, rounds: int, steps: int, data) -> None:
    x, y = data.x_train, data.y_train.astype(np.int32)
    weights = initial_weights()
    versions: dict[str, Callable] = {}
    compile_s: dict[str, float] = {}
    versions["graphc"], compile_s["graphc"] = graphc_step(weights, "c")
    versions["graphc (NumPy only)"], compile_s["graphc (NumPy only)"] = graphc_step(weights, "numpy")
    versions["hand NumPy"] = HandNumpy(weights)
    torch = torch_step(weights)
    if torch is not None:
        versions["PyTorch eager"] = torch
    jax, compile_s["JAX jit"] = jax_step(weights)
    if jax is not None:
        versions["JAX jit"] = jax
    versions[FLOOR] = GemmChain(weights)
    final_loss = {name: train_epoch(step, x, y, batch) for name, step in versions.items()}
    batches = timing_batches(x, y, batch, steps)
    times = interleaved_times(versions, batches, rounds)
    base, floor = statistics.median(times["graphc"]), statistics.median(times[FLOOR])
    print(f"\nbatch {batch}: median ms/step over {rounds} rounds of {steps} steps, after one epoch of training")
    print(f"{'version':<22}{'ms/step':>9}{'× graphc':>10}{'× GEMMs':>9}{'loss@1ep':>10}{'compile s':>11}"
          f"{'peak alloc':>12}")
    for name, ts in times.items():
        ms = statistics.median(ts)
        peak = peak_bytes(versions[name], *batches[0]) if "PyTorch" not in name and "JAX" not in name else None
        comp = f"{compile_s[name]:.3f}" if name in compile_s else "-"
        peak_text = f"{peak / 1024:.0f} KiB" if peak is not None else "n/a"
        print(f"{name:<22}{ms:>9.3f}{ms / base:>10.2f}{ms / floor:>9.2f}{final_loss[name]:>10.4f}{comp:>11}"
              f"{peak_text:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 512])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    data = load_fashion_mnist()
    for batch in args.batches:
        run(batch, args.rounds, args.steps, data)


if __name__ == "__main__":
    main()
