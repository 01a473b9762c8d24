"""Reader for the IDX container used by MNIST-style data sets.

A data file that is cut short or mislabelled would otherwise surface far from
its cause: as a reshape error inside the loader, or worse as a model that
trains on garbage.  So the reader checks every claim the header makes against
the bytes that actually follow and turns each mismatch into a one-line
:class:`~graphc.errors.DataError` naming the file, the problem and the fix.

Compression is detected from the gzip magic bytes rather than the file name,
because mirrors and package managers are inconsistent about the ``.gz``
suffix.  Arrays come back in native byte order so no caller ever has to think
about IDX being big-endian.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from graphc.errors import DataError

__all__ = ["read_idx"]

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_MAGIC = b"\x00\x00"
_PREFIX_BYTES = 4  # two magic zeros, the type code, the number of dimensions
_SIZE_BYTES = 4  # each dimension is a big-endian uint32
_REFETCH = "re-download or reinstall the data set"

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a writable native-order array.

    Raises :class:`~graphc.errors.DataError` when the file is missing,
    unreadable, not IDX, or its payload does not match its header.
    """
    path = Path(path)
    raw = _decompress(path, _read_bytes(path))
    dtype, dims = _parse_header(path, raw)
    offset = _PREFIX_BYTES + _SIZE_BYTES * len(dims)
    _check_payload_length(path, dtype, dims, len(raw) - offset)
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=offset)
    return data.astype(dtype.newbyteorder("=")).reshape(dims)


def _fail(path: Path, problem: str) -> DataError:
    return DataError(f"{path}: {problem}")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "no such file; check the path or re-download the data set") from None
    except OSError as exc:
        raise _fail(path, f"cannot read file: {exc.strerror or exc}") from None


def _decompress(path: Path, raw: bytes) -> bytes:
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise _fail(path, f"corrupt gzip stream ({exc}); {_REFETCH}") from None


def _parse_header(path: Path, raw: bytes) -> tuple[np.dtype, tuple[int, ...]]:
    if len(raw) < _PREFIX_BYTES:
        raise _fail(
            path,
            f"truncated IDX header: file holds {len(raw)} bytes, the fixed header alone "
            f"needs {_PREFIX_BYTES}; {_REFETCH}",
        )
    magic, type_code, ndim = raw[:2], raw[2], raw[3]
    if magic != _IDX_MAGIC:
        raise _fail(
            path,
            f"not an IDX file: expected magic bytes 00 00, found {magic.hex(' ')}; "
            "check that the path points at an IDX data file",
        )
    if type_code not in _DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in _DTYPES)
        raise _fail(path, f"unknown IDX type code 0x{type_code:02X} (known: {known}); {_REFETCH}")
    if ndim < 1:
        raise _fail(path, f"IDX header declares 0 dimensions, at least 1 is required; {_REFETCH}")
    sizes_end = _PREFIX_BYTES + _SIZE_BYTES * ndim
    if len(raw) < sizes_end:
        raise _fail(
            path,
            f"truncated IDX header: it declares {ndim} dimensions ({_SIZE_BYTES * ndim} bytes "
            f"of sizes) but only {len(raw) - _PREFIX_BYTES} bytes follow; {_REFETCH}",
        )
    dims = struct.unpack(f">{ndim}I", raw[_PREFIX_BYTES:sizes_end])
    return _DTYPES[type_code], dims


def _check_payload_length(path: Path, dtype: np.dtype, dims: tuple[int, ...], actual: int) -> None:
    expected = math.prod(dims) * dtype.itemsize
    if actual == expected:
        return
    declared = f"{'x'.join(map(str, dims))} {dtype.newbyteorder('=').name} ({expected} bytes)"
    if actual < expected:
        raise _fail(
            path,
            f"truncated IDX file: header declares {declared} but only {actual} bytes of "
            f"data follow; {_REFETCH}",
        )
    raise _fail(
        path,
        f"IDX file has {actual - expected} trailing bytes: header declares {declared} but "
        f"{actual} bytes of data follow; {_REFETCH}",
    )
