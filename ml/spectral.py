"""Spectral embedding and clustering with the affinity as a SciPy LinearOperator.

For an affinity W_ij = k(x_i, x_j) (default: the Gaussian exp(-gamma |x_i - x_j|^2)),
self-loops left out as in scikit-learn (SciPy's normalised Laplacian ignores the
diagonal), the degrees are d_i = sum_{j != i} W_ij and the normalised Laplacian is
L = I - D^{-1/2} W D^{-1/2}. Its smallest eigenvectors are the largest of

    A v = s * (W @ (s * v)) - s^2 * v,      s = d^{-1/2}  (the W_ii = k(x_i, x_i) term removed),

a ``scipy.sparse.linalg.LinearOperator`` whose products are lazymat reductions
(``lazymat.solvers.aslinearoperator`` of the symbolic matrix s_i W_ij s_j): ARPACK's ``eigsh``
(``which="LA"``) or ``lobpcg`` find them in O(N) memory. As in scikit-learn, the
embedding is D^{-1/2} times the eigenvectors, each with the sign that makes its largest
entry positive, ordered by increasing Laplacian eigenvalue 1 - mu; the first (constant)
one is dropped. ``SpectralClustering`` runs lazymat's KMeans on the rows of the embedding.

SciPy's eigensolvers work on numpy arrays: inputs of another library are copied to numpy
(float64), and the results are numpy arrays. ``affinity="nearest_neighbors"`` builds a
sparse, symmetrised kNN graph (lazymat's k-NN) instead of a dense-in-formula kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

import lazymat
from lazymat.lazymatrix import LazyMatrix
from lazymat.solvers import aslinearoperator as as_operator

from .kernels import kernel_formula
from .kmeans import KMeans, _rng
from .neighbors import kneighbors_graph
from .points import as_points, host


def sign_flip(vectors: np.ndarray) -> np.ndarray:
    """Columns of ``vectors`` with the sign that makes each column's largest |entry| positive."""
    rows = np.argmax(np.abs(vectors), axis=0)
    return vectors * np.sign(vectors[rows, np.arange(vectors.shape[1])])


