"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one ``.npz`` file holding every variable of the store
(parameters, optimizer state, running statistics) under ``var/<name>``, plus a
JSON text entry with the random generator's state and whatever progress the
trainer records (epoch, history).  Two properties matter more than anything:

* A crash or Ctrl-C while writing never destroys the previous checkpoint: the
  file is written beside its destination, flushed to disk, then renamed over
  it, which POSIX makes atomic.
* Loading never unpickles.  ``np.load`` runs with ``allow_pickle=False`` and
  the metadata is JSON, so a checkpoint from an untrusted place cannot execute
  code; a file holding an object array is refused.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from graphc.errors import CheckpointError
from graphc.runtime.store import Store

FORMAT = 1
_VARIABLE_PREFIX = "var/"
_META_KEY = "meta"


@dataclass
class Checkpoint:
    variables: dict[str, np.ndarray]
    rng_state: dict[str, Any]
    extra: dict[str, Any]  # what the writer chose to record (the trainer's progress)


def save(path: Path, store: Store, extra: Mapping[str, Any]) -> None:
    """Write the store's variables, its generator state and ``extra`` (JSON-able) to ``path``."""
    meta = {"format": FORMAT, "rng": store.rng.bit_generator.state, "extra": dict(extra)}
    arrays = {_VARIABLE_PREFIX + name: value for name, value in store.values.items()}
    arrays[_META_KEY] = np.array(json.dumps(meta, default=_json_default))
    try:
        _write_atomically(path, arrays)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}; "
                              f"check that the folder is writable and the disk is not full") from None


def _json_default(value: Any) -> Any:
    """Generator states of some bit generators hold NumPy arrays and integers."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"cannot record {type(value).__name__} in a checkpoint")


def _write_atomically(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; not every platform can open a folder."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: Path) -> Checkpoint:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise CheckpointError(f"{path} holds pickled objects, which graphc never writes and will not "
                                  f"load ({exc}); it is not a graphc checkpoint") from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({exc}); delete it to start afresh") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({exc}); delete it to start afresh") from None
    meta = _read_meta(path, arrays.pop(_META_KEY, None))
    stray = [key for key in arrays if not key.startswith(_VARIABLE_PREFIX)]
    if stray:
        raise CheckpointError(f"{path} holds an unexpected entry '{stray[0]}'; it is not a graphc checkpoint")
    variables = {key[len(_VARIABLE_PREFIX):]: value for key, value in arrays.items()}
    return Checkpoint(variables, meta["rng"], meta["extra"])


def _read_meta(path: Path, entry: Any) -> dict[str, Any]:
    if entry is None or entry.dtype.kind != "U" or entry.ndim != 0:
        raise CheckpointError(f"{path} has no metadata entry; it is not a graphc checkpoint")
    try:
        meta = json.loads(str(entry[()]))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} has corrupt metadata ({exc}); delete it to start afresh") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {meta.get('format')!r}; "
                              f"this version of graphc reads format {FORMAT}")
    return meta


def restore(store: Store, checkpoint: Checkpoint, source: Path) -> None:
    """Overwrite the store's variables and generator with the checkpoint's.

    The store must already hold every variable of the model (initialized), so
    that a checkpoint of another model is caught here, by name and shape,
    before anything is overwritten.
    """
    check_matches(store.values, checkpoint.variables, source)
    store.load(checkpoint.variables)
    store.rng.bit_generator.state = checkpoint.rng_state


def check_matches(model: Mapping[str, np.ndarray], saved: Mapping[str, np.ndarray], source: Path) -> None:
    """Raise for the first variable (in the model's order) that differs, is missing or is extra."""
    for name, value in model.items():
        other = saved.get(name)
        if other is None or other.shape != value.shape or other.dtype != value.dtype:
            raise _mismatch(source, name, value, other)
    for name, other in saved.items():
        if name not in model:
            raise _mismatch(source, name, None, other)


def _mismatch(source: Path, name: str, in_model: Any, in_checkpoint: Any) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {source} does not fit this model: variable '{name}' is {_describe(in_model)} in the "
        f"model but {_describe(in_checkpoint)} in the checkpoint; it was written for a different model")


def _describe(value: Any) -> str:
    if value is None:
        return "absent"
    return f"{value.dtype}{list(value.shape)}"
