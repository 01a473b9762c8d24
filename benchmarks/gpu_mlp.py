"""Side-by-side GPU benchmark: one Adam train step of a 784-256-128-10 ReLU MLP, float32.

Versions, each on the same GPU in this one process, data already on the device:

* graphc ``backend="cupy"``: the whole step one CUDA graph (``step.launch``, no
  host sync per step), and the same with the loss fetched to the host every step;
* PyTorch eager (``torch.optim.Adam``, default foreach implementation);
* PyTorch with the whole step (forward, backward, Adam) captured as a CUDA graph
  (``capturable=True``) and replayed, the static input copied in each step;
* ``torch.compile(mode="reduce-overhead")`` of the whole step, the optimizer's
  step compiled in (where Dynamo breaks the graph it compiles the pieces);
* JAX ``jit`` of the whole step, Adam written out in the step.

graphc must import: a table without it is no comparison, so its failure ends the
run; PyTorch and JAX are optional.

Timing: after warm-up, ``--repeats`` rounds of ``--steps`` steps, synchronized
at both ends of each round; the table gives the median µs per step, and TFLOP/s
of the step's GEMM work against the measured float32 GEMM peak (8192³, TF32 off).

    python benchmarks/gpu_mlp.py [--batches 128 1024 8192] [--steps 50] [--repeats 7] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

import graphc as gc
from graphc import nn, optim

SIZES = (784, 256, 128, 10)
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


def step_flops(batch: int) -> int:
    """GEMM FLOPs of one step: forward and weight gradients for every layer, input gradients
    for all but the first."""
    layers = list(zip(SIZES, SIZES[1:]))
    forward = sum(2 * batch * i * o for i, o in layers)
    return 2 * forward + sum(2 * batch * i * o for i, o in layers[1:])


def timed(run: Callable[[], None], sync: Callable[[], None], steps: int, repeats: int, warmup: int = 20) -> float:
    """Median µs per step over ``repeats`` synchronized rounds of ``steps`` steps."""
    for _ in range(warmup):
        run()
    sync()
    rounds = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        for _ in range(steps):
            run()
        sync()
        rounds.append((time.perf_counter() - started) / steps * 1e6)
    return statistics.median(rounds)


def data(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 784)).astype(np.float32), rng.integers(0, 10, batch).astype(np.int32)


# ---------------------------------------------------------------- graphc

def graphc_versions(batch: int, steps: int, repeats: int) -> dict[str, float]:
    import cupy
    x = gc.input("x", (None, 784))
    y = gc.input("y", (None,), dtype="int32")
    net = nn.Sequential(nn.Dense(256, init="he"), nn.relu, nn.Dense(128, init="he"), nn.relu, nn.Dense(10, init="he"))
    step = gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=optim.Adam(LR, beta1=B1, beta2=B2, eps=EPS),
                      backend="cupy")
    xb, yb = (cupy.asarray(a) for a in data(batch))
    sync = cupy.cuda.Device().synchronize
    graph = timed(lambda: step.launch(x=xb, y=yb), sync, steps, repeats)
    fetched = timed(lambda: step(x=xb, y=yb), sync, steps, repeats)
    return {"graphc (one CUDA graph)": graph, "graphc (loss and state fetched each step)": fetched}


# ---------------------------------------------------------------- PyTorch

def torch_versions(batch: int, steps: int, repeats: int) -> dict[str, float]:
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    xb, yb = (torch.from_numpy(a).to(device) for a in data(batch))
    yb = yb.long()

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                   torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(device)

    loss_fn = torch.nn.CrossEntropyLoss()
    eager_net = model()
    eager_opt = torch.optim.Adam(eager_net.parameters(), lr=LR, betas=(B1, B2), eps=EPS)

    def eager() -> None:
        eager_opt.zero_grad(set_to_none=True)
        loss_fn(eager_net(xb), yb).backward()
        eager_opt.step()

    results = {"PyTorch eager": timed(eager, torch.cuda.synchronize, steps, repeats)}

    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=LR, betas=(B1, B2), eps=EPS, capturable=True)
    static_x, static_y = xb.clone(), yb.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the graph, as the CUDA-graph recipe asks
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(static_x), static_y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = loss_fn(net(static_x), static_y)
        static_loss.backward()
        opt.step()

    def replay() -> None:
        static_x.copy_(xb)
        static_y.copy_(yb)
        graph.replay()

    results["PyTorch, whole step one CUDA graph"] = timed(replay, torch.cuda.synchronize, steps, repeats)
    try:
        results["torch.compile (reduce-overhead)"] = _torch_compiled(model, loss_fn, xb, yb, steps, repeats)
    except Exception as exc:  # a compiler failure on this machine is a finding, not the end of the table
        print(f"torch.compile: failed ({type(exc).__name__}: {str(exc)[:200]})", flush=True)
    return results


def _torch_compiled(model: Callable, loss_fn: Callable, xb: Any, yb: Any, steps: int, repeats: int) -> float:
    import torch
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=LR, betas=(B1, B2), eps=EPS, capturable=True)

    def train_step(x: Any, y: Any) -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss

    compiled = torch.compile(train_step, mode="reduce-overhead")
    return timed(lambda: compiled(xb, yb), torch.cuda.synchronize, steps, repeats, warmup=30)


def gemm_peak() -> tuple[float, str]:
    """Measured float32 GEMM TFLOP/s (8192³, TF32 off) and the card's name."""
    import cupy
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    n = 8192
    a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    b = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    c = cupy.empty((n, n), dtype=cupy.float32)
    seconds = timed(lambda: cupy.matmul(a, b, out=c), cupy.cuda.Device().synchronize, 10, 5, warmup=3) / 1e6
    return 2 * n ** 3 / seconds / 1e12, name


