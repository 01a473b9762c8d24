"""Tests of the run folder: a run is never silently replaced, and one folder serves one run at a time."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphc.train import run_folder
from graphc.train.run_folder import RunFolderError, claim

from test_train import make_trainer


def test_a_folder_holding_a_run_is_refused_and_left_intact(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=1).run()
    before = (tmp_path / "checkpoint.npz").read_bytes()
    with pytest.raises(RunFolderError, match="already holds a run.*--resume.*--overwrite"):
        make_trainer(tmp_path, epochs=1, seed=8).run()
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_overwrite_replaces_the_run(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=2).run()
    (tmp_path / "notes.txt").write_text("mine")
    result = make_trainer(tmp_path, epochs=1, seed=8).run(overwrite=True)
    assert len(result.history) == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_resume_and_overwrite_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="pass one"):
        make_trainer(tmp_path, epochs=1).run(resume=True, overwrite=True)


def test_a_second_process_cannot_claim_a_folder_in_use_until_the_first_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, pathlib; from graphc.train.run_folder import claim\n"
                               "with claim(pathlib.Path(sys.argv[1])):\n"
                               "    print('held', flush=True); sys.stdin.read()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"in use by another graphc run \\(process {holder.pid}\\)"):
            with claim(tmp_path):
                pass
    finally:
        holder.kill()  # as `kill -9` would: no cleanup runs
        holder.communicate(timeout=30)
    with claim(tmp_path):  # the lock went with the process
        pass


def test_a_file_is_not_a_run_folder(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        with claim(path):
            pass


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_unwritable_folder_is_refused_before_training() -> None:
    # /proc/self is a folder no one may create files in, not even root (CI runs as root).
    trainer = make_trainer(Path("/proc/self"), epochs=1)
    with pytest.raises(RunFolderError, match="cannot write in the run folder /proc/self"):
        trainer.run()


def test_a_folder_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match="cannot create the run folder"):
        with claim(tmp_path / "file" / "run"):
            pass


def test_the_run_files_are_the_ones_the_trainer_writes(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=2, patience=5).run()
    written = {p.name for p in tmp_path.iterdir()} - {run_folder.LOCK_NAME}
    assert written == set(run_folder.RUN_FILES)
