"""The tutorial notebook runs top to bottom, and is committed with its outputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from support import needs_fashion_mnist

TUTORIAL = Path(__file__).resolve().parent.parent / "examples" / "tutorial.ipynb"


def _outputs(notebook: nbformat.NotebookNode, first_line: str) -> list[nbformat.NotebookNode]:
    """The outputs of the code cell whose first line is ``first_line``."""
    cell = next(c for c in notebook.cells if c.cell_type == "code" and c.source.split("\n")[0] == first_line)
    return cell.outputs


def _mime_types(outputs: list[nbformat.NotebookNode]) -> set[str]:
    return {mime for output in outputs for mime in output.get("data", {})}


def test_the_committed_notebook_holds_the_outputs_of_a_clean_run() -> None:
    notebook = nbformat.read(TUTORIAL, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs for c in code), "run `jupyter execute --inplace examples/tutorial.ipynb`"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not any(o.output_type == "error" for c in code for o in c.outputs)


@needs_fashion_mnist
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_the_notebook_runs_top_to_bottom() -> None:
    notebook = nbformat.read(TUTORIAL, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(TUTORIAL.parent)}}).execute()
    assert "image/svg+xml" in _mime_types(_outputs(notebook, "step"))
    latex = next(o.data["text/latex"] for o in _outputs(notebook, "step.equations()") if "data" in o)
    assert r"\boldsymbol{\delta}^{(1)} &= \tanh'" in latex
    assert "text/html" in _mime_types(_outputs(notebook, "def train(optimizer, lr, epochs=4):"))
    assert "image/png" in _mime_types(_outputs(notebook, 'adam = train("adam", 1e-3)'))
