"""OT on grids (issue 19): ours on the grid, against our point-cloud solver, GeomLoss and POT.

Two tasks on n x n images (n = 64, 128, 256; N = n^2 cells):

- ``grid``: the debiased Sinkhorn divergence between two images, p = 2, blur = one pixel
  (1 / n, GeomLoss's default for images), GeomLoss's annealing (scaling 0.5).
  :func:`lazymat.solvers.solve_grid` (separable soft-min, D N^(3/2) per iteration) against
  :func:`lazymat.solvers.sinkhorn` on the grid's N points (N^2 per iteration, the same
  schedule, hence the same value: the checked reference), and GeomLoss 0.3.1's image
  routine ``geomloss.sinkhorn_divergence`` (pykeops, its own pyramid, coordinates k / n and
  diameter 1; it asserts unless blur is at most one pixel: shown side by side).
- ``grid_barycenter``: the entropic barycenter of three images (a disk, a square, a ring) with
  weights (0.5, 0.3, 0.2), GRID_BARYCENTER_ITERATIONS Bregman iterations at POT's reg
  (2 eps, axes linspace(0, 1, n)), no annealing: :func:`lazymat.solvers.barycenter_grid`
  against POT's ``convolutional_barycenter2d`` (log-domain method: the same iterates;
  scaling method: side by side, it divides by kernel products that underflow in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from benchmarks.bench_grid import cell_centres, grid_images, grid_shapes

import lazymat as lm

from .harness import Case, Contender, Result, Task
from .ours import to_numpy
from .peer_reductions import need
from .tasks import rel_array, rel_value

GRID_SCALING = 0.5
GRID_BARYCENTER_ITERATIONS = 50
GRID_BARYCENTER_REG = 2 * 0.02**2
BARYCENTER_WEIGHTS = (0.5, 0.3, 0.2)


@dataclass(frozen=True)
class GridCase(Case):
    """An n x n grid: N = M = n^2 cells in D = 2."""

    @property
    def side(self) -> int:
        return math.isqrt(self.n)

    @property
    def label(self) -> str:
        return f"{self.side} x {self.side} grid (N={self.n:,})"

    def scaled(self, factor: float) -> Case:
        side = max(8, int(self.side * math.sqrt(factor)))
        return GridCase(side * side, side * side, 2)


def grid_case(side: int) -> GridCase:
    return GridCase(side * side, side * side, 2)


def _grid_work(case: Case) -> float:
    """The separable solvers' cost model: N * n per pass."""
    return float(case.n) * math.isqrt(case.n)


def grid_data(case: Case) -> dict[str, Any]:
    """Two images of mass 1 on [0, 1)^2 (cell centres) and the grid's points, float32."""
    t = cell_centres(math.isqrt(case.n))
    a, b = grid_images(t)
    X, Y = np.meshgrid(t, t, indexing="ij")
    return {"a": a, "b": b, "x": np.stack([X.ravel(), Y.ravel()], axis=1).astype(np.float32)}


def _backend(name: str) -> Any:
    return lm.get_registry().backend(name)


def ours_grid(backend: str, multiscale: bool = False) -> Contender:
    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        from lazymat.solvers import solve_grid

        be = _backend(backend)
        a, b = be.from_numpy(data["a"]), be.from_numpy(data["b"])
        blur = 1.0 / math.isqrt(case.n)
        return lambda: solve_grid(a, b, blur=blur, scaling=GRID_SCALING, multiscale=multiscale).value

    name = f"lazymat solve_grid{', multiscale' if multiscale else ''} ({backend})"
    # the pyramid changes the path (a few percent at this short schedule): side by side
    return Contender(name, True, setup, _value, checked=not multiscale, work=_grid_work)


def ours_cloud() -> Contender:
    """Our point-cloud solver on the grid's points: the same schedule, the reference value."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        from lazymat.solvers import sinkhorn

        be = _backend("torch" if "torch" in lm.backends() else "numpy")
        x = be.from_numpy(data["x"])
        a, b = (be.from_numpy(data[k].ravel()) for k in ("a", "b"))
        blur = 1.0 / math.isqrt(case.n)
        return lambda: sinkhorn(x, x, a, b, blur=blur, scaling=GRID_SCALING).value

    return Contender("lazymat sinkhorn on the grid's points", False, setup, _value)


def geomloss_images() -> Contender:
    """GeomLoss 0.3.1's ``sinkhorn_divergence`` for images, (B, 1, n, n) torch tensors (pykeops)."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        torch = need("torch")
        need("pykeops")
        divergence = need("geomloss").sinkhorn_divergence
        a, b = (torch.from_numpy(data[k])[None, None] for k in ("a", "b"))
        blur = 1.0 / math.isqrt(case.n)
        return lambda: divergence(a, b, p=2, blur=blur, scaling=GRID_SCALING)

    return Contender("GeomLoss sinkhorn_divergence (images)", False, setup, _value, checked=False)


