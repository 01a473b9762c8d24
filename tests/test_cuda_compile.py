"""Every kernel the CUDA backend generates compiles: with nvcc for Hopper (sm_90), and through CuPy's
own NVRTC path, with the options the runtime passes, for the GPUs students have (sm_75 to sm_90).

The translation units of the example models and of a batch of random graphs
are compiled together, as one file (nvcc takes seconds per run); a unit that
compiled once is remembered by the hash of its source, so unchanged code is
not compiled again.  The MLP's unit is also compiled exactly as ``graphc show
--view kernels`` prints it.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc import nn, optim
from graphc.backends.cuda.kernels import PRELUDE
from graphc.backends.native import cache_dir
from graphc.cli import main
from graphc.testing.strategies import RandomGraph, graphs
from graphc.train import load_model_file
from graphc.train.trainer import model_loss, model_output

NVCC = shutil.which("nvcc") or (Path("/usr/local/bin/nvcc") if Path("/usr/local/bin/nvcc").exists() else None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RANDOM_GRAPHS = 24


def nvcc_compiles(source: str, tmp_path: Path) -> None:
    """Compile ``source`` for sm_90, failing the test with nvcc's messages; remember successes."""
    tag = hashlib.sha256(source.encode()).hexdigest()[:24]
    marker = cache_dir() / f"nvcc-ok-{tag}"
    if marker.exists():
        return
    path = tmp_path / f"unit{tag}.cu"
    path.write_text(source)
    result = subprocess.run([str(NVCC), "-arch=sm_90", "-c", str(path), "-o", str(tmp_path / f"{tag}.o")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    marker.touch()


def _body(translation_unit: str) -> str:
    return translation_unit.split(PRELUDE, 1)[1]


def _model_units() -> list[str]:
    units = []
    for i, name in enumerate(["mlp.py", "mlp_bn.py", "explicit_mlp.py"]):
        model_file = load_model_file(str(EXAMPLES / name))
        x, y = gc.input("x", (None, 784)), gc.input("y", (None,), "int32")
        loss = model_loss(model_file.loss, model_output(model_file.model, x, training=True), y)
        step = gc.compile(loss, optim.Adam(1e-3), backend="cupy", name=f"model{i}")
        units.append(step.show("kernels"))
    noisy = nn.Sequential(nn.GaussianNoise(0.1), nn.Dense(32), nn.tanh, nn.Dense(10))
    experts = nn.MixtureOfExperts([nn.Sequential(nn.Dense(16), nn.sigmoid, nn.Dense(10)) for _ in range(3)])
    for name, model in (("noisy", noisy), ("experts", experts)):
        x, y = gc.input("x", (None, 784)), gc.input("y", (None,), "int32")
        step = gc.compile(gc.softmax_cross_entropy(model(x), y), optim.SGD(0.1), backend="cupy", name=name)
        units.append(step.show("kernels"))
    return units


@needs_nvcc
def test_the_printed_translation_unit_compiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(EXAMPLES / "mlp.py"), "--backend", "cupy", "--view", "kernels"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(PRELUDE) and "cuBLAS" not in printed
    nvcc_compiles(printed, tmp_path)


@needs_nvcc
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(graphs(), min_size=RANDOM_GRAPHS, max_size=RANDOM_GRAPHS))
def test_kernels_of_models_and_random_graphs_compile(tmp_path_factory: pytest.TempPathFactory,
                                                     batch: list[RandomGraph]) -> None:
    units = _model_units()
    for i, graph in enumerate(batch):
        for passes in (True, False):
            step = gc.compile([graph.output, *graph.nodes], backend="cupy", passes=passes, name=f"g{i}_{passes:d}")
            units.append(step.show("kernels"))
    nvcc_compiles(PRELUDE + "".join(_body(u) for u in units), tmp_path_factory.mktemp("nvcc"))


# ---------------------------------------------------------------- CuPy's own compiler, and libcublas from the wheels

ARCHITECTURES = ("75", "80", "86", "89", "90")  # T4, A100, RTX 30xx, RTX 40xx / L4, H100


def _nvrtc() -> object:
    try:
        from cupy.cuda import compiler
        compiler._get_nvrtc_version()
    except Exception:  # no CuPy, or no NVRTC library (the [ctk] extra brings it)
        return None
    return compiler


def nvrtc_compiles(unit: str, architecture: str) -> None:
    """Compile as ``cupy.RawModule`` does on a GPU of that architecture: graphc's options, the flush-to-zero
    CuPy adds, CuPy's own, to a cubin for ``sm_<architecture>`` (NVRTC needs no GPU for that)."""
    from graphc.backends.cuda.cupy_device import NVRTC_OPTIONS
    compiler = _nvrtc()
    program = compiler._NVRTCProgram(unit, "graphc_unit.cu", method="cubin")  # type: ignore[attr-defined]
    binary, _ = program.compile(NVRTC_OPTIONS + ("-ftz=true", f"-arch=sm_{architecture}",
                                                 "--device-as-default-execution-space"))
    assert len(binary) > 1000


@pytest.mark.skipif(_nvrtc() is None, reason="no CuPy with NVRTC (pip install 'cupy-cuda13x[ctk]')")
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(graphs(), min_size=RANDOM_GRAPHS, max_size=RANDOM_GRAPHS))
def test_nvrtc_compiles_every_unit_for_the_gpus_students_have(batch: list[RandomGraph]) -> None:
    units = _model_units()
    x = gc.input("x", (None, 3), "float64")
    infinite = gc.compile([gc.minimum(x * 2.0, np.inf), gc.where(x > -np.inf, x, np.nan)], backend="cupy",
                          name="infinite")  # C has no literal for these: each prelude defines them
    units.append(infinite.show("kernels"))
    for i, graph in enumerate(batch):
        step = gc.compile([graph.output, *graph.nodes], backend="cupy", name=f"r{i}")
        units.append(step.show("kernels"))
    unit = PRELUDE + "".join(_body(u) for u in units)
    for architecture in ARCHITECTURES:
        nvrtc_compiles(unit, architecture)


