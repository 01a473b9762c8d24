"""Compile time on deep models: graphc against JAX jit, compile plus first step.

An MLP with L hidden layers of 64 ReLU units (784 inputs, 10 classes,
softmax cross-entropy, Adam) is built, compiled and run for one step of batch
64, each time in a fresh process with an empty kernel cache, so nothing is
reused between measurements: what is timed is what a user waits for the first
time a model runs (imports excluded, weight initialization included).  Each configuration runs ``--repeats`` times, interleaved
with the other framework, and the table gives medians.

    python benchmarks/compile_time.py [--depths 2 32 128] [--repeats 3]

JAX is optional (``pip install jax``); without it its column is empty.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Optional

BATCH, FEATURES, CLASSES, WIDTH = 64, 784, 10, 64

GRAPHC = """
import json, time, numpy as np
import graphc as gc
started = time.perf_counter()
x = gc.input("x", (None, {features})); y = gc.input("y", (None,), dtype="int32")
layers = []
for _ in range({depth}):
    layers += [gc.nn.Dense({width}), gc.nn.relu]
net = gc.nn.Sequential(*layers, gc.nn.Dense({classes}))
step = gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=gc.optim.Adam(1e-3))
rng = np.random.default_rng(0)
step(x=rng.random(({batch}, {features}), dtype=np.float32), y=rng.integers(0, {classes}, {batch}).astype(np.int32))
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "nodes": len(step.program.nodes())}}))
"""

JAX = """
import json, time, numpy as np
import jax, jax.numpy as jnp
started = time.perf_counter()
sizes = [{features}] + [{width}] * {depth} + [{classes}]
rng = np.random.default_rng(0)
params = [((rng.standard_normal((fan_in, fan_out)) * (2 / fan_in) ** 0.5).astype(np.float32),
           np.zeros(fan_out, np.float32)) for fan_in, fan_out in zip(sizes, sizes[1:])]

def loss(params, x, y):
    for W, b in params[:-1]:
        x = jax.nn.relu(x @ W + b)
    W, b = params[-1]
    logits = x @ W + b
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

@jax.jit
def step(params, m, v, t, x, y):
    value, grads = jax.value_and_grad(loss)(params, x, y)
    t = t + 1
    m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
    v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
    scale = 1e-3 * jnp.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
    params = jax.tree_util.tree_map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + 1e-8), params, m, v)
    return value, params, m, v, t

zeros = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
x = rng.random(({batch}, {features}), dtype=np.float32)
y = rng.integers(0, {classes}, {batch}).astype(np.int32)
value, *_ = step(params, zeros, zeros, 0, x, y)
value.block_until_ready()
print(json.dumps({{"seconds": time.perf_counter() - started, "nodes": None}}))
"""


def _run(template: str, depth: int) -> dict:
    code = template.format(depth=depth, width=WIDTH, features=FEATURES, classes=CLASSES, batch=BATCH)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, GRAPHC_CACHE_DIR=cache)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"compile_time: the run at L={depth} failed: {last}")
    if "warning" in result.stderr:  # e.g. fused kernels off: the time would not be graphc's usual path
        print(f"  (L={depth}: {result.stderr.strip().splitlines()[-1]})", file=sys.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _has_jax() -> bool:
    return subprocess.run([sys.executable, "-c", "import jax"], capture_output=True).returncode == 0


def _cell(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s" if times else "—"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 32, 128])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    jax = _has_jax()
    print(f"compile + first step, fresh process, empty kernel cache; median of {args.repeats}")
    print("| L | IR nodes | graphc | JAX jit |")
    print("|---|---|---|---|")
    for depth in args.depths:
        ours: list[float] = []
        theirs: list[float] = []
        nodes = None
        for _ in range(args.repeats):
            run = _run(GRAPHC, depth)
            ours.append(run["seconds"])
            nodes = run["nodes"]
            if jax:
                theirs.append(_run(JAX, depth)["seconds"])
        print(f"| {depth} | {nodes} | {_cell(ours)} | {_cell(theirs)} |", flush=True)


if __name__ == "__main__":
    main()
