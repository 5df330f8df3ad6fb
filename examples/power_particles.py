"""Power-diagram particle steps
============================

Every particle's cell keeps its volume; particles move to their cells' centroids.

Incompressible particle methods (Gallouet & Merigot, "A Lagrangian scheme a la Brenier for the
incompressible Euler equations", 2018) give each particle a Laguerre cell of prescribed volume
and pull the particle towards its cell's centroid. Here, with no other force, each step is

1. ``laguerre_cells(x, volumes, density=...)``: the dual weights whose power cells have the
   volumes (warm-started from the previous step's weights after the first one);
2. ``x <- centroids``: a Lloyd step with the volumes enforced.

A clustered start spreads out into a centroidal power diagram of equal cells. Run
``python examples/power_particles.py``: it writes a PNG of the cells at four steps, with
each particle (dot) and the centroid it moves to (arrow), and prints the volume errors.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from lazymat.solvers import laguerre_cells


def particles(n: int, seed: int = 0) -> np.ndarray:
    """n particles crowded in the lower-left part of the unit square."""
    rng = np.random.default_rng(seed)
    return np.clip(0.3 + 0.15 * rng.standard_normal((n, 2)), 0.01, 0.99)


def run(n: int = 200, steps: int = 6, grid: int = 256, out: str = "power_particles.png") -> dict[str, Any]:
    """``steps`` Lloyd steps of ``n`` particles of equal volume in the unit square (``grid``^2 pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    density = np.ones((grid, grid))
    x = particles(n)
    ticks = (np.arange(grid) + 0.5) / grid
    pixels = np.stack([g.ravel() for g in np.meshgrid(ticks, ticks, indexing="ij")], axis=1)
    shots = {0, 1, steps // 2, steps - 1}
    panels, errors, newton = [], [], []
    weights = None
    start = time.perf_counter()
    for step in range(steps):
        r = laguerre_cells(x, density=density, init=weights, tol=1e-4)
        errors.append(r.errors[-1])
        newton.append(r.n_iter)
        if step in shots:
            panels.append(
                (step, x, np.asarray(r.centroids), np.asarray(r.labels(pixels)).reshape(grid, grid))
            )
        x, weights = np.asarray(r.centroids), np.asarray(r.weights)
    seconds = time.perf_counter() - start

    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.5))
    colours = np.random.default_rng(1).permutation(n)
    for ax, (step, pts, cen, labels) in zip(axes, panels, strict=True):
        ax.imshow(
            colours[labels].T, origin="lower", extent=(0, 1, 0, 1), cmap="tab20", interpolation="nearest"
        )
        ax.scatter(pts[:, 0], pts[:, 1], s=3, c="k")
        ax.quiver(
            pts[:, 0],
            pts[:, 1],
            cen[:, 0] - pts[:, 0],
            cen[:, 1] - pts[:, 1],
            angles="xy",
            scale_units="xy",
            scale=1,
            width=0.004,
        )
        ax.set_title(f"step {step}: {newton[step]} Newton it., err {errors[step]:.0e}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Power-diagram particle steps: {n} cells of volume 1/{n}, moved to their centroids")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return {"errors": errors, "newton": newton, "seconds": seconds, "out": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--grid", type=int, default=256)
    parser.add_argument("--out", default="power_particles.png")
    args = parser.parse_args()
    result = run(n=args.n, steps=args.steps, grid=args.grid, out=args.out)
    print(
        f"{len(result['errors'])} steps in {result['seconds']:.1f} s, Newton iterations {result['newton']}, "
        f"largest relative volume error {max(result['errors']):.1e}; wrote {result['out']}"
    )


if __name__ == "__main__":
    main()
