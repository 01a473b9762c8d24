"""Data parallelism: the communicator collectives run on, and joining a run started by ``mpirun``."""
from graphc.parallel.communicator import Communicator, active, use

__all__ = ["Communicator", "active", "use"]
