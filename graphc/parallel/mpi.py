"""The CPU engine: collectives over MPI (mpi4py), each bounded by a timeout.

Every collective is started non-blocking and waited for with a deadline, so a
rank whose partner died or hung raises :class:`DistributedError` after
``timeout`` seconds instead of waiting forever.  Open MPI itself ends the job
when a rank exits abnormally; the deadline covers what it cannot see (a rank
stopped, or stuck outside MPI) and any MPI whose launcher does not.
"""
from __future__ import annotations

import json
import time
from typing import Any, Optional

import numpy as np

from graphc.errors import DistributedError
from graphc.parallel.communicator import Communicator

_LONGEST_NAP = 1e-3  # seconds between two polls of a pending collective, at most


def encode(value: Any) -> np.ndarray:
    """A JSON-able value as bytes in a uint8 array, the form buffer collectives carry."""
    return np.frombuffer(json.dumps(value).encode(), dtype=np.uint8).copy()


def decode(data: np.ndarray) -> Any:
    return json.loads(data.tobytes().decode())


class MPICommunicator(Communicator):
    """The ranks of an MPI communicator (``MPI.COMM_WORLD`` by default)."""

    def __init__(self, timeout: float, comm: Any = None):
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.size = self.comm.Get_size()
        self.rank = self.comm.Get_rank()
        self.timeout = timeout

    def allreduce(self, x: np.ndarray, reduction: str = "mean", out: Optional[np.ndarray] = None) -> np.ndarray:
        send = np.ascontiguousarray(x)
        if out is None:
            out = np.empty_like(send)
        self._wait(self.comm.Iallreduce(self._mpi.IN_PLACE if out is send else send, out, op=self._mpi.SUM),
                   f"the allreduce of {out.size} {out.dtype} values")
        return np.multiply(out, out.dtype.type(1.0 / self.size), out=out) if reduction == "mean" else out

    def broadcast(self, array: np.ndarray) -> None:
        self._wait(self.comm.Ibcast(array, root=0), f"the broadcast of {array.size} {array.dtype} values")

    def allgather(self, values: np.ndarray) -> np.ndarray:
        send = np.ascontiguousarray(values)
        out = np.empty((self.size,) + send.shape, send.dtype)
        self._wait(self.comm.Iallgather(send, out), "the exchange of parameter checksums")
        return out

    def share(self, value: Any) -> Any:
        data = encode(value) if self.rank == 0 else np.empty(0, np.uint8)
        length = np.array([data.size], dtype=np.int64)
        self.broadcast(length)
        if self.rank != 0:
            data = np.empty(int(length[0]), np.uint8)
        self.broadcast(data)
        return decode(data)

    def abort(self, status: int) -> None:
        self.comm.Abort(status)

    def _wait(self, request: Any, what: str) -> None:
        """Poll ``request`` until it completes, napping ever longer (up to 1 ms) between polls."""
        deadline = time.monotonic() + self.timeout
        nap = 0.0
        while not request.Test():
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"rank {self.rank} of {self.size} waited {self.timeout:g} s for {what}: another rank has "
                    f"died or hung; the last checkpoint resumes the run with --resume "
                    f"(GRAPHC_MPI_TIMEOUT sets the wait)")
            time.sleep(nap)
            nap = min(nap * 2 or 1e-5, _LONGEST_NAP)
