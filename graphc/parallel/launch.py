"""Joining the run a launcher (``mpirun -n K``) started: which rank this is, and its share of the cores.

A process started by ``mpirun`` finds the size of its job in the environment
(``OMPI_COMM_WORLD_SIZE`` from Open MPI, ``PMI_SIZE`` from MPICH's launcher);
one started any other way is a run of one, which needs neither mpi4py nor MPI.
"""
from __future__ import annotations

import os
from typing import Mapping

from graphc.errors import DistributedError
from graphc.parallel.communicator import Communicator

DEFAULT_TIMEOUT = 300.0  # seconds a collective may wait: long enough for rank 0's evaluation of a test set
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
_LOCAL_SIZE_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def launched_ranks(environ: Mapping[str, str] = os.environ) -> int:
    """How many processes the launcher started (1 without a launcher)."""
    for name in _SIZE_VARIABLES:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return 1


def world(environ: Mapping[str, str] = os.environ) -> Communicator:
    """The communicator of the run this process belongs to; for more than one rank, MPI's world,
    with its BLAS threads set to its share of the machine's cores."""
    if launched_ranks(environ) == 1:
        return Communicator()
    try:
        from graphc.parallel.mpi import MPICommunicator
        communicator = MPICommunicator(collective_timeout(environ))
    except ImportError:
        raise DistributedError(f"this process was started by an MPI launcher with {launched_ranks(environ)} ranks, "
                               f"but mpi4py is not installed; install it with pip install -e '.[mpi]'") from None
    share_cores(environ)
    return communicator


def collective_timeout(environ: Mapping[str, str] = os.environ) -> float:
    text = environ.get("GRAPHC_MPI_TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DistributedError(f"GRAPHC_MPI_TIMEOUT must be a number of seconds above 0, got {text!r}")
    return seconds


def threads_per_rank(environ: Mapping[str, str] = os.environ, cores: int | None = None) -> int:
    """The cores of this machine divided among the ranks the launcher placed on it (at least 1)."""
    local = next((int(environ[n]) for n in _LOCAL_SIZE_VARIABLES if environ.get(n, "").isdigit()), 1)
    return max(1, (cores or os.cpu_count() or 1) // max(local, 1))


def share_cores(environ: Mapping[str, str] = os.environ) -> None:
    """Limit BLAS to this rank's share of the cores, so K ranks on a machine do not run K × cores
    threads that spin on each other; a thread count the user set in the environment is kept."""
    if any(name in environ for name in _THREAD_VARIABLES):
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise DistributedError("threadpoolctl is needed to share the cores between ranks; install it with "
                               "pip install -e '.[mpi]', or set OPENBLAS_NUM_THREADS") from None
    threadpool_limits(threads_per_rank(environ), user_api="blas")