def _cublas_wheel() -> bool:
    try:
        from cuda import pathfinder
        pathfinder.load_nvidia_dynamic_lib("cublas")
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _cublas_wheel(), reason="no libcublas for cuda.pathfinder to find (the [ctk] extra)")
def test_libcublas_resolves_every_entry_point_in_a_fresh_process() -> None:
    """Nothing loaded before: the binding must find libcublas itself (CuPy's own cuBLAS module does not
    load it on import), and every function it calls must be there."""
    script = ("from graphc.backends.cuda import cublas\n"
              "lib = cublas._library()\n"
              "missing = [s for s in cublas.SYMBOLS if not hasattr(lib, s)]\n"
              "print(lib._name, missing)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "libcublas.so" in result.stdout and result.stdout.strip().endswith("[]"), result.stdout


def _failing_finder() -> types.ModuleType:
    def refuse(name: str) -> None:
        raise RuntimeError("no cublas in these wheels")
    finder = types.ModuleType("cuda")
    finder.pathfinder = types.SimpleNamespace(load_nvidia_dynamic_lib=refuse)  # type: ignore[attr-defined]
    return finder


@pytest.mark.parametrize("finder, error", [
    (None, r"libcublas was not found; pip install 'graphc\[cuda\]' brings it"),  # cuda.pathfinder not installed
    (_failing_finder(), r"libcublas was not found \(no cublas in these wheels\)"),
])
def test_without_a_working_finder_libcublas_comes_from_the_dynamic_linker_or_a_clear_error(
        finder: types.ModuleType | None, error: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from graphc.backends.cuda import cublas
    from graphc.errors import GraphcError
    monkeypatch.setitem(sys.modules, "cuda", finder)
    linked = object()
    monkeypatch.setattr(cublas, "_linked", lambda: linked)
    assert cublas._library() is linked
    monkeypatch.setattr(cublas, "_linked", lambda: None)
    with pytest.raises(GraphcError, match=error):
        cublas._library()


@pytest.mark.parametrize("status, name", [(7, "CUBLAS_STATUS_INVALID_VALUE"), (13, "CUBLAS_STATUS_EXECUTION_FAILED"),
                                          (99, "an unknown status")])
def test_a_cublas_status_is_named(status: int, name: str) -> None:
    from graphc.backends.cuda import cublas
    from graphc.errors import GraphcError
    with pytest.raises(GraphcError, match=rf"gemm failed with cuBLAS status {status} \({name}\)"):
        cublas.Cublas._check(status, "gemm")
    cublas.Cublas._check(0, "gemm")
