"""Kernel density estimation and Nadaraya-Watson regression, one reduction per evaluation.

:class:`KernelDensity` (scikit-learn's interface and kernels) evaluates the log density

    log p(x_i) = log sum_j w_j k(|x_i - y_j| / h) - log sum_j w_j - log Z(h, D)

with Z the kernel's integral over R^D. The Gaussian and exponential kernels are
log-sum-exp reductions of their log-kernel (no underflow far from the data: the log
density keeps its value where exp would give 0); the compactly supported kernels
(tophat, Epanechnikov, linear, cosine) are sums, with log 0 = -inf outside their support.

:class:`NadarayaWatson` predicts sum_j k_ij y_j / sum_j k_ij as a softmax-weighted sum
(``sumsoftmaxweight``) of the log-kernel: defined everywhere, it tends to the nearest
point's value far from the data instead of 0 / 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin

import lazymat
from lazymat.lazymatrix import LazyMatrix

from .points import as_points, host, not_fitted, plain, same_library

#: log-kernels (of the squared distance over h^2) with an unbounded support: log-sum-exp
LOG_KERNELS: dict[str, Callable[[LazyMatrix], LazyMatrix]] = {
    "gaussian": lambda r2: -0.5 * r2,
    "exponential": lambda r2: -r2.sqrt(),
}
#: kernels with a compact support (r < 1): sums
COMPACT_KERNELS: dict[str, Callable[[LazyMatrix], LazyMatrix]] = {
    "tophat": lambda r2: 1.0 - (r2 - 1.0).step(),  # 1 where r < 1
    "epanechnikov": lambda r2: (1.0 - r2).relu(),
    "linear": lambda r2: (1.0 - r2.sqrt()).relu(),
    "cosine": lambda r2: (0.5 * math.pi * r2.sqrt()).cos() * (1.0 - (r2 - 1.0).step()),
}
KERNELS = (*LOG_KERNELS, *COMPACT_KERNELS)


def log_kernel_norm(kernel: str, h: float, d: int) -> float:
    """log of the integral over R^d of the kernel k(|u| / h)."""
    sphere = math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)  # area of S^{d-1}
    radial = {  # integral over r in (0, inf) of k(r) r^(d-1)
        "gaussian": (0.5 * d - 1) * math.log(2.0) + math.lgamma(0.5 * d),
        "exponential": math.lgamma(d),
        "tophat": -math.log(d),
        "epanechnikov": math.log(2.0) - math.log(d) - math.log(d + 2),
        "linear": -math.log(d) - math.log(d + 1),
    }
    if kernel == "cosine":
        from scipy.integrate import quad

        value = math.log(quad(lambda r: math.cos(0.5 * math.pi * r) * r ** (d - 1), 0.0, 1.0)[0])
    else:
        value = radial[kernel]
    return sphere + value + d * math.log(h)


def _bandwidth(bandwidth: Any, n: int, d: int) -> float:
    if bandwidth == "scott":
        return float(n ** (-1.0 / (d + 4)))
    if bandwidth == "silverman":
        return float((n * (d + 2) / 4.0) ** (-1.0 / (d + 4)))
    if isinstance(bandwidth, str) or not float(bandwidth) > 0:
        raise ValueError(f"bandwidth must be > 0, 'scott' or 'silverman', got {bandwidth!r}")
    return float(bandwidth)


class KernelDensity(BaseEstimator):  # type: ignore[misc]
    """Kernel density estimate (scikit-learn's ``KernelDensity``: kernels, bandwidth rules, weights)."""

    def __init__(self, *, bandwidth: Any = 1.0, kernel: str = "gaussian"):
        self.bandwidth = bandwidth
        self.kernel = kernel

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KernelDensity:
        x, xp, backend = as_points(X, "X")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        self.bandwidth_ = _bandwidth(self.bandwidth, x.shape[0], x.shape[1])
        if sample_weight is None:
            w = xp.ones((x.shape[0], 1), dtype=x.dtype, device=backend.device(x))
        else:
            w = np.asarray(host(sample_weight), dtype=np.float64).reshape(-1, 1)
            if w.shape[0] != x.shape[0] or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ValueError(
                    f"sample_weight must be {x.shape[0]} finite weights >= 0, not all zero, "
                    f"got shape {w.shape} with min {w.min() if w.size else None}"
                )
            w = xp.astype(backend.from_numpy(w, backend.device(x)), x.dtype)
        self.tree_ = x  # scikit-learn's name for the fitted data
        self.weights_ = w
        self.n_features_in_ = int(x.shape[1])
        return self

    def score_samples(self, X: Any) -> Any:
        """Log density at each point of X, shape (N,)."""
        not_fitted(self, "tree_")
        data, w = plain(self.tree_), plain(self.weights_)
        x = same_library(X, data, "X", type(self).__name__, cast=True)
        xp = lazymat.backend_for(x).namespace(x)
        h, d = self.bandwidth_, x.shape[1]
        r2 = lazymat.Vi(x).sqdist(lazymat.Vj(data)) / (h * h)
        if self.kernel in LOG_KERNELS:
            out = LOG_KERNELS[self.kernel](r2).logsumexp(axis=1, weight=lazymat.Vj(w))
        else:
            total = (COMPACT_KERNELS[self.kernel](r2) * lazymat.Vj(w)).sum(axis=1)
            positive = total > 0
            out = xp.where(positive, xp.log(xp.where(positive, total, xp.ones_like(total))), -math.inf)
        out = out - math.log(float(xp.sum(w))) - log_kernel_norm(self.kernel, h, d)
        return xp.reshape(out, (-1,))

    def score(self, X: Any, y: Any = None) -> float:
        """Total log-likelihood of the points (scikit-learn's convention: a sum)."""
        values = self.score_samples(X)
        return float(lazymat.backend_for(values).namespace(values).sum(values))


class NadarayaWatson(MultiOutputMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Kernel regression sum_j k_ij y_j / sum_j k_ij with a Gaussian or exponential kernel.

    ``y`` may be (N,) or (N, E); predictions have the same trailing shape.
    """

    def __init__(self, *, bandwidth: float = 1.0, kernel: str = "gaussian"):
        self.bandwidth = bandwidth
        self.kernel = kernel

    def fit(self, X: Any, y: Any) -> NadarayaWatson:
        x, xp, backend = as_points(X, "X")
        if self.kernel not in LOG_KERNELS:
            raise ValueError(
                f"kernel must be one of {tuple(LOG_KERNELS)} (positive everywhere), got {self.kernel!r}"
            )
        self.bandwidth_ = _bandwidth(self.bandwidth, x.shape[0], x.shape[1])
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        target = (
            y
            if lazymat.backend_for(x).recognizes(y)
            else backend.from_numpy(np.asarray(y), backend.device(x))
        )
        if target.shape[0] != x.shape[0] or len(target.shape) > 2:
            raise ValueError(
                f"y must have shape ({x.shape[0]},) or ({x.shape[0]}, E), got {tuple(target.shape)}"
            )
        target = xp.astype(target, x.dtype)
        if not bool(xp.all(xp.isfinite(target))):
            raise ValueError("y has non-finite values (NaN or inf)")
        self.vector_ = len(target.shape) == 1
        self.X_, self.y_ = x, xp.reshape(target, (x.shape[0], -1))
        self.n_features_in_ = int(x.shape[1])
        return self

    def predict(self, X: Any) -> Any:
        not_fitted(self, "X_")
        data = plain(self.X_)
        x = same_library(X, data, "X", type(self).__name__, cast=True)
        h = self.bandwidth_
        log_k = LOG_KERNELS[self.kernel](lazymat.Vi(x).sqdist(lazymat.Vj(data)) / (h * h))
        out = log_k.sumsoftmaxweight(lazymat.Vj(plain(self.y_)), axis=1)
        return out[:, 0] if self.vector_ else out
