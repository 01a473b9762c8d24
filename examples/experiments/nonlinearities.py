"""The slide "Types of non-linearities": tanh, sigmoid and ReLU with their derivatives.

The derivatives are not written here: each is graphc's gradient graph of
Σ f(x) with respect to x, compiled and evaluated on a grid.  Because f acts
elementwise, ∂(Σ_i f(x_i))/∂x_j = f'(x_j), so the gradient graph evaluated on
the grid *is* the derivative curve, and the table measures how far it lies
from the textbook formula.  Run in float64 the deviation is rounding only.

    python examples/experiments/nonlinearities.py [--quick] [--out DIR]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common import main, markdown_table, save_figure, write_markdown  # first: pins BLAS

import matplotlib.pyplot as plt
import numpy as np

import graphc as gc

Analytic = Callable[[np.ndarray], np.ndarray]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# name → (graphc op, analytic derivative); ReLU's derivative at 0 is taken as 0, graphc's convention.
NONLINEARITIES: dict[str, tuple[Callable[[gc.Node], gc.Node], Analytic]] = {
    "tanh": (gc.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "sigmoid": (gc.sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x))),
    "relu": (gc.relu, lambda x: (x > 0).astype(x.dtype)),
}


@dataclass(frozen=True)
class Config:
    points: int = 2001
    limit: float = 5.0
    dtypes: tuple[str, ...] = ("float64", "float32")


FULL = Config()
QUICK = Config(points=101)


def derivative_graph(f: Callable[[gc.Node], gc.Node], dtype: str) -> tuple[gc.Node, gc.Node]:
    """f(x) and d/dx Σ f(x), the latter built by ``gc.grad``, for a vector input x."""
    x = gc.input("x", (None,), dtype=dtype)
    y = f(x)
    (dy_dx,) = gc.grad(gc.sum(y), [x])
    return y, dy_dx


def measure(config: Config) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]], list[list]]:
    """The grid, each function's compiled value and derivative (float64), and the table rows."""
    grid = np.linspace(-config.limit, config.limit, config.points)
    curves: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    for name, (f, analytic) in NONLINEARITIES.items():
        for dtype in config.dtypes:
            x = grid.astype(dtype)
            y, dy_dx = derivative_graph(f, dtype)
            compiled = gc.compile({"value": y, "derivative": dy_dx})(x=x)
            (interpreted,) = gc.evaluate([dy_dx], {"x": x})
            rows.append([name, dtype, float(np.max(np.abs(compiled["derivative"] - analytic(grid)))),
                         float(np.max(np.abs(compiled["derivative"] - interpreted)))])
            if dtype == "float64":
                curves[name] = compiled
    return grid, curves, rows


def plot(grid: np.ndarray, curves: dict[str, dict[str, np.ndarray]]) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, outputs in curves.items():
        axes[0].plot(grid, outputs["value"], label=name)
        axes[1].plot(grid, outputs["derivative"], lw=2.5, alpha=0.6, label=f"{name}'")
    for k, (_, analytic) in enumerate(NONLINEARITIES.values()):
        axes[1].plot(grid, analytic(grid), "k:", lw=1, label="analytic" if k == 0 else None)
    axes[0].set_title("f(x)")
    axes[1].set_title("f'(x) from graphc's gradient graph")
    axes[0].set_ylim(-1.2, 2.0)
    for ax in axes:
        ax.axhline(0, color="0.8", lw=0.8)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.set_xlabel("x")
        ax.legend()
    return fig


def run(config: Config, out_dir: Path) -> dict:
    grid, curves, rows = measure(config)
    save_figure(plot(grid, curves), out_dir, "nonlinearities.png")
    table = markdown_table(["function", "dtype", "max abs(graph f' − analytic f')",
                            "max abs(compiled − interpreter)"], rows)
    write_markdown(out_dir, "nonlinearities.md", [
        (f"Derivatives on {config.points} points of [−{config.limit:g}, {config.limit:g}]", table)])
    return {"rows": rows}


if __name__ == "__main__":
    main(run, FULL, QUICK, __doc__.splitlines()[0])
