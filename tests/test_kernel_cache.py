"""Tests of the fused-kernel disk cache: what it loads is verified, a damaged entry is rebuilt, and any
failure to build or load falls back to NumPy after one warning line naming the cause and the folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import graphc as gc
from graphc.compiler import step_cache
from graphc.backends import native
from graphc.backends.cpu import c_loops

pytestmark = pytest.mark.skipif(c_loops.compiler() is None, reason="no C compiler")
HERE = Path(__file__).resolve().parent


def constant_kernel(value: float) -> str:
    """A kernel that writes ``value`` to its first operand: two of these differ only in behaviour."""
    return f"void put(char **p, const int64_t *d) {{ ((float *)p[0])[0] = {value}f; }}"


def run_put(functions: dict) -> float:
    out = np.zeros(1, np.float32)
    functions["put"](c_loops.pointers([out]), c_loops.dims([1]))
    return float(out[0])


def put_in_a_fresh_process(value: float) -> str:
    """Build and run the kernel in a new process, which has loaded no library yet (a process that
    has would get its loaded copy back from the dynamic loader, hiding what is on disk)."""
    script = ("import sys; from test_kernel_cache import constant_kernel, run_put; "
              "from graphc.backends.cpu import c_loops; "
              "print(run_put(c_loops.build(constant_kernel(float(sys.argv[1])), ['put'])))")
    done = subprocess.run([sys.executable, "-c", script, str(value)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])})
    return done.stdout.strip() + done.stderr.strip()


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(c_loops, "_warned", set())
    return tmp_path / "cache" / "kernels"


def the_library(folder: Path) -> Path:
    (library,) = folder.glob("*.so")
    return library


def test_a_build_is_cached_and_found_again(private_cache: Path) -> None:
    assert run_put(c_loops.build(constant_kernel(2.0), ["put"])) == 2.0
    library = the_library(private_cache)
    stamp = library.stat().st_mtime_ns
    assert run_put(c_loops.build(constant_kernel(2.0), ["put"])) == 2.0
    assert the_library(private_cache).stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage", [lambda b: b[:len(b) // 2], lambda b: b[:100] + bytes(len(b) - 100),
                                    lambda b: b""])
def test_a_truncated_or_corrupt_library_is_rebuilt(private_cache: Path, damage: Callable[[bytes], bytes]) -> None:
    c_loops.build(constant_kernel(2.0), ["put"])
    library = the_library(private_cache)
    intact = library.read_bytes()
    damaged = library.with_suffix(".damaged")  # a new file: this process has the old one mapped
    damaged.write_bytes(damage(intact))
    damaged.rename(library)
    assert put_in_a_fresh_process(2.0) == "2.0"
    assert the_library(private_cache).read_bytes() == intact


def test_swapped_libraries_are_not_run(private_cache: Path) -> None:
    two, three = constant_kernel(2.0), constant_kernel(3.0)
    assert run_put(c_loops.build(two, ["put"])) == 2.0
    assert run_put(c_loops.build(three, ["put"])) == 3.0
    first, second = sorted(private_cache.glob("*.so"))
    swap = first.with_suffix(".swap")
    first.rename(swap)
    second.rename(first)
    swap.rename(second)
    assert put_in_a_fresh_process(2.0) == "2.0"
    assert put_in_a_fresh_process(3.0) == "3.0"


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("graphc: warning:")]


def cache_dir_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "file"))


@pytest.mark.parametrize("setup, cause", [
    (cache_dir_is_a_file, "cannot write to the kernel cache: Not a directory"),
    (lambda tmp, mp: mp.setenv("GRAPHC_CACHE_DIR", "/proc/self"), "cannot write to the kernel cache"),
    (lambda tmp, mp: mp.setenv("CC", "/bin/true"), "/bin/true exited without error but wrote no library"),
    (lambda tmp, mp: mp.setenv("CC", "/bin/false"), "/bin/false failed (exit 1)"),
])
def test_a_failed_build_falls_back_to_numpy_with_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             setup: Callable, cause: str) -> None:
    setup(tmp_path, monkeypatch)
    assert c_loops.build(constant_kernel(2.0), ["put"]) is None
    assert c_loops.build(constant_kernel(2.0), ["put"]) is None
    (line,) = warning_lines(capsys.readouterr().err)
    assert "running plain NumPy" in line and cause in line
    assert f"(kernel cache {native.cache_dir()})" in line


def test_a_step_whose_kernels_cannot_build_runs_as_numpy(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CC", "/bin/true")
    step_cache.clear()
    x = gc.input("x", (None, 3))
    step = gc.compile(gc.tanh(x) * 2.0 + 1.0, name="cache_fallback")
    feed = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    assert "fused" not in step.source
    np.testing.assert_allclose(step(x=feed), step.reference(x=feed)[0], rtol=1e-6)
    assert len(warning_lines(capsys.readouterr().err)) == 1
    step_cache.clear()


def test_a_damaged_emulator_library_in_the_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator's cached libraries are checked against the digest in their names, as the C loops'
    are: a truncated one (a full disk, a killed build) once broke every later run."""
    script = ("import numpy as np, graphc as gc\n"
              "x = gc.input('x', (None, 3), 'float64')\n"
              "step = gc.compile(gc.tanh(x) * 2.0 + 0.4375, backend='cuda-emulator')\n"
              "print(repr(step(x=np.linspace(-1, 1, 6).reshape(2, 3)).tolist()))\n")
    env = {**os.environ, "GRAPHC_CACHE_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    [library] = (tmp_path / "kernels").glob("emu*.so")
    library.write_bytes(library.read_bytes()[:1000])
    again = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    [rebuilt] = (tmp_path / "kernels").glob("emu*.so")
    assert rebuilt.stat().st_size > 1000


def test_a_full_disk_while_caching_leaves_no_temporary_file(private_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    real_write = Path.write_bytes

    def full(path: Path, data: bytes) -> int:
        if path.name.endswith(".tmp"):
            real_write(path, data[:len(data) // 2])  # the disk fills up half-way
            raise OSError(28, "No space left on device")
        return real_write(path, data)
    monkeypatch.setattr(Path, "write_bytes", full)
    assert c_loops.build(constant_kernel(2.0), ["put"]) is None
    assert "cannot write to the kernel cache: No space left on device" in capsys.readouterr().err
    assert list(private_cache.iterdir()) == []
