"""A loop of nearby OT problems, each solved to a tolerance, cold or warm-started, against POT.

What a solver's loop does (a flow moving the points, a barycenter's fixed point): STEPS
problems between N uniform points of the unit square moving a little at each step and M
fixed ones, uniform weights, cost |x - y|^2 / 2, eps = REG. Each problem is solved to
convergence: lazymat's ``sinkhorn(..., debias=False, tol=TOL)`` from scratch (eps-scaling)
or from the previous step's potentials (``init=(f, g)``, at the final eps), POT's
``ot.sinkhorn(..., method="sinkhorn_log", stopThr=TOL)`` from scratch or from the previous
step's log-scalings (``warmstart``; u = log a + f / eps, v = log b + g / eps in our terms).
POT's cost matrix of each step is computed inside its timed call (the loop needs it). The
result: the entropic OT value <pi, C> + eps KL(pi | a x b) of the last step; the iterations
of all the steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .harness import Case, Contender, Result, Task
from .peer_matrix import REG, TOL, entropic_value, half_sqdist
from .peer_reductions import need

#: problems in the loop, and how far the points move per step
STEPS = 5
STEP_SIZE = 0.002


def make_data(case: Case) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x, y = rng.random((case.n, 2)), rng.random((case.m, 2))
    velocity = rng.standard_normal((case.n, 2))
    return {
        "xs": [x + STEP_SIZE * t * velocity for t in range(STEPS)],
        "y": y,
        "a": np.full(case.n, 1.0 / case.n),
        "b": np.full(case.m, 1.0 / case.m),
    }


def ours(warm: bool) -> Contender:
    """lazymat ``sinkhorn`` on numpy arrays (the dispatch picks the engine), cold or warm."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        from lazymat.solvers import sinkhorn

        def run() -> tuple[float, int]:
            init, total = None, 0
            for x in data["xs"]:
                r = sinkhorn(x, *(data[k] for k in "yab"), blur=REG**0.5, debias=False, tol=TOL, init=init)
                init, total = ((r.f, r.g) if warm else None), total + r.n_iter
            return float(r.value), total

        return run

    def collect(out: tuple[float, int]) -> Result:
        return Result(value=out[0], iterations=out[1])

    return Contender(f"lazymat sinkhorn ({'warm' if warm else 'cold'})", True, setup, collect)


def pot(warm: bool) -> Contender:
    """POT ``ot.sinkhorn`` in the log domain (numpy), cold or warm-started, to the same tolerance."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        ot = need("ot")
        a, b = data["a"], data["b"]

        def run() -> tuple[np.ndarray, np.ndarray, int, dict[str, Any]]:
            start, total = None, 0
            for x in data["xs"]:
                c = half_sqdist(x, data["y"])
                plan, log = ot.sinkhorn(
                    a, b, c, REG, "sinkhorn_log", stopThr=TOL, numItermax=100_000, log=True, warmstart=start
                )
                start, total = ((log["log_u"], log["log_v"]) if warm else None), total + int(log["niter"])
            return plan, c, total, data

        return run

    def collect(out: tuple[np.ndarray, np.ndarray, int, dict[str, Any]]) -> Result:
        plan, c, total, data = out
        return Result(value=entropic_value(plan, c, data["a"], data["b"]), iterations=total)

    return Contender(f"POT sinkhorn (log domain, {'warm' if warm else 'cold'})", False, setup, collect)


def warm_start_task(quick: bool) -> Task:
    sizes = [32, 64] if quick else [100, 300, 1_000, 2_000]
    return Task(
        "warm_start",
        f"{STEPS} nearby OT problems in a loop, each to tol {TOL:g}, eps = {REG}",
        [Case(n, n, 2) for n in sizes],
        make_data,
        [ours(False), ours(True), pot(False), pot(True)],
        lambda a, b, data: abs(float(a.value or 0.0) - float(b.value or 0.0)) / abs(float(b.value or 1.0)),
        tolerance=1e-6,
        work=lambda c: STEPS * float(c.n) * c.m,
        weight=0.5,
        description=(
            f"N = M uniform points of [0, 1]^2 (x moving by {STEP_SIZE} x a Gaussian velocity per step, "
            f"{STEPS} steps), uniform weights, C = |x - y|^2 / 2, eps = {REG}, each step solved to "
            f"tol {TOL:g}. lazymat: sinkhorn(x, y, a, b, blur={REG**0.5:g}, debias=False, tol={TOL:g}), "
            "cold (eps-scaling) or warm (init=(f, g) of the previous step); POT: "
            f"ot.sinkhorn(method='sinkhorn_log', stopThr={TOL:g}), cold or warm (warmstart=(log_u, "
            "log_v) of the previous step), its cost matrix computed in the loop. Differences: relative, "
            "of the last step's entropic OT values <pi, C> + eps KL(pi | a x b); iterations: all steps'."
        ),
    )
