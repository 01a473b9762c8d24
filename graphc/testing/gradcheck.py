"""Gradient checking against central finite differences, for property tests of models.

Both sides run on the reference interpreter: the symbolic gradient that
:func:`graphc.grad` builds, and central differences of the forward graph.  So a
failure points at a gradient rule (or at the model's own non-smoothness), never
at the compiler.  The check insists on float64: a float32 difference quotient
with a step small enough to be accurate is mostly rounding noise.

A non-scalar output ``f`` is checked through one vector-Jacobian product with a
fixed random cotangent ``v``: the gradient of ``<v, f(x)>``.  That is exactly
what reverse mode computes, and it exercises every output component at once.

The error of each ``wrt`` node is measured norm-wise,

    error = ||a - n|| / max(||a||, ||n||, floor),

where ``a`` is the symbolic and ``n`` the numeric gradient, so a component that
is near zero cannot blow the error up the way an element-wise relative error
would.  The floor is the gradient norm below which a relative error stops being
measurable.  Rounding in the two evaluations leaves an error of about ``u·S``
in their difference, with ``u`` the float64 unit roundoff and ``S`` the scale of
the values computed: the total magnitude ``M`` of the projected output's terms,
and at least 1, since intermediate values of order one round too even where
the output is near zero.  That is ``u·S / eps`` in each numeric component and
``sqrt(k)`` times that over ``k`` components, times a safety factor of
``ROUNDING_ULPS``.  The floor is this noise divided by ``rtol``: a gradient that
is zero up to rounding passes, while any discrepancy above the noise still
fails.  Values far below order one would need a smaller floor than this one.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from graphc import ops
from graphc.autodiff import grad
from graphc.errors import DTypeError, FeedError, GraphcError
from graphc.interpreter import evaluate
from graphc.ir.node import Node
from graphc.ir.printing import type_str
from graphc.ir.registry import is_fed, is_named_leaf

FLOAT64 = "float64"
ROUNDING_ULPS = 8
COTANGENT_NAME = "check_grads.cotangent"
_UNIT_ROUNDOFF = float(np.finfo(np.float64).eps)


def numeric_grad(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                 cotangent: Optional[np.ndarray] = None, eps: float = 1e-6) -> np.ndarray:
    """Central-difference estimate of ``d <cotangent, f(x)> / dx``, one component per element of ``x``.

    The two outputs are subtracted before the projection, so output components
    that do not depend on the perturbed element cancel exactly instead of
    adding rounding noise.  ``cotangent`` defaults to ones (a plain sum).
    """
    x = np.asarray(x, dtype=np.float64)
    estimate = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        difference = np.asarray(f(plus)) - np.asarray(f(minus))
        weights = np.ones_like(difference) if cotangent is None else cotangent
        estimate[index] = np.sum(weights * difference) / (2 * eps)
    return estimate


def check_grads(output: Node, feeds: Mapping[str, Any], wrt: Sequence[Node], *,
                variables: Optional[Mapping[str, Any]] = None, eps: float = 1e-6, rtol: float = 1e-6,
                seed: int = 0) -> dict[str, float]:
    """Check ``graphc.grad(output, wrt)`` against central differences; return the error of each wrt node by name.

    ``wrt`` holds input nodes (valued in ``feeds``, by name) and parameter or
    state nodes (valued in ``variables``, by name); they, their values and
    ``output`` must be float64.  ``seed`` fixes the random cotangent of a
    non-scalar output and the draws of random ops, which are the same in every
    evaluation.  Raises ``AssertionError`` naming each wrt node whose error
    exceeds ``rtol``, with the largest discrepancy and where it is.
    """
    feeds, variables = dict(feeds), dict(variables or {})
    _check_wrt(output, wrt, feeds, variables)
    (value,) = evaluate([output], feeds, variables, rng=np.random.default_rng(seed))
    cotangent = _cotangent(value.shape, seed)
    symbolic = _symbolic_gradients(output, wrt, feeds, variables, cotangent, seed)
    noise = _rounding_noise(value, cotangent, eps)
    errors: dict[str, float] = {}
    failures: list[str] = []
    for node, analytic in zip(wrt, symbolic):
        numeric = numeric_grad(_output_of(output, node, feeds, variables, seed), _value_of(node, feeds, variables),
                               cotangent, eps)
        errors[node.name] = _relative_error(analytic, numeric, noise * np.sqrt(max(numeric.size, 1)) / rtol)
        if not errors[node.name] <= rtol:
            failures.append(_describe_mismatch(node, analytic, numeric, errors[node.name], rtol))
    if failures:
        raise AssertionError(f"gradient of {output!r} disagrees with central differences (eps={eps}):\n"
                             + "\n".join(failures))
    return errors


def _symbolic_gradients(output: Node, wrt: Sequence[Node], feeds: Mapping[str, Any],
                        variables: Mapping[str, Any], cotangent: np.ndarray, seed: int) -> list[np.ndarray]:
    """The values of ``graphc.grad(output, wrt)`` seeded with ``cotangent``, by the interpreter."""
    gradients = grad(output, wrt, seed=ops.input(COTANGENT_NAME, output.shape, FLOAT64))
    # The wrt nodes are evaluated alongside their gradients because they bind the
    # symbolic sizes: a gradient such as d sum(x) / dx = broadcast_to(1, x.shape)
    # does not read x, so nothing else in its graph knows the batch size.
    values = evaluate([*wrt, *gradients], {**feeds, COTANGENT_NAME: cotangent}, variables,
                      rng=np.random.default_rng(seed))
    return values[len(wrt):]


def _check_wrt(output: Node, wrt: Sequence[Node], feeds: Mapping[str, Any], variables: Mapping[str, Any]) -> None:
    if output.dtype != FLOAT64:
        raise DTypeError(f"check_grads needs a float64 output, got {output!r}: finite differences in "
                         f"lower precision are meaningless; build the graph in float64")
    if COTANGENT_NAME in feeds:
        raise GraphcError(f"the input name '{COTANGENT_NAME}' is reserved by check_grads; rename that input")
    names = [node.name for node in wrt]
    if len(set(names)) != len(names):
        raise GraphcError(f"check_grads: wrt names {names} repeat; values are looked up by name, "
                          f"so give each node a distinct name")
    for node in wrt:
        if not is_named_leaf(node.op):
            raise GraphcError(f"check_grads differentiates with respect to inputs, params or state, "
                              f"got {node!r} (op {node.op}); make it a gc.input or gc.param")
        value = _value_of(node, feeds, variables)
        if node.dtype != FLOAT64 or getattr(value, "dtype", None) != np.float64:
            raise DTypeError(f"check_grads needs float64 for {node.op} '{node.name}', got a {node.dtype} node "
                             f"valued by {type(value).__name__} of dtype {getattr(value, 'dtype', None)}: finite "
                             f"differences in lower precision are meaningless; declare and feed it as float64")


def _value_of(node: Node, feeds: Mapping[str, Any], variables: Mapping[str, Any]) -> Any:
    source = feeds if is_fed(node.op) else variables
    if node.name not in source:
        where = "feeds" if is_fed(node.op) else "variables"
        raise FeedError(f"check_grads: no value for {node.op} '{node.name}'; pass it in {where}")
    return source[node.name]


def _output_of(output: Node, node: Node, feeds: Mapping[str, Any], variables: Mapping[str, Any],
               seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """The output as a function of ``node``'s value, everything else held fixed."""
    def f(x: np.ndarray) -> np.ndarray:
        if node.op == "input":
            moved_feeds, moved_variables = {**feeds, node.name: x}, variables
        else:
            moved_feeds, moved_variables = feeds, {**variables, node.name: x}
        return evaluate([output], moved_feeds, moved_variables, rng=np.random.default_rng(seed))[0]
    return f


