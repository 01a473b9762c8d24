"""Elementwise primitives — unary, binary, comparisons, select — each with all its rules:
shape/dtype rule, NumPy meaning, gradient, NumPy lowering and C expression."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from graphc import ops
from graphc.autodiff.rules import Rule, no_gradient
from graphc.autodiff.rules import unbroadcast as u
from graphc.lowering import c_expressions as c
from graphc.lowering import numpy_helpers
from graphc.lowering.c_expressions import C_TYPES
from graphc.lowering.numpy_rules import Context, call, out_arg
from graphc.ir import dtypes
from graphc.ir.node import Node
from graphc.ir.registry import BINARY, COMPARE, SELECT, UNARY, DTypeMismatch, common_dtype, define, require
from graphc.ir.shapes import Shape, broadcast


def _unary(allowed: str) -> Callable:
    def infer(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
        (x,) = inputs
        require(x.dtype, allowed)
        return x.shape, x.dtype
    return infer


def _binary(allowed: str, result: Optional[str] = None) -> Callable:
    def infer(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
        dtype = common_dtype(inputs, allowed)
        return broadcast(*(n.shape for n in inputs)), result or dtype
    return infer


# ---------------------------------------------------------------- unary

def _c_abs(d: str, a: Sequence[str]) -> str:
    return f"{c.math('fabs', d)}({a[0]})" if d in ("float32", "float64") else f"(({a[0]} < 0) ? -{a[0]} : {a[0]})"


define("neg", UNARY, _unary("numeric"), np.negative, vjp=lambda g, out, x: (-g,),
       numpy=call("np.negative"), c=lambda d, a: f"(-{a[0]})")
define("exp", UNARY, _unary("float"), np.exp, vjp=lambda g, out, x: (g * out,),
       numpy=call("np.exp"), c=c.call("exp"))
# log and pow read their operands through daz: each C target's prelude says whether subnormal
# operands flush to zero (the C loops, which run with flush-to-zero) or not (CUDA, like NumPy).
define("log", UNARY, _unary("float"), np.log, vjp=lambda g, out, x: (g / x,),
       numpy=call("np.log"), c=lambda d, a: f"{c.math('log', d)}({c.math('daz', d)}({a[0]}))")
define("tanh", UNARY, _unary("float"), np.tanh, vjp=lambda g, out, x: (g * (1 - out * out),),
       numpy=call("np.tanh"), c=c.call("tanh"))
# σ from exp(-|x|), a form exact in both tails that never overflows; NumPy's meaning is the helper
# the generated code calls, and each C target's prelude defines graphc_sigmoid the same way.
define("sigmoid", UNARY, _unary("float"), numpy_helpers.sigmoid, vjp=lambda g, out, x: (g * out * (1 - out),),
       numpy=call("k.sigmoid"), c=c.call("graphc_sigmoid"))
# relu and abs have derivative 0 at 0.
define("relu", UNARY, _unary("numeric"), lambda x: np.maximum(x, 0),
       vjp=lambda g, out, x: (ops.where(x > 0, g, 0),),
       numpy=lambda a, n, ctx, out: f"np.maximum({a[0]}, 0{out_arg(out)})",
       c=lambda d, a: f"(({a[0]} > 0 || {a[0]} != {a[0]}) ? {a[0]} : ({C_TYPES[d]})0)")
define("sqrt", UNARY, _unary("float"), np.sqrt, vjp=lambda g, out, x: (g / (2 * out),),
       numpy=call("np.sqrt"), c=c.call("sqrt"))
define("abs", UNARY, _unary("numeric"), np.abs, vjp=lambda g, out, x: (g * ops.sign(x),),
       numpy=call("np.abs"), c=_c_abs)
define("sign", UNARY, _unary("numeric"), np.sign, vjp=no_gradient, numpy=call("np.sign"),
       c=lambda d, a: f"(({a[0]} != {a[0]}) ? {a[0]} : ({C_TYPES[d]})(({a[0]} > 0) - ({a[0]} < 0)))")
define("sin", UNARY, _unary("float"), np.sin, vjp=lambda g, out, x: (g * ops.cos(x),),
       numpy=call("np.sin"), c=c.call("sin"))
define("cos", UNARY, _unary("float"), np.cos, vjp=lambda g, out, x: (-g * ops.sin(x),),
       numpy=call("np.cos"), c=c.call("cos"))


# ---------------------------------------------------------------- binary

def _numpy_pow(a: Sequence[str], n: Node, ctx: Context, out: Optional[str]) -> str:
    exponent = n.inputs[1]
    if exponent.op == "constant" and exponent.ndim == 0 and float(exponent.attrs["value"].array) == 2.0:
        return f"np.square({a[0]}{out_arg(out)})"
    return f"np.power({a[0]}, {a[1]}{out_arg(out)})"


# Ties: where several inputs attain a max (or min), they share the cotangent
# equally, for the reduction ``max`` and for the elementwise ``maximum`` and
# ``minimum`` alike (JAX's rule too), so each rule is symmetric in tied inputs.

def _extremum_rule(wins: Callable[[Node, Node], Node]) -> Rule:
    """Rule of ``maximum`` (``wins`` = greater) or ``minimum`` (less): the winner takes the
    cotangent, and a tie halves it between the two (integer cotangents give ties nothing)."""
    def rule(g: Node, out: Node, a: Node, b: Node) -> tuple[Node, Node]:
        tie = ops.where(ops.equal(a, b), g * 0.5, 0) if dtypes.is_float(g.dtype) else ops.zeros_like(g)
        return (u(ops.where(wins(a, b), g, tie), a.shape), u(ops.where(wins(b, a), g, tie), b.shape))
    return rule


define("add", BINARY, _binary("numeric"), np.add, vjp=lambda g, out, a, b: (u(g, a.shape), u(g, b.shape)),
       numpy=call("np.add"), c=c.infix("+"))
define("sub", BINARY, _binary("numeric"), np.subtract, vjp=lambda g, out, a, b: (u(g, a.shape), u(-g, b.shape)),
       numpy=call("np.subtract"), c=c.infix("-"))
define("mul", BINARY, _binary("numeric"), np.multiply,
       vjp=lambda g, out, a, b: (u(g * b, a.shape), u(g * a, b.shape)), numpy=call("np.multiply"), c=c.infix("*"))
define("div", BINARY, _binary("float"), np.divide,
       vjp=lambda g, out, a, b: (u(g / b, a.shape), u(-g * out / b, b.shape)), numpy=call("np.divide"),
       c=c.infix("/"))
define("pow", BINARY, _binary("float"), np.power,
       vjp=lambda g, out, a, b: (u(g * b * a ** (b - 1), a.shape), u(g * out * ops.log(a), b.shape)),
       numpy=_numpy_pow, c=lambda d, a: f"{c.math('pow', d)}({c.math('daz', d)}({a[0]}), {c.math('daz', d)}({a[1]}))")
# NumPy's rule: NaN wins, and of two equal values (0 and -0) the second.
define("maximum", BINARY, _binary("numeric"), np.maximum, vjp=_extremum_rule(ops.greater),
       numpy=call("np.maximum"), c=lambda d, a: f"(({a[0]} > {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]})")
define("minimum", BINARY, _binary("numeric"), np.minimum, vjp=_extremum_rule(ops.less),
       numpy=call("np.minimum"), c=lambda d, a: f"(({a[0]} < {a[1]} || {a[0]} != {a[0]}) ? {a[0]} : {a[1]})")


# ---------------------------------------------------------------- comparisons

for _name, _allowed, _fn, _numpy, _symbol in [
    ("lt", "numeric", np.less, "np.less", "<"), ("le", "numeric", np.less_equal, "np.less_equal", "<="),
    ("gt", "numeric", np.greater, "np.greater", ">"), ("ge", "numeric", np.greater_equal, "np.greater_equal", ">="),
    ("eq", "any", np.equal, "np.equal", "=="), ("ne", "any", np.not_equal, "np.not_equal", "!="),
]:
    define(_name, COMPARE, _binary(_allowed, result=dtypes.BOOL), _fn, vjp=no_gradient, numpy=call(_numpy),
           c=c.infix(_symbol))


# ---------------------------------------------------------------- select

def _where(inputs: Sequence[Any], attrs: Mapping[str, Any]) -> tuple[Shape, str]:
    cond, a, b = inputs
    if cond.dtype != dtypes.BOOL:
        raise DTypeMismatch(f"the condition must be bool, got {cond.dtype}")
    return broadcast(cond.shape, a.shape, b.shape), common_dtype((a, b), "any")


define("where", SELECT, _where, np.where,
       vjp=lambda g, out, cond, a, b: (None, u(ops.where(cond, g, 0), a.shape), u(ops.where(cond, 0, g), b.shape)),
       numpy=call("k.where"), c=lambda d, a: f"({a[0]} ? {a[1]} : {a[2]})")
