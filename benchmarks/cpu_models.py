"""Side-by-side CPU benchmark of the course's other models: graphc's compiled step against JAX jit.

Three models, float32, Fashion-MNIST:

- ``bn``: the batch-norm network of Ioffe & Szegedy's Figure 1 — three dense layers of
  100 units, each followed by batch norm (batch statistics, running averages updated)
  and a sigmoid, then 10 outputs; softmax cross-entropy, plain SGD, batches of 60.
  The dense layers before batch norm have no bias (β takes its place).
- ``tanh``: a 784-256-128-10 tanh MLP, Adam, batches of 128.
- ``moe``: a mixture of four 784-32-10 ReLU experts with a linear softmax gate on the
  pixels (the course's slide), Adam, batches of 128.

graphc runs twice where libmvec is found: with its vector exp/log/tanh in the
fused loops (the default) and with scalar libm (``GRAPHC_VECTOR_MATH=off``).
Each version first trains ``--warmup`` steps, then the versions are timed in
interleaved rounds (the harness of ``cpu_mlp.py``); the table gives medians.
JAX and PyTorch are optional (``pip install jax torch==2.13.0``); each runs
when installed.

    python benchmarks/cpu_models.py [--models bn tanh moe] [--rounds 15] [--steps 20] [--warmup 500]
"""
from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from cpu_mlp import interleaved_times, timing_batches

import graphc as gc
from graphc.backends.cpu import vector_math
from graphc.data import load_fashion_mnist

LR_SGD, LR_ADAM, B1, B2, EPS = 0.5, 1e-3, 0.9, 0.999, 1e-8
BN_EPS, BN_MOMENTUM = 1e-5, 0.1
EXPERTS, EXPERT_WIDTH = 4, 32


@dataclass(frozen=True)
class Model:
    name: str
    batch: int
    optimizer: str  # "sgd" or "adam"
    graphc: Callable[[], gc.nn.Module]
    jax_loss: Callable  # (params, state, x, y) -> (loss, new_state), written with jax.numpy
    torch_loss: Callable  # (torch, params, state, x, y) -> loss; updates batch-norm state in place
    shapes: Callable[[], tuple[list[tuple], list[tuple]]]  # JAX parameter and state shapes


# ---------------------------------------------------------------- graphc

def bn_network() -> gc.nn.Module:
    layers = []
    for _ in range(3):
        layers += [gc.nn.Dense(100, bias=False), gc.nn.BatchNorm(BN_MOMENTUM, BN_EPS), gc.nn.sigmoid]
    return gc.nn.Sequential(*layers, gc.nn.Dense(10))


def tanh_mlp() -> gc.nn.Module:
    return gc.nn.Sequential(gc.nn.Dense(256), gc.nn.tanh, gc.nn.Dense(128), gc.nn.tanh, gc.nn.Dense(10))


def mixture_of_experts() -> gc.nn.Module:
    return gc.nn.MixtureOfExperts([gc.nn.Sequential(gc.nn.Dense(EXPERT_WIDTH, init="he"), gc.nn.relu,
                                                    gc.nn.Dense(10, init="he")) for _ in range(EXPERTS)])


def graphc_step(model: Model, vector_math: str = "on") -> Callable:
    """The compiled step; ``vector_math="off"`` compiles it with scalar libm calls in the loops."""
    before = os.environ.get("GRAPHC_VECTOR_MATH")
    os.environ["GRAPHC_VECTOR_MATH"] = vector_math
    try:
        x = gc.input("x", (None, 784))
        y = gc.input("y", (None,), dtype="int32")
        optimizer = gc.optim.SGD(LR_SGD) if model.optimizer == "sgd" else gc.optim.Adam(LR_ADAM, B1, B2, EPS)
        step = gc.compile(gc.softmax_cross_entropy(model.graphc()(x), y), optimizer=optimizer)
    finally:
        if before is None:
            del os.environ["GRAPHC_VECTOR_MATH"]
        else:
            os.environ["GRAPHC_VECTOR_MATH"] = before
    return lambda xb, yb: step(x=xb, y=yb)


# ---------------------------------------------------------------- JAX

