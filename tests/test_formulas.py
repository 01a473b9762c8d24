"""Forward formulas against NumPy transcriptions written here, independently of graphc.

The reference interpreter evaluates each primitive with the NumPy meaning that
``graphc/ir/registry.py`` gives it, so comparing compiled code with the
interpreter cannot catch a wrong meaning: both would agree on the wrong
number.  Here every primitive, every DSL function, every composite and the
layers are checked against a formula transcribed from its definition (the
course's equations, NumPy's documented semantics), evaluated three ways: by
the interpreter, by the optimized compiled function and by the unoptimized
one.  Each compiled function is called twice, with different values and
batch sizes, so a value or a size baked in at the first call shows up.

The table of cases is checked for coverage against ``PRIMITIVES``,
``graphc.ops.__all__`` and the public functions of ``graphc.composites``:
a new op without a transcription fails :func:`test_every_primitive_has_a_transcription`.
"""
from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import numpy as np
import pytest

import graphc as gc
from graphc import composites, nn, ops
from graphc.ir.graph import toposort
from graphc.ir.node import Node
from graphc.ir.registry import PRIMITIVES, RANDOM
from graphc.compiler.train_step import collect_state_updates

F = "float"  # placeholder in a leaf's dtype: the float dtype under test
BATCHES = (3, 5)  # the two calls of every compiled function differ in batch size and values
TOLERANCE = {"float64": dict(rtol=1e-12, atol=1e-14), "float32": dict(rtol=2e-5, atol=2e-6)}

Arrays = dict[str, np.ndarray]
Sampler = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
Built = Union[Node, dict[str, Node]]


# ---------------------------------------------------------------- samplers (values in float64 or int)

def gaussian(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape) * 2.0


def positive(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0.1, 4.0, shape)


def moderate(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-6.0, 6.0, shape)


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return positive(rng, shape) * rng.choice([-1.0, 1.0], shape)


