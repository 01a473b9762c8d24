"""Tools for property-testing models built with graphc: gradient checks and Hypothesis strategies.

Users test their own layers the way graphc tests its primitives: the symbolic
gradient against finite differences, on graphs and values drawn by Hypothesis.
``strategies`` imports Hypothesis, so it is imported on demand, not here.
"""
from graphc.testing.gradcheck import check_grads, numeric_grad

__all__ = ["check_grads", "numeric_grad"]
