"""k-NN classification
===================

With ``lazymat.ml``: the decision regions of three interleaved classes.

``n`` training points of three classes (two moons and a blob, with label noise) and a
``grid`` x ``grid`` lattice of query points; ``KNeighborsClassifier`` (scikit-learn's
interface) votes among the k nearest training points of every query, each search one
K-min reduction (no N x M distance matrix). The accuracy on held-out points is printed
next to scikit-learn's, which must agree (both are exact k-NN with the same votes).

Run ``python examples/knn_classification.py --n 20000 --grid 400 --out knn.png``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from sklearn import datasets
from sklearn.neighbors import KNeighborsClassifier as SkKNN

from lazymat.ml import KNeighborsClassifier


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    moons, labels = datasets.make_moons(2 * n // 3, noise=0.15, random_state=seed)
    blob = np.random.default_rng(seed).normal([0.5, -0.9], 0.25, (n - len(moons), 2))
    x = np.concatenate([moons, blob])
    y = np.concatenate([labels, np.full(len(blob), 2)])
    flip = np.random.default_rng(seed + 1).random(n) < 0.05  # label noise
    y[flip] = np.random.default_rng(seed + 2).integers(0, 3, flip.sum())
    return x, y


def run(n: int = 3000, grid: int = 150, k: int = 15, out: str | None = None, seed: int = 0) -> dict[str, Any]:
    x, y = make_data(n, seed)
    test_x, test_y = make_data(n // 2, seed + 10)
    t0 = time.perf_counter()
    clf = KNeighborsClassifier(k, weights="distance").fit(x, y)
    accuracy = float((clf.predict(test_x) == test_y).mean())
    lo, hi = x.min(0) - 0.3, x.max(0) + 0.3
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    regions = clf.predict(np.c_[gx.ravel(), gy.ravel()]).reshape(grid, grid)
    seconds = time.perf_counter() - t0
    reference = SkKNN(k, weights="distance").fit(x, y).score(test_x, test_y)
    result = {"accuracy": accuracy, "sklearn_accuracy": float(reference), "seconds": seconds}
    if out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap

        colours = ListedColormap(["#e41a1c", "#377eb8", "#4daf4a"])
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.contourf(gx, gy, regions, levels=[-0.5, 0.5, 1.5, 2.5], cmap=colours, alpha=0.25)
        shown = np.random.default_rng(0).permutation(n)[:3000]
        ax.scatter(x[shown, 0], x[shown, 1], c=y[shown], cmap=colours, s=4, vmin=0, vmax=2)
        ax.set_title(f"k-NN (k = {k}, distance weights), N = {n:,}: test accuracy {accuracy:.3f}")
        fig.tight_layout()
        fig.savefig(out, dpi=120)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="training points")
    ap.add_argument("--grid", type=int, default=150, help="query lattice side")
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--out", default=None, help="PNG of the decision regions")
    args = ap.parse_args()
    r = run(args.n, args.grid, args.k, args.out)
    print(
        f"test accuracy {r['accuracy']:.4f} (scikit-learn {r['sklearn_accuracy']:.4f}), "
        f"fit + {args.grid**2:,} queries in {r['seconds']:.2f} s"
    )


if __name__ == "__main__":
    main()
