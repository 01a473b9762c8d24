"""The slide "Weight decay regularization": decision boundaries of one MLP under growing L2 penalties.

The loss is graphc's: mean cross-entropy + λ · ½ Σ w² over the weight
matrices (``nn.l2``; biases are not penalized).  The slide's strengths 0, 40
and 4000 belong to an error *summed* over the N training points,
E = Σ_n CE_n + λ' · ½ Σ w²; dividing E by N gives the same minimizer with
λ = λ' / N.  That literal mapping is in the table, but the slide's network,
data scale and penalty convention are not known, so its absolute values do
not transfer: here λ'/N = 0.4 already crushes every weight to zero.  The
plot keeps the slide's ratios 0 : 1 : 100 instead, with the scale
(``Config.slide_scale``) chosen so that the middle strength smooths the
boundary without flattening it; the table sweeps λ more widely.

Training is full-batch Adam, long enough for the unregularized network to fit
the training points as closely as it can.

    python examples/experiments/weight_decay.py [--quick] [--out DIR]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common import (accuracy, classifier_inputs, main, markdown_table, save_figure,  # first: pins BLAS
                    write_markdown)

import matplotlib.pyplot as plt
import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.data import two_moons
from graphc.compiler.compiled_step import CompiledStep

SLIDE_STRENGTHS = (0.0, 40.0, 4000.0)
Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Config:
    n_train: int = 100
    n_test: int = 2000
    noise: float = 0.3
    hidden: int = 64
    steps: int = 4000
    lr: float = 0.01
    slide_scale: float = 2.5e-5  # λ = slide_scale · λ' for the plotted strengths
    sweep: tuple[float, ...] = (1e-4, 3e-3, 1e-2, 3e-2, 1.0)
    grid: int = 200
    seed: int = 0

    def strengths(self) -> list[tuple[float, str]]:
        """Each λ to fit with where it comes from: first the three plotted ones, in the slide's order."""
        plotted = [(s * self.slide_scale, f"slide {s:g} × {self.slide_scale:g}") for s in SLIDE_STRENGTHS]
        literal = [(s / self.n_train, f"slide {s:g} ÷ N") for s in SLIDE_STRENGTHS[1:]]
        return plotted + literal + [(s, "sweep") for s in self.sweep]


FULL = Config()
QUICK = Config(n_train=40, n_test=100, steps=30, sweep=(1e-2,), grid=30)


@dataclass
class Fit:
    strength: float
    origin: str
    predict: CompiledStep
    train_accuracy: float
    test_accuracy: float
    squared_weights: float


def fit(config: Config, strength: float, origin: str, train: Split, test: Split) -> Fit:
    x_train, y_train = train
    x, y = classifier_inputs(features=2)
    net = nn.Sequential(nn.Dense(config.hidden), nn.tanh, nn.Dense(config.hidden), nn.tanh, nn.Dense(2))
    logits = net(x)
    loss = gc.softmax_cross_entropy(logits, y)
    if strength:
        loss = loss + strength * nn.l2(net)
    step = gc.compile(loss, optimizer=optim.Adam(config.lr), seed=config.seed)
    for _ in range(config.steps):
        step(x=x_train, y=y_train)
    predict = gc.compile(logits, state=step.state)
    squared = sum(float(np.sum(step.state.values[w.name] ** 2)) for w in nn.weights(net))
    return Fit(strength, origin, predict, accuracy(predict, *train), accuracy(predict, *test), squared)


def plot(fits: list[Fit], x_train: np.ndarray, y_train: np.ndarray, config: Config) -> plt.Figure:
    lo, hi = x_train.min(axis=0) - 0.5, x_train.max(axis=0) + 0.5
    u, v = np.meshgrid(np.linspace(lo[0], hi[0], config.grid), np.linspace(lo[1], hi[1], config.grid))
    points = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float32)
    fig, axes = plt.subplots(1, len(fits), figsize=(4.2 * len(fits), 4))
    for ax, f in zip(np.atleast_1d(axes), fits):
        logits = f.predict(x=points).astype(np.float64)
        p1 = 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))
        ax.contourf(u, v, p1.reshape(u.shape), levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
        ax.contour(u, v, p1.reshape(u.shape), levels=[0.5], colors="k")
        ax.scatter(*x_train.T, c=y_train, cmap="RdBu_r", edgecolors="k", s=18)
        ax.set_title(f"λ = {f.strength:g} ({f.origin})\ntrain {f.train_accuracy:.2f}, test {f.test_accuracy:.3f}")
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def run(config: Config, out_dir: Path) -> dict:
    train = two_moons(config.n_train, config.noise, seed=config.seed)
    test = two_moons(config.n_test, config.noise, seed=config.seed + 1)
    fits = [fit(config, strength, origin, train, test) for strength, origin in config.strengths()]
    save_figure(plot(fits[:len(SLIDE_STRENGTHS)], *train, config), out_dir, "weight_decay.png")
    rows = [[f"{f.strength:g}", f.origin, f.train_accuracy, f.test_accuracy, f.squared_weights]
            for f in sorted(fits, key=lambda f: f.strength)]
    table = markdown_table(["λ (mean loss)", "origin", "train accuracy", "test accuracy", "Σ w²"], rows)
    write_markdown(out_dir, "weight_decay.md", [(
        f"two_moons: {config.n_train} training points, noise {config.noise:g}; 2-{config.hidden}-"
        f"{config.hidden}-2 tanh MLP, full-batch Adam({config.lr:g}), {config.steps} steps", table)])
    return {"rows": rows}


if __name__ == "__main__":
    main(run, FULL, QUICK, __doc__.splitlines()[0])
