"""Fuzzing the IDX reader: any bytes give an array that agrees with its header, or a DataError."""
from __future__ import annotations

import gzip
import math
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from graphc.data import read_idx
from graphc.errors import DataError

from fuzzing import FUZZ, result_or_own_error

CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]
ITEMSIZE = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


@st.composite
def idx_like(draw: st.DrawFn) -> bytes:
    """Mostly well-formed headers with payloads of about the right length, then damaged at random."""
    code = draw(st.sampled_from(CODES) | st.integers(0, 255))
    ndim = draw(st.integers(0, 4) | st.integers(0, 255))
    dims = draw(st.lists(st.integers(0, 6) | st.integers(0, 2**32 - 1), min_size=min(ndim, 8), max_size=min(ndim, 8)))
    magic = draw(st.just(b"\x00\x00") | st.binary(min_size=2, max_size=2))
    body = magic + bytes([code, ndim]) + struct.pack(f">{len(dims)}I", *dims)
    size = math.prod(dims) * ITEMSIZE.get(code, 1) if dims else 0
    length = max(0, min(size, 4096) + draw(st.integers(-3, 3)))
    body += draw(st.binary(min_size=length, max_size=length))
    cut = draw(st.none() | st.integers(0, len(body)))
    body = body if cut is None else body[:cut]
    if draw(st.booleans()):
        body = gzip.compress(body, compresslevel=1)
        if draw(st.booleans()):  # damage the compressed stream too
            position = draw(st.integers(0, len(body) - 1))
            body = body[:position] + bytes([body[position] ^ draw(st.integers(1, 255))]) + body[position + 1:]
    return body


@FUZZ
@given(content=idx_like() | st.binary(max_size=64))
@example(content=b"\x00\x00\x0c\x04" + bytes(4) + b"\x00\x14'h\x00\x14(\xa2\x00\x14)\xdf")  # 0 x 1.3e6 x 1.3e6 x 1.3e6
def test_any_bytes_give_an_array_matching_the_header_or_a_data_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.idx"
        path.write_bytes(content)
        outcome = result_or_own_error(lambda: read_idx(path), memory_limit=4 * len(content) + (4 << 20))
    assert isinstance(outcome, (np.ndarray, DataError))
    if isinstance(outcome, np.ndarray):
        raw = gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content
        assert raw[:2] == b"\x00\x00" and outcome.shape == struct.unpack(f">{raw[3]}I", raw[4:4 + 4 * raw[3]])
        assert 4 + 4 * raw[3] + outcome.nbytes == len(raw)


def test_a_small_file_that_expands_to_gigabytes_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    header = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10)
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=9) as handle:
        handle.write(header + bytes(10))
        for _ in range(64):
            handle.write(bytes(1 << 20))  # 64 MiB of zeros after the declared 10 bytes
    assert path.stat().st_size < 1 << 20
    outcome = result_or_own_error(lambda: read_idx(path), memory_limit=8 << 20)
    assert isinstance(outcome, DataError) and f"{64 << 20} trailing bytes" in str(outcome)