def _cotangent(shape: tuple[int, ...], seed: int) -> np.ndarray:
    if shape == ():
        return np.ones((), dtype=np.float64)
    return np.random.default_rng(seed).standard_normal(shape)


def _rounding_noise(value: np.ndarray, cotangent: np.ndarray, eps: float) -> float:
    """The rounding noise of one central-difference component (see the module docstring)."""
    scale = max(1.0, float(np.sum(np.abs(cotangent * value))))
    return ROUNDING_ULPS * _UNIT_ROUNDOFF * scale / eps


def _relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float) -> float:
    scale = max(float(np.linalg.norm(analytic)), float(np.linalg.norm(numeric)), floor)
    return float(np.linalg.norm(analytic - numeric) / scale)


def _describe_mismatch(node: Node, analytic: np.ndarray, numeric: np.ndarray, error: float, rtol: float) -> str:
    gap = np.abs(analytic - numeric)
    worst = np.unravel_index(int(np.argmax(gap)), gap.shape) if gap.ndim else ()
    return (f"  {node.op} '{node.name}' {type_str(node)}: relative error {error:.3g} > rtol {rtol:g}; "
            f"largest difference at index {tuple(int(i) for i in worst)}: "
            f"symbolic {analytic[worst]:.10g}, numeric {numeric[worst]:.10g}")