def _value(out: Any) -> Result:
    """A scalar result (GeomLoss's image routine returns it with its batch and channel axes)."""
    value = to_numpy(out.detach() if hasattr(out, "detach") else out)
    return Result(value=float(value.reshape(-1)[0]))


def barycenter_data(case: Case) -> dict[str, Any]:
    """A disk, a square and a ring on linspace(0, 1, n)^2 (POT's coordinates), float32: (3, n, n)."""
    t = np.linspace(0, 1, math.isqrt(case.n))
    return {"A": grid_shapes(t), "t": t.astype(np.float32)}


def ours_barycenter(backend: str) -> Contender:
    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        from lazymat.solvers import barycenter_grid

        be = _backend(backend)
        A, t = be.from_numpy(data["A"]), be.from_numpy(data["t"])
        w = be.from_numpy(np.asarray(BARYCENTER_WEIGHTS, np.float32))
        blur = math.sqrt(GRID_BARYCENTER_REG / 2)
        return lambda: (
            barycenter_grid(
                A, w, axes=(t, t), blur=blur, scaling=None, tol=None, max_iter=GRID_BARYCENTER_ITERATIONS
            ).barycenter
        )

    return Contender(f"lazymat barycenter_grid ({backend})", True, setup, _array, work=_grid_work)


def pot_barycenter(method: str) -> Contender:
    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        ot = need("ot")
        A, w = data["A"], np.asarray(BARYCENTER_WEIGHTS, np.float32)

        def run() -> Any:
            return ot.bregman.convolutional_barycenter2d(
                A,
                GRID_BARYCENTER_REG,
                weights=w,
                method=method,
                numItermax=GRID_BARYCENTER_ITERATIONS,
                stopThr=0.0,
                warn=False,
            )

        return run

    name = f"POT convolutional_barycenter2d ({method})"
    # the log method computes the same iterates (checked); the scaling one floors its logs at 1e-30
    return Contender(
        name, False, setup, _array, checked=method == "sinkhorn_log", work=lambda c: c.n * c.n**0.5
    )


def _array(out: Any) -> Result:
    return Result(array=to_numpy(out))


def grid_task(quick: bool) -> Task:
    sides = [16, 32] if quick else [64, 128, 256]
    backends = [b for b in ("numpy", "torch") if b in lm.backends()]
    return Task(
        "grid",
        "Sinkhorn divergence on n x n grids, p = 2, blur = 1 / n (one pixel), D = 2",
        [grid_case(s) for s in sides],
        grid_data,
        [ours_grid(b) for b in backends]
        + [ours_grid("numpy", multiscale=True), ours_cloud(), geomloss_images()],
        rel_value,
        tolerance=1e-4,
        work=lambda c: float(c.n) * c.m,
        weight=1.0,
        description=(
            "float32 images on [0, 1)^2 (cell centres), cost |x - y|^2 / 2, eps = blur^2, GeomLoss's "
            "annealing (scaling 0.5). *ours / peer* against our point-cloud solver on the grid's N points "
            "(the same schedule and value) is the separable solver's speed-up; GeomLoss's image routine "
            "(its own pyramid, coordinates k / n, diameter 1; it runs only for blur <= 1 / n) and our "
            "multiscale pyramid are shown side by side."
        ),
    )


def grid_barycenter_task(quick: bool) -> Task:
    sides = [16, 32] if quick else [64, 128, 256]
    backends = [b for b in ("numpy", "torch") if b in lm.backends()]
    return Task(
        "grid_barycenter",
        f"Entropic barycenter of three n x n images, {GRID_BARYCENTER_ITERATIONS} Bregman iterations",
        [grid_case(s) for s in sides],
        barycenter_data,
        [ours_barycenter(b) for b in backends] + [pot_barycenter("sinkhorn_log"), pot_barycenter("sinkhorn")],
        rel_array,
        tolerance=1e-3,
        work=lambda c: float(c.n) * math.isqrt(c.n),
        weight=1.0,
        description=(
            f"float32, a disk, a square and a ring, weights {BARYCENTER_WEIGHTS}, POT's reg = "
            f"{GRID_BARYCENTER_REG:g} on linspace(0, 1, n) axes (our eps = reg / 2), no annealing, a fixed "
            "number of iterations: POT's log-domain method computes the same iterates (checked); its "
            "scaling method divides by kernel products that underflow in float32 at this reg (NaN)."
        ),
    )
