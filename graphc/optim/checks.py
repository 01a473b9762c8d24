"""Hyperparameter checks shared by optimizers and schedules.

A bad hyperparameter (a negative learning rate, β₂ = 1) does not fail at
construction in most libraries: it trains to NaN an hour later.  Here each
field declares its valid range next to its default, and the dataclass checks
every field once, at construction, with a message naming the field.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, field, fields
from typing import Any, Callable, Optional

from graphc.errors import GraphcError

Check = Callable[[Any], Optional[str]]


class OptimizerError(GraphcError, ValueError):
    """An optimizer or learning-rate schedule given a name or a hyperparameter it cannot use."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_number(value: Any) -> Optional[str]:
    return None if _is_number(value) and value > 0 else f"must be a positive number, got {value!r}"


def nonnegative_number(value: Any) -> Optional[str]:
    return None if _is_number(value) and value >= 0 else f"must be a number >= 0, got {value!r}"


def unit_interval(value: Any) -> Optional[str]:
    """A decay rate: the fraction of the old average kept at each step."""
    return None if _is_number(value) and 0 <= value < 1 else f"must lie in [0, 1), got {value!r}"


def positive_integer(value: Any) -> Optional[str]:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return None if ok else f"must be an integer >= 1, got {value!r}"


def checked(check: Check, default: Any = MISSING) -> Any:
    """A dataclass field whose value :func:`check_fields` validates; required without a default."""
    return field(default=default, metadata={"check": check})


def decay_rate(default: float) -> Any:
    return checked(unit_interval, default)


def positive(default: Any = MISSING) -> Any:
    return checked(positive_number, default)


def check_fields(obj: Any) -> None:
    """Raise :class:`OptimizerError` for the first field of ``obj`` outside its declared range."""
    for f in fields(obj):
        check = f.metadata.get("check")
        complaint = check(getattr(obj, f.name)) if check else None
        if complaint:
            raise OptimizerError(f"{type(obj).__name__}: {f.name} {complaint}")
