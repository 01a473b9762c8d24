"""Tests of the run folder: a run is never silently replaced, and one folder serves one run at a time."""
from __future__ import annotations

import errno
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
    with pytest.raises(RunFolderError, match="cannot write in the run folder /proc/self: [A-Z][a-z ]+; choose"):
        trainer.run()


def test_a_folder_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match="cannot create the run folder .*: Not a directory; choose another"):
        with claim(tmp_path / "file" / "run"):
            pass


def test_the_run_files_are_the_ones_the_trainer_writes(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=2, patience=5).run()
    written = {p.name for p in tmp_path.iterdir()} - {run_folder.LOCK_NAME}
    assert written == set(run_folder.RUN_FILES)


@pytest.mark.parametrize("name", run_folder.RUN_FILES)
def test_any_one_run_file_makes_a_folder_a_run(tmp_path: Path, name: str) -> None:
    """A run stopped in its first epoch leaves only checkpoint.npz: still a run, not to be taken over."""
    (tmp_path / name).write_bytes(b"kept")
    with pytest.raises(RunFolderError, match=f"already holds a run \\({name}\\)"):
        with claim(tmp_path):
            pass
    assert (tmp_path / name).read_bytes() == b"kept"
    with claim(tmp_path, resume=True):
        assert (tmp_path / name).read_bytes() == b"kept"


def test_overwrite_removes_every_run_file_and_nothing_else(tmp_path: Path) -> None:
    for name in run_folder.RUN_FILES + ("notes.txt",):
        (tmp_path / name).write_bytes(b"old")
    with claim(tmp_path, overwrite=True):
        assert sorted(p.name for p in tmp_path.iterdir()) == [run_folder.LOCK_NAME, "notes.txt"]


def test_a_nested_folder_is_created_with_its_parents(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "today" / "mlp"
    with claim(folder) as claimed:
        assert claimed == folder and folder.is_dir()
        assert (folder / run_folder.LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_temporary_of_a_writer_that_fails_is_removed_and_the_old_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text("old")

    def fail(handle: object) -> None:
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space left"):
        run_folder.write_atomically(path, fail)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]


def test_a_lock_left_by_an_earlier_run_holds_this_process_id_alone(tmp_path: Path) -> None:
    (tmp_path / run_folder.LOCK_NAME).write_text("4194304\nleft over by a run of long ago\n")
    with claim(tmp_path):
        assert (tmp_path / run_folder.LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_lock_that_fails_for_another_reason_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(run_folder.fcntl, "flock", no_locks)
    with pytest.raises(RunFolderError, match=f"cannot lock the run folder {tmp_path}: No locks available$"):
        with claim(tmp_path):
            pass


def test_a_run_file_that_cannot_be_removed_stops_an_overwrite(tmp_path: Path) -> None:
    (tmp_path / "history.png").mkdir()
    with pytest.raises(RunFolderError, match="cannot remove .*history.png to overwrite the run: Is a directory$"):
        with claim(tmp_path, overwrite=True):
            pass


def test_text_is_written_as_given_and_on_disk_before_the_rename(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Line ends untranslated (a CSV's \\r\\n stays), and fsync sees every byte: the buffer was flushed."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_size), real_fsync(fd))[1])
    path = tmp_path / "history.csv"
    run_folder.write_atomically(path, lambda handle: handle.write("epoch,loss\r\n1,0.5\r\n"))
    assert path.read_bytes() == b"epoch,loss\r\n1,0.5\r\n" and synced == [len(path.read_bytes())]


def test_run_files_and_the_lock_follow_the_umask_and_leave_it_as_it_was(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        with claim(tmp_path):
            run_folder.write_atomically(tmp_path / "history.json", lambda handle: handle.write("[]"))
        assert os.umask(0o002) == 0o002
    finally:
        os.umask(old)
    assert (tmp_path / "history.json").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / run_folder.LOCK_NAME).stat().st_mode & 0o777 == 0o644  # read by all, written by its run
