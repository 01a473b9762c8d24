"""The equations view: backprop in the course's notation, for every model of the course's kind.

The printed equations are checked three ways: as text, term by term against
the course's backprop equations (and Ioffe & Szegedy's for batch norm); by
derive() itself, which evaluates each equation against the graph and refuses
rather than print one that does not match (over a Hypothesis strategy of the
course's models); and by evaluating them in order, each from the values the
previous ones gave, against central differences of the loss.
"""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings

import graphc as gc
from graphc import nn, optim
from graphc.cli import main
from graphc.explain import evaluate
from graphc.explain.equations import (EquationMismatch, Equations, GraphValues, NotInCourseForm, _Derivation, derive,
                                      symbol_values)
from graphc.explain.expressions import Call, Coef, Expr, Had, Lin, MatVec, Num, Outer, Printer, Square, Sym, Total
from graphc.testing.gradcheck import numeric_grad
from graphc.testing.models import CourseModel, course_models

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
        lines.append(unicodedata.normalize("NFC", text))
    return lines


# ------------------------------------------------------------------ the course's equations, term by term

def test_one_hidden_tanh_layer_with_mse_reads_as_the_course_backprop() -> None:
    equations = derive(_step([nn.Dense(4), nn.tanh], "mse").program)
    assert _lines(equations) == [
        # forward: a = Wᵀz + b (graphc's W is inputs × outputs), z = f(a), linear output, MSE
        "a⁽¹⁾ = W⁽¹⁾ᵀ x + b⁽¹⁾",
        "z⁽¹⁾ = tanh(a⁽¹⁾)",
        "a⁽²⁾ = W⁽²⁾ᵀ z⁽¹⁾ + b⁽²⁾",
        "v = a⁽²⁾",
        "E = (1/N) Σₙ Σₖ (t − v)²",
        # backward: δ at the output from the loss, ∂E/∂W = Σₙ z δᵀ, δ of the layer below = f′ ⊙ W δ
        "δ⁽²⁾ = (2/N)(v − t)",
        "∂E/∂W⁽²⁾ = Σₙ z⁽¹⁾ δ⁽²⁾ᵀ",
        "∂E/∂b⁽²⁾ = Σₙ δ⁽²⁾",
        "δ⁽¹⁾ = tanh′(a⁽¹⁾) ⊙ W⁽²⁾ δ⁽²⁾, tanh′(a⁽¹⁾) = 1 − (z⁽¹⁾)²",
        "∂E/∂W⁽¹⁾ = Σₙ x δ⁽¹⁾ᵀ",
        "∂E/∂b⁽¹⁾ = Σₙ δ⁽¹⁾",
    ]
    forward = {TEXT(eq.lhs): eq.number for eq in equations.forward}
    came_from = {TEXT(eq.lhs): (eq.came_from, eq.rules) for eq in equations.backward}
    assert came_from["δ⁽²⁾"] == ((forward["E"],), ("sub",))  # from the loss's t − v
    assert came_from["δ⁽¹⁾"] == ((forward["z⁽¹⁾"], forward["a⁽²⁾"]), ("matmul", "tanh"))
    assert came_from["∂E/∂W⁽¹⁾"] == ((forward["a⁽¹⁾"],), ("matmul",))
    assert came_from["∂E/∂b⁽²⁾"] == ((forward["a⁽²⁾"],), ("add",))


def test_the_same_equations_structurally() -> None:
    """The tree behind the text: δ⁽¹⁾ is f′ times what came through the layer above."""
    equations = derive(_step([nn.Dense(4), nn.tanh], "mse").program)
    by_lhs = {TEXT(eq.lhs): eq for eq in equations.backward}
    a1, z1, w2 = Sym("a", r"\mathbf{a}", 1), Sym("z", r"\mathbf{z}", 1), Sym("W", r"\mathbf{W}", 2)
    delta2 = Sym("δ", r"\boldsymbol{\delta}", 2)
    derivative = Call("tanh′", (a1,))
    assert by_lhs["δ⁽¹⁾"].rhs == Had((derivative, MatVec(w2, False, delta2)))
    assert by_lhs["δ⁽¹⁾"].where == (derivative, Lin(((Coef(1), Num(1)), (Coef(-1), Square(z1)))))
    assert by_lhs["∂E/∂W⁽²⁾"].rhs == Total("n", Outer(z1, delta2))


