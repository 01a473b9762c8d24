"""What every optimizer shares: the packed parameter vector, the update protocol and the options.

An optimizer sees *one* vector θ holding every parameter and *one* gradient
vector g, and writes its rule once, as a handful of whole-vector IR ops.  The
packing (concat of flattened parameters, slices back out) is part of the
program; the memory planner turns it into a shared arena, so the packing costs
nothing at run time and the update is a few passes over one buffer.

The options every optimizer accepts (a learning-rate schedule, gradient
clipping, gradient noise, decoupled weight decay) act on g before the rule or
on θ after it, so they are written here once and no rule knows about them.
Hyperparameters are dataclass fields with their valid range declared beside
the default (see :mod:`graphc.optim.checks`), so a subclass is its fields and
its rule.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from graphc import ops
from graphc.composites import pack, unpack
from graphc.init import zeros
from graphc.ir.node import Node
from graphc.ir.shapes import static_size
from graphc.optim.checks import check_fields, checked, nonnegative_number, positive_number
from graphc.optim.schedules import LearningRate, Schedule

Slots = dict[Node, Node]


def flush_denormals(x: Node) -> Node:
    """``x`` with subnormal entries replaced by zero; every other value, NaN included, unchanged.

    Moments of entries whose gradient is exactly zero (dead ReLUs, always-zero
    input pixels) decay geometrically into the subnormal range, where each
    CPU operation on them is up to 30 times slower.  Every state vector that
    decays or accumulates goes through this before it is used or stored.
    """
    tiny = float(np.finfo(x.dtype).tiny)
    return ops.where(ops.abs(x) < tiny, 0.0, x)


def moving_average(old: Node, x: Node, decay: float) -> Node:
    """decay · old + (1 − decay) · x, the running mean E[x] of Adam, RMSprop and Adadelta, flushed."""
    return flush_denormals(decay * old + (1.0 - decay) * x)


def _check_noise(value: object) -> Optional[str]:
    if value is None:
        return None
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and not any(nonnegative_number(v) for v in value))
    return None if ok else f"must be None or a pair (eta, gamma) of numbers >= 0, got {value!r}"


def _check_clip(value: object) -> Optional[str]:
    return None if value is None else positive_number(value)


def _check_lr(value: object) -> Optional[str]:
    if isinstance(value, Schedule):
        return None
    complaint = positive_number(value)
    return complaint and f"{complaint}; pass a float or a schedule (StepDecay, Exponential, Cosine)"


def learning_rate(default: float) -> Any:
    """The ``lr`` field, with the default a subclass chooses."""
    return checked(_check_lr, default)


@dataclass
class Optimizer:
    """Subclasses declare their hyperparameters as fields and define :meth:`rule`.

    Shared by every optimizer: ``lr`` (the first argument), a float or a schedule of
    the step count (:mod:`graphc.optim.schedules`), and the keyword-only options

    * ``clip_norm=c``: g ← g · c / max(‖g‖, c), that is g · min(1, c/‖g‖): rescaled
      to norm exactly c when its norm exceeds c, untouched otherwise (no ε is
      needed against a zero norm, since c > 0).
    * ``grad_noise=(η, γ)``: g ← g + N(0, η / (1 + k)^γ) after k completed steps
      (Neelakantan et al. 2015; they use γ = 0.55), added before clipping, so the
      clipped norm bound holds for the gradient actually applied.
    * ``weight_decay=λ``: θ ← θ − lr · λ · θ on weight matrices (parameters with
      ndim ≥ 2), after the rule and from the θ the rule started from, decoupled
      from the gradient (Loshchilov & Hutter's AdamW).
    """

    name: ClassVar[str] = "optimizer"

    lr: LearningRate = learning_rate(0.01)
    _: KW_ONLY
    clip_norm: Optional[float] = checked(_check_clip, None)
    grad_noise: Optional[tuple[float, float]] = checked(_check_noise, None)
    weight_decay: float = checked(nonnegative_number, 0.0)

    def __post_init__(self) -> None:
        check_fields(self)

    # ---- what a subclass writes -----------------------------------------------
    def rule(self, theta: Node, g: Node, t: Node, lr: Node) -> tuple[Node, Slots]:
        """The new θ and the new values of this optimizer's state vectors, at step ``t`` (1, 2, ...)
        with learning rate ``lr`` (scalars of θ's dtype)."""
        raise NotImplementedError

    def slot(self, like: Node, slot: str) -> Node:
        """A zero-initialized state vector shaped like θ (a moment, an accumulator)."""
        return ops.state(f"{self.name}.{slot}", like.shape, init=zeros, dtype=like.dtype)

    # ---- the train step's update ------------------------------------------------
    def updates(self, params: Sequence[Node], g: Node) -> dict[Node, Node]:
        """New values of ``params`` and of this optimizer's state, given the packed gradient ``g``
        (``pack`` of the parameters' gradients, averaged over ranks in a data-parallel step)."""
        theta = pack(params)
        # float64 counts exactly far past any run; float32 would stop at 2^24 steps.
        count = ops.state(f"{self.name}.step", (), init=zeros, dtype="float64")
        lr = self._learning_rate(count, theta.dtype)
        g = self._clipped(self._noisy(g, count))
        new_theta, slots = self.rule(theta, g, ops.cast(count + 1.0, theta.dtype), lr)
        new_theta = self._decayed(new_theta, theta, params, lr)
        updates: dict[Node, Node] = dict(zip(params, unpack(new_theta, params)))
        updates.update(slots)
        updates[count] = count + 1.0
        return updates

    def _learning_rate(self, count: Node, dtype: str) -> Node:
        if isinstance(self.lr, Schedule):
            return ops.cast(self.lr(count), dtype)
        return ops.constant(float(self.lr), dtype)

    def _noisy(self, g: Node, count: Node) -> Node:
        if self.grad_noise is None:
            return g
        eta, gamma = self.grad_noise
        std = ops.sqrt(float(eta) / (count + 1.0) ** float(gamma))
        return g + ops.cast(std, g.dtype) * ops.normal(g.shape, g.dtype)

    def _clipped(self, g: Node) -> Node:
        if self.clip_norm is None:
            return g
        norm = ops.sqrt(ops.sum(g * g))
        c = float(self.clip_norm)
        return g * (c / ops.maximum(norm, c))

    def _decayed(self, new_theta: Node, theta: Node, params: Sequence[Node], lr: Node) -> Node:
        rates = self._decay_rates(params, theta.dtype)
        return new_theta if rates is None else new_theta - lr * rates * theta

    def _decay_rates(self, params: Sequence[Node], dtype: str) -> Optional[Node]:
        """λ on the entries of θ that belong to weight matrices, 0 elsewhere (a scalar when uniform)."""
        is_weight = [p.ndim >= 2 for p in params]
        if self.weight_decay == 0 or not any(is_weight):
            return None
        if all(is_weight):
            return ops.constant(float(self.weight_decay), dtype)
        mask = np.concatenate([np.full(static_size(p.shape), float(w)) for p, w in zip(params, is_weight)])
        return ops.constant(self.weight_decay * mask, dtype)

