"""The equations view: backprop in the course's notation, read off the gradient graph.

The printed equations are checked twice: as text, term by term against the
course's backprop equations, and as mathematics, by evaluating the printed
expressions in order (forward, then backward) with float64 values and
comparing every ∂E/∂θ with the gradient graph's value for it.
"""
from __future__ import annotations

import functools
import operator
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.cli import main
from graphc.explain.equations import Equations, NotInCourseForm, derive
from graphc.explain.expressions import (Call, Coef, Expr, Had, Indicator, Lin, MatVec, Num, Outer, Printer,
                                        Quotient, Square, Sym, Total)
from graphc.testing.gradcheck import numeric_grad

from support import needs_fashion_mnist

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
F64 = "float64"
TEXT = Printer(tex=False)


def _step(layers: list[Any], loss: str, features: int = 3, outputs: int = 2) -> gc.CompiledStep:
    x = gc.input("x", (None, features), F64)
    net = nn.Sequential(*layers, nn.Dense(outputs))
    if loss == "mse":
        target = gc.input("y", (None, outputs), F64)
        return gc.compile(gc.mse(net(x), target), optimizer=optim.SGD(0.1))
    labels = gc.input("y", (None,), "int32")
    return gc.compile(gc.softmax_cross_entropy(net(x), labels), optimizer=optim.SGD(0.1))


def _lines(equations: Equations) -> list[str]:
    """Each equation as 'lhs = rhs' (with its named factor), without number or provenance."""
    lines = []
    for eq in equations.forward + equations.backward:
        text = f"{TEXT(eq.lhs)} = {TEXT(eq.rhs)}"
        if eq.where is not None:
            text += f", {TEXT(eq.where[0])} = {TEXT(eq.where[1])}"
        lines.append(text)
    return lines


# ------------------------------------------------------------------ the course's equations, term by term

def test_one_hidden_tanh_layer_with_mse_reads_as_the_course_backprop() -> None:
    equations = derive(_step([nn.Dense(4), nn.tanh], "mse").program)
    assert _lines(equations) == [
        # forward: a = Wᵀz + b (graphc's W is inputs × outputs), z = f(a), linear output, MSE
        "a¹ = W¹ᵀ x + b¹",
        "z¹ = tanh(a¹)",
        "a² = W²ᵀ z¹ + b²",
        "v = a²",
        "E = (1/N) Σₙ Σₖ (t − v)²",
        # backward: δ at the output from the loss, ∂E/∂W = Σₙ z δᵀ, δ of the layer below = f′ ⊙ W δ
        "δ² = (2/N)(v − t)",
        "∂E/∂W² = Σₙ z¹ δ²ᵀ",
        "∂E/∂b² = Σₙ δ²",
        "δ¹ = tanh′(a¹) ⊙ W² δ², tanh′(a¹) = 1 − (z¹)²",
        "∂E/∂W¹ = Σₙ x δ¹ᵀ",
        "∂E/∂b¹ = Σₙ δ¹",
    ]
    forward = {TEXT(eq.lhs): eq.number for eq in equations.forward}
    came_from = {TEXT(eq.lhs): (eq.came_from, eq.rules) for eq in equations.backward}
    assert came_from["δ²"] == ((forward["E"],), ("sub",))  # from the loss's t − v
    assert came_from["δ¹"] == ((forward["z¹"],), ("tanh",))
    assert came_from["∂E/∂W¹"] == ((forward["a¹"],), ("matmul",))
    assert came_from["∂E/∂b²"] == ((forward["a²"],), ("add",))


def test_the_same_equations_structurally() -> None:
    """The tree behind the text: δ¹ is the product the tanh rule built, not a formatted string."""
    equations = derive(_step([nn.Dense(4), nn.tanh], "mse").program)
    by_lhs = {TEXT(eq.lhs): eq for eq in equations.backward}
    a1, z1, w2 = Sym("a", r"\mathbf{a}", 1), Sym("z", r"\mathbf{z}", 1), Sym("W", r"\mathbf{W}", 2)
    delta2 = Sym("δ", r"\boldsymbol{\delta}", 2)
    derivative = Call("tanh′", (a1,))
    assert by_lhs["δ¹"].rhs == Had((derivative, MatVec(w2, False, delta2)))
    assert by_lhs["δ¹"].where == (derivative, Lin(((Coef(1), Num(1)), (Coef(-1), Square(z1)))))
    assert by_lhs["∂E/∂W²"].rhs == Total("n", Outer(z1, delta2))


@pytest.mark.parametrize("activation, derivative", [
    (nn.relu, "relu′(a¹) = 𝟙[a¹ > 0]"),
    (nn.sigmoid, "sigmoid′(a¹) = z¹ ⊙ (1 − z¹)"),
    (nn.tanh, "tanh′(a¹) = 1 − (z¹)²"),
])
def test_softmax_cross_entropy_gives_v_minus_t_and_each_activation_its_derivative(activation: Any,
                                                                                   derivative: str) -> None:
    lines = _lines(derive(_step([nn.Dense(4), activation], "ce").program))
    assert "v = softmax(a²)" in lines
    assert "E = −(1/N) Σₙ Σₖ t ⊙ log(v)" in lines
    assert "δ² = (1/N)(v − t)" in lines
    assert f"δ¹ = {derivative.split(' = ')[0]} ⊙ W² δ², {derivative}" in lines


