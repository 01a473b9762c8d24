"""Generated source compiled into a shared library, cached on disk.

The cache key is a hash of what the binary depends on, given by the caller
(the source without its comments, the compiler, its flags, the machine), so an
equal model rebuilt later, or in another process, loads the library it built
before.  Libraries are written under a temporary name and renamed into place,
so processes building the same library at once never load a partial file, and
are named by a digest of their bytes as well, checked before one is used.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence


class BuildFailed(Exception):
    """The compiler rejected the source; the message holds its complaints."""


def cache_dir() -> Path:
    """Where compiled libraries live: ``$GRAPHC_CACHE_DIR/kernels``, else ``~/.cache/graphc/kernels``."""
    root = os.environ.get("GRAPHC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "graphc")
    return Path(root) / "kernels"


def shared_library(compiler: str, flags: Sequence[str], source: str, key: Sequence[str], prefix: str,
                   suffix: str) -> Path:
    """The library built from ``source`` (file suffix ``suffix``), from the cache when ``key`` matches.

    A cached library's name holds a digest of its bytes as well as of ``key``: a truncated or
    damaged file (a full disk, a killed process, a stray edit) is seen before it is loaded, removed
    and built again."""
    tag = hashlib.sha256("\0".join([*key, compiler, *flags]).encode()).hexdigest()[:24]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for cached in sorted(folder.glob(f"{prefix}{tag}-*.so")):
        if cached.name == _named(prefix, tag, cached.read_bytes()):
            return cached
        with contextlib.suppress(OSError):
            cached.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"source{suffix}"
        path.write_text(source)
        built = Path(tmp) / "library.so"
        result = subprocess.run([compiler, *flags, "-o", str(built), str(path), "-lm"], capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise BuildFailed(result.stderr.strip())
        binary = built.read_bytes()
    library = folder / _named(prefix, tag, binary)
    install(library, binary)
    return library


def install(path: Path, binary: bytes) -> None:
    """Put ``binary`` at ``path`` whole or not at all: written beside it, then renamed over it.  A
    failed write (a full disk) removes its partial file, so the cache keeps no ``.tmp`` litter."""
    staged = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        staged.write_bytes(binary)
        os.replace(staged, path)
    except BaseException:
        with contextlib.suppress(OSError):
            staged.unlink()
        raise


def _named(prefix: str, tag: str, binary: bytes) -> str:
    return f"{prefix}{tag}-{hashlib.sha256(binary).hexdigest()[:16]}.so"


def cpu_tag() -> str:
    """The CPU's feature flags, for the cache key of code built with -march=native."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""
