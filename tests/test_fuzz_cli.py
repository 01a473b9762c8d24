"""Fuzzing the command line: any combination of options ends with exit 0, or one `graphc: error:` line
and exit 2, never a traceback (on a tiny synthetic data set, so that training runs are quick)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc import optim
from graphc.cli import EXIT_USAGE, main

from fuzzing import FUZZ
from support import tiny_fashion_mnist


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tiny_fashion_mnist(tmp_path_factory.mktemp("tiny"))
    (folder / "small_model.py").write_text("from graphc import nn\nmodel = nn.Dense(10)\n")
    return folder


numbers = st.sampled_from(["0", "1", "2", "-1", "0.5", "1e-3", "1e300", "nan", "inf", "-inf", "abc", "", "3.0",
                           "99999999999999999999999"])
OPTIONS = {
    "--optimizer": st.sampled_from([*optim.BY_NAME, "ADAM", "nope", ""]),
    "--lr": numbers, "--lr-decay": numbers, "--batch-size": numbers, "--seed": numbers,
    "--val-fraction": numbers, "--patience": numbers, "--limit": numbers, "--max-loss": numbers,
    "--epochs": st.sampled_from(["1", "2", "0", "-1", "x", ""]),
    "--dataset": st.sampled_from(["fashion-mnist", "mnist", "cifar"]),
    "--view": st.sampled_from(["forward", "grad", "all", "nope"]),
}
FLAGS = ["--resume", "--overwrite", "--check-numerics", "--passes"]


@st.composite
def command_lines(draw: st.DrawFn, data: Path, out: Path) -> list[str]:
    argv = [draw(st.sampled_from(["train", "train", "train", "show", "run"]))]
    argv.append(draw(st.sampled_from([str(data / "small_model.py"), str(data / "missing.py"), str(data)])))
    for option in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=5, unique=True)):
        argv += [option, draw(OPTIONS[option])]
    argv += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    argv += ["--out", draw(st.sampled_from([str(out / "run"), str(out / "run"), "", str(data / "small_model.py")]))]
    return argv + ["--data", str(data)]  # last, so every run trains on the tiny set


@settings(FUZZ, max_examples=max(FUZZ.max_examples // 3, 10),
          suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_command_line_exits_0_or_with_one_error_line(tiny_data: Path, data: st.DataObject,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as out:
        argv = data.draw(command_lines(tiny_data, Path(out)))
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("graphc: error:")]
    assert (code, len(errors)) in ((0, 0), (EXIT_USAGE, 1)), (argv, code, err)
