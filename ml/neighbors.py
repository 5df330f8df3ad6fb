"""Exact K-nearest neighbours with any metric given as a formula, kNN graphs, and their estimators.

``knn(x, y, k=10)`` returns the distances and indices of the k points of ``y`` nearest to
each point of ``x``: one ``Kmin_argKmin`` reduction of the metric's key (the squared
distance for the Euclidean metric, see :mod:`lazymat.ml.metrics`) over j, in linear
memory, on the points' backend; the distances are computed from the key on the k
selected entries only. Rows are sorted by distance, ties by lower index (lazymat's
K-min merge), the convention of scikit-learn's and FAISS's brute force.

``knn(x, k=10)`` (no ``y``) searches ``x`` in itself and leaves each point out of its
own neighbours, by scikit-learn's rule: query k + 1, drop the point itself, or, when
k + 1 duplicates of lower index hide it, drop the first column (a duplicate at distance 0).

For the Euclidean metrics in dimension <= 3, ``method="grid"`` (chosen by ``"auto"`` from
10^8 pairs on) runs block-sparse reductions on a grid of cells (:mod:`lazymat.ml.neighbors_grid`):
same distances, and the same indices, since rows where the k-th and (k+1)-th distances
tie are recomputed by brute force.

The estimators :class:`NearestNeighbors` and :class:`KNeighborsClassifier` follow
scikit-learn's conventions (``fit``, ``kneighbors``, ``kneighbors_graph``, ``predict``,
``predict_proba``; ``get_params`` from ``sklearn.base.BaseEstimator``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

import lazymat

from .metrics import Formula, Metric, get_metric
from .neighbors_grid import grid_kmin
from .points import as_points, host, not_fitted, plain, same_library

#: "auto" uses the grid search for Euclidean metrics in D <= GRID_MAX_DIM from GRID_MIN_PAIRS pairs on
GRID_MAX_DIM = 3
GRID_MIN_PAIRS = 10**8
METHODS = ("auto", "brute", "grid")


def _choose(method: str, metric: Metric, dim: int, n: int, m: int) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "grid" and not metric.squared_euclidean:
        raise ValueError(f"method='grid' needs a Euclidean metric, got {metric.name!r}; use method='brute'")
    if method == "auto":
        big = float(n) * m >= GRID_MIN_PAIRS
        return "grid" if metric.squared_euclidean and dim <= GRID_MAX_DIM and big else "brute"
    return method


def _rows_where(xp: Any, backend: Any, mask: Any, fixed: Any, values: Any) -> Any:
    """``values`` with the rows where ``mask`` holds replaced by the rows of ``fixed``, in order."""
    pos = xp.cumulative_sum(xp.astype(mask, xp.int64)) - 1
    pos = xp.where(mask, pos, xp.zeros_like(pos))
    return xp.where(mask[:, None], xp.take(fixed, pos, axis=0), values)


def _search(px: Any, py: Any, k: int, metric: Metric, method: str, voxel: float | None) -> tuple[Any, Any]:
    """(keys, indices) of the k smallest keys per row, ties by lower index."""
    backend = lazymat.backend_for(px)
    xp = backend.namespace(px)
    key = metric.key(lazymat.Vi(px), lazymat.Vj(py))
    if key.dim != 1:
        raise ValueError(f"the metric {metric.name!r} gives formulas of dimension {key.dim}, expected 1")
    if _choose(method, metric, px.shape[1], px.shape[0], py.shape[0]) == "brute":
        return key.Kmin_argKmin(k, axis=1)
    m = py.shape[0]
    extra = 1 if k < m else 0  # one more, to see ties at the k-th place
    values, idx = grid_kmin(px, py, k + extra, backend, voxel)
    if extra:
        tied = values[:, k - 1] == values[:, k]
        if bool(xp.any(tied)):
            rows = backend.from_numpy(np.flatnonzero(host(tied)), backend.device(px))
            sub = metric.key(lazymat.Vi(xp.take(px, rows, axis=0)), lazymat.Vj(py))
            fixed_values, fixed_idx = sub.Kmin_argKmin(k, axis=1)
            values = _rows_where(xp, backend, tied, fixed_values, values[:, :k])
            idx = _rows_where(xp, backend, tied, fixed_idx, idx[:, :k])
    return values[:, :k], idx[:, :k]


def _drop_self(xp: Any, backend: Any, values: Any, idx: Any, k: int) -> tuple[Any, Any]:
    """scikit-learn's rule: drop the point itself, else (hidden by duplicates) the first column."""
    n = idx.shape[0]
    device = backend.device(idx)
    is_self = idx == xp.reshape(xp.arange(n, dtype=idx.dtype, device=device), (n, 1))
    first = xp.reshape(xp.arange(k + 1, device=device) == 0, (1, k + 1))
    drop = is_self | (first & ~xp.any(is_self, axis=1, keepdims=True))
    # the k kept columns of each row, in order (a stable sort puts the one dropped last);
    # no boolean mask, whose result has an unknown shape on lazy libraries (dask)
    keep = xp.argsort(xp.astype(drop, xp.int8), axis=1, stable=True)[:, :k]
    return xp.take_along_axis(values, keep, axis=1), xp.take_along_axis(idx, keep, axis=1)


