"""A printable model summary: each layer's name, kind, output shape and parameter count.

Shapes are read from the graph the model built (each module records the shape
it returned), so the summary cannot disagree with what gets compiled.
"""
from __future__ import annotations

from math import prod
from typing import Any, Iterator, Optional, Sequence

from graphc import ops
from graphc.errors import GraphcError
from graphc.ir.node import Node
from graphc.ir.shapes import fmt
from graphc.nn.module import Module

HEADER = ("layer", "kind", "output shape", "params")


def summary(module: Module, input_shape: Optional[Sequence[Any]] = None, dtype: str = "float32") -> str:
    """The summary table of ``module``, as a string.

    Call it after the model has been applied once.  Otherwise pass
    ``input_shape`` (``None`` for the batch axis) and ``dtype``: the model is
    then applied to an input of that shape in inference mode, which builds its
    variables with that dtype.  A container's row counts its whole subtree.
    """
    if module.output_shape is None:
        if input_shape is None:
            raise GraphcError(f"summary: '{module.name or module.kind}' has not been applied yet; "
                              f"call it on an input first or pass input_shape")
        module(ops.input("summary_input", input_shape, dtype), training=False)
    rows = [HEADER] + [_row(m, depth) for m, depth in _layers(module)]
    return "\n".join(_table(rows) + _totals(module))


def count(variables: Sequence[Node]) -> int:
    """The number of scalars held in ``variables``."""
    return sum(prod(int(d) for d in v.shape) for v in variables)


def _layers(module: Module) -> Iterator[tuple[Module, int]]:
    """Every module under ``module`` with its depth; the root itself only if it is a single layer."""
    if not module.children():
        yield module, 0
        return
    for child in module.children():
        yield from _walk(child, 0)


def _walk(module: Module, depth: int) -> Iterator[tuple[Module, int]]:
    yield module, depth
    for child in module.children():
        yield from _walk(child, depth + 1)


def _row(module: Module, depth: int) -> tuple[str, str, str, str]:
    shape = fmt(module.output_shape) if module.output_shape is not None else "-"
    return ("  " * depth + module.name, module.describe(), shape, f"{count(module.parameters()):,}")


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[c]) for row in rows) for c in range(len(HEADER))]
    lines = [_line(row, widths) for row in rows]
    rule = "-" * len(lines[0])
    return [lines[0], rule] + lines[1:] + [rule]


def _line(row: tuple[str, ...], widths: list[int]) -> str:
    *text, number = row
    return "  ".join(cell.ljust(w) for cell, w in zip(text, widths)) + "  " + number.rjust(widths[-1])


def _totals(module: Module) -> list[str]:
    return [f"trainable parameters: {count(module.parameters()):,}",
            f"state values (running statistics): {count(module.states()):,}"]
