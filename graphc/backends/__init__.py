"""Code generators, looked up by name.

Each backend module is imported only when asked for, so ``import graphc`` never
touches a GPU library; the CUDA backend imports CuPy only when a step is bound.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from graphc.errors import GraphcError

if TYPE_CHECKING:
    from graphc.backends.backend import Backend

_MODULES = {"numpy": ("graphc.backends.cpu", "BACKEND"), "cupy": ("graphc.backends.cuda", "BACKEND"),
            "cuda-emulator": ("graphc.backends.cuda", "EMULATOR")}
NAMES = tuple(_MODULES)


def get(name: str) -> "Backend":
    """The backend called ``name``; a clear error naming the choices otherwise."""
    entry = _MODULES.get(name)
    if entry is None:
        raise GraphcError(f"unknown backend {name!r}; available: {', '.join(NAMES)}")
    module, attribute = entry
    return getattr(importlib.import_module(module), attribute)
