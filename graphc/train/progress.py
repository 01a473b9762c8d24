"""Where a run stands, and reading that back from a checkpoint someone may have edited.

A checkpoint's progress record decides which batch the resumed run takes
next, how many epochs it believes are done and what it reports as the past,
so every field is checked for type and range against the run that reads it
before it is used: an edited batch of 10⁹ or epoch of −5 is refused in one
line naming the field, instead of surfacing later as a division by zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from graphc.errors import CheckpointError
from graphc.train.history import FIELDS, History


@dataclass
class Progress:
    """Where the run stands: epochs completed, and how far into the next one."""

    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0  # Σ batch loss × batch size over the batches done this epoch
    examples: int = 0
    seconds: float = 0.0


_OPTIONAL = {"val_loss", "val_accuracy", "test_loss", "test_accuracy", "val_mse", "val_mae", "test_mse", "test_mae"}
_ADDED = {"val_mse", "val_mae", "test_mse", "test_mae"}  # absent from the records of older checkpoints


def read_progress(extra: Mapping[str, Any], batches_per_epoch: int, path: Path) -> tuple[Progress, History]:
    """The progress and history a checkpoint recorded, checked field by field."""
    raw = extra.get("progress")
    if not isinstance(raw, dict) or set(raw) != {f.name for f in fields(Progress)}:
        raise _bad(path, f"its progress record is {_summary(raw)}, not the fields "
                         f"{', '.join(f.name for f in fields(Progress))}")
    for name in ("epoch", "batch", "examples"):
        if not is_integer(raw[name]) or raw[name] < 0:
            raise _bad(path, f"progress {name}={raw[name]!r} is not a count (an integer >= 0)")
    for name in ("loss_sum", "seconds"):
        if not is_number(raw[name]) or not math.isfinite(raw[name]) or (name == "seconds" and raw[name] < 0):
            raise _bad(path, f"progress {name}={raw[name]!r} is not a finite number")
    if raw["batch"] >= batches_per_epoch:
        raise _bad(path, f"progress batch={raw['batch']} is past the end of an epoch of {batches_per_epoch} batches")
    progress = Progress(**raw)
    return progress, _read_history(extra.get("history"), progress.epoch, path)


def _read_history(rows: Any, epochs_done: int, path: Path) -> History:
    if not isinstance(rows, list) or len(rows) != epochs_done:
        raise _bad(path, f"its history is {_summary(rows)}, but its progress says {epochs_done} epochs are done")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not set(FIELDS) - _ADDED <= set(row) <= set(FIELDS):
            raise _bad(path, f"history row {number} is {_summary(row)}, not the fields {', '.join(FIELDS)}")
        if row["epoch"] != number:
            raise _bad(path, f"history row {number} has epoch={row['epoch']!r}")
        for name in [n for n in FIELDS if n in row]:
            if not (is_number(row[name]) or (row[name] is None and name in _OPTIONAL)):
                raise _bad(path, f"history row {number} has {name}={row[name]!r}, not a number")
    return History.from_dicts(rows)


def _bad(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path} cannot be resumed: {problem}; it was edited or damaged, delete it "
                           f"to start afresh")


def _summary(value: Any) -> str:
    if isinstance(value, dict):
        return "a record of " + (", ".join(sorted(map(str, value))) or "nothing")
    return f"a {type(value).__name__}" if value is not None else "missing"


def is_integer(value: Any) -> bool:
    """An int that is not a bool (JSON and model files give both)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