@pytest.mark.parametrize("activation, derivative", [
    (nn.relu, "relu′(a⁽¹⁾) = 𝟙[a⁽¹⁾ > 0]"),
    (nn.sigmoid, "sigmoid′(a⁽¹⁾) = z⁽¹⁾ ⊙ (1 − z⁽¹⁾)"),
    (nn.tanh, "tanh′(a⁽¹⁾) = 1 − (z⁽¹⁾)²"),
])
def test_softmax_cross_entropy_gives_v_minus_t_and_each_activation_its_derivative(activation: Any,
                                                                                   derivative: str) -> None:
    lines = _lines(derive(_step([nn.Dense(4), activation], "ce").program))
    assert "v = softmax(a⁽²⁾)" in lines
    assert "E = −(1/N) Σₙ Σₖ t ⊙ log(v)" in lines
    assert "δ⁽²⁾ = (1/N)(v − t)" in lines
    assert f"δ⁽¹⁾ = {derivative.split(' = ')[0]} ⊙ W⁽²⁾ δ⁽²⁾, {derivative}" in lines


BN_BACKWARD = ["∂E/∂x̂⁽¹⁾ = ∂E/∂{y}⁽¹⁾ ⊙ γ⁽¹⁾",
               "∂E/∂σ²⁽¹⁾ = −1/2 Σₙ ∂E/∂x̂⁽¹⁾ ⊙ ({u}⁽¹⁾ − μ⁽¹⁾) ⊙ (σ²⁽¹⁾ + 1e-05)^(−3/2)",
               "∂E/∂μ⁽¹⁾ = −Σₙ ∂E/∂x̂⁽¹⁾ / √(σ²⁽¹⁾ + 1e-05) − (2/N) ∂E/∂σ²⁽¹⁾ ⊙ (Σₙ ({u}⁽¹⁾ − μ⁽¹⁾))",
               "∂E/∂γ⁽¹⁾ = Σₙ ∂E/∂{y}⁽¹⁾ ⊙ x̂⁽¹⁾", "∂E/∂β⁽¹⁾ = Σₙ ∂E/∂{y}⁽¹⁾"]


def test_batch_norm_before_the_activation_in_the_textbook_form() -> None:
    """Ioffe & Szegedy's backward equations, not the graph's one long line through μ, σ and x̂."""
    lines = _lines(derive(_step([nn.Dense(4), nn.BatchNorm(), nn.relu], "ce").program))
    for expected in ["μ⁽¹⁾ = (1/N) Σₙ a⁽¹⁾", "σ²⁽¹⁾ = (1/N) Σₙ (a⁽¹⁾ − μ⁽¹⁾)²", "x̂⁽¹⁾ = (a⁽¹⁾ − μ⁽¹⁾) / √(σ²⁽¹⁾ + 1e-05)",
                     "â⁽¹⁾ = γ⁽¹⁾ ⊙ x̂⁽¹⁾ + β⁽¹⁾", "z⁽¹⁾ = relu(â⁽¹⁾)",
                     "∂E/∂â⁽¹⁾ = relu′(â⁽¹⁾) ⊙ W⁽²⁾ δ⁽²⁾, relu′(â⁽¹⁾) = 𝟙[â⁽¹⁾ > 0]",
                     *(line.format(y="â", u="a") for line in BN_BACKWARD),
                     "δ⁽¹⁾ = ∂E/∂x̂⁽¹⁾ / √(σ²⁽¹⁾ + 1e-05) + (2/N) ∂E/∂σ²⁽¹⁾ ⊙ (a⁽¹⁾ − μ⁽¹⁾) + (1/N) ∂E/∂μ⁽¹⁾"]:
        assert unicodedata.normalize("NFC", expected) in lines
    assert max(len(line) for line in lines) < 110


