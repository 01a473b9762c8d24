"""The run folder: claimed by one run at a time, and never silently reused.

A run's checkpoint and history are the only record of hours of work, so a
folder that already holds a run is refused unless the caller says what to do
with it: continue it (``resume``) or replace it (``overwrite``).  graphc does
not invent a new numbered folder instead: a script that passed ``--out`` would
then lose track of where its results went, and ``--resume`` could no longer
find them.

While a run is in progress it holds an exclusive ``flock`` on ``.lock`` in the
folder, so a second trainer aimed at the same folder stops at once instead of
overwriting the first one's checkpoints.  The kernel drops the lock when the
process ends, even by ``kill -9``, so a stale lock never blocks a resume.
Claiming also proves the folder is writable before any training is done.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

from graphc.errors import GraphcError

LOCK_NAME = ".lock"
# Every file a run writes; overwriting a run removes exactly these and nothing else of the user's.
RUN_FILES = ("checkpoint.npz", "best.npz", "history.csv", "history.json", "history.png")


class RunFolderError(GraphcError):
    """A run folder that cannot be used: not a folder, not writable, in use, or holding another run."""


@contextlib.contextmanager
def claim(folder: Path, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Hold ``folder`` for one run: create it, lock it, and check that it may be written.

    Raises :class:`RunFolderError` when another process holds the folder, or
    when it holds a run and neither ``resume`` nor ``overwrite`` is set.
    """
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in the folder and --overwrite replaces it; pass one")
    _create(folder)
    with _locked(folder):
        existing = [name for name in RUN_FILES if (folder / name).exists()]
        if existing and not (resume or overwrite):
            raise RunFolderError(
                f"{folder} already holds a run ({', '.join(existing)}); continue it with --resume, "
                f"replace it with --overwrite, or choose another --out")
        if overwrite:
            for name in existing:
                _remove(folder / name)
        yield folder


def _create(folder: Path) -> None:
    if str(folder) == "":
        raise RunFolderError("the run folder is an empty path; pass a folder name to --out")
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a folder; pass a folder to --out for the run's files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the run folder {folder}: {exc.strerror or exc}; "
                             f"choose another --out") from None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunFolderError(f"cannot write in the run folder {folder}: {exc.strerror or exc}; "
                             f"choose a writable --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunFolderError(f"cannot lock the run folder {folder}: {exc.strerror or exc}") from None
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderError(f"{folder} is in use by another graphc run (process {holder}); wait for it "
                                 f"to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RunFolderError(f"cannot remove {path} to overwrite the run: {exc.strerror or exc}") from None
