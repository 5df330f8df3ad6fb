"""Kernel PCA with the centred kernel matrix as a SciPy LinearOperator.

With C = I - 1 1^T / N, the centred kernel K_c = C K C applied to v is

    K_c v = C (K (C v)):   centre v, one lazymat reduction K @ (.), centre the result,

so ARPACK (``eigsh``, largest eigenvalues) or ``lobpcg`` find the leading eigenpairs in
O(N) memory. As in scikit-learn's ``KernelPCA``: eigenvalues sorted decreasing, tiny
negative ones (rounding) set to 0, eigenvector signs fixed by their largest entry
(``svd_flip``), ``fit_transform`` = alphas * sqrt(lambdas), and new points projected by
the centred cross-kernel

    K'_c A = K' A - (K' 1 / N) (1^T A) - 1 (kbar^T A) + mean(K) 1 (1^T A),   A = alphas / sqrt(lambdas),

with kbar = K 1 / N kept from the fit: one reduction K' @ [A, 1]. Components of zero
eigenvalue project to 0. SciPy works on numpy: inputs of other libraries are copied to
float64 numpy, results are numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

import lazymat
from lazymat.lazymatrix import LazyMatrix

from .kernels import kernel_formula
from .points import as_points, host, not_fitted, plain
from .spectral import sign_flip, top_eigenpairs


class KernelPCA(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Kernel principal component analysis (scikit-learn's ``KernelPCA``, without inverse transform).

    ``kernel``: "rbf", "laplacian", "linear", "poly", "sigmoid", "cosine" (scikit-learn's
    parameters ``gamma``, ``degree``, ``coef0``) or a formula (x_i, y_j) -> LazyMatrix.
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        kernel: str | Callable[[LazyMatrix, LazyMatrix], LazyMatrix] = "rbf",
        gamma: float | None = None,
        degree: float = 3,
        coef0: float = 1.0,
        eigen_solver: str = "arpack",
        tol: float = 0.0,
        random_state: Any = None,
    ):
        self.n_components = n_components
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.eigen_solver = eigen_solver
        self.tol = tol
        self.random_state = random_state

    def _formula(self, d: int) -> Callable[[LazyMatrix, LazyMatrix], LazyMatrix]:
        return kernel_formula(self.kernel, d, self.gamma, self.degree, self.coef0)

    def fit(self, X: Any, y: Any = None) -> KernelPCA:
        from scipy.sparse.linalg import LinearOperator

        x = np.asarray(host(as_points(X, "X")[0]), dtype=np.float64)
        n = x.shape[0]
        K = self._formula(x.shape[1])(lazymat.Vi(x), lazymat.Vj(x))
        if K.dim != 1:
            raise ValueError(f"the kernel must be a scalar formula, got dimension {K.dim}")

        def centred(v: np.ndarray) -> np.ndarray:
            v = v.reshape(n, -1)
            w = np.asarray(K @ (v - v.mean(axis=0)))
            return w - w.mean(axis=0)

        operator = LinearOperator((n, n), matvec=centred, matmat=centred, dtype=np.float64)
        values, vectors = top_eigenpairs(
            operator, self.n_components, self.eigen_solver, self.random_state, self.tol
        )
        if values[-1] < -1e-8 * max(values[0], 0.0) - 1e-12:
            raise ValueError(
                f"the centred kernel has a significantly negative eigenvalue ({values[-1]:.3g}, largest "
                f"{values[0]:.3g}): the kernel is not positive semi-definite"
            )
        self.eigenvalues_ = np.maximum(values, 0.0)
        self.eigenvectors_ = sign_flip(vectors)
        column_means = np.asarray(K @ np.ones(n)) / n  # kbar = K 1 / N (K symmetric)
        self.X_fit_, self._column_means, self._mean = x, column_means, float(column_means.mean())
        self.n_features_in_ = x.shape[1]
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit on ``X`` and return its projections on the components, (N, n_components)."""
        self.fit(X)
        return self.eigenvectors_ * np.sqrt(self.eigenvalues_)

    def transform(self, X: Any) -> np.ndarray:
        """Projection of new points on the principal components."""
        not_fitted(self, "eigenvectors_")
        x = np.asarray(host(as_points(X, "X")[0]), dtype=np.float64)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} features, but KernelPCA is expecting {self.n_features_in_} "
                "features as input"
            )
        data = plain(self.X_fit_)
        n = data.shape[0]
        positive = self.eigenvalues_ > 0
        scaled = np.zeros_like(self.eigenvectors_)
        scaled[:, positive] = self.eigenvectors_[:, positive] / np.sqrt(self.eigenvalues_[positive])
        cross = self._formula(x.shape[1])(lazymat.Vi(x), lazymat.Vj(data))
        both = np.asarray(cross @ np.concatenate([scaled, np.full((n, 1), 1.0 / n)], axis=1))
        product, row_means = both[:, :-1], both[:, -1:]
        totals = scaled.sum(axis=0)
        return product - row_means * totals - self._column_means @ scaled + self._mean * totals
