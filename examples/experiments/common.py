"""What every course experiment shares: the command line, data subsets, a training loop, output files.

Each experiment module defines a frozen ``Config`` with a ``FULL`` and a
``QUICK`` instance and a function ``run(config, out_dir) -> dict`` that writes
its figures and markdown tables into ``out_dir`` and returns its numbers; the
``__main__`` block hands both to :func:`main`.  The tests call ``run`` with the
quick configuration, so the code they exercise is the code that makes the
published figures.

The training loop is written here over ``gc.compile`` steps rather than taken
from :mod:`graphc.train`, because the experiments need what a trainer hides:
the loss of every step, evaluations at arbitrary step counts, and
intermediate nodes of the model compiled for inspection.

This module must be imported before NumPy: it pins the BLAS library to one
thread.  The experiments multiply small matrices (mini-batches of 60 to 128
rows).  On the idle 2-core machine one thread was as fast as two (1.75 vs
1.89 ms for a 784-100-100-100-10 step on 60 rows); with other jobs running,
two threads oversubscribed the cores and the same step took 16 ms instead
of 2.  Setting ``OPENBLAS_NUM_THREADS`` (or ``OMP_NUM_THREADS``) in the
environment overrides this.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator, Optional, Sequence  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("graphc") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import graphc as gc  # noqa: E402
from graphc.data import Batches, Dataset, load_fashion_mnist, load_mnist  # noqa: E402
from graphc.errors import DataError  # noqa: E402
from graphc.nn.summary import count  # noqa: E402
from graphc.compiler.compiled_step import CompiledStep  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "docs" / "experiments"
DPI = 100
EVAL_ROWS = 10_000  # rows per inference call: bounds the memory of an evaluation

Batch = tuple[np.ndarray, np.ndarray]
Row = Sequence[Any]
Predict = Callable[..., np.ndarray]  # outputs (logits, predictions) from x=...: a compiled function


# ------------------------------------------------------------------ command line

def main(run: Callable[[Any, Path], dict], full: Any, quick: Any, description: str) -> None:
    """Parse ``[--quick] [--out DIR]``, run the experiment and report its wall time."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a tiny configuration, for smoke tests")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run(quick if args.quick else full, args.out)
    print(f"wall time: {time.perf_counter() - started:.0f} s; outputs in {args.out}")


# ------------------------------------------------------------------ outputs

def save_figure(fig: plt.Figure, out_dir: Path, filename: str) -> Path:
    """The figure as a 256-colour PNG: plots of lines and a few fills look the same
    in 256 colours, and the file is about a third of the full-colour one."""
    path = out_dir / filename
    rendered = io.BytesIO()
    fig.savefig(rendered, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    image = Image.open(rendered).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"wrote {path}")
    return path


def markdown_table(headers: Row, rows: Sequence[Row]) -> str:
    cells = [[format_cell(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def format_cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        magnitude = abs(float(value))
        if magnitude == 0:
            return "0"
        if magnitude < 1e-3 or magnitude >= 1e5:
            return f"{float(value):.2e}"
        return f"{float(value):.4f}"
    return str(value)


def write_markdown(out_dir: Path, filename: str, sections: Sequence[tuple[str, str]]) -> Path:
    """A markdown file of ``(heading, body)`` sections; bodies are tables or short notes."""
    path = out_dir / filename
    text = "\n\n".join(f"### {heading}\n\n{body}" if heading else body for heading, body in sections)
    path.write_text(text + "\n")
    print(f"wrote {path}")
    return path


# ------------------------------------------------------------------ data

def subset(data: Dataset, n_train: Optional[int], n_test: Optional[int]) -> Dataset:
    """The first ``n_train`` / ``n_test`` examples (all of them for None)."""
    return Dataset(data.x_train[:n_train], data.y_train[:n_train], data.x_test[:n_test], data.y_test[:n_test],
                   data.classes)


def fashion_mnist(n_train: Optional[int] = None, n_test: Optional[int] = None) -> Dataset:
    return subset(load_fashion_mnist(), n_train, n_test)


def mnist_if_installed(n_train: Optional[int] = None, n_test: Optional[int] = None) -> Optional[Dataset]:
    """MNIST when its files can be found ($GRAPHC_MNIST or the default folder), else None."""
    try:
        return subset(load_mnist(), n_train, n_test)
    except DataError as exc:
        print(f"skipping MNIST: {exc}")
        return None


def batch_stream(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> Iterator[Batch]:
    """Mini-batches without end, epoch after epoch, each epoch in its own shuffled order."""
    batches = Batches(x, y, batch_size, seed=seed, drop_last=True)
    epoch = 0
    while True:
        yield from batches.epoch(epoch)
        epoch += 1


# ------------------------------------------------------------------ models and training

def classifier_inputs(features: int = 784) -> tuple[gc.Node, gc.Node]:
    """The input nodes of a classifier: a float32 batch of features and int32 labels."""
    return gc.input("x", (None, features)), gc.input("y", (None,), dtype="int32")


def train(step: CompiledStep, batches: Iterator[Batch], steps: int, every: int = 0,
          on_eval: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Run ``steps`` train steps on (x, y) batches; the loss of each step.

    With ``every`` > 0, ``on_eval(k)`` is called before the first step (k = 0)
    and after every ``every``-th step (k = steps taken so far).
    """
    losses = np.empty(steps)
    if every and on_eval is not None:
        on_eval(0)
    for k in range(steps):
        xb, yb = next(batches)
        losses[k] = step(x=xb, y=yb)
        if every and on_eval is not None and (k + 1) % every == 0:
            on_eval(k + 1)
    return losses


def predict_rows(predict: Predict, x: np.ndarray) -> np.ndarray:
    """``predict`` applied to ``x`` in slices of at most EVAL_ROWS rows, concatenated.

    Each slice's result is copied: a compiled function returns its own output
    buffer, which its next call overwrites.
    """
    return np.concatenate([np.array(predict(x=x[i:i + EVAL_ROWS])) for i in range(0, len(x), EVAL_ROWS)])


def accuracy(predict: Predict, x: np.ndarray, y: np.ndarray) -> float:
    """The fraction of rows whose largest output is the label."""
    return float(np.mean(predict_rows(predict, x).argmax(axis=1) == y))


def mean_cross_entropy(predict: Predict, x: np.ndarray, y: np.ndarray) -> float:
    """The average softmax cross-entropy of the logits ``predict`` gives on the whole of (x, y)."""
    logits = predict_rows(predict, x).astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.mean(log_probs[np.arange(len(y)), y]))


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """The running mean over ``window`` consecutive values (shorter at the start)."""
    totals = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (totals[ends] - totals[starts]) / (ends - starts)


def parameter_count(module: gc.nn.Module) -> int:
    return count(module.parameters())
