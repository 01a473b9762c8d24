"""Fused C loops on the values where C and NumPy part ways: NaN, infinities, signed zeros,
subnormals, the largest and smallest normal numbers, integer wrap-around.

Every op the C backend can fuse (those with a C expression, ``c_expressions.supports``) is computed inside a
fused group, checked through ``step.plan.groups``, on every pair of such values,
and compared with NumPy's ufunc of the same dtype.  The operands are parameters
(fixed addresses, so the group is eligible), and each op's result feeds one
more elementwise op, so the group has the two members fusion requires.

Fused loops run with flush-to-zero and denormals-are-zero (``c_loops.PRELUDE``):
a subnormal operand may read as a zero of its sign, and a subnormal result may
become one.  Ops that only select or copy a value (maximum, where, neg) pass a
subnormal through unchanged, so where a subnormal is involved the oracle accepts
NumPy's value on the raw operands or the flushed value on flushed operands, and
nothing else.  Everywhere else the match is exact (NaN matches NaN, and the sign
of a zero result must agree) for arithmetic, selections and comparisons, and
within a few ULP for the transcendentals, which come from libm rather than NumPy.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cpu import c_loops
from graphc.lowering import c_expressions
from graphc.ir import dtypes
from graphc.ir.node import Node, make
from graphc.compiler.compiled_step import CompiledStep
from graphc.ir.registry import BINARY, COMPARE, ELEMENTWISE, LEAF, PRIMITIVES, SELECT, UNARY

needs_c = pytest.mark.skipif(c_loops.compiler() is None, reason="no C compiler (or GRAPHC_KERNELS=numpy)")
pytestmark = pytest.mark.usefixtures("c_kernels_must_build")

TRANSCENDENTAL_ULPS = 2  # libm against NumPy's own (SIMD) implementations; 1 seen on x86-64


@dataclass(frozen=True)
class FusedOp:
    """How to build ``op`` from operand nodes and what NumPy computes for it."""
    build: Callable[..., Node]
    numpy: Callable[..., np.ndarray]
    arity: int
    dtypes: tuple[str, ...]
    ulps: int = 0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) from e = exp(-|x|): 1 / (1 + e) for x ≥ 0, e / (1 + e) below, in x's dtype."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, x.dtype.type(1), e) / (1 + e)


FLOATS, INTS, ALL = dtypes.FLOATS, dtypes.INTS, dtypes.ALL
NUMERIC = FLOATS + INTS
OPS: dict[str, FusedOp] = {
    "neg": FusedOp(gc.neg, np.negative, 1, NUMERIC),
    "exp": FusedOp(gc.exp, np.exp, 1, FLOATS, TRANSCENDENTAL_ULPS),
    "log": FusedOp(gc.log, np.log, 1, FLOATS, TRANSCENDENTAL_ULPS),
    "tanh": FusedOp(gc.tanh, np.tanh, 1, FLOATS, TRANSCENDENTAL_ULPS),
    "sin": FusedOp(gc.sin, np.sin, 1, FLOATS, TRANSCENDENTAL_ULPS),
    "cos": FusedOp(gc.cos, np.cos, 1, FLOATS, TRANSCENDENTAL_ULPS),
    "sigmoid": FusedOp(gc.sigmoid, _sigmoid, 1, FLOATS, TRANSCENDENTAL_ULPS),
    "sqrt": FusedOp(gc.sqrt, np.sqrt, 1, FLOATS),
    "relu": FusedOp(gc.relu, lambda x: np.maximum(x, x.dtype.type(0)), 1, NUMERIC),
    "abs": FusedOp(gc.abs, np.abs, 1, NUMERIC),
    "sign": FusedOp(gc.sign, np.sign, 1, NUMERIC),
    "add": FusedOp(gc.add, np.add, 2, NUMERIC),
    "sub": FusedOp(gc.sub, np.subtract, 2, NUMERIC),
    "mul": FusedOp(gc.mul, np.multiply, 2, NUMERIC),
    "div": FusedOp(gc.div, np.divide, 2, FLOATS),
    "pow": FusedOp(gc.pow, np.power, 2, FLOATS, TRANSCENDENTAL_ULPS),
    "maximum": FusedOp(gc.maximum, np.maximum, 2, NUMERIC),
    "minimum": FusedOp(gc.minimum, np.minimum, 2, NUMERIC),
    "lt": FusedOp(gc.less, np.less, 2, NUMERIC),
    "le": FusedOp(gc.less_equal, np.less_equal, 2, NUMERIC),
    "gt": FusedOp(gc.greater, np.greater, 2, NUMERIC),
    "ge": FusedOp(gc.greater_equal, np.greater_equal, 2, NUMERIC),
    "eq": FusedOp(gc.equal, np.equal, 2, ALL),
    "ne": FusedOp(gc.not_equal, np.not_equal, 2, ALL),
    "where": FusedOp(gc.where, np.where, 3, ALL),
}
# Casts are checked from each dtype to every other; float to integer only on values the
# integer type can hold (anything else is undefined behaviour in C and a warning in NumPy).
CAST_TARGETS = {source: tuple(d for d in ALL if d != source) for source in ALL}


def edge_values(dtype: str) -> np.ndarray:
    if dtype in FLOATS:
        f = np.finfo(dtype)
        huge_exp = {"float32": 89.0, "float64": 710.0}[dtype]  # exp overflows just above
        values = [np.nan, np.inf, -np.inf, 0.0, -0.0, f.smallest_subnormal, -f.smallest_subnormal, f.tiny / 2,
                  -f.tiny * 0.75, f.tiny, -f.tiny, 3 * f.tiny, f.max, -f.max, np.sqrt(f.max), 1.0, -1.0, 0.5, -2.5,
                  3.0, f.eps, 1e-30, -huge_exp, huge_exp]
    elif dtype in INTS:
        i = np.iinfo(dtype)
        values = [0, 1, -1, 2, -7, 12345, -12345, i.max, i.min, i.max - 1, i.min + 1]
    else:
        values = [False, True]
    return np.array(values, dtype=dtype)


def castable_values(source: str, target: str) -> np.ndarray:
    """Edge values of ``source`` that convert to ``target`` with a defined result."""
    values = edge_values(source)
    if source in FLOATS and target in INTS:
        bound = float(np.iinfo(target).max) / 2
        return values[np.isfinite(values) & (np.abs(values) < bound)]
    return values


def _operands(dtype: str, arity: int) -> list[np.ndarray]:
    """Every combination of edge values: x alone, or (x, y) pairs, or (cond, x, y) with each condition."""
    v = edge_values(dtype)
    if arity == 1:
        return [v]
    a, b = np.repeat(v, len(v)), np.tile(v, len(v))
    if arity == 2:
        return [a, b]
    cond = np.tile([True, False], len(a) // 2 + 1)[:len(a)]
    return [cond, a, b]


def _subnormal(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind != "f":
        return np.zeros(x.shape, bool)
    return (x != 0) & (np.abs(x) < np.finfo(x.dtype).tiny)


def _flush(x: np.ndarray) -> np.ndarray:
    """Subnormal floats to zeros of their sign; everything else unchanged."""
    return np.where(_subnormal(x), np.copysign(x.dtype.type(0), x), x) if x.dtype.kind == "f" else x


def _candidates(fn: Callable[..., np.ndarray], operands: list[np.ndarray]) -> list[np.ndarray]:
    """NumPy on the raw operands, and NumPy with the fused loops' flush-to-zero rule."""
    with np.errstate(all="ignore"):
        return [np.asarray(fn(*operands)), _flush(np.asarray(fn(*[_flush(x) for x in operands])))]


