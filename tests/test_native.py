"""Tests of the one native toolchain: the fused C loops and the CUDA emulator build through it into
one cache, under one naming scheme, each library checked against the digest in its name before use."""
from __future__ import annotations

import ctypes
import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graphc.backends import native
from graphc.backends.cpu import c_loops
from graphc.backends.cuda import emulator
from graphc.backends.cuda.kernels import PRELUDE
from graphc.errors import GraphcError

pytestmark = pytest.mark.skipif(c_loops.compiler() is None or emulator.host_compiler() is None,
                                reason="needs a C and a C++ compiler")
NAMED = re.compile(r"(k|emu)([0-9a-f]{24})-([0-9a-f]{16})\.so")
LOOP = "void put(char **p, const int64_t *d) { ((float *)p[0])[0] = 7.25f; }"
KERNEL = PRELUDE + r'''
extern "C" __global__ void native_put(const long long n, float *out) { out[0] = 5.5f; }
'''


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(c_loops, "_warned", set())
    monkeypatch.setattr(emulator, "_loaded", {})  # else a translation unit built before is not built again
    return tmp_path / "cache" / "kernels"


def run_kernel(library: Any) -> float:
    out = np.zeros(1, np.float32)
    values = [ctypes.c_longlong(1), ctypes.c_void_p(out.ctypes.data)]
    table = (ctypes.c_void_p * 2)(*[ctypes.addressof(v) for v in values])
    library.launch_native_put(1, 1, table)
    return float(out[0])


def test_the_c_loops_and_the_emulator_build_through_one_toolchain_into_one_cache(
        private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, prefixes = native.load, []

    def load(*args: Any, **kwargs: Any) -> dict:
        prefixes.append(kwargs["prefix"])
        return real(*args, **kwargs)
    monkeypatch.setattr(native, "load", load)
    assert c_loops.build(LOOP, ["put"]) is not None
    assert run_kernel(emulator.build(KERNEL)) == 5.5
    assert prefixes == ["k", "emu"]
    libraries = sorted(private_cache.iterdir())
    assert sorted(NAMED.fullmatch(p.name).group(1) for p in libraries) == ["emu", "k"]  # type: ignore[union-attr]
    for library in libraries:
        assert NAMED.fullmatch(library.name).group(3) == \
            hashlib.sha256(library.read_bytes()).hexdigest()[:16]  # type: ignore[union-attr]


def test_a_corrupted_emulator_library_is_rebuilt_not_loaded(private_cache: Path) -> None:
    emulator.build(KERNEL)
    (library,) = private_cache.glob("emu*.so")
    intact = library.read_bytes()
    middle = len(intact) // 2
    damaged = library.with_suffix(".damaged")  # a new file: this process has the old one mapped
    damaged.write_bytes(intact[:middle] + bytes(64) + intact[middle + 64:])
    damaged.rename(library)
    emulator._loaded.clear()
    assert run_kernel(emulator.build(KERNEL)) == 5.5
    assert [p.name for p in private_cache.iterdir()] == [library.name]
    assert library.read_bytes() == intact


def test_an_unwritable_cache_stops_the_emulator_with_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(GraphcError, match="cannot write to the kernel cache: Not a directory"):
        emulator.build(KERNEL)


def test_the_emulator_reports_the_compilers_whole_complaint() -> None:
    with pytest.raises(GraphcError, match=r"could not build the CUDA program: (.|\n)*undeclared_thing"):
        emulator.build(PRELUDE + 'extern "C" __global__ void broken(float *out) { out[0] = undeclared_thing; }\n')


def test_the_key_holds_the_flags_but_not_the_comments(private_cache: Path) -> None:
    cc = c_loops.compiler()
    assert cc is not None
    source = "int answer(void) {{ return 42; /* from node {} */ }} // node {}\n"
    for flags, text in [(["-shared", "-fPIC"], source.format(1, 1)), (["-shared", "-fPIC"], source.format(2, 2)),
                        (["-shared", "-fPIC", "-O1"], source.format(1, 1))]:
        assert native.load(cc, flags, text, ["answer"], prefix="t", suffix=".c")["answer"]() == 42
    assert len({p.name.split("-")[0] for p in private_cache.iterdir()}) == 2


def test_a_library_without_the_named_symbol_fails_the_build(private_cache: Path) -> None:
    cc = c_loops.compiler()
    assert cc is not None
    with pytest.raises(native.KernelBuildFailed, match="does not load"):
        native.load(cc, ["-shared", "-fPIC"], "int present(void) { return 1; }\n", ["absent"], prefix="t",
                    suffix=".c")
    assert list(private_cache.iterdir()) == []
