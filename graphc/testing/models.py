"""Hypothesis strategies of the course's models: stacks of layers with a loss, as a student builds them.

Where :mod:`graphc.testing.strategies` draws arbitrary graphs of primitives,
this draws the models the course trains: one to four dense layers, each hidden
one followed by tanh, sigmoid or ReLU, with batch norm before or after the
activation, Gaussian noise and dropout where the course puts them (noise on
the input or on a layer's output), a softmax cross-entropy or a mean squared
error (a mean or a sum over the batch), with or without weight decay.  The
equations view must write every one of them (``tests/test_equations.py``).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from hypothesis import strategies as st

from graphc import composites, nn, ops
from graphc.ir.node import Node

Draw = Callable[[st.SearchStrategy[Any]], Any]
ACTIVATIONS = {"tanh": nn.tanh, "sigmoid": nn.sigmoid, "relu": nn.relu}


class CourseModel(NamedTuple):
    loss: Node             # the scalar to train
    layers: list[Any]      # the stack, for the record
    description: str       # one line: what was drawn


@st.composite
def course_models(draw: Draw, dtype: str = "float64") -> CourseModel:
    """A model and its loss on inputs ``x`` (N × features) and targets ``y`` (labels, or values for MSE)."""
    features = draw(st.integers(2, 5))
    outputs = draw(st.integers(2, 4))
    parts: list[str] = []
    layers: list[Any] = []
    first = draw(st.sampled_from(["none", "noise", "dropout"]))
    if first != "none":
        layers.append(nn.GaussianNoise(0.1) if first == "noise" else nn.Dropout(0.25))
        parts.append(f"input {first}")
    for _ in range(draw(st.integers(0, 3))):  # hidden layers
        width = draw(st.integers(2, 5))
        activation = draw(st.sampled_from(sorted(ACTIVATIONS)))
        norm = draw(st.sampled_from(["none", "before", "after"]))
        noise = draw(st.sampled_from(["none", "noise", "dropout"]))
        stack: list[Any] = [nn.Dense(width, init="glorot")]
        stack += [nn.BatchNorm()] if norm == "before" else []
        stack.append(ACTIVATIONS[activation])
        stack += [nn.BatchNorm()] if norm == "after" else []
        stack += [] if noise == "none" else [nn.GaussianNoise(0.1) if noise == "noise" else nn.Dropout(0.25)]
        layers += stack
        parts.append(f"dense({width})" + (" bn" if norm == "before" else "") + f" {activation}"
                     + (" bn" if norm == "after" else "") + ("" if noise == "none" else f" {noise}"))
    layers.append(nn.Dense(outputs, init="glorot"))
    net = nn.Sequential(*layers)
    x = ops.input("x", (None, features), dtype)
    loss_kind = draw(st.sampled_from(["cross_entropy", "mse"]))
    reduction = draw(st.sampled_from(["mean", "sum"]))
    if loss_kind == "mse":
        output = net(x)
        if draw(st.booleans()):
            output = ops.sigmoid(output)  # a squashed output, as for targets in (0, 1)
            parts.append("sigmoid output")
        loss = composites.mse(output, ops.input("y", (None, outputs), dtype), reduction)
    else:
        loss = composites.softmax_cross_entropy(net(x), ops.input("y", (None,), "int32"), reduction)
    parts.append(f"{loss_kind} ({reduction})")
    decay = draw(st.sampled_from([0.0, 1e-3]))
    if decay:
        loss = loss + decay * nn.l2(net)
        parts.append("weight decay")
    return CourseModel(loss, layers, ", ".join(parts))


def device_check_mlp(backend: str, noise: float = 0.0) -> Any:
    """The train step the GPU checks compare across backends (``tests/test_cuda_gpu.py`` and
    ``benchmarks/gpu_check.py``): 784-256-128-10 with ReLU, batch norm and tanh, Momentum, and
    Gaussian noise on the input when ``noise`` is given (the device's random stream)."""
    from graphc import compile as compile_graph
    from graphc import optim

    x = ops.input("x", (None, 784))
    y = ops.input("y", (None,), dtype="int32")
    layers = [nn.Dense(256, init="he"), nn.relu, nn.BatchNorm(), nn.Dense(128, init="he"), nn.tanh,
              nn.Dense(10, init="he")]
    if noise:
        layers.insert(0, nn.GaussianNoise(noise))
    return compile_graph(composites.softmax_cross_entropy(nn.Sequential(*layers)(x), y), optim.Momentum(0.05),
                         backend=backend)
