"""K-means: Lloyd's iterations on argmin reductions, k-means++ seeding, any metric.

One Lloyd iteration, for points x (N, D) and centers c (K, D):

1. assign: ``key(x_i, c_k).min_argmin(axis=1)`` -- one reduction, the N-by-K distance
   matrix is never stored;
2. update: the mean of each cluster. The points are sorted by label (a stable sort of
   16-bit labels when K < 2^15, numpy's radix sort) and each cluster's sum is a
   block-sparse sum reduction over its contiguous block (:mod:`lazymat.block_sparse`):
   O(N D) work, on the points' backend, in blocked (accurate) summation;
3. empty clusters (a center no point chose) are recovered as scikit-learn does: the
   points farthest from their centers (largest distance first, ties by lower index)
   become the centers of the empty clusters, one each, and leave their old clusters'
   means;
4. stop when the labels did not change (the centers are then a fixed point), or when the
   squared shift of the centers is at most ``tol`` times the mean variance of the
   coordinates (scikit-learn's ``tol``). Without strict convergence, the labels are
   computed once more with the final centers.

The objective (``inertia_``) is the sum of the metric's distances of the points to their
centers: squared Euclidean distances for the default ``metric="sqeuclidean"`` (the same
iterations and inertia as scikit-learn's ``KMeans(algorithm="lloyd")``). For other
metrics the centers are still the coordinate-wise means of the points as given (Lloyd's
heuristic; normalise the points first for spherical k-means with the cosine metric),
mapped back onto the space by :attr:`Metric.centroid` (the Lorentz model's hyperboloid).

k-means++ (Arthur & Vassilvitskii, 2007; greedy, with 2 + log K local trials as in
scikit-learn) samples each new center with probability proportional to the current
distance potential (squared distance for the default metric); the potential of each
candidate, sum_i min(d_i, d(x_i, candidate)), is one reduction over i.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin

import lazymat
from lazymat.block_sparse import BlockSparsity

from .metrics import Formula, Metric, get_metric
from .points import as_points, host, not_fitted, plain, same_library

logger = logging.getLogger("lazymat.ml.kmeans")


def _rng(random_state: Any) -> np.random.RandomState:
    if isinstance(random_state, np.random.RandomState):
        return random_state
    return np.random.RandomState(random_state)


def _check_k(n_clusters: int, n: int) -> None:
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    if n_clusters > n:
        raise ValueError(f"n_clusters={n_clusters} clusters but only {n} points: n_clusters must be <= N")


def _column(xp: Any, values: Any) -> Any:
    return xp.reshape(values, (-1,))


def kmeans_plusplus(
    X: Any,
    n_clusters: int,
    *,
    metric: str | Metric | Formula = "sqeuclidean",
    random_state: Any = None,
    n_local_trials: int | None = None,
) -> tuple[Any, np.ndarray]:
    """(centers, indices): ``n_clusters`` points of ``X`` chosen by greedy k-means++."""
    x, xp, backend = as_points(X, "X")
    metric = get_metric(metric)
    n = x.shape[0]
    _check_k(n_clusters, n)
    rng = _rng(random_state)
    trials = 2 + int(math.log(n_clusters)) if n_local_trials is None else int(n_local_trials)
    px = metric.prepare(xp, x, "X")
    device = backend.device(x)

    def distances(idx: np.ndarray) -> Any:
        cand = xp.take(px, backend.from_numpy(idx, device), axis=0)
        return metric.formula(lazymat.Vi(px), lazymat.Vj(cand))

    first = int(rng.choice(n, p=np.full(n, 1.0 / n)))
    chosen = [first]
    closest = _column(xp, distances(np.array([first])).sum(axis=1))
    potential = float(xp.sum(closest))
    for _ in range(1, n_clusters):
        cumulative = np.cumsum(host(closest).astype(np.float64))
        draws = rng.uniform(size=trials) * potential
        cand = np.minimum(np.searchsorted(cumulative, draws), n - 1)
        pots = host(_column(xp, (lazymat.Vi(closest).minimum(distances(cand))).sum(axis=0)))
        best = int(np.argmin(pots))
        chosen.append(int(cand[best]))
        closest = xp.minimum(closest, _column(xp, distances(cand[best : best + 1]).sum(axis=1)))
        potential = float(pots[best])
    indices = np.array(chosen)
    return xp.take(x, backend.from_numpy(indices, device), axis=0), indices


def cluster_sums(x: Any, labels: Any, n_clusters: int) -> tuple[Any, np.ndarray]:
    """(sums (K, D), counts (K,) on the host) of the points of each cluster: sort + block-sparse sum."""
    backend = lazymat.backend_for(x)
    xp = backend.namespace(x)
    small = xp.int16 if n_clusters < 2**15 else xp.int32 if n_clusters < 2**31 else xp.int64
    labels = xp.astype(_column(xp, labels), small)
    order = xp.argsort(labels, stable=True)
    edges = xp.searchsorted(
        xp.take(labels, order), xp.arange(n_clusters + 1, dtype=small, device=backend.device(labels))
    )
    counts = np.diff(host(edges).astype(np.int64))
    nonempty = np.flatnonzero(counts > 0)
    bounds = np.concatenate([[0], np.cumsum(counts[nonempty])])
    ranges = BlockSparsity.from_block_pairs(
        np.arange(n_clusters + 1), bounds, nonempty, np.arange(nonempty.size)
    )
    rows = lazymat.Vi(xp.zeros((n_clusters, 1), dtype=x.dtype, device=backend.device(x)))
    sums = (0.0 * rows + lazymat.Vj(xp.take(x, order, axis=0))).sum(axis=1, ranges=ranges)
    return sums, counts


def _relocate_empty(
    xp: Any, x: Any, sums: Any, counts: np.ndarray, labels: Any, dist: Any
) -> tuple[Any, np.ndarray]:
    """Move the points farthest from their centers into the empty clusters (scikit-learn's recovery)."""
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return sums, counts
    far = np.argsort(-host(dist).astype(np.float64), kind="stable")[: empty.size]
    logger.info("k-means: %d empty clusters get the points farthest from their centers", empty.size)
    sums_h, counts = host(sums).astype(np.float64).copy(), counts.copy()
    points, owners = host(x)[far].astype(np.float64), host(labels).reshape(-1)[far]
    for cluster, point, owner in zip(empty, points, owners, strict=True):
        sums_h[owner] -= point
        counts[owner] -= 1
        sums_h[cluster] = point
        counts[cluster] = 1
    backend = lazymat.backend_for(x)
    return xp.astype(backend.from_numpy(sums_h, backend.device(x)), x.dtype), counts


def lloyd(x: Any, centers: Any, *, metric: Metric, max_iter: int, tol: float) -> tuple[Any, Any, float, int]:
    """(centers, labels, inertia, iterations) of Lloyd's algorithm from ``centers`` (see module docstring)."""
    backend = lazymat.backend_for(x)
    xp = backend.namespace(x)
    k = centers.shape[0]
    px = metric.prepare(xp, x, "X")

    def assign(c: Any) -> tuple[Any, Any]:
        values, labels = metric.key(lazymat.Vi(px), lazymat.Vj(metric.prepare(xp, c, "centers"))).min_argmin()
        return _column(xp, values), _column(xp, labels)

    previous = None
    strict = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        values, labels = assign(centers)
        sums, counts = cluster_sums(x, labels, k)
        sums, counts = _relocate_empty(xp, x, sums, counts, labels, metric.to_distance(xp, values))
        count_arr = xp.astype(backend.from_numpy(counts, backend.device(x)), x.dtype)
        new = metric.centroid(xp, sums / xp.reshape(count_arr, (k, 1)))
        shift = float(xp.sum((new - centers) ** 2))
        centers = new
        if previous is not None and bool(xp.all(labels == previous)):
            strict = True
            break
        if shift <= tol:
            break
        previous = labels
    if not strict:
        values, labels = assign(centers)
    inertia = float(xp.sum(metric.to_distance(xp, values)))
    return centers, labels, inertia, it


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """K-means with any metric (scikit-learn's ``KMeans`` interface, Lloyd's algorithm).

    ``init``: ``"k-means++"``, ``"random"`` (distinct points drawn uniformly) or an array of
    centers (K, D). ``n_init`` runs keep the lowest inertia. ``labels_`` and ``predict``
    return int64 arrays of X's library; ``transform`` the (N, K) metric distances
    (squared Euclidean for the default metric, where scikit-learn returns Euclidean).
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        metric: str | Metric | Formula = "sqeuclidean",
        random_state: Any = None,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.metric = metric
        self.random_state = random_state

    def _initial(self, x: Any, rng: np.random.RandomState) -> Any:
        metric = get_metric(self.metric)
        if isinstance(self.init, str):
            if self.init == "k-means++":
                return kmeans_plusplus(x, self.n_clusters, metric=metric, random_state=rng)[0]
            if self.init == "random":
                idx = rng.choice(x.shape[0], self.n_clusters, replace=False)
                backend = lazymat.backend_for(x)
                return backend.namespace(x).take(x, backend.from_numpy(idx, backend.device(x)), axis=0)
            raise ValueError(f"init must be 'k-means++', 'random' or an array of centers, got {self.init!r}")
        centers = same_library(self.init, x, "init", "X", cast=True)
        if centers.shape[0] != self.n_clusters:
            raise ValueError(f"init has {centers.shape[0]} centers but n_clusters={self.n_clusters}")
        return centers

    def fit(self, X: Any, y: Any = None) -> KMeans:
        x, xp, _ = as_points(X, "X")
        _check_k(self.n_clusters, x.shape[0])
        metric = get_metric(self.metric)
        rng = _rng(self.random_state)
        tol = self.tol * float(xp.mean(xp.var(x, axis=0)))
        runs = 1 if not isinstance(self.init, str) else self.n_init
        best = None
        for _ in range(runs):
            centers = self._initial(x, rng)
            result = lloyd(x, centers, metric=metric, max_iter=self.max_iter, tol=tol)
            if best is None or result[2] < best[2]:
                best = result
        assert best is not None
        self.cluster_centers_, self.labels_, self.inertia_, self.n_iter_ = best
        self.n_features_in_ = int(x.shape[1])
        return self

    def _key(self, X: Any) -> Any:
        not_fitted(self, "cluster_centers_")
        centers = plain(self.cluster_centers_)
        x = same_library(X, centers, "X", type(self).__name__, cast=True)
        xp = lazymat.backend_for(x).namespace(x)
        metric = get_metric(self.metric)
        px, pc = metric.prepare(xp, x, "X"), metric.prepare(xp, centers, "centers")
        return metric.key(lazymat.Vi(px), lazymat.Vj(pc))

    def predict(self, X: Any) -> Any:
        """Index of the nearest center of each point (int64, X's library)."""
        return self._key(X).argmin(axis=1)[:, 0]

    def transform(self, X: Any) -> Any:
        """(N, K) distances of the points to the centers, under the metric."""
        key = self._key(X)
        centers = plain(self.cluster_centers_)
        xp = lazymat.backend_for(centers).namespace(centers)
        k = self.n_clusters
        eye = xp.eye(k, dtype=centers.dtype, device=lazymat.backend_for(centers).device(centers))
        return get_metric(self.metric).to_distance(xp, (key * lazymat.Vj(eye)).sum(axis=1))

    def score(self, X: Any, y: Any = None) -> float:
        """Opposite of the inertia of ``X`` with the fitted centers."""
        values = self._key(X).min(axis=1)
        xp = lazymat.backend_for(values).namespace(values)
        return -float(xp.sum(get_metric(self.metric).to_distance(xp, values)))
