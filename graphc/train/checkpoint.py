"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one ``.npz`` file holding every variable of the store
(parameters, optimizer state, running statistics) under ``var/<name>``, plus a
JSON text entry with the random generator's state and whatever progress the
trainer records (epoch, history).  Two properties matter more than anything:

* A crash or Ctrl-C while writing never destroys the previous checkpoint: the
  file is written beside its destination, flushed to disk, then renamed over
  it, which POSIX makes atomic (the file gets the permissions the umask gives).
* Loading never unpickles.  ``np.load`` runs with ``allow_pickle=False`` and
  the metadata is JSON, so a checkpoint from an untrusted place cannot execute
  code; a file holding an object array is refused.
* Loading never trusts sizes.  Every array's header (shape, dtype) is read
  from the archive and checked, against the model when the caller gives it,
  before any array is decompressed: a 3 MB file claiming a 3 GB array is
  refused without allocating it.
"""
from __future__ import annotations

import json
import math
import os
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from graphc.errors import CheckpointError
from graphc.runtime import memory_check
from graphc.runtime.store import Store
from graphc.train.run_folder import write_atomically

FORMAT = 1
_VARIABLE_PREFIX = "var/"
_META_KEY = "meta"
MAX_META_BYTES = 64 * 2**20  # progress and history of a long run take kilobytes


@dataclass
class Checkpoint:
    variables: dict[str, np.ndarray]
    rng_state: dict[str, Any]
    extra: dict[str, Any]  # what the writer chose to record (the trainer's progress)
    device_counter: Optional[int] = None  # a GPU's random stream counter, when a step drew on one


def save(path: Path, store: Store, extra: Mapping[str, Any]) -> None:
    """Write the store's variables, its generator state and ``extra`` (JSON-able) to ``path``."""
    store.catch_up()  # the device's random stream counter comes back with the variables
    meta = {"format": FORMAT, "rng": store.rng.bit_generator.state, "extra": dict(extra),
            "device_counter": None if store.device_counter is None else int(store.device_counter[0])}
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
    write_atomically(path, lambda handle: np.savez(handle, **arrays), binary=True)
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


def load_extra(path: Path) -> dict[str, Any]:
    """The writer's record alone (progress, options, model), read without decompressing any array."""
    headers = _read_headers(path)
    _check_headers(path, headers, expected=None, arrays=False)
    try:
        with np.load(path, allow_pickle=False) as data:
            entry = data[_META_KEY]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({exc}); delete it to start afresh") from None
    return _read_meta(path, entry)["extra"]


def load(path: Path, expected: Optional[Mapping[str, Any]] = None) -> Checkpoint:
    """Read a checkpoint, checking every array's header before any data is decompressed.

    ``expected`` maps variable names to arrays (or anything with ``shape`` and
    ``dtype``): the variables the model holds.  With it, a checkpoint whose
    variables differ in name, shape or dtype is refused from the headers
    alone, so a small file that claims a huge array costs nothing.  Without
    it, the declared sizes must still fit in available memory.
    """
    headers = _read_headers(path)
    _check_headers(path, headers, expected)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({exc}); delete it to start afresh") from None
    meta = _read_meta(path, arrays.pop(_META_KEY, None))
    variables = {key[len(_VARIABLE_PREFIX):]: value for key, value in arrays.items()}
    return Checkpoint(variables, meta["rng"], meta["extra"], _device_counter(path, meta.get("device_counter")))


def _device_counter(path: Path, value: Any) -> Optional[int]:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64):
        return value
    raise CheckpointError(f"{path} has a device random counter {value!r} that is not a 64-bit count; "
                          f"it was edited or damaged")


