"""Composite operations, written in the DSL from primitives.

They stay composites on purpose: the optimizer sees through them (so
``log(softmax(x))`` can be rewritten into a stable log-softmax) and their
gradients come from the primitives' rules, not from a second hand-written
formula that could disagree.  Reductions over the batch divide by the run-time
batch size, so the same graph serves every batch size.
"""
from __future__ import annotations

from typing import Literal as Choice, Sequence


from graphc import ops
from graphc.errors import DTypeError, ShapeError
from graphc.ir import dtypes
from graphc.ir.layer import mark_layer
from graphc.ir.node import Node, describe_failure
from graphc.ir.shapes import fmt, static_size

Reduction = Choice["mean", "sum"]


def logsumexp(x: Node, axis: int = -1, keepdims: bool = False) -> Node:
    # The shift by the max changes nothing mathematically, so its gradient is cut.
    shift = ops.stop_gradient(ops.max(x, axis, keepdims=True))
    out = ops.log(ops.sum(ops.exp(x - shift), axis, keepdims=True)) + shift
    return out if keepdims else ops.reshape(out, _drop_axis(x, axis))


def _drop_axis(x: Node, axis: int) -> tuple:
    axis %= x.ndim
    return x.shape[:axis] + x.shape[axis + 1:]


def softmax(x: Node, axis: int = -1) -> Node:
    e = ops.exp(x - ops.stop_gradient(ops.max(x, axis, keepdims=True)))
    return e / ops.sum(e, axis, keepdims=True)


def log_softmax(x: Node, axis: int = -1) -> Node:
    return x - logsumexp(x, axis, keepdims=True)


def _reduce_batch(per_example: Node, reduction: Reduction) -> Node:
    if reduction == "sum":
        return ops.sum(per_example)
    if reduction == "mean":
        return ops.mean(per_example)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def softmax_cross_entropy(logits: Node, labels: Node, reduction: Reduction = "mean") -> Node:
    """E = -Σ_n Σ_k t_nk log softmax(a)_nk, averaged over the batch by default.

    ``labels`` are integer class indices of shape (N,) or targets of the logits'
    shape (one-hot or probabilities).
    """
    targets = _targets(logits, labels)
    return _as_loss(_reduce_batch(-ops.sum(targets * log_softmax(logits), axis=-1), reduction), logits)


def _targets(logits: Node, labels: Node) -> Node:
    if dtypes.is_int(labels.dtype):
        if labels.shape != logits.shape[:-1]:
            raise ShapeError(describe_failure("softmax_cross_entropy", (logits, labels),
                                              f"integer labels must have shape {fmt(logits.shape[:-1])}"))
        return ops.one_hot(labels, logits.shape[-1], logits.dtype)
    if labels.shape != logits.shape or labels.dtype != logits.dtype:
        raise (ShapeError if labels.shape != logits.shape else DTypeError)(describe_failure(
            "softmax_cross_entropy", (logits, labels),
            "targets must be integer labels or match the logits' shape and dtype"))
    return labels


def sigmoid_binary_cross_entropy(logits: Node, targets: Node, reduction: Reduction = "mean") -> Node:
    """-[t log σ(a) + (1 - t) log(1 - σ(a))], in the form that cannot overflow:
    max(a, 0) - a t + log(1 + exp(-|a|))."""
    _same_shape("sigmoid_binary_cross_entropy", logits, targets)
    per = ops.relu(logits) - logits * targets + ops.log(1.0 + ops.exp(-ops.abs(logits)))
    return _as_loss(_reduce_batch(_sum_features(per), reduction), logits)


def mse(prediction: Node, target: Node, reduction: Reduction = "mean") -> Node:
    """Σ_k (t_k - v_k)², summed over the batch ('sum', the slide's E) or averaged over it ('mean').

    Positive, as it must be: the slide's leading minus sign is a typo.
    """
    _same_shape("mse", prediction, target)
    diff = target - prediction
    return _as_loss(_reduce_batch(_sum_features(diff * diff), reduction), prediction)


def _as_loss(loss: Node, prediction: Node) -> Node:
    """Mark the loss's nodes (down to the model's output) as one layer, ``loss``: pictures frame
    them like a model's layers, and their gradient nodes with them."""
    mark_layer("loss", loss, prediction)
    return loss


def _sum_features(x: Node) -> Node:
    """Per-example totals: sum every axis but the first (the batch)."""
    return ops.sum(x, axis=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def _same_shape(op: str, a: Node, b: Node) -> None:
    if a.shape != b.shape:
        raise ShapeError(describe_failure(op, (a, b), "prediction and target shapes differ"))


def pack(nodes: Sequence[Node]) -> Node:
    """The nodes flattened and concatenated; a packed vector among them contributes its pieces,
    so packing packed vectors again makes one concatenation the memory plan can fill in place."""
    flat = [ops.reshape(n, (-1,)) if n.ndim != 1 else n for n in nodes]
    pieces = [piece for f in flat for piece in (f.inputs if f.op == "concat" else (f,))]
    return pieces[0] if len(pieces) == 1 else ops.concat(pieces)


def unpack(vector: Node, like: Sequence[Node]) -> list[Node]:
    """The pieces of a packed vector, each shaped like its node of ``like``: what :func:`pack` undoes."""
    out, offset = [], 0
    for node in like:
        size = static_size(node.shape)
        piece = vector if len(like) == 1 else ops.slice(vector, offset, offset + size)
        out.append(piece if piece.shape == node.shape else ops.reshape(piece, node.shape))
        offset += size
    return out
