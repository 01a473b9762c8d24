"""Fuzzing the checkpoint loader: damaged archives, forged array headers and arbitrary metadata give a
checkpoint that fits the model or a CheckpointError, never another exception or a large allocation."""
from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphc.runtime.store import Store
from graphc.train import checkpoint
from graphc.train.progress import read_progress

from fuzzing import FUZZ, result_or_own_error

MODEL = {"dense.W": np.ones((4, 3), np.float32), "dense.b": np.zeros(3, np.float32)}
BATCHES_PER_EPOCH = 5


@pytest.fixture(scope="module")
def valid_checkpoint() -> bytes:
    store = Store(seed=3)
    store.values.update({name: value.copy() for name, value in MODEL.items()})
    history = [{"epoch": 1, "lr": 0.1, "train_loss": 1.0, "val_loss": None, "val_accuracy": None,
                "test_loss": 0.5, "test_accuracy": 0.8, "seconds": 1.0, "examples_per_s": 10.0}]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.npz"
        checkpoint.save(path, store, {"progress": {"epoch": 1, "batch": 2, "loss_sum": 3.0, "examples": 8,
                                                   "seconds": 0.5}, "history": history})
        return path.read_bytes()


def load_and_resume(content: bytes) -> Any:
    """What a resume does with a checkpoint file: load, read its progress, restore into the model."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.npz"
        path.write_bytes(content)
        saved = checkpoint.load(path, expected=MODEL)
        progress = read_progress(saved.extra, BATCHES_PER_EPOCH, path)
        store = Store(seed=0)
        store.values.update({name: value.copy() for name, value in MODEL.items()})
        checkpoint.restore(store, saved, path)
        return progress


@FUZZ
@given(data=st.data())
def test_damaged_bytes_load_or_give_a_checkpoint_error(valid_checkpoint: bytes, data: st.DataObject) -> None:
    content = bytearray(valid_checkpoint)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(content) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            content[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del content[position:position + data.draw(st.integers(1, 64))]
        else:
            content[position:position] = data.draw(st.binary(min_size=1, max_size=16))
    result_or_own_error(lambda: load_and_resume(bytes(content)), memory_limit=4 << 20)


def npy_entry(shape: tuple[int, ...], descr: str, payload: bytes) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue() + payload


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3),
                           max_leaves=12)
progress_records = st.fixed_dictionaries({}, optional={
    "epoch": st.integers(-2, 3) | json_values, "batch": st.integers(-2, 10**9) | json_values,
    "loss_sum": st.floats() | json_values, "examples": st.integers(-1, 100), "seconds": st.floats(),
})
metas = st.fixed_dictionaries({}, optional={
    "format": st.just(1) | json_values,
    "rng": st.just({"bit_generator": "PCG64", "state": {"state": 1, "inc": 3}, "has_uint32": 0, "uinteger": 0})
    | json_values,
    "extra": st.fixed_dictionaries({}, optional={"progress": progress_records | json_values,
                                                 "history": st.lists(json_values, max_size=3)}) | json_values,
})


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
@FUZZ
@given(meta=metas | json_values,
       entries=st.lists(st.tuples(st.sampled_from(["var/dense.W", "var/dense.b", "var/other", "stray"]),
                                  st.lists(st.integers(0, 2**40), max_size=3).map(tuple),
                                  st.sampled_from(["<f4", ">f4", "<f8", "<i4", "|u1", "|O"]),
                                  st.binary(max_size=64)), max_size=3))
def test_forged_archives_load_or_give_a_checkpoint_error(meta: Any, entries: list) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        text = np.array(json.dumps(meta))
        archive.writestr("meta.npy", npy_entry((), text.dtype.str, text.tobytes()))
        for name, shape, descr, payload in entries:
            archive.writestr(f"{name}.npy", npy_entry(shape, descr, payload))
    result_or_own_error(lambda: load_and_resume(buffer.getvalue()), memory_limit=4 << 20)