def top_eigenpairs(
    operator: Any, k: int, solver: str, random_state: Any, tol: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues (decreasing) and eigenvectors of a symmetric LinearOperator."""
    from scipy.sparse.linalg import eigsh, lobpcg

    n = operator.shape[0]
    if not 0 < k < n:
        raise ValueError(f"asked for {k} eigenvectors with n_samples={n}: expected 0 < k < {n}")
    rng = _rng(random_state)
    if solver == "arpack":
        values, vectors = eigsh(operator, k=k, which="LA", tol=tol, v0=rng.uniform(-1, 1, n))
    elif solver == "lobpcg":
        start = rng.standard_normal((n, k))
        values, vectors = lobpcg(operator, start, largest=True, tol=tol or 1e-10, maxiter=max(200, 4 * n))
    else:
        raise ValueError(f"eigen_solver must be 'arpack' or 'lobpcg', got {solver!r}")
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order]


def diagonal(x: Any, kernel: Callable[[LazyMatrix, LazyMatrix], LazyMatrix]) -> Any:
    """k(x_i, x_i) for every i: the formula on i-indexed data, reduced over one dummy column."""
    xp = lazymat.backend_for(x).namespace(x)
    dummy = lazymat.Vj(xp.zeros((1, 1), dtype=x.dtype))
    return (kernel(lazymat.Vi(x), lazymat.Vi(x)) + 0.0 * dummy).sum(axis=1)[:, 0]


def normalized_affinity(
    x: np.ndarray, affinity: Callable[[LazyMatrix, LazyMatrix], LazyMatrix]
) -> tuple[Any, np.ndarray]:
    """(LinearOperator of D^{-1/2} (W - diag W) D^{-1/2}, the degrees d) for an affinity formula."""
    from scipy.sparse import diags
    from scipy.sparse.linalg import aslinearoperator

    W = affinity(lazymat.Vi(x), lazymat.Vj(x))
    if W.dim != 1:
        raise ValueError(f"the affinity must be a scalar formula, got dimension {W.dim}")
    loops = diagonal(x, affinity)
    degree = np.asarray(W @ np.ones(x.shape[0], dtype=x.dtype)) - loops
    if not np.all(degree > 0):
        bad = int(np.argmin(degree))
        raise ValueError(
            f"point {bad} has no neighbour of positive affinity (degree {degree[bad]:.3g}): the graph is "
            "disconnected at this scale; use a wider kernel (smaller gamma) or affinity='nearest_neighbors'"
        )
    s = 1.0 / np.sqrt(degree)
    scaled = W * lazymat.Vi(s) * lazymat.Vj(s)
    return as_operator(scaled) - aslinearoperator(diags(s * s * loops)), degree


def _knn_affinity(x: np.ndarray, n_neighbors: int) -> tuple[Any, np.ndarray]:
    """The symmetrised kNN connectivity graph (A + A^T) / 2, normalised, as a sparse operator."""
    from scipy.sparse import diags

    graph = kneighbors_graph(x, n_neighbors, include_self=True)
    graph = 0.5 * (graph + graph.T)
    graph.setdiag(0)  # self-loops out, as SciPy's normalised Laplacian does
    degree = np.asarray(graph.sum(axis=1)).reshape(-1)
    s = diags(1.0 / np.sqrt(degree))
    return s @ graph @ s, degree


def spectral_embedding(
    X: Any,
    n_components: int = 2,
    *,
    affinity: str | Callable[[LazyMatrix, LazyMatrix], LazyMatrix] = "rbf",
    gamma: float | None = None,
    n_neighbors: int | None = None,
    eigen_solver: str = "arpack",
    eigen_tol: float = 0.0,
    drop_first: bool = True,
    random_state: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(embedding (N, n_components), Laplacian eigenvalues): see the module docstring.

    ``affinity``: "rbf" (``exp(-gamma |x - y|^2)``, gamma = 1 / D by default), "laplacian",
    another kernel of ``lazymat.ml.kernels``, a formula (x_i, x_j) -> LazyMatrix, or
    "nearest_neighbors" (``n_neighbors``, default max(N / 10, 1)).
    """
    x = np.asarray(host(as_points(X, "X")[0]), dtype=np.float64)
    if x.shape[0] < 2:
        raise ValueError(f"a spectral embedding needs at least 2 points, got n_samples={x.shape[0]}")
    k = n_components + 1 if drop_first else n_components
    if affinity == "nearest_neighbors":
        operator, degree = _knn_affinity(x, n_neighbors or max(x.shape[0] // 10, 1))
    else:
        operator, degree = normalized_affinity(x, kernel_formula(affinity, x.shape[1], gamma))
    mu, vectors = top_eigenpairs(operator, k, eigen_solver, random_state, eigen_tol)
    embedding = sign_flip(vectors / np.sqrt(degree)[:, None])
    first = 1 if drop_first else 0
    return embedding[:, first:], 1.0 - mu[first:]


class SpectralEmbedding(BaseEstimator):  # type: ignore[misc]
    """Laplacian eigenmaps (scikit-learn's ``SpectralEmbedding``; default affinity "rbf", lazy).

    ``embedding_`` (N, n_components) and ``eigenvalues_`` (the normalised Laplacian's, increasing).
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        affinity: Any = "rbf",
        gamma: float | None = None,
        n_neighbors: int | None = None,
        eigen_solver: str = "arpack",
        eigen_tol: float = 0.0,
        random_state: Any = None,
    ):
        self.n_components = n_components
        self.affinity = affinity
        self.gamma = gamma
        self.n_neighbors = n_neighbors
        self.eigen_solver = eigen_solver
        self.eigen_tol = eigen_tol
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> SpectralEmbedding:
        self.embedding_, self.eigenvalues_ = spectral_embedding(
            X,
            self.n_components,
            affinity=self.affinity,
            gamma=self.gamma,
            n_neighbors=self.n_neighbors,
            eigen_solver=self.eigen_solver,
            eigen_tol=self.eigen_tol,
            random_state=self.random_state,
        )
        self.n_features_in_ = int(np.shape(X)[1])
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X).embedding_


class SpectralClustering(ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """Spectral clustering (scikit-learn's ``SpectralClustering`` with assign_labels="kmeans").

    The embedding keeps the first eigenvector (``drop_first=False``, as scikit-learn), and
    lazymat's KMeans (``n_init`` runs) clusters its rows. Default affinity: "rbf", gamma 1.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        affinity: Any = "rbf",
        gamma: float = 1.0,
        n_neighbors: int = 10,
        n_components: int | None = None,
        eigen_solver: str = "arpack",
        eigen_tol: float = 0.0,
        n_init: int = 10,
        random_state: Any = None,
    ):
        self.n_clusters = n_clusters
        self.affinity = affinity
        self.gamma = gamma
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.eigen_solver = eigen_solver
        self.eigen_tol = eigen_tol
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> SpectralClustering:
        rng = _rng(self.random_state)
        maps, _ = spectral_embedding(
            X,
            self.n_components or self.n_clusters,
            affinity=self.affinity,
            gamma=self.gamma,
            n_neighbors=self.n_neighbors,
            eigen_solver=self.eigen_solver,
            eigen_tol=self.eigen_tol,
            drop_first=False,
            random_state=rng,
        )
        self.labels_ = np.asarray(
            KMeans(self.n_clusters, n_init=self.n_init, random_state=rng).fit(maps).labels_
        )
        self.n_features_in_ = int(np.shape(X)[1])
        return self
