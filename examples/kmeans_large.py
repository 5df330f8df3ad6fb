"""K-means on many points
======================

With ``lazymat.ml``: Lloyd's iterations as argmin reductions.

``n`` points drawn around ``k`` random centers in 2-D; ``KMeans`` (k-means++ seeding, then
Lloyd) assigns every point with one argmin reduction per iteration and updates the
centers with a block-sparse sum per cluster: memory O(N + K), nothing of size N x K.
``--large`` runs the 10^6-point version (about a second per iteration on 2 cores).

Run ``python examples/kmeans_large.py --large --out kmeans.png``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from lazymat.ml import KMeans


def make_data(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10, 10, (k, 2))
    return (centers[rng.integers(0, k, n)] + rng.normal(0, 0.6, (n, 2))).astype(np.float32)


def run(n: int = 100_000, k: int = 50, out: str | None = None, seed: int = 0) -> dict[str, Any]:
    x = make_data(n, k, seed)
    t0 = time.perf_counter()
    km = KMeans(k, random_state=seed, max_iter=100).fit(x)
    seconds = time.perf_counter() - t0
    result = {"inertia": km.inertia_, "iterations": km.n_iter_, "seconds": seconds}
    if out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = np.random.default_rng(1).permutation(n)[:20_000]
        labels = np.asarray(km.labels_)[shown]
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.scatter(x[shown, 0], x[shown, 1], c=labels % 20, cmap="tab20", s=1)
        c = np.asarray(km.cluster_centers_)
        ax.scatter(c[:, 0], c[:, 1], c="k", marker="x", s=30)
        ax.set_title(f"K-means, N = {n:,}, K = {k}: {km.n_iter_} iterations in {seconds:.1f} s")
        ax.set_aspect("equal")
        fig.tight_layout()
        fig.savefig(out, dpi=120)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="points (default 10^5)")
    ap.add_argument("--large", action="store_true", help="10^6 points")
    ap.add_argument("--k", type=int, default=50, help="clusters")
    ap.add_argument("--out", default=None, help="PNG of the clusters (a sample of 20,000 points)")
    args = ap.parse_args()
    n = 1_000_000 if args.large else args.n
    r = run(n, args.k, args.out)
    print(
        f"N = {n:,}, K = {args.k}: inertia {r['inertia']:.6g} after {r['iterations']} iterations, "
        f"{r['seconds']:.2f} s ({r['seconds'] / r['iterations']:.3f} s per iteration, k-means++ included)"
    )


if __name__ == "__main__":
    main()
