r"""Block-sparse and distributed kernel sums
========================================

The same Gaussian kernel density, three ways: on every pair of points, on the pairs of
nearby clusters only (block sparsity), and on dask arrays, whose blocks any dask scheduler
runs (the threads of this process here, a ``distributed`` cluster the same way).

``n`` points drawn around a few centres in the unit square; the density at each point is
:math:`d_i = \sum_j \exp(-|x_i - x_j|^2 / 2\sigma^2)`. Sorted into square cells of side
``voxel``, the points of two cells whose centroids lie further apart than
:math:`r + 2\sqrt2\,\text{voxel}` are at least :math:`r = 6\sigma` apart, so the terms the
block-sparse sum skips are each below :math:`e^{-18} \approx 1.5 \cdot 10^{-8}`: the
reduction visits a small share of the N x N pairs for that error
(:class:`~lazymat.block_sparse.BlockSparsity`). The dask version reduces each (row chunk,
column range) block on a worker and merges the partial sums in a fixed tree
(``lazymat-dask``); it returns the block-sparse sums to rounding.

Run ``python examples/scale_out.py --n 200000 --out scale_out.png``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import lazymat as lm
from lazymat.block_sparse import BlockSparsity, cluster_centroids, grid_cluster, sort_clusters

SIGMA = 0.01


def make_points(n: int, seed: int = 0) -> np.ndarray:
    """``n`` points around 12 centres of the unit square (float64)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.15, 0.85, (12, 2))
    return np.clip(centres[rng.integers(0, 12, n)] + rng.normal(0, 0.07, (n, 2)), 0, 1)


def kernel(x: Any) -> lm.LazyMatrix:
    return (-lm.Vi(x).sqdist(lm.Vj(x)) / (2 * SIGMA**2)).exp()


def near_blocks(x: np.ndarray, voxel: float) -> tuple[np.ndarray, BlockSparsity, np.ndarray]:
    """The points sorted by cell, the block pairs within reach, and the cluster mask."""
    perm, bounds = sort_clusters(grid_cluster(x, voxel))
    xs = x[perm]
    c, _ = cluster_centroids(xs, bounds)
    reach = 6 * SIGMA + 2 * np.sqrt(2) * voxel
    near = ((c[:, None] - c[None]) ** 2).sum(-1) <= reach**2
    return perm, BlockSparsity.from_mask(bounds, bounds, near), near


def run(n: int = 50_000, out: str | None = None, chunks: int = 4, seed: int = 0) -> dict[str, Any]:
    """The three densities (in the input order), their times and the share of pairs visited."""
    x = make_points(n, seed)
    t0 = time.perf_counter()
    full = np.asarray(kernel(x).sum(axis=1))[:, 0]
    t_full = time.perf_counter() - t0

    t0 = time.perf_counter()
    perm, ranges, near = near_blocks(x, voxel=2 * SIGMA)
    sparse = np.empty(n)
    sparse[perm] = np.asarray(kernel(x[perm]).sum(axis=1, ranges=ranges))[:, 0]
    t_sparse = time.perf_counter() - t0

    result: dict[str, Any] = {
        "x": x,
        "full": full,
        "sparse": sparse,
        "density": ranges.density(),
        "seconds": {"every pair": t_full, "block-sparse": t_sparse},
    }
    try:
        import dask
        import dask.array as da

        import lazymat_dask  # noqa: F401  (the dask backend's plugin)
    except ImportError:  # lazymat-dask is an optional plugin
        result["dask"] = None
    else:
        t0 = time.perf_counter()
        xd = da.from_array(x[perm], chunks=(-(-n // chunks), 2))
        with dask.config.set(scheduler="threads"):
            summed = kernel(xd).sum(axis=1, ranges=ranges).compute()
        result["dask"] = np.empty(n)
        result["dask"][perm] = np.asarray(summed)[:, 0]
        result["seconds"][f"dask, {chunks} chunks"] = time.perf_counter() - t0

    if out is not None:
        plot(result, near, out)
    return result


def plot(r: dict[str, Any], near: np.ndarray, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, n = r["x"], len(r["x"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    shown = np.random.default_rng(1).permutation(n)[:20_000]
    axes[0].scatter(x[shown, 0], x[shown, 1], c=np.log10(r["sparse"][shown]), s=1, cmap="viridis")
    axes[0].set_title(f"log10 density, N = {n:,}")
    axes[0].set_aspect("equal")
    axes[1].spy(near, markersize=0.5)
    axes[1].xaxis.tick_bottom()
    axes[1].set_title(f"cell pairs kept: {r['density']:.2%} of the N x N pairs")
    names, seconds = list(r["seconds"]), list(r["seconds"].values())
    axes[2].barh(names, seconds, color=["0.6", "tab:blue", "tab:orange"][: len(names)])
    axes[2].set_xlabel("seconds")
    axes[2].set_title("time of one density (this machine)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="points")
    parser.add_argument("--chunks", type=int, default=4, help="dask row chunks")
    parser.add_argument("--out", default=None, help="PNG of the density, the kept blocks and the times")
    args = parser.parse_args()
    r = run(args.n, args.out, args.chunks)
    error = np.abs(r["sparse"] - r["full"]).max() / r["full"].max()
    print(f"N = {args.n:,}: block-sparse visits {r['density']:.2%} of the pairs, largest error {error:.1e}")
    if r["dask"] is None:
        print("dask: lazymat-dask is not installed")
    else:
        gap = np.abs(r["dask"] - r["sparse"]).max() / r["sparse"].max()
        print(f"dask vs in-process block-sparse: largest difference {gap:.1e}")
    for name, seconds in r["seconds"].items():
        print(f"  {name}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
