"""Fuzzing the model-file loader: any file gives a model, loss and trainer options that build a graph,
or graphc's own one-line error (the checks the command line runs before training)."""
from __future__ import annotations

import tempfile
import traceback
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from graphc import ops
from graphc.errors import GraphcError
from graphc.train import TrainConfig, load_model_file
from graphc.train.trainer import model_loss, model_output

from fuzzing import FUZZ, result_or_own_error

OPTION_NAMES = ["optimizer", "lr", "lr_decay", "batch_size", "epochs", "seed", "val_fraction", "patience",
                "optimizer_options", "backend", "max_loss", "check_numerics", "momentum"]
literals = st.sampled_from(["None", "True", "0", "-1", "3", "2.5", "float('nan')", "'abc'", "''", "[]", "{}",
                            "(1, 2)", "10**30", "'adam'", "'sgd'", "1e-3"])
widths = st.sampled_from(["1", "3", "10", "0", "-2", "2.5", "'ten'", "None"])
models = st.one_of(
    literals,
    widths.map(lambda w: f"nn.Dense({w})"),
    st.tuples(widths, widths).map(lambda ws: f"nn.Sequential(nn.Dense({ws[0]}), nn.relu, nn.Dense({ws[1]}))"),
    literals.map(lambda value: f"lambda x, training: {value}"),
    st.just("lambda x, training: x"),
    st.just("lambda x: x"),
)
losses = st.one_of(literals, literals.map(lambda value: f"lambda output, y: {value}"),
                   st.just("lambda output, y: gc.mean(output)"), st.just("lambda output, y: output"))
defaults = st.one_of(literals, st.dictionaries(st.sampled_from(OPTION_NAMES), literals, max_size=4).map(
    lambda d: "{" + ", ".join(f"{k!r}: {v}" for k, v in d.items()) + "}"))


@st.composite
def model_files(draw: st.DrawFn) -> bytes:
    lines = ["import graphc as gc", "from graphc import nn"]
    for name, values in (("model", models), ("loss", losses), ("defaults", defaults)):
        if draw(st.booleans()) or name == "model":
            lines.append(f"{name} = {draw(values)}")
    return "\n".join(lines).encode()


def load_and_build(content: bytes) -> Any:
    """What ``graphc show`` does before compiling: load the file, merge options, build the loss graph.

    An exception raised by the file's own code (a NameError in it, say) is the user's bug and keeps
    its traceback, which ends at the user's line: that is allowed, and returned.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.py"
        path.write_bytes(content)
        try:
            model_file = load_model_file(path)
            TrainConfig.from_options(model_file.defaults)
            x, y = ops.input("x", (None, 784), "float32"), ops.input("y", (None,), "int32")
            return model_loss(model_file.loss, model_output(model_file.model, x, training=True), y)
        except GraphcError:
            raise
        except Exception as exc:
            innermost = traceback.extract_tb(exc.__traceback__)[-1]
            assert innermost.filename == str(path), f"{exc!r} raised at {innermost.filename}:{innermost.lineno}"
            return exc


@FUZZ
@given(content=model_files() | st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_any_model_file_builds_or_gives_one_line(content: bytes) -> None:
    result_or_own_error(lambda: load_and_build(content), memory_limit=64 << 20)
