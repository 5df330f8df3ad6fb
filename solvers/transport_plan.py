"""The entropic transport plan as a symbolic matrix.

From dual potentials (f, g) at temperature eps, the optimal plan is
    pi_ij = a_i b_j exp((f_i + g_j - C(x_i, y_j)) / eps),
an N-by-M matrix that is never stored: it is a LazyMatrix, so it can be reduced
(``plan.sum(axis=1)`` gives the first marginal), multiplied (``plan @ v``: e.g.
``plan @ y / a`` is the barycentric projection of x onto y) and queried row by row
(``plan.argmax(axis=1)``: the most likely match of each x_i).
"""

from __future__ import annotations

from typing import Any

import array_api_compat

import lazymat
from lazymat import LazyMatrix, Vi, Vj

from .costs import Cost, evaluate_cost, soft_c_exponent


def _column(xp: Any, v: Any) -> Any:
    return xp.reshape(v, (*v.shape, 1))


def log_transport_plan(
    x: Any, y: Any, log_a: Any, log_b: Any, f: Any, g: Any, eps: float, cost: Cost
) -> LazyMatrix:
    """log pi_ij = log a_i + f_i / eps + log b_j + g_j / eps - C(x_i, y_j) / eps.

    Points (B, N, D) and (B, M, D), log-weights and potentials (B, N) and (B, M).
    """
    xp = array_api_compat.array_namespace(x)
    u = Vi(_column(xp, log_a + f / eps))
    v = Vj(_column(xp, log_b + g / eps))
    return soft_c_exponent(u + v, evaluate_cost(cost, Vi(x), Vj(y)), eps, x)


def transport_plan(
    x: Any, y: Any, log_a: Any, log_b: Any, f: Any, g: Any, eps: float, cost: Cost
) -> LazyMatrix:
    """pi_ij = exp(log a_i + f_i / eps + log b_j + g_j / eps - C(x_i, y_j) / eps)."""
    result: LazyMatrix = log_transport_plan(x, y, log_a, log_b, f, g, eps, cost).exp()
    return result


def transport_cost_gradients(
    x: Any, y: Any, log_a: Any, log_b: Any, f: Any, g: Any, eps: float, cost: Cost
) -> tuple[Any, Any]:
    """Gradients of sum_ij pi_ij C(x_i, y_j) in x and y, the plan pi held constant.

    By the envelope theorem, at the optimal potentials this is the gradient of the
    entropic OT value in the points, whatever the marginal penalty. Computed with
    ``lazymat.grad`` (symbolic VJPs), so it needs no autodiff from the array library. When
    ``y is x`` (a self-problem) both slots of C count: the result is then (g, g).
    """
    xp = array_api_compat.array_namespace(x)
    stop = lazymat.backend_for(x).stop_gradient

    def frozen(v: Any) -> Any:  # a distinct array, so that the VJP skips the plan's copy
        return xp.asarray(stop(v), copy=True)

    xc = frozen(x)
    yc = xc if y is x else frozen(y)
    plan = transport_plan(xc, yc, stop(log_a), stop(log_b), stop(f), stop(g), eps, cost)
    gx, gy = lazymat.grad(plan * evaluate_cost(cost, Vi(x), Vj(y)), reduction="sum", axis=1, wrt=[x, y])
    return gx, gy
