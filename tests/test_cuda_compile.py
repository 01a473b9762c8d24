"""Every kernel the CUDA backend generates compiles with nvcc for Hopper (sm_90).

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
from pathlib import Path

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
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
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


def test_the_printed_translation_unit_compiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(EXAMPLES / "mlp.py"), "--backend", "cupy", "--view", "kernels"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(PRELUDE) and "cuBLAS" not in printed
    nvcc_compiles(printed, tmp_path)


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
