"""Batch normalization (Ioffe & Szegedy, 2015), Algorithms 1 and 2, written in the DSL.

It stays a composite of primitives, so its gradient comes from the primitives'
rules: back-propagation runs through the batch mean and variance, as the
paper's derivation requires.  The running averages are runtime state; their
new values are attached to the returned node as updates, which makes them
outputs of the compiled train step rather than a side effect hidden in a layer.

The running-average branch reads the batch statistics through
``stop_gradient``.  The loss never depends on that branch, so this changes no
gradient the train step computes; it records that the running statistics are
bookkeeping, not a differentiable function of the weights, and costs nothing
(``stop_gradient`` lowers to a view of the same buffer).
"""
from __future__ import annotations

from typing import Optional

from graphc import init as initializers
from graphc import ops
from graphc.errors import DTypeError, GraphcError, ShapeError
from graphc.ir import dtypes
from graphc.ir.node import Node
from graphc.ir.shapes import fmt
from graphc.nn.module import Module, attach_updates
from graphc.composites import pack, unpack


class BatchNorm(Module):
    """Normalize each feature over the batch, then scale by γ and shift by β.

    ``training=True`` (Algorithm 1) normalizes with the batch mean and biased
    batch variance and attaches updates of the running averages
    ``{name}.mean`` and ``{name}.var``: ``running ← (1 − momentum)·running +
    momentum·batch``, where the variance's batch statistic is the unbiased one
    (σ²_B·N/(N−1), Algorithm 2).  A batch of one carries no variance
    information, so it leaves the running variance unchanged.
    ``training=False`` (Algorithm 2) normalizes with the running averages and
    updates nothing.

    The input is (N, features); for inputs of higher rank the statistics are
    taken per feature (last axis) over every other axis.

    In a data-parallel run each rank normalizes with the statistics of its own
    share of the batch by default, as PyTorch's DistributedDataParallel does;
    ``sync=True`` takes them over the whole batch, across the ranks (like
    PyTorch's SyncBatchNorm), at the cost of two collectives per layer in the
    forward pass and two in the backward.  Either way the running averages are
    averaged over the ranks with the gradient (see
    :func:`graphc.compiler.train_step.average_over_ranks`), so they stay equal on every
    rank.  In one process the two are the same.
    """

    kind = "batchnorm"

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, name: Optional[str] = None, sync: bool = False):
        super().__init__(name)
        if not 0.0 < momentum <= 1.0:
            raise GraphcError(f"BatchNorm momentum must be in (0, 1], got {momentum}")
        if eps <= 0.0:
            raise GraphcError(f"BatchNorm eps must be positive, got {eps}")
        self.momentum = momentum
        self.eps = eps
        self.sync = sync

    def forward(self, x: Node, training: bool) -> Node:
        self._check_input(x)
        gamma, beta, running_mean, running_var = self._variables(x)
        if not training:
            return self._scale_shift(x - running_mean, running_var, gamma, beta)
        axes = tuple(range(x.ndim - 1))
        count, batch_mean, centered, batch_var = self._statistics(x, axes)
        y = self._scale_shift(centered, batch_var, gamma, beta)
        return attach_updates(y, self._running_updates(count, batch_mean, batch_var))

    def _statistics(self, x: Node, axes: tuple[int, ...]) -> tuple[Node, Node, Node, Node]:
        """The number of rows, their mean, x centered on it, and the biased variance: of this
        rank's rows, or with ``sync`` of every rank's (sums and count in one allreduce, then the
        squared deviations in another)."""
        if not self.sync:
            batch_mean = ops.mean(x, axis=axes)
            centered = x - batch_mean
            return ops.numel(x, axes), batch_mean, centered, ops.mean(centered * centered, axis=axes)
        local = [ops.sum(x, axes), ops.numel(x, axes)]
        total, count = unpack(ops.allreduce(pack(local), "sum"), local)
        batch_mean = total / count
        centered = x - batch_mean
        return count, batch_mean, centered, ops.allreduce(ops.sum(centered * centered, axes), "sum") / count

    def _check_input(self, x: Node) -> None:
        if x.ndim < 2 or not isinstance(x.shape[-1], int):
            raise ShapeError(f"{self.name}: batch norm expects (N, features) with a static number of "
                             f"features, got {fmt(x.shape)}")
        if not dtypes.is_float(x.dtype):
            raise DTypeError(f"{self.name}: batch norm expects a float input, got {x.dtype}; "
                             f"cast it with gc.cast(x, 'float32')")

    def _variables(self, x: Node) -> tuple[Node, Node, Node, Node]:
        """γ, β, running mean and running variance, made on the first call."""
        if not self._params:
            features = (x.shape[-1],)
            self._params = [ops.param(f"{self.name}.gamma", features, init=initializers.ones, dtype=x.dtype),
                            ops.param(f"{self.name}.beta", features, init=initializers.zeros, dtype=x.dtype)]
            self._state = [ops.state(f"{self.name}.mean", features, init=initializers.zeros, dtype=x.dtype),
                           ops.state(f"{self.name}.var", features, init=initializers.ones, dtype=x.dtype)]
        gamma, beta = self._params
        running_mean, running_var = self._state
        return gamma, beta, running_mean, running_var

    def _scale_shift(self, centered: Node, var: Node, gamma: Node, beta: Node) -> Node:
        """y = γ x̂ + β with x̂ = (x − μ) / sqrt(σ² + ε)."""
        return gamma * (centered / ops.sqrt(var + self.eps)) + beta

    def _running_updates(self, count: Node, batch_mean: Node, batch_var: Node) -> dict[Node, Node]:
        running_mean, running_var = self._state
        unbiased_var = ops.stop_gradient(batch_var) * (count / ops.maximum(count - 1.0, 1.0))
        new_var = self._blend(running_var, unbiased_var)
        return {running_mean: self._blend(running_mean, ops.stop_gradient(batch_mean)),
                running_var: ops.where(count > 1.0, new_var, running_var)}

    def _blend(self, running: Node, batch_statistic: Node) -> Node:
        return (1.0 - self.momentum) * running + self.momentum * batch_statistic

    def describe(self) -> str:
        return f"batchnorm(momentum={self.momentum:g}{', sync' if self.sync else ''})"