def _agrees(got: np.ndarray, want: np.ndarray, ulps: int) -> np.ndarray:
    if got.dtype.kind != "f":
        return got == want
    both_nan = np.isnan(got) & np.isnan(want)
    with np.errstate(all="ignore"):
        close = got == want
        if ulps:
            finite = np.isfinite(want) & (want != 0)
            close |= finite & (np.abs(got.astype(np.float64) - want) <= ulps * np.spacing(np.abs(want)))
    same_zero = (want != 0) | (np.signbit(got) == np.signbit(want))
    return both_nan | (close & same_zero)


def _assert_matches(label: str, got: np.ndarray, operands: list[np.ndarray], fn: Callable, ulps: int) -> None:
    """``got`` is NumPy's value, or the flushed value (a subnormal counting as the zero it reads as)."""
    raw, flushed = _candidates(fn, operands)
    assert got.dtype == raw.dtype, f"{label}: dtype {got.dtype}, NumPy {raw.dtype}"
    ok = _agrees(got, raw, ulps) | _agrees(_flush(got), flushed, ulps)
    bad = np.flatnonzero(~ok)
    rows = [f"  {tuple(x[i].item() for x in operands)}: fused {got[i]!r}, NumPy {raw[i]!r} (flushed {flushed[i]!r})"
            for i in bad[:8]]
    assert not bad.size, f"{label}: {bad.size} of {got.size} values differ\n" + "\n".join(rows)