def _cross_entropy(jnp, jax, logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def bn_jax(params, state, x, y):
    import jax
    import jax.numpy as jnp
    new_state = []
    for k in range(3):
        W, gamma, beta = params[3 * k:3 * k + 3]
        running_mean, running_var = state[2 * k:2 * k + 2]
        h = x @ W
        mean = jnp.mean(h, axis=0)
        var = jnp.mean((h - mean) ** 2, axis=0)
        x = jax.nn.sigmoid(gamma * (h - mean) / jnp.sqrt(var + BN_EPS) + beta)
        n = h.shape[0]
        new_state += [(1 - BN_MOMENTUM) * running_mean + BN_MOMENTUM * jax.lax.stop_gradient(mean),
                      (1 - BN_MOMENTUM) * running_var + BN_MOMENTUM * jax.lax.stop_gradient(var) * n / (n - 1)]
    return _cross_entropy(jnp, jax, x @ params[9] + params[10], y), new_state


def bn_shapes():
    params = []
    for fan_in in (784, 100, 100):
        params += [(fan_in, 100), (100,), (100,)]
    return params + [(100, 10), (10,)], [(100,)] * 6


def tanh_jax(params, state, x, y):
    import jax
    import jax.numpy as jnp
    h = jnp.tanh(x @ params[0] + params[1])
    h = jnp.tanh(h @ params[2] + params[3])
    return _cross_entropy(jnp, jax, h @ params[4] + params[5], y), state


def tanh_shapes():
    return [(784, 256), (256,), (256, 128), (128,), (128, 10), (10,)], []


def moe_jax(params, state, x, y):
    import jax
    import jax.numpy as jnp
    gates = jax.nn.softmax(x @ params[-2] + params[-1], axis=-1)
    out = 0.0
    for k in range(EXPERTS):
        W1, b1, W2, b2 = params[4 * k:4 * k + 4]
        out = out + gates[:, k:k + 1] * (jax.nn.relu(x @ W1 + b1) @ W2 + b2)
    return _cross_entropy(jnp, jax, out, y), state


def moe_shapes():
    return [(784, EXPERT_WIDTH), (EXPERT_WIDTH,), (EXPERT_WIDTH, 10), (10,)] * EXPERTS + [(784, EXPERTS), (EXPERTS,)], []


def _initial(shape: tuple, rng: np.random.Generator) -> np.ndarray:
    if len(shape) == 1:
        return np.zeros(shape, np.float32)
    return (rng.standard_normal(shape) * np.sqrt(2 / shape[0])).astype(np.float32)


def _initial_parameters(model: Model) -> list[np.ndarray]:
    """He-scaled normal matrices, zero vectors; batch norm's γ at one."""
    rng = np.random.default_rng(0)
    arrays = [_initial(s, rng) for s in model.shapes()[0]]
    if model.name == "bn":
        arrays = [np.ones_like(a) if k % 3 == 1 and k < 9 else a for k, a in enumerate(arrays)]
    return arrays


def jax_step(model: Model) -> Optional[Callable]:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    params = [jnp.asarray(a) for a in _initial_parameters(model)]
    state = [jnp.zeros(s, jnp.float32) if k % 2 == 0 else jnp.ones(s, jnp.float32)
             for k, s in enumerate(model.shapes()[1])]
    moments = [[jnp.zeros_like(p) for p in params] for _ in range(2)]

    @jax.jit
    def update(params, state, m, v, t, x, y):
        (loss, state), grads = jax.value_and_grad(model.jax_loss, has_aux=True)(params, state, x, y)
        if model.optimizer == "sgd":
            return [p - LR_SGD * g for p, g in zip(params, grads)], state, m, v, t, loss
        t = t + 1
        m = [B1 * a + (1 - B1) * g for a, g in zip(m, grads)]
        v = [B2 * a + (1 - B2) * g * g for a, g in zip(v, grads)]
        params = [p - LR_ADAM * (a / (1 - B1 ** t)) / (jnp.sqrt(b / (1 - B2 ** t)) + EPS)
                  for p, a, b in zip(params, m, v)]
        return params, state, m, v, t, loss

    carry = {"params": params, "state": state, "m": moments[0], "v": moments[1], "t": jnp.zeros((), jnp.float32)}

    def step(x: np.ndarray, y: np.ndarray):
        p, s, m, v, t, loss = update(carry["params"], carry["state"], carry["m"], carry["v"], carry["t"], x, y)
        carry.update(params=p, state=s, m=m, v=v, t=t)
        return loss.block_until_ready()
    return step


# ---------------------------------------------------------------- PyTorch eager

def bn_torch(torch, params, state, x, y):
    for k in range(3):
        W, gamma, beta = params[3 * k:3 * k + 3]
        h = x @ W
        x = torch.sigmoid(torch.nn.functional.batch_norm(h, state[2 * k], state[2 * k + 1], gamma, beta,
                                                         training=True, momentum=BN_MOMENTUM, eps=BN_EPS))
    return torch.nn.functional.cross_entropy(x @ params[9] + params[10], y)


def tanh_torch(torch, params, state, x, y):
    h = torch.tanh(x @ params[0] + params[1])
    h = torch.tanh(h @ params[2] + params[3])
    return torch.nn.functional.cross_entropy(h @ params[4] + params[5], y)


def moe_torch(torch, params, state, x, y):
    gates = torch.softmax(x @ params[-2] + params[-1], dim=-1)
    out = 0.0
    for k in range(EXPERTS):
        W1, b1, W2, b2 = params[4 * k:4 * k + 4]
        out = out + gates[:, k:k + 1] * (torch.relu(x @ W1 + b1) @ W2 + b2)
    return torch.nn.functional.cross_entropy(out, y)


def torch_step(model: Model) -> Optional[Callable]:
    try:
        import torch
    except ImportError:
        return None
    params = [torch.tensor(a, requires_grad=True) for a in _initial_parameters(model)]
    state = [torch.zeros(s) if k % 2 == 0 else torch.ones(s) for k, s in enumerate(model.shapes()[1])]
    optimizer = torch.optim.SGD(params, lr=LR_SGD) if model.optimizer == "sgd" else \
        torch.optim.Adam(params, lr=LR_ADAM, betas=(B1, B2), eps=EPS)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        loss = model.torch_loss(torch, params, state, torch.from_numpy(x), torch.from_numpy(y).long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss)
    return step


MODELS = {
    "bn": Model("bn", 60, "sgd", bn_network, bn_jax, bn_torch, bn_shapes),
    "tanh": Model("tanh", 128, "adam", tanh_mlp, tanh_jax, tanh_torch, tanh_shapes),
    "moe": Model("moe", 128, "adam", mixture_of_experts, moe_jax, moe_torch, moe_shapes),
}


def run(model: Model, data, rounds: int, steps: int, warmup: int) -> None:
    x, y = data.x_train, data.y_train.astype(np.int32)
    versions = {"graphc": graphc_step(model)}
    if vector_math.enabled():
        versions["graphc, scalar libm"] = graphc_step(model, vector_math="off")
    for name, make in (("JAX jit", jax_step), ("PyTorch eager", torch_step)):
        step = make(model)
        if step is not None:
            versions[name] = step
    loss = {}
    for name, step in versions.items():
        for k in range(warmup):
            start = k * model.batch % (len(x) - model.batch)
            loss[name] = float(step(x[start:start + model.batch], y[start:start + model.batch]))
    times = interleaved_times(versions, timing_batches(x, y, model.batch, steps), rounds)
    base = statistics.median(times["graphc"])
    print(f"\n{model.name} (batch {model.batch}, {model.optimizer}): median ms/step over {rounds} rounds of "
          f"{steps} steps, after {warmup} steps of training")
    print(f"{'version':<20}{'ms/step':>9}{'× graphc':>10}{'loss':>9}")
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(f"{name:<20}{ms:>9.3f}{ms / base:>10.2f}{loss[name]:>9.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()
    data = load_fashion_mnist()
    for name in args.models:
        run(MODELS[name], data, args.rounds, args.steps, args.warmup)


if __name__ == "__main__":
    main()
