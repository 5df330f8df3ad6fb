"""lazymat.ml (issue 20) against FAISS (faiss-cpu) and scikit-learn: exact k-NN and K-means.

``ml_knn``: the K = 10 nearest of M = 10^4 query points among N = 10^5 and 10^6 data
points, D = 3 and 50, float32, uniform in the unit cube (the seed's comparison with FAISS's
brute force, queries against a database). Ours: ``lazymat.ml.knn`` by brute force (one
K-min reduction, the native-cpu engine on numpy) and, at D = 3, by the grid's block-sparse
search (cells built in the timed call); FAISS ``IndexFlatL2`` (exact, BLAS + heaps; adding
the points to the flat index, a copy, is outside the timing); scikit-learn
``NearestNeighbors`` brute force and, at D = 3, its KD-tree (exact too, built and queried
in the timed call, as our grid). Results are compared by the float64 distances of the
neighbours each side returned (near-ties may swap indices in float32).

``ml_kmeans``: 10 Lloyd iterations, K = 100 centers, N = 10^6 points (uniform in the
unit cube, D = 3 and 50), from the same initial centers (the first K points). Ours:
``lazymat.ml.KMeans(init=..., max_iter=10, tol=0)``; scikit-learn ``KMeans(algorithm=
"lloyd", n_init=1, tol=0)``; FAISS ``Kmeans(niter=10)`` with ``max_points_per_centroid``
raised so that it uses every point (its default subsamples 256 points per centroid).
Both ours and scikit-learn's label the points once more after the last update; FAISS
does not. Compared by the inertia of the final centers, recomputed in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from benchmarks import workloads as w

from .harness import Case, Contender, Result, Task
from .peer_reductions import need
from .tasks import rel_neighbour_distances, rel_value

K_NEIGHBOURS = 10
QUERIES = 10_000
CENTERS = 100
ITERATIONS = 10


@dataclass(frozen=True)
class QueryCase(Case):
    """N data points, M query points (M stays fixed when the harness probes smaller N)."""

    def scaled(self, factor: float) -> Case:
        return QueryCase(max(64, int(self.n * factor)), self.m, self.d)


@dataclass(frozen=True)
class KMeansCase(Case):
    """N points, M = K centers (fixed when the harness probes smaller N)."""

    @property
    def label(self) -> str:
        return f"N={self.n:,} K={self.m} D={self.d}"

    def scaled(self, factor: float) -> Case:
        return KMeansCase(max(4 * self.m, int(self.n * factor)), self.m, self.d)


def knn_data(case: Case) -> dict[str, np.ndarray]:
    """Queries x (M, D) and data y (N, D): the names ``rel_neighbour_distances`` reads."""
    return {"x": w.points(case.m, case.d, 3), "y": w.points(case.n, case.d, 4)}


def kmeans_data(case: Case) -> dict[str, np.ndarray]:
    x = w.points(case.n, case.d, 5)
    return {"x": x, "init": x[: case.m].copy()}


def _indices(out: Any) -> Result:
    return Result(array=np.asarray(out))


# -- k-NN --------------------------------------------------------------------------------------
def ours_knn(method: str) -> Contender:
    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        from lazymat.ml import knn

        if method == "grid" and case.d > 3:
            raise NotImplementedError("the grid search is for D <= 3 (it would visit every cell)")
        x, y = data["x"], data["y"]
        return lambda: knn(x, y, k=K_NEIGHBOURS, metric="sqeuclidean", method=method)[1]

    return Contender(f"lazymat.ml knn, {method} (numpy)", True, setup, _indices)


def faiss_flat() -> Contender:
    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        faiss = need("faiss")
        index = faiss.IndexFlatL2(case.d)
        index.add(data["y"])
        x = data["x"]
        return lambda: index.search(x, K_NEIGHBOURS)[1]

    return Contender("FAISS IndexFlatL2", False, setup, _indices)


def sklearn_knn(algorithm: str) -> Contender:
    """Brute force (fitted before the timing: fit only stores the points), or the KD-tree built
    and queried in the timed call (our grid search builds its cells in the call too)."""

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        neighbors = need("sklearn.neighbors")
        x, y = data["x"], data["y"]
        if algorithm == "brute":
            nn = neighbors.NearestNeighbors(n_neighbors=K_NEIGHBOURS, algorithm="brute").fit(y)
            return lambda: nn.kneighbors(x, return_distance=False)
        if case.d > 3:
            raise NotImplementedError("the KD-tree is run at D = 3 only (high dimension: brute force wins)")

        def tree() -> Any:
            return neighbors.KDTree(y).query(x, k=K_NEIGHBOURS, return_distance=False)

        return tree

    name = "brute" if algorithm == "brute" else "KDTree, build + query"
    return Contender(f"scikit-learn NearestNeighbors ({name})", False, setup, _indices)


# -- K-means -----------------------------------------------------------------------------------
def inertia(x: np.ndarray, centers: np.ndarray, chunk: int = 50_000) -> float:
    """sum_i min_k |x_i - c_k|^2 in float64, by chunks of rows."""
    c = np.asarray(centers, dtype=np.float64)
    c2 = (c**2).sum(1)
    total = 0.0
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].astype(np.float64)
        d2 = (part**2).sum(1)[:, None] - 2 * part @ c.T + c2[None, :]
        total += float(np.maximum(d2.min(1), 0).sum())
    return total


def _kmeans_contender(name: str, ours: bool, fit: Callable[[np.ndarray, np.ndarray], Any]) -> Contender:
    holder: dict[str, np.ndarray] = {}

    def setup(data: dict[str, Any], case: Case) -> Callable[[], Any]:
        holder["x"] = data["x"]
        x, init = data["x"], data["init"]
        return lambda: fit(x, init)

    def collect(centers: Any) -> Result:
        return Result(value=inertia(holder["x"], np.asarray(centers)))

    return Contender(name, ours, setup, collect)


def ours_kmeans() -> Contender:
    def fit(x: np.ndarray, init: np.ndarray) -> Any:
        from lazymat.ml import KMeans

        return KMeans(init.shape[0], init=init, max_iter=ITERATIONS, tol=0.0).fit(x).cluster_centers_

    return _kmeans_contender("lazymat.ml KMeans (numpy)", True, fit)


def sklearn_kmeans() -> Contender:
    def fit(x: np.ndarray, init: np.ndarray) -> Any:
        cluster = need("sklearn.cluster")
        km = cluster.KMeans(
            init.shape[0], init=init, n_init=1, max_iter=ITERATIONS, tol=0.0, algorithm="lloyd"
        )
        return km.fit(x).cluster_centers_

    return _kmeans_contender("scikit-learn KMeans (lloyd)", False, fit)


def faiss_kmeans() -> Contender:
    def fit(x: np.ndarray, init: np.ndarray) -> Any:
        faiss = need("faiss")
        k = init.shape[0]
        km = faiss.Kmeans(x.shape[1], k, niter=ITERATIONS, max_points_per_centroid=x.shape[0], seed=0)
        km.train(x, init_centroids=init)
        return km.centroids

    return _kmeans_contender("FAISS Kmeans", False, fit)


# -- tasks -------------------------------------------------------------------------------------
def ml_task(name: str, quick: bool) -> Task:
    if name == "ml_knn":
        sizes = [2_000] if quick else [100_000, 1_000_000]
        queries = 200 if quick else QUERIES
        return Task(
            name,
            f"lazymat.ml exact k-NN, K = {K_NEIGHBOURS}, M = {queries:,} queries against N points",
            [QueryCase(n, queries, d) for d in (3, 50) for n in sizes],
            knn_data,
            [ours_knn("brute"), ours_knn("grid"), faiss_flat(), sklearn_knn("brute"), sklearn_knn("kd_tree")],
            rel_neighbour_distances,
            tolerance=1e-4,
            weight=1.5,
            description=(
                "float32, points uniform in the unit cube; N data points, M queries (the N column); "
                "indices compared through the float64 distances of the neighbours each side returned. "
                "FAISS's flat index is filled before the timing; scikit-learn's KD-tree and our grid "
                "are built in the timed call."
            ),
        )
    if name == "ml_kmeans":
        n = 20_000 if quick else 1_000_000
        return Task(
            name,
            f"lazymat.ml K-means, {ITERATIONS} Lloyd iterations, K = {CENTERS if not quick else 20} centers",
            [KMeansCase(n, 20 if quick else CENTERS, d) for d in (3, 50)],
            kmeans_data,
            [ours_kmeans(), sklearn_kmeans(), faiss_kmeans()],
            rel_value,
            tolerance=1e-4,
            work=lambda c: float(c.n) * c.m * (c.d + 3) * ITERATIONS,
            weight=1.0,
            description=(
                "float32, points uniform in the unit cube, initial centers the first K points; "
                "the value compared is the inertia of the final centers, recomputed in float64."
            ),
        )
    raise ValueError(f"unknown lazymat.ml task {name!r}")
