"""Imports point one way: the IR imports nothing above it, layers and optimizers never import
the runtime, and the runtime imports no particular backend (only the backend interface)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "graphc"


def graphc_imports(path: Path) -> set[str]:
    """Every graphc module a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("graphc"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("graphc"))
    return found


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer, forbidden", [
    ("ir", ("graphc.ops", "graphc.primitives", "graphc.composites", "graphc.autodiff", "graphc.passes", "graphc.backends",
            "graphc.runtime", "graphc.nn", "graphc.optim", "graphc.program", "graphc.compiler", "graphc.train")),
    ("nn", ("graphc.runtime", "graphc.backends", "graphc.compiler")),
    ("optim", ("graphc.runtime", "graphc.backends", "graphc.compiler")),
])
def test_a_layer_does_not_import_above_itself(layer: str, forbidden: tuple[str, ...]) -> None:
    for path in modules(layer):
        bad = sorted(name for name in graphc_imports(path) if allowed(name, forbidden))
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}"


def test_the_runtime_imports_only_the_backend_interface() -> None:
    for path in modules("runtime"):
        bad = sorted(name for name in graphc_imports(path)
                     if allowed(name, ("graphc.backends",)) and not allowed(name, ("graphc.backends.base",)))
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}"
