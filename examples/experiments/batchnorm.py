"""Ioffe & Szegedy (2015), Figure 1: the same sigmoid network trained with and without batch norm.

Three fully connected hidden layers of 100 sigmoid units, mini-batches of 60,
plain SGD with one learning rate for both networks, and identical initial
weights: the dense layers carry explicit names, so the store's per-name
generator gives the two networks the same matrices.

(a) is test accuracy against training steps.  (b, c) follow one unit of the
last hidden layer: the 15th, 50th and 85th percentiles, over a fixed set of
test images, of that unit's input to its sigmoid.  With batch norm that input
is the BN output γx̂ + β.  The paper does not say which BN mode its panels use;
they are computed here with the inference network (``training=False``,
Algorithm 2: the running averages), the network whose accuracy panel (a)
reports; dotted lines give the same percentiles with batch statistics
(``training=True``, the statistics of the probe images themselves).

    python examples/experiments/batchnorm.py [--quick] [--out DIR]

MNIST, the paper's data set, is used as well when $GRAPHC_MNIST points at its files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from common import (accuracy, batch_stream, classifier_inputs, fashion_mnist, main, markdown_table,  # first: pins BLAS
                    mnist_if_installed, save_figure, train, write_markdown)

import matplotlib.pyplot as plt
import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.data import Dataset
from graphc.compiler.compiled_step import CompiledStep

PERCENTILES = (15, 50, 85)


@dataclass(frozen=True)
class Config:
    steps: int = 10_000
    eval_every: int = 100
    batch_size: int = 60
    lr: float = 0.5
    init_std: float = 0.1
    hidden: int = 100
    unit: int = 0  # the unit of the last hidden layer whose sigmoid input is followed
    probe_images: int = 1000  # test images the percentiles are taken over
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    seed: int = 0


FULL = Config()
QUICK = Config(steps=40, eval_every=20, n_train=600, n_test=200, probe_images=100)


def sigmoid_network(config: Config, batch_norm: bool) -> nn.Sequential:
    """784-100-100-100-10; with ``batch_norm``, BN between each hidden dense layer and its sigmoid."""
    init = gc.init.normal(config.init_std)
    layers: list = []
    for i in range(3):
        layers.append(nn.Dense(config.hidden, init=init, name=f"hidden{i}"))
        if batch_norm:
            layers.append(nn.BatchNorm(name=f"bn{i}"))
        layers.append(nn.sigmoid)
    layers.append(nn.Dense(10, init=init, name="output"))
    return nn.Sequential(*layers)


def forward(net: nn.Sequential, x: gc.Node, training: bool) -> tuple[gc.Node, gc.Node]:
    """The logits and the input to the last hidden layer's sigmoids."""
    h, sigmoid_input = x, x
    for layer in net.layers:
        if layer.kind == "sigmoid":
            sigmoid_input = h
        h = layer(h, training)
    return h, sigmoid_input


@dataclass
class Trace:
    """What one network's run records at every evaluation."""

    steps: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    percentiles: list[np.ndarray] = field(default_factory=list)  # inference network (running averages)
    batch_percentiles: list[np.ndarray] = field(default_factory=list)  # batch statistics of the probe images


def train_network(config: Config, data: Dataset, batch_norm: bool) -> Trace:
    x, y = classifier_inputs()
    net = sigmoid_network(config, batch_norm)
    logits, _ = forward(net, x, training=True)
    step = gc.compile(gc.softmax_cross_entropy(logits, y), optimizer=optim.SGD(config.lr), seed=config.seed)
    inference, batch_mode = probe(net, x, step, training=False), probe(net, x, step, training=True)
    probe_x = data.x_test[:config.probe_images]
    trace = Trace()

    def evaluate(k: int) -> None:
        trace.steps.append(k)
        trace.accuracy.append(accuracy(lambda **feeds: inference(**feeds)["logits"], data.x_test, data.y_test))
        trace.percentiles.append(unit_percentiles(inference, probe_x, config.unit))
        trace.batch_percentiles.append(unit_percentiles(batch_mode, probe_x, config.unit))

    train(step, batch_stream(data.x_train, data.y_train, config.batch_size, config.seed), config.steps,
          config.eval_every, evaluate)
    return trace


