"""OT on a cost matrix the user holds (issue 19): lazymat's ``solve(C, a, b, reg=...)`` against POT.

The problem: N and M uniform points of the unit square (fixed seed), uniform weights, the
dense cost matrix C = |x - y|^2 / 2 given as an array, eps = REG. Both solvers run to
convergence: lazymat with ``tol=TOL`` (the potentials' sup change per iteration, after the
eps-scaling from max C - min C), POT's ``ot.sinkhorn(..., method="sinkhorn_log")`` with
``stopThr=TOL`` (its marginal error, tested every 10 iterations). Both iterations are two
log-sum-exps over C (POT alternates them, lazymat updates both in parallel, weighting the new
values 1/2 during the eps-scaling and 3/4 at the final eps), so the times
compare the loops' costs to one accuracy. Results: the entropic OT value
<pi, C> + eps KL(pi | a x b) (lazymat's ``value``; POT's from its dense plan, outside the
timed call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .harness import Case, Contender, Result, Task
from .peer_reductions import need

#: the temperature eps (blur 0.1 on the unit square)
REG = 0.01
#: the stopping tolerance of both solvers
TOL = 1e-9


def half_sqdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The dense cost matrix C = |x_i - y_j|^2 / 2."""
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2


def make_data(case: Case) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x, y = rng.random((case.n, 2)), rng.random((case.m, 2))
    return {
        "C": half_sqdist(x, y),
        "a": np.full(case.n, 1.0 / case.n),
        "b": np.full(case.m, 1.0 / case.m),
    }


def entropic_value(plan: np.ndarray, c: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """<pi, C> + eps KL(pi | a x b) of POT's dense plan, eps = REG (the value lazymat returns)."""
    ab = np.outer(a, b)
    kl = np.sum(plan * np.log(np.where(plan > 0, plan / ab, 1.0)) - plan + ab)
    return float(np.sum(plan * c) + REG * kl)


def _value(out: Any) -> Result:
    import lazymat

    value, n_iter = out
    backend = lazymat.backend_for(value)
    return Result(value=float(backend.to_numpy(value)), iterations=n_iter)


def ours(backend: str) -> Contender:
    """lazymat ``solve`` on ``backend`` arrays (the dispatch picks the engine)."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        import lazymat
        from lazymat.solvers import solve

        to = lazymat.get_registry().backend(backend).from_numpy
        c, a, b = (to(data[k]) for k in ("C", "a", "b"))

        def run() -> tuple[Any, int]:
            r = solve(c, a, b, reg=REG, tol=TOL)
            return r.value, r.n_iter

        return run

    return Contender(f"lazymat solve ({backend})", True, setup, _value)


def pot() -> Contender:
    """POT ``ot.sinkhorn`` in the log domain (numpy), to the same tolerance."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        ot = need("ot")
        c, a, b = data["C"], data["a"], data["b"]

        def run() -> tuple[np.ndarray, int, dict[str, Any]]:
            plan, log = ot.sinkhorn(
                a, b, c, REG, method="sinkhorn_log", stopThr=TOL, numItermax=100_000, log=True
            )
            return plan, int(log["niter"]), data

        return run

    def collect(out: tuple[np.ndarray, int, dict[str, Any]]) -> Result:
        plan, n_iter, data = out
        return Result(value=entropic_value(plan, data["C"], data["a"], data["b"]), iterations=n_iter)

    return Contender("POT sinkhorn (log domain)", False, setup, collect)


def matrix_task(quick: bool) -> Task:
    sizes = [32, 64] if quick else [300, 1_000, 2_000]
    return Task(
        "matrix_ot",
        f"OT on a user's cost matrix to tol {TOL:g}, eps = {REG}",
        [Case(n, n, 2) for n in sizes],
        make_data,
        [ours("numpy"), ours("torch"), pot()],
        lambda a, b, data: abs(float(a.value or 0.0) - float(b.value or 0.0)) / abs(float(b.value or 1.0)),
        tolerance=1e-6,
        work=lambda c: float(c.n) * c.m,
        weight=0.5,
        description=(
            f"N = M uniform points of [0, 1]^2, uniform weights, C = |x - y|^2 / 2 given as a dense "
            f"array, eps = {REG}. lazymat: solve(C, a, b, reg=eps, tol={TOL:g}) (eps-scaling, symmetric "
            f"updates, soft-mins over blocks of C); POT: ot.sinkhorn(method='sinkhorn_log', "
            f"stopThr={TOL:g})."
            " Differences: relative, of the entropic OT values <pi, C> + eps KL(pi | a x b)."
        ),
    )
