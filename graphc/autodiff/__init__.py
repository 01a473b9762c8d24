"""Symbolic reverse-mode differentiation: :func:`grad`, over each primitive's own rule."""
from graphc.autodiff.reverse import grad
from graphc.autodiff.rules import unbroadcast

__all__ = ["grad", "unbroadcast"]
