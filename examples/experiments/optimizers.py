"""Ruder's "overview of gradient descent optimization algorithms", replayed with graphc's optimizers.

(a) Trajectories on two 2-D surfaces: an ill-conditioned quadratic (the
ravine of Ruder's momentum figure: 50 times steeper across than along) and
Rosenbrock's banana valley.  Each is the loss of one model whose only
parameter is θ = (x, y), a ``gc.param`` of shape (2,), so the compiled train
step is the optimizer itself and θ after each step is the trajectory.
Learning rates are chosen per surface and method by hand (plain SGD just
below its stability limit 2/50 on the quadratic; momentum and NAG with
γ = 0.9), so the paths show each rule's character rather than one shared,
arbitrary step size.

(b) Training loss of every optimizer in ``graphc.optim`` on the same
Fashion-MNIST MLP, from the same initial weights and the same batches, at
each optimizer's default learning rate, with plain SGD also run at 0.1
(its default of 0.01 is far too small for this network).

    python examples/experiments/optimizers.py [--quick] [--out DIR]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from common import (accuracy, batch_stream, classifier_inputs, fashion_mnist, main, markdown_table,  # first: pins BLAS
                    mean_cross_entropy, save_figure, smooth, train, write_markdown)

import matplotlib.pyplot as plt
import numpy as np

import graphc as gc
from graphc import nn, optim

PATH_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam")
THRESHOLD = 1e-3  # the table counts the steps each path needs to bring f below this


@dataclass(frozen=True)
class Surface:
    """A 2-D loss f(x, y) written with operators only, so it takes graph nodes and arrays alike."""

    name: str
    f: Callable[[Any, Any], Any]
    start: tuple[float, float]
    minimum: tuple[float, float]
    window: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max of the plot
    steps: int
    lrs: dict[str, float]


QUADRATIC = Surface(
    name="ill-conditioned quadratic ½(x² + 50 y²)",
    f=lambda x, y: 0.5 * (x * x + 50.0 * y * y),
    start=(-4.5, 1.0), minimum=(0.0, 0.0), window=(-5.0, 1.5, -1.6, 1.6), steps=150,
    lrs={"sgd": 0.038, "momentum": 0.01, "nesterov": 0.01, "adagrad": 1.0, "adadelta": 1.0, "rmsprop": 0.1,
         "adam": 0.2})

ROSENBROCK = Surface(
    name="Rosenbrock (1 − x)² + 100 (y − x²)²",
    f=lambda x, y: (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2,
    start=(-1.2, 1.0), minimum=(1.0, 1.0), window=(-1.7, 1.6, -0.4, 1.7), steps=3000,
    lrs={"sgd": 0.001, "momentum": 0.0002, "nesterov": 0.0002, "adagrad": 0.3, "adadelta": 1.0,
         "rmsprop": 0.01, "adam": 0.05})


@dataclass(frozen=True)
class Config:
    path_steps_scale: float = 1.0  # multiplies each surface's number of steps
    mlp_steps: int = 2000
    batch_size: int = 128
    hidden: tuple[int, ...] = (256, 128)
    extra_runs: tuple[tuple[str, float], ...] = (("sgd", 0.1),)  # (optimizer, lr) beyond the defaults
    optimizers: tuple[str, ...] = tuple(optim.BY_NAME)
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    seed: int = 0


FULL = Config()
QUICK = Config(path_steps_scale=0.01, mlp_steps=10, hidden=(32,), optimizers=("sgd", "adam"), extra_runs=(),
               n_train=512, n_test=200)


# ------------------------------------------------------------------ (a) trajectories

def trajectory(surface: Surface, optimizer: str, steps: int) -> np.ndarray:
    """θ before the first step and after each of ``steps`` steps of ``optimizer``, shape (steps + 1, 2)."""
    start = np.array(surface.start)
    theta = gc.param("theta", (2,), init=lambda rng, shape, dtype: start.astype(dtype), dtype="float64")
    x, y = (gc.reshape(gc.slice(theta, i, i + 1), ()) for i in range(2))
    step = gc.compile(surface.f(x, y), optimizer=optim.make(optimizer, surface.lrs[optimizer]))
    path = [start]
    for _ in range(steps):
        step()
        path.append(step.state.values["theta"].copy())
    return np.array(path)


def path_summary(surface: Surface, optimizer: str, path: np.ndarray) -> tuple[float, float, str]:
    """The learning rate, f at the end, and the first step with f below THRESHOLD ("never" if none)."""
    values = surface.f(path[:, 0], path[:, 1])
    below = np.flatnonzero(values < THRESHOLD)
    return surface.lrs[optimizer], float(values[-1]), str(below[0]) if below.size else "never"


def plot_trajectories(paths: dict[str, dict[str, np.ndarray]], surfaces: list[Surface]) -> plt.Figure:
    """Top row: the paths over the contours of log(1 + f); bottom row: f along each path."""
    fig, axes = plt.subplots(2, len(surfaces), figsize=(7 * len(surfaces), 9.5),
                             gridspec_kw={"height_ratios": [3, 2]})
    for column, surface in enumerate(surfaces):
        top, bottom = axes[0, column], axes[1, column]
        x0, x1, y0, y1 = surface.window
        u, v = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
        top.contour(u, v, np.log1p(surface.f(u, v)), levels=25, colors="0.75", linewidths=0.6)
        for k, (name, path) in enumerate(paths[surface.name].items()):
            label = f"{name} ({surface.lrs[name]:g})"
            top.plot(path[:, 0], path[:, 1], "-", color=f"C{k}", lw=1.3, label=label)
            top.plot(*path[-1], "o", color=f"C{k}", ms=4)
            bottom.plot(surface.f(path[:, 0], path[:, 1]), color=f"C{k}", label=label)
        top.plot(*surface.start, "ks", ms=5)
        top.plot(*surface.minimum, "k*", ms=12)
        top.set_xlim(x0, x1)
        top.set_ylim(y0, y1)
        top.set_title(f"{surface.name}, {len(path) - 1} steps")
        top.legend(fontsize="small", loc="lower right")
        bottom.set_yscale("log")
        bottom.set_ylim(bottom=1e-8)
        bottom.set_xlabel("step")
        bottom.set_ylabel("f(θ)")
    return fig


# ------------------------------------------------------------------ (b) training curves

@dataclass
class Run:
    optimizer: str
    lr: float
    losses: np.ndarray
    final_loss: float
    test_accuracy: float


def train_mlp(config: Config, data: Any, optimizer: optim.Optimizer) -> Run:
    x, y = classifier_inputs()
    layers: list = []
    for width in config.hidden:
        layers += [nn.Dense(width, init="he"), nn.relu]
    net = nn.Sequential(*layers, nn.Dense(10, init="he"))
    logits = net(x)
    step = gc.compile(gc.softmax_cross_entropy(logits, y), optimizer=optimizer, seed=config.seed)
    losses = train(step, batch_stream(data.x_train, data.y_train, config.batch_size, config.seed),
                   config.mlp_steps)
    predict = gc.compile(logits, state=step.state)
    return Run(optimizer.name, float(optimizer.lr), losses, mean_cross_entropy(predict, data.x_train, data.y_train),
               accuracy(predict, data.x_test, data.y_test))


def plot_curves(runs: list[Run], config: Config) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9, 5))
    window = max(1, config.mlp_steps // 20)
    for k, r in enumerate(runs):
        style = "--" if k >= 10 else "-"
        ax.plot(np.arange(1, len(r.losses) + 1), smooth(r.losses, window), style, color=f"C{k % 10}",
                label=f"{r.optimizer} ({r.lr:g})")
    ax.set_yscale("log")
    ax.set_xlabel("training steps (batches of %d)" % config.batch_size)
    ax.set_ylabel(f"training loss (running mean of {window} steps)")
    ax.set_title("Fashion-MNIST MLP " + "-".join(map(str, (784, *config.hidden, 10))))
    ax.legend(ncol=2, fontsize="small")
    return fig


def mlp_optimizers(config: Config) -> list[optim.Optimizer]:
    defaults = [optim.make(name) for name in config.optimizers]
    return defaults + [optim.make(name, lr) for name, lr in config.extra_runs]


def run(config: Config, out_dir: Path) -> dict:
    surfaces = [QUADRATIC, ROSENBROCK]
    steps = {s.name: max(1, round(s.steps * config.path_steps_scale)) for s in surfaces}
    paths = {s.name: {name: trajectory(s, name, steps[s.name]) for name in PATH_OPTIMIZERS} for s in surfaces}
    save_figure(plot_trajectories(paths, surfaces), out_dir, "optimizers_paths.png")
    path_rows = [[name, *(v for s in surfaces for v in path_summary(s, name, paths[s.name][name]))]
                 for name in PATH_OPTIMIZERS]

    data = fashion_mnist(config.n_train, config.n_test)
    runs = [train_mlp(config, data, optimizer) for optimizer in mlp_optimizers(config)]
    save_figure(plot_curves(runs, config), out_dir, "optimizers_fashion_mnist.png")
    run_rows = [[r.optimizer, r.lr, r.final_loss, r.test_accuracy] for r in runs]

    write_markdown(out_dir, "optimizers.md", [
        (f"(a) f at the end of each path, and the first step where f < {THRESHOLD:g}",
         markdown_table(["optimizer", *(h for s in surfaces for h in (
             f"lr ({s.name.split()[0]})", f"f after {steps[s.name]} steps", f"steps to f < {THRESHOLD:g}"))],
                        path_rows)),
        (f"(b) Fashion-MNIST MLP, {config.mlp_steps} steps of {config.batch_size}",
         markdown_table(["optimizer", "lr", "final training loss (whole set)", "test accuracy"], run_rows))])
    return {"paths": paths, "path_rows": path_rows, "runs": runs, "run_rows": run_rows}


if __name__ == "__main__":
    main(run, FULL, QUICK, __doc__.splitlines()[0])
