"""Every rewrite rule, checked for the value it produces on graphs built to match its pattern.

``test_passes.py`` checks that each rule fires and that whole phases keep random
graphs' values; random graphs rarely contain a given pattern (a transpose of a
3-D transpose, a negated scalar product), so a rule that rewrites its pattern
into the wrong value could survive there.  Here each rule gets graphs made to
match it, with float64 inputs of several shapes (NaN, infinities and signed
zeros among them for the rules that promise exact values), and the program
rewritten by that rule alone, and by the whole pipeline, is evaluated by the
interpreter and compared with the unrewritten program.  Near misses (a graph
that looks like the pattern but must not be rewritten) check that the rule
declines them.  The list of rules comes from the phases' ``RULES``: a new
rule without patterns here fails :func:`test_every_rule_has_patterns`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import graphc as gc
from graphc.ir.node import Node
from graphc.passes import canonicalize, optimize, specialize, stabilize
from graphc.passes.rewrite import Phase, Rule, apply_phase
from graphc.ir.program import Program

RULES: list[Rule] = canonicalize.RULES + stabilize.RULES + specialize.RULES
# Rules that change rounding (reassociation, a reciprocal, log∘exp dropped): compared within
# a tolerance, on finite values only.  Every other rule must keep values bit for bit.
INEXACT = {"scalar_out_of_sum", "log_of_exp", "log_of_exp_ratio", "log_of_sigmoid", "divide_by_constant",
           "power_special_cases"}
TOLERANCE = dict(rtol=1e-12, atol=1e-14)
BATCHES = (3, 5)

Sampler = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


def gaussian(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape) * 2.0


def positive(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0.2, 3.0, shape)


def with_specials(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``values`` with about a third of its entries replaced by NaN, ±inf and ±0."""
    specials = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0], values.shape)
    return np.where(rng.random(values.shape) < 0.35, specials, values)


@dataclass(frozen=True)
class In:
    shape: tuple
    dtype: str = "float64"
    sample: Sampler = gaussian


@dataclass(frozen=True)
class Pattern:
    """A graph for one rule: ``build`` makes it from the inputs.  ``fires`` says whether the rule
    must rewrite it (False: a near miss it must leave alone)."""
    label: str
    inputs: dict[str, In]
    build: Callable[[dict[str, Node]], Node]
    fires: bool = True
    signed_zeros: bool = True  # compare the sign of zero results too (see the -0 + 0 test below)


def P(label: str, inputs: dict[str, tuple | In], build: Callable[[dict[str, Node]], Node], **options) -> Pattern:
    specs = {name: spec if isinstance(spec, In) else In(spec) for name, spec in inputs.items()}
    return Pattern(label, specs, build, **options)


def const(value, dtype: str = "float64") -> Node:
    return gc.constant(np.asarray(value, dtype=dtype), dtype)


C23 = np.arange(6.0).reshape(2, 3) - 2.5
X, X3 = {"x": (3, 4)}, {"x": (2, 3, 4)}
PERMS = list(itertools.permutations(range(3)))


def _digits(numbers: tuple[int, ...]) -> str:
    return "".join(map(str, numbers))


def _layout_patterns() -> list[Pattern]:
    patterns = []
    for shape in ((2, 3, 4), (3, 3, 3)):
        for inner, outer in itertools.product(PERMS, PERMS):
            patterns.append(P(f"transpose{_digits(inner)}-then-{_digits(outer)}-on-{_digits(shape)}", {"x": shape},
                              lambda v, p=inner, q=outer: gc.transpose(gc.transpose(v["x"], p), q)))
    patterns += [
        P("transpose-2d-twice", X, lambda v: v["x"].T.T),
        P("reshape-twice", X3, lambda v: gc.reshape(gc.reshape(v["x"], (6, 4)), (4, 6))),
        P("reshape-twice-batch", {"x": (None, 6)},
          lambda v: gc.reshape(gc.reshape(v["x"], (None, 2, 3)), (None, 3, 2))),
        P("broadcast-twice", {"x": (3, 1)}, lambda v: gc.broadcast_to(gc.broadcast_to(v["x"], (3, 4)), (2, 3, 4))),
        P("broadcast-twice-leading", {"x": (4,)}, lambda v: gc.broadcast_to(gc.broadcast_to(v["x"], (1, 4)), (3, 4))),
        P("transpose-then-reshape", X3, lambda v: gc.reshape(gc.transpose(v["x"], (2, 0, 1)), (4, 6)), fires=False),
    ]
    return patterns