def test_batch_norm_layers_get_their_statistics_and_parameter_gradients() -> None:
    lines = _lines(derive(_step([nn.Dense(4), nn.BatchNorm(), nn.relu], "ce").program))
    for expected in ("μ¹ = (1/N) Σₙ a¹", "x̂¹ = (a¹ − μ¹) / σ¹", "â¹ = γ¹ ⊙ x̂¹ + β¹", "z¹ = relu(â¹)",
                     "δ̂¹ = relu′(â¹) ⊙ W² δ², relu′(â¹) = 𝟙[â¹ > 0]", "∂E/∂γ¹ = Σₙ δ̂¹ ⊙ x̂¹", "∂E/∂β¹ = Σₙ δ̂¹"):
        assert expected in lines
    assert any(line.startswith("δ¹ = ") and "δ̂¹" in line for line in lines)


# ------------------------------------------------------------------ the equations compute the gradients

def _evaluate(expr: Expr, env: dict[str, np.ndarray], n: int) -> Any:
    """A printed expression's value for a batch of ``n`` rows (batch-major, as the graph holds it)."""
    def ev(e: Expr) -> Any:
        return _evaluate(e, env, n)
    if isinstance(expr, (Sym, Call)) and TEXT(expr) in env:
        return env[TEXT(expr)]
    if isinstance(expr, Num):
        return float(expr.value)
    if isinstance(expr, Lin):
        return sum(float(c.value) * n ** c.per_n * ev(e) for c, e in expr.terms)
    if isinstance(expr, Had):
        return functools.reduce(operator.mul, [ev(f) for f in expr.factors])
    if isinstance(expr, MatVec):
        return ev(expr.vector) @ (ev(expr.matrix) if expr.transposed else ev(expr.matrix).T)
    if isinstance(expr, Total):
        if isinstance(expr.body, Outer):
            return ev(expr.body.left).T @ ev(expr.body.right)
        return ev(expr.body).sum(axis=0 if expr.index == "n" else -1)
    if isinstance(expr, Quotient):
        return ev(expr.numerator) / ev(expr.denominator)
    if isinstance(expr, Square):
        return ev(expr.body) ** 2
    if isinstance(expr, Indicator):
        return (ev(expr.left) > ev(expr.right)).astype(float)
    if isinstance(expr, Call):
        (arg,) = (ev(a) for a in expr.args)
        functions = {"tanh": np.tanh, "relu": lambda u: np.maximum(u, 0), "log": np.log, "sqrt": np.sqrt,
                     "sigmoid": lambda u: 1 / (1 + np.exp(-u)),
                     "softmax": lambda u: np.exp(u - u.max(-1, keepdims=True))
                     / np.exp(u - u.max(-1, keepdims=True)).sum(-1, keepdims=True)}
        return functions[expr.name](arg)
    raise AssertionError(f"no value for {TEXT(expr)}")


@pytest.mark.parametrize("layers, loss", [
    ([nn.Dense(4), nn.tanh], "mse"),
    ([nn.Dense(5), nn.sigmoid, nn.Dense(4), nn.relu], "ce"),
    ([nn.Dense(4), nn.BatchNorm(), nn.tanh], "ce"),
])
def test_evaluating_the_printed_equations_gives_the_graphs_gradients(layers: list[Any], loss: str) -> None:
    step = _step(layers, loss)
    rng = np.random.default_rng(0)
    n = 7
    x = rng.normal(size=(n, 3))
    target = rng.normal(size=(n, 2)) if loss == "mse" else rng.integers(0, 2, n).astype(np.int32)
    variables = {v.name: rng.normal(size=v.shape) for v in step.program.variables() if v.op == "param"}
    equations = derive(step.program)
    env = {"x": x, "t": target if loss == "mse" else np.eye(2)[target]}
    names = _symbol_names(step)
    env.update({names[name]: value for name, value in variables.items()})
    for eq in equations.forward + equations.backward:
        if eq.where is not None:
            env[TEXT(eq.where[0])] = _evaluate(eq.where[1], env, n)
        env[TEXT(eq.lhs)] = _evaluate(eq.rhs, env, n)
    grads = gc.evaluate(list(step.program.grads.values()), {"x": x, "y": target}, variables)
    loss_value, = gc.evaluate([step.program.outputs["loss"]], {"x": x, "y": target}, variables)
    np.testing.assert_allclose(env["E"], loss_value, rtol=1e-10)
    for (name, _), value in zip(step.program.grads.items(), grads):
        np.testing.assert_allclose(env[f"∂E/∂{names[name[1:]]}"], value, rtol=1e-9, atol=1e-12, err_msg=name)
    # and against central differences of the loss, for the first layer's weights
    first = next(p for p in variables if p.endswith(".W"))

    def loss_of(w: np.ndarray) -> np.ndarray:
        return gc.evaluate([step.program.outputs["loss"]], {"x": x, "y": target}, {**variables, first: w})[0]

    np.testing.assert_allclose(env[f"∂E/∂{names[first]}"], numeric_grad(loss_of, variables[first]),
                               rtol=1e-6, atol=1e-9)