@pytest.mark.parametrize("activation", [nn.relu, nn.tanh])
def test_batch_norm_after_the_activation_as_the_readme_model_has_it(activation: Any) -> None:
    lines = _lines(derive(_step([nn.Dense(4), activation, nn.BatchNorm()], "ce").program))
    name = "relu" if activation is nn.relu else "tanh"
    for expected in [f"z⁽¹⁾ = {name}(a⁽¹⁾)", "ẑ⁽¹⁾ = γ⁽¹⁾ ⊙ x̂⁽¹⁾ + β⁽¹⁾", "a⁽²⁾ = W⁽²⁾ᵀ ẑ⁽¹⁾ + b⁽²⁾",
                     "∂E/∂ẑ⁽¹⁾ = W⁽²⁾ δ⁽²⁾", *(line.format(y="ẑ", u="z") for line in BN_BACKWARD),
                     "∂E/∂z⁽¹⁾ = ∂E/∂x̂⁽¹⁾ / √(σ²⁽¹⁾ + 1e-05) + (2/N) ∂E/∂σ²⁽¹⁾ ⊙ (z⁽¹⁾ − μ⁽¹⁾) + (1/N) ∂E/∂μ⁽¹⁾"]:
        assert unicodedata.normalize("NFC", expected) in lines
    assert f"δ⁽¹⁾ = {name}′(a⁽¹⁾) ⊙ ∂E/∂z⁽¹⁾" in [line.split(", ")[0] for line in lines]


def test_input_noise_is_written_and_its_layer_reads_the_noisy_input() -> None:
    """The noise once vanished from the view: a⁽¹⁾ = W⁽¹⁾ᵀ x + b⁽¹⁾ was printed for a layer reading x + ε."""
    equations = derive(_step([nn.GaussianNoise(0.1), nn.Dense(4), nn.sigmoid], "ce").program)
    lines = _lines(equations)
    for expected in ["x̃ = x + ε", "a⁽¹⁾ = W⁽¹⁾ᵀ x̃ + b⁽¹⁾", "∂E/∂W⁽¹⁾ = Σₙ x̃ δ⁽¹⁾ᵀ"]:
        assert unicodedata.normalize("NFC", expected) in lines
    assert equations.find(unicodedata.normalize("NFC", "x̃")).note == "ε ~ 𝒩(0, 0.1²) drawn afresh each step"


def test_noise_and_dropout_after_a_layer() -> None:
    lines = _lines(derive(_step([nn.Dense(4), nn.tanh, nn.GaussianNoise(0.2), nn.Dense(3), nn.relu,
                                 nn.Dropout(0.5)], "mse").program))
    for expected in ["z̃⁽¹⁾ = z⁽¹⁾ + ε⁽¹⁾", "a⁽²⁾ = W⁽²⁾ᵀ z̃⁽¹⁾ + b⁽²⁾", "z̃⁽²⁾ = m⁽²⁾ ⊙ z⁽²⁾",
                     "a⁽³⁾ = W⁽³⁾ᵀ z̃⁽²⁾ + b⁽³⁾", "∂E/∂W⁽²⁾ = Σₙ z̃⁽¹⁾ δ⁽²⁾ᵀ",
                     "δ⁽²⁾ = relu′(a⁽²⁾) ⊙ m⁽²⁾ ⊙ W⁽³⁾ δ⁽³⁾, relu′(a⁽²⁾) = 𝟙[a⁽²⁾ > 0]",
                     "δ⁽¹⁾ = tanh′(a⁽¹⁾) ⊙ W⁽²⁾ δ⁽²⁾, tanh′(a⁽¹⁾) = 1 − (z⁽¹⁾)²"]:
        assert unicodedata.normalize("NFC", expected) in lines


def test_weight_decay_enters_the_loss_and_the_weight_gradients() -> None:
    x = gc.input("x", (None, 3), F64)
    labels = gc.input("y", (None,), "int32")
    net = nn.Sequential(nn.Dense(4), nn.tanh, nn.Dense(2))
    loss = gc.softmax_cross_entropy(net(x), labels) + 1e-3 * nn.l2(net)
    lines = _lines(derive(gc.compile(loss, optimizer=optim.SGD(0.1)).program))
    assert "E = 0.0005 ‖W⁽¹⁾‖² + 0.0005 ‖W⁽²⁾‖² − (1/N) Σₙ Σₖ t ⊙ log(v)" in lines
    assert "∂E/∂W⁽¹⁾ = 0.001 W⁽¹⁾ + Σₙ x δ⁽¹⁾ᵀ" in lines


