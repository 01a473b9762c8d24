"""Generated source compiled into a shared library, cached on disk.

The cache key is a hash of what the binary depends on, given by the caller
(the source without its comments, the compiler, its flags, the machine), so an
equal model rebuilt later, or in another process, loads the library it built
before.  Libraries are written under a temporary name and renamed into place,
so processes building the same library at once never load a partial file.
"""
from __future__ import annotations

import hashlib
import os
import shutil
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
    """The library built from ``source`` (file suffix ``suffix``), from the cache when ``key`` matches."""
    tag = hashlib.sha256("\0".join([*key, compiler, *flags]).encode()).hexdigest()[:24]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / f"{prefix}{tag}.so"
    if not library.exists():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"source{suffix}"
            path.write_text(source)
            built = Path(tmp) / "library.so"
            result = subprocess.run([compiler, *flags, "-o", str(built), str(path), "-lm"], capture_output=True,
                                    text=True)
            if result.returncode != 0:
                raise BuildFailed(result.stderr.strip())
            staged = library.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(built, staged)
            os.replace(staged, library)
    return library


def cpu_tag() -> str:
    """The CPU's feature flags, for the cache key of code built with -march=native."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""