def _symbol_names(step: gc.CompiledStep) -> dict[str, str]:
    """Parameter name → the symbol the equations give it (dense layers numbered from 1 in order)."""
    params = [v.name for v in step.program.variables() if v.op == "param"]
    dense = sorted({p.split(".")[0] for p in params if p.startswith("dense")}, key=lambda d: int(d[5:]))
    names = {}
    for p in params:
        module, field = p.split(".")
        if module.startswith("dense"):
            layer = dense.index(module) + 1
        else:  # batch norm: the layer of the dense layer just before it
            layer = sum(int(d[5:]) < int(module[len("batchnorm"):]) for d in dense)
        symbol = {"W": "W", "b": "b", "gamma": "γ", "beta": "β"}[field]
        names[p] = symbol + str(layer).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return names


# ------------------------------------------------------------------ other graphs, LaTeX, the command line

def test_a_graph_without_dense_layers_says_why_it_has_no_equations() -> None:
    x = gc.input("x", (None, 3), F64)
    w = gc.param("w", (3,), init=gc.init.zeros, dtype=F64)
    step = gc.compile(gc.sum(x * w), optimizer=optim.SGD(0.1))
    with pytest.raises(NotInCourseForm, match="no weight matrix"):
        derive(step.program)
    assert step.show("equations").startswith("(no equations: the model has no weight matrix")


@pytest.mark.parametrize("layers, reason", [
    ([nn.MixtureOfExperts([nn.Dense(4), nn.Dense(4)])], "both read the input x: the model is not one chain"),
    ([nn.Dense(4), gc.exp], "there is 'exp', not an activation (tanh, sigmoid, relu) or batch norm"),
])
def test_a_graph_of_another_form_names_the_part_that_does_not_fit(layers: list[Any], reason: str) -> None:
    with pytest.raises(NotInCourseForm, match=re.escape(reason)):
        derive(_step(layers, "ce").program)


def test_latex_is_one_aligned_block_with_every_equation() -> None:
    step = _step([nn.Dense(4), nn.tanh], "mse")
    tex = step.equations().format(tex=True)
    assert tex.startswith(r"\begin{aligned}") and tex.endswith(r"\end{aligned}")
    assert tex.count(r"\\") == 2 + 11  # two headings and eleven equations, one row each
    assert r"\boldsymbol{\delta}^{1} &= \tanh'\left(\mathbf{a}^{1}\right) \odot \mathbf{W}^{2}" in tex
    assert r"\mathbf{W}^{1\top}" in tex and r"\frac{2}{N}" in tex
    assert step.equations()._repr_latex_() == f"$${tex}$$"


def test_show_prints_the_equations_of_the_example_mlp(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(EXAMPLES / "mlp.py"), "--view", "equations"]) == 0
    out = capsys.readouterr().out
    assert "δ³ = (1/N)(v − t)" in out and "δ¹ = relu′(a¹) ⊙ W² δ²" in out and "∂E/∂W¹ = Σₙ x δ¹ᵀ" in out
    assert main(["show", str(EXAMPLES / "mlp.py"), "--view", "equations", "--format", "latex"]) == 0
    assert r"\begin{aligned}" in capsys.readouterr().out


def test_show_takes_the_input_shape_and_fits_the_targets_to_the_loss(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "regression.py"
    model.write_text("import graphc as gc\nfrom graphc import nn\n"
                     "model = nn.Sequential(nn.Dense(16), nn.tanh, nn.Dense(8))\n"
                     "def loss(output, y):\n    return gc.mse(output, y)\n")
    assert main(["show", str(model), "--input-shape", "32", "--view", "forward"]) == 0
    out = capsys.readouterr().out
    assert "x: f32[N,32]" in out and "y: f32[N,8]" in out
    classifier = EXAMPLES / "explicit_mlp.py"
    assert main(["show", str(classifier), "--input-shape", "784", "--view", "forward"]) == 0
    assert "y: i32[N]" in capsys.readouterr().out
    assert main(["show", str(model), "--input-shape", "3x"]) == 2
    assert "--input-shape '3x' is not a shape" in capsys.readouterr().err


@needs_fashion_mnist
def test_show_takes_the_input_shape_from_a_data_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(EXAMPLES / "mlp.py"), "--dataset", "fashion-mnist", "--view", "forward"]) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert "x: f32[N,784]" in header and "y: i32[N]" in header
    assert main(["show", str(EXAMPLES / "mlp.py"), "--dataset", "fashion-mnist", "--input-shape", "784"]) == 2
    assert "either --input-shape or --dataset" in capsys.readouterr().err