def knn(
    x: Any,
    y: Any | None = None,
    *,
    k: int,
    metric: str | Metric | Formula = "euclidean",
    exclude_self: bool | None = None,
    method: str = "auto",
    voxel: float | None = None,
) -> tuple[Any, Any]:
    """Distances and indices (shapes (N, k)) of the ``k`` points of ``y`` nearest to each point of ``x``.

    ``y=None`` searches ``x`` in itself and, by default, leaves each point out of its own
    neighbours (``exclude_self``). ``method``: ``"brute"`` (one reduction), ``"grid"``
    (block-sparse, Euclidean metrics, low dimension; ``voxel`` sets the cell width) or
    ``"auto"``. Indices are int64 arrays of the inputs' library.
    """
    metric = get_metric(metric)
    x, xp, backend = as_points(x, "x")
    same = y is None
    y = x if same else same_library(y, x, "y", "x")
    exclude = same if exclude_self is None else bool(exclude_self)
    if exclude and y.shape[0] != x.shape[0]:
        raise ValueError(
            f"exclude_self pairs query i with data point i, but x has {x.shape[0]} points and y {y.shape[0]}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    need = int(k) + exclude
    if need > y.shape[0]:
        raise ValueError(
            f"k={k} neighbours requested but the data has only {y.shape[0]} points"
            + (" (each point is left out of its own neighbours: k must be < N)" if exclude else "")
        )
    px = metric.prepare(xp, x, "x")
    py = px if same or y is x else metric.prepare(xp, y, "y")
    values, idx = _search(px, py, need, metric, method, voxel)
    if exclude:
        values, idx = _drop_self(xp, backend, values, idx, int(k))
    return metric.to_distance(xp, values), idx


def kneighbors_graph(
    x: Any,
    k: int,
    *,
    y: Any | None = None,
    metric: str | Metric | Formula = "euclidean",
    mode: str = "connectivity",
    include_self: bool = False,
    symmetric: bool = False,
    method: str = "auto",
) -> Any:
    """The kNN graph as a ``scipy.sparse.csr_array`` of shape (N, M): row i holds the k neighbours of x_i.

    ``mode="connectivity"`` puts ones, ``"distance"`` the distances (explicit zeros kept).
    Without ``y``, ``include_self=False`` leaves each point out of its neighbours (as
    scikit-learn's ``kneighbors_graph``). ``symmetric=True`` (square graphs only) returns
    the union A + A^T of the edges, max(A, A^T) in values: the undirected graph.
    """
    from scipy.sparse import csr_array

    if mode not in ("connectivity", "distance"):
        raise ValueError(f"mode must be 'connectivity' or 'distance', got {mode!r}")
    exclude = y is None and not include_self
    dist, idx = knn(x, y, k=k, metric=metric, exclude_self=exclude, method=method)
    dist, idx = host(dist), host(idx)
    n = idx.shape[0]
    m = n if y is None else int(as_points(y, "y")[0].shape[0])
    data = np.ones(idx.size) if mode == "connectivity" else dist.reshape(-1).astype(np.float64)
    graph = csr_array((data, idx.reshape(-1), np.arange(0, n * k + 1, k)), shape=(n, m))
    if symmetric:
        if n != m:
            raise ValueError(f"a symmetric kNN graph needs a square graph, got {n} x {m}")
        graph = graph.maximum(graph.T).tocsr()
    return graph


class NearestNeighbors(BaseEstimator):  # type: ignore[misc]
    """Exact nearest neighbours with any metric (scikit-learn's ``NearestNeighbors`` interface)."""

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        metric: str | Metric | Formula = "euclidean",
        method: str = "auto",
        voxel: float | None = None,
    ):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.method = method
        self.voxel = voxel

    def fit(self, X: Any, y: Any = None) -> NearestNeighbors:
        self.fit_X_ = as_points(X, "X")[0]
        get_metric(self.metric).prepare(lazymat.backend_for(self.fit_X_).namespace(self.fit_X_), self.fit_X_)
        self.n_features_in_ = int(self.fit_X_.shape[1])
        self.n_samples_fit_ = int(self.fit_X_.shape[0])
        return self

    def _fitted(self, X: Any) -> tuple[Any, Any]:
        """The fitted points, and ``X`` checked against them (None stays None)."""
        not_fitted(self, "fit_X_")
        data = plain(self.fit_X_)
        if X is not None:
            X = same_library(X, data, "X", type(self).__name__, cast=True)
        return data, X

    def kneighbors(self, X: Any = None, n_neighbors: int | None = None, return_distance: bool = True) -> Any:
        """Neighbours of ``X`` in the fitted points (of the fitted points, each left out, if X is None)."""
        data, X = self._fitted(X)
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        dist, idx = knn(
            data if X is None else X,
            None if X is None else data,
            k=k,
            metric=self.metric,
            method=self.method,
            voxel=self.voxel,
        )
        return (dist, idx) if return_distance else idx

    def kneighbors_graph(
        self, X: Any = None, n_neighbors: int | None = None, mode: str = "connectivity"
    ) -> Any:
        """The kNN graph of ``X`` (or of the fitted points, each left out) as a scipy CSR array."""
        data, X = self._fitted(X)
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        if X is None:
            return kneighbors_graph(data, k, metric=self.metric, mode=mode, method=self.method)
        return kneighbors_graph(X, k, y=data, metric=self.metric, mode=mode, method=self.method)


class KNeighborsClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """k-NN vote with any metric (scikit-learn's ``KNeighborsClassifier``: uniform or distance weights).

    Ties between classes go to the first class in ``classes_`` order, as in scikit-learn.
    ``predict`` returns labels as a numpy array; ``predict_proba`` an array of X's library.
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        weights: str = "uniform",
        metric: str | Metric | Formula = "euclidean",
        method: str = "auto",
        voxel: float | None = None,
    ):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.method = method
        self.voxel = voxel

    def fit(self, X: Any, y: Any) -> KNeighborsClassifier:
        if self.weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance', got {self.weights!r}")
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import column_or_1d

        X, _, backend = as_points(X, "X")
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        labels = column_or_1d(y if isinstance(y, (list, tuple)) else host(y), warn=True)
        check_classification_targets(labels)
        if labels.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} points but y has {labels.shape[0]} labels")
        self.classes_, codes = np.unique(labels, return_inverse=True)
        self.neighbors_ = NearestNeighbors(
            self.n_neighbors, metric=self.metric, method=self.method, voxel=self.voxel
        ).fit(X)
        self.codes_ = backend.from_numpy(codes.astype(np.int64), backend.device(X))
        self.n_features_in_ = int(X.shape[1])
        return self

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities (N, n_classes): the (weighted) share of each class among the k neighbours."""
        not_fitted(self, "neighbors_")
        dist, idx = self.neighbors_.kneighbors(X)
        xp = lazymat.backend_for(dist).namespace(dist)
        votes = xp.reshape(xp.take(plain(self.codes_), xp.reshape(idx, (-1,)), axis=0), idx.shape)
        if self.weights == "uniform":
            w = xp.ones_like(dist)
        else:  # 1 / d; rows with a neighbour at distance 0 vote with those neighbours only
            zero = dist == 0
            inverse = 1.0 / xp.where(zero, xp.ones_like(dist), dist)
            w = xp.where(xp.any(zero, axis=1, keepdims=True), xp.astype(zero, dist.dtype), inverse)
        proba = xp.stack(
            [xp.sum(w * xp.astype(votes == c, w.dtype), axis=1) for c in range(len(self.classes_))]
        )
        proba = xp.permute_dims(proba, (1, 0))
        return proba / xp.sum(proba, axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """The class of highest (weighted) vote among the k nearest fitted points."""
        proba = self.predict_proba(X)
        return self.classes_[host(lazymat.backend_for(proba).namespace(proba).argmax(proba, axis=1))]
