"""Stabilization: rewrite expressions that overflow or lose precision into safe forms.

With softmax written as exp(x − max) / Σ exp(x − max), the rules below turn
log(softmax(x)) into (x − max) − log Σ exp(x − max) — the stable log-softmax —
log(sigmoid(x)) into −softplus(−x),
and simplify the cross-entropy gradient down to (softmax − onehot)/N, because
a one-hot row sums to one.
"""
from __future__ import annotations

from typing import Optional

from graphc import ops
from graphc.ir.node import Node
from graphc.passes.rewrite import matches


@matches("log")
def log_of_exp(n: Node) -> Optional[Node]:
    return n.inputs[0].inputs[0] if n.op == "log" and n.inputs[0].op == "exp" else None


@matches("log")
def log_of_exp_ratio(n: Node) -> Optional[Node]:
    """log(exp(u) / d) → u − log(d): never forms the ratio that underflows to 0."""
    if n.op == "log" and n.inputs[0].op == "div" and n.inputs[0].inputs[0].op == "exp":
        u, d = n.inputs[0].inputs[0].inputs[0], n.inputs[0].inputs[1]
        result = ops.sub(u, ops.log(d))
        return result if result.shape == n.shape else None
    return None


@matches("log")
def log_of_sigmoid(n: Node) -> Optional[Node]:
    """log σ(x) → min(x, 0) − log(1 + exp(−|x|)), i.e. −softplus(−x): finite where σ(x) underflows
    to 0 (x below −745 in float64, −104 in float32) and exact in its relative error below 0."""
    if n.op == "log" and n.inputs[0].op == "sigmoid":
        x = n.inputs[0].inputs[0]
        return ops.minimum(x, 0) - ops.log(1 + ops.exp(-ops.abs(x)))
    return None


@matches("sum")
def one_hot_rows_sum_to_one(n: Node) -> Optional[Node]:
    """Σ_k onehot(y)_k = 1 (labels are assumed in range, as cross-entropy requires)."""
    if n.op == "sum" and n.inputs[0].op == "one_hot" and n.attrs["axes"] == (n.inputs[0].ndim - 1,):
        return ops.broadcast_to(ops.constant(1, n.dtype), n.shape)
    return None


RULES = [log_of_exp, log_of_exp_ratio, log_of_sigmoid, one_hot_rows_sum_to_one]
