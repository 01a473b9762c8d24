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
Claiming also proves the folder is writable before any training is done, and
removes the temporary files a killed writer left (``.checkpoint.npz.*.tmp``):
holding the lock, no other writer can be using them.

No write may leave the folder: a run's files must be regular files, so a
symbolic link among them (or as ``.lock``) is refused, never followed — even a
dangling one that would create a file elsewhere.  Every file is written
beside its name and renamed over it (:func:`write_atomically`), which
replaces a link rather than writing through it, and never leaves a torn file.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, TextIO

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
        _refuse_links(folder)
        _remove_stale_temporaries(folder)
        existing = [name for name in RUN_FILES if os.path.lexists(folder / name)]
        if existing and not (resume or overwrite):
            raise RunFolderError(
                f"{folder} already holds a run ({', '.join(existing)}); continue it with --resume, "
                f"replace it with --overwrite, or choose another --out")
        if overwrite:
            for name in existing:
                _remove(folder / name)
        yield folder


def _create(folder: Path) -> None:
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
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunFolderError(_link_message(path)) from None
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            raise RunFolderError(f"cannot write {path}: {exc.strerror or exc}; check that the disk is not full") \
                from None
        yield
    finally:
        os.close(fd)


def _link_message(path: Path) -> str:
    return (f"{path} is a symbolic link; graphc writes only regular files of its own in the run folder and "
            f"follows no link out of it: remove the link, or choose another --out")


def _refuse_links(folder: Path) -> None:
    for name in RUN_FILES:
        if (folder / name).is_symlink():
            raise RunFolderError(_link_message(folder / name))


def _remove_stale_temporaries(folder: Path) -> None:
    for name in RUN_FILES:
        for stale in folder.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def write_atomically(path: Path, write: Callable[[TextIO], None], binary: bool = False) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, then rename it over
    ``path``: a reader never sees half a file, and a symbolic link at ``path`` is replaced, not
    written through.  The file gets the permissions the umask gives new files."""
    handle = tempfile.NamedTemporaryFile("wb" if binary else "w", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False, **({} if binary else {"newline": ""}))
    try:
        with handle:
            write(handle)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o666 & ~_umask())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RunFolderError(f"cannot remove {path} to overwrite the run: {exc.strerror or exc}") from None
