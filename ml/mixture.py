"""Gaussian mixture models fitted by EM, with responsibilities as log-sum-exp reductions.

For weights w_k, means mu_k and precisions P_k (the inverse covariances), the log joint
density of point i and component k is the symbolic N-by-K matrix

    L_ik = log w_k - D/2 log(2 pi) + 1/2 log det P_k - 1/2 (x_i - mu_k)^T P_k (x_i - mu_k)

(``Vi(x).weightedsqdist(Vj(mu), Vj(P))`` with P full (D*D), diagonal (D) or spherical
(1)). One EM iteration is two reductions and no N-by-K array:

1. E-step: l_i = logsumexp_k L_ik (over j); the mean of l_i is the log-likelihood;
2. M-step: with responsibilities r_ik = exp(L_ik - l_i) and d_ik = x_i - m_k around the
   current means m_k, one reduction over i of r_ik [1, d_ik, d_ik d_ik^T] (the outer
   product only for full covariances, squares otherwise) gives N_k, the new means
   m_k + S1_k / N_k and the covariances S2_k / N_k - delta_k delta_k^T (shifted moments:
   delta_k is the small step of the mean, so nothing cancels), plus ``reg_covar`` on the
   diagonal, as in scikit-learn.

Iterations stop when the log-likelihood changes by less than ``tol`` (scikit-learn's
rule, same attributes: ``weights_``, ``means_``, ``covariances_``, ``precisions_``,
``lower_bound_``, ``n_iter_``, ``converged_``). From the same initialisation
(``weights_init``, ``means_init``, ``precisions_init``) the iterates are scikit-learn's.

Singular covariances (a component on one point, or on a lower-dimensional subspace) are
made definite by ``reg_covar``; when that is not enough (``reg_covar=0``), the Cholesky
factorisation fails and fit raises ValueError naming the component. Small K-by-D-by-D
algebra (Cholesky, inverse) runs in the data's library (``xp.linalg``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin

import lazymat
from lazymat.lazymatrix import LazyMatrix

from .kmeans import KMeans, _rng, kmeans_plusplus
from .points import as_points, host, not_fitted, plain, same_library

COVARIANCE_TYPES = ("full", "diag", "spherical")
INIT_PARAMS = ("kmeans", "k-means++", "random_from_data")


class GaussianMixture(DensityMixin, BaseEstimator):  # type: ignore[misc]
    """Gaussian mixture fitted by EM (scikit-learn's ``GaussianMixture`` interface).

    ``covariance_type``: "full", "diag" or "spherical" ("tied" is not provided).
    ``init_params``: "kmeans" (lazymat's KMeans), "k-means++" or "random_from_data";
    ``weights_init`` (K,), ``means_init`` (K, D) and ``precisions_init`` (shapes of
    ``precisions_``) override it. Arrays of X's library throughout.
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state

    # -- the symbolic log joint density ------------------------------------------------
    def _log_joint(self, x: Any, weights: Any, means: Any, prec: Any) -> LazyMatrix:
        xp = lazymat.backend_for(x).namespace(x)
        k, d = means.shape
        if self.covariance_type == "full":
            logdet = xp.sum(xp.log(xp.linalg.diagonal(xp.linalg.cholesky(prec))), axis=-1) * 2.0
            flat = xp.reshape(prec, (k, d * d))
        elif self.covariance_type == "diag":
            logdet, flat = xp.sum(xp.log(prec), axis=-1), prec
        else:
            logdet, flat = d * xp.log(prec), xp.reshape(prec, (k, 1))
        const = xp.log(weights) - 0.5 * d * math.log(2 * math.pi) + 0.5 * logdet
        quad = lazymat.Vi(x).weightedsqdist(lazymat.Vj(means), lazymat.Vj(flat))
        return lazymat.Vj(xp.reshape(const, (k, 1))) - 0.5 * quad

    # -- parameters from (soft or hard) responsibilities ---------------------------------
    def _moments(self, x: Any, resp: LazyMatrix, shift: Any) -> tuple[Any, Any, Any]:
        """(weights, means, covariances) from responsibilities ``resp`` (N-by-K formula)."""
        xp = lazymat.backend_for(x).namespace(x)
        k, d = shift.shape
        diff = lazymat.Vi(x) - lazymat.Vj(shift)
        second = diff.tensorprod(diff) if self.covariance_type == "full" else diff * diff
        total = (resp * (1.0 + 0.0 * diff[0]).concat(diff).concat(second)).sum(axis=0)
        nk = total[:, 0] + 10 * float(xp.finfo(x.dtype).eps)
        delta = total[:, 1 : 1 + d] / nk[:, None]
        means = shift + delta
        if self.covariance_type == "full":
            outer = delta[:, :, None] * delta[:, None, :]
            eye = xp.eye(d, dtype=x.dtype, device=lazymat.backend_for(x).device(x))
            cov = xp.reshape(total[:, 1 + d :], (k, d, d)) / nk[:, None, None] - outer + self.reg_covar * eye
        else:
            cov = total[:, 1 + d :] / nk[:, None] - delta * delta + self.reg_covar
            if self.covariance_type == "spherical":
                cov = xp.mean(cov, axis=1)
        return nk / xp.sum(nk), means, cov

    def _precisions(self, xp: Any, cov: Any, what: str = "covariance") -> Any:
        """Inverses of ``cov``; ValueError naming a component whose ``what`` is not positive definite."""
        if self.covariance_type == "full":
            try:
                chol = xp.linalg.cholesky(cov)
                ok = xp.all(xp.isfinite(chol), axis=(1, 2)) & xp.all(xp.linalg.diagonal(chol) > 0, axis=1)
            except (ValueError, RuntimeError):  # numpy's LinAlgError is a ValueError, torch's a RuntimeError
                ok = xp.asarray(np.linalg.eigvalsh(host(cov)).min(axis=1) > 0)
        else:
            ok = cov > 0 if self.covariance_type == "spherical" else xp.all(cov > 0, axis=1)
        bad = np.flatnonzero(~host(ok))
        if bad.size:
            raise ValueError(
                f"Fitting the mixture model failed: the {what} of component {int(bad[0])} is not positive "
                f"definite (reg_covar={self.reg_covar}; a component on too few or collapsed points). "
                "Increase reg_covar, decrease n_components, or scale the data."
            )
        if self.covariance_type != "full":
            return 1.0 / cov
        inv = xp.linalg.inv(chol)
        return xp.matmul(xp.matrix_transpose(inv), inv)

    def _covariances(self, xp: Any, prec: Any) -> Any:
        return xp.linalg.inv(prec) if self.covariance_type == "full" else 1.0 / prec

    # -- initialisation ----------------------------------------------------------------
    def _check_init(self, xp: Any, x: Any) -> dict[str, Any]:
        k, d = self.n_components, x.shape[1]
        shapes = {
            "weights_init": (k,),
            "means_init": (k, d),
            "precisions_init": {"full": (k, d, d), "diag": (k, d), "spherical": (k,)}[self.covariance_type],
        }
        given = {}
        for name, shape in shapes.items():
            value = getattr(self, name)
            if value is None:
                continue
            lib = lazymat.backend_for(x)
            value = plain(value)
            if isinstance(value, (list, tuple, np.ndarray)):
                value = lib.from_numpy(np.asarray(value, dtype=host(x[:1]).dtype), lib.device(x))
            if tuple(value.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
            given[name] = xp.astype(value, x.dtype)
        if "precisions_init" in given:
            self._precisions(xp, given["precisions_init"], what="precisions_init")
        if "weights_init" in given:
            w = given["weights_init"]
            if not bool(xp.all(w >= 0)) or abs(float(xp.sum(w)) - 1.0) > 1e-6:
                raise ValueError("weights_init must be >= 0 and sum to 1")
        return given

    def _labels(self, x: Any, rng: np.random.RandomState) -> Any:
        """Hard initial labels as floats of X's library (-1: the point starts in no component).

        "kmeans": KMeans' labels; "k-means++" and "random_from_data": only the chosen
        points (k-means++ seeds, or drawn uniformly) start in a component, one each.
        """
        backend = lazymat.backend_for(x)
        xp = backend.namespace(x)
        if self.init_params == "kmeans":
            labels = KMeans(self.n_components, n_init=1, random_state=rng).fit(x).labels_
            return xp.astype(labels, x.dtype)
        if self.init_params == "k-means++":
            chosen = kmeans_plusplus(x, self.n_components, random_state=rng)[1]
        elif self.init_params == "random_from_data":
            chosen = rng.choice(x.shape[0], size=self.n_components, replace=False)
        else:
            raise ValueError(f"init_params must be one of {INIT_PARAMS}, got {self.init_params!r}")
        codes = np.full(x.shape[0], -1.0)
        codes[chosen] = np.arange(self.n_components)
        return xp.astype(backend.from_numpy(codes, backend.device(x)), x.dtype)

    def _initialize(self, x: Any, rng: np.random.RandomState, given: dict[str, Any]) -> tuple[Any, Any, Any]:
        """(weights, means, precisions): from hard initial labels, overridden by the given ones."""
        if len(given) == 3:
            return given["weights_init"], given["means_init"], given["precisions_init"]
        backend = lazymat.backend_for(x)
        xp = backend.namespace(x)
        k = self.n_components
        labels = self._labels(x, rng)
        ids = xp.astype(backend.from_numpy(np.arange(k), backend.device(x)), x.dtype)
        hard = 1.0 - ((lazymat.Vi(labels) - lazymat.Vj(ids)) ** 2).sign()  # 1 where label_i = k
        zero = xp.zeros((k, x.shape[1]), dtype=x.dtype, device=backend.device(x))
        weights, means, cov = self._moments(x, hard, zero)
        prec = given["precisions_init"] if "precisions_init" in given else self._precisions(xp, cov)
        return given.get("weights_init", weights), given.get("means_init", means), prec

    # -- EM ------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> GaussianMixture:
        self.fit_predict(X, y)
        return self

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """Fit by EM and return the most responsible component of each point."""
        x, xp, _ = as_points(X, "X")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}"
            )
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        if self.n_components > x.shape[0]:
            raise ValueError(
                f"n_components={self.n_components} components but only {x.shape[0]} points: "
                "n_components must be <= N"
            )
        if self.reg_covar < 0:
            raise ValueError(f"reg_covar must be >= 0, got {self.reg_covar}")
        given = self._check_init(xp, x)
        rng = _rng(self.random_state)
        best: tuple[Any, ...] | None = None
        for _ in range(self.n_init):
            weights, means, prec = self._initialize(x, rng, given)
            lower, converged, n_iter = -math.inf, False, 0
            for n_iter in range(1, self.max_iter + 1):  # noqa: B007 - the count is kept
                joint = self._log_joint(x, weights, means, prec)
                lse = joint.logsumexp(axis=1)
                previous, lower = lower, float(xp.mean(lse))
                weights, means, cov = self._moments(x, (joint - lazymat.Vi(lse)).exp(), means)
                prec = self._precisions(xp, cov)
                if abs(lower - previous) < self.tol:
                    converged = True
                    break
            if best is None or lower > best[0]:
                best = (lower, converged, n_iter, weights, means, prec)
        assert best is not None
        self.lower_bound_, self.converged_, self.n_iter_, self.weights_, self.means_, self.precisions_ = best
        self.covariances_ = self._covariances(xp, self.precisions_)
        self.n_features_in_ = int(x.shape[1])
        if not self.converged_:
            from sklearn.exceptions import ConvergenceWarning

            warnings.warn(
                f"GaussianMixture did not converge in max_iter={self.max_iter} iterations "
                f"(tol={self.tol}); try a larger max_iter or tol",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self.predict(x)

    # -- inference -----------------------------------------------------------------------
    def _joint(self, X: Any) -> tuple[Any, LazyMatrix]:
        not_fitted(self, "means_")
        means = plain(self.means_)
        x = same_library(X, means, "X", type(self).__name__, cast=True)
        return x, self._log_joint(x, plain(self.weights_), means, plain(self.precisions_))

    def score_samples(self, X: Any) -> Any:
        """Log density of each point under the mixture (log-sum-exp over the components)."""
        _, joint = self._joint(X)
        values = joint.logsumexp(axis=1)
        return lazymat.backend_for(values).namespace(values).reshape(values, (-1,))

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood of the points."""
        values = self.score_samples(X)
        return float(lazymat.backend_for(values).namespace(values).mean(values))

    def predict(self, X: Any) -> Any:
        """Index of the most responsible component of each point (int64)."""
        return self._joint(X)[1].argmax(axis=1)[:, 0]

    def predict_proba(self, X: Any) -> Any:
        """Responsibilities (N, K): the posterior probability of each component."""
        x, joint = self._joint(X)
        backend = lazymat.backend_for(x)
        xp = backend.namespace(x)
        lse = joint.logsumexp(axis=1)
        eye = xp.eye(self.n_components, dtype=x.dtype, device=backend.device(x))
        return ((joint - lazymat.Vi(lse)).exp() * lazymat.Vj(eye)).sum(axis=1)

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "spherical": k}[self.covariance_type]
        return int(cov + k * d + k - 1)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion: -2 log-likelihood + n_parameters log N."""
        n = as_points(X, "X")[0].shape[0]
        return -2 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X: Any) -> float:
        """Akaike information criterion: -2 log-likelihood + 2 n_parameters."""
        n = as_points(X, "X")[0].shape[0]
        return -2 * self.score(X) * n + 2 * self._n_parameters()
