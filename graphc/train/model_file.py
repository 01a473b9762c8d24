"""Model files: a model described as a plain Python file, for the command line.

A model file is ordinary Python, so it can use the whole DSL, import helpers
and build layers in loops; graphc only asks that it define ``model``
(``model(x, training) -> output node``) and optionally ``loss(output, y)`` and
a ``defaults`` dict of trainer options.  It is executed as a module whose
``__file__`` is the real path, so every node it builds records the user's own
line, which is what error messages point at; modules in the file's own folder
import, as they would under ``python model.py``.  Python errors in the file
other than syntax errors keep their traceback, which ends at the user's line;
a file that is not Python source (a syntax error without a line), or that
exits while loading, is refused in one line.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from graphc.composites import softmax_cross_entropy
from graphc.errors import GraphcError
from graphc.ir.node import Node

Model = Callable[..., Node]
Loss = Callable[[Node, Node], Node]


class ModelFileError(GraphcError):
    """A model file that is missing, does not parse or lacks what graphc needs."""


@dataclass
class ModelFile:
    path: Path
    model: Model
    loss: Loss = softmax_cross_entropy
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem


def load_model_file(path: str | Path) -> ModelFile:
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise ModelFileError(f"model file {path} {problem}; pass the path of a .py file that defines `model`")
    namespace = _execute(path)
    model = namespace.get("model")
    if not callable(model):
        found = "is not callable" if model is not None else "is not defined"
        raise ModelFileError(f"{path}: `model` {found}; define model(x, training) returning the output node "
                             f"(for example model = nn.Sequential(nn.Dense(10)))")
    loss = namespace.get("loss", softmax_cross_entropy)
    if not callable(loss):
        raise ModelFileError(f"{path}: `loss` must be a function loss(output, y) returning a scalar node")
    defaults = namespace.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ModelFileError(f"{path}: `defaults` must be a dict of trainer options, got {type(defaults).__name__}")
    return ModelFile(path, model, loss, dict(defaults))


def _execute(path: Path) -> dict[str, Any]:
    # As `python model.py` would: modules beside the file import (the `graphc` command's own folder
    # is first on the path, not the model's).
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = "graphc_model_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelFileError(f"cannot load {path} as Python; model files must end in .py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        where = f"{path}:{exc.lineno}" if exc.lineno is not None else f"{path}"
        raise ModelFileError(f"{where}: syntax error: {exc.msg}; a model file must be Python source") from None
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"{path} is not Python source: byte {exc.start} is not UTF-8 text ({exc.reason}); "
                             f"pass a .py file that defines `model`") from None
    except SystemExit as exc:
        raise ModelFileError(f"{path} called exit({exc.code!r}) while being loaded; a model file must only define "
                             f"`model` (guard script code with `if __name__ == '__main__':`)") from None
    return vars(module)