PATTERNS: dict[str, list[Pattern]] = {
    "fold_constants": [
        P("product-of-constants", X, lambda v: v["x"] + const(2.0) * const(-3.5)),
        P("exp-of-constant-matrix", {"x": (2, 3)}, lambda v: v["x"] * gc.exp(const(C23))),
        P("sum-of-constant", {"x": (3,)}, lambda v: v["x"] - gc.sum(const(C23), axis=0)),
        P("max-of-constant", {"x": (2, 1)}, lambda v: v["x"] * gc.max(const(C23), axis=1, keepdims=True)),
        P("where-of-constants", {"x": (2, 3)},
          lambda v: v["x"] + gc.where(const(C23) > 0.0, const(C23), -const(C23))),
        P("transpose-of-constant", {"x": (3, 2)}, lambda v: v["x"] + gc.transpose(const(C23))),
        P("matmul-of-constants", {"x": (2, 2)}, lambda v: v["x"] + const(C23) @ const(C23.T)),
        P("one-hot-of-constant", {"x": (3, 4)}, lambda v: v["x"] * gc.one_hot(const([0, 3, 1], "int32"), 4, "float64")),
        P("too-large-to-fold", {"x": (8, 9)}, lambda v: v["x"] + gc.exp(const(np.ones((8, 9)))), fires=False),
    ],
    "drop_stop_gradient": [
        P("stop-gradient-times", {"x": (3, 4), "y": (4,)}, lambda v: gc.stop_gradient(v["x"]) * v["y"]),
        P("stop-gradient-3d", X3, lambda v: gc.exp(gc.stop_gradient(v["x"]))),
    ],
    "identity_arithmetic": [
        P("x-plus-0", X, lambda v: v["x"] + 0.0, signed_zeros=False),
        P("0-plus-x", X3, lambda v: 0.0 + v["x"], signed_zeros=False),
        P("x-minus-0", X, lambda v: v["x"] - 0.0),
        P("x-times-1", X3, lambda v: v["x"] * 1.0),
        P("1-times-x", X, lambda v: 1.0 * v["x"]),
        P("x-over-1", X, lambda v: v["x"] / 1.0),
        P("x-to-the-1", X, lambda v: v["x"] ** 1.0),
        P("0-minus-x", X, lambda v: 0.0 - v["x"], fires=False),
        P("1-over-x", X, lambda v: 1.0 / v["x"], fires=False),
        P("times-1-that-broadcasts", {"x": (3,)}, lambda v: v["x"] * const(np.ones((1, 1))), fires=False),
        P("x-times-2", X, lambda v: v["x"] * 2.0, fires=False),
    ],
    "double_negation": [
        P("neg-neg", X, lambda v: -(-v["x"])),
        P("neg-neg-neg", X3, lambda v: -(-(-v["x"]))),
    ],
    "subtract_negation": [
        P("a-minus-neg-b", {"a": (2, 3), "b": (3,)}, lambda v: v["a"] - (-v["b"])),
        P("a-plus-neg-b", {"a": (2, 3), "b": (3,)}, lambda v: v["a"] + (-v["b"])),
        P("a-plus-neg-b-broadcast", {"a": (3,), "b": (2, 3)}, lambda v: v["a"] + (-v["b"])),
        P("neg-a-plus-b", {"a": (2, 3), "b": (2, 3)}, lambda v: (-v["a"]) + v["b"], fires=False),
    ],
    "trivial_layout": [
        P("reshape-to-own-shape", X3, lambda v: gc.exp(gc.reshape(v["x"], (2, 3, 4)))),
        P("broadcast-to-own-shape", X, lambda v: gc.broadcast_to(v["x"], (3, 4)) * 2.0),
        P("identity-transpose", X3, lambda v: gc.transpose(v["x"], (0, 1, 2)) + 1.0),
        P("batch-reshape-to-own-shape", {"x": (None, 4)}, lambda v: gc.reshape(v["x"], (None, 4)) * 3.0),
        P("square-transpose", {"x": (3, 3)}, lambda v: v["x"].T, fires=False),
    ],
    "merge_layout": _layout_patterns(),
    "implicit_broadcast": [
        P("scalar-broadcast-times", {"s": (), "x": (3, 4)}, lambda v: gc.broadcast_to(v["s"], (3, 4)) * v["x"]),
        P("row-broadcast-plus", {"r": (4,), "x": (3, 4)}, lambda v: v["x"] + gc.broadcast_to(v["r"], (3, 4))),
        P("column-broadcast-3d", {"c": (3, 1), "x": (2, 3, 4)},
          lambda v: v["x"] - gc.broadcast_to(v["c"], (2, 3, 4))),
        P("where-of-broadcast", {"s": (1,), "x": (3, 4)},
          lambda v: gc.where(v["x"] > 0.0, gc.broadcast_to(v["s"], (3, 4)), v["x"])),
        P("broadcast-needed-for-shape", {"s": (1,), "t": (1,)}, lambda v: gc.broadcast_to(v["s"], (4,)) + v["t"],
          fires=False),
    ],
    "unary_before_broadcast": [
        P("exp-of-broadcast", {"c": (3, 1)}, lambda v: gc.exp(gc.broadcast_to(v["c"], (2, 3, 4)))),
        P("neg-of-broadcast-scalar", {"s": ()}, lambda v: -gc.broadcast_to(v["s"], (3, 4))),
        P("sqrt-of-broadcast", {"r": In((4,), sample=positive)}, lambda v: gc.sqrt(gc.broadcast_to(v["r"], (3, 4)))),
    ],
    "reshape_of_broadcast_scalar": [
        P("flatten-broadcast-scalar", {"s": (1, 1)}, lambda v: gc.reshape(gc.broadcast_to(v["s"], (3, 4)), (12,))),
        P("reshape-broadcast-0d", {"s": ()}, lambda v: gc.reshape(gc.broadcast_to(v["s"], (2, 3, 4)), (4, 6))),
        P("reshape-broadcast-row", {"r": (4,)}, lambda v: gc.reshape(gc.broadcast_to(v["r"], (3, 4)), (12,)),
          fires=False),
    ],
    "multiply_by_ones": [
        P("x-times-ones", {"x": (4,)}, lambda v: v["x"] * gc.broadcast_to(const(1.0), (3, 4))),
        P("ones-times-x", X3, lambda v: gc.broadcast_to(const(1.0), (2, 3, 4)) * v["x"]),
        P("x-times-twos", {"x": (4,)}, lambda v: v["x"] * gc.broadcast_to(const(2.0), (3, 4)), fires=False),
    ],
    "scalar_out_of_sum": [
        P("sum-rows-of-scaled", {"s": (), "x": (3, 4)}, lambda v: gc.sum(gc.reshape(v["s"], (1, 1)) * v["x"], axis=1)),
        P("sum-all-of-scaled-keep", {"s": (1, 1), "x": (3, 4)},
          lambda v: gc.sum(v["x"] * v["s"], axis=(0, 1), keepdims=True)),
        P("sum-3d-of-scaled", {"s": (1, 1, 1), "x": (2, 3, 4)}, lambda v: gc.sum(v["s"] * v["x"], axis=(0, 2))),
        P("sum-of-row-scaled", {"r": (4,), "x": (3, 4)}, lambda v: gc.sum(v["r"] * v["x"], axis=0), fires=False),
    ],
    "negate_scalar_factor": [
        P("neg-scalar-times-x", {"s": (1, 1), "x": (3, 4)}, lambda v: -(v["s"] * v["x"])),
        P("neg-x-times-scalar", {"s": (), "x": (2, 3, 4)}, lambda v: -(v["x"] * v["s"])),
        P("neg-constant-over-x", X, lambda v: -(3.0 / v["x"])),
        P("neg-input-over-x", {"s": (), "x": (3, 4)}, lambda v: -(v["s"] / v["x"]), fires=False),
        P("neg-x-over-scalar", {"s": (), "x": (3, 4)}, lambda v: -(v["x"] / v["s"]), fires=False),
    ],
    "unary_before_reshape": [
        P("exp-of-reshape", X, lambda v: gc.exp(gc.reshape(v["x"], (4, 3)))),
        P("tanh-of-reshape-3d", X3, lambda v: gc.tanh(gc.reshape(v["x"], (6, 4)))),
        P("abs-of-flatten", X3, lambda v: gc.abs(gc.reshape(v["x"], (24,)))),
    ],
    "numel_from_an_input": [
        P("batch-count-of-computed", {"b": (None, 4)}, lambda v: gc.sum(gc.exp(v["b"])) / gc.numel(gc.exp(v["b"]), 0)),
        P("batch-and-static-count", {"b": (None, 4)}, lambda v: gc.mean(gc.tanh(v["b"]) * 2.0)),
        P("count-of-input", {"b": (None, 4)}, lambda v: gc.numel(v["b"], 0) * v["b"], fires=False),
    ],
    "drop_kept_dims": [
        P("reshape-of-kept-sum", X, lambda v: gc.reshape(gc.sum(v["x"], 0, keepdims=True), (4,))),
        P("reshape-of-kept-max-3d", X3, lambda v: gc.reshape(gc.max(v["x"], (0, 2), keepdims=True), (3,))),
        P("reshape-of-kept-sum-batch", {"x": (None, 3, 4)},
          lambda v: gc.reshape(gc.sum(v["x"], 1, keepdims=True), (None, 4))),
        P("reshape-of-kept-sum-other-shape", X, lambda v: gc.reshape(gc.sum(v["x"], 0, keepdims=True), (2, 2)),
          fires=False),
    ],
    "log_of_exp": [
        P("log-exp", X, lambda v: gc.log(gc.exp(v["x"]))),
        P("log-exp-3d-sum", X3, lambda v: gc.sum(gc.log(gc.exp(v["x"])), axis=1)),
    ],
    "log_of_exp_ratio": [
        P("log-exp-over-d", {"u": (2, 3), "d": In((2, 1), sample=positive)},
          lambda v: gc.log(gc.exp(v["u"]) / v["d"])),
        P("log-softmax", {"x": (4, 5)}, lambda v: gc.log(gc.softmax(v["x"]))),
        P("log-softmax-axis0-3d", X3, lambda v: gc.log(gc.softmax(v["x"], axis=0))),
        P("log-of-d-over-exp", {"u": (2, 3), "d": In((2, 1), sample=positive)},
          lambda v: gc.log(v["d"] / gc.exp(v["u"])), fires=False),
    ],
    "log_of_sigmoid": [
        P("log-sigmoid", X, lambda v: gc.log(gc.sigmoid(v["x"]))),
        P("log-sigmoid-3d-sum", X3, lambda v: gc.sum(gc.log(gc.sigmoid(v["x"])), axis=1)),
        P("log-of-one-minus-sigmoid", X, lambda v: gc.log(1.0 - gc.sigmoid(v["x"])), fires=False),
    ],
    # The rewritten row sum no longer reads the labels; another read keeps the batch size known
    # (see test_a_rewrite_that_drops_the_only_read_of_an_input_keeps_its_size below).
    "one_hot_rows_sum_to_one": [
        P("row-sums", {"y": In((None,), "int32", lambda r, s: r.integers(0, 5, s))},
          lambda v: gc.sum(gc.one_hot(v["y"], 5, "float64"), axis=1) * gc.cast(v["y"], "float64")),
        P("row-sums-2d-labels", {"y": In((None, 2), "int64", lambda r, s: r.integers(0, 3, s))},
          lambda v: gc.sum(gc.one_hot(v["y"], 3, "float64"), axis=2, keepdims=True)
          + gc.reshape(gc.cast(v["y"], "float64"), (None, 2, 1))),
        P("column-sums", {"y": In((None,), "int32", lambda r, s: r.integers(0, 5, s))},
          lambda v: gc.sum(gc.one_hot(v["y"], 5, "float64"), axis=0), fires=False),
    ],
    "divide_by_constant": [
        P("over-4", X, lambda v: v["x"] / 4.0),
        P("over-3", X3, lambda v: v["x"] / 3.0),
        P("over-minus-half", X, lambda v: v["x"] / -0.5),
        P("over-0", X, lambda v: v["x"] / 0.0, fires=False),
        P("over-constant-vector", X, lambda v: v["x"] / const([3.0]), fires=False),
    ],
    "power_special_cases": [
        P("to-the-half", {"x": In((3, 4), sample=positive)}, lambda v: v["x"] ** 0.5),
        P("to-the-minus-1", {"x": In((2, 3, 4), sample=positive)}, lambda v: v["x"] ** -1.0),
        P("to-the-2", X, lambda v: v["x"] ** 2.0),
        P("to-the-3", {"x": In((3, 4), sample=positive)}, lambda v: v["x"] ** 3.0, fires=False),
        P("to-the-1.5", {"x": In((3, 4), sample=positive)}, lambda v: v["x"] ** 1.5, fires=False),
        P("to-the-minus-half", {"x": In((3, 4), sample=positive)}, lambda v: v["x"] ** -0.5, fires=False),
    ],
}


