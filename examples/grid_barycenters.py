"""Wasserstein barycenters of four shapes, with bilinear weights
=============================================================

A disk, a square, a ring and a cross on an n x n grid sit at the four corners of a k x k
panel; the image at row r, column c is their entropic Wasserstein barycenter with the
bilinear weights ((1-u)(1-v), u(1-v), (1-u)v, uv), u = c / (k - 1), v = r / (k - 1). The
k^2 barycenters run as one batch of ``lazymat.solvers.barycenter_grid`` (iterative Bregman
projections in log domain, separable soft-min passes), so the panel costs one solve.

Run ``python examples/grid_barycenters.py --n 64 --k 5 --out barycenters.png``; ``--debias``
computes debiased barycenters (sharper, slower to converge).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import lazymat
from lazymat.solvers import barycenter_grid


def shapes(n: int) -> np.ndarray:
    """A disk, a square, a ring and a cross on [0, 1)^2 cell centres, each of mass 1: (4, n, n)."""
    t = (np.arange(n) + 0.5) / n
    X, Y = np.meshgrid(t, t, indexing="ij")
    r = np.sqrt((X - 0.5) ** 2 + (Y - 0.5) ** 2)
    disk = r < 0.3
    square = (abs(X - 0.5) < 0.25) & (abs(Y - 0.5) < 0.25)
    ring = abs(r - 0.3) < 0.07
    cross = ((abs(X - 0.5) < 0.08) | (abs(Y - 0.5) < 0.08)) & (abs(X - 0.5) < 0.35) & (abs(Y - 0.5) < 0.35)
    A = np.stack([disk, square, ring, cross]).astype(float)
    return A / A.sum((1, 2), keepdims=True)


def bilinear_weights(k: int) -> np.ndarray:
    """(k * k, 4) weights of the corners (disk, square, ring, cross), row by row."""
    u, v = np.meshgrid(np.linspace(0, 1, k), np.linspace(0, 1, k), indexing="xy")
    u, v = u.ravel(), v.ravel()
    return np.stack([(1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v], axis=1)


def run(
    n: int = 48,
    k: int = 5,
    out: str | None = None,
    *,
    blur: float | None = None,
    debias: bool = False,
    backend: str = "numpy",
) -> dict[str, Any]:
    """The k x k panel of barycenters on an n x n grid (blur: one pixel by default)."""
    lib = lazymat.get_registry().backend(backend)
    A = shapes(n)
    w = bilinear_weights(k)
    batch = np.broadcast_to(A, (k * k, *A.shape)).copy()
    blur = 1.0 / n if blur is None else blur
    start = time.perf_counter()
    r = barycenter_grid(lib.from_numpy(batch), lib.from_numpy(w), dim=2, blur=blur, debias=debias, tol=1e-5)
    panel = np.asarray(lib.to_numpy(r.barycenter))
    seconds = time.perf_counter() - start

    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(k, k, figsize=(1.6 * k, 1.6 * k))
        for idx, ax in enumerate(axes.ravel()):
            ax.imshow(panel[idx].T, origin="lower", cmap="Greys")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{'debiased ' if debias else ''}barycenters, {n} x {n}, {r.n_iter} iterations")
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return {
        "n": n,
        "k": k,
        "iterations": r.n_iter,
        "converged": r.converged,
        "error": r.error,
        "seconds": seconds,
        "shapes": A,
        "weights": w,
        "panel": panel,
        "out": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--debias", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--backend", default="numpy")
    args = parser.parse_args()
    r = run(n=args.n, k=args.k, out=args.out, debias=args.debias, backend=args.backend)
    print(
        f"{r['k']} x {r['k']} barycenters on a {r['n']} x {r['n']} grid: {r['iterations']} iterations "
        f"(converged: {r['converged']}, marginal error {r['error']:.1e}), {r['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