def test_the_notation_is_stated_once_at_the_top() -> None:
    text = derive(_step([nn.Dense(4), nn.tanh], "mse").program).format()
    assert text.splitlines()[0].startswith("notation: one example as a column vector; ⁽ˡ⁾ marks layer l")
    assert text.count("notation:") == 1


# ------------------------------------------------------------------ every printed equation is checked

EXAMPLES_PER_RUN = int(os.environ.get("GRAPHC_MODEL_EXAMPLES", 25))  # 300 and more for a longer local search


@settings(max_examples=EXAMPLES_PER_RUN, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=course_models())
def test_every_course_model_gets_equations_that_give_the_graphs_values(model: CourseModel) -> None:
    """Noise anywhere, batch norm before or after the activation, dropout, weight decay, MSE or
    cross-entropy, one to four layers: derive() evaluates every equation it prints against the
    graph (and raises EquationMismatch rather than print a wrong one); none may be refused."""
    event(model.description.split(", ")[-1])
    step = gc.compile(model.loss, optimizer=optim.SGD(0.1))
    equations = derive(step.program)
    assert len(equations.backward) >= 3 * len([layer for layer in model.layers if isinstance(layer, nn.Dense)])


def test_a_wrong_equation_is_refused_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check inside derive() is what stands between a derivation bug and the user: an
    activation whose f′ is dropped gives equations that do not match, and derive() says so."""
    from graphc.explain import equations as module

    def forgets_the_derivative(self: Any, stage: Any, upstream: Expr) -> Expr:
        return upstream

    monkeypatch.setattr(module._Derivation, "_activation", forgets_the_derivative)
    step = _step([nn.Dense(4), nn.tanh], "ce")
    with pytest.raises(EquationMismatch, match=r"equation \(9\) δ⁽¹⁾ = W⁽²⁾ δ⁽²⁾ does not give the graph's value"):
        derive(step.program)
    assert "this is a bug of graphc's" in step.show("equations")


def test_the_check_compares_every_gradient_with_reverse_mode_and_the_train_step() -> None:
    step = _step([nn.Dense(5), nn.sigmoid, nn.Dense(4), nn.relu], "ce")
    derivation = _Derivation(step.program)
    values = GraphValues.random(step.program, derivation.wrt_nodes())
    env = symbol_values(derivation, values)
    for eq in derivation.equations.backward:
        if eq.wrt.is_variable:  # the train step's gradient, against the equation evaluated here
            np.testing.assert_allclose(evaluate.value(eq.rhs, {**env, **_where(eq, env, values.rows)}, values.rows),
                                       values.step_gradient[eq.wrt.name], rtol=1e-9, atol=1e-12)


def _where(eq: Any, env: dict, rows: int) -> dict:
    return {eq.where[0]: evaluate.value(eq.where[1], env, rows)} if eq.where is not None else {}


@pytest.mark.parametrize("layers, loss", [
    ([nn.Dense(4), nn.tanh], "mse"),
    ([nn.Dense(5), nn.sigmoid, nn.Dense(4), nn.relu], "ce"),
    ([nn.Dense(4), nn.BatchNorm(), nn.tanh], "ce"),
    ([nn.GaussianNoise(0.1), nn.Dense(4), nn.relu, nn.BatchNorm()], "ce"),
])
def test_evaluating_the_printed_equations_in_order_gives_the_gradients_finite_differences_give(
        layers: list[Any], loss: str) -> None:
    """Forward, then backward, each equation from the values the previous ones gave (not the
    graph's): the chain alone reproduces E and ∂E/∂W⁽¹⁾ (noise held fixed), checked by central
    differences of the loss."""
    step = _step(layers, loss)
    rng = np.random.default_rng(0)
    n = 7
    x = rng.normal(size=(n, 3))
    target = rng.normal(size=(n, 2)) if loss == "mse" else rng.integers(0, 2, n).astype(np.int32)
    variables = {v.name: rng.normal(size=v.shape) * 0.5 + (1.0 if v.name.endswith("gamma") else 0.0)
                 for v in step.program.variables() if v.op == "param"}
    derivation = _Derivation(step.program)
    values = GraphValues.of(step.program, derivation.wrt_nodes(), {"x": x, "y": target}, variables)
    leaves = {symbol: values.forward[node] for symbol, node in derivation.meaning.items()
              if node.op in ("input", "param", "one_hot") or node.kind == "binary" and node not in derivation.defined_by}
    env = dict(leaves)
    for eq in derivation.equations.all():
        env.update(_where(eq, env, n))
        env[eq.lhs] = evaluate.value(eq.rhs, env, n)
    first = next(p for p in variables if p.endswith(".W") and p.startswith("dense"))
    w1 = Sym("W", r"\mathbf{W}", 1)
    assert step.program.outputs["loss"] is not None
    noise = {node: values.forward[node] for node in values.forward if node.op == "normal"}

    def loss_of(w: np.ndarray) -> np.ndarray:
        fixed = {**variables, first: w}
        return _loss_with_noise(step, {"x": x, "y": target}, fixed, noise)

    np.testing.assert_allclose(env[Sym("E", "E")], loss_of(variables[first]), rtol=1e-10)
    dw = derivation.equations.find("∂E/∂W⁽¹⁾").lhs
    np.testing.assert_allclose(env[dw], numeric_grad(loss_of, variables[first]), rtol=1e-6, atol=1e-9)
    assert w1 in env


def _loss_with_noise(step: gc.CompiledStep, feeds: dict, variables: dict, noise: dict) -> np.ndarray:
    """The loss with each random draw replaced by the value it took (so finite differences see one draw)."""
    def watch(node: Any, value: np.ndarray) -> None:
        if node in noise:
            value[...] = noise[node]
    return gc.evaluate([step.program.outputs["loss"]], feeds, variables, watch=watch)[0]


# ------------------------------------------------------------------ other graphs, LaTeX, the command line

def test_a_graph_without_dense_layers_says_why_it_has_no_equations() -> None:
    x = gc.input("x", (None, 3), F64)
    w = gc.param("w", (3,), init=gc.init.zeros, dtype=F64)
    step = gc.compile(gc.sum(x * w), optimizer=optim.SGD(0.1))
    with pytest.raises(NotInCourseForm, match="no weight matrix"):
        derive(step.program)
    assert step.show("equations").startswith("(no equations: the model has no weight matrix")


@pytest.mark.parametrize("layers, reason", [
    ([nn.MixtureOfExperts([nn.Dense(4), nn.Dense(4)])],
     "both read the input x: the model is not one chain of layers (a mixture of experts or an ensemble"),
    ([nn.Dense(4), gc.exp], "there is 'exp', not an activation (tanh, sigmoid, relu), batch norm, noise or dropout"),
    ([nn.Dense(4), nn.tanh, nn.tanh], "layer 1 would need two quantities named z: two stages of one kind in a row"),
])
def test_a_graph_of_another_form_names_the_part_that_does_not_fit(layers: list[Any], reason: str) -> None:
    with pytest.raises(NotInCourseForm, match=re.escape(reason)):
        derive(_step(layers, "ce").program)


def test_latex_is_one_aligned_block_with_every_equation() -> None:
    step = _step([nn.Dense(4), nn.tanh], "mse")
    tex = step.equations().format(tex=True)
    assert tex.startswith(r"\begin{aligned}") and tex.endswith(r"\end{aligned}")
    assert tex.count(r"\\") == 2 + 11  # two headings and eleven equations, one row each
    assert r"\boldsymbol{\delta}^{(1)} &= \tanh'\left(\mathbf{a}^{(1)}\right) \odot \mathbf{W}^{(2)}" in tex
    assert r"\mathbf{W}^{(1)\top}" in tex and r"\frac{2}{N}" in tex
    assert step.equations()._repr_latex_() == f"$${tex}$$"


def test_show_prints_the_equations_of_the_example_mlp(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(EXAMPLES / "mlp.py"), "--view", "equations"]) == 0
    out = capsys.readouterr().out
    assert "δ⁽³⁾ = (1/N)(v − t)" in out and "δ⁽¹⁾ = relu′(a⁽¹⁾) ⊙ W⁽²⁾ δ⁽²⁾" in out and "∂E/∂W⁽¹⁾ = Σₙ x δ⁽¹⁾ᵀ" in out
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
