"""Tools for property-testing models built with graphc: gradient checks and Hypothesis strategies.

Users test their own layers the way graphc tests its primitives: the symbolic
gradient against finite differences, on graphs and values drawn by Hypothesis;
students check their own backpropagation against graphc's (``check_backprop``).
``strategies`` imports Hypothesis, so it is imported on demand, not here.
"""
from graphc.testing.backprop import BackpropMismatch, BackpropReport, check_backprop
from graphc.testing.gradcheck import check_grads, numeric_grad

__all__ = ["BackpropMismatch", "BackpropReport", "check_backprop", "check_grads", "numeric_grad"]