def probe(net: nn.Sequential, x: gc.Node, step: CompiledStep, training: bool) -> CompiledStep:
    """The logits and the last sigmoid input, compiled as a pure function sharing the step's variables."""
    logits, sigmoid_input = forward(net, x, training)
    return gc.compile({"logits": logits, "sigmoid_input": sigmoid_input}, state=step.state)


def unit_percentiles(probe_fn: CompiledStep, images: np.ndarray, unit: int) -> np.ndarray:
    return np.percentile(probe_fn(x=images)["sigmoid_input"][:, unit], PERCENTILES)


def plot(name: str, traces: dict[str, Trace], config: Config) -> plt.Figure:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for label, trace in traces.items():
        axes[0].plot(trace.steps, trace.accuracy, label=label)
    axes[0].set_title(f"(a) test accuracy, {name}")
    axes[0].set_xlabel("training steps")
    axes[0].legend()
    panels = zip(axes[1:], traces.items(), ("(b)", "(c)"))
    for ax, (label, trace), tag in panels:
        inference, batch = np.array(trace.percentiles), np.array(trace.batch_percentiles)
        for column, q in enumerate(PERCENTILES):
            color = "C0" if q == 50 else "C1"
            legend = "median" if q == 50 else "15th, 85th percentiles" if column == 0 else None
            ax.plot(trace.steps, inference[:, column], color=color, label=legend)
            ax.plot(trace.steps, batch[:, column], color=color, ls=":", lw=1)
        ax.plot([], [], "k:", lw=1, label="batch statistics")
        ax.set_title(f"{tag} {label}, unit {config.unit} of hidden layer 3")
        ax.set_xlabel("training steps")
        ax.set_ylabel("input to the sigmoid")
        ax.legend(fontsize="small")
    shared = [min(ax.get_ylim()[0] for ax in axes[1:]), max(ax.get_ylim()[1] for ax in axes[1:])]
    for ax in axes[1:]:
        ax.set_ylim(*shared)
    return fig


def table_rows(name: str, traces: dict[str, Trace]) -> list[list]:
    rows = []
    for label, trace in traces.items():
        at = dict(zip(trace.steps, trace.accuracy))
        first, last = trace.percentiles[1], trace.percentiles[-1]
        rows.append([name, label, *(at[k] for k in _checkpoint_labels(trace)), _triple(first), _triple(last),
                     _triple(trace.batch_percentiles[-1])])
    return rows


def _triple(values: np.ndarray) -> str:
    return " / ".join(f"{v:+.2f}" for v in values)


def run(config: Config, out_dir: Path) -> dict:
    data_sets = {"Fashion-MNIST": fashion_mnist(config.n_train, config.n_test)}
    mnist = mnist_if_installed(config.n_train, config.n_test)
    if mnist is not None:
        data_sets["MNIST"] = mnist
    rows = []
    results = {}
    for name, data in data_sets.items():
        traces = {label: train_network(config, data, batch_norm)
                  for label, batch_norm in (("without BN", False), ("with BN", True))}
        filename = f"batchnorm_{name.lower().replace('-', '_')}.png"
        save_figure(plot(name, traces, config), out_dir, filename)
        rows += table_rows(name, traces)
        results[name] = traces
    steps = _checkpoint_labels(next(iter(results.values()))["with BN"])
    table = markdown_table(["data", "network", *(f"test acc. @ {k}" for k in steps),
                            f"unit {config.unit} p15/p50/p85 @ {config.eval_every} steps", "… at the end",
                            "… at the end, batch statistics"], rows)
    write_markdown(out_dir, "batchnorm.md", [(
        f"SGD(lr={config.lr:g}), batch {config.batch_size}, N(0, {config.init_std:g}²) initial weights, "
        f"{config.steps} steps", table)])
    return {"rows": rows, "traces": results}


def _checkpoint_labels(trace: Trace) -> list[int]:
    return [trace.steps[len(trace.steps) // 10], trace.steps[len(trace.steps) // 2], trace.steps[-1]]


if __name__ == "__main__":
    main(run, FULL, QUICK, __doc__.splitlines()[0])
