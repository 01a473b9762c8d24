"""Errors a user can act on.

Every error graphc raises on purpose derives from :class:`GraphcError`, so the
CLI can print it as one clean message instead of a traceback from deep inside
the compiler.  Graph-building errors carry the user's own source line (see
:mod:`graphc.ir.site`), because the line that *built* a bad node is the one the
user has to fix, not the line that later evaluated it.
"""
from __future__ import annotations


class GraphcError(Exception):
    """Base class of all errors raised deliberately by graphc."""


class ShapeError(GraphcError, ValueError):
    """Operands whose shapes do not fit the op."""


class DTypeError(GraphcError, TypeError):
    """Operands whose dtypes do not fit the op."""


class FeedError(GraphcError, ValueError):
    """A value given to a compiled step or the interpreter does not match its input."""


class DataError(GraphcError, ValueError):
    """A data file that is missing, truncated or not what it claims to be."""


class CheckpointError(GraphcError, ValueError):
    """A checkpoint that cannot be restored into the current model."""


class DistributedError(GraphcError, RuntimeError):
    """A data-parallel run whose processes can no longer work together (a rank died, hung or diverged)."""
