"""Tests of the ``graphc`` command line, run in-process through ``graphc.cli.main``."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphc.cli import EXIT_INTERRUPTED, EXIT_USAGE, main
from graphc.train import checkpoint
from graphc.train import trainer as trainer_module

from support import needs_fashion_mnist
from test_train import InterruptingBatches

pytestmark = pytest.mark.usefixtures("stop_signals_heard")  # they send stop signals

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"




def error_lines(stderr: str) -> list[str]:
    """The messages the CLI printed (progress bars share stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("graphc:")]


def assert_clean_error(capsys: pytest.CaptureFixture[str], code: int, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "Traceback" not in err
    assert err.startswith("graphc: error: ")
    assert len(error_lines(err)) == 1
    for fragment in fragments:
        assert fragment in err
    return err


# ------------------------------------------------------------------ show

def test_show_prints_forward_gradient_and_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(EXAMPLES / "mlp.py")]) == 0
    out = capsys.readouterr().out
    sections = re.split(r"^==== (\w+) ====$", out, flags=re.M)[1:]
    views = dict(zip(sections[::2], sections[1::2]))
    assert {"forward", "grad", "source"} <= views.keys()
    assert "matmul x dense0.W" in views["forward"]
    assert "∂" in views["grad"]  # gradient nodes name the forward node whose rule built them
    assert "def bind(" in views["source"]


def test_show_passes_reports_every_stage_with_the_steps_own_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(EXAMPLES / "mlp.py"), "--passes", "--view", "step"]) == 0
    out = capsys.readouterr().out
    titles = re.findall(r"^==== (.*?)[:=]", out, flags=re.M)
    assert [t.split()[0] for t in titles] == ["before", "after", "after", "after", "after", "fusion", "memory",
                                              "code", "step"]
    step = out.split("==== step ====")[1]
    loops = re.findall(r"^loop \d+ over \[.*?\]: (.*)$", out, flags=re.M)
    buffers = re.findall(r"^buffer (\d+): \w+\[.*?\] holds (.*)$", out, flags=re.M)
    plan_line = re.search(r"==== fusion: (\d+) fused loops", out)
    assert loops and len(loops) == int(plan_line.group(1))
    assert [int(b) for b, _ in buffers] == list(range(len(buffers)))
    # every member of a fused loop is a value the printed step defines under the same name and op
    for member in (m for loop in loops for m in loop.split(", ")):
        name, op = member.split(" = ")
        assert re.search(rf"^\s+{re.escape(name)}\s+\S+ = {op}\b", step, flags=re.M), member


def test_show_writes_the_gradient_graph_as_dot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dot = tmp_path / "grad.dot"
    assert main(["show", str(EXAMPLES / "explicit_mlp.py"), "--view", "forward", "--dot", str(dot)]) == 0
    text = dot.read_text()
    assert text.startswith("digraph") and "W1" in text and "->" in text
    assert "==== grad ====" not in capsys.readouterr().out


def test_shape_mistake_names_the_op_the_shapes_and_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    source = EXAMPLES / "broken_shape.py"
    line = next(i for i, text in enumerate(source.read_text().splitlines(), 1) if "hidden @ W2" in text)
    code = main(["show", str(source)])
    assert_clean_error(capsys, code, "matmul", "[N,256]", "[265,10]", f"broken_shape.py:{line}")


def test_explicit_mlp_names_its_hand_made_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(EXAMPLES / "explicit_mlp.py"), "--view", "forward"]) == 0
    out = capsys.readouterr().out
    assert "matmul x W1" in out and "W2" in out


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("argv, fragment", [
    ([], "required"),
    (["frobnicate"], "frobnicate"),
    (["train"], "MODEL_FILE"),
    (["train", "examples/mlp.py", "--epochs", "many"], "--epochs"),
    (["show", "examples/mlp.py", "--view", "everything"], "--view"),
])
def test_bad_arguments_give_one_line(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = assert_clean_error(capsys, main(argv), fragment)
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, fragment", [
    (["--seed", "-1"], "seed must be an integer >= 0"),
    (["--lr", "nan"], "lr must be a positive number"),
    (["--lr-decay", "0"], "lr_decay must be a positive number"),
    (["--out", ""], "--out is empty"),
    (["--resume", "--overwrite"], "pass one"),
])
def test_bad_train_options_give_one_line(tmp_path: Path, argv: list[str], fragment: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", str(EXAMPLES / "mlp.py"), "--limit", "300", "--epochs", "1", *argv]
                + (["--out", str(tmp_path / "run")] if "--out" not in argv else []))
    assert_clean_error(capsys, code, fragment)