def ties_and_specials(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Few distinct values, so that two operands tie, with signed zeros, infinities and NaN among them."""
    return rng.choice([-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, np.inf, -np.inf, np.nan], shape)


def ties(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Like ``ties_and_specials`` without NaN, which would make every reduction over it NaN."""
    return rng.choice([-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, np.inf, -np.inf], shape)


def one_nan(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    values = ties(rng, shape)
    values.flat[rng.integers(values.size)] = np.nan
    return values


def small_ints(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(-2, 3, shape)


def booleans(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.random(shape) < 0.5


def labels(depth: int) -> Sampler:
    return lambda rng, shape: rng.integers(0, depth, shape)


def probabilities(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    e = np.exp(rng.standard_normal(shape))
    return e / e.sum(axis=-1, keepdims=True)


SHIFT = 600.0


def shifted_logits(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Rows shifted by ±SHIFT, where exp overflows: only a stable formula survives them."""
    return gaussian(rng, shape) + rng.choice([-SHIFT, 0.0, SHIFT], shape[:-1] + (1,))


def large_logits(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape) * 30.0


# ---------------------------------------------------------------- the cases

@dataclass(frozen=True)
class Leaf:
    kind: str  # "input", "param" or "state"
    shape: tuple
    dtype: str = F
    sample: Sampler = gaussian


def x_(shape: tuple = (None, 4), dtype: str = F, sample: Sampler = gaussian) -> Leaf:
    return Leaf("input", shape, dtype, sample)


@dataclass(frozen=True)
class Case:
    """``build`` makes the graph from the leaves (by name); ``expect`` transcribes its value from
    the drawn arrays (floats given as float64).  ``exact`` cases must agree bit for bit (NaN with
    NaN, and the sign of zeros unless ``zero_sign`` is off: NumPy does not define which of 0 and -0
    a reduction returns); the others within ``TOLERANCE``.  ``covers`` names the DSL functions,
    composites and layers the case exercises, for the coverage tests."""
    name: str
    leaves: dict[str, Leaf]
    build: Callable[[dict[str, Node]], Built]
    expect: Callable[[Arrays], Any]
    covers: tuple[str, ...] = ()
    exact: bool = False
    batches: tuple[int, int] = BATCHES
    zero_sign: bool = True
    scale: float = 1.0  # the inputs' magnitude: rounding them costs atol·scale where results are small
    samplers: dict[str, Sampler] = field(default_factory=dict)  # variables a layer makes

    @property
    def float_typed(self) -> bool:
        return any(leaf.dtype == F for leaf in self.leaves.values())


def _where_nan(x: np.ndarray, value: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), x, value)


def _maximum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IEEE-754 maximum as NumPy defines it: NaN if either is NaN; of equal values, the second."""
    return np.where(np.isnan(a) | (a > b), a, b)


def _minimum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(a) | (a < b), a, b)


def _sign(x: np.ndarray) -> np.ndarray:
    return _where_nan(x, (x > 0).astype(np.float64) - (x < 0).astype(np.float64))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logsumexp(x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x - _logsumexp(x, axis, keepdims=True)


def _batch_reduce(per_example: np.ndarray, reduction: str) -> np.ndarray:
    return np.sum(per_example) / (len(per_example) if reduction == "mean" else 1)


def _one_hot(y: np.ndarray, depth: int) -> np.ndarray:
    out = np.zeros(y.shape + (depth,))
    for index in np.ndindex(y.shape):
        out[index + (y[index],)] = 1.0
    return out


def _cross_entropy_int(z: np.ndarray, y: np.ndarray, reduction: str) -> np.ndarray:
    lsm = _log_softmax(z)
    return _batch_reduce(-lsm[np.arange(len(y)), y], reduction)


def _sigmoid_bce(a: np.ndarray, t: np.ndarray, reduction: str) -> np.ndarray:
    # log σ(a) = -log(1 + e^-a) and log(1 - σ(a)) = -log(1 + e^a), both without overflow
    per = t * np.logaddexp(0.0, -a) + (1.0 - t) * np.logaddexp(0.0, a)
    return _batch_reduce(per.reshape(len(a), -1).sum(axis=1), reduction)


def _mse(v: np.ndarray, t: np.ndarray, reduction: str) -> np.ndarray:
    return _batch_reduce(((t - v) ** 2).reshape(len(v), -1).sum(axis=1), reduction)


CONSTANT = np.arange(6.0).reshape(2, 3) - 2.5


def _elementwise_cases() -> list[Case]:
    x, spec = x_(), x_(sample=ties_and_specials)
    unary = [
        ("neg", gc.neg, lambda v: -v["x"], spec, True),
        ("exp", gc.exp, lambda v: np.exp(v["x"]), x, False),
        ("log", gc.log, lambda v: np.log(v["x"]), x_(sample=positive), False),
        ("tanh", gc.tanh, lambda v: np.tanh(v["x"]), x, False),
        ("sigmoid", gc.sigmoid, lambda v: _sigmoid(v["x"]), x_(sample=moderate), False),
        ("relu", gc.relu, lambda v: _where_nan(v["x"], np.where(v["x"] > 0, v["x"], 0.0)), spec, True),
        ("sqrt", gc.sqrt, lambda v: np.sqrt(v["x"]), x_(sample=positive), True),
        ("abs", gc.abs, lambda v: np.copysign(v["x"], 1.0), spec, True),
        ("sign", gc.sign, lambda v: _sign(v["x"]), spec, True),
        ("sin", gc.sin, lambda v: np.sin(v["x"]), x, False),
        ("cos", gc.cos, lambda v: np.cos(v["x"]), x, False),
        ("square", gc.square, lambda v: v["x"] * v["x"], spec, True),
    ]
    cases = [Case(name, {"x": leaf}, lambda v, f=fn: f(v["x"]), expect, (name,), exact)
             for name, fn, expect, leaf, exact in unary]
    b_row = Leaf("input", (4,))
    binary = [
        ("add", gc.add, lambda a, b: a + b, b_row, True),
        ("sub", gc.sub, lambda a, b: a - b, b_row, True),
        ("mul", gc.mul, lambda a, b: a * b, b_row, True),
        ("div", gc.div, lambda a, b: a / b, Leaf("input", (4,), F, away_from_zero), True),
        ("maximum", gc.maximum, _maximum, Leaf("input", (None, 4), F, ties_and_specials), True),
        ("minimum", gc.minimum, _minimum, Leaf("input", (None, 4), F, ties_and_specials), True),
    ]
    for name, fn, expect, b_leaf, exact in binary:
        a_leaf = spec if b_leaf.sample is ties_and_specials else x
        cases.append(Case(name, {"x": a_leaf, "b": b_leaf}, lambda v, f=fn: f(v["x"], v["b"]),
                          lambda v, e=expect: e(v["x"], v["b"]), (name,), exact))
    cases.append(Case("pow", {"x": x_(sample=positive), "b": Leaf("input", (1, 4))},
                      lambda v: v["x"] ** v["b"], lambda v: np.exp(v["b"] * np.log(v["x"])), ("pow",)))
    compares = [("lt", "less", np.less), ("le", "less_equal", np.less_equal), ("gt", "greater", np.greater),
                ("ge", "greater_equal", np.greater_equal), ("eq", "equal", np.equal),
                ("ne", "not_equal", np.not_equal)]
    for op, name, fn in compares:
        for dtype, sample in ((F, ties_and_specials), ("int32", small_ints)):
            cases.append(Case(f"{op}-{dtype}", {"x": x_(dtype=dtype, sample=sample),
                                                "b": Leaf("input", (None, 4), dtype, sample)},
                              lambda v, n=name: getattr(gc, n)(v["x"], v["b"]),
                              lambda v, f=fn: f(v["x"], v["b"]), (name,), True))
    bool_leaves = {"x": x_(dtype="bool", sample=booleans), "b": x_(dtype="bool", sample=booleans)}
    cases += [
        Case("eq-bool", bool_leaves, lambda v: v["x"] == v["b"], lambda v: ~(v["x"] ^ v["b"]), ("equal",), True),
        Case("ne-bool", bool_leaves, lambda v: v["x"] != v["b"], lambda v: v["x"] ^ v["b"], ("not_equal",), True),
        Case("where", {"c": x_(dtype="bool", sample=booleans), "x": spec, "b": b_row},
             lambda v: gc.where(v["c"], v["x"], v["b"]),
             lambda v: np.array([[a if c else b for c, a, b in zip(cr, ar, v["b"])]
                                 for cr, ar in zip(v["c"], v["x"])]), ("where",), True),
        Case("where-scalar", {"c": x_(dtype="bool", sample=booleans), "x": x},
             lambda v: gc.where(v["c"], 1.5, v["x"]), lambda v: np.where(v["c"], 1.5, v["x"]), ("where",), True),
        Case("int-arithmetic", {"x": x_(dtype="int32", sample=small_ints), "b": x_(dtype="int32", sample=small_ints)},
             lambda v: gc.abs(v["x"] * v["b"] - gc.neg(v["b"])) + gc.relu(v["x"]) + gc.maximum(v["x"], v["b"])
             + gc.sign(v["x"]),
             lambda v: np.abs(v["x"] * v["b"] + v["b"]) + np.where(v["x"] > 0, v["x"], 0)
             + np.where(v["x"] > v["b"], v["x"], v["b"]) + (v["x"] > 0) - (v["x"] < 0), ("add",), True),
        Case("operators", {"x": x_(sample=positive)},
             lambda v: (2.0 - v["x"]) * (1.0 / v["x"]) + 2.0 ** v["x"] + v["x"] ** 3.0 - (-v["x"]) + abs(-v["x"]),
             lambda v: (2.0 - v["x"]) / v["x"] + np.exp2(v["x"]) + v["x"] * v["x"] * v["x"] + 2 * v["x"],
             ("pow", "lift")),
        Case("lift", {"x": x}, lambda v: v["x"] * gc.lift(2.5, like=v["x"]), lambda v: 2.5 * v["x"], ("lift",), True),
    ]
    return cases


def _reduction_cases() -> list[Case]:
    x3 = x_((None, 3, 4))
    axes_choices = ((None, False), ((0, 2), True), (1, False), (-1, True), (0, False))
    cases = []
    for axis, keep in axes_choices:
        tag = f"{axis}-{'keep' if keep else 'drop'}"
        cases += [
            Case(f"sum-{tag}", {"x": x3}, lambda v, a=axis, k=keep: gc.sum(v["x"], a, k),
                 lambda v, a=axis, k=keep: np.add.reduce(v["x"], axis=a, keepdims=k), ("sum",)),
            Case(f"mean-{tag}", {"x": x3}, lambda v, a=axis, k=keep: gc.mean(v["x"], a, k),
                 lambda v, a=axis, k=keep: np.add.reduce(v["x"], axis=a, keepdims=k)
                 / _count(v["x"].shape, a), ("mean",)),
        ]
    for (axis, keep), sample in itertools.product(axes_choices, (ties, one_nan)):
        tag = f"{axis}-{'keep' if keep else 'drop'}-{sample.__name__}"
        spec3 = x_((None, 3, 4), sample=sample)
        cases += [
            Case(f"max-{tag}", {"x": spec3}, lambda v, a=axis, k=keep: gc.max(v["x"], a, k),
                 lambda v, a=axis, k=keep: _reduce_with(_maximum, v["x"], a, k), ("max",), True, zero_sign=False),
            Case(f"min-{tag}", {"x": spec3}, lambda v, a=axis, k=keep: gc.min(v["x"], a, k),
                 lambda v, a=axis, k=keep: _reduce_with(_minimum, v["x"], a, k), ("min",), True, zero_sign=False),
        ]
    ints = x_((None, 3, 4), "int32", small_ints)
    cases += [
        Case("sum-int32", {"x": ints}, lambda v: gc.sum(v["x"], (0, 2)), lambda v: np.add.reduce(v["x"], axis=(0, 2)),
             ("sum",), True),
        Case("sum-int64-all-keep", {"x": x_((None, 3), "int64", small_ints)}, lambda v: gc.sum(v["x"], None, True),
             lambda v: np.add.reduce(v["x"], axis=None, keepdims=True), ("sum",), True),
        Case("max-int32", {"x": ints}, lambda v: gc.max(v["x"], 1), lambda v: _reduce_with(np.maximum, v["x"], 1, False),
             ("max",), True),
        Case("node-methods", {"x": x3}, lambda v: v["x"].sum(1) + v["x"].mean(1) + v["x"].max(1),
             lambda v: v["x"].sum(1) * (1 + 1 / 3) + v["x"].max(1), ("sum", "mean", "max")),
        Case("numel", {"x": x_((None, 3))}, lambda v: gc.numel(v["x"], 0), lambda v: float(len(v["x"])),
             ("numel",), True),
        Case("numel-2-axes", {"x": x_((None, 3))}, lambda v: gc.numel(v["x"], (0, 1), dtype="int64"),
             lambda v: np.int64(v["x"].size), ("numel",), True),
        Case("numel-static", {"x": x_((None, 3))}, lambda v: gc.numel(v["x"], 1) * v["x"],
             lambda v: 3.0 * v["x"], ("numel",), True),
    ]
    return cases


def _count(shape: tuple[int, ...], axis: Any) -> int:
    axes = range(len(shape)) if axis is None else np.atleast_1d(axis) % len(shape)
    return int(np.prod([shape[a] for a in axes]))


def _reduce_with(pick: Callable, x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    """Fold ``pick`` along the axes one slice at a time: a reduction written from its definition."""
    axes = tuple(range(x.ndim)) if axis is None else tuple(np.atleast_1d(axis) % x.ndim)
    out = x
    for a in sorted(axes, reverse=True):
        slices = np.moveaxis(out, a, 0)
        acc = slices[0]
        for s in slices[1:]:
            acc = pick(acc, s)
        out = np.expand_dims(acc, a) if keepdims else acc
    return out


def _layout_cases() -> list[Case]:
    x, x3 = x_(), x_((None, 3, 4))
    cases = [
        Case("matmul", {"x": x_((None, 3)), "W": Leaf("param", (3, 5))}, lambda v: v["x"] @ v["W"],
             lambda v: np.einsum("ij,jk->ik", v["x"], v["W"]), ("matmul",)),
        Case("matmul-transposed", {"x": x_((None, 3)), "W": Leaf("param", (5, 3))},
             lambda v: gc.matmul(v["x"], v["W"].T), lambda v: np.einsum("ij,kj->ik", v["x"], v["W"]), ("matmul",)),
        Case("reshape", {"x": x3}, lambda v: gc.reshape(v["x"], (None, 12)), lambda v: v["x"].reshape(-1, 12),
             ("reshape",), True),
        Case("reshape-minus-one", {"x": x_((4, 6))}, lambda v: v["x"].reshape(3, -1),
             lambda v: v["x"].reshape(3, 8), ("reshape",), True),
        Case("reshape-twice", {"x": x_((4, 6))}, lambda v: gc.reshape(gc.reshape(v["x"], (2, 12)), (8, 3)),
             lambda v: v["x"].reshape(8, 3), ("reshape",), True),
        Case("transpose-default", {"x": x3}, lambda v: v["x"].T,
             lambda v: np.einsum("ijk->kji", v["x"]), ("transpose",), True),
        Case("broadcast_to", {"x": x_((4,))}, lambda v: gc.broadcast_to(v["x"], (3, 4)),
             lambda v: np.stack([v["x"]] * 3), ("broadcast_to",), True),
        Case("broadcast_to-inner", {"x": x_((3, 1))}, lambda v: gc.exp(gc.broadcast_to(v["x"], (2, 3, 4))),
             lambda v: np.exp(np.tile(v["x"][None], (2, 1, 4))), ("broadcast_to",)),
        Case("concat", {"x": x_((3,)), "b": x_((5,))}, lambda v: gc.concat([v["x"], v["b"], v["x"]]),
             lambda v: np.array(list(v["x"]) + list(v["b"]) + list(v["x"])), ("concat",), True),
        Case("slice", {"x": x_((8,))}, lambda v: gc.slice(v["x"], 2, 5),
             lambda v: np.array([v["x"][2], v["x"][3], v["x"][4]]), ("slice",), True),
        Case("slice-of-concat", {"x": x_((3,)), "b": x_((5,))},
             lambda v: gc.slice(gc.concat([v["x"], v["b"]]), 2, 6),
             lambda v: np.array([v["x"][2], v["b"][0], v["b"][1], v["b"][2]]), ("slice", "concat"), True),
        Case("one_hot", {"y": x_((None,), "int32", labels(5))}, lambda v: gc.one_hot(v["y"], 5, "float64"),
             lambda v: _one_hot(v["y"], 5), ("one_hot",), True),
        Case("one_hot-2d", {"y": x_((None, 2), "int64", labels(3)), "x": x_((None, 2, 3))},
             lambda v: gc.one_hot(v["y"], 3, v["x"].dtype) * v["x"],
             lambda v: _one_hot(v["y"], 3) * v["x"], ("one_hot",), True),
        Case("cast-float-to-int", {"x": x}, lambda v: gc.cast(v["x"] * 8.0, "int32"),
             lambda v: np.trunc(v["x"] * 8.0).astype(np.int32), ("cast",), True),
        Case("cast-float-to-bool", {"x": x_(sample=ties_and_specials)}, lambda v: v["x"].astype("bool"),
             lambda v: (v["x"] != 0) | np.isnan(v["x"]), ("cast",), True),
        Case("cast-int-to-float", {"y": x_(dtype="int32", sample=small_ints)},
             lambda v: gc.cast(v["y"], "float64"), lambda v: np.array(v["y"].tolist(), dtype=float),
             ("cast",), True),
        Case("cast-bool-to-float", {"c": x_(dtype="bool", sample=booleans), "x": x},
             lambda v: gc.cast(v["c"], v["x"].dtype) * v["x"], lambda v: np.where(v["c"], 1.0, 0.0) * v["x"],
             ("cast",), True),
        Case("cast-float64-to-float32", {"x": x_(dtype="float64")}, lambda v: gc.cast(v["x"], "float32"),
             lambda v: np.float32(v["x"]), ("cast",), True),
        Case("stop_gradient", {"x": x}, lambda v: gc.stop_gradient(v["x"]) * 3.0, lambda v: 3.0 * v["x"],
             ("stop_gradient",), True),
        # In one process the mean over ranks is the value itself (several ranks: tests/test_distributed.py).
        Case("allreduce-one-rank", {"x": x}, lambda v: gc.allreduce(v["x"]) * 3.0, lambda v: 3.0 * v["x"],
             ("allreduce",), True),
        Case("ones_like-zeros_like", {"x": x}, lambda v: gc.ones_like(v["x"]) * 2.0 + gc.zeros_like(v["x"]) + v["x"],
             lambda v: 2.0 + v["x"], ("ones_like", "zeros_like"), True),
        Case("input", {"x": x}, lambda v: v["x"], lambda v: v["x"], ("input",), True),
        Case("param", {"p": Leaf("param", (2, 3))}, lambda v: v["p"], lambda v: v["p"], ("param",), True),
        Case("state", {"s": Leaf("state", (3,))}, lambda v: v["s"] * 1.0, lambda v: v["s"], ("state",), True),
        Case("constant", {}, lambda v: gc.constant(CONSTANT, "float64"), lambda v: CONSTANT, ("constant",), True),
        Case("constant-plus-input", {"x": x_((None, 3))}, lambda v: v["x"] + gc.constant(CONSTANT[1], v["x"].dtype),
             lambda v: v["x"] + CONSTANT[1], ("constant",), True),
    ]
    for perm in ((2, 0, 1), (1, 2, 0), (0, 2, 1), (1, 0, 2)):
        cases.append(Case(f"transpose-{_digits(perm)}", {"x": x3}, lambda v, p=perm: gc.transpose(v["x"], p),
                          lambda v, p=perm: _transpose_by_index(v["x"], p), ("transpose",), True))
        for outer in ((2, 0, 1), (1, 0, 2)):
            cases.append(Case(f"transpose-{_digits(perm)}-then-{_digits(outer)}", {"x": x3},
                              lambda v, p=perm, q=outer: gc.transpose(gc.transpose(v["x"], p), q),
                              lambda v, p=perm, q=outer: _transpose_by_index(_transpose_by_index(v["x"], p), q),
                              ("transpose",), True))
    return cases



def _digits(perm: tuple[int, ...]) -> str:
    return "".join(map(str, perm))


def _transpose_by_index(x: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    """Output axis i is input axis perm[i], written element by element."""
    out = np.empty(tuple(x.shape[p] for p in perm), x.dtype)
    for index in np.ndindex(out.shape):
        source = [0] * x.ndim
        for i, p in enumerate(perm):
            source[p] = index[i]
        out[index] = x[tuple(source)]
    return out


def _composite_cases() -> list[Case]:
    logits = x_((None, 5), sample=shifted_logits)
    cases = [
        Case("logsumexp", {"x": logits}, lambda v: gc.logsumexp(v["x"]), lambda v: _logsumexp(v["x"], -1),
             ("logsumexp",)),
        Case("logsumexp-axis0-keep", {"x": logits}, lambda v: gc.logsumexp(v["x"], 0, keepdims=True),
             lambda v: _logsumexp(v["x"], 0, keepdims=True), ("logsumexp",)),
        Case("softmax", {"x": logits}, lambda v: gc.softmax(v["x"]), lambda v: _softmax(v["x"], -1), ("softmax",)),
        Case("pack", {"x": x_((2, 3)), "b": x_((4,))}, lambda v: composites.pack([v["x"], v["b"]]),
             lambda v: np.concatenate([v["x"].ravel(), v["b"]]), ("pack",), True),
        Case("unpack", {"x": x_((2, 3)), "b": x_((4,))},
             lambda v: dict(zip("xb", composites.unpack(composites.pack([v["x"], v["b"]]), [v["x"], v["b"]]))),
             lambda v: {"x": v["x"], "b": v["b"]}, ("unpack",), True),
        Case("softmax-axis0", {"x": x_((None, 5))}, lambda v: gc.softmax(v["x"], 0),
             lambda v: _softmax(v["x"], 0), ("softmax",)),
        Case("log_softmax", {"x": logits}, lambda v: gc.log_softmax(v["x"]), lambda v: _log_softmax(v["x"]),
             ("log_softmax",), scale=SHIFT),
        Case("log_softmax-axis1-3d", {"x": x_((None, 4, 3))}, lambda v: gc.log_softmax(v["x"], 1),
             lambda v: _log_softmax(v["x"], 1), ("log_softmax",)),
        Case("softmax-axis1-3d", {"x": x_((None, 4, 3))}, lambda v: gc.softmax(v["x"], 1),
             lambda v: _softmax(v["x"], 1), ("softmax",)),
        Case("log-of-softmax", {"x": x_((None, 5), sample=moderate)}, lambda v: gc.log(gc.softmax(v["x"])),
             lambda v: _log_softmax(v["x"]), ("softmax",)),
    ]
    for reduction in ("mean", "sum"):
        cases += [
            Case(f"softmax_cross_entropy-labels-{reduction}",
                 {"z": logits, "y": x_((None,), "int32", labels(5))},
                 lambda v, r=reduction: gc.softmax_cross_entropy(v["z"], v["y"], r),
                 lambda v, r=reduction: _cross_entropy_int(v["z"], v["y"], r), ("softmax_cross_entropy",),
                 scale=SHIFT),
            Case(f"softmax_cross_entropy-targets-{reduction}",
                 {"z": logits, "t": x_((None, 5), sample=probabilities)},
                 lambda v, r=reduction: gc.softmax_cross_entropy(v["z"], v["t"], r),
                 lambda v, r=reduction: _batch_reduce(-np.sum(v["t"] * _log_softmax(v["z"]), axis=1), r),
                 ("softmax_cross_entropy",), scale=SHIFT),
            Case(f"sigmoid_binary_cross_entropy-{reduction}",
                 {"z": x_((None, 3), sample=large_logits), "t": x_((None, 3), sample=lambda r, s: r.random(s))},
                 lambda v, r=reduction: gc.sigmoid_binary_cross_entropy(v["z"], v["t"], r),
                 lambda v, r=reduction: _sigmoid_bce(v["z"], v["t"], r), ("sigmoid_binary_cross_entropy",)),
            Case(f"sigmoid_binary_cross_entropy-1d-{reduction}",
                 {"z": x_((None,), sample=moderate), "t": x_((None,), sample=lambda r, s: r.random(s))},
                 lambda v, r=reduction: gc.sigmoid_binary_cross_entropy(v["z"], v["t"], r),
                 lambda v, r=reduction: _sigmoid_bce(v["z"], v["t"], r), ("sigmoid_binary_cross_entropy",)),
            Case(f"mse-{reduction}", {"p": x_((None, 3)), "t": x_((None, 3))},
                 lambda v, r=reduction: gc.mse(v["p"], v["t"], r),
                 lambda v, r=reduction: _mse(v["p"], v["t"], r), ("mse",)),
            Case(f"mse-3d-{reduction}", {"p": x_((None, 2, 3)), "t": x_((None, 2, 3))},
                 lambda v, r=reduction: gc.mse(v["p"], v["t"], r),
                 lambda v, r=reduction: _mse(v["p"], v["t"], r), ("mse",)),
        ]
    return cases


# ---------------------------------------------------------------- layers

def _dense(v: Arrays, prefix: str, x: np.ndarray, bias: bool = True) -> np.ndarray:
    y = np.einsum("ij,jk->ik", x, v[f"{prefix}.W"])
    return y + v[f"{prefix}.b"] if bias else y


def _batchnorm_graph(v: dict[str, Node], training: bool, momentum: float = 0.3) -> Built:
    bn = nn.BatchNorm(momentum=momentum, eps=1e-3)
    y = bn(v["x"], training=training)
    if not training:
        return y
    running_mean, running_var = bn.states()
    updates = collect_state_updates([y])
    return {"y": y, "mean": updates[running_mean], "var": updates[running_var]}


def _batchnorm_expected(v: Arrays, training: bool, momentum: float = 0.3) -> Any:
    """Ioffe & Szegedy, Algorithms 1 and 2, per feature (last axis) over every other axis."""
    x = v["x"]
    features = x.reshape(-1, x.shape[-1])
    gamma, beta = v["batchnorm.gamma"], v["batchnorm.beta"]
    if not training:
        return gamma * (x - v["batchnorm.mean"]) / np.sqrt(v["batchnorm.var"] + 1e-3) + beta
    m = len(features)
    mu = features.sum(axis=0) / m
    var = ((features - mu) ** 2).sum(axis=0) / m
    y = gamma * (x - mu) / np.sqrt(var + 1e-3) + beta
    new_mean = (1 - momentum) * v["batchnorm.mean"] + momentum * mu
    new_var = (1 - momentum) * v["batchnorm.var"] + momentum * var * m / (m - 1) if m > 1 else v["batchnorm.var"]
    return {"y": y, "mean": new_mean, "var": new_var}


def _moe_expected(v: Arrays) -> np.ndarray:
    gates = _softmax(_dense(v, "moe.gate", v["x"]), -1)
    return sum(gates[:, k:k + 1] * _dense(v, f"moe.expert{k}", v["x"]) for k in range(2))


def _ensemble_expected(v: Arrays, average: str) -> np.ndarray:
    outs = [_dense(v, f"ensemble.member{m}", v["x"]) for m in range(3)]
    if average == "outputs":
        return sum(outs) / 3
    return np.log(sum(_softmax(o, -1) for o in outs) / 3)


BN_VARIABLES = {"batchnorm.var": positive}


def _layer_cases() -> list[Case]:
    x3 = x_((None, 3))
    return [
        Case("Dense", {"x": x3}, lambda v: nn.Dense(4)(v["x"]), lambda v: _dense(v, "dense", v["x"]), ("Dense",)),
        Case("Dense-no-bias", {"x": x3}, lambda v: nn.Dense(4, bias=False)(v["x"]),
             lambda v: _dense(v, "dense", v["x"], bias=False), ("Dense",)),
        Case("Sequential", {"x": x3}, lambda v: nn.Sequential(nn.Dense(4), "tanh", nn.Dense(2), nn.sigmoid)(v["x"]),
             lambda v: _sigmoid(_dense(v, "dense2", np.tanh(_dense(v, "dense0", v["x"])))),
             ("Sequential", "Activation")),
        Case("l2", {"x": x3}, lambda v: nn.l2(_applied(nn.Sequential(nn.Dense(4), nn.relu, nn.Dense(2)), v["x"])),
             lambda v: 0.5 * (np.sum(v["dense0.W"] ** 2) + np.sum(v["dense2.W"] ** 2)), ("l2",)),
        Case("BatchNorm-training", {"x": x_((None, 4))}, lambda v: _batchnorm_graph(v, True),
             lambda v: _batchnorm_expected(v, True), ("BatchNorm",), samplers=BN_VARIABLES),
        Case("BatchNorm-training-3d", {"x": x_((None, 3, 4))}, lambda v: _batchnorm_graph(v, True),
             lambda v: _batchnorm_expected(v, True), ("BatchNorm",), samplers=BN_VARIABLES),
        Case("BatchNorm-training-batch-of-one", {"x": x_((None, 4))}, lambda v: _batchnorm_graph(v, True),
             lambda v: _batchnorm_expected(v, True), ("BatchNorm",), batches=(1, 4), samplers=BN_VARIABLES),
        Case("BatchNorm-inference", {"x": x_((None, 4))}, lambda v: _batchnorm_graph(v, False),
             lambda v: _batchnorm_expected(v, False), ("BatchNorm",), samplers=BN_VARIABLES),
        Case("GaussianNoise-inference", {"x": x3}, lambda v: nn.GaussianNoise(0.5)(v["x"], training=False),
             lambda v: v["x"], ("GaussianNoise",), True),
        Case("Dropout-inference", {"x": x3}, lambda v: nn.Dropout(0.5)(v["x"], training=False),
             lambda v: v["x"], ("Dropout",), True),
        Case("MixtureOfExperts", {"x": x3}, lambda v: nn.MixtureOfExperts([nn.Dense(2), nn.Dense(2)])(v["x"]),
             _moe_expected, ("MixtureOfExperts",)),
        Case("Ensemble-outputs", {"x": x3}, lambda v: nn.Ensemble([nn.Dense(4) for _ in range(3)])(v["x"]),
             lambda v: _ensemble_expected(v, "outputs"), ("Ensemble",)),
        Case("Ensemble-probabilities", {"x": x3},
             lambda v: nn.Ensemble([nn.Dense(4) for _ in range(3)], average="probabilities")(v["x"]),
             lambda v: _ensemble_expected(v, "probabilities"), ("Ensemble",)),
    ]


def _applied(module: nn.Module, x: Node) -> nn.Module:
    module(x)
    return module


CASES = _elementwise_cases() + _reduction_cases() + _layout_cases() + _composite_cases() + _layer_cases()
RANDOM_CASES = {"normal", "uniform"}  # checked by their statistics below, not by a transcription


# ---------------------------------------------------------------- evaluating three ways

def _graph(case: Case, dtype: str) -> Built:
    makers = {"input": gc.input, "param": gc.param, "state": gc.state}
    leaves = {name: makers[leaf.kind](name, leaf.shape, dtype=dtype if leaf.dtype == F else leaf.dtype)
              for name, leaf in case.leaves.items()}
    return case.build(leaves)


def _outputs(built: Built) -> dict[str, Node]:
    return dict(built) if isinstance(built, dict) else {"out": built}


def _draw(case: Case, outputs: dict[str, Node], rng: np.random.Generator, batch: int) -> tuple[Arrays, Arrays]:
    """Feeds and variables for one call: the declared leaves, then the variables layers made."""
    feeds: Arrays = {}
    variables: Arrays = {}
    for leaf in toposort(list(outputs.values())):
        if leaf.op not in ("input", "param", "state"):
            continue
        declared = case.leaves.get(leaf.name)
        sample = declared.sample if declared else case.samplers.get(leaf.name, gaussian)
        shape = tuple(batch if isinstance(d, str) else d for d in leaf.shape)
        value = np.asarray(sample(rng, shape)).astype(leaf.dtype)
        (feeds if leaf.op == "input" else variables)[leaf.name] = value
    return feeds, variables


def _as_float64(values: Arrays) -> Arrays:
    return {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in values.items()}


def _runners(outputs: dict[str, Node]) -> dict[str, Callable[[Arrays, Arrays], dict[str, np.ndarray]]]:
    def interpreter(feeds: Arrays, variables: Arrays) -> dict[str, np.ndarray]:
        return dict(zip(outputs, gc.evaluate(list(outputs.values()), feeds, variables)))

    def compiled(passes: bool) -> Callable[[Arrays, Arrays], dict[str, np.ndarray]]:
        step = gc.compile(outputs, passes=passes)

        def run(feeds: Arrays, variables: Arrays) -> dict[str, np.ndarray]:
            step.state.load(variables)
            return step(**feeds)
        return run

    return {"interpreter": interpreter, "optimized": compiled(True), "unoptimized": compiled(False)}


def _assert_value(got: Any, want: Any, node: Node, case: Case, label: str) -> None:
    got = np.asarray(got)
    assert got.dtype == np.dtype(node.dtype), f"{label}: dtype {got.dtype}, expected {node.dtype}"
    want = np.asarray(want)
    assert got.shape == want.shape, f"{label}: shape {got.shape}, expected {want.shape}"
    if case.exact:
        want = want.astype(node.dtype)
        np.testing.assert_array_equal(got, want, err_msg=label)
        if got.dtype.kind == "f" and case.zero_sign:
            zeros = want == 0
            np.testing.assert_array_equal(np.signbit(got[zeros]), np.signbit(want[zeros]),
                                          err_msg=f"{label}: sign of zero")
    else:
        tolerance = TOLERANCE[node.dtype if node.dtype in TOLERANCE else "float64"]
        np.testing.assert_allclose(got.astype(np.float64), want, err_msg=label, rtol=tolerance["rtol"],
                                   atol=tolerance["atol"] * case.scale)


def _params() -> list[Any]:
    params = []
    for case in CASES:
        if not case.float_typed:
            params.append(pytest.param(case, "float64", id=case.name))
            continue
        for dtype in ("float64", "float32"):
            params.append(pytest.param(case, dtype, id=f"{case.name}-{dtype}"))
    return params


@pytest.mark.parametrize("case, dtype", _params())
def test_formula(case: Case, dtype: str) -> None:
    built = _graph(case, dtype)
    outputs = _outputs(built)
    rng = np.random.default_rng(sum(map(ord, case.name)))
    draws = [_draw(case, outputs, rng, batch) for batch in case.batches]
    for how, run in _runners(outputs).items():
        for call, (feeds, variables) in enumerate(draws):
            expected = case.expect(_as_float64({**feeds, **variables}))
            expected = expected if isinstance(built, dict) else {"out": expected}
            got = run(feeds, variables)
            got = got if isinstance(got, dict) else {"out": got}
            for name, node in outputs.items():
                _assert_value(got[name], expected[name], node, case, f"{case.name} {how} call {call} {name}")


# ---------------------------------------------------------------- coverage of the table

def _ops_in(case: Case) -> set[str]:
    return {n.op for n in toposort(list(_outputs(_graph(case, "float64")).values()))}


def test_every_primitive_has_a_transcription() -> None:
    """A primitive added to PRIMITIVES without a case here fails this test."""
    transcribed = set().union(*(_ops_in(case) for case in CASES))
    random_ops = {name for name, p in PRIMITIVES.items() if p.kind == RANDOM}
    assert random_ops == RANDOM_CASES
    assert set(PRIMITIVES) - transcribed - random_ops == set()


def test_every_dsl_function_and_composite_has_a_case() -> None:
    covered = {name for case in CASES for name in case.covers} | RANDOM_CASES
    public_composites = {name for name, fn in inspect.getmembers(composites, inspect.isfunction)
                         if fn.__module__ == composites.__name__ and not name.startswith("_")}
    assert set(ops.__all__) - covered == set()
    assert public_composites - covered == set()
    layers = {"Dense", "Sequential", "Activation", "BatchNorm", "GaussianNoise", "Dropout", "MixtureOfExperts", "Ensemble",
              "l2"}
    not_computing = {"ACTIVATIONS", "Lambda", "Module", "attach_updates", "summary", "weights", "relu", "sigmoid",
                     "tanh"}
    assert set(nn.__all__) == layers | not_computing, "a new export of graphc.nn: give it a case or say why not"
    assert layers - covered == set()


# ---------------------------------------------------------------- random ops, noise, and the running statistics

def _random_runners(node: Node) -> dict[str, Callable[[], np.ndarray]]:
    return {"interpreter": lambda: gc.evaluate([node], {}, rng=np.random.default_rng(7))[0],
            "optimized": gc.compile(node, passes=True),
            "unoptimized": gc.compile(node, passes=False)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_normal_and_uniform_have_their_distributions(dtype: str) -> None:
    """20000 draws: mean and variance within 6 standard errors of N(0, 1) and U[0, 1)."""
    n = 20000
    for op, mean, var in (("normal", 0.0, 1.0), ("uniform", 0.5, 1 / 12)):
        node = getattr(gc, op)((100, 200), dtype)
        for how, run in _random_runners(node).items():
            first, second = run(), run()
            assert first.dtype == np.dtype(dtype) and first.shape == (100, 200), how
            if how != "interpreter":
                assert not np.array_equal(first, second), f"{how}: {op} drew the same values twice"
            for draw in (first, second):
                values = draw.astype(np.float64).ravel()
                assert abs(values.mean() - mean) < 6 * np.sqrt(var / n), (how, op)
                assert abs(values.var() - var) < 6 * var * np.sqrt(2 / n), (how, op)
            if op == "uniform":
                assert first.min() >= 0.0 and first.max() < 1.0


def test_gaussian_noise_adds_noise_of_its_standard_deviation_in_training() -> None:
    x = gc.input("x", (None, 100), "float64")
    y = nn.GaussianNoise(0.5)(x, training=True)
    xb = np.random.default_rng(0).normal(size=(200, 100))
    for how, run in {"interpreter": lambda: gc.evaluate([y], {"x": xb})[0],
                     "optimized": lambda s=gc.compile(y): s(x=xb),
                     "unoptimized": lambda s=gc.compile(y, passes=False): s(x=xb)}.items():
        noise = (run() - xb).ravel()
        assert abs(noise.mean()) < 6 * 0.5 / np.sqrt(noise.size), how
        assert abs(noise.std() - 0.5) < 0.02, how


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_dropout_keeps_each_value_with_probability_1_minus_p_scaled_to_keep_the_mean(p: float) -> None:
    x = gc.input("x", (None, 100), "float64")
    y = nn.Dropout(p)(x, training=True)
    xb = np.random.default_rng(0).uniform(1.0, 2.0, size=(200, 100))
    for how, run in {"interpreter": lambda: gc.evaluate([y], {"x": xb})[0],
                     "optimized": lambda s=gc.compile(y): s(x=xb),
                     "unoptimized": lambda s=gc.compile(y, passes=False): s(x=xb)}.items():
        kept = run() / xb
        assert set(np.unique(np.round(kept, 12))) <= {0.0, round(1 / (1 - p), 12)}, how
        share = np.count_nonzero(kept) / kept.size
        assert abs(share - (1 - p)) < 6 * np.sqrt(p * (1 - p) / kept.size), how
    with pytest.raises(gc.GraphcError, match=r"Dropout p .* must lie in \[0, 1\), got 1.0"):
        nn.Dropout(1.0)


def test_batchnorm_train_step_writes_the_running_statistics() -> None:
    """The updates reach the store through a train step, step after step (not only as graph values)."""
    x = gc.input("x", (None, 4), "float64")
    bn = nn.BatchNorm(momentum=0.3, eps=1e-3)
    loss = gc.sum(bn(x, training=True) * gc.constant(np.arange(4.0), "float64"))
    for passes in (True, False):
        step = gc.compile(loss, optimizer=gc.optim.SGD(0.1), passes=passes)
        rng = np.random.default_rng(1)
        mean, var = np.zeros(4), np.ones(4)
        for batch in (6, 3):
            xb = rng.normal(size=(batch, 4)) * 3 + 1
            step(x=xb)
            mean = 0.7 * mean + 0.3 * xb.mean(axis=0)
            var = 0.7 * var + 0.3 * xb.var(axis=0, ddof=1)
            np.testing.assert_allclose(step.state.values["batchnorm.mean"], mean, rtol=1e-12)
            np.testing.assert_allclose(step.state.values["batchnorm.var"], var, rtol=1e-12)