# ---------------------------------------------------------------- JAX

def jax_version(batch: int, steps: int, repeats: int) -> dict[str, float]:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with CuPy and PyTorch
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_default_matmul_precision", "highest")  # float32 GEMMs, not TF32
    key = jax.random.PRNGKey(0)
    params = []
    for fan_in, fan_out in zip(SIZES, SIZES[1:]):
        key, sub = jax.random.split(key)
        params += [jax.random.normal(sub, (fan_in, fan_out), jnp.float32) * np.sqrt(2 / fan_in),
                   jnp.zeros(fan_out, jnp.float32)]
    state = (params, [jnp.zeros_like(p) for p in params], [jnp.zeros_like(p) for p in params], jnp.float32(0))

    def loss_fn(ps: list, x: jax.Array, y: jax.Array) -> jax.Array:
        h = x
        for i in range(0, len(ps) - 2, 2):
            h = jax.nn.relu(h @ ps[i] + ps[i + 1])
        logits = h @ ps[-2] + ps[-1]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    def update(state: tuple, x: jax.Array, y: jax.Array) -> tuple:
        ps, m, v, t = state
        loss, grads = jax.value_and_grad(loss_fn)(ps, x, y)
        t = t + 1
        m = [B1 * mi + (1 - B1) * g for mi, g in zip(m, grads)]
        v = [B2 * vi + (1 - B2) * g * g for vi, g in zip(v, grads)]
        step = LR * jnp.sqrt(1 - B2 ** t) / (1 - B1 ** t)
        ps = [p - step * mi / (jnp.sqrt(vi) + EPS) for p, mi, vi in zip(ps, m, v)]
        return (ps, m, v, t), loss

    update = jax.jit(update, donate_argnums=(0,))
    xb, yb = (jax.device_put(a) for a in data(batch))
    holder = [state]

    def run() -> None:
        holder[0], _ = update(holder[0], xb, yb)

    def sync() -> None:
        jax.block_until_ready(holder[0])

    return {"JAX jit": timed(run, sync, steps, repeats)}


# ---------------------------------------------------------------- the table

def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024, 8192])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, help="also write the results as JSON into this folder")
    args = parser.parse_args(argv)
    try:
        peak, card = gemm_peak()
    except ImportError:
        print("gpu_mlp: needs CuPy and a CUDA GPU (pip install 'graphc[cuda]')")
        return 2
    versions: list[tuple[str, Callable[[int, int, int], dict[str, float]]]] = [("graphc", graphc_versions)]
    versions += [("PyTorch", torch_versions), ("JAX", jax_version)]
    print(f"{card}: float32 GEMM peak {peak:.1f} TFLOP/s (8192³, TF32 off)", flush=True)
    table: dict[str, dict[int, float]] = {}
    for batch in args.batches:
        for name, runner in versions:
            try:
                found = runner(batch, args.steps, args.repeats)
            except ImportError as exc:
                if name == "graphc":  # CuPy itself was found above: this is graphc's failure, and final
                    raise
                print(f"{name}: skipped ({exc})", flush=True)
                continue
            for version, micros in found.items():
                table.setdefault(version, {})[batch] = micros
                print(f"batch {batch:>5}  {version:<42} {micros:8.1f} µs", flush=True)
    head = "| µs per train step (TFLOP/s) | " + " | ".join(f"batch {b}" for b in args.batches) + " |"
    lines = [head, "|---|" + "---|" * len(args.batches)]
    for version, by_batch in table.items():
        cells = [f"{by_batch[b]:.0f} ({step_flops(b) / by_batch[b] / 1e6:.2f})" if b in by_batch else "—"
                 for b in args.batches]
        lines.append(f"| {version} | " + " | ".join(cells) + " |")
    print(f"\n{card}, float32 GEMM peak {peak:.1f} TFLOP/s\n" + "\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_mlp.json").write_text(json.dumps({"card": card, "gemm_peak_tflops": peak,
                                                           "us_per_step": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
