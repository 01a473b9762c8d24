"""Tests that a checkpoint is checked before it is trusted: its metadata field by field, its arrays'
headers before any data is decompressed, and the data set it was written for."""
from __future__ import annotations

import io
import json
import os
import re
import tracemalloc
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

from graphc.errors import CheckpointError
from graphc.runtime.store import Store
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


def npz_with_header(path: Path, name: str, shape: tuple[int, ...], dtype: str, payload: bytes,
                    extra: Optional[dict] = None) -> None:
    """An archive whose entry ``name`` declares ``shape`` but holds only ``payload``, compressed."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.npy", _npy(np.array(json.dumps({"format": 1, "rng": {}, "extra": extra or {}}))))
        archive.writestr(f"{name}.npy", header.getvalue() + payload)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def test_a_huge_declared_array_is_refused_from_its_header_before_decompressing(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.run()
    # Two gigabytes declared, a megabyte of zeros stored (compressed to about a kilobyte); the run's own
    # record kept, so that the options and the model, checked first, agree.
    extra = checkpoint.load_extra(trainer.checkpoint_path)
    npz_with_header(trainer.checkpoint_path, "var/dense1.W", (2**29,), "float32", bytes(2**20), extra)
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


# ---------------------------------------------------------------- the writer's and the reader's bounds

def test_a_header_with_unbalanced_braces_is_a_checkpoint_error(tmp_path: Path) -> None:
    """NumPy tokenizes the header to parse it: an unclosed brace raised tokenize's own error."""
    path = tmp_path / "c.npz"
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), ".ljust(118) + b"\n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.npy", _npy(np.array(json.dumps({"format": 1, "rng": {}, "extra": {}}))))
        archive.writestr("var/w.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(12))
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        checkpoint.load_extra(path)


def test_a_checkpoint_is_written_beside_its_name_synced_renamed_and_its_folder_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside it, so the rename cannot cross file systems (it would not be atomic); the folder synced
    after it, so the rename itself survives a power cut."""
    import stat
    events: list[tuple[str, Any]] = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "replace", lambda src, dst: (events.append(("replace", Path(src).parent, Path(dst))),
                                                          real_replace(src, dst))[1])
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode))),
                                                 real_fsync(fd))[1])
    store = Store(0)
    store.values["w"] = np.ones(3, np.float32)
    checkpoint.save(tmp_path / "c.npz", store, {})
    assert events == [("fsync", False), ("replace", tmp_path, tmp_path / "c.npz"), ("fsync", True)]
    assert checkpoint.load(tmp_path / "c.npz").variables["w"].tolist() == [1, 1, 1]


def metadata_declared_as(path: Path, characters: int) -> None:
    """An archive whose metadata entry declares a string of ``characters`` but stores a few bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": f"<U{characters}", "fortran_order": False, "shape": ()})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.npy", header.getvalue() + bytes(8))


