"""Laguerre cells (semi-discrete OT, issue 19): lazymat's damped Newton against POT's stochastic solver.

The problem: the uniform density on the unit square, N seeds drawn uniformly (fixed seed),
equal target volumes 1/N, the cost |x - y|^2. lazymat sees the density on a grid of about
PIXELS_PER_CELL pixels per cell (fractional pixels, :mod:`lazymat.solvers.laguerre_volumes`);
POT 0.9.7's ``ot.semidiscrete.solve_semidiscrete`` (projected averaged SGD on the semi-dual,
optionally with decreasing entropic regularisation, Genans et al. 2025) samples the density
itself, in batches.

lazymat stops at a relative volume error (max_i |Vol_i - 1/N| N) of 1% or 0.01% ("time to
1%" and "time to 0.01%", its own test ``tol``). POT's SGD has no such test and its error
falls like (samples per cell)^(-1/2): it runs fixed iteration counts (POT_ITERATIONS), and the
table shows the error each reaches. Every result's error is measured the same way: the
volumes of the cells of its weights on the grid (lazymat's evaluation; within ~1e-5 of the
exact power cells, see tests/test_laguerre.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .harness import Case, Contender, Result, Task
from .peer_reductions import need

#: grid pixels per cell for lazymat (the grid is the nearest square)
PIXELS_PER_CELL = 100
#: POT: SGD batch size, iteration counts timed, first step size (POT's default sqrt(N batch)
#: and its decreasing regularisation left errors of 100-300% at these counts; 0.3 with hard
#: assignments did best of 0.3, 1 and 3 at N = 1000)
POT_BATCH = 256
POT_ITERATIONS = (2**12, 2**14)
POT_LR0 = 0.3


@dataclass(frozen=True)
class CellsCase(Case):
    """N cells in 2-D; ``m`` is the number of grid pixels (about PIXELS_PER_CELL per cell)."""

    @property
    def label(self) -> str:
        side = math.isqrt(self.m)
        return f"N={self.n:,} cells, grid {side}x{side}, D=2"

    def scaled(self, factor: float) -> Case:
        return cells_case(max(8, int(self.n * factor)))


def cells_case(n: int) -> CellsCase:
    side = round(math.sqrt(n * PIXELS_PER_CELL))
    return CellsCase(n, side * side, 2)


def make_data(case: Case) -> dict[str, Any]:
    side = math.isqrt(case.m)
    rng = np.random.default_rng(0)
    return {"seeds": rng.random((case.n, 2)), "density": np.ones((side, side))}


def volume_error(data: dict[str, Any], weights: np.ndarray) -> float:
    """max_i |Vol_i - 1/N| N of the power cells of ``weights`` on the case's grid."""
    from lazymat.solvers.laguerre import grid_domain, squared_distance
    from lazymat.solvers.laguerre_volumes import assign

    if not np.all(np.isfinite(weights)):
        return math.inf
    seeds = data["seeds"]
    n = len(seeds)
    volumes = assign(grid_domain(data["density"]), seeds, weights, squared_distance).volumes
    return float(np.max(np.abs(volumes * n - 1.0)))


def _error_result(out: tuple[float, int]) -> Result:
    error, iterations = out
    return Result(value=error, iterations=iterations)


def ours(tol: float) -> Contender:
    """lazymat ``laguerre_cells`` (numpy arrays; the dispatch picks the engine), to ``tol``."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        from lazymat.solvers import laguerre_cells

        def run() -> tuple[float, int]:
            r = laguerre_cells(data["seeds"], density=data["density"], tol=tol, warm_start=False)
            return r.errors[-1], r.n_iter

        return run

    return Contender(f"lazymat laguerre_cells, tol {tol:g}", True, setup, _error_result)


def pot(iterations: int) -> Contender:
    """POT ``solve_semidiscrete`` (numpy), ``iterations`` SGD steps of batch POT_BATCH."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        semidiscrete = need("ot.semidiscrete")

        def run() -> tuple[float, int]:
            np.random.seed(0)  # POT's "unif" sampler draws from numpy's global generator
            g = semidiscrete.solve_semidiscrete(
                data["seeds"],
                "unif",
                metric="sqeuclidean",
                max_iter=iterations,
                batch_size=POT_BATCH,
                lr0=POT_LR0,
                decreasing_reg=False,
            )
            return volume_error(data, np.asarray(g)), iterations

        return run

    # its cost: iterations x batch x N distances, whatever the grid
    return Contender(
        f"POT solve_semidiscrete (SGD), {iterations:,} it.",
        False,
        setup,
        _error_result,
        checked=False,
        work=lambda c: float(c.n) * iterations * POT_BATCH,
    )


def laguerre_task(quick: bool) -> Task:
    sizes = [50, 100] if quick else [1_000, 10_000]
    return Task(
        "laguerre",
        "Laguerre cells: equal volumes of the unit square to 1% and 0.01%, D = 2",
        [cells_case(n) for n in sizes],
        make_data,
        [ours(1e-2), ours(1e-4), *(pot(k) for k in POT_ITERATIONS)],
        lambda a, b, data: float(a.value if a.value is not None else math.inf),
        tolerance=1e-2,
        exact="max relative volume error",
        work=lambda c: float(c.n) * c.m,
        weight=1.0,
        description=(
            f"uniform density on [0, 1]^2, N uniform seeds, volumes 1/N, cost |x - y|^2. lazymat: "
            f"a grid of ~{PIXELS_PER_CELL} pixels per cell, Voronoi start, damped Newton to tol; POT: "
            f"projected averaged SGD (hard assignments, lr0 = {POT_LR0}) on samples of the density, batch "
            f"{POT_BATCH}, fixed iteration counts. Differences: each result's max relative volume "
            "error, measured on lazymat's grid; iterations: Newton iterations or SGD iterations."
        ),
    )
