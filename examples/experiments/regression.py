"""The slide's regression case: a linear-output network trained with mean squared error.

The task is forecasting: from a window of noisy samples of a mixture of two
or three sinusoids (random frequencies, amplitudes and phases for every
example; ``graphc.data.noisy_sinusoids``), predict the next samples of the
noise-free signal.  The network is scored against two baselines:
repeating the last observed sample, and the best *linear* predictor, fitted
by least squares on the same training windows (all window samples and a
bias, one column of weights per predicted sample).  Every MSE is per
predicted sample (``gc.mse`` sums over the horizon; the tables divide by it).

    python examples/experiments/regression.py [--quick] [--out DIR]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common import batch_stream, main, markdown_table, save_figure, smooth, train, write_markdown  # first: pins BLAS

import matplotlib.pyplot as plt
import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.data import noisy_sinusoids

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Config:
    window: int = 32
    horizon: int = 8
    noise: float = 0.1
    n_train: int = 20_000
    n_test: int = 2_000
    hidden: tuple[int, ...] = (256, 256)
    steps: int = 6000
    batch_size: int = 64
    lr: float = 1e-3
    examples_shown: int = 4
    seed: int = 0


FULL = Config()
QUICK = Config(n_train=256, n_test=64, hidden=(16,), steps=20, examples_shown=2)


def network_predictions(config: Config, train_set: Split, test_set: Split) -> tuple[np.ndarray, np.ndarray]:
    """The trained network's predictions on the test windows, and its per-step training losses."""
    x, t = gc.input("x", (None, config.window)), gc.input("y", (None, config.horizon))
    layers: list = []
    for width in config.hidden:
        layers += [nn.Dense(width), nn.tanh]
    net = nn.Sequential(*layers, nn.Dense(config.horizon))
    step = gc.compile(gc.mse(net(x), t), optimizer=optim.Adam(config.lr), seed=config.seed)
    losses = train(step, batch_stream(*train_set, config.batch_size, config.seed), config.steps)
    predict = gc.compile(net(x, training=False), state=step.state)
    return np.array(predict(x=test_set[0])), losses / config.horizon


def least_squares_predictions(train_set: Split, test_set: Split) -> np.ndarray:
    """The affine map from a window to the next samples that minimizes the training MSE."""
    def with_bias(x: np.ndarray) -> np.ndarray:
        return np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    weights, *_ = np.linalg.lstsq(with_bias(train_set[0]), train_set[1].astype(np.float64), rcond=None)
    return with_bias(test_set[0]) @ weights


def repeat_last_predictions(test_set: Split) -> np.ndarray:
    x, t = test_set
    return np.repeat(x[:, -1:], t.shape[1], axis=1)


def plot(config: Config, test_set: Split, predictions: dict[str, np.ndarray], losses: np.ndarray) -> plt.Figure:
    """Top: a few test windows with each predictor's forecast; bottom: error by horizon, training curve."""
    fig = plt.figure(figsize=(3.6 * config.examples_shown, 7), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1])
    plot_windows(top.subplots(1, config.examples_shown, squeeze=False)[0], config, test_set, predictions)
    errors, curve = bottom.subplots(1, 2)
    future = np.arange(1, config.horizon + 1)
    for k, (name, p) in enumerate(predictions.items()):
        errors.plot(future, np.mean((p - test_set[1]) ** 2, axis=0), "o-", color=f"C{k}", label=name)
    errors.set_xlabel("samples ahead")
    errors.set_ylabel("test MSE")
    errors.set_yscale("log")
    errors.legend(fontsize="small")
    curve.plot(np.arange(1, len(losses) + 1), smooth(losses, max(1, len(losses) // 50)))
    curve.set_yscale("log")
    curve.set_xlabel("training steps")
    curve.set_ylabel("network's training MSE")
    return fig


def plot_windows(axes: np.ndarray, config: Config, test_set: Split, predictions: dict[str, np.ndarray]) -> None:
    x, t = test_set
    past, future = np.arange(-config.window + 1, 1), np.arange(1, config.horizon + 1)
    for i, ax in enumerate(axes):
        ax.plot(past, x[i], ".-", color="0.6", lw=0.8, ms=3, label="noisy input window")
        ax.plot(future, t[i], "k.-", lw=2, label="true continuation")
        for k, (name, p) in enumerate(predictions.items()):
            ax.plot(future, p[i], ".-", color=f"C{k}", lw=1.2, label=name)
        ax.axvline(0.5, color="0.85")
        ax.set_title(f"test window {i}")
        ax.set_xlabel("sample (0: last observed)")
    axes[0].legend(fontsize="x-small", loc="lower left")


def run(config: Config, out_dir: Path) -> dict:
    train_set = noisy_sinusoids(config.n_train, config.window, config.horizon, config.seed, config.noise)
    test_set = noisy_sinusoids(config.n_test, config.window, config.horizon, config.seed + 1, config.noise)
    network, losses = network_predictions(config, train_set, test_set)
    predictions = {"network": network, "linear least squares": least_squares_predictions(train_set, test_set),
                   "repeat last sample": repeat_last_predictions(test_set)}
    save_figure(plot(config, test_set, predictions, losses), out_dir, "regression.png")
    t = test_set[1]
    rows = [[name, float(np.mean((p - t) ** 2)), float(np.mean((p[:, 0] - t[:, 0]) ** 2)),
             float(np.mean((p[:, -1] - t[:, -1]) ** 2))] for name, p in predictions.items()]
    rows.append(["predict 0 (the signal's power)", float(np.mean(t ** 2)), float(np.mean(t[:, 0] ** 2)),
                 float(np.mean(t[:, -1] ** 2))])
    table = markdown_table(["predictor", "test MSE", "1 sample ahead", f"{config.horizon} samples ahead"], rows)
    network_desc = "-".join(map(str, (config.window, *config.hidden, config.horizon)))
    write_markdown(out_dir, "regression.md", [(
        f"window {config.window}, horizon {config.horizon}, input noise σ = {config.noise:g}; "
        f"{config.n_train} training windows; network {network_desc} tanh, linear output, "
        f"{config.steps} Adam({config.lr:g}) steps of {config.batch_size}", table)])
    return {"rows": rows}


if __name__ == "__main__":
    main(run, FULL, QUICK, __doc__.splitlines()[0])
