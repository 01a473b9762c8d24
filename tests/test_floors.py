"""The floors of the package (``[tool.importlinter]`` in pyproject.toml) hold for every import:
import-linter checks the contracts over every module, lazy imports included; these tests add
what it cannot see (module names handed to ``importlib``) and the cycles between packages."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import graphc
import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE_NAME = re.compile(r"graphc(\.\w+)+")


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def floors() -> list[list[str]]:
    """The layers contract's floors, lowest first, each a list of packages."""
    layers = next(c for c in contracts() if c["type"] == "layers")["layers"]
    return [re.split(r"\s*[|:]\s*", floor) for floor in reversed(layers)]


def floor_of(module: str, floors: list[list[str]]) -> int | None:
    for height, packages in enumerate(floors):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return height
    return None


def named_modules(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    """(module, module it names in a string): the imports ``importlib.import_module`` makes."""
    found = []
    for module in sorted(graph.modules):
        path = Path(graphc.__file__).parent.parent / Path(*module.split("."))
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_NAME.fullmatch(node.value):
                if node.value in graph.modules:
                    found.append((module, node.value))
    return found


def package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def upward(edges: list[tuple[str, str]], floors: list[list[str]]) -> list[str]:
    """The imports that go from a floor to a higher one."""
    bad = []
    for importer, imported in edges:
        low, high = floor_of(importer, floors), floor_of(imported, floors)
        if low is not None and high is not None and high > low:
            bad.append(f"{importer} -> {imported}")
    return bad


def package_cycles(edges: list[tuple[str, str]]) -> list[list[str]]:
    packages = nx.DiGraph((package(a), package(b)) for a, b in edges
                          if package(a) != package(b) and "graphc" not in (package(a), package(b)))
    return [sorted(c) for c in nx.strongly_connected_components(packages) if len(c) > 1]


@pytest.fixture(scope="module")
def edges() -> list[tuple[str, str]]:
    graph = grimp.build_graph("graphc", cache_dir=None)
    imports = [(m, d) for m in graph.modules for d in graph.find_modules_directly_imported_by(m)]
    return imports + named_modules(graph)


def test_the_import_contracts_hold() -> None:
    run = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                          "lint_imports_command()", "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{len(contracts())} kept, 0 broken" in run.stdout


def test_every_package_is_on_a_floor(edges: list[tuple[str, str]]) -> None:
    packages = {package(m) for edge in edges for m in edge} - {"graphc"}
    assert not [p for p in sorted(packages) if floor_of(p, floors()) is None]


def test_no_import_goes_up_a_floor_even_by_a_name_given_to_importlib(edges: list[tuple[str, str]]) -> None:
    assert upward(edges, floors()) == []


def test_no_two_packages_import_each_other(edges: list[tuple[str, str]]) -> None:
    assert package_cycles(edges) == []


def test_the_checks_see_an_upward_import_and_a_cycle(edges: list[tuple[str, str]]) -> None:
    planted = [("graphc.ir.node", "graphc.runtime.step")]  # as if the IR imported the runtime
    assert upward(edges + planted, floors()) == ["graphc.ir.node -> graphc.runtime.step"]
    assert any("graphc.ir" in cycle and "graphc.runtime" in cycle for cycle in package_cycles(edges + planted))


def test_the_names_given_to_importlib_are_found(edges: list[tuple[str, str]]) -> None:
    assert ("graphc.backends", "graphc.backends.cpu") in edges


def test_graphc_imports_without_graphviz() -> None:
    run = subprocess.run([sys.executable, "-c", "import sys; sys.modules['graphviz'] = None; import graphc; "
                          "import graphc.cli, graphc.train.trainer"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def floors_picture() -> str:
    """The floors as docs/architecture.md draws them, highest first, numbered from the bottom."""
    lines = [f"{height + 1:>3}  " + " | ".join(p.removeprefix("graphc.") for p in packages)
             for height, packages in reversed(list(enumerate(floors())))]
    return "```\n" + "\n".join(lines) + "\n```"


def test_the_architecture_page_draws_the_contracts_floors() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    drawn = page.split("<!-- floors: generated from pyproject.toml by tests/test_floors.py -->\n")[1]
    assert drawn.split("\n<!-- /floors -->")[0] == floors_picture()
