"""Check a student's own backpropagation against graphc's, equation by equation.

A student of the course writes the forward and backward pass of a model in
NumPy and gets δ⁽ˡ⁾ and the gradients of each layer.  ``check_backprop`` runs
the same model on the same batch through graphc (the train step's gradient
graph, and reverse mode for each δ) and compares, from the output layer down,
in the order of the equations view: the first value that differs is reported
with its layer, the equation as the view prints it, and the expected and the
given numbers.  Names are plain ASCII: ``delta2`` for δ⁽²⁾, ``dW1`` for
∂E/∂W⁽¹⁾, ``db1``, and ``dgamma1``/``dbeta1`` for batch norm.  Values are
batch-major as graphc holds them: δ⁽ˡ⁾ has a row per example, and ``dW`` the
shape of graphc's W (inputs × outputs).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from graphc.errors import GraphcError
from graphc.explain.equations import Equation, GraphValues, _Derivation
from graphc.explain.expressions import Printer, Sym
from graphc.ir.graph import toposort

_GREEK = {"δ": "delta", "γ": "gamma", "β": "beta"}


class BackpropMismatch(AssertionError):
    """A student's value that is not graphc's; the message says which, where and by how much."""


@dataclass
class BackpropReport:
    """What was compared, all equal: the names, with the equation each one is."""

    checked: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(f"ok  {name:<8} {equation}" for name, equation in self.checked)


def name_of(equation: Equation) -> str:
    """The ASCII name of a backward equation's left side: δ⁽²⁾ → delta2, ∂E/∂W⁽¹⁾ → dW1 (else '')."""
    lhs = equation.lhs
    if not isinstance(lhs, Sym):
        return ""
    match = re.fullmatch(r"(∂E/∂)?([δWbγβ])⁽([⁰¹²³⁴⁵⁶⁷⁸⁹]+)⁾", lhs.text + _layer_mark(lhs))
    if match is None:
        return ""
    layer = match.group(3).translate(str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789"))
    letter = _GREEK.get(match.group(2), match.group(2))
    return f"{'d' if match.group(1) else ''}{letter}{layer}"


def _layer_mark(sym: Sym) -> str:
    """A gradient's symbol carries its quantity's layer in its text (∂E/∂W⁽¹⁾); δ's in ``layer``."""
    return "" if sym.layer is None else "⁽" + str(sym.layer).translate(str.maketrans("0123456789",
                                                                                    "⁰¹²³⁴⁵⁶⁷⁸⁹")) + "⁾"


def check_backprop(step: Any, feeds: Mapping[str, np.ndarray], given: Mapping[str, np.ndarray], *,
                   rtol: float = 1e-6, atol: float = 1e-9) -> BackpropReport:
    """Compare ``given`` (by ASCII name) with graphc's values for the batch ``feeds``, with the
    parameters the train ``step`` holds; raises :class:`BackpropMismatch` at the first difference."""
    program = step.program
    derivation = _Derivation(program)
    if any(n.op in ("normal", "uniform") for n in toposort([program.outputs["loss"]])):
        raise GraphcError("the model draws random numbers (noise or dropout), which your code cannot draw alike: "
                          "check its backpropagation without them")
    equations = {name_of(eq): eq for eq in derivation.equations.backward if name_of(eq)}
    unknown = sorted(set(given) - set(equations))
    if unknown:
        raise GraphcError(f"no equation is named {unknown[0]!r}; this model's are {', '.join(equations)}")
    if not given:
        raise GraphcError(f"nothing to check: give some of {', '.join(equations)}")
    step.materialize()
    variables = {name: np.asarray(value) for name, value in step.state.values.items()}
    values = GraphValues.of(program, derivation.wrt_nodes(), dict(feeds), variables)
    text = Printer(tex=False)
    report = BackpropReport()
    for name, eq in equations.items():
        if name not in given:
            continue
        shown = f"({eq.number}) {text(eq.lhs)} = {text(eq.rhs)}"
        want = np.asarray(values.gradient[eq.wrt], dtype=np.float64)
        got = np.asarray(given[name], dtype=np.float64)
        if got.shape != want.shape:
            hint = ("; graphc's W is inputs × outputs: transpose yours" if got.shape == want.shape[::-1]
                    else "; δ has a row per example" if name.startswith("delta") else "")
            raise BackpropMismatch(f"{name}: your value has shape {got.shape}, graphc's {want.shape}{hint}\n  {shown}")
        wrong = ~np.isclose(got, want, rtol=rtol, atol=atol)
        if wrong.any():
            where = tuple(int(i) for i in np.argwhere(wrong)[0])
            raise BackpropMismatch(
                f"{name} differs from graphc's at {int(wrong.sum())} of {want.size} values, first at {where}: "
                f"yours {got[where]:.6g}, graphc's {want[where]:.6g}\n  layer {_layer(name)}: {shown}")
        report.checked.append((name, shown))
    return report


def _layer(name: str) -> str:
    return re.sub(r"\D", "", name)
