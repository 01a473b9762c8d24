"""Tests that a checkpoint is checked before it is trusted: its metadata field by field, its arrays'
headers before any data is decompressed, and the data set it was written for."""
from __future__ import annotations

import io
import json
import re
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from graphc.errors import CheckpointError
from graphc.train import Splits, checkpoint

from test_train import make_trainer, splits


def edit_meta(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a checkpoint's JSON metadata, as someone editing the file by hand would."""
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays["meta"][()]))
    edit(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped after one epoch; tests copy its checkpoint before editing it."""
    folder = tmp_path_factory.mktemp("run")
    make_trainer(folder, epochs=1).run()
    return folder / "checkpoint.npz"


def resume_after(saved_run: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    (tmp_path / "checkpoint.npz").write_bytes(saved_run.read_bytes())
    edit_meta(tmp_path / "checkpoint.npz", edit)
    make_trainer(tmp_path, epochs=2).run(resume=True)


def set_progress(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda meta: meta["extra"]["progress"].__setitem__(field, value)


@pytest.mark.parametrize("edit, complaint", [
    (set_progress("batch", 10**9), "progress batch=1000000000 is past the end of an epoch of 8 batches"),
    (set_progress("epoch", -5), "progress epoch=-5 is not a count"),
    (set_progress("examples", "many"), "progress examples='many' is not a count"),
    (set_progress("loss_sum", None), "progress loss_sum=None is not a finite number"),
    (lambda meta: meta["extra"]["progress"].pop("batch"), "its progress record is a record of epoch, examples"),
    (lambda meta: meta["extra"].pop("progress"), "its progress record is missing"),
    (set_progress("epoch", 3), "its history is a list, but its progress says 3 epochs are done"),
    (lambda meta: meta["extra"]["history"][0].__setitem__("train_loss", "low"), "train_loss='low'"),
    (lambda meta: meta["extra"].pop("config"), "has no 'config' record"),
    (lambda meta: meta.__setitem__("rng", {"bit_generator": "PCG64", "state": "x"}), "random generator state"),
    (lambda meta: meta.pop("extra"), "without its 'extra' record"),
    (lambda meta: meta.__setitem__("format", 99), "format 99"),
])
def test_edited_metadata_is_refused_naming_the_field(saved_run: Path, tmp_path: Path,
                                                     edit: Callable[[dict[str, Any]], None], complaint: str) -> None:
    with pytest.raises(CheckpointError, match=re.escape(complaint)):
        resume_after(saved_run, tmp_path, edit)


def test_metadata_that_is_not_a_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    np.savez(path, meta=np.array("[1, 2]"))
    with pytest.raises(CheckpointError, match="not a record"):
        checkpoint.load(path)


def npz_with_header(path: Path, name: str, shape: tuple[int, ...], dtype: str, payload: bytes) -> None:
    """An archive whose entry ``name`` declares ``shape`` but holds only ``payload``, compressed."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.npy", _npy(np.array(json.dumps({"format": 1, "rng": {}, "extra": {}}))))
        archive.writestr(f"{name}.npy", header.getvalue() + payload)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def test_a_huge_declared_array_is_refused_from_its_header_before_decompressing(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.run()
    # Two gigabytes declared, a megabyte of zeros stored (compressed to about a kilobyte).
    npz_with_header(trainer.checkpoint_path, "var/dense1.W", (2**29,), "float32", bytes(2**20))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"variable 'dense1.W' is float32\[12, 16\] in the model but "
                                                  r"float32\[536870912\] in the checkpoint"):
            make_trainer(tmp_path, epochs=2).run(resume=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200e6


def test_without_a_model_the_declared_sizes_must_fit_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    npz_with_header(path, "var/w", (2**40, 2**20), "float64", b"")
    with pytest.raises(CheckpointError, match="declares .* bytes of arrays, more than the .* available"):
        checkpoint.load(path)


@pytest.mark.parametrize("name, dtype, complaint", [
    ("var/w", "O", "pickled objects in 'var/w'"),
    ("weights", "float32", "unexpected entry 'weights'"),
])
def test_entries_graphc_never_writes_are_refused(tmp_path: Path, name: str, dtype: str, complaint: str) -> None:
    path = tmp_path / "c.npz"
    npz_with_header(path, name, (1,), dtype, b"")
    with pytest.raises(CheckpointError, match=complaint):
        checkpoint.load(path)


def test_resuming_on_other_data_of_the_same_size_is_refused(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=1).run()
    data = splits()
    other = Splits(data.x_train[::-1].copy(), data.y_train[::-1].copy(), data.x_val, data.y_val,
                   data.x_test, data.y_test)
    assert other.sizes() == data.sizes()
    with pytest.raises(CheckpointError, match="was written for other data .* same --dataset, --data folder"):
        make_trainer(tmp_path, epochs=2, data=other).run(resume=True)
