"""Reader for the IDX container used by MNIST-style data sets.

A data file that is cut short or mislabelled would otherwise surface far from
its cause: as a reshape error inside the loader, or worse as a model that
trains on garbage.  So the reader checks every claim the header makes against
the bytes that actually follow and turns each mismatch into a one-line
:class:`~graphc.errors.DataError` naming the file, the problem and the fix.

Compression is detected from the gzip magic bytes rather than the file name,
because mirrors and package managers are inconsistent about the ``.gz``
suffix.  A compressed file is read as a stream, header first, and never
decompressed beyond the size its header declares (the rest is only counted),
so a small file that expands to gigabytes costs no more memory than a valid one.  Arrays come back in native byte order so no caller ever has to think
about IDX being big-endian.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from graphc.errors import DataError

__all__ = ["read_idx"]

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_MAGIC = b"\x00\x00"
_PREFIX_BYTES = 4  # two magic zeros, the type code, the number of dimensions
_SIZE_BYTES = 4  # each dimension is a big-endian uint32
_REFETCH = "re-download or reinstall the data set"
_CHUNK_BYTES = 1 << 20

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
    raw = _read_bytes(path)
    stream = gzip.GzipFile(fileobj=io.BytesIO(raw)) if raw.startswith(_GZIP_MAGIC) else io.BytesIO(raw)
    with stream:
        dtype, dims = _parse_header(path, stream)
        expected = math.prod(dims) * dtype.itemsize
        payload = _read(path, stream, expected)
        trailing = _count_rest(path, stream)
    _check_payload_length(path, dtype, dims, len(payload) + trailing)
    data = np.frombuffer(payload, dtype=dtype, count=math.prod(dims))
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


def _read(path: Path, stream: BinaryIO, count: int) -> bytes:
    """Up to ``count`` bytes, in chunks: memory grows with the bytes that exist, not with what a
    (possibly corrupt) header claims."""
    chunks = bytearray()
    while len(chunks) < count:
        chunk = _chunk(path, stream, min(_CHUNK_BYTES, count - len(chunks)))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


def _count_rest(path: Path, stream: BinaryIO) -> int:
    """How many bytes follow, without keeping them; reading to the end also checks the gzip trailer."""
    total = 0
    while chunk := _chunk(path, stream, _CHUNK_BYTES):
        total += len(chunk)
    return total


def _chunk(path: Path, stream: BinaryIO, size: int) -> bytes:
    try:
        return stream.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise _fail(path, f"corrupt gzip stream ({exc}); {_REFETCH}") from None


def _parse_header(path: Path, stream: BinaryIO) -> tuple[np.dtype, tuple[int, ...]]:
    prefix = _read(path, stream, _PREFIX_BYTES)
    if len(prefix) < _PREFIX_BYTES:
        raise _fail(
            path,
            f"truncated IDX header: file holds {len(prefix)} bytes, the fixed header alone "
            f"needs {_PREFIX_BYTES}; {_REFETCH}",
        )
    magic, type_code, ndim = prefix[:2], prefix[2], prefix[3]
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
    sizes = _read(path, stream, _SIZE_BYTES * ndim)
    if len(sizes) < _SIZE_BYTES * ndim:
        raise _fail(
            path,
            f"truncated IDX header: it declares {ndim} dimensions ({_SIZE_BYTES * ndim} bytes "
            f"of sizes) but only {len(sizes)} bytes follow; {_REFETCH}",
        )
    dims = struct.unpack(f">{ndim}I", sizes)
    dtype = _DTYPES[type_code]
    # NumPy refuses a shape whose nonzero sizes multiply past its largest array, even when a zero
    # among them makes the array empty.
    if math.prod(d for d in dims if d) * dtype.itemsize > np.iinfo(np.intp).max:
        raise _fail(path, f"IDX header declares sizes {' x '.join(map(str, dims))}, whose product is larger than "
                          f"any array; {_REFETCH}")
    return dtype, dims


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
