"""A small backend-neutral L-BFGS minimiser (array API), for registration problems.

``lbfgs(value_and_grad, x0)`` minimises f given a callable returning (f(x), grad f(x)) as
arrays of x's library. It never differentiates anything itself: where the gradient comes
from (the symbolic adjoint of :func:`lazymat.solvers.hamiltonian_flow.shoot_with_adjoint`, or a
library transform such as ``jax.value_and_grad``) is the caller's choice, so the same
minimiser serves numpy, torch, jax and cupy. Two-loop recursion (Nocedal & Wright,
Algorithm 7.4) with the scaled initial Hessian gamma_k = <s, y> / <y, y>, and a
backtracking line search on the Armijo condition; curvature pairs with <s, y> <= 0 are
skipped, which keeps the inverse Hessian approximation positive definite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import array_api_compat

from lazymat.progress import Progress

logger = logging.getLogger(__name__)


@dataclass
class LBFGSInfo:
    """Convergence record of :func:`lbfgs`."""

    converged: bool = False
    iterations: int = 0
    #: objective values, one per accepted iterate (the first one at x0)
    values: list[float] = field(default_factory=list)
    message: str = ""


def lbfgs(
    value_and_grad: Callable[[Any], tuple[Any, Any]],
    x0: Any,
    *,
    maxiter: int = 100,
    history: int = 10,
    gtol: float = 1e-6,
    ftol: float = 1e-10,
    max_backtracks: int = 30,
    callback: Callable[[Any], None] | None = None,
    progress: bool = False,
) -> tuple[Any, LBFGSInfo]:
    """Minimise f from x0; returns (x, info).

    Stops when ``||grad f|| <= gtol ||grad f(x0)||`` (converged), when an iteration lowers f by
    less than ``ftol max(1, |f|)`` (converged: no more progress), when the line search fails,
    or after ``maxiter`` iterations. ``progress``: a progress bar (tqdm; else log lines) of the
    iterations, the objective and the gradient's norm (logger ``lazymat.solvers.lbfgs_minimizer``; the
    time left is for ``maxiter`` iterations, an upper bound).
    """
    if maxiter < 0 or history < 1:
        raise ValueError(f"lbfgs needs maxiter >= 0 and history >= 1, got {maxiter} and {history}")
    with Progress(logger, "L-BFGS", maxiter, progress=progress) as report:
        return _minimise(value_and_grad, x0, maxiter, history, gtol, ftol, max_backtracks, callback, report)


def _minimise(
    value_and_grad: Callable[[Any], tuple[Any, Any]],
    x0: Any,
    maxiter: int,
    history: int,
    gtol: float,
    ftol: float,
    max_backtracks: int,
    callback: Callable[[Any], None] | None,
    report: Progress,
) -> tuple[Any, LBFGSInfo]:
    xp = array_api_compat.array_namespace(x0)

    def dot(a: Any, b: Any) -> float:
        return float(xp.sum(a * b))

    x = x0
    f, g = value_and_grad(x)
    f = float(f)
    info = LBFGSInfo(values=[f])
    g0 = dot(g, g) ** 0.5
    pairs: list[tuple[Any, Any, float]] = []  # (s, y, 1 / <s, y>)
    for k in range(maxiter):
        if dot(g, g) ** 0.5 <= gtol * g0 or g0 == 0.0:
            info.converged, info.message = True, "gradient norm below gtol"
            break
        # two-loop recursion: d = -H g
        q = g
        alphas = []
        for s, y, rho in reversed(pairs):
            a = rho * dot(s, q)
            alphas.append(a)
            q = q - a * y
        if pairs:
            s, y, rho = pairs[-1]
            q = (1.0 / (rho * dot(y, y))) * q
        else:
            q = q / max(dot(g, g) ** 0.5, 1e-300)  # first step: unit length
        for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
            b = rho * dot(y, q)
            q = q + (a - b) * s
        d = -q
        slope = dot(g, d)
        if not slope < 0:  # not a descent direction: restart from steepest descent
            pairs.clear()
            d = -g / max(dot(g, g) ** 0.5, 1e-300)
            slope = dot(g, d)
        t = 1.0
        for _ in range(max_backtracks):
            x_new = x + t * d
            f_new, g_new = value_and_grad(x_new)
            f_new = float(f_new)
            if f_new <= f + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            info.message = "line search failed to decrease the objective"
            break
        s, y = x_new - x, g_new - g
        sy = dot(s, y)
        if sy > 1e-12 * dot(y, y) ** 0.5 * dot(s, s) ** 0.5:
            pairs.append((s, y, 1.0 / sy))
            del pairs[:-history]
        decrease = f - f_new
        x, f, g = x_new, f_new, g_new
        info.values.append(f)
        info.iterations = k + 1
        if callback is not None:
            callback(x)
        report.step(objective=f, gradient=dot(g, g) ** 0.5)
        if decrease <= ftol * max(1.0, abs(f)):
            info.converged, info.message = True, "objective decrease below ftol"
            break
    else:
        info.message = f"reached maxiter={maxiter}"
    return x, info