def test_metadata_declared_above_the_bound_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    metadata_declared_as(path, checkpoint.MAX_META_BYTES // 4 + 1)
    with pytest.raises(CheckpointError, match="no metadata entry of at most 64 MiB"):
        checkpoint.load(path)
    metadata_declared_as(path, checkpoint.MAX_META_BYTES // 4)  # at the bound: read, and found short
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        checkpoint.load(path)


def test_the_memory_check_counts_bytes_not_elements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from graphc.runtime import memory_check
    monkeypatch.setattr(memory_check, "available_bytes", lambda: 4000)
    path = tmp_path / "c.npz"
    meta = np.array(json.dumps({"format": 1, "rng": {}, "extra": {}}))
    np.savez(path, meta=meta, **{"var/w": np.zeros(500)})  # 4,000 bytes: fits
    assert checkpoint.load(path).variables["w"].shape == (500,)
    np.savez(path, meta=meta, **{"var/w": np.zeros(501)})  # 501 elements, 4,008 bytes
    with pytest.raises(CheckpointError, match="declares 4,008 bytes of arrays, more than the 4,000 bytes"):
        checkpoint.load(path)


@pytest.mark.parametrize("rng, complaint", [
    (None, "without its 'rng' record"),
    ({"bit_generator": "PCG64"}, "KeyError"),  # no state
    ({"bit_generator": "PCG64", "state": {"state": 2**200, "inc": 1}, "has_uint32": 0, "uinteger": 0},
     "OverflowError"),
    ({"bit_generator": "PCG64", "state": {"state": -1, "inc": 1}, "has_uint32": 0, "uinteger": 0}, "OverflowError"),
])
def test_a_random_generator_record_this_version_cannot_use_is_a_checkpoint_error(
        saved_run: Path, tmp_path: Path, rng: Optional[dict], complaint: str) -> None:
    def edit(meta: dict[str, Any]) -> None:
        if rng is None:
            meta.pop("rng")
        else:
            meta["rng"] = rng
    with pytest.raises(CheckpointError, match=complaint):
        resume_after(saved_run, tmp_path, edit)


def test_a_checkpoint_of_two_ranks_is_not_resumed_by_one(saved_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="written by a run on 2 ranks, and this one has 1"):
        resume_after(saved_run, tmp_path, lambda meta: meta["extra"].__setitem__("ranks", 2))


@pytest.mark.parametrize("option, value", [
    ("optimizer", "sgd"), ("lr", 0.02), ("lr_decay", 0.8), ("batch_size", 16), ("seed", 8), ("val_fraction", 0.2),
    ("patience", 3), ("monitor", "val_accuracy"), ("task", "classification"), ("optimizer_options", {"beta1": 0.8}),
])
def test_every_option_that_decides_the_numbers_must_match_on_resume(saved_run: Path, tmp_path: Path, option: str,
                                                                    value: Any) -> None:
    (tmp_path / "checkpoint.npz").write_bytes(saved_run.read_bytes())
    with pytest.raises(CheckpointError, match=f"{option}=.* but this run has {option}={re.escape(repr(value))}"):
        make_trainer(tmp_path, epochs=2, **{option: value}).run(resume=True)


@pytest.mark.parametrize("option, value", [("epochs", 3), ("max_loss", 1e4), ("check_numerics", True)])
def test_the_watches_on_a_run_may_change_on_resume(saved_run: Path, tmp_path: Path, option: str, value: Any) -> None:
    (tmp_path / "checkpoint.npz").write_bytes(saved_run.read_bytes())
    options = {"epochs": 2, option: value}
    assert len(make_trainer(tmp_path, **options).run(resume=True).history) == options["epochs"]


def archive_of(path: Path, entries: list[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries:
            archive.writestr(name, data)


META = _npy(np.array(json.dumps({"format": 1, "rng": {}, "extra": {"epoch": 3}})))


@pytest.mark.parametrize("entries, complaint", [
    ([("meta.npy", META), ("readme.txt", b"hello")], "unexpected or repeated entry 'readme.txt'"),
    ([("meta.npy", META), ("var/w.npy", _npy(np.ones(2))), ("var/w.npy", _npy(np.ones(3)))],
     "unexpected or repeated entry 'var/w.npy'"),
    ([("meta.npy", META), ("var/w.npy", b"\x93NUMPY\x03\x00" + bytes(20))], r"has \.npy format \(3, 0\), which graphc"),
])
def test_archives_graphc_does_not_write_are_refused_by_both_readers(tmp_path: Path, entries: list[tuple[str, bytes]],
                                                                    complaint: str) -> None:
    path = tmp_path / "c.npz"
    with pytest.warns(UserWarning) if len({n for n, _ in entries}) < len(entries) else nullcontext():
        archive_of(path, entries)  # zipfile warns of a repeated name, and writes it
    for read in (checkpoint.load, checkpoint.load_extra):
        with pytest.raises(CheckpointError, match=complaint):
            read(path)


def test_a_header_of_format_2_is_read(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    entry = io.BytesIO()
    np.lib.format.write_array(entry, np.arange(3.0), version=(2, 0))
    archive_of(path, [("meta.npy", META), ("var/w.npy", entry.getvalue())])
    assert checkpoint.load(path).variables["w"].tolist() == [0.0, 1.0, 2.0]


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    for read in (checkpoint.load, checkpoint.load_extra):
        with pytest.raises(CheckpointError, match=f"no checkpoint at {tmp_path / 'none.npz'}$"):
            read(tmp_path / "none.npz")


def test_the_record_alone_is_read_without_checking_the_arrays_against_memory(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """load_extra serves the checks of options and model, which explain more than a size would."""
    from graphc.runtime import memory_check
    monkeypatch.setattr(memory_check, "available_bytes", lambda: 1000)
    path = tmp_path / "c.npz"
    np.savez(path, meta=np.array(json.dumps({"format": 1, "rng": {}, "extra": {"epoch": 3}})),
             **{"var/w": np.zeros(1000)})
    assert checkpoint.load_extra(path) == {"epoch": 3}
    with pytest.raises(CheckpointError, match="declares 8,000 bytes"):
        checkpoint.load(path)


def test_the_record_alone_checks_its_own_entry(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    metadata_declared_as(path, checkpoint.MAX_META_BYTES // 4 + 1)
    with pytest.raises(CheckpointError, match="no metadata entry of at most 64 MiB"):
        checkpoint.load_extra(path)
    metadata_declared_as(path, 100)  # a header that promises more than the entry holds
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        checkpoint.load_extra(path)


@pytest.mark.parametrize("counter, good", [(None, True), (0, True), (2**64 - 1, True), (2**64, False), (-1, False),
                                           (True, False), (1.5, False), ("7", False)])
def test_the_device_counter_must_be_a_64_bit_count(tmp_path: Path, counter: Any, good: bool) -> None:
    path = tmp_path / "c.npz"
    np.savez(path, meta=np.array(json.dumps({"format": 1, "rng": {}, "extra": {}, "device_counter": counter})))
    if good:
        assert checkpoint.load(path).device_counter == counter
    else:
        with pytest.raises(CheckpointError, match="device random counter .* is not a 64-bit count"):
            checkpoint.load(path)


def test_a_store_with_a_device_counter_saves_it(tmp_path: Path) -> None:
    store = Store(0)
    store.device_counter = np.array([2**63 + 5], np.uint64)
    checkpoint.save(tmp_path / "c.npz", store, {})
    assert checkpoint.load(tmp_path / "c.npz").device_counter == 2**63 + 5


def test_numpy_values_in_the_record_are_saved_as_plain_numbers_and_others_refused(tmp_path: Path) -> None:
    store = Store(0)
    checkpoint.save(tmp_path / "c.npz", store, {"loss": np.float32(1.5), "sizes": np.arange(3)})
    assert checkpoint.load_extra(tmp_path / "c.npz") == {"loss": 1.5, "sizes": [0, 1, 2]}
    with pytest.raises(TypeError, match="cannot record set in a checkpoint"):
        checkpoint.save(tmp_path / "d.npz", store, {"names": {"a"}})


def test_a_failed_write_names_the_checkpoint_and_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint {tmp_path / 'c.npz'}: No space left on "
                                              f"device; check"):
        checkpoint.save(tmp_path / "c.npz", Store(0), {})


def test_saving_leaves_no_file_open(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    if before is None:
        pytest.skip("counts open files in /proc")
    for _ in range(5):
        checkpoint.save(tmp_path / "c.npz", Store(0), {})
    assert len(os.listdir("/proc/self/fd")) == before


def test_restore_refuses_another_models_variables_before_overwriting_any(tmp_path: Path) -> None:
    store = Store(0)
    store.values.update(w=np.zeros(2), b=np.zeros(1))
    for variables, complaint in (({"w": np.ones(3), "b": np.ones(1)}, r"'w' is float64\[2\] in the model but "
                                                                       r"float64\[3\] in the checkpoint"),
                                 ({"w": np.ones(2), "b": np.ones(1), "extra": np.ones(1)},
                                  r"'extra' is absent in the model but float64\[1\] in the checkpoint")):
        with pytest.raises(CheckpointError, match=complaint):
            checkpoint.restore(store, checkpoint.Checkpoint(variables, {}, {}), tmp_path / "c.npz")
        assert store.values["w"].tolist() == [0.0, 0.0]
