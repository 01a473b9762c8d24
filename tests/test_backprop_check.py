"""``check_backprop``: a student's own NumPy backpropagation against graphc's, equation by equation.

The student code below is what the course asks for: a forward pass, then δ and
the gradients from the output layer down.  Written right, every value passes;
with each of three classic mistakes the checker must name the first equation
that differs, and the layer it belongs to.
"""
from __future__ import annotations


import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.errors import GraphcError
from graphc.testing import BackpropMismatch, check_backprop

N, FEATURES, HIDDEN, CLASSES = 8, 4, 3, 3  # hidden width = classes: W⁽²⁾ is square, so a transpose still fits


def model() -> gc.CompiledStep:
    x = gc.input("x", (None, FEATURES), "float64")
    y = gc.input("y", (None,), "int32")
    net = nn.Sequential(nn.Dense(HIDDEN), nn.tanh, nn.Dense(CLASSES))
    return gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=optim.SGD(0.1))


def student(step: gc.CompiledStep, x: np.ndarray, y: np.ndarray, mistake: str = "") -> dict[str, np.ndarray]:
    """Backprop by hand for a tanh layer and a softmax cross-entropy output (rows are examples)."""
    values = step.state.values
    w1, b1, w2, b2 = (values[name] for name in ("dense0.W", "dense0.b", "dense2.W", "dense2.b"))
    a1 = x @ w1 + b1
    z1 = np.tanh(a1)
    a2 = z1 @ w2 + b2
    v = np.exp(a2 - a2.max(1, keepdims=True))
    v /= v.sum(1, keepdims=True)
    t = np.eye(CLASSES)[y]
    delta2 = (v - t) if mistake == "missing 1/N" else (v - t) / len(x)
    back = delta2 @ (w2 if mistake == "transposed weight" else w2.T)
    delta1 = back if mistake == "missing derivative" else (1 - z1 ** 2) * back
    return {"delta2": delta2, "dW2": z1.T @ delta2, "db2": delta2.sum(0),
            "delta1": delta1, "dW1": x.T @ delta1, "db1": delta1.sum(0)}


def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.normal(size=(N, FEATURES)), rng.integers(0, CLASSES, N).astype(np.int32)


def test_correct_student_code_passes_every_equation() -> None:
    step = model()
    step.materialize()
    x, y = batch()
    report = check_backprop(step, {"x": x, "y": y}, student(step, x, y))
    assert [name for name, _ in report.checked] == ["delta2", "dW2", "db2", "delta1", "dW1", "db1"]
    assert "ok  delta1   (9) δ⁽¹⁾ = tanh′(a⁽¹⁾) ⊙ W⁽²⁾ δ⁽²⁾" in str(report)


@pytest.mark.parametrize("mistake, first, layer", [
    ("missing 1/N", "delta2", "layer 2: (6) δ⁽²⁾ = (1/N)(v − t)"),
    ("missing derivative", "delta1", "layer 1: (9) δ⁽¹⁾ = tanh′(a⁽¹⁾) ⊙ W⁽²⁾ δ⁽²⁾"),
    ("transposed weight", "delta1", "layer 1: (9) δ⁽¹⁾ = tanh′(a⁽¹⁾) ⊙ W⁽²⁾ δ⁽²⁾"),
])
def test_each_mistake_is_named_at_its_first_equation(mistake: str, first: str, layer: str) -> None:
    step = model()
    step.materialize()
    x, y = batch()
    with pytest.raises(BackpropMismatch, match=rf"^{first} differs from graphc's at \d+ of \d+ values") as caught:
        check_backprop(step, {"x": x, "y": y}, student(step, x, y, mistake))
    assert layer in str(caught.value) and "yours" in str(caught.value) and "graphc's" in str(caught.value)


def test_a_weight_gradient_in_the_other_orientation_says_to_transpose_it() -> None:
    step = model()
    step.materialize()
    x, y = batch()
    given = student(step, x, y)
    with pytest.raises(BackpropMismatch, match=r"dW1: your value has shape \(3, 4\), graphc's \(4, 3\); graphc's W "
                                               r"is inputs × outputs: transpose yours"):
        check_backprop(step, {"x": x, "y": y}, {"dW1": given["dW1"].T})


@pytest.mark.parametrize("given, message", [
    ({"dW9": np.zeros(1)}, "no equation is named 'dW9'; this model's are delta2, dW2, db2, delta1, dW1, db1"),
    ({}, "nothing to check: give some of delta2"),
])
def test_unknown_names_and_nothing_given_are_refused(given: dict, message: str) -> None:
    step = model()
    x, y = batch()
    with pytest.raises(GraphcError, match=message):
        check_backprop(step, {"x": x, "y": y}, given)


def test_a_model_with_noise_is_refused_clearly() -> None:
    x = gc.input("x", (None, FEATURES), "float64")
    y = gc.input("y", (None,), "int32")
    net = nn.Sequential(nn.GaussianNoise(0.1), nn.Dense(CLASSES))
    step = gc.compile(gc.softmax_cross_entropy(net(x), y), optimizer=optim.SGD(0.1))
    xb, yb = batch()
    with pytest.raises(GraphcError, match="draws random numbers"):
        check_backprop(step, {"x": xb, "y": yb}, {"dW1": np.zeros((FEATURES, CLASSES))})
