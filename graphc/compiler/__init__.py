"""The compiler: from a user's graph to a running step.

:mod:`~graphc.compiler.frontend` is ``gc.compile``; :mod:`~graphc.compiler.train_step`
builds a train step's program; :mod:`~graphc.compiler.pipeline` lists every stage
from rewrites to binding, in order; :mod:`~graphc.compiler.step_cache` keeps compiled
steps by the structure of their program.
"""
from graphc.compiler.frontend import compile  # noqa: F401