# ---------------------------------------------------------------- the checks

def _program(pattern: Pattern) -> Program:
    nodes = {name: gc.input(name, spec.shape, spec.dtype) for name, spec in pattern.inputs.items()}
    return Program("p", {"out": pattern.build(nodes)})


def _draws(pattern: Pattern, exact: bool, seed: int) -> list[dict[str, np.ndarray]]:
    """Gaussian draws at two batch sizes; for exact rules a third with special values in its floats."""
    rng = np.random.default_rng(seed)
    draws = []
    for batch, special in [(b, False) for b in BATCHES] + ([(BATCHES[0], True)] if exact else []):
        feeds = {}
        for name, spec in pattern.inputs.items():
            shape = tuple(batch if d is None else d for d in spec.shape)
            value = np.asarray(spec.sample(rng, shape))
            if special and value.dtype.kind == "f":
                value = with_specials(value, rng)
            feeds[name] = value.astype(spec.dtype)
        draws.append(feeds)
    return draws


def _value(program: Program, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with np.errstate(all="ignore"):
        return gc.evaluate([program.outputs["out"]], feeds)[0]


def _assert_same(got: np.ndarray, want: np.ndarray, exact: bool, signed_zeros: bool, label: str) -> None:
    assert (got.shape, got.dtype) == (want.shape, want.dtype), \
        f"{label}: {got.dtype}{got.shape}, not {want.dtype}{want.shape}"
    if not exact:
        np.testing.assert_allclose(got, want, err_msg=label, **TOLERANCE)
        return
    np.testing.assert_array_equal(got, want, err_msg=label)
    if signed_zeros and got.dtype.kind == "f":
        zeros = want == 0
        np.testing.assert_array_equal(np.signbit(got[zeros]), np.signbit(want[zeros]), err_msg=f"{label}: sign of 0")


def _params() -> list:
    return [pytest.param(rule, pattern, id=f"{rule.__name__}-{pattern.label}")
            for rule in RULES for pattern in PATTERNS.get(rule.__name__, [])]


@pytest.mark.parametrize("rule, pattern", _params())
def test_rule_keeps_the_value_of_its_pattern(rule: Rule, pattern: Pattern) -> None:
    before = _program(pattern)
    phase = Phase(rule.__name__, [rule])
    after = apply_phase(before, phase)
    fired = phase.fired.get(rule.__name__, 0) > 0
    assert fired == pattern.fires, f"{rule.__name__} {'did not fire' if pattern.fires else 'fired'} on {pattern.label}"
    optimized, _ = optimize(before)
    exact = rule.__name__ not in INEXACT
    for k, feeds in enumerate(_draws(pattern, exact, seed=sum(map(ord, pattern.label)))):
        want = _value(before, feeds)
        label = f"{pattern.label} draw {k}"
        _assert_same(_value(after, feeds), want, exact, pattern.signed_zeros, f"{label}, {rule.__name__}")
        if k < len(BATCHES):  # the whole pipeline mixes in inexact rules: finite draws, within tolerance
            _assert_same(_value(optimized, feeds), want, False, False, f"{label}, pipeline")


def test_every_rule_has_patterns() -> None:
    """A rule added to a phase without patterns here fails; so does a pattern list for a rule
    that no phase runs any more, and a rule none of whose patterns it rewrites."""
    names = [rule.__name__ for rule in RULES]
    assert sorted(set(names)) == sorted(PATTERNS)
    assert all(any(p.fires for p in PATTERNS[name]) for name in names)


def _replaces(rule: Rule, node: Node) -> bool:
    replacement = rule(node)
    return replacement is not None and replacement is not node


def test_rules_fire_only_on_the_ops_they_declare() -> None:
    """A phase offers a rule only the ops it declares (``rewrite.matches``): every rule, called
    directly on every node of every pattern, may replace only nodes of those ops."""
    nodes = {n for patterns in PATTERNS.values() for p in patterns for n in _program(p).nodes()}
    for rule in RULES:
        declared = getattr(rule, "ops", None)
        fired_on = {n.op for n in nodes if _replaces(rule, n)}
        assert fired_on, f"{rule.__name__} fired on no pattern node"
        if declared is not None:
            assert fired_on <= declared, f"{rule.__name__} fires on {sorted(fired_on - declared)} undeclared"


def test_stabilized_rules_are_right_where_the_naive_form_overflows() -> None:
    """On inputs where exp overflows (or σ underflows to 0), the unrewritten program is inf/NaN;
    the rewritten one must be the exact value, transcribed here, not merely finite."""
    u = np.array([[800.0, -800.0, 1.0], [700.0, 0.5, -750.0]])
    d = np.array([[2.0], [0.25]])
    cases = {"log_of_exp": (P("log-exp", {"u": u.shape}, lambda v: gc.log(gc.exp(v["u"]))), u),
             "log_of_exp_ratio": (P("log-exp-over-d", {"u": u.shape, "d": d.shape},
                                    lambda v: gc.log(gc.exp(v["u"]) / v["d"])), u - np.log(d))}
    # log σ(u) = -log(1 + e^-u), written in long double from its two tails
    ul = u.astype(np.longdouble)
    log_sigmoid = np.where(ul >= 0, -np.log1p(np.exp(-ul)), ul - np.log1p(np.exp(ul))).astype(np.float64)
    cases["log_of_sigmoid"] = (P("log-sigmoid", {"u": u.shape}, lambda v: gc.log(gc.sigmoid(v["u"]))), log_sigmoid)
    feeds = {"u": u, "d": d}
    for name, (pattern, expected) in cases.items():
        before = _program(pattern)
        after = apply_phase(before, Phase(name, [getattr(stabilize, name)]))
        assert not np.isfinite(_value(before, feeds)).all()
        # log σ(u) for large u is −e^−u, which 1 + e^−u rounds away: right to 1e-16, absolutely
        np.testing.assert_allclose(_value(after, feeds), expected, rtol=1e-15, atol=1e-16, err_msg=name)


def test_adding_zero_keeps_a_negative_zero_as_documented() -> None:
    """The one documented inexactness of identity_arithmetic: -0 + 0 is +0 in IEEE arithmetic,
    and -0 once the addition is dropped; every other value is kept bit for bit."""
    x = gc.input("x", (3,), "float64")
    before = Program("p", {"out": x + 0.0})
    after = apply_phase(before, Phase("canonicalize", canonicalize.RULES))
    feeds = {"x": np.array([-0.0, 1.5, -np.inf])}
    assert list(np.signbit(_value(after, feeds))) == [True, False, True]
    assert not np.signbit(_value(before, feeds)[0])
    np.testing.assert_array_equal(_value(before, feeds), _value(after, feeds))


def test_a_rewrite_that_drops_the_only_read_of_an_input_keeps_its_size() -> None:
    y = gc.input("y", (None,), "int32")
    rows = gc.sum(gc.one_hot(y, 5, "float64"), axis=1)
    labels = np.array([1, 4, 0], np.int32)
    np.testing.assert_array_equal(gc.compile(rows)(y=labels), gc.compile(rows, passes=False)(y=labels))
