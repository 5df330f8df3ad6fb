r"""The Brenier map of a 2-D transport
==================================

Two ways: between point clouds, and from a density onto Laguerre cells.

1. **Clouds**: ``sinkhorn(x, y, debias=False, tol=...)`` solves the entropic transport between a
   Gaussian blob and a crescent; ``OTResult.barycentric_map()`` sends each :math:`x_i` to
   :math:`\sum_j \pi_{ij} y_j / a_i` (a reduction of the lazy plan), the estimate of the Brenier
   map :math:`\nabla F(x_i) = x_i - \nabla f(x_i)` (Feydy's thesis, section 3.4). Arrows
   :math:`x_i \to T(x_i)`.
2. **Semi-discrete**: ``laguerre_cells`` splits a density (a Gaussian blob on a grid) into the
   cells of the crescent's points, each holding the mass 1/M; the Brenier map sends the
   whole cell of y_j to y_j. Arrows from each cell's centroid to its point.

Run ``python examples/brenier_map.py``: it writes a PNG with both panels.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from lazymat.solvers import laguerre_cells, sinkhorn


def crescent(m: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angle = rng.uniform(-0.6 * np.pi, 0.6 * np.pi, m)
    radius = 0.25 + 0.03 * rng.standard_normal(m)
    return np.stack([0.45 + radius * np.cos(angle), 0.55 + radius * np.sin(angle)], axis=1)


def run(
    n: int = 400, m: int = 150, grid: int = 256, blur: float = 0.02, out: str = "brenier_map.png"
) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    x = 0.3 + 0.07 * rng.standard_normal((n, 2))
    y = crescent(m)
    start = time.perf_counter()
    r = sinkhorn(x, y, blur=blur, debias=False, tol=1e-5)
    moved = np.asarray(r.barycentric_map())
    ticks = (np.arange(grid) + 0.5) / grid
    gx, gy = np.meshgrid(ticks, ticks, indexing="ij")
    density = np.exp(-((gx - 0.3) ** 2 + (gy - 0.3) ** 2) / (2 * 0.07**2)) + 1e-3
    density /= density.sum() / grid**2
    cells = laguerre_cells(y, density=density, tol=1e-4)
    seconds = time.perf_counter() - start
    pixels = np.stack([gx.ravel(), gy.ravel()], axis=1)
    labels = np.asarray(cells.labels(pixels)).reshape(grid, grid)
    centroids = np.asarray(cells.centroids)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4.6))
    ax1.scatter(y[:, 0], y[:, 1], s=6, c="tab:orange", label="target y")
    ax1.scatter(x[:, 0], x[:, 1], s=4, c="tab:blue", label="source x")
    d = moved - x
    ax1.quiver(
        x[:, 0], x[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, width=0.002, alpha=0.6
    )
    ax1.set_title(f"clouds: x -> barycentric map (blur {blur}, {r.n_iter} Sinkhorn it.)", fontsize=9)
    ax1.legend(loc="lower right", fontsize=7)
    colours = np.random.default_rng(2).permutation(m)
    ax2.imshow(colours[labels].T, origin="lower", extent=(0, 1, 0, 1), cmap="tab20", alpha=0.5)
    ax2.contour(gx, gy, density, levels=5, colors="k", linewidths=0.4)
    ax2.scatter(y[:, 0], y[:, 1], s=6, c="tab:orange")
    d = y - centroids
    ax2.quiver(
        centroids[:, 0],
        centroids[:, 1],
        d[:, 0],
        d[:, 1],
        angles="xy",
        scale_units="xy",
        scale=1,
        width=0.002,
    )
    ax2.set_title(f"semi-discrete: Laguerre cell centroid -> y ({cells.n_iter} Newton it.)", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Brenier maps of a Gaussian blob onto a crescent")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return {"seconds": seconds, "sinkhorn_iterations": r.n_iter, "newton": cells.n_iter, "out": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--m", type=int, default=150)
    parser.add_argument("--out", default="brenier_map.png")
    args = parser.parse_args()
    result = run(n=args.n, m=args.m, out=args.out)
    print(
        f"{result['seconds']:.1f} s: {result['sinkhorn_iterations']} Sinkhorn iterations, "
        f"{result['newton']} Newton iterations; wrote {result['out']}"
    )


if __name__ == "__main__":
    main()
