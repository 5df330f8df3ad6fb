"""A Gaussian mixture fitted by EM
===============================

With ``lazymat.ml``, drawn as a density.

``n`` points from a 2-D mixture of four anisotropic Gaussians; ``GaussianMixture``
(full covariances) runs EM with log-sum-exp responsibilities (one reduction over the
components for the E-step, one over the points for the M-step). The plot shows the
fitted log density (``score_samples`` on a grid, one log-sum-exp reduction), the data
and one ellipse (2 standard deviations) per component; the kernel density estimate of
the same points (``KernelDensity``, Scott's bandwidth) is drawn next to it.

Run ``python examples/gmm_density.py --n 100000 --out gmm.png``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from lazymat.ml import GaussianMixture, KernelDensity

MEANS = np.array([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0], [1.0, -4.0]])
COVARIANCES = np.array(
    [[[1.0, 0.6], [0.6, 1.0]], [[0.5, -0.3], [-0.3, 1.5]], [[2.0, 0.0], [0.0, 0.3]], [[0.3, 0.0], [0.0, 0.3]]]
)


def make_data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    which = rng.choice(4, n, p=[0.4, 0.25, 0.2, 0.15])
    noise = np.einsum("nij,nj->ni", np.linalg.cholesky(COVARIANCES)[which], rng.standard_normal((n, 2)))
    return MEANS[which] + noise


def run(n: int = 5000, grid: int = 150, out: str | None = None, seed: int = 0) -> dict[str, Any]:
    x = make_data(n, seed)
    t0 = time.perf_counter()
    gm = GaussianMixture(4, covariance_type="full", random_state=seed, tol=1e-6, max_iter=500).fit(x)
    seconds = time.perf_counter() - t0
    g = np.linspace(-7, 8, grid)
    gx, gy = np.meshgrid(g, g)
    points = np.c_[gx.ravel(), gy.ravel()]
    log_density = gm.score_samples(points).reshape(grid, grid)
    kde = KernelDensity(bandwidth="scott").fit(x).score_samples(points).reshape(grid, grid)
    result = {"log_likelihood": gm.score(x), "iterations": gm.n_iter_, "seconds": seconds}
    if out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 5))
        levels = np.linspace(-12, log_density.max(), 25)
        for ax, field, title in (
            (axes[0], log_density, f"GMM, 4 full covariances: {gm.n_iter_} EM iterations"),
            (axes[1], kde, "KDE, Gaussian kernel, Scott's bandwidth"),
        ):
            ax.contourf(gx, gy, np.maximum(field, -12), levels=levels, cmap="viridis")
            shown = np.random.default_rng(1).permutation(n)[:3000]
            ax.scatter(x[shown, 0], x[shown, 1], s=1, c="w", alpha=0.3)
            ax.set_title(title)
            ax.set_xlim(g[0], g[-1])
            ax.set_ylim(g[0], g[-1])
            ax.set_aspect("equal")
        t = np.linspace(0, 2 * np.pi, 100)
        for mean, cov in zip(np.asarray(gm.means_), np.asarray(gm.covariances_), strict=True):
            ellipse = mean + 2 * (np.linalg.cholesky(cov) @ np.stack([np.cos(t), np.sin(t)])).T
            axes[0].plot(ellipse[:, 0], ellipse[:, 1], "r", lw=1)
        fig.suptitle(f"log density of N = {n:,} points")
        fig.tight_layout()
        fig.savefig(out, dpi=110)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--grid", type=int, default=150, help="side of the evaluation grid")
    ap.add_argument("--out", default=None, help="PNG of the densities")
    args = ap.parse_args()
    r = run(args.n, args.grid, args.out)
    print(
        f"mean log-likelihood {r['log_likelihood']:.4f}, {r['iterations']} iterations in {r['seconds']:.2f} s"
    )


if __name__ == "__main__":
    main()