@pytest.mark.parametrize("defaults, fragment", [
    ({"seed": "abc"}, "seed must be an integer >= 0, got 'abc'"),
    ({"epochs": 2.5}, "epochs must be an integer"),
    ({"lr": "fast"}, "lr must be a positive number"),
    ({"val_fraction": None}, "val_fraction must lie in [0, 1)"),
    ({"optimizer": 3}, "optimizer must be one of"),
    ({"optimizer_options": []}, "optimizer_options must be a dict"),
    ({"check_numerics": "yes"}, "check_numerics must be true or false"),
])
def test_model_defaults_of_the_wrong_type_give_one_line(tmp_path: Path, defaults: dict, fragment: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typed.py"
    path.write_text(f"from graphc import nn\nmodel = nn.Dense(10)\ndefaults = {defaults!r}\n")
    assert_clean_error(capsys, main(["show", str(path)]), fragment)


@pytest.mark.parametrize("content, fragment", [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "syntax error"),
    (b"x = '\xff\xfe'\n", ":1: syntax error"),
    (b"import sys\nsys.exit(0)\n", "called exit(0) while being loaded"),
])
def test_model_files_that_are_not_models_give_one_line(tmp_path: Path, content: bytes, fragment: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "odd.py"
    path.write_bytes(content)
    err = assert_clean_error(capsys, main(["show", str(path)]), fragment)
    assert str(path) in err and "None" not in err


def test_ctrl_c_during_start_up_says_interrupted(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def press_ctrl_c(path: str) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr("graphc.cli.load_model_file", press_ctrl_c)
    assert main(["show", str(EXAMPLES / "mlp.py")]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "graphc: interrupted\n"


def test_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.py"
    assert_clean_error(capsys, main(["train", str(missing)]), str(missing), "does not exist")


def test_model_file_without_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty_model.py"
    path.write_text("import graphc as gc\nlayers = 3\n")
    assert_clean_error(capsys, main(["show", str(path)]), "empty_model.py", "`model` is not defined")


def test_unknown_option_in_model_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "odd_defaults.py"
    path.write_text("from graphc import nn\nmodel = nn.Dense(10)\ndefaults = {'learning_rate': 0.1}\n")
    assert_clean_error(capsys, main(["show", str(path)]), "learning_rate")


def test_missing_data_is_one_clean_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", str(EXAMPLES / "mlp.py"), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    err = assert_clean_error(capsys, code, "Fashion-MNIST not found", "nowhere")
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ train

@needs_fashion_mnist
def test_train_writes_history_plot_and_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", str(EXAMPLES / "mlp.py"), "--limit", "2000", "--epochs", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "dense0" in "\n".join(lines)  # the model summary
    final = re.fullmatch(r"test accuracy: (0\.\d{4})", lines[-1])
    assert final is not None
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and history[0]["test_accuracy"] == pytest.approx(float(final.group(1)), abs=5e-5)
    assert (out / "history.csv").is_file() and (out / "history.png").is_file()
    saved = checkpoint.load(out / "checkpoint.npz")
    assert saved.extra["progress"]["epoch"] == 1
    assert saved.extra["data"]["train"] == 1800  # --limit 2000 minus the default 10% held out


@needs_fashion_mnist
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signal_exits_128_plus_its_number_and_resume_finishes(
        tmp_path: Path, signum: int, code: int, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["train", str(EXAMPLES / "mlp.py"), "--limit", "600", "--epochs", "2", "--batch-size", "100",
            "--out", str(tmp_path)]
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "Batches", InterruptingBatches)
        patch.setattr(InterruptingBatches, "signum", signum)
        assert main(argv) == code
    messages = error_lines(capsys.readouterr().err)
    assert len(messages) == 1 and "--resume" in messages[0]
    assert main(argv + ["--resume"]) == 0
    assert "test accuracy:" in capsys.readouterr().out
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert np.isfinite([row["train_loss"] for row in history]).all()


@needs_fashion_mnist
def test_training_again_into_a_run_folder_needs_resume_or_overwrite(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", str(EXAMPLES / "mlp.py"), "--limit", "300", "--epochs", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    assert_clean_error(capsys, main(argv), "already holds a run", "--resume", "--overwrite")
    assert main(argv + ["--overwrite"]) == 0


@needs_fashion_mnist
def test_out_naming_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "taken"
    path.write_text("")
    code = main(["train", str(EXAMPLES / "mlp.py"), "--limit", "300", "--epochs", "1", "--out", str(path)])
    assert_clean_error(capsys, code, str(path), "is a file, not a folder")


def test_module_entry_point_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "graphc.cli", "--help"], capture_output=True, text=True,
                          cwd=EXAMPLES.parent, timeout=60)
    assert done.returncode == 0
    assert "train" in done.stdout and "show" in done.stdout
