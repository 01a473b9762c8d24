"""The primitive ops, each defined once with all its rules.

One module per family; each op's definition says, in one place, its
shape/dtype rule, its NumPy reference meaning, its reverse-mode rule (in the
DSL), its NumPy lowering, its C expression (shared by the fused C loops and the
CUDA kernels) and how the CUDA backend lowers it when it is not elementwise.
Importing this package registers them all in :data:`graphc.ir.registry.PRIMITIVES`;
the DSL (:mod:`graphc.ops`) does so, so any use of graphc has them.
"""
from graphc.primitives import collective, elementwise, layout, linalg, misc, random, reductions  # noqa: F401
