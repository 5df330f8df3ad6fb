r"""A hyperbolic embedding of tree-structured data
==============================================

lazymat's Poincare k-NN fed to UMAP.

Points are sampled around the nodes of a random tree grown in the 5-D hyperbolic space
(branching 3, depth ``depth``, edges of hyperbolic length 1.5, the exponential growth of
the space holding the tree's) and drawn in the Poincare ball, where deep nodes lie close
to the boundary (:math:`|x|` up to 0.9991 at depth 5, 0.9998 at depth 6).
``lazymat.ml.knn(metric="poincare")`` computes the exact hyperbolic k-NN, with the distance
:math:`\operatorname{arcosh}(1 + 2|x - y|^2 / ((1 - |x|^2) (1 - |y|^2)))` in its stable
form, as one K-min reduction; umap-learn takes it as ``precomputed_knn`` and lays the graph
out in the hyperboloid model, drawn here in the Poincare disk. The printed purity is the
share of k-NN pairs whose points share their first-level branch (the tree's structure, as
the k-NN graph sees it).

Run ``python examples/hyperbolic_embedding.py --depth 6 --out hyperbolic.png``
(umap-learn compiles its numba code on first use: about a minute).
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np

from lazymat.ml import knn, lorentz_to_poincare


def _exp(p: np.ndarray, u: np.ndarray, length: np.ndarray) -> np.ndarray:
    """exp_p along the tangent direction of u, over a hyperbolic length (Lorentz model, rows)."""
    inner = -p[:, :1] * u[:, :1] + (p[:, 1:] * u[:, 1:]).sum(1, keepdims=True)  # <p, u>_L
    v = u + inner * p  # projected onto the tangent space at p
    norm = np.sqrt(np.maximum(-(v[:, :1] ** 2) + (v[:, 1:] ** 2).sum(1, keepdims=True), 1e-300))
    q = np.cosh(length) * p + np.sinh(length) * v / norm
    q[:, 0] = np.sqrt(1 + (q[:, 1:] ** 2).sum(1))  # back onto the hyperboloid (rounding drifts off it)
    return q


def make_tree(
    depth: int, per_node: int, dim: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points in the Poincare ball, node depth, first-level branch) of a random hyperbolic tree.

    Each node has 3 children at hyperbolic distance 1.5 in random directions (geodesics of
    the hyperboloid model); points are scattered around each node (tangent Gaussian noise).
    """
    rng = np.random.default_rng(seed)
    nodes = np.zeros((1, dim + 1))
    nodes[0, 0] = 1.0  # the origin of the hyperboloid
    depths, branches = [0], [-1]
    frontier = [0]
    for level in range(1, depth + 1):
        parents = np.repeat(np.array(frontier), 3)
        children = _exp(
            nodes[parents], rng.standard_normal((len(parents), dim + 1)), np.full((len(parents), 1), 1.5)
        )
        first = len(nodes)
        nodes = np.concatenate([nodes, children])
        depths += [level] * len(parents)
        branches += [i % 3 if level == 1 else branches[p] for i, p in enumerate(parents)]
        frontier = list(range(first, len(nodes)))
    centers = np.repeat(nodes, per_node, axis=0)
    noise = np.abs(rng.normal(0, 0.15, (len(centers), 1)))
    points = _exp(centers, rng.standard_normal(centers.shape), noise)
    return lorentz_to_poincare(points), np.repeat(depths, per_node), np.repeat(branches, per_node)


def purity(idx: np.ndarray, branch: np.ndarray) -> float:
    inner = branch >= 0
    same = branch[idx[:, 1:]] == branch[:, None]
    return float(same[inner].mean())


def run(depth: int = 5, per_node: int = 8, k: int = 15, out: str | None = None) -> dict[str, Any]:
    x, level, branch = make_tree(depth, per_node)
    t0 = time.perf_counter()
    dist, idx = knn(x, x, k=k, metric="poincare", exclude_self=False)  # UMAP wants each point first
    seconds = time.perf_counter() - t0
    result = {
        "n": len(x),
        "max_norm": float(np.linalg.norm(x, axis=1).max()),
        "knn_seconds": seconds,
        "purity": purity(np.asarray(idx), branch),
    }
    if out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no NNDescent index with a precomputed k-NN: no transform
            reducer = umap.UMAP(
                n_neighbors=k, output_metric="hyperboloid", random_state=0, precomputed_knn=(idx, dist)
            )
            emb = reducer.fit_transform(x)
        z = np.sqrt(1 + (emb**2).sum(1, keepdims=True))
        disk = emb / (1 + z)
        fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
        axes[0].scatter(x[:, 0], x[:, 1], c=level, cmap="viridis", s=2)
        axes[0].set_title(
            f"data: N = {len(x):,} points in the 5-D Poincare ball\n(first two coordinates, colour: depth)"
        )
        axes[1].scatter(
            disk[:, 0], disk[:, 1], c=np.where(branch < 0, 3, branch), cmap="Set1", s=2 + 6 / (1 + level)
        )
        axes[1].set_title("UMAP of lazymat's Poincare k-NN, Poincare disk\n(colour: first-level branch)")
        for ax in axes:
            ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="k", lw=0.5))
            ax.set_xlim(-1.05, 1.05)
            ax.set_ylim(-1.05, 1.05)
            ax.set_aspect("equal")
        fig.tight_layout()
        fig.savefig(out, dpi=110)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    ap.add_argument("--depth", type=int, default=5, help="tree depth (3^depth leaves)")
    ap.add_argument("--per-node", type=int, default=8, help="points sampled around each node")
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument(
        "--out", default=None, help="PNG of the data and of the UMAP embedding (needs umap-learn)"
    )
    args = ap.parse_args()
    r = run(args.depth, args.per_node, args.k, args.out)
    print(
        f"N = {r['n']:,} points (max |x| = {r['max_norm']:.6f}); Poincare k-NN in {r['knn_seconds']:.2f} s; "
        f"k-NN pairs within one first-level branch: {r['purity']:.3f}"
    )


if __name__ == "__main__":
    main()
