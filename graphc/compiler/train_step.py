"""Building a train step: forward, gradients, the optimizer's update and the layers' state
updates as one :class:`~graphc.ir.program.Program` (and, over several ranks, the allreduce
that keeps the replicas equal)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from graphc import ops
from graphc.autodiff import grad
from graphc.composites import pack, unpack
from graphc.errors import GraphcError
from graphc.ir.graph import toposort
from graphc.ir.node import Node
from graphc.ir.program import Program, check_unique_names

if TYPE_CHECKING:
    from graphc.optim.base import Optimizer


def collect_state_updates(roots: list[Node]) -> dict[Node, Node]:
    """Updates that layers attached to the nodes they built (batch-norm running statistics)."""
    found: dict[Node, Node] = {}
    for node in toposort(roots):
        found.update(node.meta.get("updates", {}))
    return found


STOP_INPUT, STOP_OUTPUT = "stop_requested", "stops_requested"  # a data-parallel step's stop flag, in and out


def average_over_ranks(values: list[Node], weight: Node, totals: Sequence[Node] = ()) -> list[Node]:
    """The mean over ranks of each value weighted by the rank's ``weight``, Σ w·v / Σ w, as one
    allreduce (a sum) per dtype of the weighted values and the weight packed together.

    Weighted by each rank's number of rows, the mean of the ranks' gradients of
    their mean losses is the gradient of the mean loss of the whole batch, also
    when the ranks' shares differ by a row; ``totals`` ride along in the same
    collective and come back summed, after the averages (a stop flag: every rank
    learns after the same step that one was asked to stop).  A collective costs a latency per
    call besides its bandwidth, so a step of a float32 model makes one call,
    over its whole gradient vector and the new batch-norm statistics (a running
    average is linear in the batch statistic, so averaging the new values
    averages the statistics: the running averages stay equal on every rank,
    whatever statistics each rank normalized with).
    """
    groups: dict[str, list[int]] = {}
    for i, value in enumerate(values):
        groups.setdefault(value.dtype, []).append(i)
    averaged: list[Node] = list(values)
    summed: list[Node] = []
    for n, (dtype, indices) in enumerate(groups.items()):
        w = weight if weight.dtype == dtype else ops.cast(weight, dtype)
        riders = [t if t.dtype == dtype else ops.cast(t, dtype) for t in totals] if n == 0 else []
        weighted = [w * values[i] for i in indices] + [w] + riders
        parts = unpack(ops.allreduce(pack(weighted), "sum"), weighted)
        for i, part in zip(indices, parts):
            averaged[i] = part / parts[len(indices)]
        summed += parts[len(indices) + 1:]
    return averaged + summed


def batch_rows(loss: Node) -> Node:
    """The number of rows of the batch the loss reads: the batch size of its first input with a
    symbolic leading dimension (1 when every input has a static shape, so ranks weigh the same)."""
    batched = [n for n in toposort([loss]) if n.op == "input" and n.shape and isinstance(n.shape[0], str)]
    return ops.numel(batched[0], 0, dtype=loss.dtype) if batched else ops.constant(1.0, loss.dtype)


def training_program(loss: Node, optimizer: "Optimizer", extra_outputs: Optional[Mapping[str, Node]] = None,
                     name: str = "train_step", ranks: int = 1) -> Program:
    """Forward, gradients, optimizer update and state updates, as one program.

    For ``ranks`` > 1 processes, each computing the loss of its share of the batch,
    the packed gradient and the new running statistics are averaged over the ranks
    before the update, weighted by the ranks' numbers of rows (see
    :func:`average_over_ranks`), so every rank applies the same update and the
    replicas stay equal; the step also takes ``stop_requested`` (1 on a rank
    asked to stop, else 0) and returns ``stops_requested``, their sum, carried by
    the same collective, so the ranks stop after the same step.  The average is the gradient of the whole batch when
    the loss is a mean over the batch (graphc's default reduction); a loss
    summed over the batch gets the rows-weighted mean of the ranks' sums.
    """
    if loss.shape != ():
        raise GraphcError(f"the loss must be a scalar to train on, got shape {list(loss.shape)}")
    params = [n for n in toposort([loss]) if n.op == "param"]
    if not params:
        raise GraphcError("the loss does not depend on any gc.param: nothing to train")
    everything = toposort([loss, *(extra_outputs or {}).values()])
    for op in ("param", "state", "input"):
        check_unique_names([n for n in everything if n.op == op])
    if not (isinstance(ranks, int) and ranks >= 1):
        raise GraphcError(f"ranks must be an integer >= 1, got {ranks!r}")
    grads = grad(loss, params)
    state_updates = collect_state_updates([loss])
    gradient = pack(grads)
    outputs = {"loss": loss, **(extra_outputs or {})}
    if ranks > 1:
        stop = ops.input(STOP_INPUT, (), loss.dtype)
        gradient, *new_states, stops = average_over_ranks([gradient, *state_updates.values()], batch_rows(loss),
                                                          [stop])
        state_updates = dict(zip(state_updates, new_states))
        outputs[STOP_OUTPUT] = stops
    updates = optimizer.updates(params, gradient)
    updates.update(state_updates)
    return Program(name, outputs, updates, arenas=[params],
                   grads={f"d{p.name}": g for p, g in zip(params, grads)})
