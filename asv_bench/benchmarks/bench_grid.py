"""OT on grids: the Sinkhorn divergence between two n x n images and their barycenter with a third.

The size parameter is the grid's side n (N = n^2 cells); the data are those of the peer
comparison (``comparison/peer_grid.py``): Gaussian blobs for the divergence, a disk, a square
and a ring for the barycenter.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from lazymat.solvers import barycenter_grid, solve_grid

from .common import TimeAndMemory, XPBenchmark, sizes, target_params

GRID_SIDES = sizes([64, 256], [12])
GRID_BLUR = 0.02
BARYCENTER_ITERATIONS = 50
BARYCENTER_BLUR = 0.02


def grid_images(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two images of mass 1 on the grid t x t (float32): a pair of Gaussian blobs, a narrower blob."""
    X, Y = np.meshgrid(t, t, indexing="ij")
    a = np.exp(-((X - 0.3) ** 2 + (Y - 0.35) ** 2) / 0.02)
    a += 0.7 * np.exp(-((X - 0.7) ** 2 + (Y - 0.3) ** 2) / 0.01)
    b = np.exp(-((X - 0.55) ** 2 + (Y - 0.7) ** 2) / 0.015)
    return (a / a.sum()).astype(np.float32), (b / b.sum()).astype(np.float32)


def grid_shapes(t: np.ndarray) -> np.ndarray:
    """A disk, a square and a ring on the grid t x t, each of mass 1 (float32): (3, n, n).

    A faint background (1e-3) keeps every mass positive: POT adds 1e-30 to zero masses
    inside its logs, which weighs in its iterates.
    """
    X, Y = np.meshgrid(t, t, indexing="ij")
    disk = ((X - 0.3) ** 2 + (Y - 0.3) ** 2 < 0.15**2).astype(float)
    square = ((abs(X - 0.65) < 0.15) & (abs(Y - 0.6) < 0.2)).astype(float)
    ring = (abs(np.sqrt((X - 0.5) ** 2 + (Y - 0.5) ** 2) - 0.3) < 0.05).astype(float)
    A = np.stack([disk, square, ring]) + 1e-3
    return (A / A.sum((1, 2), keepdims=True)).astype(np.float32)


def cell_centres(n: int) -> np.ndarray:
    """(k + 1/2) / n: the default coordinates of solve_grid and barycenter_grid."""
    return (np.arange(n) + 0.5) / n


class GridSinkhornTask(XPBenchmark):
    """Debiased Sinkhorn divergence between two n x n images, blur 0.02, GeomLoss's annealing."""

    param_names: ClassVar[list[str]] = ["target", "n", "multiscale"]
    params: ClassVar[list[Any]] = [target_params(), GRID_SIDES, [False, True]]

    def prepare(self, n: int) -> None:
        self.a, self.b = (self.asarray(v) for v in grid_images(cell_centres(n)))

    def run(self) -> Any:
        return solve_grid(self.a, self.b, blur=GRID_BLUR, multiscale=self.options[0]).value


class GridBarycenterTask(XPBenchmark):
    """Barycenter of a disk, a square and a ring on an n x n grid: 50 Bregman iterations at blur 0.02."""

    params: ClassVar[list[Any]] = [target_params(), GRID_SIDES]

    def prepare(self, n: int) -> None:
        self.A = self.asarray(grid_shapes(cell_centres(n)))
        self.w = self.asarray(np.asarray([0.5, 0.3, 0.2], np.float32))

    def run(self) -> Any:
        r = barycenter_grid(
            self.A, self.w, blur=BARYCENTER_BLUR, scaling=None, tol=None, max_iter=BARYCENTER_ITERATIONS
        )
        return r.barycenter


class GridSinkhorn(GridSinkhornTask, TimeAndMemory):
    pass


class GridBarycenter(GridBarycenterTask, TimeAndMemory):
    pass
