"""Hostile use of the run folder, checkpoints and the command line: links, nohup, stale files, bad numbers.

Each case is a probe a user (or a shared machine) can make: a symbolic link
planted in the run folder, a run started under ``nohup``, a checkpoint write
killed half-way, a number too large for NumPy, a name with a line break.
Each must end in one clear line, or not matter, never in a write outside the
run folder, a traceback or a silent wrong run.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.cli import main
from graphc.errors import CheckpointError, GraphcError
from graphc.train import ConfigError, checkpoint, run_folder
from graphc.train.run_folder import RunFolderError, claim

from support import tiny_fashion_mnist
from test_signals import start_and_wait_for_a_checkpoint, tiny_run  # noqa: F401  (a fixture)
from test_train import make_trainer

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the run folder

def test_a_lock_that_is_a_symbolic_link_is_refused_and_not_followed(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(precious)
    with pytest.raises(RunFolderError, match=r"\.lock is a symbolic link; graphc writes only regular files"):
        make_trainer(run, epochs=1).run()
    assert precious.read_text() == "keep me"


def test_a_dangling_link_among_the_run_files_is_refused_and_nothing_is_written_outside(tmp_path: Path) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (run / "history.json").symlink_to(outside / "new.json")
    with pytest.raises(RunFolderError, match=r"history\.json is a symbolic link"):
        make_trainer(run, epochs=1).run()
    assert not list(outside.iterdir())


def test_history_files_replace_a_link_made_during_the_run_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("theirs")
    (tmp_path / "history.json").symlink_to(outside)
    gc_history = make_trainer(tmp_path / "run", epochs=1).run().history
    gc_history.write(tmp_path)
    assert outside.read_text() == "theirs" and not (tmp_path / "history.json").is_symlink()


def test_temporaries_a_killed_writer_left_are_removed_when_the_folder_is_claimed(tmp_path: Path) -> None:
    stale = [tmp_path / ".checkpoint.npz.abc123.tmp", tmp_path / ".history.json.x9.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    (tmp_path / "notes.tmp").write_text("the user's")
    with claim(tmp_path):
        pass
    assert not any(path.exists() for path in stale) and (tmp_path / "notes.tmp").exists()


def test_run_files_get_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        make_trainer(tmp_path, epochs=1).run()
    finally:
        os.umask(old)
    for name in ("checkpoint.npz", "history.csv", "history.json", "history.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_a_full_disk_while_taking_the_lock_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(run_folder.os, "pwrite", full)
    with pytest.raises(RunFolderError, match=rf"cannot write {tmp_path / '.lock'}: No space left on device"):
        with claim(tmp_path):
            pass


# ---------------------------------------------------------------- checkpoints

def test_a_checkpoint_holding_nan_is_refused_naming_the_variable(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.run()
    saved = checkpoint.load(trainer.checkpoint_path)
    saved.variables["dense1.W"][0, 0] = np.nan
    store = trainer.store
    store.values["dense1.W"][...] = saved.variables["dense1.W"]
    checkpoint.save(trainer.checkpoint_path, store, saved.extra)
    with pytest.raises(CheckpointError, match=r"holds NaN or infinite values in 'dense1\.W' \(1 of"):
        make_trainer(tmp_path, epochs=2).run(resume=True)


def test_metadata_with_an_integer_of_thousands_of_digits_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    meta = '{"format": 1, "rng": {}, "extra": {"n": ' + "9" * 5000 + "}}"
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("meta.npy", "w") as entry:
            np.lib.format.write_array(entry, np.array(meta))
    with pytest.raises(CheckpointError, match="has corrupt metadata"):
        checkpoint.load(path)


def test_resuming_with_another_optimizer_names_the_option(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=1, optimizer="sgd").run()
    with pytest.raises(CheckpointError, match=r"written with config optimizer='sgd' but this run has "
                                              r"optimizer='adam'"):
        make_trainer(tmp_path, epochs=2, optimizer="adam").run(resume=True)


# ---------------------------------------------------------------- numbers and names

@pytest.mark.parametrize("argv, fragment", [
    (["train", "examples/mlp.py", "--batch-size", "99999999999999999999"], "batch_size must be an integer from 1 to"),
    (["show", "examples/mlp.py", "--input-shape", "99999999999999999999"], "is not a shape"),
    (["train", "examples/mlp.py", "--limit", "99999999999999999999", "--data", "."], "limit must be from 2 to"),
])
def test_numbers_too_large_for_numpy_give_one_line(argv: list[str], fragment: str,
                                                  capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    if "--data" in argv:
        argv[argv.index("--data") + 1] = str(tiny_fashion_mnist(tmp_path))
    assert main(argv + ["--out", str(tmp_path / "run")] if argv[0] == "train" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("name", ["dense\r0.W", "w\x00", "two\nlines", ""])
def test_a_name_with_a_control_character_is_refused_where_it_is_made(name: str) -> None:
    with pytest.raises(GraphcError, match=r"names must be non-empty printable text"):
        gc.param(name, (2, 2))


def test_a_learning_rate_too_large_for_float32_names_lr(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lr=3\.5e\+38 does not fit float32.*choose a smaller --lr"):
        make_trainer(tmp_path, epochs=1, lr=3.5e38)


def test_a_model_file_imports_a_module_beside_it_under_the_graphc_command(tmp_path: Path) -> None:
    command = shutil.which("graphc")
    if command is None:
        pytest.skip("the graphc command is not installed")
    (tmp_path / "helpers.py").write_text("from graphc import nn\ndef hidden():\n    return nn.Dense(4)\n")
    (tmp_path / "mine.py").write_text("from graphc import nn\nfrom helpers import hidden\n"
                                      "model = nn.Sequential(hidden(), nn.relu, nn.Dense(10))\n")
    result = subprocess.run([command, "show", str(tmp_path / "mine.py"), "--view", "forward"], cwd=tmp_path.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "dense0.W" in result.stdout


# ---------------------------------------------------------------- signals

def test_a_run_under_nohup_is_not_stopped_by_a_hangup(tiny_run: tuple[list[str], Path]) -> None:  # noqa: F811
    """nohup leaves SIGHUP ignored so that the run outlives its terminal: the trainer must not catch it."""
    argv, out = tiny_run
    process = subprocess.Popen(argv + ["--epochs", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        while not (out / "checkpoint.npz").exists() and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGHUP)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert json.loads((out / "history.json").read_text())[-1]["epoch"] == 3


def test_the_largest_batch_and_limit_are_accepted_and_one_more_is_refused() -> None:
    from graphc.train.trainer import MAX_SIZE, TrainConfig, load_splits
    assert MAX_SIZE == 2**31 - 1
    TrainConfig(batch_size=MAX_SIZE).validate()
    with pytest.raises(ConfigError, match=f"batch_size must be an integer from 1 to {MAX_SIZE}, got {MAX_SIZE + 1}"):
        TrainConfig(batch_size=MAX_SIZE + 1).validate()
    with pytest.raises(ConfigError, match=f"limit must be from 2 to {MAX_SIZE} examples, got {MAX_SIZE + 1}"):
        load_splits("fashion-mnist", "/nonexistent", 0.1, 0, MAX_SIZE + 1)


def test_the_largest_float32_is_a_learning_rate_float32_parameters_hold(tmp_path: Path) -> None:
    largest = float(np.finfo(np.float32).max)
    assert make_trainer(tmp_path, epochs=1, lr=largest).config.lr == largest  # absurd, but it fits
    with pytest.raises(ConfigError, match="does not fit float32"):
        make_trainer(tmp_path, epochs=1, lr=largest * 1.0001)
