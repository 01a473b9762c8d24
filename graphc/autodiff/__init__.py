"""Symbolic reverse-mode differentiation: :func:`grad` and its rule table."""
from graphc.autodiff.reverse import grad
from graphc.autodiff.rules import VJP, unbroadcast

__all__ = ["grad", "VJP", "unbroadcast"]
