"""The slide "Other approaches": training with noise, mixtures of models, mixtures of experts.

(a) Training with input noise versus weight decay on a small regression:
twelve noisy samples of sin(2πx), fitted by a 1-64-64-1 tanh network with
full-batch Adam.  Without regularization the network threads every point;
Gaussian noise added to the inputs at each step (``nn.GaussianNoise``, active
only while training) smooths the fit much as an L2 penalty does; Bishop
(1995) shows that, for small noise, it is equivalent to a Tikhonov
regularizer.  The fits are scored against the noise-free function.

(b) On Fashion-MNIST, at about equal parameter counts: one 784-128-10 MLP, a
mixture of four 784-32-10 experts with a linear softmax gate on the pixels
(``nn.MixtureOfExperts``), and two mixtures of models built from the same
four small MLPs: ``nn.Ensemble`` trained jointly on the averaged
probabilities, and four members trained separately (different seeds) whose
probabilities are averaged afterwards.  All get the same epochs of Adam.

    python examples/experiments/other_approaches.py [--quick] [--out DIR]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from common import (batch_stream, classifier_inputs, fashion_mnist, main, markdown_table,  # first: pins BLAS
                    parameter_count, predict_rows, save_figure, train, write_markdown)

import matplotlib.pyplot as plt
import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.data import Dataset


@dataclass(frozen=True)
class Config:
    # (a) regression
    points: int = 12
    target_noise: float = 0.25
    hidden: int = 64
    regression_steps: int = 4000
    input_noise: tuple[float, ...] = (0.01, 0.03)
    l2: tuple[float, ...] = (1e-4, 1e-3)
    data_seeds: tuple[int, ...] = (0, 1, 2)  # training sets drawn; the figure shows the first
    # (b) Fashion-MNIST
    experts: int = 4
    expert_width: int = 32
    mlp_width: int = 128
    epochs: int = 3
    batch_size: int = 128
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    seed: int = 0


FULL = Config()
QUICK = Config(regression_steps=30, input_noise=(0.1,), l2=(1e-3,), data_seeds=(0,), experts=2, expert_width=8,
               mlp_width=16, epochs=1, n_train=512, n_test=200)


# ------------------------------------------------------------------ (a) noise versus L2

def truth(x: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * x)


@dataclass
class Curve:
    label: str
    prediction: np.ndarray  # on the evaluation grid
    train_mse: float
    test_mse: float  # against the noise-free function on the grid


def regression_data(config: Config, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0.0, 1.0, config.points))
    t = truth(x) + rng.normal(0.0, config.target_noise, config.points)
    return x[:, None].astype(np.float32), t[:, None].astype(np.float32)


def fit_curve(config: Config, label: str, input_noise: float, l2: float, data: tuple[np.ndarray, np.ndarray],
              grid: np.ndarray) -> Curve:
    x_train, t_train = data
    x, t = gc.input("x", (None, 1)), gc.input("y", (None, 1))
    net = nn.Sequential(nn.GaussianNoise(input_noise), nn.Dense(config.hidden), nn.tanh,
                        nn.Dense(config.hidden), nn.tanh, nn.Dense(1))
    loss = gc.mse(net(x), t)
    if l2:
        loss = loss + l2 * nn.l2(net)
    step = gc.compile(loss, optimizer=optim.Adam(0.01), seed=config.seed)
    for _ in range(config.regression_steps):
        step(x=x_train, y=t_train)
    predict = gc.compile(net(x, training=False), state=step.state)
    on_grid = np.array(predict(x=grid[:, None].astype(np.float32)))[:, 0]
    on_train = np.array(predict(x=x_train))
    return Curve(label, on_grid, float(np.mean((on_train - t_train) ** 2)),
                 float(np.mean((on_grid - truth(grid)) ** 2)))


def noise_versus_l2(config: Config, data_seed: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, list[Curve]]:
    data = regression_data(config, data_seed)
    grid = np.linspace(0.0, 1.0, 400)
    settings = [("no regularization", 0.0, 0.0)]
    settings += [(f"input noise σ = {s:g}", s, 0.0) for s in config.input_noise]
    settings += [(f"L2 λ = {lam:g}", 0.0, lam) for lam in config.l2]
    curves = [fit_curve(config, label, noise, lam, data, grid) for label, noise, lam in settings]
    return data, grid, curves


def curve_rows(runs: list[list[Curve]]) -> list[list]:
    """One row per training setting: its training MSE and its test MSE on each data set, and their mean."""
    rows = []
    for k, first in enumerate(runs[0]):
        test = [curves[k].test_mse for curves in runs]
        rows.append([first.label, float(np.mean([curves[k].train_mse for curves in runs])), *test,
                     float(np.mean(test))])
    return rows


def plot_regression(data: tuple[np.ndarray, np.ndarray], grid: np.ndarray, curves: list[Curve]) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    panels = (("training with input noise", "noise"), ("weight decay", "L2"))
    for ax, (title, key) in zip(axes, panels):
        ax.plot(grid, truth(grid), "k--", lw=1, label="sin(2πx)")
        ax.plot(*data, "ko", ms=5, label="training points")
        shown = [c for c in curves if key in c.label or c.label == "no regularization"]
        for k, c in enumerate(shown):
            ax.plot(grid, c.prediction, color=f"C{k}", label=f"{c.label} (test MSE {c.test_mse:.3f})")
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.set_ylim(-2.0, 2.0)
        ax.legend(fontsize="small", loc="lower left")
    return fig


# ------------------------------------------------------------------ (b) mixtures

@dataclass
class Model:
    name: str
    parameters: int
    probabilities: np.ndarray  # on the test set


def small_mlp(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Dense(width, init="he"), nn.relu, nn.Dense(10, init="he"))


def train_classifier(config: Config, data: Dataset, build: Callable[[], nn.Module], name: str, seed: int) -> Model:
    x, y = classifier_inputs()
    model = build()
    logits = model(x)
    step = gc.compile(gc.softmax_cross_entropy(logits, y), optimizer=optim.Adam(), seed=seed)
    steps = config.epochs * (len(data.x_train) // config.batch_size)
    train(step, batch_stream(data.x_train, data.y_train, config.batch_size, seed), steps)
    predict = gc.compile(gc.softmax(model(x, training=False)), state=step.state)
    return Model(name, parameter_count(model), predict_rows(predict, data.x_test))


def mixtures(config: Config, data: Dataset) -> list[Model]:
    k, width = config.experts, config.expert_width
    members = [train_classifier(config, data, lambda: small_mlp(width), f"one 784-{width}-10 member (seed {s})",
                                config.seed + s) for s in range(k)]
    separately = Model(f"{k} members trained separately, probabilities averaged",
                       sum(m.parameters for m in members), np.mean([m.probabilities for m in members], axis=0))
    builders: list[tuple[str, Callable[[], nn.Module]]] = [
        (f"MLP 784-{config.mlp_width}-10", lambda: small_mlp(config.mlp_width)),
        (f"mixture of {k} experts 784-{width}-10, linear gate",
         lambda: nn.MixtureOfExperts([small_mlp(width) for _ in range(k)])),
        (f"nn.Ensemble of {k} (probabilities), trained jointly",
         lambda: nn.Ensemble([small_mlp(width) for _ in range(k)], average="probabilities")),
    ]
    trained = [train_classifier(config, data, build, name, config.seed) for name, build in builders]
    return trained + [separately, members[0]]


def model_accuracy(model: Model, labels: np.ndarray) -> float:
    return float(np.mean(model.probabilities.argmax(axis=1) == labels))


def run(config: Config, out_dir: Path) -> dict:
    fits = [noise_versus_l2(config, seed) for seed in config.data_seeds]
    save_figure(plot_regression(*fits[0]), out_dir, "other_approaches_noise.png")
    regression_rows = curve_rows([curves for _, _, curves in fits])

    images = fashion_mnist(config.n_train, config.n_test)
    models = mixtures(config, images)
    model_rows = [[m.name, f"{m.parameters:,}", model_accuracy(m, images.y_test)] for m in models]

    write_markdown(out_dir, "other_approaches.md", [
        (f"(a) {config.points} points of sin(2πx) + N(0, {config.target_noise:g}²), 1-{config.hidden}-"
         f"{config.hidden}-1 tanh, {config.regression_steps} full-batch Adam(0.01) steps; "
         f"{len(config.data_seeds)} training sets (seeds {list(config.data_seeds)}), the figure shows the first",
         markdown_table(["training", "training MSE (mean)",
                         *(f"MSE against sin(2πx), seed {s}" for s in config.data_seeds), "mean"],
                        regression_rows)),
        (f"(b) Fashion-MNIST, {config.epochs} epochs of Adam(0.001), batch {config.batch_size}",
         markdown_table(["model", "parameters", "test accuracy"], model_rows))])
    return {"curve_rows": regression_rows, "models": models, "model_rows": model_rows}


if __name__ == "__main__":
    main(run, FULL, QUICK, __doc__.splitlines()[0])
