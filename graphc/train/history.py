"""The per-epoch record of a training run, and the files it is read from afterwards.

A run leaves three views of the same records: CSV for spreadsheets and
``pandas``, JSON for programs (and for the checkpoint, so a resumed run keeps
its past), and a PNG of the loss and accuracy curves for people.  The plot is
drawn on a bare Agg canvas instead of through ``pyplot``, so writing it never
changes the plotting backend of the program that called the trainer.

Timing fields are kept apart from the metrics because they are the only ones a
replayed run does not reproduce exactly.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Sequence, TextIO

from graphc.errors import GraphcError
from graphc.train.run_folder import write_atomically

TIMING_FIELDS = ("seconds", "examples_per_s")


class HistoryWriteError(GraphcError):
    """A history file that could not be written (a full disk, a read-only folder)."""


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch produced; a metric is None when its data split is empty."""

    epoch: int  # counted from 1
    lr: float
    train_loss: float  # the mean of the batch losses seen while training this epoch
    val_loss: Optional[float]
    val_accuracy: Optional[float]
    test_loss: Optional[float]
    test_accuracy: Optional[float]
    seconds: float  # training time of the epoch, evaluation excluded
    examples_per_s: float
    ranks: int = 1  # processes the epoch's batches were split across
    val_mse: Optional[float] = None  # a regression's mean squared and absolute errors per output value
    val_mae: Optional[float] = None
    test_mse: Optional[float] = None
    test_mae: Optional[float] = None


FIELDS = tuple(f.name for f in fields(EpochRecord))


class History:
    def __init__(self, records: Sequence[EpochRecord] = ()):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: EpochRecord) -> None:
        self.records.append(record)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]

    @classmethod
    def from_dicts(cls, rows: Sequence[dict[str, Any]]) -> "History":
        return cls([EpochRecord(**row) for row in rows])

    def best_epoch(self, monitor: str = "val_loss") -> Optional[int]:
        """The first epoch with the best value of ``monitor`` (a field: the highest accuracy, the
        lowest loss or error); None when no epoch has a value for it (no validation set)."""
        scored = [r for r in self.records if getattr(r, monitor) is not None]
        if not scored:
            return None
        sign = -1 if monitor.endswith("accuracy") else 1
        return min(scored, key=lambda r: (sign * getattr(r, monitor), r.epoch)).epoch

    def epochs_since_best(self, monitor: str = "val_loss") -> int:
        best = self.best_epoch(monitor)
        return 0 if best is None else len(self.records) - best

    def _repr_html_(self) -> str:
        """Jupyter's view of a history: the loss and accuracy curves, then the records."""
        return to_html(self)

    def write(self, directory: Path) -> list[Path]:
        """history.csv, history.json and history.png in ``directory``, each written whole or not at
        all (see :func:`graphc.train.run_folder.write_atomically`); returns their paths."""
        writers: dict[Path, tuple[Callable[[History, Any], None], bool]] = {
            directory / "history.csv": (write_csv, False), directory / "history.json": (write_json, False),
            directory / "history.png": (plot, True)}
        for path, (write, binary) in writers.items():
            try:
                write_atomically(path, lambda handle, write=write: write(self, handle), binary)
            except OSError as exc:
                raise HistoryWriteError(f"cannot write {path}: {exc.strerror or exc}; check that the folder is "
                                        f"writable and the disk is not full (the checkpoint holds the "
                                        f"history too)") from None
        return list(writers)


def write_json(history: History, handle: TextIO) -> None:
    handle.write(json.dumps(history.to_dicts(), indent=1) + "\n")


def write_csv(history: History, handle: TextIO) -> None:
    writer = csv.DictWriter(handle, fieldnames=FIELDS)
    writer.writeheader()
    for row in history.to_dicts():
        writer.writerow({k: "" if v is None else v for k, v in row.items()})


def plot(history: History, handle: BinaryIO | io.StringIO) -> None:
    """Loss curves on the left, accuracy (or a regression's mean absolute error) on the right: PNG
    into a binary file, SVG into a text buffer."""
    # Imported here: matplotlib takes a noticeable fraction of a second to load,
    # which ``graphc show`` and library users who never plot should not pay.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    _curves(loss_axes, history, {"train_loss": "train", "val_loss": "validation", "test_loss": "test"}, "loss")
    if any(r.val_mae is not None or r.test_mae is not None for r in history.records):
        _curves(accuracy_axes, history, {"val_mae": "validation", "test_mae": "test"}, "mean absolute error")
    else:
        _curves(accuracy_axes, history, {"val_accuracy": "validation", "test_accuracy": "test"}, "accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.savefig(handle, dpi=100, format="svg" if isinstance(handle, io.StringIO) else "png")


def to_html(history: History) -> str:
    """The curves and a table of the records, for a notebook."""
    picture = io.StringIO()
    plot(history, picture)
    svg = picture.getvalue()
    header = "".join(f"<th>{name}</th>" for name in FIELDS)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(value)}</td>" for value in row.values()) + "</tr>"
                   for row in history.to_dicts())
    return f"<div>{svg[svg.index('<svg'):]}<table><tr>{header}</tr>{rows}</table></div>"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _curves(axes: Any, history: History, series: dict[str, str], ylabel: str) -> None:
    epochs = [r.epoch for r in history.records]
    for field_name, label in series.items():
        values = [getattr(r, field_name) for r in history.records]
        if any(v is not None for v in values):
            axes.plot(epochs, [math.nan if v is None else v for v in values], marker="o", label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend()
