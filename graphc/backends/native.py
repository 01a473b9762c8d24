"""The native toolchain: generated source compiled into a shared library, cached on disk, opened.

Both users of a host compiler go through here: the fused C loops
(:mod:`graphc.backends.cpu.c_loops`) and the CUDA emulator
(:mod:`graphc.backends.cuda.emulator`).  A library is keyed by a digest of what
its binary depends on (the compiler and its version, the flags, the source
without its comments, the machine and its CPU features), so an equal program
rebuilt later, or in another process, loads the library built before.  Its file
name holds a digest of its own bytes as well, checked before it is opened: a
truncated, corrupted or swapped file (a full disk, a killed build, a stray
edit) is removed and built again, never run.  Libraries are written under a
temporary name and renamed into place, so processes building one at once never
load a partial file.  Every failure (no working compiler, source it rejects, a
cache folder that cannot be written) is one :class:`KernelBuildFailed`; each
caller decides what to do without the library.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)


class KernelBuildFailed(Exception):
    """A native library could not be built, cached or opened; the message says why in one line,
    ``diagnostics`` holds the compiler's whole complaint where there was one."""

    def __init__(self, message: str, diagnostics: str = ""):
        super().__init__(message)
        self.diagnostics = diagnostics or message


def find_compiler(variable: str, usual: str, fallback: str) -> Optional[str]:
    """The compiler named by environment ``variable`` (``usual`` when unset), else ``fallback``; None
    where neither is on the PATH."""
    return shutil.which(os.environ.get(variable, usual)) or shutil.which(fallback)


def cache_dir() -> Path:
    """Where compiled libraries live: ``$GRAPHC_CACHE_DIR/kernels``, else ``~/.cache/graphc/kernels``."""
    root = os.environ.get("GRAPHC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "graphc")
    return Path(root) / "kernels"


def cpu_tag() -> str:
    """The CPU's feature flags: code built with -march=native must not load on another CPU sharing the cache."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def load(compiler: str, flags: Sequence[str], source: str, symbols: Sequence[str], *, prefix: str, suffix: str,
         libraries: Sequence[str] = ()) -> dict[str, Callable]:
    """The functions ``symbols`` of the library built from ``source`` (a file ending in ``suffix``) by
    ``compiler flags source libraries``, from the cache when an intact build is there.

    The functions are untyped: the caller sets their ``argtypes`` and ``restype``.  Cached libraries
    are named ``<prefix><key digest>-<bytes digest>.so``.  Raises :class:`KernelBuildFailed`."""
    key = _key(compiler, flags, libraries, source)
    folder = cache_dir()
    functions = _cached(folder, prefix + key, symbols)
    if functions is None:
        _install(folder, prefix + key, _compile(compiler, flags, source, suffix, libraries))
        functions = _cached(folder, prefix + key, symbols)
    if functions is None:
        raise KernelBuildFailed("the library just built does not load")
    return functions


def _key(compiler: str, flags: Sequence[str], libraries: Sequence[str], source: str) -> str:
    """What the binary depends on, digested.  Comments (the IR a line came from) are left out, so an
    equal program rebuilt with other node numbers finds its library."""
    parts = [_COMMENTS.sub("", source), compiler, _version(compiler), *flags, "--", *libraries,
             platform.machine(), cpu_tag()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=None)
def _version(compiler: str) -> str:
    """The compiler's own account of itself: an upgraded compiler at the same path builds anew."""
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _cached(folder: Path, tag: str, symbols: Sequence[str]) -> Optional[dict[str, Callable]]:
    """The symbols of the first cached build of ``tag`` whose bytes match the digest in its name and
    which opens; every other build of ``tag`` found on the way is removed (where the folder allows)."""
    if not folder.is_dir():
        return None
    for library in sorted(folder.glob(f"{tag}-*.so")):
        try:
            intact = library.name == _named(tag, library.read_bytes())
            functions = _open(library, symbols) if intact else None
        except (OSError, AttributeError):
            functions = None
        if functions is not None:
            return functions
        with contextlib.suppress(OSError):
            library.unlink()
    return None


def _open(library: Path, symbols: Sequence[str]) -> dict[str, Callable]:
    lib = ctypes.CDLL(str(library))
    return {name: getattr(lib, name) for name in symbols}


def _named(tag: str, binary: bytes) -> str:
    return f"{tag}-{hashlib.sha256(binary).hexdigest()[:16]}.so"


def _compile(compiler: str, flags: Sequence[str], source: str, suffix: str, libraries: Sequence[str]) -> bytes:
    """The library's bytes, built in a private folder."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"source{suffix}"
        path.write_text(source)
        built = Path(tmp) / "library.so"
        try:
            result = subprocess.run([compiler, *flags, "-o", str(built), str(path), *libraries, "-lm"],
                                    capture_output=True, text=True)
        except OSError as exc:
            raise KernelBuildFailed(f"the compiler {compiler} cannot run: {exc.strerror or exc}") from None
        if result.returncode != 0:
            complaint = result.stderr.strip()
            first = next((line for line in complaint.splitlines() if "error" in line), complaint)
            raise KernelBuildFailed(f"the compiler {compiler} failed (exit {result.returncode}): {first[:200]}",
                                    complaint)
        binary = built.read_bytes() if built.is_file() else b""
    if not binary:
        raise KernelBuildFailed(f"the compiler {compiler} exited without error but wrote no library; "
                                f"set CC (C) or CXX (C++) to a working compiler")
    return binary


def _install(folder: Path, tag: str, binary: bytes) -> None:
    """Put ``binary`` into the cache under its digests; a folder that cannot be written fails the build."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_whole(folder / _named(tag, binary), binary)
    except OSError as exc:
        raise KernelBuildFailed(f"cannot write to the kernel cache: {exc.strerror or exc}; make the folder "
                                f"writable or point GRAPHC_CACHE_DIR at one") from None


def _write_whole(path: Path, binary: bytes) -> None:
    """Put ``binary`` at ``path`` whole or not at all: written beside it, then renamed over it.  A
    failed write (a full disk) removes its partial file, so the cache keeps no ``.tmp`` litter."""
    staged = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        staged.write_bytes(binary)
        os.replace(staged, path)
    except BaseException:
        with contextlib.suppress(OSError):
            staged.unlink()
        raise
