"""The slide "DNNs for MNIST": test accuracy against the number of hidden layers.

Every network has hidden layers of one width (ReLU, He initialization) and
gets the same budget: the same epochs of the same mini-batches with Adam at
its default learning rate.  Each depth is trained from several seeds
(initial weights and batch order), so the spread between seeds shows which
differences between depths are larger than the noise.  Two widths are run:
the brief's 128, where a single hidden layer is already wide, and a narrow 32.

    python examples/experiments/depth.py [--quick] [--out DIR]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common import (accuracy, batch_stream, classifier_inputs, fashion_mnist, main, markdown_table,  # first: pins BLAS
                    mean_cross_entropy, parameter_count, save_figure, train, write_markdown)

import matplotlib.pyplot as plt
import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.data import Dataset


@dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    widths: tuple[int, ...] = (32, 128)
    epochs: int = 4
    batch_size: int = 128
    seeds: tuple[int, ...] = (0, 1, 2)
    n_train: Optional[int] = None
    n_test: Optional[int] = None


FULL = Config()
QUICK = Config(depths=(1, 2), widths=(16,), epochs=1, seeds=(0,), n_train=512, n_test=200)


@dataclass
class Result:
    width: int
    depth: int
    seed: int
    parameters: int
    train_loss: float
    test_accuracy: float


def mlp(depth: int, width: int) -> nn.Sequential:
    layers: list = []
    for _ in range(depth):
        layers += [nn.Dense(width, init="he"), nn.relu]
    return nn.Sequential(*layers, nn.Dense(10, init="he"))


def train_depth(config: Config, data: Dataset, width: int, depth: int, seed: int) -> Result:
    x, y = classifier_inputs()
    net = mlp(depth, width)
    logits = net(x)
    step = gc.compile(gc.softmax_cross_entropy(logits, y), optimizer=optim.Adam(), seed=seed)
    steps = config.epochs * (len(data.x_train) // config.batch_size)
    train(step, batch_stream(data.x_train, data.y_train, config.batch_size, seed), steps)
    predict = gc.compile(logits, state=step.state)
    return Result(width, depth, seed, parameter_count(net), mean_cross_entropy(predict, data.x_train, data.y_train),
                  accuracy(predict, data.x_test, data.y_test))


def plot(results: list[Result], config: Config) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    depths = np.array(config.depths)
    for k, width in enumerate(config.widths):
        by_depth = np.array([[r.test_accuracy for r in results if (r.width, r.depth) == (width, d)]
                             for d in config.depths])
        ax.plot(np.repeat(depths, by_depth.shape[1]), by_depth.ravel(), "o", color=f"C{k}", ms=3, alpha=0.5)
        ax.plot(depths, by_depth.mean(axis=1), "-o", color=f"C{k}", label=f"width {width}")
    ax.set_xticks(depths)
    ax.set_xlabel("hidden layers (ReLU)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Fashion-MNIST, {config.epochs} epochs of Adam(0.001) for every network\n"
                 f"line: mean of {len(config.seeds)} seeds, dots: single seeds")
    ax.legend()
    return fig


def run(config: Config, out_dir: Path) -> dict:
    data = fashion_mnist(config.n_train, config.n_test)
    results = [train_depth(config, data, width, depth, seed)
               for width in config.widths for depth in config.depths for seed in config.seeds]
    save_figure(plot(results, config), out_dir, "depth.png")
    rows = []
    for width in config.widths:
        for depth in config.depths:
            group = [r for r in results if (r.width, r.depth) == (width, depth)]
            accuracies = [r.test_accuracy for r in group]
            rows.append([width, depth, f"{group[0].parameters:,}", float(np.mean([r.train_loss for r in group])),
                         float(np.mean(accuracies)), float(min(accuracies)), float(max(accuracies))])
    table = markdown_table(["width", "hidden layers", "parameters", "training loss (mean)", "test accuracy (mean)",
                            "min over seeds", "max over seeds"], rows)
    write_markdown(out_dir, "depth.md", [(
        f"{config.epochs} epochs, batch {config.batch_size}, seeds {list(config.seeds)}", table)])
    return {"rows": rows, "results": results}


if __name__ == "__main__":
    main(run, FULL, QUICK, __doc__.splitlines()[0])