# ---------------------------------------------------------------- one fused step per dtype

@dataclass
class FusedRun:
    step: CompiledStep
    operands: dict[str, list[np.ndarray]]
    results: dict[str, np.ndarray]


def _companion(y: Node) -> Node:
    """A second elementwise op reading ``y``, so that ``y`` is computed inside a fused group."""
    return gc.equal(y, y) if y.dtype == dtypes.BOOL else gc.abs(y)


@functools.lru_cache(maxsize=None)
def fused_run(dtype: str) -> FusedRun:
    """Every supported op of ``dtype`` (and every cast from it) in one compiled step, one library."""
    outputs: dict[str, Node] = {}
    values: dict[str, np.ndarray] = {}
    operands: dict[str, list[np.ndarray]] = {}

    def add(name: str, build: Callable[..., Node], arrays: list[np.ndarray]) -> None:
        params = []
        for k, array in enumerate(arrays):
            param = gc.param(f"{name}.{k}", array.shape, dtype=array.dtype.name)
            values[param.name] = array
            params.append(param)
        y = build(*params)
        outputs[name], outputs[f"{name}~"] = y, _companion(y)
        operands[name] = arrays

    for op, spec in OPS.items():
        if dtype in spec.dtypes:
            add(op, spec.build, _operands(dtype, spec.arity))
    for target in CAST_TARGETS[dtype]:
        add(f"cast-{target}", lambda x, t=target: gc.cast(x, t), [castable_values(dtype, target)])
    step = gc.compile(outputs)
    step.state.load(values)
    return FusedRun(step, operands, step())


def _numpy_cast(target: str) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: x.astype(target)


def _in_a_fused_group(run: FusedRun, name: str) -> bool:
    node = run.step.program.outputs[name]
    return any(member is node for group in run.step.plan.groups for member in group.members)


FUSED_CASES = [pytest.param(op, dtype, id=f"{op}-{dtype}") for op, spec in OPS.items() for dtype in spec.dtypes]
CAST_CASES = [pytest.param(source, target, id=f"{source}-to-{target}")
              for source, targets in CAST_TARGETS.items() for target in targets]


@needs_c
@pytest.mark.parametrize("op, dtype", FUSED_CASES)
def test_fused_op_matches_numpy_on_edge_values(op: str, dtype: str) -> None:
    run = fused_run(dtype)
    assert _in_a_fused_group(run, op), f"{op} on {dtype} was not fused; the test would check NumPy against itself"
    spec = OPS[op]
    operands = run.operands[op]
    _assert_matches(f"{op} {dtype}", run.results[op], operands, spec.numpy, spec.ulps)


@needs_c
@needs_c
@pytest.mark.parametrize("source, target", CAST_CASES)
def test_fused_cast_matches_numpy_on_edge_values(source: str, target: str) -> None:
    run = fused_run(source)
    name = f"cast-{target}"
    assert _in_a_fused_group(run, name)
    _assert_matches(f"cast {source} to {target}", run.results[name], run.operands[name], _numpy_cast(target), 0)


@needs_c
@pytest.mark.parametrize("dtype", FLOATS)
def test_signed_zeros_follow_numpy(dtype: str) -> None:
    """The cases where NumPy picks a zero's sign, spelled out (the edge-value tests cover them
    among hundreds of others; these say what is meant)."""
    run = fused_run(dtype)
    v = edge_values(dtype)
    zero, negative_zero = (int(np.flatnonzero((v == 0) & ~np.signbit(v))[0]),
                           int(np.flatnonzero((v == 0) & np.signbit(v))[0]))
    pair = len(v) * zero + negative_zero, len(v) * negative_zero + zero  # (0, -0) and (-0, 0)
    signbit = {name: np.signbit(run.results[name]) for name in ("maximum", "minimum", "neg", "abs", "relu", "sign")}
    assert list(signbit["maximum"][list(pair)]) == [True, False]  # of equal values, the second
    assert list(signbit["minimum"][list(pair)]) == [True, False]
    assert signbit["neg"][zero] and not signbit["neg"][negative_zero]
    assert not signbit["abs"][negative_zero] and not signbit["relu"][negative_zero]
    assert not signbit["sign"][negative_zero] and run.results["sign"][zero] == 0


# ---------------------------------------------------------------- the tables agree on the ops

ARITY = {UNARY: 1, BINARY: 2, COMPARE: 2, SELECT: 3}


