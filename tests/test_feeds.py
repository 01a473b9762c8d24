"""A fed value that does not fit its input is refused with one message naming the input, what it
expects and what it got — the same from the compiled step as from the reference interpreter."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import graphc as gc
from graphc.errors import FeedError


def _both(feeds: dict[str, Any]) -> list[str]:
    """The messages of the compiled step and of the interpreter for these feeds."""
    x, y = gc.input("x", (None, 3), "float32"), gc.input("y", (None, 3), "float32")
    out = gc.sum(x * y, axis=1)
    messages = []
    for run in (lambda: gc.compile(out)(**feeds), lambda: gc.evaluate([out], feeds)):
        with pytest.raises(FeedError) as error:
            run()
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    return messages


GOOD = np.ones((2, 3), np.float32)


@pytest.mark.parametrize("bad, expected", [
    ([[1.0, 2.0, 3.0]], "input 'y' expects f32[N,3], got list; pass a NumPy array"),
    (np.ones((2, 3, 1), np.float32), "input 'y' expects f32[N,3], got an array of shape (2, 3, 1)"),
    (np.ones((2, 3), np.float64), "input 'y' expects f32[N,3], got dtype float64; convert with .astype('float32')"),
    (np.ones((2, 4), np.float32), "input 'y' expects f32[N,3], got an array of shape (2, 4)"),
    (np.ones((5, 3), np.float32), "input 'y' expects f32[N,3], got an array of shape (5, 3), "
                                  "but another input set N=2"),
])
def test_a_value_that_does_not_fit_its_input_is_refused_by_every_path(bad: Any, expected: str) -> None:
    for message in _both({"x": GOOD, "y": bad}):
        assert expected in message


def test_a_dtype_object_and_a_shape_that_are_not_an_array_are_refused() -> None:
    class ShapeOnly:
        shape = (2, 3)
    for message in _both({"x": GOOD, "y": ShapeOnly()}):
        assert "got ShapeOnly; pass a NumPy array" in message


def test_values_that_fit_give_the_sizes_they_share() -> None:
    x, y = gc.input("x", (None, 3), "float32"), gc.input("y", (None, 3), "float32")
    f = gc.compile(gc.sum(x * y))
    for rows in (2, 5):
        value = np.ones((rows, 3), np.float32)
        assert f(x=value, y=value) == pytest.approx(3.0 * rows)
