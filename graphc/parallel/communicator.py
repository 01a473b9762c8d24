"""The processes a train step runs across, and the one a step is running in now.

A data-parallel step calls collectives (the gradient allreduce, the
synchronized batch statistics) on whatever communicator is active when it
runs, not on one fixed at compile time: compiled code is cached and shared,
and the engine (MPI on CPUs, NCCL on GPUs) is the launcher's business, not
the graph's.  The base :class:`Communicator` is a single process, where every
collective is the identity; it is active unless a launcher installs another
with :func:`use`.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import numpy as np

REDUCTIONS = ("mean", "sum")  # what an allreduce can compute over the ranks


class Communicator:
    """One process: ``size`` 1, ``rank`` 0, every collective returns its operand."""

    size = 1
    rank = 0

    def allreduce(self, x: np.ndarray, reduction: str = "mean", out: Optional[np.ndarray] = None) -> np.ndarray:
        """The elementwise ``reduction`` (``"mean"`` or ``"sum"``) of ``x`` over the ranks, into ``out``
        (which may be ``x``)."""
        if out is None:
            return np.array(x, copy=True)
        if out is not x:
            np.copyto(out, x)
        return out

    def broadcast(self, array: np.ndarray) -> None:
        """Overwrite ``array`` on every rank with rank 0's (in place)."""

    def allgather(self, values: np.ndarray) -> np.ndarray:
        """The 1-D ``values`` of every rank, stacked by rank into a (size, len) array."""
        return np.asarray(values)[None]

    def share(self, value: Any) -> Any:
        """Rank 0's JSON-able ``value``, on every rank."""
        return value

    def abort(self, status: int) -> None:
        """End every rank of the run now (used after an error on one rank, so no other waits for it)."""


_active: Communicator = Communicator()


def active() -> Communicator:
    """The communicator collectives run on now."""
    return _active


@contextmanager
def use(communicator: Communicator) -> Iterator[Communicator]:
    """Make ``communicator`` the active one inside the ``with`` block."""
    global _active
    previous, _active = _active, communicator
    try:
        yield communicator
    finally:
        _active = previous


# The rows of a global batch this process computes, while a data-parallel step runs (None otherwise).
_rows: contextvars.ContextVar[Optional[tuple[int, int]]] = contextvars.ContextVar("graphc_batch_rows", default=None)


@contextmanager
def batch_rows(total: int, start: int) -> Iterator[None]:
    """Inside the block this process computes rows ``start``, ... of a global batch of ``total`` rows.

    A random op over the batch then draws the numbers of the whole batch, as one process would, and
    keeps this process's rows: K ranks draw, row for row, what one process draws (each rank pays for
    the whole batch's draws; the generators of all ranks stay in step)."""
    token = _rows.set((total, start))
    try:
        yield
    finally:
        _rows.reset(token)


def batch_window() -> Optional[tuple[int, int]]:
    """(total rows, first row) of the global batch this process computes now, if it computes a share."""
    return _rows.get()