def _sample(op: str, dtype: str) -> Node:
    """A node of ``op`` producing (or, for where, selecting) ``dtype``; raises if the op refuses it."""
    if op == "cast":
        return gc.cast(gc.input("x", (2,), "int32" if dtype != "int32" else "float32"), dtype)
    kind = PRIMITIVES[op].kind
    operands = [gc.input(f"x{k}", (2,), dtype) for k in range(ARITY[kind])]
    if kind == SELECT:
        operands[0] = gc.input("c", (2,), dtypes.BOOL)
    return make(op, operands)


def test_every_elementwise_primitive_has_a_c_expression() -> None:
    """A new elementwise op (or cast) must be given a C expression, for every dtype it accepts."""
    fusable = {op for op, p in PRIMITIVES.items() if p.kind in ELEMENTWISE} | {"cast"}
    assert {op for op in PRIMITIVES if c_expressions.supports(op)} == fusable
    assert set(OPS) | {"cast"} == fusable, "an op the C backend fuses has no edge-value check here"
    for op in sorted(fusable):
        accepted = 0
        for dtype in ALL:
            try:
                node = _sample(op, dtype)
            except gc.GraphcError:
                continue  # the op does not accept this dtype
            accepted += 1
            expression = c_expressions.expression(node, ["a", "b", "c"][:len(node.inputs)])
            assert isinstance(expression, str) and expression, (op, dtype)
        assert accepted, op


def test_every_primitive_has_a_numpy_lowering() -> None:
    computed = {op for op, p in PRIMITIVES.items() if p.kind != LEAF}
    assert {op for op, p in PRIMITIVES.items() if "numpy" in p.lowerings} == computed


@pytest.mark.parametrize("backend", ["numpy", "c", "cuda-emulator"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_keeps_its_relative_precision_in_both_tails(backend: str, dtype: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Within 4 ULP of the exact value from x = -80 (float32; -700 in float64, where σ is still a
    normal number) to +80; the form ½ tanh(x/2) + ½ was off by 1.7e-4 at -30.  And log σ(x) is
    rewritten into a form that stays finite where σ(x) underflows to 0."""
    monkeypatch.setenv("GRAPHC_KERNELS", "numpy" if backend == "numpy" else "c")
    low = -80.0 if dtype == "float32" else -700.0
    values = np.concatenate([np.linspace(low, 80.0, 4001), [-30.0, -1e-30, 0.0, 1e-30]]).astype(dtype)
    x = gc.param("x", values.shape, dtype=dtype)
    step = gc.compile([gc.sigmoid(x) * gc.param("one", values.shape, dtype=dtype), gc.log(gc.sigmoid(x)) * 1.0],
                      backend="cuda-emulator" if backend == "cuda-emulator" else "numpy")
    assert step.plan.groups or backend == "numpy"
    step.state.values.update(x=values, one=np.ones_like(values))
    got, log_sigmoid = step()
    exact = 1 / (1 + np.exp(-values.astype(np.longdouble)))
    ulp = np.spacing(exact.astype(dtype)).astype(np.longdouble)
    assert np.max(np.abs(got - exact) / ulp) <= 4
    deep = np.array([-800.0 if dtype == "float64" else -120.0], dtype)
    step.state.load({"x": np.resize(deep, values.shape)})  # load: a device copy is refreshed too
    np.testing.assert_allclose(step()[1], np.resize(deep, values.shape), rtol=1e-6)


@needs_c
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ftz_off_keeps_subnormals_as_numpy_does(dtype: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Fused loops flush subnormal results to zero; GRAPHC_FTZ=0 builds them without, for users whose
    data is that small: then the loop matches NumPy bit for bit."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    tiny = np.finfo(dtype).tiny
    values = np.array([tiny, -tiny, 3 * tiny, 1.0], dtype)
    want = values * values.dtype.type(0.25) + values.dtype.type(0.0)

    def run(ftz: str) -> np.ndarray:
        monkeypatch.setenv("GRAPHC_FTZ", ftz)
        x = gc.param("x", values.shape, dtype=dtype)
        step = gc.compile(x * 0.25 + gc.param("zero", values.shape, dtype=dtype), name=f"ftz{ftz}")
        assert step.plan.groups
        step.state.values.update(x=values, zero=np.zeros_like(values))
        return step()

    assert np.count_nonzero(run("1")[:3]) == 0  # all three results are subnormal: flushed
    np.testing.assert_array_equal(run("0"), want)
    assert np.count_nonzero(want[:3]) == 3