Header = tuple[tuple[int, ...], np.dtype]
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_headers(path: Path) -> dict[str, Header]:
    """Shape and dtype of every array in the archive, read from the first bytes of each entry."""
    headers: dict[str, Header] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy") or info.filename[:-len(".npy")] in headers:
                    raise CheckpointError(f"{path} holds an unexpected or repeated entry '{info.filename}'; "
                                          f"it is not a graphc checkpoint")
                with archive.open(info) as entry:
                    version = np.lib.format.read_magic(entry)
                    read_header = _HEADER_READERS.get(version)
                    if read_header is None:
                        raise CheckpointError(f"{path}: entry '{info.filename}' has .npy format {version}, "
                                              f"which graphc does not write")
                    shape, _, dtype = read_header(entry)
                headers[info.filename[:-len(".npy")]] = (tuple(shape), dtype)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except CheckpointError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error, RuntimeError, NotImplementedError,
            SyntaxError, TypeError, tokenize.TokenError) as exc:  # TokenError: a header's braces unbalanced
        raise CheckpointError(f"{path} is not a readable checkpoint ({exc}); delete it to start afresh") from None
    return headers


def _check_headers(path: Path, headers: Mapping[str, Header], expected: Optional[Mapping[str, Any]],
                   arrays: bool = True) -> None:
    """Every entry's kind; then, with ``arrays``, the variables against the model or the memory."""
    for key, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise CheckpointError(f"{path} holds pickled objects in '{key}', which graphc never writes and will "
                                  f"not load; it is not a graphc checkpoint")
        if key != _META_KEY and not key.startswith(_VARIABLE_PREFIX):
            raise CheckpointError(f"{path} holds an unexpected entry '{key}'; it is not a graphc checkpoint")
    meta = headers.get(_META_KEY)
    if meta is None or meta[1].kind != "U" or meta[0] != () or meta[1].itemsize > MAX_META_BYTES:
        raise CheckpointError(f"{path} has no metadata entry of at most {MAX_META_BYTES // 2**20} MiB; "
                              f"it is not a graphc checkpoint")
    variables = {key[len(_VARIABLE_PREFIX):]: header for key, header in headers.items() if key != _META_KEY}
    if not arrays:
        return
    if expected is not None:
        check_matches(expected, {name: _Declared(*header) for name, header in variables.items()}, path)
        return
    declared = sum(math.prod(shape) * dtype.itemsize for shape, dtype in variables.values())
    available = memory_check.available_bytes()
    if available is not None and declared > available:
        raise CheckpointError(f"{path} declares {declared:,} bytes of arrays, more than the {available:,} bytes "
                              f"of memory available; it is corrupt or not a graphc checkpoint")


@dataclass(frozen=True)
class _Declared:
    """An array as its header declares it, for :func:`check_matches`."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _read_meta(path: Path, entry: Any) -> dict[str, Any]:
    try:
        meta = json.loads(str(entry[()]))
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an integer of thousands of digits
        raise CheckpointError(f"{path} has corrupt metadata ({exc}); delete it to start afresh") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has metadata that is not a record; it is not a graphc checkpoint")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {meta.get('format')!r}; "
                              f"this version of graphc reads format {FORMAT}")
    for key, kind in (("rng", dict), ("extra", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path} has metadata without its '{key}' record; it is not a graphc checkpoint")
    return meta


def restore(store: Store, checkpoint: Checkpoint, source: Path) -> None:
    """Overwrite the store's variables and generator with the checkpoint's.

    The store must already hold every variable of the model (initialized), so
    that a checkpoint of another model is caught here, by name and shape,
    before anything is overwritten.
    """
    check_matches(store.values, checkpoint.variables, source)
    for name, value in checkpoint.variables.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise CheckpointError(f"checkpoint {source} holds NaN or infinite values in '{name}' "
                                  f"({int(np.count_nonzero(~np.isfinite(value)))} of {value.size}): it cannot be "
                                  f"trained on; resume from an earlier checkpoint or train afresh")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = checkpoint.rng_state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise CheckpointError(f"{source} holds a random generator state this version cannot use ({exc!r}); "
                              f"it was edited or written by another program") from None
    store.load(checkpoint.variables)
    store.rng.bit_generator.state = rng.bit_generator.state
    if checkpoint.device_counter is not None and store.device_counter is not None:
        store.device_counter[0] = checkpoint.device_counter  # in place: steps bound already upload this array
    else:
        store.device_counter = (None if checkpoint.device_counter is None
                                else np.array([checkpoint.device_counter], np.uint64))


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
